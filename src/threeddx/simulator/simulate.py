"""The training-set simulator: real bone shapes -> synthetic CTs -> rendered samples.

For every subject (an LLP26 subject 0-21, or a random shape from a PCA built on
the training subjects only) the simulator articulates the hips (seeded), builds
a synthetic CT around the bones (seeded tissues), and renders ``poses`` seeded
views around the standard AP hip preset. Output folder::

    DIR/settings.json                 the settings; a run with other settings is refused
    DIR/manifest.csv                  one row per sample (written last)
    DIR/samples/SUBJECT/pose_PP.npz   render.npz format (+ subject, split, pose)
    DIR/samples/SUBJECT/pose_00.png   a preview of each subject's first pose
    DIR/meshes/SUBJECT/BONE.ply       ground-truth meshes, world (LPS) mm
    DIR/ct/SUBJECT_{ct,labels}.nii.gz with --write-ct

Resumable: every file is written to a temporary name and renamed, so a file
that exists is complete; a restarted run skips complete samples and subjects
and rewrites nothing. Deterministic: a subject's shape, tissues and poses
depend only on the seed and the subject, not on the worker or the order.

The iso-centre of the preset is 30 mm above the midpoint of the hip-joint
centres, which puts the iliac crests and the proximal femurs in the 430 mm
detector (352 mm wide at the iso-centre).
"""
from __future__ import annotations

import csv
import io as _io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from threeddx.simulator.anatomy import (
    BONE_PARTS,
    PART_LABEL_IDS,
    PARTS,
    ShapePCA,
    articulate,
    bone_meshes,
    load_shape,
    shape_cached,
    subject_split,
)
from threeddx.errors import InputError
from threeddx.io import atomic_path, save_npz_atomic

ISOCENTER_ABOVE_HIPS_MM = 30.0
#: ``--on-table``: the table top's height above the detector (mm), so that the median body's hips lie where the
#: default puts every body's (:data:`threeddx.geometry.ISOCENTER_ABOVE_DETECTOR_MM` above the detector).
TABLE_ABOVE_DETECTOR_MM = 35.0
SETTINGS_VERSION = 4  # 2: poses shift +-10 mm along the beam (was +-40); 3: varied bodies, material line integrals;
#                        4: noise drawn for the body's voxels only (the same law, other draws)
MANIFEST_COLUMNS = ("sample_id", "subject_id", "source", "subject_index", "split", "pose", "size", "render", "mesh_dir")


@dataclass
class ViewSettings:
    """What every training set fixes of its views, from LLP26 shapes (:class:`SimSettings`) or a CT collection
    (:class:`threeddx.simulator.collection.CollectionSettings`): one set of defaults and checks."""

    poses: int = 4  # views per subject or case
    size: int = 256  # detector pixels per side
    seed: int = 0  # of poses (and shapes and bodies)
    split_seed: int = 0
    sdd_mm: float = 1000.0  # source-to-detector distance; the patient keeps its distance from the detector
    faces: int = 2  # depth faces per bone and ray (threeddx.simulator.render: K even; 2 = front and back)

    def check_views(self) -> None:
        if self.poses < 1:
            raise InputError(f"--poses must be at least 1, got {self.poses}")
        if self.size < 16:
            raise InputError(f"--size must be at least 16 pixels, got {self.size}")
        if not 500.0 <= self.sdd_mm <= 2000.0:
            raise InputError(f"--sdd-mm must be within 500-2000 mm, got {self.sdd_mm}")
        from threeddx.simulator.render import check_faces

        check_faces(self.faces)


