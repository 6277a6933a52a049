"""The shift benchmark (docs/results.md "Robustness"): the old and the new released model, side by side.

    .venv/bin/python benchmarks/robustness.py [--old-rev fef6c29] [--new dualface] [--out runs/robustness] [--workers 2]
        [--data data/sim128] [--size 128] [--prepare]

``--size 256`` simulates the shifted sets at 256 px (``data/shift-256``) for a 256 px model; ``--data`` is
then a 256 px set's test split (e.g. ``data/sim256-10x-eval``); ``--prepare`` only makes the data sets.

Test subjects only (LLP26 10, 16, 19; never trained on). Every row is one
shift from the training distribution; each is evaluated with both models in
this one run (``3ddx evaluate``'s library call, the released dual-face
meshing):

* **in-distribution**: the test split of ``data/sim128`` through random
  imaging chains (seeded), as in training; and the old simulator's image (the
  windowed monochromatic DRR, what the old model was trained on);
* **physics**: each chain family at its extreme (threeddx.simulator.physics.PRESETS);
* **bodies**: the test subjects re-simulated with extreme bodies
  (``3ddx simulate --body ...``: obese, thin, thighs touching, heavy gas, metal);
* **another renderer**: the test subjects' CTs rendered by DiffDRR 0.6.1
  (Siddon) at the standard AP orientation (three iso-centres per subject; each
  DRR is checked against ours by correlation, flips included), its line
  integrals through the standard chain's processing (needs ``EXTRAS=peer bash scripts/install.sh``; skipped,
  and said so, without it);
* **declared geometry**: images made at SDD 1150 mm (the geometry JSON says so),
  and with the table 30 mm higher or lower (the pose moves along the beam);
* **calibration marker** (issue 31): the test images made at a detector's resolution (2048 px) with a 25 mm
  steel ball beside the right trochanter at the hips' depth (``threeddx.evaluation.evaluate.MarkerTrial``):
  present and not read (does the network mind it?), and read and used (the bones placed by it);
* **on the table** (issue 31): the test subjects re-simulated lying on the table (``simulate --on-table``: the
  hips as high as each body's back carries them, not where the training data keeps every body's), with
  nothing declared, with the table's distance declared, and with the table and the body's AP thickness
  (``evaluate --declare``);
* **world frame far from the hips**: the in-distribution test images with every
  pose (and its ground truth) written in a world frame whose origin is 1.2 m from
  the hips and whose axes are turned 30 and 20 degrees, as a CT's patient
  coordinates or an atlas's frame may be (:func:`far_frame_set`). With
  ``--far-frame`` only this row is run, with the released model under this
  tree's code and under the code of ``--before-code`` (default 482b1ff, before
  issue 27), each in the simulator's frame and in the far one.

Columns per bone group: ASSD, HD95 (the literature's: the larger directed 95th
percentile) and the pooled HD95 (threeddx.metrics), false bone area (predicted mask outside the
true silhouettes, % of the true area), and the beam-aligned ASSD (after the best
shift along the beam). Then **the placement's uncertainty**: per row, the new model's beam shifts (the best
shift along the beam per bone) against its calibrated ``placement_sd_mm``: their RMS and the share within
1 and 2 SDs (68 % and 95 % when the calibration holds). Then **refusal**: the share of hip images the new model
refuses (no bone found: it should be 0) per row, and the share of non-hip images
it refuses (real chest and lower-leg radiographs of pydicom-data, noise, blank,
upside-down and sideways hip films: it should be 100 %).

The old model is read from git (``git show REV:src/threeddx/data/weights/dualface-128.pt``).
Data sets are made once under ``data/shift/`` (resumable, like every simulate).
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
TEST_SUBJECTS = "10,16,19"
BODIES = {
    "obese (fat 80 mm, panniculus)": ["fat_mm=80", "panniculus=1", "panniculus_mm=70"],
    "thin (fat 3 mm, lean muscle)": ["fat_mm=3", "muscle_lateral_mm=15", "muscle_ap_mm=10"],
    "thighs touching": ["thigh_spread_mm=-25", "thigh_radius_mm=110"],
    "heavy bowel gas": ["gas_pockets=6", "gas_radius_mm=30", "faecal_fraction=0.5"],
    "metal (zip, buttons, gonad shield)": ["zip=1", "buttons=1", "gonad_shield=1"],
}
GEOMETRIES = {
    "SDD 1150 mm (declared)": ["--sdd-mm", "1150"],
    "table +30 mm (towards the detector)": ["--beam-offset-mm", "30"],
    "table -30 mm (towards the source)": ["--beam-offset-mm", "-30"],
}
PHYSICS = ("no-grid", "low-dose", "edge-enhanced", "jpeg-8bit", "inverted", "markers-text-collimation")
GROUPS = ("pelvis", "femur")


def sh(args: list[str]) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)


def simulate(out: Path, extra: list[str], size: int = 128) -> Path:
    if not (out / "manifest.csv").exists():
        sh([sys.executable, "-m", "threeddx.cli", "simulate", "--out", str(out), "--subjects", TEST_SUBJECTS,
            "--poses", "2", "--size", str(size), "--voxel-mm", "1.5", "--workers", "1", *extra])
    return out


def simulate_old_test(out: Path, rev: str = "fef6c29") -> Path:
    """The old benchmark's test set (simulator settings version 2: one body model, windowed DRRs), from git.

    The old model's own in-distribution test images: evaluated with it, they give
    back its published figures exactly, so the new model can be compared on them.
    """
    if (out / "manifest.csv").exists():
        return out
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sh(["git", "worktree", "add", "--detach", "-f", f"{tmp}/old", rev])
        try:
            env = dict(os.environ, PYTHONPATH=f"{tmp}/old/src")
            args = [sys.executable, "-m", "threeddx.cli", "simulate", "--out", str(out), "--subjects", TEST_SUBJECTS,
                    "--poses", "6", "--size", "128", "--workers", "1"]
            print("$ PYTHONPATH=<old tree>/src " + " ".join(args), flush=True)
            subprocess.run(args, cwd=ROOT, check=True, env=env)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", f"{tmp}/old"], cwd=ROOT, check=False)
    return out


def old_checkpoint(rev: str, out: Path) -> Path:
    path = out / f"dualface-128-{rev}.pt"
    if not path.exists():
        blob = subprocess.run(["git", "show", f"{rev}:src/threeddx/data/weights/dualface-128.pt"], cwd=ROOT,
                              check=True, capture_output=True).stdout
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return path


def diffdrr_set(ct_set: Path, out: Path, size: int = 128) -> Path | None:
    """The CT set's test subjects rendered by DiffDRR at the standard AP pose (``size`` px), in the sample format."""
    if (out / "manifest.csv").exists():
        return out
    try:
        import torch
        from diffdrr.data import read
        from diffdrr.drr import DRR
    except Exception as e:  # noqa: BLE001 - the peer is optional
        print(f"(DiffDRR not runnable here: {type(e).__name__}: {e}; EXTRAS=peer bash scripts/install.sh)")
        return None
    import csv
    import shutil

    from threeddx.simulator.anatomy import BONE_PARTS, PART_LABEL_IDS
    from threeddx.geometry import standard_ap_geometry
    from threeddx.io import load_ct, load_labels, save_npz_atomic
    from threeddx.simulator.physics import process
    from threeddx.simulator.render import make_scene, render
    from threeddx.simulator.simulate import ISOCENTER_ABOVE_HIPS_MM

    rows = list(csv.DictReader(open(ct_set / "manifest.csv")))
    subjects = sorted({r["subject_id"] for r in rows})
    new_rows = []
    for subj in subjects:
        ct_path, lab_path = ct_set / "ct" / f"{subj}_ct.nii.gz", ct_set / "ct" / f"{subj}_labels.nii.gz"
        ct = load_ct(ct_path)
        labels = load_labels(lab_path, ct)
        bones = {b: [PART_LABEL_IDS[p] for p in BONE_PARTS[b]] for b in ("pelvis", "sacrum", "femur_left", "femur_right")}
        scene = make_scene(ct, labels, bones)
        subject = read(str(ct_path), orientation="AP", center_volume=False)
        drr = DRR(subject, sdd=1000.0, height=size, delx=430.0 / size, renderer="siddon")
        for view, (dx, dz) in enumerate(((0.0, 0.0), (20.0, -15.0), (-20.0, 15.0))):
            iso = np.array([dx, 0.0, ISOCENTER_ABOVE_HIPS_MM + dz])
            geom = standard_ap_geometry(iso, size=size)
            ours = render(scene, geom)
            # DiffDRR's own reader, volume frame and Siddon ray tracing; its AP view of the same iso-centre
            best = None
            for sx in (1.0, -1.0):  # DiffDRR's translation axes against our world's: found, not assumed
                for sz in (1.0, -1.0):
                    with torch.no_grad():
                        raw = drr(torch.zeros(1, 3), torch.tensor([[sx * float(iso[0]), 820.0, sz * float(iso[2])]]),
                                  parameterization="euler_angles", convention="ZXY")[0, 0].numpy()
                    for name, img in (("as is", raw), ("left-right flipped", raw[:, ::-1]), ("up-down flipped", raw[::-1])):
                        r = float(np.corrcoef(img.ravel(), ours.line_integral.ravel())[0, 1])
                        if best is None or r > best[0]:
                            best = (r, img, f"{name}, x {sx:+.0f}, z {sz:+.0f}")
            r, li, how = best
            print(f"{subj} view {view}: DiffDRR ({how}) vs 3ddx DRR, Pearson r {r:.3f}")
            if r < 0.98:
                print(f"  dropped: DiffDRR's view does not match the geometry (r {r:.3f} < 0.98)")
                continue
            li = np.ascontiguousarray(li, np.float32)
            scale = 4.0 / max(float(np.percentile(li, 90)), 1e-9)  # optical depth ~4 behind the pelvis
            image = process(np.exp(-scale * li), geom, "standard")
            path = out / "samples" / subj / f"pose_{view:02d}.npz"
            arrays = ours.arrays()
            arrays.pop("materials", None)
            arrays.pop("material_names", None)
            arrays["image"] = image
            save_npz_atomic(path, **arrays, subject=np.array(subj), split=np.array("test"), pose=np.array(view),
                            diffdrr_pearson_r=np.array(r))
            new_rows.append({**next(r for r in rows if r["subject_id"] == subj), "sample_id": f"{subj}_p{view:02d}",
                             "pose": view, "render": f"samples/{subj}/pose_{view:02d}.npz"})
        (out / "meshes").mkdir(parents=True, exist_ok=True)
        if not (out / "meshes" / subj).exists():
            shutil.copytree(ct_set / "meshes" / subj, out / "meshes" / subj)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(new_rows[0]))
        w.writeheader()
        w.writerows(new_rows)
    return out


