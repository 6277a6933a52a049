"""Training throughput: images per second and peak memory, per model and resolution.

    .venv/bin/python benchmarks/train.py [--sizes 128 256] [--device cpu] [--steps 10]
    .venv/bin/python benchmarks/train.py --pipeline [--config release-128-mirror.yaml --size 256 --data DIR]
    .venv/bin/python benchmarks/train.py --chain [--data DIR]

``--pipeline``: real training steps (data loader and the random imaging chain
included) of the released architecture at 256 px, each speed-up of
:data:`PIPELINE` added in turn, a fresh process per row, with where a step's
time goes; then how far bfloat16 moves the losses and depths. Data: e.g.
``3ddx simulate --out data/sim256-bench --subjects 0,1,2 --poses 4 --size 256 --voxel-mm 1.5``.

Each row runs in a fresh process: the model of a config (``configs/*.yaml``),
a batch of random images and targets at that size (the data loader is not
timed: reading a sample takes ~1 ms), one warm-up step, then the median time of
``--steps`` optimisation steps (forward, dual-face SI loss + mask loss,
backward, AdamW). Peak memory: the process's peak RSS above the baseline after
building the model (CPU), or the peak CUDA allocation (GPU, with AMP as in the
GPU configs).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _measure import in_fresh_process, peak_mb, rss_mb

REPO = Path(__file__).resolve().parents[1]


def _worker(config: str, size: int, batch: int, steps: int, device: str, threads: int, fast: bool, q) -> None:
    import torch

    from threeddx.network.losses import mask_loss, scale_invariant_loss
    from threeddx.network.model import DualFaceNet, model_config
    from threeddx.training.train import load_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / config)
    model = DualFaceNet(model_config(cfg["model"], bones=cfg["data"]["bones"])).to(device)
    fmt = torch.channels_last if fast else torch.contiguous_format  # --fast: the CPU speed-ups of perf
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = len(cfg["data"]["bones"])
    amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    img = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    masks = (torch.rand(batch, c, size, size, device=device) > 0.5).float()
    front = 750 + 100 * torch.rand(batch, c, size, size, device=device)
    tgt = torch.cat([front, front + 30], 1)
    sync = torch.cuda.synchronize if amp else (lambda: None)
    base = rss_mb()
    if amp:
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", enabled=amp), torch.autocast("cpu", torch.bfloat16, enabled=fast and not amp):
            out = model(img)
        pred = torch.cat([out["depth_front"], out["depth_back"]], 1).float()
        loss = scale_invariant_loss(pred, tgt, torch.cat([masks, masks], 1), "independent") + mask_loss(
            out["mask_logits"].float(), masks)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    step()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if amp else peak_mb() - base
    n_params = sum(p.numel() for p in model.parameters())
    q.put((batch / statistics.median(times), peak, n_params))


def measure(*args):
    return in_fresh_process(_worker, *args)


#: The steps of ``--pipeline``, each adding to the one before (train.DEFAULTS keys).
PIPELINE = [
    ("today: chain in the training process, float32", {}),
    ("+ chain in 2 loader workers, 2 batches prefetched each", {"data": {"workers": 2}}),
    ("+ channels_last", {"perf": {"channels_last": True}}),
    ("+ bfloat16 autocast (network; losses float32)", {"perf": {"bf16": True}}),
    ("+ cheaper chain: broad blurs by FFT, attenuation as one product", {"bench": {"fast_chain": True}}),
    ("+ torch.compile", {"perf": {"compile": True}}),
]


def _slow_chain() -> None:
    """The imaging chain as it was before 2026-12-06's fifth session (rows before "cheaper chain"): every Gaussian
    through scipy's direct filter (``physics._gauss`` below an infinite threshold), the optical depths as a sum of
    broadcast (H, W, E) arrays. Same figures."""
    from threeddx.simulator import physics

    physics.FFT_GAUSS_FROM_PX = float("inf")

    def transmission(materials, kvp, al_mm=3.0, cu_mm=0.0, anode_angle_deg=14.0, csi_mm=0.5, positions_cm=None):
        t = physics.tables()
        h = next(iter(materials.values())).shape[0]
        pos = np.zeros(h) if positions_cm is None else np.asarray(positions_cm, np.float64)
        s = physics.spectrum(kvp, anode_angle_deg, pos, al_mm, cu_mm) * physics.detector_weights(csi_mm)
        keep = s.max(0) > 1e-6 * s.max()
        s, mus = s[:, keep], {m: t.mu_rho["iron" if m == "metal" else m][keep] for m in materials}
        tau = sum(np.asarray(a, np.float32)[..., None] * mus[m].astype(np.float32) for m, a in materials.items())
        sig = np.einsum("hwe,he->hw", np.exp(-tau), s.astype(np.float32))
        return (sig / np.maximum(s.sum(1), 1e-30)[:, None]).astype(np.float32)

    physics.transmission = transmission


def _pipeline_worker(data: str, config: str, size: int, batch: int, steps: int, threads: int, over: dict, q) -> None:
    """Real training steps (a Trainer of ``config`` on ``data``, random chains): the median images/s over ``steps``
    steps after two warm-up steps, and where a step's time goes (waiting for the batch, forward, backward, optimiser)."""
    import copy

    import torch

    from threeddx.training.train import Trainer, load_config

    torch.set_num_threads(threads)
    cfg = load_config(REPO / "configs" / config, {"data": {"root": data, "size": size},
                                                  "optim": {"batch_size": batch}, "out": "/tmp/unused", "init": None})
    over = copy.deepcopy(over)
    if not over.pop("bench", {}).get("fast_chain"):
        _slow_chain()  # before Trainer: its loader workers fork with it
    for section, values in over.items():
        cfg[section].update(values)
    tr = Trainer(copy.deepcopy(cfg), progress=False)
    tr.train_set.rows = tr.train_set.rows * ((batch * (steps + 2)) // len(tr.train_set.rows) + 1)
    tr.model.train()
    loader = iter(tr._loader(tr.train_set, True, 0))
    parts = {"data": [], "forward": [], "backward": [], "optimiser": []}
    walls = []
    for k in range(steps + 2):
        t0 = time.perf_counter()
        b = tr._to(next(loader))
        t1 = time.perf_counter()
        loss, _, _, _ = tr._batch_loss(b)
        t2 = time.perf_counter()
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), 1.0)
        tr.opt.step()
        t4 = time.perf_counter()
        if k >= 2:  # two warm-up steps (first allocations; compilation)
            for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[name].append(dt)
            walls.append(t4 - t0)
    n = sum(p.numel() for p in tr.model.parameters())
    q.put((batch / statistics.median(walls), {k: 1000 * statistics.median(v) for k, v in parts.items()}, n))