@dataclass(kw_only=True)
class SimSettings(ViewSettings):
    """Everything that determines a simulated dataset (saved as settings.json): the views' settings and the
    subjects, bodies and CT grid."""

    subjects: list[int] = field(default_factory=lambda: list(range(22)))
    random_subjects: int = 0
    bones: list[str] = field(default_factory=lambda: list(BONE_PARTS))
    voxel_mm: float = 1.0
    write_ct: bool = False
    body: dict = field(default_factory=dict)  # fixed body parameters (phantom.TISSUE_RANGES keys), e.g. {"fat_mm": 80}
    beam_offset_mm: float = 0.0  # extra shift of every pose along the beam (+: towards the detector)
    # the body rests on a table (docs/data.md "On the table"): its back on the table top TABLE_ABOVE_DETECTOR_MM
    # from the detector, so the hips' depth follows the body; no random shift along the beam
    on_table: bool = False
    version: int = SETTINGS_VERSION

    def check(self) -> None:
        self.check_views()
        if self.random_subjects < 0:
            raise InputError("--random-subjects must be 0 or more")
        if not (0.25 <= self.voxel_mm <= 4.0):
            raise InputError(f"--voxel-mm must be within 0.25-4 mm, got {self.voxel_mm}")
        unknown = [b for b in self.bones if b not in BONE_PARTS]
        if unknown:
            raise InputError(f"unknown bone(s) {', '.join(unknown)}; known: {', '.join(BONE_PARTS)}")
        if abs(self.beam_offset_mm) > 100.0:
            raise InputError(f"--beam-offset-mm must be within +-100 mm, got {self.beam_offset_mm}")
        if not self.subjects and not self.random_subjects:
            raise InputError("nothing to simulate: no --subjects and no --random-subjects")


@dataclass(frozen=True)
class SubjectJob:
    subject_id: str  # "llp26-07" or "pca-0003"
    source: str  # "llp26" or "pca"
    index: int
    split: str


def plan(settings: SimSettings) -> list[SubjectJob]:
    split = subject_split(settings.split_seed)
    jobs = [SubjectJob(f"llp26-{k:02d}", "llp26", k, split[k]) for k in settings.subjects]
    jobs += [SubjectJob(f"pca-{r:04d}", "pca", r, "train") for r in range(settings.random_subjects)]
    return jobs


def training_subjects(settings: SimSettings) -> list[int]:
    return sorted(k for k, s in subject_split(settings.split_seed).items() if s == "train")


def _seeds(settings: SimSettings, job: SubjectJob) -> dict[str, np.random.SeedSequence]:
    ss = np.random.SeedSequence([settings.seed, 0 if job.source == "llp26" else 1, job.index])
    shape, hips, tissue, poses = ss.spawn(4)
    return {"shape": shape, "hips": hips, "tissue": tissue, "poses": poses}


def sample_path(out: Path, job: SubjectJob, pose: int) -> Path:
    return out / "samples" / job.subject_id / f"pose_{pose:02d}.npz"


def _mesh_path(out: Path, job: SubjectJob, bone: str) -> Path:
    return out / "meshes" / job.subject_id / f"{bone}.ply"


def subject_complete(out: Path, settings: SimSettings, job: SubjectJob) -> bool:
    paths = [sample_path(out, job, p) for p in range(settings.poses)]
    paths += [_mesh_path(out, job, b) for b in settings.bones]
    if settings.write_ct:
        paths += [out / "ct" / f"{job.subject_id}_ct.nii.gz", out / "ct" / f"{job.subject_id}_labels.nii.gz"]
    return all(p.exists() for p in paths)


# --------------------------------------------------------------------- worker
_PCA: ShapePCA | None = None


def _subject_shape(settings: SimSettings, job: SubjectJob, seeds):
    if job.source == "llp26":
        base = load_shape(job.index)
    else:
        global _PCA
        if _PCA is None or list(_PCA.subjects) != training_subjects(settings):
            _PCA = ShapePCA.fit(training_subjects(settings))
        base = _PCA.sample(np.random.default_rng(seeds["shape"]), like=load_shape(training_subjects(settings)[0]))
    return articulate(base, np.random.default_rng(seeds["hips"]))


