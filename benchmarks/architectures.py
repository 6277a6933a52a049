"""Which network for 256 px: the candidate presets trained under the same CPU budget, scored on validation.

    .venv/bin/python benchmarks/architectures.py --config configs/scale-256.yaml \\
        --presets release-128 context-256 --budget-min 20 [--limit-train N] [--out runs/arch]

Each preset of :data:`threeddx.network.model.PRESETS` named is trained from scratch with the config (same data,
loss, optimiser, seed, imaging chains and augmentation; only ``model.preset`` changes) for ``--budget-min``
minutes of this machine (``3ddx train --budget-min``: it stops at the last epoch boundary within the budget,
at least one epoch), into ``OUT/PRESET`` (resumable: ``3ddx train --resume OUT/PRESET/last.pt``). Printed per
preset: parameters, training images per second (loader, imaging chain and validation included), epochs, the
validation split's depth error (AbsRel, RMSE mm, over the true masks) and mask Dice after the last epoch,
then the machine and date. The preset with the lowest validation AbsRel under the budget is the one to
train on; a short budget favours small networks, so the table states it.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "scale-256.yaml")
    ap.add_argument("--presets", nargs="+", default=["release-128", "context-256"])
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "arch")
    ap.add_argument("--data", help="override data.root")
    ap.add_argument("--limit-train", type=int, help="override data.limit_train: the first N training samples")
    a = ap.parse_args()

    import torch

    from threeddx.network.model import PRESETS, DualFaceNet, model_config
    from threeddx.training.train import load_config, train

    rows = []
    for name in a.presets:
        # the preset alone decides the architecture (the config's own width, levels, ... are cleared)
        over = {"model": {"preset": name, "width": None, "levels": None, "blocks": None, "coords": None,
                          "attention": None}, "out": str(a.out / name)}
        if a.data:
            over.setdefault("data", {})["root"] = a.data
        if a.limit_train:
            over.setdefault("data", {})["limit_train"] = a.limit_train
        cfg = load_config(a.config, over)
        params = sum(p.numel() for p in DualFaceNet(model_config(cfg["model"], bones=cfg["data"]["bones"])).parameters())
        t0 = time.perf_counter()
        rec = train(cfg, progress=False, overwrite=True, budget_s=60 * a.budget_min)
        wall = time.perf_counter() - t0
        with open(a.out / name / "metrics.csv", newline="") as f:
            epochs = list(csv.DictReader(f))
        seen = sum(int(e["step"]) for e in epochs[-1:]) * int(cfg["optim"]["batch_size"])
        train_s = sum(float(e["seconds"]) for e in epochs)
        rows.append((name, PRESETS[name][0], params, seen / max(train_s, 1e-9), len(epochs), rec, wall))
        print(f"{name}: {len(epochs)} epochs in {wall / 60:.1f} min, val AbsRel {rec.get('val_absrel', float('nan')):.4f}",
              flush=True)
    print(f"\n# {datetime.date.today()} {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} "
          f"threads; config {a.config.name}, budget {a.budget_min:g} min per preset"
          + (f", the first {a.limit_train} training samples" if a.limit_train else ""))
    print("| preset | what | parameters | train images/s | epochs | val AbsRel | val RMSE (mm) | val Dice |")
    print("|---|---|---|---|---|---|---|---|")
    for name, what, params, ips, n, rec, _ in rows:
        print(f"| {name} | {what} | {params / 1e6:.2f} M | {ips:.2f} | {n} | {rec.get('val_absrel', float('nan')):.4f} | "
              f"{rec.get('val_rmse_mm', float('nan')):.1f} | {rec.get('val_dice', float('nan')):.3f} |")


if __name__ == "__main__":
    main()
