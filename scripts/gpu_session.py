"""A few minutes of a lent GPU turned into training (issue 30, point 5): pack here, train there.

    # here, once (a few seconds): the data, the config and the starting weights in one folder under 46 MiB
    .venv/bin/python scripts/gpu_session.py pack --data data/sim256-10x --config configs/scale-256.yaml \
        --init runs/scale-256/context/last.pt --out gpu_pack  # --init: a path or a released name (dualface)
    # there (the device tool; no network, torch/numpy/scipy/yaml/tqdm/tensorboard installed, no venv):
    #   carry ["gpu_pack"], command:
    PYTHONPATH=src python3 scripts/gpu_session.py run --pack gpu_pack --out $OUT --minutes 8

**Why a pack**: the GPU machine reaches no network and has none of the simulator's packages (gias3, trimesh,
SimpleITK), so its data travel with the working tree, 64 MiB in all (the tree itself is ~15 MiB). A pack holds
``--n`` samples (one pose per subject first, so the anatomy varies) in the training sample format minus what
the imaging chain on the fly does not read: the material line integrals quantised to 0.01 g/cm^2 and stored
as row differences (uint16 -> int16; the chain's photon noise is far larger), the depths as offsets from the
sample's iso-centre distance in 0.01 mm (int16; exact to 0.005 mm), the masks as bits, the geometry as text;
plus the chest views the negatives use, the run's config and, with ``--init``, the starting weights in
float16 (:func:`threeddx.network.checkpoint.export_release`). ~250 kB per 256 px sample: about 150 samples beside the weights of ``context-256``.

**run** unpacks it into the ordinary sample folder under /tmp, trains with the project's own trainer
(:class:`threeddx.training.train.Trainer`: the same losses, chain, negatives, mirroring and balls) on the GPU
(mixed precision, channels_last, the chain in ``--workers`` loader processes), for ``--minutes`` of epochs
(``--budget-min``: it stops at an epoch's end), from the packed weights when there are any. Into ``--out`` it
writes ``weights.pt`` (the best epoch as an inference checkpoint, ``export_release``'s float16: ~11 MB, under the
16 MiB a returned file may have; ``3ddx predict --checkpoint`` reads it), ``metrics.csv`` and ``gpu_run.json``:
the device, images/s of the whole training loop (loader included), of the network alone (forward, backward
and optimiser on a batch already on the GPU) and of the loader alone, for docs/benchmarks.md beside the CPU's.

Tested on the CPU (tests/test_gpu_session.py: a pack of the small simulated set, ``run --device cpu`` for a
few seconds with the packages the GPU machine lacks blocked from import).
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

#: The pack's budget: 64 MiB travel in all, ~15 MiB of it the repository's tree.
PACK_MIB = 46.0
#: Quantisation steps of the pack (module doc).
MATERIAL_STEP = 0.01  # g/cm^2
DEPTH_STEP = 0.01  # mm


# ----------------------------------------------------------------- packing
def pack_sample(z) -> dict[str, np.ndarray]:
    """One sample npz (its arrays) -> the pack's compact arrays (module doc)."""
    from threeddx.geometry import XrayGeometry

    geo = XrayGeometry.from_json(str(z["geometry"]))
    ref = geo.isocenter_distance_or_assumed
    q = np.round(np.asarray(z["materials"], np.float64) / MATERIAL_STEP)
    if q.max() >= 2**16 or q.min() < 0:
        raise ValueError("material line integrals outside the pack's range")
    masks = np.asarray(z["masks"]) > 0

    def depth(a):
        d = np.where(masks, np.round((np.asarray(a, np.float64) - ref) / DEPTH_STEP), 0)
        if np.abs(d).max() >= 2**15:
            raise ValueError("a depth lies over 327 mm from the iso-centre")
        return d.astype(np.int16)

    return {"materials": np.diff(q.astype(np.int64), axis=-1, prepend=0).astype(np.int16),
            "material_names": np.asarray(z["material_names"]), "masks": np.packbits(masks, axis=-1),
            "front": depth(z["depth_front"]), "back": depth(z["depth_back"]), "bones": np.asarray(z["bones"]),
            "geometry": np.asarray(z["geometry"]), "shape": np.array(masks.shape)}


def unpack_sample(p) -> dict[str, np.ndarray]:
    """The pack's arrays -> a sample npz's arrays (what :class:`threeddx.training.dataset.SimulatedDataset` reads)."""
    from threeddx.geometry import XrayGeometry

    ref = XrayGeometry.from_json(str(p["geometry"])).isocenter_distance_or_assumed
    shape = tuple(int(x) for x in p["shape"])
    masks = np.unpackbits(p["masks"], axis=-1, count=shape[-1]).astype(np.uint8).reshape(shape)
    mats = (np.cumsum(p["materials"].astype(np.int64), axis=-1) * MATERIAL_STEP).astype(np.float32)

    def depth(d):
        return np.where(masks > 0, d.astype(np.float64) * DEPTH_STEP + ref, 0.0).astype(np.float32)

    return {"materials": mats, "material_names": p["material_names"], "masks": masks, "depth_front": depth(p["front"]),
            "depth_back": depth(p["back"]), "bones": p["bones"], "geometry": p["geometry"],
            "image": np.zeros(shape[1:], np.float32)}  # the chain makes the image; the stored one is never read


