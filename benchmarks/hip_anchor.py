"""Hip-joint anchoring (threeddx.inference.hipjoint): the released model with and without it, and the anchor's own error.

    .venv/bin/python benchmarks/hip_anchor.py [--data data/sim128] [--old-test data/shift/old-test] [--out runs/hip-anchor] [--shifts]
        [--checkpoint dualface-128]

1. **The anchor on ground truth**: the true masks and depths of the split,
   anchored: the shift it applies to each (correctly placed) femur is its own
   error (the pelvis shape model's joint against the femoral head's
   mid-depth), mean, SD and the largest.
2. **The released model, off and on**: ``3ddx evaluate`` on the validation and
   test splits through random imaging chains (seed 0), and on the old
   benchmark's test set (``benchmarks/robustness.py`` makes it from git),
   per bone: ASSD, HD95, the mean and SD of the remaining shift along the beam
   (``beam_shift_mm``) and the beam-aligned ASSD; with ``--shifts`` also
   the robustness benchmark's other renderer (DiffDRR) and declared geometries. The settings were chosen on
   the validation rows; the test rows are reported, not tuned on.

The default model is the 128 px release (``dualface-128``) on its own 128 px data, as the recorded figures
were made; the 256 px release: ``--data data/sim256-10x-eval --checkpoint dualface --out runs/hip-anchor-256``.
Evaluations are cached in OUT (delete a folder to rerun it).
"""
from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BONES = ("pelvis", "femur_left", "femur_right")
#: With --shifts: (label, folder under data/shift, chain) of benchmarks/robustness.py's sets, as it evaluates them.
SHIFT_SETS = [
    ("renderer: DiffDRR (Siddon), standard processing", "renderer-diffdrr", None),
    ("geometry: SDD 1150 mm (declared)", "geom-1150", "standard"),
    ("geometry: table +30 mm", "geom-30", "standard"),
    ("geometry: table -30 mm", "geom-m30", "standard"),
]


def oracle_shifts(data: Path, split: str) -> np.ndarray:
    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.hipjoint import anchor_femurs

    out = []
    for r in (r for r in read_manifest(data) if r["split"] == split):
        with np.load(data / r["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            keep = [[str(b) for b in z["bones"]].index(b) for b in BONES]
            masks, front, back = z["masks"][keep] > 0, z["depth_front"][keep].astype(np.float32), z["depth_back"][keep].astype(np.float32)
        res = anchor_femurs(list(BONES), masks, front, back, geo, {})
        out += [res[b].get("shift_mm", np.nan) for b in BONES[1:]]
    return np.array(out)


def evaluation(data: Path, split: str, chain, anchor: bool, out: Path, checkpoint: str) -> list[dict]:
    from threeddx.evaluation.evaluate import evaluate
    from threeddx.inference.hipjoint import AnchorSettings

    folder = out / f"{Path(checkpoint).stem}-{data.name}-{split}-{'on' if anchor else 'off'}"  # per model: no stale cache
    if not (folder / "results.csv").exists():
        evaluate(data, folder, checkpoint, split=split, chain=chain, progress=False,
                 hip_anchor=AnchorSettings() if anchor else None)
    return list(csv.DictReader(open(folder / "results.csv")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sim128")
    ap.add_argument("--old-test", type=Path, default=ROOT / "data" / "shift" / "old-test")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "hip-anchor")
    ap.add_argument("--checkpoint", default="dualface-128", help="the model (a path or a released name)")
    ap.add_argument("--shifts", action="store_true",
                    help="also the other renderer and the declared geometries of benchmarks/robustness.py (data/shift/)")
    a = ap.parse_args()
    import torch

    print(f"`python benchmarks/hip_anchor.py --checkpoint {a.checkpoint} --data {a.data}{' --shifts' if a.shifts else ''}`; {platform.machine()}, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| ground truth, split | femurs | applied | shift mean mm | shift SD mm | largest shift mm |")
    print("|---|---|---|---|---|---|")
    for split in ("val", "test"):
        s = oracle_shifts(a.data, split)
        ok = s[np.isfinite(s)]
        print(f"| {split} | {len(s)} | {len(ok)} | {ok.mean():.2f} | {ok.std():.2f} | {np.abs(ok).max():.2f} |")
    print()
    sets = [("val, random chains", a.data, "val", "random"), ("test, random chains", a.data, "test", "random")]
    shifted = [("old test set (old bodies, windowed DRR)", a.old_test, None)]
    if a.shifts:
        shifted += [(label, a.old_test.parent / name, chain) for label, name, chain in SHIFT_SETS]
    for label, folder, chain in shifted:
        if (folder / "manifest.csv").exists():
            sets.append((label, folder, "test", chain))
        else:
            print(f"(no {folder}: run benchmarks/robustness.py once to make it)\n")
    print("| set | anchor | bone | ASSD | HD95 | beam shift mean mm | beam shift SD mm | beam-aligned ASSD |")
    print("|---|---|---|---|---|---|---|---|")
    for label, data, split, chain in sets:
        for anchor in (False, True):
            rows = evaluation(data, split, chain, anchor, a.out, a.checkpoint)
            for bone in (*BONES, "femur"):
                r = [x for x in rows if x["status"] == "ok" and (x["bone"] == bone or (bone == "femur" and x["bone"] != "pelvis"))]
                v = {k: np.array([float(x[k]) for x in r]) for k in ("assd", "hd95", "beam_shift_mm", "assd_beam_aligned")}
                print(f"| {label} | {'on' if anchor else 'off'} | {bone} | {v['assd'].mean():.2f} | {v['hd95'].mean():.2f} | "
                      f"{v['beam_shift_mm'].mean():.1f} | {v['beam_shift_mm'].std():.1f} | {v['assd_beam_aligned'].mean():.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
