"""Where the femur error comes from: absolute depth, and whether the pelvis could anchor it.

    .venv/bin/python benchmarks/femur_offset.py [--data data/sim128] [--split test] [--eval runs/robustness/eval/...]

1. From an evaluation's ``results.csv`` (``3ddx evaluate``): per bone, the best
   shift along the beam (``beam_shift_mm``: how far the reconstruction sits from
   the truth along the rays) as mean and standard deviation, with ASSD before and
   after that shift.
2. In the ground truth of the split: the femoral head's depth (its centre, from
   the LLP26 hip-joint centre of the subject) against the mean of the femur's
   front and back depths, and of the pelvis's, over the head's disc (15 mm radius
   on the detector). If the pelvis's mid-depth there were close to the head's, a
   reconstruction could place each femur by its hip joint; the numbers say
   whether dual-face maps carry that information.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def shifts(results_csv: Path) -> None:
    rows = list(csv.DictReader(open(results_csv)))
    print(f"## beam shift of the reconstruction, {results_csv}")
    print()
    print("| bone | images | shift mean mm | shift SD mm | ASSD | ASSD after the shift |")
    print("|---|---|---|---|---|---|")
    for bone in ("pelvis", "femur_left", "femur_right"):
        ok = [r for r in rows if r["bone"] == bone and r["status"] == "ok"]
        s = np.array([float(r["beam_shift_mm"]) for r in ok])
        a = np.mean([float(r["assd"]) for r in ok])
        b = np.mean([float(r["assd_beam_aligned"]) for r in ok])
        print(f"| {bone} | {len(ok)} | {s.mean():.1f} | {s.std():.1f} | {a:.2f} | {b:.2f} |")
    print()


def head_discs(data: Path, split: str, radius_mm: float = 15.0) -> None:
    from threeddx.simulator.anatomy import load_shape
    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry

    femur_err, pelvis_err = [], []
    rows = [r for r in read_manifest(data) if r["split"] == split and r["subject_id"].startswith("llp26-")]
    for r in rows:
        centres = load_shape(int(r["subject_id"].split("-")[1])).hip_centers
        with np.load(data / r["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            bones = [str(b) for b in z["bones"]]
            m, f, b = z["masks"] > 0, z["depth_front"], z["depth_back"]
        row, col, depth = geo.project(centres)
        rr, cc = np.mgrid[: m.shape[1], : m.shape[2]]
        px = radius_mm / geo.pixel_spacing[0]
        pel = bones.index("pelvis")
        for femur, k in (("femur_left", int(np.argmax(centres[:, 0]))), ("femur_right", int(np.argmin(centres[:, 0])))):
            disc = (rr - row[k]) ** 2 + (cc - col[k]) ** 2 <= px**2
            fi = bones.index(femur)
            mid = lambda i: ((f[i] + b[i]) / 2)[disc & m[i]]  # noqa: E731
            femur_err.append(mid(fi).mean() - depth[k])
            if (disc & m[pel]).any():
                pelvis_err.append(mid(pel).mean() - depth[k])
    fe, pe = np.array(femur_err), np.array(pelvis_err)
    print(f"## ground truth of {data} ({split}, {len(rows)} images): mid-depth over the femoral head's disc "
          f"({radius_mm:g} mm) minus the head centre's depth")
    print()
    print("| faces | hips | mean mm | SD mm |")
    print("|---|---|---|---|")
    print(f"| femur (front + back) / 2 | {len(fe)} | {fe.mean():.1f} | {fe.std():.1f} |")
    print(f"| pelvis (front + back) / 2 | {len(pe)} | {pe.mean():.1f} | {pe.std():.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/sim128"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--eval", type=Path, help="an evaluation folder (results.csv)")
    a = ap.parse_args()
    if a.eval:
        shifts(a.eval / "results.csv")
    head_discs(a.data, a.split)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
