"""predict: median wall time per stage for one radiograph (CPU by default).

    .venv/bin/python benchmarks/predict.py --checkpoint CKPT --image IMAGE [--repeats 5] [--mesh dual]

Stages as ``3ddx predict`` times them: load (read + normalise + resample),
network, back-projection, meshing (all bones), writing (STL, PLY, points,
masks.png, depth.png), and the optional report.png. The process is warmed up
with one untimed run (imports, first-call allocations); the median of
``--repeats`` runs is printed per stage, with the total with and without the
report picture.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mesh", default="dual")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from threeddx.predict import Predictor, predict_file

    torch.set_num_threads(args.threads)
    pred = Predictor(args.checkpoint)
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats + 1):
            s = predict_file(args.image, pred, Path(d) / str(i), mesh_method=args.mesh)
            if i:
                runs.append(s["timings_s"])
    n_faces = sum(b["faces"] for b in s["bones"].values())
    print(f"# predict benchmark: {args.image.name}, model {pred.size} px ({', '.join(pred.bones)}), mesh {args.mesh}, "
          f"{n_faces} faces in all; torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"Python {sys.version.split()[0]}")
    print()
    print("| stage | median ms |")
    print("|---|---|")
    med = {k: statistics.median(r[k] for r in runs) * 1000 for k in runs[0]}
    for k, v in med.items():
        print(f"| {k[:-2]} | {v:.0f} |")
    core = sum(v for k, v in med.items() if k != "report_s")
    print(f"| **total without report.png** | **{core:.0f}** |")
    print(f"| total with report.png | {core + med.get('report_s', 0):.0f} |")


if __name__ == "__main__":
    main()
