"""``3ddx demo``: the released models on the bundled example, end to end, with the error printed.

The example (``data/example/EXAMPLE.npz``, made by :func:`make_example` from the
benchmark's simulated test split, through the ``standard`` imaging chain of
:mod:`threeddx.simulator.physics`) is a 256 px radiograph of LLP26 subject 10, a
test subject that no released model or shape model has seen, in one of its
seeded poses, with its projection geometry (render.npz format) and the
ground-truth bone meshes of that pose (world mm, LPS). The demo runs
``predict`` with each released model (the dual-face network and the
single-depth baseline; src/threeddx/data/weights/MODEL_CARD.md), writes its
meshes, depth maps and ``report.png`` under ``OUT/MODEL/``, and prints ASSD
and HD95 (mm) against the ground truth, measured the way ``3ddx evaluate``
measures them (the parts of both surfaces that project inside the detector).
It needs no network access and no data but the package's.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from threeddx.bones import DEFAULT_BONES
from threeddx.errors import InputError
from threeddx.io import atomic_path, check_out_folder, result_folder

EXAMPLE = "llp26-10_p00.npz"
BONES = DEFAULT_BONES


def example_path() -> Path:
    """The bundled example radiograph (NPZ with its geometry and ground-truth meshes)."""
    from importlib.resources import files

    path = Path(str(files("threeddx") / "data" / "example" / EXAMPLE))
    if not path.exists():
        raise InputError(f"the bundled example is not installed ({path})")
    return path


def make_example(sample: str | Path, mesh_dir: str | Path, out: str | Path, bones: Sequence[str] = BONES,
                 chain: str | None = "standard") -> Path:
    """Bundle one simulated sample and its ground-truth meshes as an example NPZ (float32 vertices).

    With ``chain`` (and a sample that has material line integrals) the example's
    image is the sample's radiograph through that imaging chain
    (:mod:`threeddx.simulator.physics`; ``standard``: a typical processed hip film), not
    the windowed monochromatic DRR.
    """
    import trimesh

    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.physics import radiograph, sample_materials

    keep = ("image", "geometry", "bones", "masks", "depth_front", "depth_back", "subject", "pose", "split")
    with np.load(sample) as z:
        arrays = {k: z[k] for k in keep if k in z}
        mats = sample_materials(z)
        if chain is not None and mats is not None:
            arrays["image"] = radiograph(mats, XrayGeometry.from_json(str(z["geometry"])), chain)
            arrays["chain"] = np.array(chain)
    stored = [str(b) for b in arrays["bones"]]
    idx = [stored.index(b) for b in bones]
    for k in ("masks", "depth_front", "depth_back"):
        arrays[k] = arrays[k][idx].astype(np.float32 if k != "masks" else np.uint8)
    arrays["bones"] = np.array(list(bones))
    for b in bones:
        m = trimesh.load(Path(mesh_dir) / f"{b}.ply", process=False)
        arrays[f"gt_vertices_{b}"] = np.asarray(m.vertices, np.float32)
        arrays[f"gt_faces_{b}"] = np.asarray(m.faces, np.int32)
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return out


def ground_truth_meshes(path: Path) -> dict:
    import trimesh

    with np.load(path) as z:
        bones = [str(b) for b in z["bones"]]
        return {b: trimesh.Trimesh(z[f"gt_vertices_{b}"].astype(np.float64), z[f"gt_faces_{b}"], process=False) for b in bones}


def run_demo(out: str | Path, models: Sequence[str] = ("dualface", "single"), device: str = "cpu",
             example: str | Path | None = None, progress: bool = True, view: bool = False) -> dict:
    """Predict the example with each released model, score it, print and write the table (demo.md/json).

    Each model's folder is a predict result with the ground truth attached (``truth/``, and
    ``truth_metrics`` in its summary.json); ``view`` adds its ``view.html``.
    """
    from threeddx.metrics import surface_distances, visible_part
    from threeddx.apps.predict import Predictor, reconstruct_image, write_reconstruction

    t_start = time.perf_counter()
    example = Path(example) if example else example_path()
    gt = ground_truth_meshes(example)
    out = Path(out)
    results: dict = {"example": example.name, "models": {}}
    check_out_folder(out, "demo.json")
    recs = {}
    for name in models:
        pred = Predictor(name, device)
        rec = reconstruct_image(example, pred)  # each model's own meshing, as predict does
        recs[name] = rec
        geo = rec.prediction.geometry
        card = pred.ck.get("release", {})
        row = {"checkpoint": str(pred.checkpoint), "mesh_method": rec.summary["mesh_method"], "bones": {},
               "trained": card.get("summary", "")}
        for bone, mesh_gt in gt.items():  # scored in memory: the meshes predict writes
            if bone not in rec.world_meshes:
                row["bones"][bone] = {"status": "not found in the image"}
                continue
            d = surface_distances(visible_part(rec.world_meshes[bone], geo, max_edge_mm=None), visible_part(mesh_gt, geo))
            row["bones"][bone] = {"status": "ok", "assd": round(d["assd"], 3), "hd95": round(d["hd95"], 3)}
        rec.add_truth(gt, {b: r for b, r in row["bones"].items() if r["status"] == "ok"})
        results["models"][name] = row
    with result_folder(out, "demo.json") as folder:
        for name, rec in recs.items():
            s = write_reconstruction(rec, folder / name, view=view)
            results["models"][name]["seconds"] = round(sum(s["timings_s"].values()), 2)
        results["seconds"] = round(time.perf_counter() - t_start, 1)
        table = demo_table(results)
        with atomic_path(folder / "demo.json") as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
        with atomic_path(folder / "demo.md") as tmp:
            tmp.write_text(table)
    if progress:
        print(table)
        views = ", view.html" if view else ""
        print(f"meshes, depth maps, report.png{views} in {out}/<model>/ ({results['seconds']:.0f} s in all)")
    return results


def demo_table(results: dict) -> str:
    from threeddx.meshing.reconstruct import describe_mesh

    head = "| model | " + " | ".join(f"{b} ASSD | {b} HD95" for b in BONES) + " |"
    lines = [f"Example {results['example']} (a test subject, unseen in training): mm against the ground truth", "",
             head, "|---|" + "---|---|" * len(BONES)]
    for name, row in results["models"].items():
        cells = []
        for b in BONES:
            r = row["bones"].get(b, {"status": "n/a"})
            cells += [f"{r['assd']:.2f}", f"{r['hd95']:.2f}"] if r["status"] == "ok" else ["-", "-"]
        label = f"{name} ({describe_mesh(row['mesh_method'])})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