#: The far world frame of the row "world frame far from the hips" (benchmarks/ssm_bounds.py's): 1.2 m from the
#: hips, turned 30 deg about x and 20 deg about z.
FAR_SHIFT_MM = (600.0, -900.0, 500.0)


def far_frame() -> np.ndarray:
    from threeddx.geometry import rotation_matrix

    m = np.eye(4)
    m[:3, :3] = rotation_matrix((0, 0, 1), np.radians(20)) @ rotation_matrix((1, 0, 0), np.radians(30))
    m[:3, 3] = FAR_SHIFT_MM
    return m


def far_frame_set(data: Path, out: Path, split: str = "test") -> Path:
    """``data``'s ``split`` with every pose and ground-truth mesh written in the far world frame (:func:`far_frame`):
    the same images and the same anatomy, only the frame they are written in differs."""
    if (out / "manifest.csv").exists():
        return out
    import csv

    import trimesh

    from threeddx.geometry import XrayGeometry
    from threeddx.io import save_npz_atomic

    m = far_frame()
    rows = [r for r in csv.DictReader(open(data / "manifest.csv")) if r["split"] == split]
    for r in rows:
        with np.load(data / r["render"]) as z:
            arrays = {k: z[k] for k in z.files}
        geo = XrayGeometry.from_json(str(arrays["geometry"]))
        arrays["geometry"] = np.array(geo.with_pose(geo.world_to_source @ np.linalg.inv(m)).to_json())
        save_npz_atomic(out / r["render"], **arrays)
        for ply in sorted((data / r["mesh_dir"]).glob("*.ply")):
            target = out / r["mesh_dir"] / ply.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                trimesh.load(ply, process=False).apply_transform(m).export(target)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def run_eval_with_code(name: str, data: Path, rev: str, out: Path, chain: str = "random") -> dict:
    """The released model evaluated by the code of git revision ``rev`` (a worktree, a fresh process), cached."""
    import os
    import tempfile

    path = out / "json" / f"{name}__code-{rev}.json".replace(" ", "_")
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sh(["git", "worktree", "add", "--detach", "-f", f"{tmp}/code", rev])
        try:
            env = dict(os.environ, PYTHONPATH=f"{tmp}/code/src")
            args = [sys.executable, "-m", "threeddx.cli", "evaluate", "--data", str(data), "--split", "test",
                    "--chain", chain, "--seed", "0", "--out", f"{tmp}/eval"]
            print("$ PYTHONPATH=<tree at " + rev + ">/src " + " ".join(args), flush=True)
            t = time.perf_counter()
            subprocess.run(args, cwd=ROOT, check=True, env=env)
            s = json.loads(Path(f"{tmp}/eval/results.json").read_text())
            s["seconds"] = time.perf_counter() - t
            import csv

            rows = list(csv.DictReader(open(f"{tmp}/eval/results.csv")))  # the old summary has no hd95_max
            for g, members in (("pelvis", ["pelvis"]), ("femur", ["femur_left", "femur_right"])):
                v = [float(r["hd95"]) for r in rows if r["bone"] in members and r["status"] == "ok"]
                s["bones"][g]["hd95_max"] = max(v) if v else None
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", f"{tmp}/code"], cwd=ROOT, check=False)
    path.write_text(json.dumps(s))
    return s


