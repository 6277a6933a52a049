"""The calibration sphere on simulated radiographs: is it found, and how far off is the depth it gives?

    .venv/bin/python benchmarks/marker.py --data data/v5val data/val512 [--n 12] [--diameter 25]
    .venv/bin/python benchmarks/marker.py --data data/val512 --n 12 --upsample 2048 --ablate

Per sample of each folder, a steel ball (``--diameter`` mm) is added to the material line integrals
(:func:`threeddx.inference.marker.with_marker`) beside the right greater trochanter at the hips' distance
from the source (source frame x -130 .. -90 mm, a few rows apart), and the radiograph is made through the
standard chain and through a random one (seeded by the sample's index). :func:`~threeddx.inference.marker.find_marker`
then looks for it, as a dark disc where the chain displays the film inverted (predict learns the display's
polarity from the network's bones, ``Predictor.shows_bone_dark``: right on all 36 random-chain films of
``benchmarks/marker_finding.py``). Printed per folder and chain: how many balls were found, how many refusals (and their
kind: none found, several, at the border), how many found balls sit elsewhere than the true one (more than
half its radius off), and the true finds' depth error (mm, their source-frame z against the truth): median and
largest.

``--ablate``: which step of a random chain misleads the reading. Per image of the random chain, the depth error
(mm) as made, and with the chain's blur set to 0, with its display window not clipping the ball (upper
percentile 100, no S-curve), and with both; beside the chain's blur (output pixels), edge enhancement and JPEG.
"""
from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np


def refusal_kind(e: Exception) -> str:
    """find_marker's refusal as "several", "border", "hidden" (an outline that shows only in part) or "none" (its
    one-line message)."""
    m = str(e)
    return ("several" if "candidates" in m else "border" if "border" in m else "hidden" if "only in part" in m
            else "none")


def ball_centre(i: int, geo) -> np.ndarray:
    """The i-th image's ball (source frame, mm): beside the right trochanter at the hips' distance, a few rows apart."""
    return np.array([-130.0 + 20 * (i % 3), 20.0 - 30 * (i % 4), geo.isocenter_distance_or_assumed])


def sample_at(f: Path, upsample: int):
    """A sample's geometry and material line integrals, interpolated to ``upsample`` px a side (0: as stored)."""
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.physics import sample_materials

    with np.load(f) as z:
        geo = XrayGeometry.from_json(str(z["geometry"]))
        mats = sample_materials(z)
    if upsample:
        from scipy import ndimage

        k = upsample / geo.detector_shape[0]
        mats = {m: ndimage.zoom(v, k, order=1) for m, v in mats.items()}
        geo = geo.resample(upsample)
    return geo, mats


def ablate(a) -> None:
    """``--ablate`` (module doc): one table over the first ``--n`` samples of each folder."""
    from dataclasses import replace

    from threeddx.errors import InputError
    from threeddx.inference.marker import find_marker, with_marker
    from threeddx.simulator.physics import radiograph, sample_chain

    variants = {"as made": {}, "blur 0": {"blur_px": 0.0}, "window not clipping": {"window_hi_pct": 100.0, "lut_s": 0.0},
                "both": {"blur_px": 0.0, "window_hi_pct": 100.0, "lut_s": 0.0}}
    print(f"# {datetime.date.today()} {platform.machine()}; a {a.diameter:g} mm steel ball, random chains"
          + (f", rendered at {a.upsample} px" if a.upsample else "") + "; depth error mm (- nearer the source)")
    print("| data | image | blur px | edge gain / radius mm | window hi % | S-curve | JPEG | "
          + " | ".join(variants) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(variants))
    for folder in a.data:
        for i, f in enumerate(sorted(folder.glob("samples/*/*.npz"))[: a.n]):
            geo, mats = sample_at(f, a.upsample)
            centre = ball_centre(i, geo)
            with_ball, chain, cells = with_marker(mats, geo, centre, a.diameter), sample_chain(i), []
            row, col, _ = geo.with_pose(np.eye(4)).project(centre)
            for change in variants.values():
                try:
                    m = find_marker(radiograph(with_ball, geo, replace(chain, **change)), geo, a.diameter,
                                    bone_dark=chain.invert)
                    off = np.hypot(m.row - row, m.col - col) > m.apparent_diameter_px / 4
                    cells.append("elsewhere" if off else f"{m.depth_mm - centre[2]:+.1f}")
                except InputError as e:
                    cells.append(refusal_kind(e))
            print(f"| {folder.name} | {i} | {chain.blur_px:.2f} | {chain.edge_strength:.1f} / {chain.edge_radius_mm:.0f} | "
                  f"{chain.window_hi_pct:.1f} | {chain.lut_s:.1f} | {chain.jpeg_quality or '-'} | {' | '.join(cells)} |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--diameter", type=float, default=25.0)
    ap.add_argument("--upsample", type=int, default=0,
                    help="render at this many pixels a side instead (the anatomy's line integrals interpolated, the ball "
                    "analytic at that resolution, the chain at it): a clinical detector's resolution")
    ap.add_argument("--ablate", action="store_true", help="per random-chain image, the error without the chain's "
                    "blur, without its clipping window, and without both")
    a = ap.parse_args()
    from threeddx.errors import InputError
    from threeddx.inference.marker import find_marker, with_marker
    from threeddx.simulator.physics import radiograph, sample_chain

    if a.ablate:
        return ablate(a)
    print(f"# {datetime.date.today()} {platform.machine()}; a {a.diameter:g} mm steel ball beside the right trochanter"
          + (f"; rendered at {a.upsample} px" if a.upsample else ""))
    print("| data | chain | images | found there | found elsewhere | refused: none / several / border / hidden | "
          "depth error median (mm) | largest (mm) |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in a.data:
        files = sorted(folder.glob("samples/*/*.npz"))[: a.n]
        for kind in ("standard", "random"):
            errors, elsewhere, refused = [], 0, {"none": 0, "several": 0, "border": 0, "hidden": 0}
            for i, f in enumerate(files):
                geo, mats = sample_at(f, a.upsample)
                centre = ball_centre(i, geo)
                chain = "standard" if kind == "standard" else sample_chain(i)
                img = radiograph(with_marker(mats, geo, centre, a.diameter), geo, chain)
                row, col, _ = geo.with_pose(np.eye(4)).project(centre)
                radius_px = a.diameter / 2 * geo.sdd / centre[2] / float(np.mean(geo.pixel_spacing))
                try:
                    m = find_marker(img, geo, a.diameter, bone_dark=kind == "random" and chain.invert)
                except InputError as e:
                    refused[refusal_kind(e)] += 1
                    continue
                if np.hypot(m.row - row, m.col - col) > radius_px / 2:
                    elsewhere += 1
                else:
                    errors.append(m.depth_mm - centre[2])
            e = np.abs(errors)
            if errors:
                print(f"  signed depth errors (mm): {np.round(errors, 1).tolist()}")
            print(f"| {folder.name} | {kind} | {len(files)} | {len(errors)} | {elsewhere} | "
                  f"{refused['none']} / {refused['several']} / {refused['border']} / {refused['hidden']} | "
                  f"{np.median(e) if len(e) else float('nan'):.1f} | {e.max() if len(e) else float('nan'):.1f} |")


if __name__ == "__main__":
    main()
