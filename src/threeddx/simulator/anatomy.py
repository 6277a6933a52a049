"""Real adult pelvis, sacrum and femur shapes (LLP26), cached, articulated, and a PCA for new ones.

Source: the LLP26 lower-limb shape model of the ``musculoskeletal-models``
package (26 adults segmented from CT; Zhang et al., J Biomech 2016; MPL-2.0),
read through gias3. Subject ``k`` is the model evaluated at its own projected
weights, which reproduces that subject's segmented shape.

Frame (mm): the model's CT-like frame is already LPS-like (``+x`` patient left,
``+y`` posterior, ``+z`` superior; checked on its landmarks: the left
hemipelvis and femur lie at ``+x``, the sacrum posterior, the femoral heads
above the knees). Every subject is recentred so that the **midpoint of the two
hip-joint centres is the origin**; that point is also stored, so the preset's
iso-centre can be placed relative to it.

Bones (the list is a setting, :data:`BONE_PARTS`): ``pelvis`` (both hemipelves
as one object), ``sacrum``, ``femur_left``, ``femur_right``. Keeping the sacrum
apart follows TotalSegmentator's naming and keeps the sacroiliac surfaces from
hiding between one object's first entry and last exit.

Subjects: 0-21 are split by subject into train/val/test (:func:`subject_split`);
**22-25 are reserved for an external validation and never used**
(:data:`RESERVED_SUBJECTS`): every function here refuses them.

Cost: building a subject through gias3 takes ~6 s plus ~10 s to load the atlas
once per process; the result is cached (``$THREEDDX_CACHE``, default
``~/.cache/threeddx``) as vertex arrays (the triangle topology is shared by all
shapes), and loading from the cache takes a few milliseconds.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from threeddx.bones import REGISTRY as _REGISTRY, View as _View, simulated as simulated_bones
from threeddx.errors import InputError
from threeddx.geometry import rotation_matrix
from threeddx.io import atomic_path

#: gias3 part names, in the order stored in the cache.
PARTS = ("hemipelvis-left", "hemipelvis-right", "sacrum", "femur-l", "femur-r")
#: Bone name -> the LLP26 parts it is made of: a live view of the bone registry (threeddx.bones).
BONE_PARTS: Mapping[str, tuple[str, ...]] = _View(
    lambda: {b.name: tuple(b.llp26_parts) for b in _REGISTRY.values() if b.llp26_parts})
#: TotalSegmentator v2 label ids of the parts, used for the synthetic label volumes.
PART_LABEL_IDS = {"hemipelvis-left": 77, "hemipelvis-right": 78, "sacrum": 25, "femur-l": 75, "femur-r": 76}
N_SUBJECTS = 26
RESERVED_SUBJECTS = frozenset(range(22, 26))
USABLE_SUBJECTS = tuple(range(22))
#: The fixed split of subjects 0-21 (seed 0, 16/3/3); see :func:`subject_split`.
SPLIT_SEED = 0
SPLIT_SIZES = {"train": 16, "val": 3, "test": 3}
#: Triangulation density of gias3's ``triangulate`` (elements per side).
TRIANGULATION = (10, 10)
CACHE_VERSION = 1

#: Ranges (uniform, +-, degrees) of the seeded hip articulation about each
#: hip-joint centre: flexion about the left-right axis, adduction about the
#: antero-posterior axis, internal/external rotation about the long axis.
#: Supine patients' legs lie roughly straight but rarely identical: a few
#: degrees of flexion and ab/adduction, and more rotation (feet turned out),
#: which is what "legs internally rotated 15 degrees" positioning tries to fix.
HIP_RANGES_DEG = {"flexion": 8.0, "adduction": 6.0, "rotation": 12.0}


def check_subject_id(k: int) -> int:
    k = int(k)
    if k in RESERVED_SUBJECTS:
        raise InputError(f"LLP26 subject {k} is reserved for external validation (22-25): never used here")
    if not 0 <= k < N_SUBJECTS:
        raise InputError(f"LLP26 subject {k} does not exist (0-21 usable)")
    return k


def subject_split(seed: int = SPLIT_SEED, sizes: Mapping[str, int] = SPLIT_SIZES) -> dict[int, str]:
    """Subject id -> "train" / "val" / "test" for subjects 0-21 (seeded permutation).

    With the defaults: test = the first 3 of the permutation, val the next 3,
    train the remaining 16. Subjects 22-25 are in no split.
    """
    if sum(sizes.values()) != len(USABLE_SUBJECTS):
        raise InputError(f"split sizes must add up to {len(USABLE_SUBJECTS)}, got {dict(sizes)}")
    perm = np.random.default_rng(seed).permutation(USABLE_SUBJECTS)
    out, i = {}, 0
    for name in ("test", "val", "train"):
        for k in perm[i : i + sizes[name]]:
            out[int(k)] = name
        i += sizes[name]
    return out


def parse_subject_range(text: str) -> list[int]:
    """'0-9', '0,3,5', '0-3,7' -> subject ids (checked: 22-25 refused)."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, b = (int(v) for v in part.split("-", 1)) if "-" in part else (int(part), int(part))
        except ValueError:
            raise InputError(f"--subjects {text!r}: expected ids like 0-9 or 0,3,5") from None
        if b < a:
            raise InputError(f"--subjects {text!r}: the range {part} runs backwards (write {b}-{a})")
        out.extend(range(a, b + 1))
    return [check_subject_id(k) for k in dict.fromkeys(out)]


