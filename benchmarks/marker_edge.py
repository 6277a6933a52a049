"""How well is a steel ball's outline measured on a detector signal, and what is left of its far lean? (issue 31)

    .venv/bin/python benchmarks/marker_edge.py [--sizes 2048 1024 512] [--kvps 60 80 100]
        [--placement runs/marker-placement-256/signal]

**Synthetic balls**: a 25 mm steel ball 820 mm from the source, off the central ray, drawn exactly
(``with_marker(..., exact=True)``) behind 10 g/cm^2 of soft tissue, on a tilted background with scatter, blurred
by 1 px, in a window of a ``size`` px detector. Per size and tube voltage the depth error (mm, + far) of
:func:`threeddx.inference.marker.measure_on_signal` started 3 mm off: the steel's edge fitted at the true kVp, at
80 kVp assumed, and as an opaque disc (the ninth session's fit); and an opaque ball (no steel edge) fitted as one.

**The test films' lean** (``--placement``: a ``benchmarks/marker_placement.py`` signal row's folder): per found
ball, its depth error against the lean its chain predicts when the fit's assumptions (3 mm Al, no Cu, 10 g/cm^2
of tissue) are replaced by the chain's filtration, and by the chain's filtration with 20 g/cm^2 of tissue: the
mean of each, their correlation with the errors and the errors' RMS once each is taken out.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import platform
from pathlib import Path

import numpy as np

#: The synthetic ball's centre (source frame, mm); 820 mm is also the evaluation's iso-centre, where the test films'
#: balls lie.
CENTRE = np.array([-110.0, 30.0, 820.0])


def _window(size: int):
    from threeddx.geometry import standard_ap_geometry
    from threeddx.inference.marker import _crop_geometry, sphere_marker

    g = standard_ap_geometry(size=size)
    m = sphere_marker(g, CENTRE, 25.0)
    half = int(m.apparent_diameter_px)
    return _crop_geometry(g, int(m.row) - half, int(m.col) - half, 2 * half, 2 * half)


def _signal(transmission: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    rr, cc = np.mgrid[: transmission.shape[0], : transmission.shape[1]] / transmission.shape[0]
    return ndimage.gaussian_filter((1.0 + 0.2 * rr - 0.1 * cc) * transmission + 0.3, 1.0)


def synthetic(sizes: list[int], kvps: list[float]) -> list[str]:
    from threeddx.inference.marker import (EDGE_AL_MM, EDGE_TISSUE_G_CM2, measure_on_signal, refine_cone,
                                           sphere_cover, sphere_marker, with_marker)
    from threeddx.simulator.physics import BALL_EXACT, transmission

    rows = []
    for size in sizes:
        geo = _window(size)
        start = sphere_marker(geo, CENTRE * 1.004, 25.0)
        _, share, _ = sphere_cover(geo, CENTRE, 12.5, supersample=8)
        opaque_ball = refine_cone(_signal(1.0 - share), geo, start).depth_mm - CENTRE[2]
        tissue = np.full(geo.detector_shape, EDGE_TISSUE_G_CM2, np.float32)
        ball = with_marker({"soft": tissue}, geo, CENTRE, 25.0, exact=True)[BALL_EXACT]
        for kvp in kvps:
            sig = _signal(transmission({"soft": tissue}, kvp, EDGE_AL_MM, ball=ball))
            err = [measure_on_signal(sig, geo, start, kvp=k, opaque=o).depth_mm - CENTRE[2]
                   for k, o in ((kvp, False), (None, False), (kvp, True))]
            rows.append(f"| {size} | {kvp:g} | {err[0]:+.2f} | {err[1]:+.2f} | {err[2]:+.2f} | {opaque_ball:+.2f} |")
    return rows


def lean(folder: Path) -> list[str]:
    from threeddx.inference.marker import SteelEdge
    from threeddx.simulator.physics import chain_for

    rows = [r for r in csv.DictReader(open(folder / "results.csv")) if r["bone"] == "pelvis"]
    errors, predicted = [], {"the chain's filtration": [], "the chain's filtration, 20 g/cm^2 of tissue": []}
    for i, r in enumerate(rows):  # image i of the split, its chain drawn as evaluate draws it
        e = float(r["marker_depth_error_mm"])
        if not np.isfinite(e):
            continue
        c = chain_for("random", np.random.default_rng([0, i]))
        assumed = SteelEdge(25.0, c.kvp).inset_mm  # the fit's filtration and tissue
        for key, soft in zip(predicted, (SteelEdge.tissue_g_cm2, 20.0)):  # a radius short by x reads it x / R far
            inset = SteelEdge(25.0, c.kvp, c.al_mm, c.cu_mm, soft).inset_mm
            predicted[key].append((inset - assumed) / 12.5 * CENTRE[2])
        errors.append(e)
    e = np.asarray(errors)
    out = [f"| measured | {len(e)} | {e.mean():+.2f} | | {np.sqrt(np.mean(e**2)):.2f} |"]
    for key, p in predicted.items():
        p = np.asarray(p)
        out.append(f"| lean predicted by {key} | {len(e)} | {p.mean():+.2f} | {np.corrcoef(p, e)[0, 1]:.2f} | "
                   f"{np.sqrt(np.mean((e - p) ** 2)):.2f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[2048, 1024, 512])
    ap.add_argument("--kvps", nargs="+", type=float, default=[60.0, 80.0, 100.0])
    ap.add_argument("--placement", type=Path, help="a marker_placement.py signal row's folder (results.csv)")
    a = ap.parse_args()
    print(f"\n{datetime.date.today()}, {platform.machine()}: a 25 mm steel ball 820 mm from the source, depth error "
          "(mm, + far)\n")
    print("| detector px | kVp | steel edge at the kVp | steel edge at 80 kVp assumed | opaque fit | "
          "an opaque ball, opaque fit |")
    print("|---|---|---|---|---|---|")
    print("\n".join(synthetic(a.sizes, a.kvps)))
    if a.placement is not None:
        print(f"\nThe found balls' depth error on {a.placement} (mm, + far):\n")
        print("| | balls | mean | correlation with the errors | RMS once taken out |")
        print("|---|---|---|---|---|")
        print("\n".join(lean(a.placement)))


if __name__ == "__main__":
    main()