def pack(data: Path, config: Path, out: Path, n: int, init: str | Path | None, val_share: float = 0.1,
         budget_mib: float = PACK_MIB) -> dict:
    """Write the pack (module doc); returns what it holds. Samples come one pose per subject first (the
    manifest's order within), training and validation subjects apart; stops before ``budget_mib``."""
    import shutil

    import yaml

    from threeddx.io import save_npz_atomic
    from threeddx.errors import InputError
    from threeddx.network.checkpoint import export_release, resolve_checkpoint
    from threeddx.training.dataset import read_manifest

    path = None if init is None else resolve_checkpoint(init)  # a path or a released name; checked before writing
    if path is not None and not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    out.mkdir(parents=True, exist_ok=True)
    used = 0
    if path is not None:  # the release's slim float16 copy: no optimiser, read back without running code
        used += export_release(path, out / "init.pt", info={"packed_from": str(init)})
    neg = data / "negatives"
    rows = read_manifest(data)
    if float((yaml.safe_load(config.read_text()) or {}).get("data", {}).get("negatives") or 0) > 0:
        from threeddx.geometry import XrayGeometry
        from threeddx.simulator.negatives import ensure_chest_views

        with np.load(data / rows[0]["render"]) as z:  # rendered here: the GPU machine lacks the chest CT's package
            ensure_chest_views(neg, XrayGeometry.from_json(str(z["geometry"])))
    if neg.is_dir():
        shutil.copytree(neg, out / "negatives", dirs_exist_ok=True)
        used += sum(f.stat().st_size for f in (out / "negatives").iterdir())
    first_pose = sorted(rows, key=lambda r: (int(r["pose"]), r["split"] != "train"))
    val_rows = [r for r in first_pose if r["split"] == "val"]
    train_rows = [r for r in first_pose if r["split"] == "train"]
    every = max(2, int(round(1.0 / val_share))) if val_rows else 0
    chosen = []  # one validation sample in every ``every``, so that wherever the budget stops the share holds
    while len(chosen) < n and (train_rows or val_rows):
        take_val = val_rows and (not train_rows or (every and len(chosen) % every == 0))
        chosen.append((val_rows if take_val else train_rows).pop(0))
    written = []
    for r in chosen:
        with np.load(data / r["render"]) as z:
            arrays = pack_sample(z)
        path = out / "samples" / f"{r['sample_id']}.npz"
        save_npz_atomic(path, **arrays)
        size = path.stat().st_size
        if used + size > budget_mib * 2**20:
            path.unlink()
            break
        used += size
        written.append({**r, "render": f"samples/{r['sample_id']}.npz"})
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(written[0]))
        w.writeheader()
        w.writerows(written)
    shutil.copy(config, out / "config.yaml")
    info = {"samples": len(written), "val": sum(r["split"] == "val" for r in written), "mib": used / 2**20,
            "from": str(data), "config": str(config), "init": str(init) if init else None,
            "settings": yaml.safe_load((data / "settings.json").read_text()) if (data / "settings.json").is_file() else None}
    (out / "pack.json").write_text(json.dumps(info, indent=1))
    return info


def unpack(pack_dir: Path, out: Path) -> Path:
    """The pack as an ordinary sample folder (manifest, samples/, negatives/) under ``out``."""
    import shutil

    from threeddx.io import save_npz_atomic

    rows = list(csv.DictReader(open(pack_dir / "manifest.csv", newline="")))
    for r in rows:
        with np.load(pack_dir / r["render"]) as p:
            save_npz_atomic(out / r["render"], **unpack_sample(p))
    shutil.copy(pack_dir / "manifest.csv", out / "manifest.csv")
    if (pack_dir / "negatives").is_dir():
        shutil.copytree(pack_dir / "negatives", out / "negatives", dirs_exist_ok=True)
    return out


# ----------------------------------------------------------------- running
def _images_per_s(step, n_images: int, seconds: float, warm: int = 3) -> float:
    """``n_images`` per run of ``step()`` timed over the runs that fit in ``seconds`` after ``warm`` runs."""
    for _ in range(warm):
        step()
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        k += 1
    return k * n_images / (time.perf_counter() - t0)


