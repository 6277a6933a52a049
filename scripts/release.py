"""Make the package's released models, their model card and the demo example from a finished ablation run.

    python scripts/release.py --dualface ROW [--size 128]

ROW is the dual-face row chosen on the validation split (benchmarks/ablation.py
prints the validation ASSD of each row); the single-depth baseline is the
``single`` row. Writes:

* src/threeddx/data/weights/dualface-SIZE.pt and single-SIZE.pt: predict-only
  copies of each row's best.pt, weights in float16 (train.export_release);
* src/threeddx/data/weights/MODEL_CARD.md: data, resolution, geometry,
  training command, test figures (from the rows' eval-test/results.json);
* src/threeddx/data/example/llp26-10_p00.npz: test subject 10, pose 0, with its
  ground-truth meshes (demo.make_example).
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


def main() -> int:
    from threeddx.demo import make_example
    from threeddx.checkpoint import export_release, load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dualface", required=True, help="the ablation row released as the dual-face model")
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    runs = ROOT / f"runs/ablation-{a.size}"
    weights = ROOT / "src/threeddx/data/weights"
    card = ["# Released models", "",
            "Trained by this repository's own commands on the benchmark of docs/results.md; "
            "`3ddx predict IMAGE --out DIR` uses the dual-face model without a path "
            "(`--checkpoint single` for the baseline).", ""]
    for name, row in (("dualface", a.dualface), ("single", "single")):
        ck_path = runs / row / "best.pt"
        ck = load_checkpoint(ck_path)
        cfg = ck["config"]
        test = json.loads((runs / row / "eval-test" / "results.json").read_text())
        cmd = f"3ddx train --config configs/ablation-{a.size}.yaml --loss {row} --out runs/ablation-{a.size}/{row}"
        info = {
            "name": name, "row": row, "epoch": ck["epoch"], "command": cmd,
            "summary": f"{row} loss, {cfg['data']['size']} px, epoch {ck['epoch']} of {cfg['optim']['epochs']}",
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
            f"- Loss: `{row}` (configs/ablation-{a.size}.yaml, loss section; CASI adds a depth offset "
            f"at inference: {ck.get('casi_offset_mm')}).",
            f"- Data: `{cfg['data']['root']}`, the benchmark recipe in configs/ablation-{a.size}.yaml: LLP26 subjects "
            "split by subject (train 16, val 3, test 3; 22-25 never used) plus 48 random shapes from the PCA of the "
            "training subjects, 6 seeded poses each, synthetic CTs; "
            f"{cfg['data']['size']} px.",
            "- Geometry: the standard AP preset (SDD 1000 mm, 430 mm detector, iso-centre 820 mm from the source, "
            "superior up, patient's right on the image's left), poses within +-10 deg tilt, +-8 deg rotation, "
            "+-5 deg in-plane, +-25/25 mm lateral/longitudinal and +-10 mm along the beam.",
            f"- Training: `{cmd}`; {cfg['optim']['epochs']} epochs on 2 CPU cores; released: best validation "
            f"epoch {ck['epoch']}.",
            f"- Test (`3ddx evaluate --data data/sim{a.size} --checkpoint {name}`): {figures(test)}.",
            "- Limits: trained on simulated radiographs of 64 shapes; real radiographs differ in noise, scatter, "
            "soft tissue and implants. The figures are for simulated test images only.", "",
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
