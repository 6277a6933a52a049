"""CT collections: a study's CTs and label maps -> training samples in the simulator's format.

``3ddx simulate --cts TABLE.csv`` or ``--ct-dir DIR`` (:func:`simulate_collection`).

**Which CTs.** A table (CSV) has the columns ``case_id``, ``ct``, ``labels``
and optionally ``split`` (train, val or test); relative paths are relative to
the table's folder. A folder is searched by this rule, case by case, sorted by
case id:

* ``DIR/CASE/`` holding a CT (``ct.nii.gz``, ``ct.nii``, ``ct.nrrd``, ``ct.mha``
  or a DICOM series folder ``ct/``) and a label map (``labels.*`` or
  TotalSegmentator's ``segmentations.*``, same suffixes): the case is ``CASE``;
* ``DIR/CASE_ct.nii.gz`` beside ``DIR/CASE_labels.nii.gz`` (any of the
  suffixes above): the case is ``CASE``.

Cases without a split are split by case (never by image: all poses of a case
share its split), seeded by ``split_seed``: 70 % train, 15 % val, 15 % test
of a seeded permutation of the case ids (at least one val and one test case
from three cases up).

**Per case** (:func:`run_case`): the CT (HU) and labels are read (SimpleITK:
NIfTI, NRRD, MHA or a DICOM series; the labels must be on the CT's grid); the
bones are chosen as in ``3ddx render --bones`` (TotalSegmentator names, groups
such as ``pelvis`` or ``spine``, ``NAME=ID+ID``, ``--label-table``); each
bone's ground-truth mesh is made from its labels (:func:`label_mesh`: marching
cubes at the 0.5 level of the binary mask, then Taubin smoothing, which keeps
the topology and the volume; world LPS mm, watertight); ``poses`` seeded views
are drawn around the AP preset centred on the chosen bones
(:func:`threeddx.geometry.sample_pose`), and rendered with the material line
integrals (HU split into bone, soft tissue and metal by
:func:`threeddx.simulator.physics.decompose_hu`, documented in docs/data.md), so every
training feature that reads materials (the randomised imaging chains) works on
real CTs too. Files: ``samples/CASE/pose_PP.npz`` (the render.npz format plus
``subject``, ``split``, ``pose``), ``samples/CASE/pose_00.png`` (a preview),
``meshes/CASE/BONE.ply``; ``manifest.csv`` as for synthetic data.

**Problems.** A case that cannot be used (unreadable, labels on another grid,
a bone with no voxel, a bone outside one of the views) is skipped with one line on
stderr and a row in ``problems.csv`` (case id, paths, the problem); the run
goes on and its summary counts them. A case's files are written only once all
of its views are rendered, each file atomically, so a killed run leaves whole
files; rerunning the command finishes the rest (problem cases are tried again:
a fixed file is picked up). Deterministic: a case's poses depend only on the
seed and its id.
"""
from __future__ import annotations

import csv
import io as _io
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from threeddx.bones import DEFAULT_BONES
from threeddx.errors import InputError
from threeddx.io import atomic_path, save_npz_atomic
from threeddx.simulator.simulate import ViewSettings

#: CT and label file names tried in a case folder (first found wins); a folder ``ct/`` is a DICOM series.
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
LABEL_STEMS = ("labels", "segmentations")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
COLLECTION_VERSION = 1
PROBLEM_COLUMNS = ("case_id", "ct", "labels", "problem")


@dataclass(frozen=True)
class Case:
    """One CT of a collection: its id, CT and label paths, and its split (None: assigned by seed)."""

    case_id: str
    ct: str
    labels: str
    split: str | None = None


