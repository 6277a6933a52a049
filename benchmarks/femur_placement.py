"""Where a femur's misplacement along the beam comes from: the network's femur depths against the truth, split
into what a calibration ball fixes and what it cannot.

    .venv/bin/python benchmarks/femur_placement.py [--data data/sim256-10x-eval] [--splits val test]
        [--checkpoint dualface] [--seed 0] [--per-femur] [--outline-weight W]

Each image of a split is made through the random imaging chain ``3ddx evaluate --chain random --seed S`` draws
for it (:func:`threeddx.evaluation.evaluate.chain_image`, the same index), predicted as predict does (hip-joint
anchoring included), and for each femur the error of its mid-depth ``(front + back) / 2`` (mm, along each
pixel's ray) is taken on the pixels both the prediction and the truth call femur. Against ``s``, the distance
below the femur's joint (the pelvis fit's hip-joint centre, :mod:`threeddx.inference.hipjoint`; mm at the
iso-centre, along the image's rows) it is fitted as ``e = a + b s``:

* ``a``, the error **at the joint**, split per image into the two joints' **common** part (the pelvis's own
  placement along the beam, which the anchoring hands to both femurs and a ball removes) and their
  **half-difference** (the pelvis fit turned about the body's long axis: one joint nearer, the other farther);
  beside it the same half-difference of the femurs' own heads, as the network placed them before the
  anchoring moved them (whether the turn is the fit's or already the network's);
* ``b``, the **slope** along the femur (a femur tilted out of the detector plane: hip flexion as the view sees
  it; as an angle, ``atan(b)``), which moves the femur's pixels by ``b * s`` (``b * s_mean`` on average);
* what is left about the line, per pixel (the depths' own noise and shape).

Prints one table (mm; deg for the slope). Its last column is what a perfectly read ball would leave of each
femur's mean error: the half-difference and the slope's share at the femur's mean distance below the joint,
combined per femur (RMS over the femurs). `benchmarks/flexion_visibility.py` says why the slope stays.
``--outline-weight`` sets the pelvis fit's outline weight (``AnchorSettings.outline_weight``; 0: the surface
points only, as before 2026-12-07).
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEMURS = ("femur_left", "femur_right")


def femur_errors(data: Path, split: str, checkpoint: str, seed: int,
                 outline_weight: float | None = None) -> list[dict]:
    """Per image and femur of ``split``: the mid-depth error's line against the distance below the joint."""
    from threeddx.evaluation.evaluate import chain_image
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.hipjoint import AnchorSettings
    from threeddx.inference.predictor import loaded_predictor
    from threeddx.training.dataset import read_manifest

    anchor = AnchorSettings() if outline_weight is None else AnchorSettings(outline_weight=outline_weight)
    predictor = loaded_predictor(checkpoint, hip_anchor=anchor)
    rows = [r for r in read_manifest(data) if r["split"] == split]
    out = []
    for index, row in enumerate(rows):  # the index evaluate gives the image: the same random chain
        with np.load(data / row["render"]) as z:
            geometry = XrayGeometry.from_json(str(z["geometry"]))
            stored = [str(b) for b in z["bones"]]
            masks, front, back = z["masks"] > 0, z["depth_front"], z["depth_back"]
            image = chain_image(z, geometry, "random", seed, index, data / row["render"])
        p = predictor.infer(image, geometry)
        camera = p.geometry
        mm_per_px = camera.pixel_spacing[0] * camera.isocenter_distance_or_assumed / camera.sdd
        for bone in FEMURS:
            joint = p.checks[bone].get("hip_anchor", {}).get("joint_world_mm")
            if joint is None or not p.checks[bone]["found"]:
                continue
            c, g = p.bones.index(bone), stored.index(bone)
            truth = p.to_view(masks[g].astype(np.float32)) > 0.5
            both = p.masks[c] & truth
            if both.sum() < 20:
                continue
            mid_true = (p.to_view(front[g]) + p.to_view(back[g])) / 2
            error = (p.depth_front[c] + p.depth_back[c]) / 2 - mid_true
            rr, cc = np.nonzero(both)
            jr, _, _ = camera.project(np.asarray(joint, dtype=np.float64))
            s = (rr - float(jr)) * mm_per_px  # mm below the joint (rows run inferior)
            e = error[rr, cc]
            design = np.stack([np.ones_like(s), s], 1)
            (a, b), *_ = np.linalg.lstsq(design, e, rcond=None)
            shift = float(p.checks[bone]["hip_anchor"].get("shift_mm", 0.0))  # what the anchoring moved it by
            out.append({"sample": row["sample_id"], "bone": bone, "mean": float(e.mean()), "at_joint": float(a),
                        "anchor_shift": shift,
                        "slope": float(b), "s_mean": float(s.mean()), "residual": float((e - design @ (a, b)).std())})
    return out


