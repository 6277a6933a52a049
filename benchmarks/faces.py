"""Beyond two faces (docs/results.md "K faces"): what the inner faces buy, with the ground-truth depths.

    .venv/bin/python benchmarks/faces.py [--data data/faces4-128] [--out runs/faces] [--limit N]
                                         [--learned LABEL=CHECKPOINT ...]

1. ``3ddx simulate --faces 4`` of the test subjects (LLP26 10, 16, 19; 6 poses,
   128 px, 1.5 mm voxels: the test split of ``data/sim128`` exactly, its front
   and back faces bit for bit, plus the inner faces), unless present;
2. the oracle (ground-truth masks and depths) through each mesher, scored by
   ``3ddx evaluate --oracle --seen`` under both protocols (threeddx.metrics:
   (a) the whole surface in the field of view, (b) the part that the method's
   faces see), both HD95 definitions:

   * K = 2, ``dual`` (the released meshing),
   * K = 2, ``intervals`` (the same two faces meshed in ray space),
   * K = 4, ``intervals`` (the inner faces added);
3. the regions: ground-truth points of rays that cross the bone more than
   twice (the acetabulum, the pelvic ring's inner walls: ``inner``) and the
   rest (``outer``), each point's distance to each reconstruction (the
   GT -> reconstruction half of ASSD), mean and 95th percentile; with
   ``--learned`` also of trained networks (K = 2 against K = 4 at the same
   budget: ``benchmarks/ablation.py``'s ``dependent`` and ``dependent-k4``).

Each step is skipped when its output exists. Prints the tables and writes them
to ``OUT/faces.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["--subjects", "10,16,19", "--poses", "6", "--size", "128", "--voxel-mm", "1.5", "--workers", "1",
          "--faces", "4"]
METHODS = (("K = 2, dual", 2, "dual"), ("K = 2, intervals", 2, "intervals"), ("K = 4, intervals", 4, "intervals"))
BONES = ("pelvis", "femur_left", "femur_right")


def simulate(data: Path) -> None:
    if not (data / "manifest.csv").exists():
        args = [sys.executable, "-m", "threeddx.cli", "simulate", "--out", str(data), *RECIPE]
        print("$ " + " ".join(args[2:]), flush=True)
        subprocess.run(args, cwd=ROOT, check=True)


def scores(data: Path, out: Path, limit: int | None) -> dict[str, dict]:
    from threeddx.evaluation.evaluate import evaluate

    res = {}
    for label, faces, mesh in METHODS:
        folder = out / f"oracle-k{faces}-{mesh}"
        if not (folder / "results.json").exists():
            print(f"$ 3ddx evaluate --oracle --faces {faces} --mesh {mesh} --seen --data {data} --out {folder}",
                  flush=True)
            evaluate(data, folder, oracle=True, faces=faces, mesh_method=mesh, seen=True, limit=limit, progress=False)
        res[label] = json.loads((folder / "results.json").read_text())
    return res


def regions(data: Path, limit: int | None, learned: dict[str, str] | None = None,
            ) -> dict[tuple[str, str, str], list[np.ndarray]]:
    """(method, bone, region) -> per image the GT points' distances to the reconstruction (mm).

    The methods are :data:`METHODS` (ground-truth faces) and ``learned`` (label -> checkpoint): each network
    sees the test image through the random imaging chain that ``3ddx evaluate --chain random`` draws for it
    (seed 0, the image's index) and is meshed as evaluate meshes it (``dual``: intervals when it has inner faces).
    """
    import trimesh

    from threeddx.training.dataset import read_manifest
    from threeddx.evaluation.evaluate import chain_image
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.predictor import Predictor
    from threeddx.metrics import point_to_surface, ray_crossings, sample_surface, visible_part
    from threeddx.meshing.reconstruct import reconstruct_bone

    predictors = {label: Predictor(ck) for label, ck in (learned or {}).items()}
    rows = [r for r in read_manifest(data) if r["split"] == "test"][:limit]
    acc: dict = {}
    for index, row in enumerate(rows):
        with np.load(data / row["render"]) as z:
            g = XrayGeometry.from_json(str(z["geometry"]))
            bones = [str(b) for b in z["bones"]]
            maps = {k: z[k] for k in ("masks", "depth_front", "depth_back", "depth_inner", "inner_valid")}
            image = chain_image(z, g, "random", 0, index)
        predictions = {label: p.infer(image, g) for label, p in predictors.items()}
        for bone in BONES:
            c = bones.index(bone)
            full = trimesh.load(data / row["mesh_dir"] / f"{bone}.ply")
            gt = visible_part(full, g)
            pts = sample_surface(gt, seed=1)
            _, total = ray_crossings(pts, full, g)
            inner = total > 2
            recs = {}
            for label, faces, mesh in METHODS:
                extra = (maps["depth_inner"][c], maps["inner_valid"][c]) if faces > 2 else None
                recs[label] = reconstruct_bone(maps["masks"][c], maps["depth_front"][c], maps["depth_back"][c], g,
                                               mesh, inner=extra)
            for label, pred in predictions.items():
                m, k = pred.maps(), predictors[label].bones.index(bone)
                for key, err in map_errors(pred, k, maps, c).items():
                    acc.setdefault((label, bone, f"map {key}"), []).append(err)
                if m["masks"][k].sum() >= 4:
                    recs[label] = reconstruct_bone(m["masks"][k], m["depth_front"][k], m["depth_back"][k],
                                                   pred.geometry, "dual", inner=pred.inner[k])
            for label, rec in recs.items():
                d = point_to_surface(pts, rec)
                for name, sel in (("inner", inner), ("outer", ~inner)):
                    acc.setdefault((label, bone, name), []).append(d[sel])
            acc.setdefault(("share", bone, "inner"), []).append(np.array([inner.mean()]))
    return acc


def map_errors(pred, k: int, truth: dict, c: int) -> dict[str, np.ndarray]:
    """A learned prediction's maps against the truth, bone ``k`` of the prediction = ``c`` of the sample.

    ``front``/``back``/``inner``: |depth error| (mm) on the pixels both call bone (for ``inner``: both call
    gap 1, its two faces); ``gap``: the TP, FP, FN pixel counts of gap 1 (a K = 2 model predicts no gap), for its Dice.
    """
    both = pred.masks[k] & (truth["masks"][c] > 0)
    out = {"front": np.abs(pred.depth_front[k] - truth["depth_front"][c])[both],
           "back": np.abs(pred.depth_back[k] - truth["depth_back"][c])[both]}
    tv = truth["inner_valid"][c, 0] > 0
    pv = np.zeros_like(tv) if pred.inner_valid is None else pred.inner_valid[k, 0] & pred.masks[k]
    out["gap"] = np.array([[np.sum(pv & tv), np.sum(pv & ~tv), np.sum(~pv & tv)]])
    if pred.depth_inner is not None:
        g = pv & tv
        out["inner"] = np.abs(pred.depth_inner[k, :2] - truth["depth_inner"][c, :2])[:, g].ravel()
    return out


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "faces4-128")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "faces")
    ap.add_argument("--limit", type=int, help="the first N test images only")
    ap.add_argument("--learned", nargs="*", default=[], metavar="LABEL=CHECKPOINT",
                    help="trained models to add to the regions table (e.g. from benchmarks/ablation.py)")
    a = ap.parse_args()
    learned = dict(item.rsplit("=", 1) for item in a.learned)  # labels may hold "=", paths seldom do
    t0 = time.perf_counter()
    simulate(a.data)
    res = scores(a.data, a.out, a.limit)
    n = next(iter(res.values()))["images"]
    lines = ["# K faces: the oracle (ground-truth depths), test subjects 10, 16, 19", "",
             f"`python benchmarks/faces.py`; {platform.machine()}, {time.strftime('%Y-%m-%d')}; {n} images, 128 px. "
             "HD95: the larger directed 95th percentile (the literature's); pooled: the 95th percentile of both "
             "directions pooled. (a): the whole ground-truth surface in the field of view; (b): the part the "
             "method's faces see.", ""]
    for group in ("pelvis", "femur"):
        lines += [f"## {group}{' (left and right pooled)' if group == 'femur' else ''}", "",
                  "| method | ASSD (a) | HD95 (a) | HD95 pooled (a) | ASSD (b) | HD95 (b) | HD95 pooled (b) |",
                  "|---|---|---|---|---|---|---|"]
        for label, _, _ in METHODS:
            b = res[label]["bones"][group]
            lines.append(f"| {label} | {fmt(b['assd_mean'])} | {fmt(b['hd95_mean'])} | {fmt(b['hd95_pooled_mean'])} | "
                         f"{fmt(b['assd_seen_mean'])} | {fmt(b['hd95_seen_mean'])} | {fmt(b['hd95_pooled_seen_mean'])} |")
        k2, k4 = res[METHODS[0][0]]["bones"][group]["hd95_mean"], res[METHODS[2][0]]["bones"][group]["hd95_mean"]
        lines += ["", f"HD95 (a), K = 2 dual / K = 4: {k2 / k4:.2f}x.", ""]
    acc = regions(a.data, a.limit, learned)
    labels = [m for m, _, _ in METHODS] + list(learned)
    lines += ["## Regions (ground truth -> reconstruction, mm: mean / 95th percentile)", "",
              "`inner`: ground-truth points whose ray from the source crosses the bone more than twice "
              "(the acetabulum, the inner walls of the pelvic ring); `outer`: the rest.", "",
              "| bone | inner share of the surface | " + " | ".join(f"{m} inner | {m} outer" for m in labels) + " |",
              "|---|---|" + "---|---|" * len(labels)]
    for bone in BONES:
        cells = [f"{100 * np.mean(np.concatenate(acc[('share', bone, 'inner')])):.1f} %"]
        for label in labels:
            for name in ("inner", "outer"):
                d = np.concatenate(acc.get((label, bone, name), [np.zeros(0)]))
                cells.append("n/a" if d.size == 0 else f"{d.mean():.2f} / {np.percentile(d, 95):.2f}")
        lines.append(f"| {bone} | " + " | ".join(cells) + " |")
    if learned:
        lines += ["", "## The learned maps against the truth (test images through random imaging chains)", "",
                  "Median |depth error| (mm) on the pixels both the network and the truth call bone (inner faces: "
                  "both call the first gap); gap Dice: the first gap's mask (rays crossing the bone more than once).",
                  "", "| model | bone | front | back | inner faces | gap Dice |", "|---|---|---|---|---|---|"]
        for label in learned:
            for bone in BONES:
                err = {f: np.concatenate(acc.get((label, bone, f"map {f}"), [np.zeros(0)])) for f in ("front", "back", "inner")}
                med = {f: float(np.median(e)) if e.size else None for f, e in err.items()}
                tp, fp, fn = np.concatenate(acc[(label, bone, "map gap")]).sum(0)
                dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
                lines.append(f"| {label} | {bone} | {fmt(med['front'])} | {fmt(med['back'])} | {fmt(med['inner'])} | "
                             f"{dice:.3f} |")
    lines += ["", f"{time.perf_counter() - t0:.0f} s in all (steps already done are read back)."]
    text = "\n".join(lines) + "\n"
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "faces.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