def _chain_worker(data: str, fast: bool, n: int, q) -> None:
    """The imaging chain alone (one thread): median ms per image over ``n`` of ``data``'s samples, a random chain
    each, and every image (to compare the two implementations' figures)."""
    import csv

    if not fast:
        _slow_chain()
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.physics import radiograph, sample_chain, sample_materials

    with open(Path(data) / "manifest.csv") as f:
        rows = list(csv.DictReader(f))[:n]
    times, images = [], []
    for k, row in enumerate(rows):
        with np.load(Path(data) / row["render"]) as z:
            mats, geom = sample_materials(z), XrayGeometry.from_json(str(z["geometry"]))
        chain = sample_chain(np.random.default_rng([7, k]))
        radiograph(mats, geom, chain)  # warm (tables, fonts)
        t0 = time.perf_counter()
        images.append(radiograph(mats, geom, chain))
        times.append(time.perf_counter() - t0)
    q.put((1000 * statistics.median(times), images))


def chain_speed(data: str, n: int = 12) -> None:
    """The chain before and after 2026-12-06's fifth session, each in a fresh single-threaded process: ms per image
    and how far the images differ (they should not, beyond a grey level where rounding flips)."""
    import os

    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    slow_ms, slow = in_fresh_process(_chain_worker, data, False, n)
    fast_ms, fast = in_fresh_process(_chain_worker, data, True, n)
    gap = [np.abs(a - b) for a, b in zip(slow, fast)]
    print(f"imaging chain alone, one thread, {len(slow)} images of {data} (random chains): {slow_ms:.0f} ms an image "
          f"before, {fast_ms:.0f} ms after ({slow_ms / fast_ms:.2f}x); images at most {max(g.max() for g in gap):.4f} "
          f"apart on [0, 1] ({100 * np.mean([(g > 1e-4).mean() for g in gap]):.3f} % of pixels differ: where a "
          "rounding to the chain's bit depth or JPEG flips)")


