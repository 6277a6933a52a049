"""How well the hip's measurements are read from one radiograph (issue 33): errors against the simulated truth.

    .venv/bin/python benchmarks/measurements.py [--data data/v5val] [--far data/shift/far-frame-v5val]
        [--checkpoint dualface] [--out runs/measurements] [--workers 1]

Test subjects only (LLP26 10, 16, 19; never trained on), simulated samples whose truth bones carry the LLP26
landmarks (:mod:`threeddx.meshing.landmarks`), so the same measurement (:func:`threeddx.inference.measure.measure_hips`)
is taken of the truth and of the prediction (``3ddx evaluate --measure``, the released meshing; the femurs'
shape model fitted for the measures). Rows, each one evaluate run:

* **oracle**: the true masks and depths through the same fits (what the measurement method alone costs);
* **in-distribution**: the test split through random imaging chains (seeded), as in training;
* **physics**: three chain presets at their extremes (low dose, no grid, edge enhancement);
* **mirrored patients**: each image flipped, the prediction mirrored back (posture mirrored);
* **far world frame**: the same exposures written 1.2 m from the hips, axes turned (must equal in-distribution's
  numbers up to the fits' float noise: the measures are taken in the exposure's AP frame).

Per measure (the two sides pooled): the mean absolute error, and for the in-distribution row also the bias and
the 95 % limits of agreement (Bland-Altman), beside the variability between human observers that the
literature reports (:data:`LITERATURE`, sources in docs/measurements.md) and the measure's spread between adults
(the SD over the 16 training subjects, ``--norms``). A measure is called **usable** when its in-distribution MAE
is within the observers' variability where the literature quantifies it, else when it is under half the
spread between adults (then it tells patients apart better than chance by a wide margin); otherwise not.

    .venv/bin/python benchmarks/measurements.py --norms

prints instead each measure's mean, SD and range over the 16 training subjects' own bones (neutral pose, CT
frame): what the definitions give on adults, to set beside the literature's norms.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: measure (pooled) -> (what the literature reports between observers, as the half-width of the 95 % limits of
#: agreement in the measure's unit or None when only reliability coefficients are reported, the source's short
#: name). Sources in full: docs/measurements.md.
LITERATURE = {
    "femur.head_diameter_mm": (None, "Mast 2011: the most reliable of 20 radiographic measures (ICC)"),
    "femur.neck_shaft_angle_deg": (6.0, "PACS study PMC3473462: interobserver limits of agreement +-6 deg"),
    "femur.offset_mm": (3.0, "Skeletal Radiol 2015;44:935: hip-centre distances, observers within +-3 mm"),
    "femur.version_deg": (2.9, "Kaiser 2016 (CT, 6 techniques): observers' mean differences 0.8-2.9 deg; "
                               "techniques differ by up to 11 deg"),
    "acetabulum.acetabular_inclination_deg": (None, "Mast 2011: interrater ICC 0.45-0.90 over 20 measures"),
    "acetabulum.acetabular_version_deg": (None, "Mast 2011: interrater ICC 0.45-0.90 over 20 measures"),
    "acetabulum.lateral_center_edge_angle_deg": (None, "Iowa Orthop J 2011;31:52: interobserver ICC CI below 0.55"),
    "acetabulum.head_coverage_pct": (None, "no observer study of this 3D definition"),
    "pelvis.tilt_deg": (1.3, "J Orthop Surg 2019 (10.1177/2309499019828515): repeat supine films, median 1.3 deg"),
    "pelvis.leg_length_difference_mm": (3.0, "Skeletal Radiol 2015;44:935: hip-centre distances, observers within +-3 mm"),
}


def run_rows(args) -> dict[str, dict]:
    """Each row's evaluate (measurements on), its results.json's ``measurements``; reused when already done."""
    from threeddx.evaluation.evaluate import evaluate

    rows = {
        "oracle (true maps)": dict(data=args.data, oracle=True),
        "in-distribution (random chains)": dict(data=args.data, chain="random"),
        "low dose": dict(data=args.data, chain="low-dose"),
        "no grid": dict(data=args.data, chain="no-grid"),
        "edge-enhanced": dict(data=args.data, chain="edge-enhanced"),
        "mirrored patients": dict(data=args.data, chain="random", mirrored=True),
        "far world frame": dict(data=args.far, chain="random"),
    }
    out = {}
    for i, (name, kw) in enumerate(rows.items()):
        folder = args.out / f"row{i}"
        if not (folder / "results.json").is_file():
            if not Path(kw["data"]).is_dir():
                print(f"  {name}: {kw['data']} is missing, skipped (see the README's data commands)")
                continue
            t0 = time.perf_counter()
            oracle = kw.pop("oracle", False)
            evaluate(kw.pop("data"), folder, None if oracle else args.checkpoint, split="test", oracle=oracle,
                     progress=False, measure=True, workers=args.workers, **kw)
            print(f"  {name}: {time.perf_counter() - t0:.0f} s")
        out[name] = json.loads((folder / "results.json").read_text())
    return out


def spread_between_adults() -> dict[str, float]:
    """Pooled measure -> its SD over the training subjects' own bones (both sides pooled)."""
    import numpy as np

    pooled: dict[str, list[float]] = {}
    for row in training_measures():
        for key, v in row.items():
            structure, name = key.split(".", 1)
            pooled.setdefault(f"{structure.split('_')[0]}.{name}", []).append(v)
    return {k: float(np.std(v, ddof=1)) for k, v in pooled.items()}