def run_subject(settings: SimSettings, job: SubjectJob, out: Path) -> int:
    """Simulate one subject's missing files. Returns the number of samples written."""
    from threeddx.geometry import ISOCENTER_ABOVE_DETECTOR_MM, sample_pose, standard_ap_geometry
    from threeddx.simulator.render import BoneField, render, scene_from_ct
    from threeddx.simulator.phantom import synthesize_ct
    from threeddx.apps.viz import save_preview

    if subject_complete(out, settings, job):
        return 0
    seeds = _seeds(settings, job)
    shape, hip_angles = _subject_shape(settings, job, seeds)
    # every part is anatomy in the CT, whatever the target bones: a pelvis-only
    # target list must not make the sacrum vanish from the radiograph
    bone_parts = {p: (shape.vertices[p], shape.faces[p]) for p in PARTS}
    sct = synthesize_ct(
        bone_parts, PART_LABEL_IDS, {b: BONE_PARTS[b] for b in settings.bones}, shape.hip_centers,
        np.random.default_rng(seeds["tissue"]), spacing=settings.voxel_mm, overrides=settings.body or None,
    )
    for bone, mesh in bone_meshes(shape, settings.bones).items():
        path = _mesh_path(out, job, bone)
        if not path.exists():
            with atomic_path(path) as tmp:
                mesh.export(tmp, file_type="ply")
    if settings.write_ct:
        import SimpleITK as sitk

        for kind, vol in (("ct", sct.ct), ("labels", sct.labels)):
            path = out / "ct" / f"{job.subject_id}_{kind}.nii.gz"
            if not path.exists():
                with atomic_path(path) as tmp:
                    sitk.WriteImage(vol.to_sitk(), str(tmp))
    # the DRR comes from the materials: no attenuation volume
    scene = scene_from_ct(sct.ct, [BoneField(b, *sct.occupancy[b]) for b in settings.bones])
    tissue = sct.tissue
    del sct
    iso = np.array([0.0, 0.0, ISOCENTER_ABOVE_HIPS_MM])
    on_table = {}
    if settings.on_table:
        from threeddx.simulator.phantom import hip_depths, pelvic_points

        back, front = hip_depths(pelvic_points(bone_parts), shape.hip_centers, tissue)
        table = settings.sdd_mm - TABLE_ABOVE_DETECTOR_MM + settings.beam_offset_mm
        on_table = {"source_to_table_mm": np.array(table), "body_thickness_mm": np.array(back + front),
                    "hips_above_table_mm": np.array(back)}
    pose_seeds = seeds["poses"].spawn(settings.poses)
    written = 0
    for p in range(settings.poses):
        path = sample_path(out, job, p)
        if path.exists():
            continue
        # the patient lies on the table: its distance from the detector is the preset's whatever the SDD
        s2i = settings.sdd_mm - ISOCENTER_ABOVE_DETECTOR_MM + settings.beam_offset_mm
        # the geometry declares the table's iso-centre distance, not the pose's jitter (unknowable to a user)
        geom = standard_ap_geometry(iso, size=settings.size, sdd=settings.sdd_mm, source_to_isocenter=s2i)
        if on_table:  # the hips where this body's back on the table puts them; the declared default as before
            hips = float(on_table["source_to_table_mm"] - on_table["hips_above_table_mm"])
            pose = sample_pose(iso, np.random.default_rng(pose_seeds[p]), ranges={"shift_beam_mm": 0.0},
                               source_to_isocenter=hips)
        else:
            pose = sample_pose(iso, np.random.default_rng(pose_seeds[p]), source_to_isocenter=s2i)
        geom = geom.with_pose(pose)
        res = render(scene, geom, faces=settings.faces)
        if p == 0:
            save_preview(path.with_suffix(".png"), res.image, res.masks, res.depth_front, res.depth_back, res.bones,
                         title=f"{job.subject_id} ({job.split}), pose {p}")
        save_npz_atomic(
            path, **res.arrays(), subject=np.array(job.subject_id), split=np.array(job.split), pose=np.array(p),
            hip_angles=np.array(json.dumps(hip_angles)), body=np.array(json.dumps(tissue)), **on_table,
        )
        written += 1
    return written


