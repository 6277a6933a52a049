"""How far along the beam each bone is misplaced and how far each femur's tilt is off, their 1-SDs calibrated on
validation and checked on test.

    .venv/bin/python benchmarks/placement.py --val VAL_EVAL_DIR --test TEST_EVAL_DIR [--write CKPT OUT.pt]

The inputs are two ``3ddx evaluate`` result folders of the same checkpoint (their ``results.csv``: per image
and bone the best shift along the beam, ``beam_shift_mm``, :func:`threeddx.metrics.beam_aligned`). Per bone
the validation split's RMS shift is the placement's 1-SD uncertainty (bias included, as a user meets it);
printed beside it: the test split's RMS and the share of test bones whose shift lies within 1 and 2 of those
SDs (about 68 % and 95 % when the calibration holds). The members of a pooled group of the bone registry
(``femur``: left and right) share one SD, the RMS over both. ``--write CKPT OUT.pt`` stores the SDs in a copy of
the checkpoint (``placement_sd_mm``), which ``3ddx predict`` then reports per bone in summary.json and
batch.csv. Never calibrate on the test split.

**The femurs' tilt** (issue 31): when the folders were evaluated with ``--measure``, their measurements.csv
holds each femur's predicted and true shaft tilt (:func:`threeddx.inference.measure.shaft_tilt_deg`: the shaft
out of the detector plane, hip flexion as the view sees it). A second table gives, per femur (pooled), the
true tilts' spread (what a constant guess would miss by), the predicted-vs-true error (bias, RMS, and the
correlation: does the network see the flexion at all?) and the calibration on test; ``--write`` then stores
the validation RMS as ``tilt_sd_deg``.

**What the image shows of the pose** (a third table): simulated samples place the hips (the world origin) a
random distance from the iso-centre the geometry states (``POSE_RANGES``; the evaluation states 820 mm). Per
split and bone group: that offset's SD, the bones' RMS shift, their correlation, and the least-squares slope of
the shift on the offset: 1 when the network always places the hips at the stated iso-centre (it sees nothing of
the offset), 0 when it sees it all; the residual SD is the misplacement that does not come from the offset.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import platform
from pathlib import Path

import numpy as np


def shifts(folder: Path) -> dict[str, np.ndarray]:
    """bone -> the beam shifts (mm) of its scored rows in an evaluate folder's results.csv."""
    out: dict[str, list[float]] = {}
    with open(Path(folder) / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            v = float(r.get("beam_shift_mm") or "nan")
            if r["status"] == "ok" and math.isfinite(v):
                out.setdefault(r["bone"], []).append(v)
    return {b: np.asarray(v) for b, v in out.items()}


def pose_offsets(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """bone -> (the hips' offset from the stated iso-centre along the beam, mm; the bone's beam shift, mm) of
    each scored row of an evaluate folder, read from the evaluated samples (results.json's ``data``); empty
    when those samples are not on this machine."""
    import json

    from threeddx.geometry import XrayGeometry

    folder = Path(folder)
    data = Path(json.loads((folder / "results.json").read_text())["data"])
    if not (data / "manifest.csv").is_file():
        return {}
    with open(data / "manifest.csv", newline="") as f:
        render = {r["sample_id"]: r["render"] for r in csv.DictReader(f)}
    offset: dict[str, float] = {}
    out: dict[str, list[tuple[float, float]]] = {}
    with open(folder / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            v = float(r.get("beam_shift_mm") or "nan")
            if r["status"] != "ok" or not math.isfinite(v):
                continue
            if r["sample_id"] not in offset:  # the world origin (the hips) in the source frame, less the stated
                with np.load(data / render[r["sample_id"]]) as z:
                    g = XrayGeometry.from_json(str(z["geometry"]))
                offset[r["sample_id"]] = float(g.to_source(np.zeros((1, 3)))[0, 2] - g.isocenter_distance_or_assumed)
            out.setdefault(r["bone"], []).append((offset[r["sample_id"]], v))
    return {b: (np.array(v)[:, 0], np.array(v)[:, 1]) for b, v in out.items()}


def offset_table(folders: dict[str, Path]) -> None:
    """Print the third table of the module doc (pooled groups of the bone registry: the femurs together)."""
    from threeddx.bones import groups

    print("\n| split | bones | n | hips' offset SD (mm) | shift RMS (mm) | corr(shift, offset) | slope (1: unseen) | "
          "residual SD (mm) |")
    print("|---|---|---|---|---|---|---|---|")
    for split, folder in folders.items():
        per_bone = pose_offsets(folder)
        if not per_bone:
            print(f"| {split} | (the samples of {folder} are not on this machine) |||||||")
            continue
        paired = groups(list(per_bone))
        single = {b: [b] for b in per_bone if not any(b in m for m in paired.values())}
        for group, members in {**single, **paired}.items():
            x = np.concatenate([per_bone[b][0] for b in members])
            y = np.concatenate([per_bone[b][1] for b in members])
            slope, icpt = np.polyfit(x, y, 1)
            print(f"| {split} | {group} | {len(x)} | {x.std():.1f} | {np.sqrt(np.mean(y**2)):.1f} | "
                  f"{np.corrcoef(x, y)[0, 1]:+.2f} | {slope:.2f} | {np.std(y - (slope * x + icpt)):.1f} |")


def tilts(folder: Path) -> dict[str, np.ndarray]:
    """femur bone -> (n, 2) predicted and true shaft tilts (degrees) of an evaluate --measure folder (none
    without its measurements.csv)."""
    path = Path(folder) / "measurements.csv"
    out: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            bone, _, name = r["measure"].partition(".")
            if name == "shaft_tilt_deg" and r["status"] == "ok":
                p, t = float(r["predicted"] or "nan"), float(r["true"] or "nan")
                if math.isfinite(p) and math.isfinite(t):
                    out.setdefault(bone, []).append((p, t))
    return {b: np.asarray(v) for b, v in out.items()}


def tilt_table(val: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, float]:
    """Print the tilt table; return the pooled femurs' 1-SD (validation RMS error, degrees) per femur bone."""
    if not val:
        print("\n(no shaft tilts: evaluate the folders with --measure for the femurs' tilt)")
        return {}
    pooled = {"validation": np.concatenate(list(val.values())),
              "test": np.concatenate(list(test.values())) if test else np.zeros((0, 2))}
    sd = float(np.sqrt(np.mean((pooled["validation"][:, 0] - pooled["validation"][:, 1]) ** 2)))
    print("\n| femurs (pooled) | n | true tilt mean, SD (deg) | error bias (deg) | error RMS (deg) | "
          "corr(predicted, true) | within 1 SD | within 2 SD |")
    print("|---|---|---|---|---|---|---|---|")
    for name, v in pooled.items():
        if not len(v):
            continue
        err = v[:, 0] - v[:, 1]
        corr = float(np.corrcoef(v[:, 0], v[:, 1])[0, 1]) if len(v) > 2 else float("nan")
        print(f"| {name} | {len(v)} | {v[:, 1].mean():+.1f}, {v[:, 1].std():.1f} | {err.mean():+.2f} | "
              f"{np.sqrt(np.mean(err**2)):.2f} | {corr:.2f} | {100 * np.mean(np.abs(err) <= sd):.0f} % | "
              f"{100 * np.mean(np.abs(err) <= 2 * sd):.0f} % |")
    print(f"1-SD of the tilt = the validation RMS error: {sd:.2f} deg")
    return {b: sd for b in val}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--val", type=Path, required=True, help="3ddx evaluate folder of the validation split")
    ap.add_argument("--test", type=Path, required=True, help="3ddx evaluate folder of the test split")
    ap.add_argument("--write", nargs=2, metavar=("CKPT", "OUT"), help="store the SDs in a copy of CKPT")
    a = ap.parse_args()
    from threeddx.bones import groups

    val, test = shifts(a.val), shifts(a.test)
    sd = {b: float(np.sqrt(np.mean(v**2))) for b, v in val.items()}
    for group, members in groups(list(val)).items():  # left and right of a pair share one SD (a mirrored model)
        pooled = float(np.sqrt(np.mean(np.concatenate([val[b] for b in members]) ** 2)))
        sd.update({b: pooled for b in members})
    print(f"# {datetime.date.today()} {platform.machine()}; val {a.val}, test {a.test}")
    print("| bone | val n | val mean shift (mm) | 1-SD = val RMS (mm) | test n | test RMS (mm) | test within 1 SD | "
          "within 2 SD |")
    print("|---|---|---|---|---|---|---|---|")
    for b, s in sd.items():
        t = test.get(b, np.array([]))
        w1 = 100 * float(np.mean(np.abs(t) <= s)) if len(t) else float("nan")
        w2 = 100 * float(np.mean(np.abs(t) <= 2 * s)) if len(t) else float("nan")
        rms = float(np.sqrt(np.mean(t**2))) if len(t) else float("nan")
        print(f"| {b} | {len(val[b])} | {val[b].mean():+.2f} | {s:.2f} | {len(t)} | {rms:.2f} | {w1:.0f} % | {w2:.0f} % |")
    tilt_sd = tilt_table(tilts(a.val), tilts(a.test))
    offset_table({"validation": a.val, "test": a.test})
    if a.write:
        from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint

        ck = load_checkpoint(resolve_checkpoint(a.write[0]))
        ck["placement_sd_mm"] = {b: round(s, 2) for b, s in sd.items() if b in ck["bones"]}
        release = dict(ck.get("release") or {})
        when = f"benchmarks/placement.py --val {a.val} --test {a.test}, {datetime.date.today()}"
        release["placement_calibration"] = ("placement_sd_mm: the RMS best shift along the beam on the validation "
                                            f"split, femurs pooled; {when}")
        if tilt_sd:
            ck["tilt_sd_deg"] = {b: round(s, 2) for b, s in tilt_sd.items() if b in ck["bones"]}
            release["tilt_calibration"] = ("tilt_sd_deg: the RMS error of the femurs' shaft tilt (predicted minus "
                                           f"true) on the validation split, pooled; {when}")
        if ck.get("release"):
            ck["release"] = release
        save_checkpoint(ck, a.write[1])
        print(f"wrote {a.write[1]} with placement_sd_mm {ck['placement_sd_mm']}"
              + (f", tilt_sd_deg {ck['tilt_sd_deg']}" if tilt_sd else ""))


if __name__ == "__main__":
    main()