# -------------------------------------------------------------------- cache
def cache_dir() -> Path:
    root = os.environ.get("THREEDDX_CACHE") or Path.home() / ".cache" / "threeddx"
    return Path(root) / f"llp26-v{CACHE_VERSION}"


@dataclass
class Shape:
    """One subject's bones in its neutral pose: vertices per part (mm, recentred LPS).

    ``hip_centers`` is (2, 3): the left and right hip-joint centres.
    ``faces`` maps every part to its (F, 3) triangles (shared by all shapes).
    """

    vertices: dict[str, np.ndarray]
    hip_centers: np.ndarray
    faces: dict[str, np.ndarray] = field(repr=False)

    def as_vector(self) -> np.ndarray:
        """All vertices and the hip centres as one flat vector (for the PCA)."""
        return np.concatenate([self.vertices[p].ravel() for p in PARTS] + [self.hip_centers.ravel()])

    @classmethod
    def from_vector(cls, vec: np.ndarray, like: "Shape") -> "Shape":
        out, i = {}, 0
        for p in PARTS:
            n = like.vertices[p].size
            out[p] = vec[i : i + n].reshape(-1, 3)
            i += n
        return cls(vertices=out, hip_centers=vec[i : i + 6].reshape(2, 3), faces=like.faces)


def _subject_path(k: int) -> Path:
    return cache_dir() / f"subject_{k:02d}.npz"


def _topology_path() -> Path:
    return cache_dir() / "topology.npz"


_ATLAS = None


def _atlas():
    global _ATLAS
    if _ATLAS is None:
        _ATLAS = lower_limb_atlas_and_weights()
    return _ATLAS


def lower_limb_atlas_and_weights():
    from threeddx.simulator._gias_compat import lower_limb_atlas, patch_scipy

    patch_scipy()
    try:
        import musculoskeletal.models as mm
    except ImportError:
        raise InputError(
            "the LLP26 shapes come from the 'musculoskeletal-models' package: run scripts/install.sh"
        ) from None
    with open(mm.get_model_path("shape_models/LLP26_rigid.pc"), "rb") as f:
        pc = pickle.load(f)
    z = pc["projectedWeights"] / np.sqrt(pc["weights"])[:, None]  # subjects' weights in SD units
    return lower_limb_atlas(), z


def _build_subject(k: int) -> None:
    """Evaluate subject k through gias3 and write it to the cache (slow)."""
    ll, z = _atlas()
    ll.update_all_models(z[:25, k], list(range(25)), [0.0] * 6, [0.0] * 3, [0.0] * 3, [0.0], [0.0])
    gfd = ll.model_gf_dict()
    verts, faces = {}, {}
    for p in PARTS:
        v, f = gfd[p].triangulate(list(TRIANGULATION), merge=True)
        verts[p], faces[p] = np.asarray(v, np.float64), np.asarray(f, np.int32)
    hjc = np.array(
        [ll.ll_l.models["pelvis"].landmarks["pelvis-LHJC"], ll.ll_r.models["pelvis"].landmarks["pelvis-RHJC"]],
        np.float64,
    )
    origin = hjc.mean(0)
    if not _topology_path().exists():
        with atomic_path(_topology_path()) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **faces)
    with atomic_path(_subject_path(k)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, hip_centers=hjc - origin, origin=origin, **{p: verts[p] - origin for p in PARTS})


def shape_cached(k: int) -> bool:
    """Whether subject k's neutral shape is in this machine's cache (:func:`load_shape` is then a file read)."""
    return _subject_path(check_subject_id(k)).exists() and _topology_path().exists()


def load_shape(k: int) -> Shape:
    """Subject k's neutral shape, from the cache (built through gias3 the first time)."""
    k = check_subject_id(k)
    if not shape_cached(k):
        _build_subject(k)
    with np.load(_subject_path(k)) as z, np.load(_topology_path()) as t:
        return Shape(
            vertices={p: z[p] for p in PARTS}, hip_centers=z["hip_centers"], faces={p: t[p] for p in PARTS}
        )