def far_frame_table(data: Path, out: Path, before: str) -> str:
    """The row "world frame far from the hips": the released model under the code before and after issue 27."""
    far = far_frame_set(data, ROOT / "data" / "shift" / f"far-frame-{data.name}")
    cells = {}
    for frame, d in (("simulator's frame", data), ("far frame", far)):
        cells[(frame, "before")] = run_eval_with_code(f"far-frame {frame} {data.name}", d, before, out)
        cells[(frame, "now")] = run_eval(f"far-frame {frame} {data.name}", d, "dualface", out, "random")
    lines = [f"## World frame far from the hips: the release under the code before ({before}) and now", "",
             f"`python benchmarks/robustness.py --far-frame --data {data}`; {platform.machine()}, "
             f"{time.strftime('%Y-%m-%d')}; the test split of {data}, random chains (seed 0); the far frame: origin "
             "1.2 m from the hips, axes turned 30 deg about x and 20 deg about z.", "",
             "| frame | code | images | pelvis ASSD | pelvis HD95 | pelvis max HD95 | femur ASSD | femur HD95 | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (frame, code), r in cells.items():
        p, f = r["bones"]["pelvis"], r["bones"]["femur"]
        lines.append(f"| {frame} | {code} | {r['images']} | {fmt(p['assd_mean'])} | {fmt(p['hd95_mean'])} | "
                     f"{fmt(p.get('hd95_max'))} | {fmt(f['assd_mean'])} | {fmt(f['hd95_mean'])} | {r.get('seconds', 0):.0f} |")
    return "\n".join(lines) + "\n"


def _result_path(name: str, ck: str, out: Path) -> Path:
    """Where one row's result for one model is kept (OUT/json/ROW__MODEL.json)."""
    return out / "json" / (f"{name}__{Path(str(ck)).stem}".replace(" ", "_").replace("/", "-") + ".json")


def run_eval(name: str, data: Path, ck: str, out: Path, chain, split: str = "test", workers: int = 1,
             extra: dict | None = None) -> dict:
    """One row for one model (``extra``: more of evaluate's keywords, e.g. ``marker``, ``declare``), cached."""
    from threeddx.evaluation.evaluate import evaluate

    path = _result_path(name, ck, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return json.loads(path.read_text())
    d = out / "eval" / path.stem
    t = time.perf_counter()
    s = evaluate(data, d, ck, split=split, progress=False, chain=chain, workers=workers, **(extra or {}))
    s["seconds"] = time.perf_counter() - t
    path.write_text(json.dumps(s))
    return s


#: What :func:`cached_eval` gives for a row a model was not evaluated on: every figure n/a.
_NOT_RUN = {"images": None, "images_refused_pct": None,
            "bones": {b: {"assd_mean": None, "hd95_mean": None, "hd95_pooled_mean": None, "false_area_pct_mean": None,
                          "assd_beam_aligned_mean": None, "missing": 0, "refused_pct": None}
                      for b in ("pelvis", "femur_left", "femur_right", "femur")}}


def cached_eval(name: str, ck: str, out: Path) -> dict:
    """A row's stored result (``run_eval``'s file), or all n/a when it was not evaluated."""
    path = _result_path(name, ck, out)
    return json.loads(path.read_text()) if path.exists() else _NOT_RUN


def refusal_images(data: Path) -> dict[str, list[tuple[np.ndarray, "XrayGeometry"]]]:  # noqa: F821
    """Non-hip images and their (declared) geometry: real radiographs, noise, blank, wrongly loaded hip films."""
    import importlib.util

    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.negatives import noise_image
    from threeddx.simulator.physics import radiograph, sample_materials
    from threeddx.geometry import standard_ap_geometry
    from threeddx.simulator.simulate import ISOCENTER_ABOVE_HIPS_MM

    nominal = standard_ap_geometry((0.0, 0.0, ISOCENTER_ABOVE_HIPS_MM), size=128)
    out: dict[str, list] = {}
    spec = importlib.util.find_spec("data_store")
    if spec is not None:
        folder = Path(spec.submodule_search_locations[0]) / "data"
        for label, name in (("real chest PA (pydicom-data RG1)", "RG1"), ("real lower-leg AP (pydicom-data RG3)", "RG3")):
            for enc in ("UNCR", "UNCI"):
                p = folder / f"{name}_{enc}.dcm"
                if p.exists():
                    out.setdefault(label, []).append(_read_at_nominal(p, nominal))
    rng = np.random.default_rng(0)
    out["noise (white, smooth, gradient)"] = [(noise_image((128, 128), np.random.default_rng([1, k])), nominal)
                                               for k in range(12)]
    out["blank (constant + 1 % noise)"] = [(0.5 + 0.01 * rng.standard_normal((128, 128)).astype(np.float32), nominal)
                                           for _ in range(3)]
    rows = [r for r in read_manifest(data) if r["split"] == "test"]
    ups, side = [], []
    for k, r in enumerate(rows):
        with np.load(data / r["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            mats = sample_materials(z)
        img = radiograph(mats, geo, "standard")
        ups.append((img[::-1].copy(), geo))
        side.append((np.rot90(img).copy(), geo))
    out["hip film upside down"] = ups
    out["hip film turned 90 degrees"] = side
    return out


def _read_at_nominal(path: Path, nominal):
    """A real radiograph read as predict reads it, declared at the nominal geometry (its own tags are invalid)."""
    from threeddx.geometry import XrayGeometry
    from threeddx.apps.predict import read_radiograph

    rows, cols = _shape(path)
    spacing = 430.0 / max(rows, cols)
    geo = XrayGeometry(nominal.sdd, (rows, cols), (spacing, spacing), (cols / 2.0, rows / 2.0), nominal.world_to_source)
    img, geo, _ = read_radiograph(path, geo, nominal)
    return img, geo


def _shape(path: Path) -> tuple[int, int]:
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


def refusal_rate(ck: str, images: list) -> tuple[float, list[float]]:
    from threeddx.inference.predictor import Predictor

    pred = Predictor(ck)
    refused, confs = 0, []
    for img, geo in images:
        checks = pred.infer(img, geo).checks
        refused += not any(c["found"] for c in checks.values())
        confs.append(max(c["confidence"] for c in checks.values()))
    return 100.0 * refused / max(len(images), 1), confs


def _mean(values: list) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def fmt(v, nd=2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


Row = tuple  # (label, family, data folder, chain, evaluate's extra keywords)


def shift_folder(size: int) -> Path:
    """Where the shifted data sets of one image size are kept (128 px: ``data/shift``, as before sizes)."""
    return ROOT / "data" / ("shift" if size == 128 else f"shift-{size}")


def shift_rows(data: Path, only: list[str] | None = None, size: int = 128) -> list[Row]:
    """(label, family, data folder, chain, extra evaluate keywords) per row; makes the shifted data sets (at
    ``size`` px, under :func:`shift_folder`) on first use. ``only``: the rows whose label holds one of these
    strings (and the first, the reference). The old test set stays the old simulator's 128 px images."""
    from threeddx.evaluation.evaluate import MarkerTrial

    shift = shift_folder(size)
    wanted = lambda label: not only or any(o in label for o in only)  # noqa: E731
    plan: list[tuple[str, str, object, object, dict]] = [
        ("in-distribution (random chains)", "in-distribution", lambda: data, "random", {}),
        ("old simulator image (windowed DRR)", "in-distribution", lambda: data, None, {}),
        ("old test set (old bodies, windowed DRR)", "in-distribution", lambda: simulate_old_test(shift_folder(128) / "old-test"),
         None, {}),
        ("standard chain", "physics", lambda: data, "standard", {}),
    ]
    plan += [(f"chain: {p}", "physics", lambda: data, p, {}) for p in PHYSICS]
    plan += [(f"body: {k}", "body",
              lambda k=k, v=v: simulate(shift / ("body-" + k.split()[0]), ["--body", *v], size), "standard", {})
             for k, v in BODIES.items()]
    plan.append(("renderer: DiffDRR (Siddon), standard processing", "renderer",
                 lambda: diffdrr_set(simulate(shift / "ct", ["--write-ct"], size), shift / "renderer-diffdrr", size),
                 None, {}))
    plan += [(f"geometry: {k}", "geometry", lambda v=v: simulate(shift / ("geom-" + v[1].replace("-", "m")), v, size),
              "standard", {}) for k, v in GEOMETRIES.items()]
    plan.append(("geometry: world frame far from the hips (1.2 m, turned)", "geometry",
                 lambda: far_frame_set(data, shift / f"far-frame-{data.name}"), "random", {}))
    plan += [("marker: 25 mm ball present, not read", "marker", lambda: data, "random",
              {"marker": MarkerTrial(use=False)}),
             ("marker: 25 mm ball read and used", "marker", lambda: data, "random", {"marker": MarkerTrial(use=True)})]
    on_table = lambda: simulate(shift / "on-table", ["--on-table"], size)  # noqa: E731
    plan += [("on the table: nothing declared", "geometry", on_table, "random", {}),
             ("on the table: table declared", "geometry", on_table, "random", {"declare": "table"}),
             ("on the table: table and body thickness declared", "geometry", on_table, "random",
              {"declare": "table+thickness"})]
    rows = []
    for k, (label, family, make, chain, extra) in enumerate(plan):
        if k == 0 or wanted(label):
            folder = make()
            if folder is not None:
                rows.append((label, family, folder, chain, extra))
    return rows


def isocenter_basis(label: str, extra: dict) -> str:
    """What a row's iso-centre rests on, as predict would say it (:data:`threeddx.geometry.ISOCENTER_SD_MM`): the
    simulated samples state the distance their hips lie at (+-10 mm of pose), except on the table."""
    if extra.get("declare"):
        return extra["declare"]
    if extra.get("marker") is not None and extra["marker"].use:
        return "marker"
    return "assumed" if label.startswith("on the table") else "declared"


def placement_calibration(rows: list[Row], ck: str, out: Path) -> list[str]:
    """The new model's beam shifts per row against the total SD predict reports, as table lines (module doc)."""
    import csv
    import math

    from threeddx.geometry import ISOCENTER_SD_MM
    from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint

    sd = load_checkpoint(resolve_checkpoint(ck)).get("placement_sd_mm") or {}
    if not sd:
        return ["", f"({ck} carries no placement_sd_mm: no calibration table)"]
    lines = ["## The placement's uncertainty", "",
             f"The new model's best shift along the beam per bone against the 1-SD predict reports "
             f"(`placement_total_sd_mm`: the network's calibrated `placement_sd_mm`, "
             + ", ".join(f"{b} {v:g} mm" for b, v in sd.items()) + ", and the iso-centre's own, "
             "`threeddx.geometry.ISOCENTER_SD_MM` of what it rests on, in quadrature); 68 % and 95 % when the "
             "calibration holds.", "",
             "| shift | iso-centre from (SD mm) | bones | RMS shift (mm) | within 1 SD | within 2 SD |",
             "|---|---|---|---|---|---|"]
    for label, _, _, _, extra in rows:
        basis = isocenter_basis(label, extra)
        iso = ISOCENTER_SD_MM[basis]
        path = out / "eval" / _result_path(label, ck, out).stem / "results.csv"
        if not path.exists():
            continue
        shift, scale = [], []
        for r in csv.DictReader(open(path, newline="")):
            v = float(r.get("beam_shift_mm") or "nan")
            if r["status"] == "ok" and math.isfinite(v) and r["bone"] in sd:
                shift.append(v)
                scale.append(math.hypot(sd[r["bone"]], iso))
        if shift:
            ratio = np.abs(np.array(shift)) / np.array(scale)
            lines.append(f"| {label} | {basis} ({iso:g}) | {len(shift)} | {np.sqrt(np.mean(np.square(shift))):.2f} | "
                         f"{100 * np.mean(ratio <= 1):.0f} % | {100 * np.mean(ratio <= 2):.0f} % |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="fef6c29", help="git revision holding the old released model")
    ap.add_argument("--new", default="dualface", help="the new model (a checkpoint or a released name)")
    ap.add_argument("--data", default=str(ROOT / "data" / "sim128"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "robustness"))
    ap.add_argument("--models", nargs="+", default=["old", "new"], choices=["old", "new"],
                    help="evaluate only these (the table needs both; results are cached in OUT/json)")
    ap.add_argument("--workers", type=int, default=1,
                    help="images evaluated in parallel by a local Dask cluster (the same tables as one process)")
    ap.add_argument("--table", action="store_true",
                    help="print the table from what OUT/json holds, a model's missing rows as n/a (no evaluation)")
    ap.add_argument("--far-frame", action="store_true",
                    help="only the row 'world frame far from the hips', under this tree's code and --before-code's")
    ap.add_argument("--before-code", default="482b1ff", help="the code revision before issue 27's fix")
    ap.add_argument("--rows", nargs="+", metavar="TEXT",
                    help="only the rows whose label holds one of these (and the in-distribution row), e.g. marker "
                    "'on the table'")
    ap.add_argument("--size", type=int, default=128,
                    help="image size (px) of the shifted data sets simulated for the rows (kept under data/shift-SIZE)")
    ap.add_argument("--prepare", action="store_true", help="make the rows' data sets and stop (no evaluation)")
    a = ap.parse_args()
    out, data = Path(a.out), Path(a.data)
    if a.far_frame:
        text = far_frame_table(data, out, a.before_code)
        (out / "table-far-frame.md").write_text(text)
        print(text)
        return 0
    old = str(old_checkpoint(a.old_rev, out))
    models = {"old": old, "new": a.new}
    rows = shift_rows(data, a.rows, a.size)
    if a.prepare:
        print("\n".join(f"{label}: {folder}" for label, _, folder, *_ in rows))
        return 0
    results = {}
    for label, family, d, chain, extra in rows:
        for m, ck in models.items():
            if m in a.models and not a.table:
                results[(label, m)] = run_eval(label, d, ck, out, chain, workers=a.workers, extra=extra)
                print(f"{label} [{m}]: pelvis {fmt(results[(label, m)]['bones']['pelvis']['assd_mean'])} mm", flush=True)
            elif a.table:
                results[(label, m)] = cached_eval(label, ck, out)
    if set(a.models) != set(models) and not a.table:
        return 0
    import torch

    lines = [f"# Robustness: old ({a.old_rev}) and new dual-face model ({a.new}), shifted sets at {a.size} px",
             "", f"`python benchmarks/robustness.py {' '.join(sys.argv[1:])}`; {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}; test subjects 10, 16, 19.", ""]
    ref = {g: results[(rows[0][0], "new")]["bones"][g]["assd_mean"] for g in GROUPS}
    for g in GROUPS:
        lines += [f"## {g}{' (left and right pooled)' if g == 'femur' else ''}", "",
                  "| shift | images | ASSD old | ASSD new | HD95 old | HD95 new | HD95 pooled old | HD95 pooled new "
                  "| false area % old | false area % new | beam-aligned ASSD old | beam-aligned ASSD new "
                  "| new / in-distribution ASSD |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, *_ in rows:
            o, n = results[(label, "old")], results[(label, "new")]
            bo, bn = o["bones"][g], n["bones"][g]
            ratio = None if bn["assd_mean"] is None or not ref[g] else bn["assd_mean"] / ref[g]
            lines.append(
                f"| {label} | {n['images']} | {fmt(bo['assd_mean'])} | {fmt(bn['assd_mean'])} | {fmt(bo['hd95_mean'])} | "
                f"{fmt(bn['hd95_mean'])} | {fmt(bo.get('hd95_pooled_mean'))} | {fmt(bn.get('hd95_pooled_mean'))} | "
                f"{fmt(bo['false_area_pct_mean'], 1)} | {fmt(bn['false_area_pct_mean'], 1)} | "
                f"{fmt(bo['assd_beam_aligned_mean'])} | {fmt(bn['assd_beam_aligned_mean'])} | {fmt(ratio)}x |")
            if bn["missing"] or bo["missing"]:
                lines[-1] += f" (missing: old {bo['missing']}, new {bn['missing']})"
        lines.append("")
    lines += placement_calibration(rows, a.new, out) + [""]
    # ---- refusal
    lines += ["## Refusal", "", "Hip images (every row above): share of images where the model finds no bone "
              "(refused) and bones judged not found (goal 0).", "",
              "| shift | images refused, new | bones not found, new | bones not found, old |", "|---|---|---|---|"]
    for label, *_ in rows:
        n, o = results[(label, "new")]["bones"], results[(label, "old")]["bones"]
        lines.append(f"| {label} | {fmt(results[(label, 'new')].get('images_refused_pct'), 1)} % | "
                     f"{fmt(_mean([n[b]['refused_pct'] for b in ('pelvis', 'femur_left', 'femur_right')]), 1)} % | "
                     f"{fmt(_mean([o[b]['refused_pct'] for b in ('pelvis', 'femur_left', 'femur_right')]), 1)} % |")
    lines += ["", "Images without hip anatomy: share refused (goal 100 %), and the highest bone confidence seen.", "",
              "| images | n | refused, old | refused, new | max confidence, new |", "|---|---|---|---|---|"]
    for label, imgs in refusal_images(data).items():
        ro, _ = refusal_rate(old, imgs)
        rn, conf = refusal_rate(a.new, imgs)
        lines.append(f"| {label} | {len(imgs)} | {ro:.0f} % | {rn:.0f} % | {max(conf):.2f} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
