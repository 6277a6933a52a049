"""Is the calibration ball found on the films the placement benchmark scores, and is the display's polarity right?

    .venv/bin/python benchmarks/marker_finding.py [--data data/sim256-10x-eval] [--checkpoint dualface]
        [--splits val test] [--polarity network bright truth] [--image display signal]

The validation and test images of ``--data`` exactly as ``benchmarks/marker_placement.py`` makes them
(``threeddx.evaluation.evaluate.marker_image``: a random imaging chain per image, 2048 px, a 25 mm steel ball
beside the right trochanter at the hips' depth), and each again without the ball. Per split and polarity rule,
:func:`threeddx.inference.marker.find_marker` on both:

* ``network``: the polarity predict uses (:meth:`threeddx.inference.predictor.Predictor.shows_bone_dark`: the
  network's bones against the body around them; a dark disc is looked for where bone shows dark);
* ``bright``: a bright disc always (no polarity rule);
* ``truth``: the chain's own ``invert``.

and per image the ball is measured on (``--image``): ``display``, the film; ``signal``, its detector signal
before the vendor's processing (what a "for processing" DICOM holds; found on the film, measured again on the
signal: ``find_marker``'s ``signal``).

Printed: images, inverted ones, polarity right (network rule), balls found at the true place, found elsewhere,
refusals (none / several / border), false finds on the images without a ball, and the found balls' depth
error (mm, source-frame z against the truth): median, largest and RMS of its size, and its mean (signed: + read
further from the source than the ball is; the validation split's RMS is what
predict states as a ball's iso-centre SD, ``threeddx.geometry.ISOCENTER_SD_MM["marker"]``).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import platform
import time
from pathlib import Path

import numpy as np

from marker import refusal_kind  # benchmarks/marker.py: one home for reading a refusal's kind

ROOT = Path(__file__).resolve().parents[1]


def images(data: Path, split: str):
    """Yield (index, image with the ball, its detector signal, the image without the ball, geometry, the ball's
    centre, inverted) per image."""
    from threeddx.evaluation.evaluate import MarkerTrial, marker_film, marker_image
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.physics import chain_for

    rows = [r for r in csv.DictReader(open(data / "manifest.csv")) if r["split"] == split]
    for i, r in enumerate(rows):
        with np.load(data / r["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            img, signal, g, ball = marker_film(z, geo, "random", 0, i, MarkerTrial())
            bare, _, _ = marker_image(z, geo, "random", 0, i, MarkerTrial(diameter_mm=0.0))
        yield i, img, signal, bare, g, ball, bool(chain_for("random", np.random.default_rng([0, i])).invert)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sim256-10x-eval")
    ap.add_argument("--checkpoint", default="dualface")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--polarity", nargs="+", choices=["network", "bright", "truth"], default=["network", "bright"])
    ap.add_argument("--image", nargs="+", choices=["display", "signal"], default=["display", "signal"],
                    help="measure the found ball on the film (display) or on its detector signal (a 'for "
                    "processing' file's linear image: find_marker's signal)")
    a = ap.parse_args()
    from threeddx.errors import InputError
    from threeddx.inference.marker import find_marker
    from threeddx.inference.predictor import loaded_predictor

    predictor = loaded_predictor(a.checkpoint)
    t0 = time.perf_counter()
    table = []
    for split in a.splits:
        rows = [(p, im) for p in a.polarity for im in a.image]
        acc = {k: {"found": [], "elsewhere": 0, "none": 0, "several": 0, "border": 0, "false": 0} for k in rows}
        n = inverted = right = 0
        for i, img, signal, bare, geo, ball, inv in images(a.data, split):
            n, inverted = n + 1, inverted + inv
            seen = predictor.shows_bone_dark(img, geo)
            right += seen == inv
            row, col, _ = geo.with_pose(np.eye(4)).project(ball)
            false = {}
            for p, im in rows:
                s = acc[p, im]
                dark = {"network": seen, "bright": False, "truth": inv}[p]
                try:
                    m = find_marker(img, geo, 25.0, bone_dark=dark, signal=signal if im == "signal" else None)
                    if np.hypot(m.row - row, m.col - col) > m.apparent_diameter_px / 4:
                        s["elsewhere"] += 1
                    else:
                        s["found"].append(m.depth_mm - float(ball[2]))
                except InputError as e:
                    s[refusal_kind(e)] += 1
                if p not in false:  # finding is the display's either way: the false finds are too
                    try:
                        find_marker(bare, geo, 25.0, bone_dark=predictor.shows_bone_dark(bare, geo) if p == "network"
                                    else dark)
                        false[p] = 1
                    except InputError:
                        false[p] = 0
                s["false"] += false[p]
            print(f"  {split} {i}: {time.perf_counter() - t0:.0f} s", flush=True)
        for (p, im), s in acc.items():
            signed = np.asarray(s["found"], float)
            e = np.abs(signed)
            table.append(f"| {split} | {p} | {im} | {n} | {inverted} | {right} | {len(e)} | {s['elsewhere']} | "
                         f"{s['none']} / {s['several']} / {s['border']} | {s['false']} | "
                         f"{np.median(e) if len(e) else float('nan'):.1f} | {e.max() if len(e) else float('nan'):.1f} | "
                         f"{np.sqrt(np.mean(e**2)) if len(e) else float('nan'):.1f} | "
                         f"{signed.mean() if len(e) else float('nan'):+.1f} |")
    print(f"\n{a.checkpoint} on {a.data.name}, random chains at 2048 px, a 25 mm steel ball; {datetime.date.today()}, "
          f"{platform.machine()}; {time.perf_counter() - t0:.0f} s\n")
    print("| split | polarity | measured on | images | inverted | polarity right | found there | found elsewhere | "
          "refused: none / several / border | false finds (no ball) | depth error median (mm) | largest (mm) | RMS (mm) | "
          "mean (mm, + far) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