def summarise(rows: list[dict]) -> dict:
    """The table's figures for one split's femurs (see the module doc)."""
    by_image: dict[str, dict] = {}
    for r in rows:
        by_image.setdefault(r["sample"], {})[r["bone"]] = r
    pairs = [v for v in by_image.values() if all(b in v for b in FEMURS)]
    common = np.array([(v[FEMURS[0]]["at_joint"] + v[FEMURS[1]]["at_joint"]) / 2 for v in pairs])
    half = np.array([(v[FEMURS[0]]["at_joint"] - v[FEMURS[1]]["at_joint"]) / 2 for v in pairs])
    own = lambda r: r["at_joint"] - r["anchor_shift"]  # noqa: E731  the network's own head, before the anchoring
    half_own = np.array([(own(v[FEMURS[0]]) - own(v[FEMURS[1]])) / 2 for v in pairs])
    slope = np.array([r["slope"] for r in rows])
    slope_share = np.array([r["slope"] * r["s_mean"] for r in rows])
    left = np.concatenate([[+h, -h] for h in half]) if len(half) else np.array([])
    share = np.concatenate([[v[FEMURS[0]]["slope"] * v[FEMURS[0]]["s_mean"],
                             v[FEMURS[1]]["slope"] * v[FEMURS[1]]["s_mean"]] for v in pairs]) if pairs else np.array([])
    ball = np.sqrt(np.mean((left + share) ** 2)) if len(left) else float("nan")
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    return {
        "femurs": len(rows), "images": len(pairs),
        "mean_rms": rms([r["mean"] for r in rows]),
        "common_sd": float(np.std(common)), "half_rms": rms(half), "half_own_rms": rms(half_own),
        "half_corr": float(np.corrcoef(half, half_own)[0, 1]) if len(half) > 2 else float("nan"),
        "slope_deg_rms": math.degrees(math.atan(rms(slope))), "slope_share_rms": rms(slope_share),
        "s_mean": float(np.mean([r["s_mean"] for r in rows])),
        "residual": float(np.mean([r["residual"] for r in rows])), "ball_leaves_rms": float(ball),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data/sim256-10x-eval")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--checkpoint", default="dualface")
    ap.add_argument("--seed", type=int, default=0, help="the random chains' seed, as evaluate's --seed (default 0)")
    ap.add_argument("--per-femur", action="store_true", help="also each femur's line, after the table")
    ap.add_argument("--outline-weight", type=float, default=None,
                    help="the pelvis fit's outline weight (default: the release's, AnchorSettings)")
    a = ap.parse_args()
    t0 = time.time()
    print(f"# Where the femurs' misplacement along the beam comes from ({datetime.date.today()}, "
          f"{platform.machine()}; {a.checkpoint} on {a.data}, random chains seed {a.seed}; mm)\n")
    print("| split | femurs | mean error RMS | at the joint: common SD (the pelvis's placement; a ball fixes it) "
          "| at the joint: half-difference RMS (the pelvis turned) | the same of the femurs' own heads (before the "
          "anchoring), RMS; its correlation with the anchored | slope RMS (deg) | slope's share at the mean "
          "distance below the joint, RMS | mean distance below the joint | per-pixel residual SD "
          "| left with a perfect ball, RMS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    every = {}
    for split in a.splits:
        every[split] = rows = femur_errors(a.data, split, a.checkpoint, a.seed, a.outline_weight)
        s = summarise(rows)
        print(f"| {split} | {s['femurs']} | {s['mean_rms']:.1f} | {s['common_sd']:.1f} | {s['half_rms']:.1f} | "
              f"{s['half_own_rms']:.1f}; {s['half_corr']:+.2f} | "
              f"{s['slope_deg_rms']:.1f} | {s['slope_share_rms']:.1f} | {s['s_mean']:.0f} | {s['residual']:.1f} | "
              f"{s['ball_leaves_rms']:.1f} |")
    if a.per_femur:
        print("\n| split | image | femur | mean error | at the joint | before the anchoring | slope (deg) |")
        print("|---|---|---|---|---|---|---|")
        for split, rows in every.items():
            for r in rows:
                print(f"| {split} | {r['sample']} | {r['bone']} | {r['mean']:+.1f} | {r['at_joint']:+.1f} | "
                      f"{r['at_joint'] - r['anchor_shift']:+.1f} | {math.degrees(math.atan(r['slope'])):+.1f} |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
