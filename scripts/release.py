"""Release a finished run as one of the package's models: its weights, its model-card section, the demo example.

    python scripts/release.py --model dualface=runs/release-256-ft [--model single=runs/ablation-128/single] \
        [--example data/sim256-10x]

``NAME`` is a released model's name (``threeddx.network.checkpoint.RELEASED``: the
file it is installed as). Each ``RUN`` folder holds a training run (``best.pt``,
``metrics.csv``, optionally ``command.txt`` when it was made otherwise than by its
config alone) and its in-distribution test evaluation ``eval-test/results.json``
(``3ddx evaluate --split test --chain random``). Writes:

* src/threeddx/data/weights/RELEASED[NAME]: a predict-only copy of the run's
  best.pt, weights in float16 (checkpoint.export_release);
* that model's section of src/threeddx/data/weights/MODEL_CARD.md (between the
  markers ``<!-- release:NAME -->`` and ``<!-- /release:NAME -->``; the other
  models' sections and the hand-written parts stay as they are): data,
  physics, resolution, geometry, training command, test figures;
* with ``--example DATA``: src/threeddx/data/example/llp26-10_p00.npz, test
  subject 10, pose 0 of DATA through the standard imaging chain, with its
  ground-truth meshes (demo.make_example).

Then ``scripts/release_mesh.py`` chooses each bone's meshing of a dual-face
model on the validation split and records it in the checkpoint, and
``benchmarks/placement.py --write`` its calibrated placement and tilt SDs (a
release made here alone meshes every bone ``dual`` and carries none).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
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
    return sum(float(r["seconds"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("seconds")) / 60


def meshing(method) -> str:
    """An evaluation's meshing as words: ``dual`` or ``pelvis ssm, femur_left dual, ...``."""
    return ", ".join(f"{bone} {m}" for bone, m in method.items()) if isinstance(method, dict) else str(method)


def describe_data(root: Path) -> str:
    """What a simulated data set holds, counted from its manifest (subjects by split, shape-model variants, poses)."""
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    subjects = {r["subject_id"]: r for r in rows}
    real = Counter(r["split"] for r in subjects.values() if r["subject_id"].startswith("llp26"))
    variants = sum(1 for r in subjects.values() if not r["subject_id"].startswith("llp26"))
    poses = round(len(rows) / max(len(subjects), 1))
    return (f"LLP26 subjects split by subject (train {real['train']}, val {real['val']}, test {real['test']}; the "
            f"others never used) plus {variants} random shapes from the PCA of the training subjects, {poses} seeded "
            f"poses each ({len(rows)} samples)")


