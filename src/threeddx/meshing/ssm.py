"""Shape completion: fit a statistical shape model (SSM) of the bones to predicted surface points.

The predicted front and back points leave gaps: at the silhouette rim, where
bones overlap, and where a long bone leaves the field of view. Fitting a shape
model fills them with plausible anatomy and gives every bone the same vertex
correspondence (the LLP26 topology) whatever the image.

**Model** (:class:`BoneSSM`). Built from the training subjects only (the fixed
split of :func:`threeddx.simulator.anatomy.subject_split`, so the test subjects stay
unseen; the package's own LLP26 PCA was built on all 26). Each bone of each
subject (neutral pose, mm, the anatomy frame: LPS, hip-centre midpoint at the
origin) is rigidly aligned to the bone's mean shape (generalised Procrustes,
no scaling), then one PCA is taken over the concatenated aligned vertices of
all the model's bones: a model of one bone (*per-bone* fitting) or of the
pelvis and both femurs together (*coupled*: one set of shape weights, a pose
per bone, since the hips articulate).

**Fit** (:func:`fit_ssm`). Unknowns: per bone a rigid pose (rotation R,
translation t; with ``scale=True`` a similarity), and standardised mode
weights z (the shape is ``mean + modes @ (std * z)``). Minimised:

    (1/N) sum_i w_i |s R x_i(z) + t - p_i|^2  +  reg * |z|^2

where ``p_i`` are the predicted points (world mm) and ``x_i(z)`` their closest
points on the model's surface (a barycentric point on a triangle, linear in
z). This is iterative closest point with a Gaussian prior on the weights:
``reg`` (mm²) plays the noise variance of the points relative to the unit
prior; larger is stiffer. Each iteration finds the closest points, then takes
one Gauss-Newton step of the point-to-plane form of the distance (pose
increments and the weights solved together; it converges in ~10 iterations
where point-to-point ICP crawled along flat surfaces for 100). Two phases:
while the shape still moves by more than ``coarse_tol_mm`` (1 mm), the
closest point is the nearest model vertex with its vertex normal (a KD-tree,
~3 ms for 3,000 points on the pelvis); then the exact closest surface point
(:func:`closest_points`, libigl's AABB tree, ~20 ms) until it moves by less
than ``tol_mm``; the exact phase decides the result, the cheap one only gets
there (the bundled example's pelvis fit 1.6 -> 0.26 s on two cores). Only
data-to-model distances enter, so a missing region (a gap, the distal femur
outside the detector) pulls on nothing and is filled by the prior; points
further than ``max(outlier_mm, outlier_k * median)`` from the surface get
weight 0 (robust to wrong depths). Deterministic: the only randomness is the
seeded subsample of ``max_points`` points per bone.

**Outline** (:class:`Outline`, optional). A bone's outline in the image, the level set of its predicted
probability (:func:`outline_points`), adds to the minimised sum ``weight * (1/M) sum_j w_j r_j^2``: each
outline point is paired with the nearest projected point of the model's contour generator (the surface points
whose ray grazes it, interpolated on the mesh edges where the vertex normals turn from facing the source to
facing away; with the bone's mask, those with bone just outside them, folds inside the silhouette, are left out),
and ``r_j`` is the distance across the model's outline there (px through
:meth:`~threeddx.geometry.XrayGeometry.project_jacobian`, in mm at that point's depth), trimmed as the points
are. To first order a contour point moves across the outline as the surface point it is, so it enters the same
Gauss-Newton step (pose and weights). The outline shows what the depths get wrong most: a pelvis turned about the
body's long axis (docs/results.md, "The pelvis's outline in its fit"). Too large a weight folds the shape to make
contour where the image has an edge; :func:`judge_fit` catches that.

**Landmarks.** A model also carries landmarks that move with its bones: the
LLP26 hip-joint centres (``hjc_left``/``hjc_right``, the gias3 landmarks
``pelvis-LHJC``/``-RHJC``) with the pelvis, and each femoral head's centre
(``head_left``/``head_right``: the same points, which the femur articulates
about) with its femur. They are Procrustes-aligned with their bone and written
as a linear function of the same mode coefficients, exactly for the training
shapes (16 shapes, 15 modes); a fit returns them in world mm
(:attr:`FitResult.landmarks`), which is how :mod:`threeddx.inference.hipjoint` finds the
hip joints that the dual-face maps never see.

**Where a fit starts, and whether it is believed** (:func:`fit_in_view`).
Fits are made in the exposure's AP frame (:mod:`threeddx.geometry`, "AP
frame"), which the view alone defines, never in the world frame the geometry
happens to be written in (a fit started at the world's origin crumpled 14 of
18 validation pelvises when that origin was 1.2 m away). Each bone starts
with the AP orientation and its visible part centred on its points
(:func:`view_start`). The result is judged (:func:`judge_fit`, bounds
:class:`FitBounds` chosen on the validation split): mode weights beyond
+-3 SD, a bone turned further from the AP orientation than training poses
and hip articulation allow, a high RMS, few inliers, or triangles turned
over (a fold) reject it, and the caller falls back to the network's own
surface rather than return a crumpled mesh.

Size: about 730 lines: the model, its fit, its start in the view and its judgement share one set of
private geometry (closest points, rotations about the model's centre, folded triangles); a later split
would put the fit and the judgement in a module of their own.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from threeddx.bones import REGISTRY as _REGISTRY, View as _View, simulated as _simulated
from threeddx.errors import InputError, check_number
from threeddx.io import atomic_path

MIN_POINTS = 30
#: Version of the cached model files (2: with landmarks).
SSM_VERSION = 2
#: Landmarks per bone: name -> row of :attr:`threeddx.simulator.anatomy.Shape.hip_centers` (0 left, 1 right); a live
#: view of the bone registry (threeddx.bones).
LANDMARKS: Mapping[str, Mapping[str, int]] = _View(
    lambda: {b.name: dict(b.landmarks) for b in _REGISTRY.values() if b.landmarks})


# -------------------------------------------------------------- geometry
def closest_points(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's closest point on a triangle mesh: (face index (N,), barycentric (N, 3), distance mm (N,)).

    Exact (libigl's AABB tree, ``point_mesh_squared_distance``); ``vertices``
    (V, 3) and ``points`` (N, 3) mm, ``faces`` (F, 3). The closest point is
    ``bary @ vertices[faces[face]]``. The tree is built per call: the fit's
    vertices move every iteration (~13 ms for the 19 440-face pelvis).
    """
    import igl

    v = np.ascontiguousarray(vertices, np.float64)
    f = np.ascontiguousarray(faces, np.int64)
    p = np.ascontiguousarray(points, np.float64)
    d2, face, q = igl.point_mesh_squared_distance(p, v, f)
    face = np.asarray(face, np.int64).ravel()
    tri = v[f[face]]
    bary = np.asarray(igl.barycentric_coordinates(np.ascontiguousarray(q), *(np.ascontiguousarray(tri[:, j]) for j in range(3))))
    return face, bary, np.sqrt(np.maximum(np.asarray(d2).ravel(), 0.0))


