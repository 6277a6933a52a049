"""Point-to-surface distances, the cost of every ASSD and HD95: ours (libigl) against trimesh's exact query.

    .venv/bin/python benchmarks/metrics.py [--data data/sim128] [--repeats 3]

For each bone, the points are sampled (0.5 per mm², as ``3ddx evaluate`` does) on
test subject 16's mesh and measured against test subject 10's (a poor
"reconstruction": a mean distance of 3 mm for the pelvis, as a learned model's, and of
tens of mm for the femur, which lies elsewhere in the other subject's frame). Rows:
``threeddx.metrics.point_to_surface`` (libigl's AABB tree) and
``trimesh.proximity.closest_point`` (rtree candidates, then exact triangles),
both exact; the table gives the median time over the repeats, the ratio and the
largest difference between the two (mm).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    import trimesh

    from threeddx.metrics import point_to_surface, sample_surface

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sim128")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"{platform.machine()}, {time.strftime('%Y-%m-%d')}; median of {a.repeats}\n")
    print("| bone | triangles | points | libigl (ours) ms | trimesh closest_point ms | ratio | max |diff| mm | mean distance mm |")
    print("|---|---|---|---|---|---|---|---|")
    for bone in ("pelvis", "femur_left"):
        truth = trimesh.load(a.data / "meshes" / "llp26-10" / f"{bone}.ply")
        other = trimesh.load(a.data / "meshes" / "llp26-16" / f"{bone}.ply")
        pts = sample_surface(other, density=0.5, seed=0)
        t_ours, d_ours = timed(lambda: point_to_surface(pts, truth), a.repeats)
        t_tm, d_tm = timed(lambda: trimesh.proximity.closest_point(truth, pts)[1], a.repeats)
        print(f"| {bone} | {len(truth.faces)} | {len(pts)} | {1000 * t_ours:.0f} | {1000 * t_tm:.0f} | "
              f"{t_tm / t_ours:.1f}x | {np.abs(d_ours - d_tm).max():.1e} | {d_ours.mean():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