# ---------------------------------------------------------------- articulation
def knee_center(femur_vertices: np.ndarray, band_mm: float = 30.0) -> np.ndarray:
    """Centre (mm) of a femur's distal end: the mean of its lowest ``band_mm`` (LPS: smallest z)."""
    v = np.asarray(femur_vertices)
    return v[v[:, 2] < v[:, 2].min() + band_mm].mean(0)


def articulate(shape: Shape, rng: np.random.Generator | int | None, ranges: Mapping[str, float] | None = None) -> tuple[Shape, dict]:
    """Rotate each femur about its hip-joint centre by seeded angles (:data:`HIP_RANGES_DEG`).

    ``rng=None`` keeps the neutral pose. Returns the new shape and the angles used
    (degrees, per side), for the record.
    """
    if rng is None:
        return shape, {}
    rng = np.random.default_rng(rng)
    rg = dict(HIP_RANGES_DEG)
    rg.update(ranges or {})
    verts = dict(shape.vertices)
    angles = {}
    for side, part, hjc in (("left", "femur-l", shape.hip_centers[0]), ("right", "femur-r", shape.hip_centers[1])):
        a = {k: float(rng.uniform(-v, v)) for k, v in rg.items()}
        # long axis: from the knee (lowest vertices) up to the hip centre
        v = shape.vertices[part]
        axis = hjc - knee_center(v)
        r = (
            rotation_matrix(axis, math.radians(a["rotation"]))
            @ rotation_matrix((0, 1, 0), math.radians(a["adduction"] * (1 if side == "left" else -1)))
            @ rotation_matrix((1, 0, 0), math.radians(a["flexion"]))
        )
        verts[part] = (v - hjc) @ r.T + hjc
        angles[side] = a
    return Shape(vertices=verts, hip_centers=shape.hip_centers, faces=shape.faces), angles


def bone_meshes(shape: Shape, bones: Sequence[str] | None = None) -> dict:
    """Bone name -> ``trimesh.Trimesh`` (several parts concatenated, e.g. the pelvis); default: every bone with
    LLP26 parts (:func:`threeddx.bones.simulated`)."""
    import trimesh

    out = {}
    for b in (simulated_bones() if bones is None else bones):
        if b not in BONE_PARTS:
            raise InputError(f"unknown LLP26 bone {b!r}; known: {', '.join(BONE_PARTS)}")
        vs, fs, n = [], [], 0
        for p in BONE_PARTS[b]:
            vs.append(shape.vertices[p])
            fs.append(shape.faces[p] + n)
            n += len(shape.vertices[p])
        out[b] = trimesh.Trimesh(np.concatenate(vs), np.concatenate(fs), process=False)
    return out


# -------------------------------------------------------------------- PCA
@dataclass
class ShapePCA:
    """A linear shape model (mean + modes) over :meth:`Shape.as_vector`.

    Built by :meth:`fit` from the training subjects only, so test subjects stay
    unseen (the package's own LLP26 PCA was built on all 26).
    """

    mean: np.ndarray
    modes: np.ndarray  # (D, K), orthonormal columns
    std: np.ndarray  # (K,) standard deviation of each mode (mm)
    subjects: tuple[int, ...]

    @classmethod
    def fit(cls, subject_ids: Iterable[int], n_modes: int | None = None) -> "ShapePCA":
        ids = tuple(check_subject_id(k) for k in subject_ids)
        if len(ids) < 2:
            raise InputError("a PCA needs at least two subjects")
        return cls.from_vectors(np.stack([load_shape(k).as_vector() for k in ids]), ids, n_modes)

    @classmethod
    def from_vectors(cls, x: np.ndarray, ids: Sequence[int], n_modes: int | None = None) -> "ShapePCA":
        """The PCA of the subjects ``ids``' shape vectors ``x`` (S, D) (:meth:`Shape.as_vector`, in that order)."""
        mean = x.mean(0)
        u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = len(ids) - 1 if n_modes is None else min(n_modes, len(ids) - 1)
        return cls(mean=mean, modes=vt[:k].T, std=s[:k] / math.sqrt(len(ids) - 1), subjects=tuple(ids))

    def sample(self, rng: np.random.Generator | int, like: Shape, clip_sd: float = 2.5) -> Shape:
        """A new shape: mean + modes @ (std * z), z ~ N(0, 1) clipped to +-clip_sd."""
        z = np.clip(np.random.default_rng(rng).standard_normal(len(self.std)), -clip_sd, clip_sd)
        return Shape.from_vector(self.mean + self.modes @ (self.std * z), like)