def table(results: dict[str, dict]) -> str:
    spread = spread_between_adults()
    names = list(results)
    main = "in-distribution (random chains)"
    measures = list(LITERATURE)
    head = ("| measure | " + " | ".join(f"MAE {n}" for n in names) + " | bias, 95 % LoA (in-distribution) "
            "| observers (literature) | SD between adults | usable |")
    lines = [head, "|" + "---|" * (len(names) + 5)]
    for m in measures:
        cells = []
        for n in names:
            s = results[n].get("measurements", {}).get(m, {})
            cells.append(f"{s['mae']:.2f}" + (f" ({s['n']}/{s['of']})" if s["n"] < s["of"] else "")
                         if s.get("n") else "-")
        s = results.get(main, {}).get("measurements", {}).get(m, {})
        loa = f"{s['bias']:+.2f} [{s['loa_low']:.1f}, {s['loa_high']:.1f}]" if s.get("n") else "-"
        half, source = LITERATURE[m]
        lit = (f"+-{half:g}: " if half is not None else "") + source
        sd = spread.get(m, float("nan"))
        bound = half if half is not None else sd / 2
        usable = "-" if not s.get("n") else ("yes" if s["mae"] <= bound else "no")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {loa} | {lit} | {sd:.1f} | {usable} |")
    return "\n".join(lines)


def training_measures() -> list[dict[str, float]]:
    """Each training subject's own bones measured (neutral pose, CT frame): one flat row each."""
    import numpy as np

    from threeddx.inference.measure import flat_measurements, measure_hips
    from threeddx.simulator.anatomy import bone_meshes, load_shape, subject_split

    rows = []
    for k in sorted(k for k, s in subject_split().items() if s == "train"):
        ms = bone_meshes(load_shape(k), ["pelvis", "femur_left", "femur_right"])
        rows.append(flat_measurements(measure_hips({b: m.vertices for b, m in ms.items()}, np.eye(4))))
    return rows


def norms() -> None:
    import numpy as np

    rows = training_measures()
    print(f"| measure | mean | SD | range |  ({len(rows)} training subjects, {datetime.date.today()})")
    print("|---|---|---|---|")
    for key in rows[0]:
        v = np.array([r[key] for r in rows])
        print(f"| {key} | {v.mean():.1f} | {v.std(ddof=1):.1f} | {v.min():.1f} to {v.max():.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "v5val")
    ap.add_argument("--far", type=Path, default=ROOT / "data" / "shift" / "far-frame-v5val")
    ap.add_argument("--checkpoint", default="dualface")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "measurements")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--norms", action="store_true", help="the definitions on the training subjects' own bones")
    args = ap.parse_args()
    if args.norms:
        return norms()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_rows(args)
    n = next(iter(results.values()))
    print(f"\n{args.checkpoint} on {args.data.name} (test split: {n['images']} images of {n['subjects']} subjects), "
          f"{datetime.date.today()}, {platform.processor() or platform.machine()}; MAE in each measure's unit "
          "(mm, degrees, %), both sides pooled; (n/of): images measured of those with a truth\n")
    print(table(results))


if __name__ == "__main__":
    main()