# ------------------------------------------------------------------ finding cases
def read_table(path: str | Path) -> list[Case]:
    """Cases from a CSV with columns case_id, ct, labels and optionally split."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except OSError as e:
        raise InputError(f"cannot read --cts {path}: {e.strerror}") from None
    if not rows or not {"case_id", "ct", "labels"} <= set(rows[0]):
        raise InputError(f"{path}: a case table needs the columns case_id, ct, labels (and optionally split)")
    cases, seen = [], set()
    for n, r in enumerate(rows, start=2):
        cid = (r["case_id"] or "").strip()
        if not cid or "/" in cid or cid.startswith("."):
            raise InputError(f"{path}:{n}: case_id {cid!r} must be a non-empty name without '/'")
        if cid in seen:
            raise InputError(f"{path}:{n}: case_id {cid!r} appears twice")
        seen.add(cid)
        split = (r.get("split") or "").strip() or None
        if split is not None and split not in SPLIT_FRACTIONS:
            raise InputError(f"{path}:{n}: split {split!r} must be train, val or test")
        resolve = lambda p: str((path.parent / p.strip()).resolve())  # noqa: E731
        cases.append(Case(cid, resolve(r["ct"]), resolve(r["labels"]), split))
    return cases


def _first(folder: Path, stems: Sequence[str], dicom_dir: str | None = None) -> Path | None:
    for stem in stems:
        for suffix in SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    if dicom_dir and (folder / dicom_dir).is_dir():
        return folder / dicom_dir
    return None


def find_cases(folder: str | Path) -> list[Case]:
    """Cases in a folder by the naming rule of the module doc."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--ct-dir {folder} is not a folder")
    cases: dict[str, Case] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        ct, labels = _first(sub, ("ct",), dicom_dir="ct"), _first(sub, LABEL_STEMS)
        if ct and labels:
            cases[sub.name] = Case(sub.name, str(ct.resolve()), str(labels.resolve()))
    for path in sorted(folder.iterdir()):
        for suffix in SUFFIXES:
            if path.is_file() and path.name.endswith(f"_ct{suffix}"):
                cid = path.name[: -len(f"_ct{suffix}")]
                labels = next((folder / f"{cid}_{s}{x}" for s in LABEL_STEMS for x in SUFFIXES
                               if (folder / f"{cid}_{s}{x}").is_file()), None)
                if labels is not None and cid not in cases:
                    cases[cid] = Case(cid, str(path.resolve()), str(labels.resolve()))
    if not cases:
        raise InputError(f"--ct-dir {folder}: no case found (CASE/ct.nii.gz + CASE/labels.nii.gz, "
                         "or CASE_ct.nii.gz + CASE_labels.nii.gz; see 3ddx simulate --help)")
    return [cases[k] for k in sorted(cases)]


def assign_splits(cases: Sequence[Case], seed: int) -> list[Case]:
    """Give every case without a split one, by case, from a seeded permutation (module doc)."""
    free = sorted(c.case_id for c in cases if c.split is None)
    order = [free[k] for k in np.random.default_rng(seed).permutation(len(free))]
    n = len(order)
    n_val = n_test = int(round(SPLIT_FRACTIONS["val"] * n))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    split = {cid: "val" for cid in order[:n_val]} | {cid: "test" for cid in order[n_val:n_val + n_test]}
    return [c if c.split else replace(c, split=split.get(c.case_id, "train")) for c in cases]


# ------------------------------------------------------------------ settings
@dataclass(kw_only=True)
class CollectionSettings(ViewSettings):
    """Everything that determines a dataset made from a CT collection (saved as settings.json): the views'
    settings (:class:`threeddx.simulator.simulate.ViewSettings`) and the cases, bones and labels."""

    source: str  # the table or folder, resolved
    cases: list[dict] = field(default_factory=list)  # the cases as found, with their splits
    bones: list[str] = field(default_factory=lambda: list(DEFAULT_BONES))
    label_table: str | None = None
    smoothing_iterations: int = 3  # Taubin passes: the voxel steps softened, the mesh within ~0.2 mm (median) of the rendered faces
    kind: str = "ct-collection"
    version: int = COLLECTION_VERSION

    def check(self) -> None:
        self.check_views()

    def case_list(self) -> list[Case]:
        return [Case(**c) for c in self.cases]