def rigid_align(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid (R, t) with ``dst ~ R @ src + t`` for corresponding (N, 3) points (Kabsch, via SciPy)."""
    from scipy.spatial.transform import Rotation

    ms, md = src.mean(0), dst.mean(0)
    r = Rotation.align_vectors(dst - md, src - ms)[0].as_matrix()
    return r, md - r @ ms


# ------------------------------------------------------------------ model
@dataclass
class BoneSSM:
    """A PCA shape model of one or several bones (module doc). Vertices in mm, anatomy frame."""

    bones: tuple[str, ...]
    mean: np.ndarray  # (V, 3), the bones' vertices one after another
    modes: np.ndarray  # (3V, K) orthonormal columns
    std: np.ndarray  # (K,) mm
    offsets: tuple[int, ...]  # vertex offset of each bone in ``mean``, plus the total
    faces: dict[str, np.ndarray] = field(repr=False)
    subjects: tuple[int, ...] = ()
    #: landmark name -> the bone it moves with (see :data:`LANDMARKS`)
    landmark_bones: dict[str, str] = field(default_factory=dict)
    landmark_mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (L, 3) mm
    landmark_modes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (3L, K), mm per unit of std * z

    def n_modes(self) -> int:
        return len(self.std)

    def vertices(self, z: np.ndarray | None = None) -> np.ndarray:
        """Model vertices (V, 3) for standardised weights ``z`` (zeros: the mean)."""
        if z is None:
            return self.mean.copy()
        k = len(z)
        return self.mean + (self.modes[:, :k] @ (self.std[:k] * z)).reshape(-1, 3)

    def landmarks(self, z: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Landmark name -> its position (3,) mm in the model frame for weights ``z`` (zeros: the mean)."""
        pos = self.landmark_mean.copy()
        if z is not None and len(pos):
            k = len(z)
            pos = pos + (self.landmark_modes[:, :k] @ (self.std[:k] * z)).reshape(-1, 3)
        return {name: pos[i] for i, name in enumerate(self.landmark_bones)}

    def bone_slice(self, bone: str) -> slice:
        i = self.bones.index(bone)
        return slice(self.offsets[i], self.offsets[i + 1])

    def mesh(self, bone: str, vertices: np.ndarray):
        import trimesh

        return trimesh.Trimesh(vertices[self.bone_slice(bone)], self.faces[bone], process=False)

    # ------------------------------------------------------------ building
    @classmethod
    def fit(cls, subject_ids: Sequence[int], bones: Sequence[str], procrustes_iterations: int = 3) -> "BoneSSM":
        """Build from LLP26 subjects (neutral pose): per-bone Procrustes alignment, then one PCA.

        The landmarks of the bones (:data:`LANDMARKS`) follow their bone's
        alignment and are regressed on the mode coefficients (module doc).
        """
        from threeddx.simulator.anatomy import bone_meshes, load_shape

        ids = tuple(int(k) for k in subject_ids)
        if len(ids) < 2:
            raise InputError("a shape model needs at least two subjects")
        per_bone: dict[str, list[np.ndarray]] = {b: [] for b in bones}
        names = [n for b in bones for n in LANDMARKS.get(b, {})]
        marks = np.zeros((len(ids), len(names), 3))
        faces: dict[str, np.ndarray] = {}
        for s, k in enumerate(ids):
            shape = load_shape(k)
            for b, m in bone_meshes(shape, bones).items():
                per_bone[b].append(np.asarray(m.vertices, np.float64))
                faces[b] = np.asarray(m.faces, np.int64)
            marks[s] = [shape.hip_centers[LANDMARKS[b][n]] for b in bones for n in LANDMARKS.get(b, {})]
        aligned = []
        for b in bones:
            x = np.stack(per_bone[b])  # (S, Vb, 3)
            cols = [i for i, n in enumerate(names) if n in LANDMARKS.get(b, {})]
            ref = x[0]
            for _ in range(procrustes_iterations):
                for s in range(len(x)):
                    r, t = rigid_align(x[s], ref)
                    x[s] = x[s] @ r.T + t
                    marks[s, cols] = marks[s, cols] @ r.T + t
                ref = x.mean(0)
            aligned.append(x)
        data = np.concatenate(aligned, axis=1).reshape(len(ids), -1)
        mean = data.mean(0)
        _, sv, vt = np.linalg.svd(data - mean, full_matrices=False)
        k = len(ids) - 1
        offsets = tuple(int(v) for v in np.cumsum([0] + [a.shape[1] for a in aligned]))
        modes = vt[:k].T.copy()
        coeffs = (data - mean) @ modes  # (S, K): each shape's std * z
        flat = marks.reshape(len(ids), -1)
        lm_mean = flat.mean(0)
        lm_modes = np.linalg.lstsq(coeffs, flat - lm_mean, rcond=None)[0].T  # (3L, K)
        return cls(bones=tuple(bones), mean=mean.reshape(-1, 3), modes=modes, std=sv[:k] / math.sqrt(len(ids) - 1),
                   offsets=offsets, faces=faces, subjects=ids,
                   landmark_bones={n: b for b in bones for n in LANDMARKS.get(b, {})},
                   landmark_mean=lm_mean.reshape(-1, 3), landmark_modes=lm_modes)

    def save(self, path: Path, dtype=np.float64, provenance: dict | None = None) -> None:
        """Write the model (``dtype`` for its arrays: float32 halves a shipped file; ``provenance`` kept as JSON)."""
        import json

        a = lambda v: np.asarray(v, dtype)  # noqa: E731
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, bones=np.array(self.bones), mean=a(self.mean), modes=a(self.modes),
                                    std=a(self.std), offsets=np.array(self.offsets), subjects=np.array(self.subjects),
                                    landmark_names=np.array(list(self.landmark_bones), dtype=str),
                                    landmark_of=np.array(list(self.landmark_bones.values()), dtype=str),
                                    landmark_mean=a(self.landmark_mean), landmark_modes=a(self.landmark_modes),
                                    provenance=np.array(json.dumps(provenance or {})),
                                    **{f"faces_{b}": self.faces[b].astype(np.int32) for b in self.bones})

    @classmethod
    def load(cls, path: Path) -> "BoneSSM":
        with np.load(path) as z:
            bones = tuple(str(b) for b in z["bones"])
            f64 = lambda key: np.asarray(z[key], np.float64)  # noqa: E731 (a shipped model may be stored as float32)
            return cls(bones=bones, mean=f64("mean"), modes=f64("modes"), std=f64("std"),
                       offsets=tuple(int(v) for v in z["offsets"]), faces={b: z[f"faces_{b}"] for b in bones},
                       subjects=tuple(int(v) for v in z["subjects"]),
                       landmark_bones=dict(zip((str(n) for n in z["landmark_names"]), (str(b) for b in z["landmark_of"]))),
                       landmark_mean=f64("landmark_mean"), landmark_modes=f64("landmark_modes"))