def precision_check(data: str, config: str, size: int, batch: int, threads: int) -> dict:
    """Float32 against bfloat16 autocast on the same batch and weights: the losses' relative difference and the
    largest depth difference (mm) inside the masks."""
    import torch

    from threeddx.training.train import Trainer, load_config

    torch.set_num_threads(threads)
    cfg = load_config(REPO / "configs" / config, {"data": {"root": data, "size": size, "negatives": 0.0},
                                                  "optim": {"batch_size": batch}, "out": "/tmp/unused", "init": None})
    tr = Trainer(cfg, progress=False)
    b = tr._to(next(iter(tr._loader(tr.train_set, False, 0))))
    tr.model.eval()
    with torch.no_grad():
        a = tr._batch_loss(b, training=False)
        tr.bf16 = True
        c = tr._batch_loss(b, training=True)
    m = b["masks"] > 0.5
    gap = max(float((a[3][k] - c[3][k])[m].abs().max()) for k in ("depth_front", "depth_back"))
    return {"loss": abs(float(a[0]) - float(c[0])) / abs(float(a[0])), "depth_loss": abs(float(a[1]) - float(c[1])) /
            abs(float(a[1])), "depth_mm": gap}


def pipeline(args) -> None:
    import torch

    print(f"# training pipeline benchmark: {args.config} at {args.size} px on {args.data} (random chains), batch "
          f"{args.batch[0]}, median of {args.steps} steps after 2 warm-up; torch {torch.__version__}, {args.threads} "
          f"threads, {platform.machine()}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    print()
    print(f"| step | images/s, median of {args.repeat} rounds (range) | x today | data wait ms | forward ms | "
          "backward ms | optimiser ms |")
    print("|---|---|---|---|---|---|---|")
    overs, over = [], {}
    for label, change in PIPELINE:
        for section, values in change.items():
            over.setdefault(section, {}).update(values)
        overs.append({k: dict(v) for k, v in over.items()})
    runs: list[list] = [[] for _ in PIPELINE]
    for _ in range(args.repeat):  # rounds over every row: a drift of the machine's speed hits every row alike
        for k, o in enumerate(overs):
            runs[k].append(in_fresh_process(_pipeline_worker, args.data, args.config, args.size, args.batch[0],
                                            args.steps, args.threads, o))
    base = statistics.median(r[0] for r in runs[0])
    for (label, _), rows in zip(PIPELINE, runs):
        ips = [r[0] for r in rows]
        parts = {k: statistics.median(r[1][k] for r in rows) for k in rows[0][1]}
        n = rows[0][2]
        print(f"| {label} | {statistics.median(ips):.2f} ({min(ips):.2f}-{max(ips):.2f}) | "
              f"{statistics.median(ips) / base:.2f} | {parts['data']:.0f} | {parts['forward']:.0f} | "
              f"{parts['backward']:.0f} | {parts['optimiser']:.0f} |", flush=True)
    chain_speed(args.data)
    d = precision_check(args.data, args.config, args.size, args.batch[0], args.threads)
    print()
    print(f"bfloat16 against float32 on one batch (same weights): loss {100 * d['loss']:.3f} % apart, depth loss "
          f"{100 * d['depth_loss']:.3f} %, depths at most {d['depth_mm']:.3f} mm apart inside the masks ({n / 1e6:.2f} M "
          "parameters)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny.yaml", "cpu-128.yaml", "gpu-256.yaml"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--fast", action="store_true", help="channels_last and bfloat16 autocast (perf's CPU speed-ups)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", action="store_true",
                    help="real training steps of --config at --size on --data, each speed-up of PIPELINE added in turn")
    ap.add_argument("--chain", action="store_true", help="the imaging chain alone, before and after its speed-up")
    ap.add_argument("--repeat", type=int, default=2, help="--pipeline: rounds over every row (median reported)")
    ap.add_argument("--config", default="release-128-mirror.yaml")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--data", default=str(REPO / "data" / "sim256-bench"))
    args = ap.parse_args()
    if args.chain:
        return chain_speed(args.data)
    if args.pipeline:
        return pipeline(args)
    import torch

    print(f"# train benchmark: device {args.device}, torch {torch.__version__}, {args.threads} threads, "
          f"{'channels_last + bfloat16, ' if args.fast else ''}{platform.machine()}, Python {sys.version.split()[0]}")
    print()
    print("| model (config) | params | size | batch | images/s | ms/image | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for config in args.configs:
        for size in args.sizes:
            for batch in args.batch:
                ips, peak, n = measure(config, size, batch, args.steps, args.device, args.threads, args.fast)
                print(f"| {config} | {n / 1e6:.2f} M | {size} | {batch} | {ips:.2f} | {1000 / ips:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
