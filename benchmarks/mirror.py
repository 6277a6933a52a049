"""Mirrored patients: the training shapes' side bias, and dual-face models on patients and on their mirror images.

    .venv/bin/python benchmarks/mirror.py [--data data/sim128] [--old-test data/shift/old-test]
        [--model LABEL=CHECKPOINT ...] [--splits val test] [--out runs/mirror]

1. **The side bias of the data**: per split (train and ``--splits``), the left femur's mean depth
   minus the right femur's (the mean of (front + back) / 2 over each femur's
   true mask, mm from the source), mean and SD over the images. A population
   positioned at random has none on average; the 16 LLP26 training subjects'
   posture has some, and a network can learn it.
2. **The models on patients and on their mirror images** (``evaluate``'s
   ``mirrored``: the flipped image in, the prediction mirrored back onto the
   patient's rays, an exact reflection for the centred camera): per bone ASSD,
   HD95 and the mean shift along the beam, through random imaging chains
   (seed 0) with predict's defaults (the hip-joint anchoring; the mirrored
   view when the checkpoint was trained with mirrored patients). A model with
   no side bias scores the same on both; the released model before mirroring
   was fine-tuned in does not.

``--model LABEL=CHECKPOINT`` (repeatable; default: the 128 px release as ``dualface-128``, on its own 128 px
data as the recorded figures were made; the 256 px release: ``--data data/sim256-10x-eval --model
dualface=dualface``); a CHECKPOINT of the form ``git:REV`` is the release file of git
revision REV. Evaluations are cached in OUT (delete a folder to rerun it).
"""
from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BONES = ("pelvis", "femur_left", "femur_right")


def side_bias(data: Path, split: str) -> np.ndarray:
    """Left minus right femur mean mid-depth (mm) per image of ``split``."""
    from threeddx.training.dataset import read_manifest

    out = []
    for r in (r for r in read_manifest(data) if r["split"] == split):
        with np.load(data / r["render"]) as z:
            bones = [str(b) for b in z["bones"]]
            mid = {}
            for b in ("femur_left", "femur_right"):
                k = bones.index(b)
                m = z["masks"][k] > 0
                mid[b] = float(np.mean(0.5 * (z["depth_front"][k] + z["depth_back"][k])[m]))
        out.append(mid["femur_left"] - mid["femur_right"])
    return np.array(out)


def checkpoint(spec: str, out: Path) -> str:
    """A checkpoint path (or released name); ``git:REV`` is extracted from git into ``out``."""
    from robustness import old_checkpoint  # this folder is on the path when the script runs

    return str(old_checkpoint(spec[4:], out)) if spec.startswith("git:") else spec


def evaluation(label: str, ck: str, data: Path, split: str, chain, mirrored: bool, out: Path) -> list[dict]:
    from threeddx.evaluation.evaluate import evaluate

    folder = out / f"{label}-{data.name}-{split}-{'mirrored' if mirrored else 'direct'}"
    if not (folder / "results.csv").exists():
        evaluate(data, folder, ck, split=split, chain=chain, progress=False, mirrored=mirrored)
    return list(csv.DictReader(open(folder / "results.csv")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sim128")
    ap.add_argument("--old-test", type=Path, default=ROOT / "data" / "shift" / "old-test",
                    help="the robustness benchmark's old test set (direct only; skipped when absent)")
    ap.add_argument("--model", action="append", help="LABEL=CHECKPOINT (repeatable)")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "mirror")
    a = ap.parse_args()
    import torch

    models = [m.split("=", 1) for m in (a.model or ["dualface-128=dualface-128"])]
    print(f"`python benchmarks/mirror.py {' '.join('--model ' + '='.join(m) for m in models)}`; {platform.machine()}, "
          f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| split | images | left - right femur depth, mean mm | SD mm |")
    print("|---|---|---|---|")
    for split in ("train", *[x for x in a.splits if x != "train"]):
        s = side_bias(a.data, split)
        print(f"| {split} | {len(s)} | {s.mean():+.1f} | {s.std():.1f} |")
    print()
    sets = [(split, a.data, split, "random", m) for split in a.splits for m in (False, True)]
    if (a.old_test / "manifest.csv").exists():
        sets.append(("old test set", a.old_test, "test", None, False))
    print("| model | set | patients | bone | ASSD | HD95 | beam shift mean mm | found % |")
    print("|---|---|---|---|---|---|---|---|")
    for label, spec in models:
        ck = checkpoint(spec, a.out)
        for name, data, split, chain, mirrored in sets:
            rows = evaluation(label, ck, data, split, chain, mirrored, a.out)
            for bone in (*BONES, "femur"):
                r = [x for x in rows if x["bone"] == bone or (bone == "femur" and x["bone"] != "pelvis")]
                ok = [x for x in r if x["status"] == "ok"]
                v = {k: np.array([float(x[k]) for x in ok]) for k in ("assd", "hd95", "beam_shift_mm")}
                found = 100.0 * np.mean([x["found"] == "True" for x in r])
                print(f"| {label} | {name} | {'mirrored' if mirrored else 'as simulated'} | {bone} | "
                      f"{v['assd'].mean():.2f} | {v['hd95'].mean():.2f} | {v['beam_shift_mm'].mean():+.1f} | "
                      f"{found:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