#: The shipped shape models of the training split (float32; ``scripts/make_hip_model.py``), so that ``predict``
#: never builds LLP26 shapes through gias3: the pelvis with both hip-joint centres (1.8 MB; the one pelvis model
#: of the hip-joint anchoring and the ``ssm`` mesher) and each femur with its head centre (about 0.6 MB each;
#: the ``ssm`` mesher and the measurements, :mod:`threeddx.inference.measure`).
MODEL_DIR = Path(__file__).resolve().parents[1] / "data"
PELVIS_MODEL_PATH = MODEL_DIR / "hip_model.npz"
SHIPPED_MODELS: dict[tuple[str, ...], Path] = {("pelvis",): PELVIS_MODEL_PATH,
                                               ("femur_left",): MODEL_DIR / "femur_left_model.npz",
                                               ("femur_right",): MODEL_DIR / "femur_right_model.npz"}


@lru_cache(maxsize=4)
def shipped_model(bones: tuple[str, ...], path: str | Path | None = None) -> BoneSSM:
    """The shipped model of ``bones`` (:data:`SHIPPED_MODELS`) with its landmarks, read once per process."""
    path = Path(path or SHIPPED_MODELS[bones])
    if not path.is_file():
        raise InputError(f"the shape model {path} is missing: reinstall 3ddx, or run scripts/make_hip_model.py")
    model = BoneSSM.load(path)
    missing = [n for b in bones for n in LANDMARKS[b] if n not in model.landmark_bones]
    if model.bones != bones or missing:
        raise InputError(f"{path} is not a model of {', '.join(bones)} with its landmarks "
                         f"(missing {', '.join(missing) or ', '.join(bones)})")
    return model


def shipped_pelvis_model(path: str | Path = PELVIS_MODEL_PATH) -> BoneSSM:
    """The shipped pelvis model with both hip-joint centres (:data:`PELVIS_MODEL_PATH`), read once per process."""
    return shipped_model(("pelvis",), path)


_MODELS: dict[tuple, BoneSSM] = {}


def training_ssm(bones: Sequence[str], subjects: Sequence[int] | None = None) -> BoneSSM:
    """The shape model of ``bones`` from the training split's subjects, cached beside the LLP26 cache (and in
    this process). One bone of :data:`SHIPPED_MODELS` on the training split is the shipped model (no LLP26
    shape is built, nothing of the simulator is imported)."""
    key = tuple(bones)
    if key in SHIPPED_MODELS and SHIPPED_MODELS[key].is_file():
        model = shipped_model(key)
        if subjects is None or sorted(int(k) for k in subjects) == sorted(model.subjects):
            return model
    from threeddx.simulator.anatomy import subject_split

    if subjects is None:
        subjects = sorted(k for k, s in subject_split().items() if s == "train")
    mem = (key, tuple(subjects))
    if mem not in _MODELS:
        _MODELS[mem] = _cached_ssm(bones, subjects)
    return _MODELS[mem]


def _cached_ssm(bones: Sequence[str], subjects: Sequence[int]) -> BoneSSM:
    from threeddx.simulator.anatomy import cache_dir

    key = hashlib.sha1(f"v{SSM_VERSION}|{','.join(bones)}|{','.join(map(str, subjects))}".encode()).hexdigest()[:12]
    path = cache_dir() / f"ssm_{key}.npz"
    if path.exists():
        try:
            return BoneSSM.load(path)
        except Exception:  # a damaged (or older) cache file is rebuilt, not trusted
            pass
    import sys

    print(f"3ddx: building the shape model of {', '.join(bones)} from {len(subjects)} training subjects "
          f"(once; cached in {path.parent}, set THREEDDX_CACHE to move it)", file=sys.stderr, flush=True)
    model = BoneSSM.fit(subjects, bones)
    model.save(path)
    return model


