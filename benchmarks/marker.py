"""The calibration sphere on simulated radiographs: is it found, and how far off is the depth it gives?

    .venv/bin/python benchmarks/marker.py --data data/v5val data/val512 [--n 12] [--diameter 25]

Per sample of each folder, a steel ball (``--diameter`` mm) is added to the material line integrals
(:func:`threeddx.inference.marker.with_marker`) beside the right greater trochanter at the hips' distance
from the source (source frame x -130 .. -90 mm, a few rows apart), and the radiograph is made through the
standard chain and through a random one (seeded by the sample's index). :func:`~threeddx.inference.marker.find_marker`
then looks for it. Printed per folder and chain: how many balls were found, how many refusals (and their
kind: none found, several, at the border), how many found balls sit elsewhere than the true one (more than
half its radius off), and the true finds' depth error (mm, their source-frame z against the truth): median and
largest.
"""
from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--diameter", type=float, default=25.0)
    ap.add_argument("--upsample", type=int, default=0,
                    help="render at this many pixels a side instead (the anatomy's line integrals interpolated, the ball "
                    "analytic at that resolution, the chain at it): a clinical detector's resolution")
    a = ap.parse_args()
    from threeddx.errors import InputError
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.marker import find_marker, with_marker
    from threeddx.simulator.physics import radiograph, sample_chain, sample_materials

    print(f"# {datetime.date.today()} {platform.machine()}; a {a.diameter:g} mm steel ball beside the right trochanter"
          + (f"; rendered at {a.upsample} px" if a.upsample else ""))
    print("| data | chain | images | found there | found elsewhere | refused: none / several / border | "
          "depth error median (mm) | largest (mm) |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in a.data:
        files = sorted(folder.glob("samples/*/*.npz"))[: a.n]
        for kind in ("standard", "random"):
            errors, elsewhere, refused = [], 0, {"none": 0, "several": 0, "border": 0}
            for i, f in enumerate(files):
                with np.load(f) as z:
                    geo = XrayGeometry.from_json(str(z["geometry"]))
                    mats = sample_materials(z)
                if a.upsample:
                    from scipy import ndimage

                    k = a.upsample / geo.detector_shape[0]
                    mats = {m: ndimage.zoom(v, k, order=1) for m, v in mats.items()}
                    geo = geo.resample(a.upsample)
                centre = np.array([-130.0 + 20 * (i % 3), 20.0 - 30 * (i % 4), geo.isocenter_distance_or_assumed])
                chain = "standard" if kind == "standard" else sample_chain(i)
                img = radiograph(with_marker(mats, geo, centre, a.diameter), geo, chain)
                row, col, _ = geo.with_pose(np.eye(4)).project(centre)
                radius_px = a.diameter / 2 * geo.sdd / centre[2] / float(np.mean(geo.pixel_spacing))
                try:
                    m = find_marker(img, geo, a.diameter)
                except InputError as e:
                    refused["several" if "candidates" in str(e) else "border" if "border" in str(e) else "none"] += 1
                    continue
                if np.hypot(m.row - row, m.col - col) > radius_px / 2:
                    elsewhere += 1
                else:
                    errors.append(m.depth_mm - centre[2])
            e = np.abs(errors)
            if errors:
                print(f"  signed depth errors (mm): {np.round(errors, 1).tolist()}")
            print(f"| {folder.name} | {kind} | {len(files)} | {len(errors)} | {elsewhere} | "
                  f"{refused['none']} / {refused['several']} / {refused['border']} | "
                  f"{np.median(e) if len(e) else float('nan'):.1f} | {e.max() if len(e) else float('nan'):.1f} |")


if __name__ == "__main__":
    main()
