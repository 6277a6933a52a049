"""Is the calibration ball found on the films the placement benchmark scores, and is the display's polarity right?

    .venv/bin/python benchmarks/marker_finding.py [--data data/sim256-10x-eval] [--checkpoint dualface]
        [--splits val test] [--polarity network bright truth] [--image display signal signal-80kVp signal-opaque]

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
signal: ``find_marker``'s ``signal``), the steel's edge fitted at the chain's tube voltage (as the file's KVP
states it); ``signal-80kVp``, the same at 80 kVp whatever the chain's (a file without KVP);
``signal-opaque``, the ball fitted as an opaque disc (the ninth session's reading). The ball is drawn exactly
(``with_marker``'s ``exact``: each pixel's transmission at every energy).

Printed: images, inverted ones, polarity right (network rule), balls found at the true place, found elsewhere,
refusals (none / several / border / partly hidden), false finds on the images without a ball, and the found balls' depth
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
#: What the found ball is measured on (``--image``).
MEASURED_ON = {"display": "film", "signal": "detector signal, its KVP", "signal-80kVp": "detector signal, 80 kVp",
               "signal-opaque": "detector signal, opaque fit"}


def images(data: Path, split: str):
    """Yield (index, the film with the ball (:class:`threeddx.evaluation.evaluate.MarkerFilm`), the image without
    the ball, inverted) per image."""
    from threeddx.evaluation.evaluate import MarkerTrial, marker_film, marker_image
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.physics import chain_for

    rows = [r for r in csv.DictReader(open(data / "manifest.csv")) if r["split"] == split]
    for i, r in enumerate(rows):
        with np.load(data / r["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            film = marker_film(z, geo, "random", 0, i, MarkerTrial())
            bare, _, _ = marker_image(z, geo, "random", 0, i, MarkerTrial(diameter_mm=0.0))
        yield i, film, bare, bool(chain_for("random", np.random.default_rng([0, i])).invert)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sim256-10x-eval")
    ap.add_argument("--checkpoint", default="dualface")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--polarity", nargs="+", choices=["network", "bright", "truth"], default=["network", "bright"])
    ap.add_argument("--image", nargs="+", choices=list(MEASURED_ON), default=["display", "signal", "signal-80kVp",
                                                                          "signal-opaque"],
                    help="measure the found ball on the film (display) or on its detector signal (a 'for "
                    "processing' file's linear image: find_marker's signal): its steel edge at the chain's kVp, "
                    "at 80 kVp, or as an opaque disc")
    a = ap.parse_args()
    from threeddx.errors import InputError
    from threeddx.inference.marker import EDGE_KVP, expected_diameter_px, find_marker, measure_on_signal
    from threeddx.inference.predictor import loaded_predictor

    predictor = loaded_predictor(a.checkpoint)
    t0 = time.perf_counter()
    table = []
    for split in a.splits:
        rows = [(p, im) for p in a.polarity for im in a.image]
        acc = {k: {"found": [], "elsewhere": 0, "none": 0, "several": 0, "border": 0, "hidden": 0, "false": 0}
               for k in rows}
        n = inverted = right = 0
        for i, film, bare, inv in images(a.data, split):
            img, signal, geo, ball = film.image, film.signal, film.geometry, film.centre
            n, inverted = n + 1, inverted + inv
            seen = predictor.shows_bone_dark(img, geo)
            right += seen == inv
            row, col, _ = geo.with_pose(np.eye(4)).project(ball)
            found, false = {}, {}
            for p in a.polarity:  # finding is the film's, whatever the ball is then measured on
                dark = {"network": seen, "bright": False, "truth": inv}[p]
                try:
                    found[p] = find_marker(img, geo, 25.0, bone_dark=dark)
                except InputError as e:
                    found[p] = e
                try:
                    find_marker(bare, geo, 25.0, bone_dark=predictor.shows_bone_dark(bare, geo) if p == "network"
                                else dark)
                    false[p] = 1
                except InputError:
                    false[p] = 0
            for p, im in rows:
                s, m = acc[p, im], found[p]
                s["false"] += false[p]
                if isinstance(m, InputError):
                    s[refusal_kind(m)] += 1
                    continue
                if im != "display":
                    m = measure_on_signal(signal, geo, m, expected_diameter_px(geo, 25.0),
                                          kvp=EDGE_KVP if im == "signal-80kVp" else film.kvp,
                                          opaque=im == "signal-opaque")
                if np.hypot(m.row - row, m.col - col) > m.apparent_diameter_px / 4:
                    s["elsewhere"] += 1
                else:
                    s["found"].append(m.depth_mm - float(ball[2]))
            print(f"  {split} {i}: {time.perf_counter() - t0:.0f} s", flush=True)
        for (p, im), s in acc.items():
            signed = np.asarray(s["found"], float)
            e = np.abs(signed)
            table.append(f"| {split} | {p} | {MEASURED_ON[im]} | {n} | {inverted} | {right} | {len(e)} | "
                         f"{s['elsewhere']} | {s['none']} / {s['several']} / {s['border']} / {s['hidden']} | "
                         f"{s['false']} | "
                         + (" | ".join(f"{v:.2f}" for v in (np.median(e), e.max(), np.sqrt(np.mean(e**2))))
                            + f" | {signed.mean():+.2f} |" if len(e) else "nan | nan | nan | nan |"))
    print(f"\n{a.checkpoint} on {a.data.name}, random chains at 2048 px, a 25 mm steel ball; {datetime.date.today()}, "
          f"{platform.machine()}; {time.perf_counter() - t0:.0f} s\n")
    print("| split | polarity | measured on | images | inverted | polarity right | found there | found elsewhere | "
          "refused: none / several / border / hidden | false finds (no ball) | depth error median (mm) | largest (mm) | "
          "RMS (mm) | "
          "mean (mm, + far) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