# -------------------------------------------------------------------- fit
def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a triangle mesh."""
    t = vertices[faces]
    fn = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])  # |fn| = 2 * area
    idx = faces.ravel()
    vn = np.stack([np.bincount(idx, np.repeat(fn[:, d], 3), minlength=len(vertices)) for d in range(3)], 1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    """Rotation matrix of the rotation vector ``omega`` (radians)."""
    theta = float(np.linalg.norm(omega))
    if theta < 1e-12:
        return np.eye(3)
    kx, ky, kz = omega / theta
    kk = np.array([[0, -kz, ky], [kz, 0, -kx], [-ky, kx, 0]])
    return np.eye(3) + math.sin(theta) * kk + (1 - math.cos(theta)) * kk @ kk


@dataclass(frozen=True)
class Outline:
    """A bone's outline in the image, for :func:`fit_ssm`'s outline term (module doc, "Outline").

    ``points`` (M, 2): continuous pixel indices (row, col; :meth:`~threeddx.geometry.XrayGeometry.project`'s) of
    ``camera``, whose world is the fit's frame, on the bone's silhouette and its holes (:func:`outline_points`);
    ``weight``: of their mean squared distance to the model's outline (mm at the bone's depth) against the mean
    squared distance of the surface points."""

    bone: str
    points: np.ndarray
    camera: object
    weight: float = 1.0
    #: (H, W) bool, the bone's mask on ``camera``'s pixels: the model's contour points with bone just outside them
    #: (folds inside its silhouette, which the outline does not show) are left out of the matching
    mask: np.ndarray | None = None


def outline_points(probability: np.ndarray, level: float = 0.5, margin_px: float = 1.5,
                   max_points: int = 2000) -> np.ndarray:
    """A bone's outline (M, 2) (row, col pixel indices, sub-pixel) in its probability or mask (H, W): the
    ``level`` set (marching squares), less what lies within ``margin_px`` of the image's border (a bone cut by
    the field's edge has no edge there), evenly thinned to at most ``max_points``."""
    from skimage.measure import find_contours

    p = np.asarray(probability, np.float64)
    lines = find_contours(p, level)
    pts = np.concatenate(lines) if lines else np.zeros((0, 2))
    h, w = p.shape
    keep = ((pts[:, 0] > margin_px) & (pts[:, 0] < h - 1 - margin_px)
            & (pts[:, 1] > margin_px) & (pts[:, 1] < w - 1 - margin_px))
    pts = pts[keep]
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).round().astype(int)]
    return pts