def section(name: str, file: str, run: Path, size_bytes: int) -> list[str]:
    """The model card's section of one released model, from its run folder."""
    from threeddx.network.checkpoint import load_checkpoint

    ck = load_checkpoint(run / "best.pt")
    cfg, mc = ck["config"], ck["model_config"]
    test = json.loads((run / "eval-test" / "results.json").read_text())
    config = next((c for c in sorted((ROOT / "configs").glob("*.yaml")) if c.stem in run.name or run.name in c.stem), None)
    cmd = (run / "command.txt").read_text().strip() if (run / "command.txt").exists() else (
        f"3ddx train --config configs/{config.name if config else '?'}" + (" --loss single" if mc["single_depth"] else "")
        + f" --out {run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}")
    d = cfg["data"]
    root = Path(d["root"]) if Path(d["root"]).is_absolute() else ROOT / d["root"]
    return [
        f"<!-- release:{name} -->",
        f"## {file} ({size_bytes / 1e6:.1f} MB; `--checkpoint {name}`)", "",
        f"- Model: DualFaceNet U-Net, width {mc['width']}, {mc['levels']} levels, {mc['blocks']} block(s) per level; "
        f"{'one depth map (the nearest bone surface), the single-depth baseline' if mc['single_depth'] else 'a front and a back depth map per bone'}; "
        f"bones {', '.join(ck['bones'])}; {d['size']} px. Weights stored as float16.",
        f"- Loss: `{cfg['loss']['mode']}` scale-invariant log loss, BCE + Dice on the masks.",
        f"- Data: `{d['root']}`: {describe_data(root)}, in synthetic CTs with varied bodies (docs/data.md: thin to "
        "obese, outlines, thighs, bowel gas and faeces, bladder, table, metal on the body, shields, calcifications); "
        f"{d['size']} px.",
        "- Images: made on the fly from the material line integrals through a random imaging chain per item and "
        f"epoch (`data.chain: {d['chain']}`: kVp 60-100, filtration, heel effect, scatter with and without a "
        "grid, dose, noise, blur, vendor processing, LUTs, bit depth, JPEG, inversion, collimation, markers, text; "
        f"docs/data.md); {100 * d['negatives']:.0f} % of the items are images without hip anatomy "
        "(the real chest CT's views, upside-down hip films, noise) with empty targets"
        + (f"; {100 * d['mirror']:.0f} % are the patient's exact mirror image (`data.mirror`, left and right swapped)"
           if d.get("mirror") else "")
        + (f"; {100 * d['marker']:.0f} % carry a 20-30 mm steel calibration ball where practice puts one "
           "(`data.marker`)" if d.get("marker") else "") + ".",
        "- Geometry: the standard AP preset (SDD 1000 mm, 430 mm detector, iso-centre 820 mm from the source, "
        "superior up, patient's right on the image's left), poses within +-10 deg tilt, +-8 deg rotation, "
        "+-5 deg in-plane, +-25/25 mm lateral/longitudinal and +-10 mm along the beam.",
        f"- Training: `{cmd}`; {cfg['optim']['epochs']} epochs, {train_minutes(run):.0f} min on 2 CPU cores; "
        f"released: best validation epoch {ck['epoch']}.",
        f"- Test, in distribution (`3ddx evaluate --data {test['data']} --split test --chain random`, "
        f"meshing {meshing(test.get('mesh_method'))}): {figures(test)}.",
        f"<!-- /release:{name} -->",
    ]


def put_section(card: str, name: str, lines: list[str]) -> str:
    """``card`` with model ``name``'s marked section replaced by ``lines`` (appended before the trust notes when new)."""
    text = "\n".join(lines)
    pattern = re.compile(rf"<!-- release:{re.escape(name)} -->.*?<!-- /release:{re.escape(name)} -->", re.S)
    if pattern.search(card):
        return pattern.sub(lambda _: text, card)
    at = card.find("## How far to trust them")
    return card + "\n" + text + "\n" if at < 0 else card[:at] + text + "\n\n" + card[at:]


def main() -> int:
    from threeddx.apps.demo import EXAMPLE, make_example
    from threeddx.network.checkpoint import RELEASED, export_release

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=RUN",
                    help=f"release RUN/best.pt as NAME (one of {', '.join(RELEASED)}); repeatable")
    ap.add_argument("--example", type=Path, help="a data folder whose test subject 10, pose 0 becomes the demo example")
    a = ap.parse_args()
    weights = ROOT / "src/threeddx/data/weights"
    card_path = weights / "MODEL_CARD.md"
    card = card_path.read_text()
    for spec in a.model:
        name, _, run = spec.partition("=")
        if name not in RELEASED or not run:
            ap.error(f"--model {spec}: NAME=RUN with NAME one of {', '.join(RELEASED)}")
        run = Path(run) if Path(run).is_absolute() else ROOT / run
        test = json.loads((run / "eval-test" / "results.json").read_text())
        info = {"name": name, "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run),
                "test": figures(test)}
        size = export_release(run / "best.pt", weights / RELEASED[name], half=True, info=info)
        card = put_section(card, name, section(name, RELEASED[name], run, size))
    card_path.write_text(card)
    if a.example:
        make_example(a.example / "samples/llp26-10/pose_00.npz", a.example / "meshes/llp26-10",
                     ROOT / "src/threeddx/data/example" / EXAMPLE)
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