def _cache_job(k: int) -> int:
    load_shape(k)
    return k


# ------------------------------------------------------------------- driver
def _defaults(settings) -> dict:
    """A settings dataclass's field defaults (None for a field without one)."""
    from dataclasses import MISSING, fields

    return {f.name: f.default if f.default is not MISSING else
            f.default_factory() if f.default_factory is not MISSING else None for f in fields(settings)}


def check_settings(out: Path, settings) -> None:
    """Write settings.json, or refuse a folder made with other settings."""
    path = out / "settings.json"
    mine = asdict(settings)
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{path} is not valid JSON; is {out} a simulator folder?") from None
        # settings added later (with a default that changes nothing) are absent from older folders
        defaults = _defaults(settings)
        theirs = {k: theirs.get(k, defaults[k]) for k in mine}
        diff = [f"{k}: {theirs.get(k)!r} there, {v!r} now" for k, v in mine.items() if theirs.get(k) != v]
        if diff:
            raise InputError(f"{out} was made with other settings ({'; '.join(diff)}); use another --out")
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty and has no settings.json: not a simulator folder")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(mine, indent=2) + "\n")


def write_manifest(out: Path, settings: SimSettings, jobs: Iterable[SubjectJob]) -> Path:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for job in jobs:
        for p in range(settings.poses):
            w.writerow([
                f"{job.subject_id}_p{p:02d}", job.subject_id, job.source, job.index, job.split, p, settings.size,
                sample_path(out, job, p).relative_to(out).as_posix(), (Path("meshes") / job.subject_id).as_posix(),
            ])
    path = out / "manifest.csv"
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files left by killed writers (see io.atomic_path; :func:`threeddx.io.is_dead_temporary`): never
    complete, so removed; a live writer's (another run into this folder now) is left alone."""
    from threeddx.io import is_dead_temporary

    for p in out.rglob(".*.tmp*"):
        if p.is_file() and is_dead_temporary(p):
            p.unlink(missing_ok=True)


def open_dataset_folder(out: str | Path, settings) -> Path:
    """Check the settings, claim or reopen ``out`` for them (settings.json), and clear a killed run's
    temporaries: the start of every simulator run (synthetic bodies or a CT collection)."""
    settings.check()
    out = Path(out)
    check_settings(out, settings)
    _remove_stale_temporaries(out)
    return out


def simulate(settings: SimSettings, out: Path, workers: int = 1, progress: bool = True,
             scheduler: str | None = None) -> Path:
    """Run (or resume) a simulation into ``out``; returns the manifest's path.

    ``workers`` > 1 runs a local Dask cluster, ``scheduler`` submits to a running one
    (:func:`threeddx.cluster.map_tasks`); every subject is one task.
    """
    from threeddx.cluster import map_tasks

    out = open_dataset_folder(out, settings)
    jobs = plan(settings)
    todo = [j for j in jobs if not subject_complete(out, settings, j)]
    workers = max(1, min(workers, len(todo) or 1))
    need = sorted({j.index for j in todo if j.source == "llp26"} | (set(training_subjects(settings)) if settings.random_subjects else set()))
    if scheduler is None:  # local workers share this machine's shape cache: build only what it lacks
        need = [k for k in need if not shape_cached(k)]
    t0 = time.perf_counter()
    for _ in map_tasks(_cache_job, [(k,) for k in need], workers, scheduler, desc="shapes", unit="subject",
                       progress=progress and bool(need)):
        pass
    for _ in map_tasks(run_subject, [(settings, j, out) for j in todo], workers, scheduler, desc="simulate",
                       unit="subject", progress=progress):
        pass
    _remove_stale_temporaries(out)  # a task of a killed worker, rerun elsewhere, may leave one
    manifest = write_manifest(out, settings, jobs)
    if progress:
        n = len(jobs) * settings.poses
        print(f"{n} samples from {len(jobs)} subjects in {out} ({time.perf_counter() - t0:.0f} s); manifest {manifest}")
    return manifest