def contour_generator(vertices: np.ndarray, normals: np.ndarray, edges: np.ndarray,
                      source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the rays from ``source`` graze a surface (the contour generator, what makes a bone's edges in a
    radiograph): the mesh ``edges`` (E, 2) along which ``cos(vertex normal, ray)`` changes sign, and per such
    edge the fraction ``t`` of the way from its first vertex to its second where it is zero (linear). Vertices,
    normals (V, 3) and the source in one frame, mm. Returns the crossing edges' rows of ``edges`` (C,) and ``t``
    (C,)."""
    ray = vertices - source
    f = (normals * ray).sum(1) / np.linalg.norm(ray, axis=1)
    fi, fj = f[edges[:, 0]], f[edges[:, 1]]
    rows = np.flatnonzero(fi * fj < 0)
    return rows, fi[rows] / (fi[rows] - fj[rows])


def _unique_edges(faces: np.ndarray) -> np.ndarray:
    """The (E, 2) undirected edges of a triangle mesh, each once."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, 1), axis=0)


def _outline_rows(world: np.ndarray, faces: np.ndarray, edges: np.ndarray, outline: Outline,
                  centre: np.ndarray, basis: np.ndarray, rot: np.ndarray, scl: float, tra: np.ndarray,
                  scale: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outline term's residuals (M,) mm and their Jacobian (M, pose + K) for one bone (module doc, "Outline").

    ``world`` (V, 3): the bone's current vertices in the fit's frame; ``basis`` (V, 3, K): mm per unit weight,
    model frame; ``centre``: the point rotations turn about (the points' term's). Each outline point is matched
    to the nearest projected point of the model's contour generator (the surface points whose ray grazes it,
    interpolated on the mesh edges where the vertex normals turn from facing the source to facing away); its
    residual is the distance across the model's outline there, scaled to mm at that point's depth."""
    from scipy.spatial import cKDTree

    cam = outline.camera
    n_cols = 6 + int(scale) + basis.shape[2]  # rotation, translation, [log scale], weights
    nv = _vertex_normals(world, faces)
    crossing, t = contour_generator(world, nv, edges, cam.source_position_world)
    e = edges[crossing]
    bary = np.stack([1 - t, t], 1)
    c = np.einsum("nj,njd->nd", bary, world[e])
    normal = np.einsum("nj,njd->nd", bary, nv[e])
    row, col, depth = cam.project(c)
    proj = np.stack([row, col], 1)
    jac_p = cam.project_jacobian(c)  # (E, 2, 3) px per mm
    n2 = np.einsum("nij,nj->ni", jac_p, normal)
    n2 /= np.maximum(np.linalg.norm(n2, axis=1, keepdims=True), 1e-12)
    if outline.mask is not None:  # the silhouette's points: no bone 2 px outside them
        h, w = outline.mask.shape
        q = np.rint(proj + 2.0 * n2).astype(int)
        ok = (q[:, 0] >= 0) & (q[:, 0] < h) & (q[:, 1] >= 0) & (q[:, 1] < w)
        edge = np.ones(len(q), bool)
        edge[ok] = ~outline.mask[q[ok, 0], q[ok, 1]]
        if edge.sum() >= 3:
            e, bary, c, normal, proj, jac_p, n2, depth = (v[edge] for v in (e, bary, c, normal, proj, jac_p, n2, depth))
    if len(e) < 3 or not np.isfinite(proj).all():  # no outline to pair with (or a bone behind the source)
        return np.zeros(0), np.zeros((0, n_cols)), np.zeros(0)
    near = cKDTree(proj).query(outline.points)[1]
    mm_per_px = cam.pixel_mm_at(depth[near])
    r = ((proj[near] - outline.points) * n2[near]).sum(1) * mm_per_px
    m = np.einsum("ni,nij->nj", n2[near], jac_p[near]) * mm_per_px[:, None]  # d r / d (contour point), model-free
    cn = c[near]
    cols = [np.cross(cn - centre, m), m]
    if scale:
        cols.append((m * (cn - tra)).sum(1, keepdims=True))
    a = np.einsum("nj,njdk->ndk", bary[near], basis[e[near]])
    cols.append(scl * np.einsum("nd,de,nek->nk", m, rot, a))
    return r, np.concatenate(cols, 1), np.abs(r)


@dataclass
class FitSettings:
    """Settings of :func:`fit_ssm` (the ``ssm`` section of a config)."""

    modes: int = 15  # number of PCA modes fitted (at most the model's: 15 from 16 training subjects)
    reg: float = 0.1  # prior weight, mm² (module doc)
    scale: bool = False  # similarity instead of rigid pose
    iterations: int = 30
    tol_mm: float = 0.05  # stop when no vertex moved more than this
    coarse_tol_mm: float = 1.0  # the nearest-vertex phase ends when no vertex moved more than this (0: no such phase)
    max_points: int = 3000  # per bone, seeded subsample
    outlier_mm: float = 5.0
    outlier_k: float = 3.0
    coupled: bool = False  # one shape for pelvis and femurs (else a model per bone)
    seed: int = 0
    subjects: list[int] | None = None  # LLP26 subjects of the model; default the training split

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "FitSettings":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"config: unknown ssm setting(s) {', '.join(sorted(unknown))}")
        for key, (lo, hi, whole) in FIT_SETTING_RANGES.items():
            if key in d:
                check_number(d[key], lo, hi, "config", f"ssm.{key}", whole=whole)
        for key in ("scale", "coupled"):
            if key in d and not isinstance(d[key], bool):
                raise InputError(f"config: ssm.{key} must be true or false, got {str(d[key])[:40]!r}")
        if d.get("subjects") is not None:
            s = d["subjects"]
            if not isinstance(s, list) or len(s) < 2:
                raise InputError("config: ssm.subjects must be a list of at least two LLP26 subjects")
            for k in s:
                check_number(k, 0, 25, "config", "ssm.subjects[]", whole=True)
        return cls(**d)


#: What each number of :class:`FitSettings` may be: (low, high, whole number).
FIT_SETTING_RANGES: dict[str, tuple[float, float, bool]] = {
    "modes": (1, 1000, True), "reg": (0.0, 1e6, False), "iterations": (1, 1000, True), "tol_mm": (0.0, 100.0, False),
    "coarse_tol_mm": (0.0, 1000.0, False), "max_points": (MIN_POINTS, 10**6, True), "outlier_mm": (0.0, 1e4, False),
    "outlier_k": (0.0, 1e3, False), "seed": (0, 2**32 - 1, True),
}


@dataclass
class FitResult:
    """The fitted shape: vertices (world mm) per bone, weights, poses, and how well it fits."""

    vertices: dict[str, np.ndarray]
    faces: dict[str, np.ndarray]
    z: np.ndarray
    rotation: dict[str, np.ndarray]
    translation: dict[str, np.ndarray]
    scale: dict[str, float]
    rms_mm: dict[str, float]
    inliers: dict[str, float]
    iterations: int
    seconds: float
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (3,) world mm
    #: bone -> why its fit is implausible (:func:`judge_fit`); a bone absent here passed every bound
    rejected: dict[str, str] = field(default_factory=dict)
    #: each bone's rotation from the exposure's AP orientation (degrees; :func:`fit_in_view`)
    view_rotation_deg: dict[str, float] = field(default_factory=dict)
    #: the landmarks in the frame the fit was made in (the view's AP frame, :func:`fit_in_view`), before
    #: :meth:`transformed` took them to the world: what later steps in that frame use, bit for bit
    local_landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    #: the weight of the bone's outline in this fit (:class:`Outline`; 0: its surface points only)
    outline_weight: float = 0.0

    def mesh(self, bone: str):
        import trimesh

        return trimesh.Trimesh(self.vertices[bone], self.faces[bone], process=False)

    def transformed(self, m: np.ndarray) -> "FitResult":
        """The same fit with every position and pose moved by the rigid 4x4 ``m`` (e.g. AP frame -> world)."""
        r, t = np.asarray(m, np.float64)[:3, :3], np.asarray(m, np.float64)[:3, 3]
        return replace(
            self, vertices={b: v @ r.T + t for b, v in self.vertices.items()},
            rotation={b: r @ v for b, v in self.rotation.items()},
            translation={b: r @ v + t for b, v in self.translation.items()},
            landmarks={n: r @ p + t for n, p in self.landmarks.items()})

    def scaled_about(self, centre_world: np.ndarray, k: float, centre_local: np.ndarray | None = None) -> "FitResult":
        """The same fit scaled by ``k`` about a world point (the focal spot: the one change an AP image cannot
        see, a bigger patient further away); ``centre_local``: the same point in the fit's own frame, for
        :attr:`local_landmarks`."""
        c = np.asarray(centre_world, np.float64)
        cl = c if centre_local is None else np.asarray(centre_local, np.float64)
        return replace(
            self, vertices={b: c + k * (v - c) for b, v in self.vertices.items()},
            translation={b: c + k * (v - c) for b, v in self.translation.items()},
            scale={b: k * v for b, v in self.scale.items()},
            landmarks={n: c + k * (p - c) for n, p in self.landmarks.items()},
            local_landmarks={n: cl + k * (p - cl) for n, p in self.local_landmarks.items()})

    def to_dict(self) -> dict:
        """JSON-able summary (for summary.json)."""
        return {
            "mode_weights_sd": [round(float(v), 4) for v in self.z],
            "pose": {b: {"rotation": np.round(self.rotation[b], 6).tolist(), "translation_mm": np.round(self.translation[b], 3).tolist(),
                         "scale": round(self.scale[b], 5)} for b in self.rotation},
            "rms_mm": {b: round(v, 3) for b, v in self.rms_mm.items()},
            "inlier_fraction": {b: round(v, 4) for b, v in self.inliers.items()},
            "iterations": self.iterations,
            "seconds": round(self.seconds, 3),
            "rotation_from_view_deg": {b: round(v, 2) for b, v in self.view_rotation_deg.items()},
            "rejected": dict(self.rejected),
            "outline_weight": self.outline_weight,
        }


def check_points(points: np.ndarray, bone: str) -> np.ndarray:
    """Validate one bone's point cloud (N, 3): finite, enough, not on a line or a point."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"ssm fit: {bone}: points must be (N, 3), got shape {p.shape}")
    if not np.isfinite(p).all():
        raise InputError(f"ssm fit: {bone}: points contain NaN or infinite values")
    if len(p) < MIN_POINTS:
        raise InputError(f"ssm fit: {bone}: too few points ({len(p)}; need at least {MIN_POINTS})")
    sv = np.linalg.svd(p - p.mean(0), compute_uv=False)
    if sv[0] < 1e-6 or sv[1] < 1e-3 * sv[0]:
        raise InputError(f"ssm fit: {bone}: the points are degenerate (all on a line or at one place)")
    return p


def fit_ssm(model: BoneSSM, points: Mapping[str, np.ndarray], settings: FitSettings | None = None,
            init: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
            outline: Outline | None = None) -> FitResult:
    """Fit ``model`` to each bone's points (world mm); bones of the model without points follow the shape.

    ``init``: optional starting (R, t) per bone (default: identity, module doc). ``outline``: a bone's outline
    in the image, fitted too (module doc, "Outline").
    BLAS runs on one thread during the fit: the trimming's yes/no decisions
    amplify the last bits that a multi-threaded matrix product's summation
    order changes, and the fit must not depend on the machine's thread count
    (a Dask worker's one thread gives the same fit as a process's many).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_ssm(model, points, settings, init, outline)


def _fit_ssm(model: BoneSSM, points: Mapping[str, np.ndarray], settings: FitSettings | None,
             init: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, outline: Outline | None = None) -> FitResult:
    from scipy.spatial import cKDTree

    st = settings or FitSettings()
    t_start = time.perf_counter()
    rng = np.random.default_rng(st.seed)
    bones = [b for b in model.bones if b in points]
    if not bones:
        raise InputError(f"ssm fit: no points for any of the model's bones ({', '.join(model.bones)})")
    data = {}
    for b in bones:
        p = check_points(points[b], b)
        if len(p) > st.max_points:
            p = p[np.sort(rng.choice(len(p), st.max_points, replace=False))]
        data[b] = p
    k = min(st.modes, model.n_modes())
    basis = model.modes[:, :k] * model.std[:k]  # (3V, K): mm per unit z
    rot = {b: np.eye(3) for b in model.bones}
    tra = {b: np.zeros(3) for b in model.bones}
    scl = {b: 1.0 for b in model.bones}
    for b, (r0, t0) in (init or {}).items():
        rot[b], tra[b] = np.asarray(r0, float), np.asarray(t0, float)
    z = np.zeros(k)
    n_pose = 7 if st.scale else 6
    n_par = n_pose * len(bones) + k
    prev = None
    it = 0
    rms, inl = {}, {}
    verts = model.vertices(z)  # the current shape, updated at the end of each iteration
    coarse = st.coarse_tol_mm > 0
    use_outline = outline is not None and outline.bone in bones and outline.weight > 0 and len(outline.points) > 0
    edges = _unique_edges(model.faces[outline.bone]) if use_outline else None
    for it in range(1, st.iterations + 1):
        h = np.zeros((n_par, n_par))
        g = np.zeros(n_par)
        n_w = 0.0
        h_o, g_o, n_o = np.zeros((n_par, n_par)), np.zeros(n_par), 0.0  # the outline term's
        centre: dict[str, np.ndarray] = {}
        for j, b in enumerate(bones):
            sl = model.bone_slice(b)
            world = scl[b] * verts[sl] @ rot[b].T + tra[b]
            if coarse:  # the nearest vertex and its normal (module doc: two phases)
                dist, near = cKDTree(world).query(data[b])
                y, nrm = world[near], _vertex_normals(world, model.faces[b])[near]
                vid, bary = (near + sl.start)[:, None], np.ones((len(near), 1))
            else:  # the exact closest surface point and its triangle's normal
                face, bary, dist = closest_points(world, model.faces[b], data[b])
                tri = world[model.faces[b][face]]
                nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
                nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
                y = np.einsum("nj,njk->nk", bary, tri)
                vid = model.faces[b][face] + sl.start
            tau = max(st.outlier_mm, st.outlier_k * float(np.median(dist)))
            w = (dist <= tau).astype(np.float64)
            if w.sum() < MIN_POINTS:
                raise InputError(f"ssm fit: {b}: fewer than {MIN_POINTS} points lie near the model; is the pose far off?")
            rms[b] = float(np.sqrt((w * dist**2).sum() / w.sum()))
            inl[b] = float(w.mean())
            # point-to-plane residuals r = n . (y - p) of the closest surface points y
            r = (nrm * (y - data[b])).sum(1)
            c = centre[b] = (w @ y) / w.sum()  # rotations about the points' centroid
            a = np.einsum("nj,njdk->ndk", bary, basis.reshape(-1, 3, k)[vid])  # model-frame d x / d z
            cols = [np.cross(y - c, nrm), nrm]  # d r / d omega, d r / d t
            if st.scale:
                cols.append((nrm * (y - tra[b])).sum(1, keepdims=True))  # d r / d log s
            cols.append(scl[b] * np.einsum("nd,de,nek->nk", nrm, rot[b], a))  # d r / d z
            jac = np.concatenate(cols, 1)
            idx = np.r_[np.arange(j * n_pose, (j + 1) * n_pose), np.arange(n_par - k, n_par)]
            h[np.ix_(idx, idx)] += (jac * w[:, None]).T @ jac
            g[idx] += (jac * w[:, None]).T @ r
            n_w += w.sum()
            if use_outline and b == outline.bone:
                r_o, jac_o, dist_o = _outline_rows(world, model.faces[b], edges, outline, c,
                                                   basis.reshape(-1, 3, k)[sl], rot[b], scl[b], tra[b], st.scale)
                if len(r_o):
                    tau_o = max(st.outlier_mm, st.outlier_k * float(np.median(dist_o)))
                    w_o = (dist_o <= tau_o).astype(np.float64)
                    h_o[np.ix_(idx, idx)] += (jac_o * w_o[:, None]).T @ jac_o
                    g_o[idx] += (jac_o * w_o[:, None]).T @ r_o
                    n_o += w_o.sum()
        # Gauss-Newton step of (1/N) sum w r^2 + reg |z|^2, the pose lightly damped
        h /= n_w
        g /= n_w
        if n_o > 0:
            h += outline.weight * h_o / n_o
            g += outline.weight * g_o / n_o
        h[-k:, -k:] += st.reg * np.eye(k)
        g[-k:] += st.reg * z
        h[: n_par - k, : n_par - k] += 1e-6 * np.eye(n_par - k)
        step = -np.linalg.solve(h, g)
        z = z + step[-k:]
        for j, b in enumerate(bones):
            d = step[j * n_pose : (j + 1) * n_pose]
            dr = _rodrigues(d[:3])
            if st.scale:
                scl[b] *= float(np.exp(d[6]))
            rot[b] = dr @ rot[b]
            tra[b] = dr @ (tra[b] - centre[b]) + centre[b] + d[3:6]
        verts = model.vertices(z)
        cur = np.concatenate([scl[b] * verts[model.bone_slice(b)] @ rot[b].T + tra[b] for b in bones])
        moved = np.inf if prev is None else float(np.abs(cur - prev).max())
        prev = cur
        if coarse and (moved < st.coarse_tol_mm or it >= st.iterations - 2):
            coarse = False  # the exact phase from here on
        elif not coarse and moved < st.tol_mm:
            break
    out_v = {b: scl[b] * verts[model.bone_slice(b)] @ rot[b].T + tra[b] for b in model.bones}
    marks = {n: scl[b] * rot[b] @ p + tra[b] for n, p in model.landmarks(z).items() for b in [model.landmark_bones[n]]}
    return FitResult(
        vertices=out_v, faces={b: model.faces[b] for b in model.bones}, z=z,
        rotation={b: rot[b] for b in model.bones}, translation={b: tra[b] for b in model.bones},
        scale={b: scl[b] for b in model.bones}, rms_mm=rms, inliers=inl, iterations=it,
        seconds=time.perf_counter() - t_start, landmarks=marks,
    )


#: Bones the LLP26-based model covers, the registry's with LLP26 parts (the coupled model takes those of them
#: present; a live view: :func:`threeddx.bones.simulated`).
MODEL_BONES: Sequence[str] = _View(lambda: dict.fromkeys(_simulated()))


@dataclass(frozen=True)
class FitBounds:
    """Where a fit stops being believed (:func:`judge_fit`). Chosen on the validation split, never the test
    split (``benchmarks/ssm_bounds.py``; docs/results.md, "Shape-model fits that cannot silently fail"):
    every bound lies well outside what the released model's fits of the validation images reach, and well
    inside what the crumpled fits of the frame defect (issue 27) reached."""

    #: largest |mode weight| in standard deviations of the training shapes (a 15-mode fit of an adult: < 2.3)
    max_mode_sd: float = 3.0
    #: largest rotation of a bone from the AP frame of the view (degrees), over each bone's own bound in the
    #: registry (threeddx.bones: 25 pelvis, 30 sacrum, 40 femurs: the pose ranges of training,
    #: geometry.POSE_RANGES tilt 10, axial 8, in-plane 5, plus, for the femurs, the hip's articulation,
    #: anatomy.HIP_RANGES_DEG, and the model's own reference orientation)
    max_rotation_deg: tuple[tuple[str, float], ...] = ()
    #: largest RMS (mm) of the inliers' distances to the fitted surface (the hip-joint anchoring's bound)
    max_rms_mm: float = 6.0
    #: smallest share of the points that count as inliers
    min_inlier_fraction: float = 0.7
    #: largest share of the model's triangles whose normal the fitted shape turns over (a fold)
    max_folded_fraction: float = 0.002

    def rotation_bound(self, bone: str) -> float:
        own = _REGISTRY.get(bone)
        return dict(self.max_rotation_deg).get(bone, own.max_rotation_deg if own is not None else 30.0)


def folded_fraction(model: BoneSSM, z: np.ndarray, bone: str) -> float:
    """Share of ``bone``'s triangles whose normal the shape ``z`` turns against the mean shape's (0-1).

    A plausible shape deforms the mean smoothly and turns no triangle over; a
    crumpled one (a fit driven far outside the training shapes) folds its
    surface onto itself, and the folds' triangles face the other way.
    """
    sl, f = model.bone_slice(bone), model.faces[bone]

    def normals(v: np.ndarray) -> np.ndarray:
        t = v[sl][f]
        return np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])

    return float(np.mean((normals(model.mean) * normals(model.vertices(z))).sum(1) < 0))


def rotation_angle_deg(r: np.ndarray) -> float:
    """The angle (degrees, 0-180) of a rotation matrix."""
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def judge_fit(model: BoneSSM, fit: FitResult, bounds: FitBounds | None = None) -> dict[str, str]:
    """Bone -> why its fit is implausible (module doc: rejected fits), for the bones that were fitted.

    ``fit`` in the exposure's AP frame (:attr:`threeddx.geometry.XrayGeometry.world_to_ap`), so that its
    rotations are the bones' turns from the orientation the view implies.
    """
    b_ = bounds or FitBounds()
    out: dict[str, str] = {}
    z_max = float(np.max(np.abs(fit.z))) if len(fit.z) else 0.0
    for bone in fit.rms_mm:
        why = []
        if z_max > b_.max_mode_sd:
            why.append(f"a mode weight of {z_max:.1f} SD (over {b_.max_mode_sd:g})")
        angle = rotation_angle_deg(fit.rotation[bone])
        if angle > b_.rotation_bound(bone):
            why.append(f"turned {angle:.0f} deg from the view's AP orientation (over {b_.rotation_bound(bone):g})")
        if fit.rms_mm[bone] > b_.max_rms_mm:
            why.append(f"RMS {fit.rms_mm[bone]:.1f} mm (over {b_.max_rms_mm:g})")
        if fit.inliers[bone] < b_.min_inlier_fraction:
            why.append(f"{100 * fit.inliers[bone]:.0f} % inliers (under {100 * b_.min_inlier_fraction:.0f} %)")
        folded = folded_fraction(model, fit.z, bone)
        if folded > b_.max_folded_fraction:
            why.append(f"{100 * folded:.2f} % of its surface folded over (over {100 * b_.max_folded_fraction:g} %)")
        if why:
            out[bone] = "; ".join(why)
    return out


def view_start(vertices: np.ndarray, points: np.ndarray, geometry, iterations: int = 20) -> np.ndarray:
    """The translation (3,) mm that starts a model bone (``vertices`` (V, 3)) on its points (N, 3) as the view sees it.

    The part of the model that projects onto the detector is centred on the
    points' centroid, re-choosing that part as the model moves (a femur whose
    distal half lies outside the image is matched by its visible proximal
    part, not by its middle): each step halves the error along the bone's
    axis, so a few steps converge. Frames: ``vertices``, ``points`` and
    ``geometry``'s world are one frame (the AP frame, :func:`fit_in_view`).
    """
    inside = geometry.on_detector(points)  # points from a view all are; others (a whole bone's) say nothing of it
    target = (points[inside] if inside.any() else points).mean(0)
    t = target - vertices.mean(0)
    for _ in range(iterations):
        seen = geometry.on_detector(vertices + t)
        if not seen.any():
            break
        step = target - (vertices[seen] + t).mean(0)
        t = t + step
        if np.linalg.norm(step) < 0.1:
            break
    return t


def fit_in_view(model: BoneSSM, points: Mapping[str, np.ndarray], geometry, settings: FitSettings | None = None,
                bounds: FitBounds | None = None, outline: Outline | None = None) -> FitResult:
    """Fit ``model`` to each bone's points as the view sees them; the result in world mm, judged.

    ``points``: per bone (N, 3) mm in the exposure's **AP frame**
    (:attr:`~threeddx.geometry.XrayGeometry.world_to_ap`; back-project through
    ``geometry.in_ap_frame()``), where every bone starts with the orientation an
    AP exposure implies and with its visible part on its points' centroid
    (:func:`view_start`). The fit is judged there (:func:`judge_fit`,
    ``FitResult.rejected``) and mapped to the world by
    :attr:`~threeddx.geometry.XrayGeometry.ap_to_world`. Nothing before that
    last step sees the world frame, so a rigid change of it moves the result with
    it exactly (tests/test_frames.py). ``outline``: a bone's outline on ``geometry``'s pixels (its camera is
    taken to be the AP frame's, the same pixels; module doc, "Outline").
    """
    in_ap = geometry.in_ap_frame()
    init = {b: (np.eye(3), view_start(model.mean[model.bone_slice(b)], check_points(p, b), in_ap))
            for b, p in points.items() if b in model.bones}
    if outline is not None:
        outline = replace(outline, camera=in_ap)
    fit = fit_ssm(model, points, settings, init, outline)
    fit.outline_weight = float(outline.weight) if outline is not None and outline.bone in fit.rms_mm else 0.0
    fit.view_rotation_deg = {b: round(rotation_angle_deg(fit.rotation[b]), 3) for b in fit.rms_mm}
    fit.rejected = judge_fit(model, fit, bounds)
    fit.local_landmarks = dict(fit.landmarks)
    return fit.transformed(geometry.ap_to_world)


def complete_bones(points: Mapping[str, np.ndarray], geometry, settings: FitSettings | None = None,
                   bounds: FitBounds | None = None) -> dict[str, FitResult]:
    """Fit the training-split shape model to each bone's points (AP frame of ``geometry``, mm): bone -> its
    fit (:func:`fit_in_view`: started from the data and the view, judged, in world mm).

    Per bone (default: one model and one fit per bone), or with
    ``settings.coupled`` one model of all the given bones sharing the shape
    weights (each bone keeps its own pose, the hips articulate).
    """
    st = settings or FitSettings()
    subjects = st.subjects
    unknown = [b for b in points if b not in MODEL_BONES]
    if unknown:
        raise InputError(f"ssm: no shape model for {', '.join(unknown)} (have: {', '.join(MODEL_BONES)})")
    bones = [b for b in MODEL_BONES if b in points]
    if st.coupled and len(bones) > 1:
        fit = fit_in_view(training_ssm(bones, subjects), points, geometry, st, bounds)
        return {b: fit for b in bones}
    return {b: fit_in_view(training_ssm([b], subjects), {b: points[b]}, geometry, st, bounds) for b in bones}


def complete_bones_each(points: Mapping[str, np.ndarray], geometry, settings: FitSettings | None = None,
                        bounds: FitBounds | None = None) -> dict:
    """Like :func:`complete_bones`, but a bone that cannot be fitted gives its InputError, not a failure.

    (With ``coupled``, a failing bone is dropped from the joint fit and the
    others are fitted together.)
    """
    out: dict = {}
    pts = dict(points)
    for b in list(pts):
        try:
            check_points(pts[b], b)
        except InputError as e:
            out[b] = e
            del pts[b]
    if pts:
        try:
            out.update(complete_bones(pts, geometry, settings, bounds))
        except InputError:
            for b, p in pts.items():
                try:
                    out.update(complete_bones({b: p}, geometry, settings, bounds))
                except InputError as e:
                    out[b] = e
    return out


def outside_fraction(mesh, geometry) -> float:
    """Fraction of a mesh's surface area (0-1) whose faces project outside the detector."""
    out = ~geometry.on_detector(np.asarray(mesh.vertices))[mesh.faces].all(axis=1)
    return float(mesh.area_faces[out].sum() / max(mesh.area, 1e-12))
