"""Calibrate the mask threshold of the inference path (threeddx.inference.predictor.MASK_THRESHOLD).

    .venv/bin/python benchmarks/mask_threshold.py [--data data/sim128] [--split val] [--checkpoint dualface-128]

The defaults are the 128 px release on its own 128 px data (the figures recorded before the 256 px release);
the 256 px one: ``--data data/sim256-10x-eval --checkpoint dualface``.

Every image of the split is made through a random imaging chain (seeded as
``3ddx evaluate --chain random`` does), the network's mask probabilities are
thresholded at 0.5-0.8, and per bone the Dice with the true mask and the false
bone area (predicted mask outside every true silhouette, % of the true area)
are averaged. The rule, on the *validation* split: the lowest threshold whose
mean false bone area is under 5 % (the goal of docs/results.md's robustness
table) among those within 0.005 of the best mean Dice; the test split is for
reporting only.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def main() -> int:
    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.predictor import Predictor
    from threeddx.metrics import dice, false_area_pct
    from threeddx.simulator.physics import chain_for, radiograph, sample_materials

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/sim128"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--checkpoint", default="dualface-128")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    pred = Predictor(a.checkpoint)
    rows = [r for r in read_manifest(a.data) if r["split"] == a.split]
    res: dict[tuple[float, str], list[tuple[float, float]]] = {}
    for i, r in enumerate(rows):
        with np.load(a.data / r["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            stored = [str(b) for b in z["bones"]]
            truth = z["masks"] > 0
            img = radiograph(sample_materials(z), geo, chain_for("random", np.random.default_rng([a.seed, i])))
        p = pred.infer(img, geo)
        truth = p.to_view(truth.astype(np.float32)) > 0.5
        for t in THRESHOLDS:
            for c, bone in enumerate(pred.bones):
                m = p.probabilities[c] > t
                j = stored.index(bone)
                others = np.stack([truth[j], *[truth[k] for k in range(len(stored)) if k != j]])
                res.setdefault((t, bone), []).append((dice(m, truth[j]), false_area_pct(m, others)))
    print(f"# mask threshold on {a.data} ({a.split}, {len(rows)} images, random chains seed {a.seed}), {a.checkpoint}")
    print()
    print("| threshold | " + " | ".join(f"{b} Dice | {b} false area %" for b in pred.bones) + " | mean Dice | mean false area % |")
    print("|---|" + "---|---|" * len(pred.bones) + "---|---|")
    for t in THRESHOLDS:
        v = np.array([np.mean(res[(t, b)], axis=0) for b in pred.bones])
        cells = " | ".join(f"{d:.3f} | {f:.1f}" for d, f in v)
        print(f"| {t} | {cells} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