def network_throughput(trainer, batch_size: int, seconds: float = 10.0) -> float:
    """Images/s of the network alone: a training step (forward, losses, backward, optimiser) on one batch
    already on the device, the trainer's precision settings; the weights are restored afterwards."""
    import copy

    import torch

    loader = trainer._loader(trainer.train_set, True, 0)
    batch = trainer._to(next(iter(loader)))
    saved = copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.opt.state_dict())

    def step():
        loss, *_ = trainer._batch_loss(batch)
        trainer.opt.zero_grad(set_to_none=True)
        loss.backward()
        trainer.opt.step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()

    rate = _images_per_s(step, len(batch["image"]), seconds)
    trainer.model.load_state_dict(saved[0])
    trainer.opt.load_state_dict(saved[1])
    return rate


def loader_throughput(trainer, seconds: float = 10.0) -> float:
    """Images/s the loader (imaging chain in its worker processes) delivers alone."""
    loader = trainer._loader(trainer.train_set, True, 0)
    it, n, t0 = iter(loader), 0, time.perf_counter()
    for batch in it:
        n += len(batch["image"])
        if time.perf_counter() - t0 > seconds:
            break
    return n / (time.perf_counter() - t0)


def run(pack_dir: Path, out: Path, minutes: float, device: str = "cuda", workers: int = 12,
        batch_size: int | None = None, lr: float | None = None, work: Path | None = None) -> dict:
    """Train from the pack for ``minutes`` (module doc); write weights.pt, metrics.csv and gpu_run.json to ``out``."""
    import tempfile

    import torch

    from threeddx.network.checkpoint import export_release
    from threeddx.training.train import Trainer, load_config

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_session_")) if work is None else work
    data = unpack(pack_dir, work / "data")
    t_unpack = time.perf_counter() - t_start
    cfg = load_config(pack_dir / "config.yaml")
    cfg["data"].update(root=str(data), workers=int(workers))
    cfg["device"] = device
    cfg["out"] = str(work / "run")
    cfg["perf"].update(bf16=device == "cpu" and cfg["perf"]["bf16"], compile=False)
    cfg["amp"] = device != "cpu"
    cfg["optim"].update(epochs=10**6, schedule="constant")  # the budget ends it; a fine-tune keeps its rate
    if batch_size:
        cfg["optim"]["batch_size"] = int(batch_size)
    if lr:
        cfg["optim"]["lr"] = float(lr)
    init = pack_dir / "init.pt"
    cfg["init"] = str(init) if init.is_file() else None
    trainer = Trainer(cfg, progress=False)
    rates = {"network_images_per_s": network_throughput(trainer, cfg["optim"]["batch_size"],
                                                        seconds=min(10.0, 6.0 * minutes)),
             "loader_images_per_s": loader_throughput(trainer, seconds=min(10.0, 6.0 * minutes))}
    budget = max(1.0, minutes * 60.0 - (time.perf_counter() - t_start))
    t0 = time.perf_counter()
    last = trainer.fit(budget)
    train_s = time.perf_counter() - t0
    export_release(work / "run" / "best.pt", out / "weights.pt", info={"gpu_session": str(pack_dir)})
    (out / "metrics.csv").write_text((work / "run" / "metrics.csv").read_text())
    epochs = int(last.get("epoch", 0))  # from 0: --init starts a new run from the packed weights
    n_train = len(trainer.train_set)
    record = {
        "device": torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else platform.processor()
        or platform.machine(),
        "torch": torch.__version__, "samples": n_train, "size": trainer.size, "batch_size": cfg["optim"]["batch_size"],
        "workers": workers, "epochs": epochs, "train_seconds": round(train_s, 1),
        # the whole loop: loader, steps and each epoch's validation
        "train_images_per_s": round(n_train * epochs / train_s, 2) if train_s > 0 else None,
        **{k: round(v, 2) for k, v in rates.items()},
        "unpack_seconds": round(t_unpack, 1), "val_absrel": last.get("val_absrel"), "val_rmse_mm": last.get("val_rmse_mm"),
        "val_dice": last.get("val_dice"), "init": cfg["init"] is not None,
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "gpu_run.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: data, config and starting weights in one folder")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--init", help="a checkpoint to start from, a path or a released name (its weights travel in "
                   "float16)")
    p.add_argument("--n", type=int, default=400, help="at most this many samples (the MiB budget may stop sooner)")
    p.add_argument("--mib", type=float, default=PACK_MIB)
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="there: train from the pack for some minutes")
    r.add_argument("--pack", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--minutes", type=float, default=8.0)
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=12)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--lr", type=float)
    a = ap.parse_args(argv)
    from threeddx.errors import InputError

    try:
        if a.cmd == "pack":
            info = pack(a.data, a.config, a.out, a.n, a.init, budget_mib=a.mib)
            print(json.dumps(info, indent=1))
        else:
            print(json.dumps(run(a.pack, a.out, a.minutes, a.device, a.workers, a.batch_size, a.lr), indent=1))
    except InputError as e:  # bad input: one line, exit 2, as the CLI
        print(f"gpu_session: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
