"""Checkpoints side by side on one data folder's validation split, by the trainer's own validation.

    .venv/bin/python benchmarks/validate.py --data data/sim256-10x \\
        --model release=dualface@128 --model scratch=runs/scale-256/context/best.pt@256 ...

Each ``--model LABEL=CHECKPOINT@SIZE`` (a checkpoint path or a released name;
SIZE the pixels the model is run at, the images downsampled from the folder's)
is validated exactly as ``3ddx train`` validates after each epoch
(:meth:`threeddx.training.train.Trainer.validate`): the split's images through
the random imaging chains seeded for validation (the same chain per image for
every model), no negatives, no balls, no mirroring; depth AbsRel and RMSE (mm)
inside the true masks, mask Dice. The checkpoint's own training config sets
the model and the loss; only the data folder and the size change.
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path


def validate(data: str, checkpoint: str, size: int, split: str) -> dict[str, float]:
    import torch

    from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint
    from threeddx.training.train import Trainer, load_config

    path = resolve_checkpoint(checkpoint)
    cfg = copy.deepcopy(load_checkpoint(path).get("config") or {})
    cfg["data"] = {**cfg.get("data", {}), "root": data, "size": size, "val_split": split, "workers": 0,
                   "limit_train": 1}
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, cfg | {"init": str(path), "out": out, "device": "cpu"})
        torch.manual_seed(0)
        return Trainer(cfg, progress=False).validate()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a 3ddx simulate folder")
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=CHECKPOINT@SIZE")
    a = ap.parse_args()
    import torch

    print(f"# validation of {len(a.model)} models on {a.data} ({a.split} split, random chains seeded for validation); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, Python "
          f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    print()
    print("| model | checkpoint | size | val AbsRel | val RMSE (mm) | val Dice |")
    print("|---|---|---|---|---|---|")
    for spec in a.model:
        label, _, rest = spec.partition("=")
        ck, _, size = rest.rpartition("@")
        if not (label and ck and size.isdigit()):
            ap.error(f"--model {spec!r}: expected LABEL=CHECKPOINT@SIZE")
        r = validate(a.data, ck, int(size), a.split)
        print(f"| {label} | {ck} | {size} | {r['val_absrel']:.4f} | {r['val_rmse_mm']:.1f} | {r['val_dice']:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
