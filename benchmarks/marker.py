"""The calibration sphere on simulated radiographs: is it found, and how far off is the depth it gives?

    .venv/bin/python benchmarks/marker.py --data data/v5val data/val512 [--n 12] [--diameter 25]

Per sample of each folder, a steel ball (``--diameter`` mm) is added to the material line integrals
(:func:`threeddx.inference.marker.with_marker`) beside the right greater trochanter at the hips' distance
from the source (source frame x -130 .. -90 mm, a few rows apart), and the radiograph is made through the
standard chain and through a random one (seeded by the sample's index). :func:`~threeddx.inference.marker.find_marker`
then looks for it. Printed per folder and chain: how many balls were found, how many refusals (and their
first words), and the found balls' depth error (mm, their source-frame z against the truth): median and
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
    a = ap.parse_args()
    from threeddx.errors import InputError
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.marker import find_marker, with_marker
    from threeddx.simulator.physics import radiograph, sample_chain, sample_materials

    print(f"# {datetime.date.today()} {platform.machine()}; a {a.diameter:g} mm steel ball beside the right trochanter")
    print("| data | chain | images | found | refused (first reason) | depth error median (mm) | largest (mm) |")
    print("|---|---|---|---|---|---|---|")
    for folder in a.data:
        files = sorted(folder.glob("samples/*/*.npz"))[: a.n]
        for kind in ("standard", "random"):
            errors, refused = [], []
            for i, f in enumerate(files):
                with np.load(f) as z:
                    geo = XrayGeometry.from_json(str(z["geometry"]))
                    mats = sample_materials(z)
                centre = np.array([-130.0 + 20 * (i % 3), 20.0 - 30 * (i % 4), geo.isocenter_distance_or_assumed])
                chain = "standard" if kind == "standard" else sample_chain(i)
                img = radiograph(with_marker(mats, geo, centre, a.diameter), geo, chain)
                try:
                    errors.append(find_marker(img, geo, a.diameter).depth_mm - centre[2])
                except InputError as e:
                    refused.append(str(e))
            e = np.abs(errors)
            why = (" ".join(refused[0].split()[:4]) + " ...") if refused else ""
            print(f"| {folder.name} | {kind} | {len(files)} | {len(errors)} | {len(refused)} {why} | "
                  f"{np.median(e) if len(e) else float('nan'):.1f} | {e.max() if len(e) else float('nan'):.1f} |")


if __name__ == "__main__":
    main()
