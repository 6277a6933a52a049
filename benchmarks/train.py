"""Training throughput: images per second and peak memory, per model and resolution.

    .venv/bin/python benchmarks/train.py [--sizes 128 256] [--device cpu] [--steps 10]

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

from _measure import in_fresh_process, peak_mb, rss_mb

REPO = Path(__file__).resolve().parents[1]


def _worker(config: str, size: int, batch: int, steps: int, device: str, threads: int, q) -> None:
    import torch

    from threeddx.losses import mask_loss, scale_invariant_loss
    from threeddx.model import DualFaceNet, ModelConfig
    from threeddx.train import load_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / config)
    model = DualFaceNet(ModelConfig(bones=cfg["data"]["bones"], **cfg["model"])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = len(cfg["data"]["bones"])
    amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    img = torch.rand(batch, 1, size, size, device=device)
    masks = (torch.rand(batch, c, size, size, device=device) > 0.5).float()
    front = 750 + 100 * torch.rand(batch, c, size, size, device=device)
    tgt = torch.cat([front, front + 30], 1)
    sync = torch.cuda.synchronize if amp else (lambda: None)
    base = rss_mb()
    if amp:
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", enabled=amp):
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny.yaml", "cpu-128.yaml", "gpu-256.yaml"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    print(f"# train benchmark: device {args.device}, torch {torch.__version__}, {args.threads} threads, "
          f"batch {args.batch}, {platform.machine()}, Python {sys.version.split()[0]}")
    print()
    print("| model (config) | params | size | images/s | ms/image | peak MB |")
    print("|---|---|---|---|---|---|")
    for config in args.configs:
        for size in args.sizes:
            ips, peak, n = measure(config, size, args.batch, args.steps, args.device, args.threads)
            print(f"| {config} | {n / 1e6:.2f} M | {size} | {ips:.1f} | {1000 / ips:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
