"""Does a calibration marker settle where the bones lie along the beam? (issue 31)

    .venv/bin/python benchmarks/marker_placement.py [--data data/v5val] [--checkpoint dualface] [--limit N]
        [--out runs/marker-placement] [--rows none ignored used signal truth nearer]

The test split (LLP26 10, 16, 19; never trained on) through random imaging chains, each image made at a
clinical detector's resolution (2048 px: the anatomy's line integrals interpolated, the ball exact) with a
25 mm steel ball beside the right trochanter (``threeddx.evaluation.evaluate.MarkerTrial``). Rows, each one
``evaluate`` run of the released model and meshing:

* **no marker**: the same images without the ball;
* **marker present, ignored**: the ball in the image, not read (does the network mind it?);
* **marker used**: the ball at the hip joints' depth, read and used (``--marker-mm 25``): the bones scaled
  about the focal spot until the pelvis fit's hip joints lie at its depth;
* **marker used, where found** (and for ``signal``): the same rows, only the images whose ball was found (the
  others keep the network's placement);
* **marker used, measured on the detector signal** (``signal``): the ball found in the film, measured on the
  signal the film was processed from (what predict does with a "for processing" DICOM);
* **marker read perfectly** (``truth``): the ball's true centre used as the reading: what the placement by the
  hip joints costs without the reading's error;
* **marker 20 mm nearer, offset not declared** (``nearer``): the ball 20 mm nearer the source than the hip
  joints, used with the default offset 0 (what a wrong offset costs).

Per bone group: ASSD, the ASSD after the best shift along the beam, and the beam shift's mean and SD
(``threeddx.metrics.beam_aligned``; the issue's goal with a marker: SD under 2 mm and the ASSD within 0.3 mm
of the beam-aligned one); and the ball's own depth error (mm).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rows_of(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


#: The rows (``--rows``): key -> (label, trial).
CONDITIONS = {
    "none": ("no marker", dict(diameter_mm=0.0, use=False)),  # the same 2048 px images without the ball
    "ignored": ("marker present, ignored", dict(use=False)),
    "used": ("marker used", dict()),
    "signal": ("marker used, measured on the detector signal", dict(read="signal")),
    "truth": ("marker read perfectly", dict(read="truth")),
    "nearer": ("marker 20 mm nearer, offset not declared", dict(true_offset_mm=-20.0)),
}


def found_only(rows: list[dict]) -> list[dict]:
    """The rows of the images whose ball was found (a finite ``marker_depth_error_mm`` on the pelvis row)."""
    ids = {r["sample_id"] for r in rows if r["bone"] == "pelvis" and r.get("marker_depth_error_mm") not in (None, "", "nan")}
    return [r for r in rows if r["sample_id"] in ids]


def stats(rows: list[dict], group: str) -> dict:
    sel = [r for r in rows if r["status"] == "ok" and (r["bone"] == group or r["bone"].startswith(group + "_"))]
    f = lambda k: np.array([float(r[k]) for r in sel if r.get(k) not in (None, "", "nan")])  # noqa: E731
    shift = f("beam_shift_mm")
    return {"n": len(sel), "assd": float(np.mean(f("assd"))), "aligned": float(np.mean(f("assd_beam_aligned"))),
            "shift_mean": float(shift.mean()), "shift_sd": float(shift.std(ddof=1)) if len(shift) > 1 else math.nan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "v5val")
    ap.add_argument("--checkpoint", default="dualface")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "marker-placement")
    ap.add_argument("--rows", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    a = ap.parse_args()
    from threeddx.evaluation.evaluate import MarkerTrial, evaluate

    results = {}
    for key in a.rows:
        name, trial = CONDITIONS[key]
        folder = a.out / key
        if not (folder / "results.json").is_file():
            t0 = time.perf_counter()
            evaluate(a.data, folder, a.checkpoint, split="test", chain="random", limit=a.limit, progress=False,
                     marker=MarkerTrial(**trial))
            print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        results[name] = rows_of(folder)
        if key in ("used", "signal"):
            results[f"{name}, where found"] = found_only(results[name])
    n = len({r["sample_id"] for r in next(iter(results.values()))})
    print(f"\n{a.checkpoint} on {a.data.name} (test split, {n} images, random chains), {datetime.date.today()}, "
          f"{platform.machine()}; mm\n")
    print("| condition | group | bones | ASSD | ASSD beam-aligned | beam shift mean | beam shift SD | ball depth error |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        err = np.array([float(r["marker_depth_error_mm"]) for r in rows if r["bone"] == "pelvis"
                        and r.get("marker_depth_error_mm") not in (None, "", "nan")])
        ball = f"{np.median(np.abs(err)):.1f} median, {np.abs(err).max():.1f} max" if len(err) else "-"
        for g in ("pelvis", "femur"):
            s = stats(rows, g)
            print(f"| {name} | {g} | {s['n']} | {s['assd']:.2f} | {s['aligned']:.2f} | {s['shift_mean']:+.1f} | "
                  f"{s['shift_sd']:.1f} | {ball if g == 'pelvis' else ''} |")
    (a.out / "summary.json").write_text(json.dumps({k: {g: stats(v, g) for g in ("pelvis", "femur")}
                                                    for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
