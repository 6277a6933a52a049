"""Make the package's released models, their model card and the demo example from finished runs.

    python scripts/release.py [--dualface runs/release-128/dependent] [--single runs/ablation-128/single] [--size 128]

Each run folder holds a training run (``best.pt``, ``metrics.csv``) and its
in-distribution test evaluation ``eval-test/results.json`` (``3ddx evaluate
--chain random``; benchmarks/ablation.py makes it for the ablation rows). Writes:

* src/threeddx/data/weights/dualface-SIZE.pt and single-SIZE.pt: predict-only
  copies of each run's best.pt, weights in float16 (checkpoint.export_release);
* src/threeddx/data/weights/MODEL_CARD.md: data, physics, resolution, geometry,
  training command, test figures, what it was and was not validated on;
* src/threeddx/data/example/llp26-10_p00.npz: test subject 10, pose 0, through
  the standard imaging chain, with its ground-truth meshes (demo.make_example).

Then ``scripts/release_mesh.py`` chooses each bone's meshing of the dual-face
model on the validation split and records it in the checkpoint (a release
made here alone meshes every bone ``dual``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def figures(results: dict) -> str:
    b = results["bones"]
    parts = []
    for bone in ("pelvis", "femur_left", "femur_right", "femur"):
        if bone in b and b[bone]["assd_mean"] is not None:
            parts.append(f"{bone} ASSD {b[bone]['assd_mean']:.2f} ({b[bone]['assd_std']:.2f}), "
                         f"HD95 {b[bone]['hd95_mean']:.2f} ({b[bone]['hd95_std']:.2f})")
    return "; ".join(parts) + f" mm, mean (std) over {results['images']} images of {results['subjects']} test subjects"


def train_minutes(run: Path) -> float:
    import csv

    return sum(float(r["seconds"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("seconds")) / 60


def main() -> int:
    from threeddx.network.checkpoint import export_release, load_checkpoint
    from threeddx.apps.demo import make_example

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dualface", default="runs/release-128/dependent", help="the run released as the dual-face model")
    ap.add_argument("--single", default="runs/ablation-128/single", help="the run released as the single-depth baseline")
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    weights = ROOT / "src/threeddx/data/weights"
    card = ["# Released models", "",
            "Trained by this repository's own commands; `3ddx predict IMAGE --out DIR` uses the dual-face model "
            "without a path (`--checkpoint single` for the baseline). How far to trust them is at the end.", ""]
    for name, run in (("dualface", ROOT / a.dualface), ("single", ROOT / a.single)):
        ck_path = run / "best.pt"
        ck = load_checkpoint(ck_path)
        cfg = ck["config"]
        test = json.loads((run / "eval-test" / "results.json").read_text())
        config = next((c for c in (ROOT / "configs").glob("*.yaml") if run.parent.name in c.stem), None)
        cmd = (f"3ddx train --config configs/{config.name if config else '?'}"
               + (" --loss single" if name == "single" else "") + f" --out {run.relative_to(ROOT)}")
        if (run / "command.txt").exists():  # a run made otherwise (e.g. resumed with a longer schedule) says how
            cmd = (run / "command.txt").read_text().strip()
        info = {
            "name": name, "run": str(run.relative_to(ROOT)), "epoch": ck["epoch"], "command": cmd,
            "summary": f"{cfg['loss']['mode']} loss, {cfg['data']['size']} px, width {cfg['model']['width']}, "
                       f"epoch {ck['epoch']} of {cfg['optim']['epochs']}, physics on the fly and negatives",
            "test": figures(test),
        }
        out = weights / f"{name}-{a.size}.pt"
        size = export_release(ck_path, out, half=True, info=info)
        mc = ck["model_config"]
        card += [
            f"## {name}-{a.size}.pt ({size / 1e6:.1f} MB)", "",
            f"- Model: DualFaceNet U-Net, width {mc['width']}, {mc['levels']} levels, {mc['blocks']} block(s) per level; "
            f"{'one depth map (the nearest bone surface), the single-depth baseline' if mc['single_depth'] else 'a front and a back depth map per bone'}; "
            f"bones {', '.join(ck['bones'])}. Weights stored as float16.",
            f"- Loss: `{cfg['loss']['mode']}` scale-invariant log loss, BCE + Dice on the masks.",
            f"- Data: `{cfg['data']['root']}` (configs/{config.name if config else '?'} header): LLP26 subjects split by "
            "subject (train 16, val 3, test 3; 22-25 never used) plus 48 random shapes from the PCA of the training "
            "subjects, 6 seeded poses each, in synthetic CTs with varied bodies (docs/data.md: thin to obese, outlines, "
            "thighs, bowel gas and faeces, bladder, table, metal on the body, shields, calcifications); "
            f"{cfg['data']['size']} px.",
            f"- Images: made on the fly from the material line integrals through a random imaging chain per item and "
            f"epoch (`data.chain: {cfg['data']['chain']}`: kVp 60-100, filtration, heel effect, scatter with and without a "
            "grid, dose, noise, blur, vendor processing, LUTs, bit depth, JPEG, inversion, collimation, markers, text; "
            f"docs/data.md); {100 * cfg['data']['negatives']:.0f} % of the items are images without hip anatomy "
            "(the real chest CT's views, upside-down hip films, noise) with empty targets"
            + (f"; {100 * cfg['data']['mirror']:.0f} % are the patient's exact mirror image (`data.mirror`, left and "
               "right swapped)" if cfg["data"].get("mirror") else "") + ".",
            "- Geometry: the standard AP preset (SDD 1000 mm, 430 mm detector, iso-centre 820 mm from the source, "
            "superior up, patient's right on the image's left), poses within +-10 deg tilt, +-8 deg rotation, "
            "+-5 deg in-plane, +-25/25 mm lateral/longitudinal and +-10 mm along the beam.",
            f"- Training: `{cmd}`; {ck['config']['optim']['epochs']} epochs, {train_minutes(run):.0f} min on 2 CPU cores; "
            f"released: best validation epoch {ck['epoch']}.",
            f"- Test, in distribution (`3ddx evaluate --data data/sim{a.size} --checkpoint {name} --chain random`): "
            f"{figures(test)}.", "",
        ]
    card += [
        "## How far to trust them", "",
        "- **Trained and validated on** simulated radiographs only: 16 real adult pelvis/femur shapes (LLP26) and 48 "
        "PCA variants of them, in synthetic bodies, through simulated imaging chains. The robustness benchmark "
        "(docs/results.md, \"Robustness\") measures them on the 3 held-out test subjects under shifts: each imaging-chain "
        "family at its extreme, extreme bodies, another renderer (DiffDRR), and declared geometries other than the "
        "training one.",
        "- **Not validated on** real clinical radiographs with ground truth: none exist offline, so no figure here is a "
        "clinical accuracy. Real patients differ from the simulation in anatomy beyond the hip bones (organs, muscles), "
        "implants inside bone, pathology, and the exact processing of each vendor.",
        "- **Refusal**: predict reports each bone's confidence and refuses images where it finds no hip (real chest and "
        "leg radiographs, noise, blank and wrongly loaded films are refused in the benchmark; docs/results.md). A "
        "refusal means \"unlike every training image\", not a diagnosis.",
        "- **Geometry**: trained at one geometry (SDD 1000 mm, 430 mm detector, hips ~820 mm from the source). Any "
        "other declared geometry is shown to the network as the training geometry would have shown the same anatomy "
        "(threeddx.geometry.model_view: the model's angular pixel size and magnification, depths moved back along the "
        "beam); the benchmark measures SDD 1150 mm and the table +-30 mm at 0.96-0.97x of the in-distribution ASSD (dual-face model, 2026-12-02). "
        "Give `source_to_isocenter_mm` in the geometry JSON when the patient is not on the table at the usual height.",
        "- **Masks**: a pixel is bone when its probability exceeds 0.7 (calibrated on the validation split; "
        "benchmarks/mask_threshold.py).",
        "- **Mirrored patients**: the training subjects' posture favours one side (their left femur lies ~10 mm "
        "nearer the source than the right, on average); a model trained without mirrored patients learns that and "
        "doubles its femur error on patients lying the other way. A model trained with them (`mirror_tta` in the "
        "checkpoint) averages with the mirrored view and gives the mirrored answer for a mirrored patient "
        "(docs/results.md, \"Mirrored patients\").",
        "- **Femur placement**: for the dual-face model, predict moves each femur along the beam until its head meets "
        "the hip joint that a shape-model fit of the predicted pelvis locates (threeddx.inference.hipjoint; `--no-hip-anchor` "
        "keeps the network's depths; the test figures above include it, benchmarks/hip_anchor.py compares). A femur "
        "then inherits the pelvis's placement error along the beam, and its tilt (hip flexion, which an AP image "
        "barely shows) is still the network's.",
        "- **Frames**: shape-model fits (the pelvis's meshing and the femurs' anchoring) are made in the exposure's AP "
        "frame and judged (threeddx.meshing.ssm.fit_in_view, judge_fit): no result depends on the world frame a geometry is "
        "written in (tests/test_frames.py), and an implausible fit falls back to the network's own surface with a "
        "warning (docs/results.md, \"Shape-model fits that cannot silently fail\").", "",
    ]
    with open(weights / "MODEL_CARD.md", "w") as f:
        f.write("\n".join(card))
    data = ROOT / f"data/sim{a.size}"
    make_example(data / "samples/llp26-10/pose_00.npz", data / "meshes/llp26-10",
                 ROOT / "src/threeddx/data/example/llp26-10_p00.npz")
    print("\n".join(card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