def collection_settings(cts: str | Path | None, ct_dir: str | Path | None, **kw) -> CollectionSettings:
    """Settings for ``--cts TABLE`` or ``--ct-dir DIR``, the cases found and split, the bones checked."""
    if (cts is None) == (ct_dir is None):
        raise InputError("give one of --cts TABLE.csv and --ct-dir DIR")
    cases = read_table(cts) if cts is not None else find_cases(ct_dir)
    cases = assign_splits(cases, kw.get("split_seed", 0))
    if kw.get("label_table"):  # a Dask worker may run in another folder
        kw["label_table"] = str(Path(kw["label_table"]).resolve())
    settings = CollectionSettings(source=str(Path(cts or ct_dir).resolve()), cases=[asdict(c) for c in cases], **kw)
    settings.check()
    bone_labels(settings)  # a mistyped bone fails now, not per case
    return settings


# ------------------------------------------------------------------ one case
def label_mesh(mask: np.ndarray, index_to_world: np.ndarray, iterations: int = 3):
    """A watertight surface (world mm) of a (z, y, x) binary mask: marching cubes at 0.5, Taubin smoothing.

    Taubin's lambda/mu filter (lambda 0.5, mu -0.53) smooths the voxel steps
    without shrinking the surface and never changes the connectivity, so the
    mesh stays closed and keeps its genus.
    """
    import trimesh
    from skimage.measure import marching_cubes

    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    ijk = verts[:, ::-1] - 1.0  # (z, y, x) array order -> (i, j, k) index order, padding removed
    world = ijk @ index_to_world[:3, :3].T + index_to_world[:3, 3]
    mesh = trimesh.Trimesh(world, faces[:, ::-1], process=True)
    if iterations:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=iterations)
    if mesh.volume < 0:  # a grid with a mirrored direction turns the faces inside out
        mesh.invert()
    return mesh


def _case_seed(settings: CollectionSettings, case_id: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([settings.seed, 2, zlib.crc32(case_id.encode())])


def sample_path(out: Path, case_id: str, pose: int) -> Path:
    return out / "samples" / case_id / f"pose_{pose:02d}.npz"


def case_complete(out: Path, settings: CollectionSettings, case: Case) -> bool:
    paths = [sample_path(out, case.case_id, p) for p in range(settings.poses)]
    paths += [out / "meshes" / case.case_id / f"{b}.ply" for b in bone_labels(settings)]
    return all(p.exists() for p in paths)


def bone_labels(settings: CollectionSettings) -> dict[str, tuple[int, ...]]:
    """``--bones`` as label ids (:func:`threeddx.io.parse_bones`), read once per process and setting."""
    return dict(_bone_labels(tuple(settings.bones), settings.label_table))


@lru_cache(maxsize=8)
def _bone_labels(bones: tuple[str, ...], label_table: str | None) -> tuple:
    from threeddx.io import load_label_table, parse_bones

    return tuple(parse_bones(list(bones), load_label_table(label_table)).items())


def run_case(settings: CollectionSettings, case: Case, out: Path) -> int:
    """Simulate one case's missing files; returns the samples written. Raises InputError for a case
    that cannot be used (nothing of it is written then)."""
    from threeddx.geometry import ISOCENTER_ABOVE_DETECTOR_MM, sample_pose, standard_ap_geometry
    from threeddx.io import check_bones_present, load_ct, load_labels
    from threeddx.simulator.render import bones_center_world, make_scene, render
    from threeddx.apps.viz import save_preview

    out = Path(out)
    if case_complete(out, settings, case):
        return 0
    bones = bone_labels(settings)
    ct = load_ct(case.ct)
    labels = load_labels(case.labels, ct)
    check_bones_present(bones, labels)
    scene = make_scene(ct, labels, bones)
    del labels
    # each bone's mesh from its crop of the labels (marching cubes scans the crop, not the CT)
    meshes = {b.name: label_mesh(b.occupancy, scene.bone_index_to_world(b), settings.smoothing_iterations)
              for b in scene.bones}
    iso = bones_center_world(scene)
    s2i = settings.sdd_mm - ISOCENTER_ABOVE_DETECTOR_MM
    seeds = _case_seed(settings, case.case_id).spawn(settings.poses)
    results = []
    for p in range(settings.poses):
        geom = standard_ap_geometry(iso, size=settings.size, sdd=settings.sdd_mm, source_to_isocenter=s2i).with_pose(
            sample_pose(iso, np.random.default_rng(seeds[p]), source_to_isocenter=s2i))
        res = render(scene, geom, progress=False, faces=settings.faces)
        empty = [b for b, m in zip(res.bones, res.masks) if not m.any()]
        if empty:
            raise InputError(f"{case.case_id}: bone(s) {', '.join(empty)} outside the field of view in pose {p}")
        results.append(res)
    for name, mesh in meshes.items():
        path = out / "meshes" / case.case_id / f"{name}.ply"
        if not path.exists():
            with atomic_path(path) as tmp:
                mesh.export(tmp, file_type="ply")
    written = 0
    for p, res in enumerate(results):
        path = sample_path(out, case.case_id, p)
        if path.exists():
            continue
        if p == 0:
            save_preview(path.with_suffix(".png"), res.image, res.masks, res.depth_front, res.depth_back, res.bones,
                         title=f"{case.case_id} ({case.split}), pose {p}")
        save_npz_atomic(path, **res.arrays(), subject=np.array(case.case_id), split=np.array(case.split),
                        pose=np.array(p))
        written += 1
    return written


def try_case(settings: CollectionSettings, case: Case, out: Path) -> tuple[str, int, str | None]:
    """:func:`run_case`, a problem caught: (case id, samples written, the problem or None). One task."""
    try:
        return case.case_id, run_case(settings, case, out), None
    except InputError as e:
        return case.case_id, 0, str(e)
    except (OSError, RuntimeError, ValueError, MemoryError) as e:  # a file no reader understands, and its kin
        return case.case_id, 0, f"{type(e).__name__}: {str(e)[:200]}"


# ------------------------------------------------------------------ the run
def write_tables(out: Path, settings: CollectionSettings, done: Sequence[Case], problems: dict[str, str]) -> Path:
    """manifest.csv (the usable cases' samples) and problems.csv (the skipped cases), atomically."""
    from threeddx.simulator.simulate import MANIFEST_COLUMNS

    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for k, case in enumerate(done):
        for p in range(settings.poses):
            w.writerow([f"{case.case_id}_p{p:02d}", case.case_id, "ct", k, case.split, p, settings.size,
                        sample_path(out, case.case_id, p).relative_to(out).as_posix(),
                        (Path("meshes") / case.case_id).as_posix()])
    with atomic_path(out / "manifest.csv") as tmp:
        tmp.write_text(buf.getvalue())
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PROBLEM_COLUMNS)
    by_id = {c.case_id: c for c in settings.case_list()}
    for cid in sorted(problems):
        w.writerow([cid, by_id[cid].ct, by_id[cid].labels, problems[cid]])
    with atomic_path(out / "problems.csv") as tmp:
        tmp.write_text(buf.getvalue())
    return out / "manifest.csv"


