"""predict: median wall time per stage for one radiograph (CPU by default).

    .venv/bin/python benchmarks/predict.py --checkpoint CKPT --image IMAGE [--repeats 5] [--mesh dual]

Stages as ``3ddx predict`` times them: load (read + normalise + resample),
network, back-projection, meshing (all bones), writing (STL, PLY, points,
masks.png, depth.png), and the optional report.png. The process is warmed up
with one untimed run (imports, first-call allocations); the median of
``--repeats`` runs is printed per stage, with the total with and without the
report picture, with the femurs' hip-joint anchoring (the default; its pelvis
fit is timed in the network stage) and without it, side by side.

    .venv/bin/python benchmarks/predict.py --memory

prints instead the peak memory (max RSS of a fresh ``3ddx predict`` process) for
the bundled 128 px example and for the same radiograph upsampled to 1000 and
3000 px (PNG, 16 bit, with its geometry declared at the matching pixel size):
the bound issue 12 asks for is 1.5 GB at 3000 x 3000.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path


def peak_memory() -> None:
    """Max RSS of one ``3ddx predict`` process per input size (a fresh interpreter each)."""
    import json
    import resource
    import subprocess

    import numpy as np
    import torch
    from PIL import Image

    from threeddx.apps.demo import example_path
    from threeddx.geometry import XrayGeometry

    print(f"# predict peak memory: fresh process per row; torch {torch.__version__}, {platform.machine()}, "
          f"Python {sys.version.split()[0]}")
    print()
    print("| input | file MB | peak RSS MB | wall s |")
    print("|---|---|---|---|")
    with np.load(example_path()) as z:
        img, geo = z["image"], XrayGeometry.from_json(str(z["geometry"]))
    with tempfile.TemporaryDirectory() as d:
        inputs = [("bundled example NPZ, 128 x 128", example_path())]
        for n in (1000, 3000):
            t = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=(n, n), mode="bilinear")
            path = Path(d) / f"x{n}.png"
            Image.fromarray((t[0, 0].numpy() * 65535).astype(np.uint16)).save(path)
            g = Path(d) / f"x{n}.json"
            g.write_text(json.dumps(geo.resample(n).to_dict()))
            inputs.append((f"PNG 16 bit, {n} x {n}, geometry declared", path, g))
        for row in inputs:
            label, path, *g = row
            cmd = [sys.executable, "-m", "threeddx.cli", "predict", str(path), "--out", str(Path(d) / "out")]
            if g:
                cmd += ["--geometry", str(g[0])]
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            import time

            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            note = "" if peak > before else " (not above an earlier row's)"
            print(f"| {label} | {Path(path).stat().st_size / 1e6:.1f} | {peak / 1024:.0f}{note} | {wall:.1f} |")


def main() -> None:
    if "--memory" in sys.argv:
        return peak_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mesh", default="model",
                    help="a mesher of threeddx.meshing.reconstruct.MESHERS, or 'model': the checkpoint's own (as predict)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-report", dest="report", action="store_false", help="skip report.png (predict's default writes it)")
    args = ap.parse_args()

    import torch

    from threeddx.apps.predict import Predictor, predict_file

    torch.set_num_threads(args.threads)
    from threeddx.inference.hipjoint import AnchorSettings

    columns = {"hip-joint anchoring on": AnchorSettings(), "off (--no-hip-anchor)": None}
    med = {}
    for label, anchor in columns.items():
        pred = Predictor(args.checkpoint, hip_anchor=anchor)
        runs = []
        with tempfile.TemporaryDirectory() as d:
            for i in range(args.repeats + 1):
                s = predict_file(args.image, pred, Path(d) / str(i),
                                 mesh_method=None if args.mesh == "model" else args.mesh, report=args.report)
                if i:
                    runs.append(s["timings_s"])
        med[label] = {k: statistics.median(r[k] for r in runs) * 1000 for k in runs[0]}
    n_faces = sum(b["faces"] for b in s["bones"].values())
    print(f"# predict benchmark: {args.image.name}, model {pred.size} px ({', '.join(pred.bones)}), mesh {args.mesh}, "
          f"{n_faces} faces in all; torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"Python {sys.version.split()[0]}")
    print()
    print("| stage | " + " | ".join(f"median ms, {c}" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for k in med[next(iter(columns))]:
        print(f"| {k[:-2]} | " + " | ".join(f"{med[c][k]:.0f}" for c in columns) + " |")
    core = {c: sum(v for k, v in m.items() if k != "report_s") for c, m in med.items()}
    print("| **total without report.png** | " + " | ".join(f"**{core[c]:.0f}**" for c in columns) + " |")
    print("| total with report.png | " + " | ".join(f"{core[c] + med[c].get('report_s', 0):.0f}" for c in columns) + " |")

if __name__ == "__main__":
    main()