def simulate_collection(settings: CollectionSettings, out: str | Path, workers: int = 1, scheduler: str | None = None,
                        progress: bool = True) -> Path:
    """Simulate (or resume) every case of a collection into ``out``; returns the manifest's path.

    ``workers`` > 1 runs a local Dask cluster, ``scheduler`` submits to a running one
    (:func:`threeddx.cluster.map_tasks`); every case is one task.
    """
    from threeddx.cluster import map_tasks
    from threeddx.simulator.simulate import _remove_stale_temporaries, open_dataset_folder

    out = open_dataset_folder(out, settings)
    cases = settings.case_list()
    t0 = time.perf_counter()
    todo = [c for c in cases if not case_complete(out, settings, c)]
    problems: dict[str, str] = {}
    for cid, _, problem in map_tasks(try_case, [(settings, c, out) for c in todo], workers=workers,
                                     scheduler=scheduler, desc="simulate", unit="case", progress=progress):
        if problem:
            problems[cid] = problem
            print(f"3ddx: skipped case {cid}: {problem}", file=sys.stderr)
    _remove_stale_temporaries(out)
    done = [c for c in cases if c.case_id not in problems]
    manifest = write_tables(out, settings, done, problems)
    if progress:
        n = len(done) * settings.poses
        skipped = f"; {len(problems)} case(s) skipped, see {out / 'problems.csv'}" if problems else ""
        print(f"{n} samples from {len(done)} of {len(cases)} cases in {out} ({time.perf_counter() - t0:.0f} s)"
              f"{skipped}; manifest {manifest}")
    return manifest

