"""How much of a femur's flexion an AP radiograph shows: the geometry behind issue 31's femur goal.

    .venv/bin/python benchmarks/flexion_visibility.py [--step-deg 1] [--base-deg -8 0 8] [--sizes 256 2048]
        [--edge-noise-px 0.3] [--bones femur pelvis] [--no-unseen]

Every LLP26 adult's femurs (0-21, the simulator's shapes), the hips at the standard AP preset's iso-centre
(:func:`threeddx.geometry.standard_ap_geometry`). Each femur, flexed from a base angle, is turned by
``--step-deg`` more about its hip-joint centre (flexion: the left-right axis, as
:func:`threeddx.simulator.anatomy.articulate` does; for comparison its rotation about the long axis and its
adduction), made 1 % larger, or moved 1 mm along the central ray, and what that does is measured:

* **depth change**: the mean change of the visible surface's distance from the source (mm; vertices weighted
  by area), what an error of that size costs the femur's placement along the beam (issue 31's goal: a
  beam-shift SD under 2 mm);
* **the outline's change** (px): how far the femur's outline in the image moves across itself, on its contour
  generator (the surface points whose ray grazes it, :func:`contour_points`: the edges a radiograph shows);
  raw, then what is left **after the best 2-D similarity** (scale, in-plane rotation, translation: a femur a
  little larger or smaller, turned or moved in the image plane makes those), then after that **and the other two
  turns and the LLP26 shape model's modes** (all 22 adults: another femur's shape makes those);
* **the least SD** of the flexion (deg) that an unbiased fit of the whole outline could reach, every px of it
  read to ``--edge-noise-px`` across (the Cramer-Rao bound of what the last residual leaves; a fit that knows
  the shape space exactly, so a floor, not a promise).

Then, per detector size, **an outline fit of a bone the shape model does not hold** (:func:`unseen_bias`): each
adult's bone against the shape model of the other 21 adults, the turn that a fit of its outline (free in a 2-D
similarity, the turns and the modes) reads from the part of its shape that model cannot make (first order about
the model's best approximation of it), with the modes free and held to their prior; ``--no-unseen`` leaves these
tables out.

Prints one table per detector size (medians over the 44 femurs, the largest in brackets). Pure geometry: no
network, no image; minutes. tests/evaluation/test_flexion_visibility.py checks it against a sphere's exact cone
and an ellipsoid's.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
from dataclasses import dataclass
from typing import Callable

import numpy as np


def similarity_fields(points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The moves across the outline (N, 4) px of a 2-D similarity's four parameters at ``points`` (N, 2) with
    the outline's unit ``normal`` (N, 2): a similarity's move, [[p, -q], [q, p]] x + t, is linear in
    (p, q, tx, ty)."""
    n0, n1 = normal[:, 0], normal[:, 1]
    x, y = points[:, 0], points[:, 1]
    return np.stack([x * n0 + y * n1, -y * n0 + x * n1, n0, n1], 1)


def outline_residual(points: np.ndarray, change: np.ndarray, normal: np.ndarray,
                     fields: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-point move across the outline (px) left after the least-squares fit of a 2-D similarity (scale,
    rotation, translation) and, optionally, of other changes.

    ``points`` (N, 2): outline points (px); ``change`` (N,): each one's move across the outline (px, along
    ``normal``, the outline's unit normal (N, 2) in the image); ``fields`` (N, M): other changes' moves across
    the outline per unit, free to combine; ``weights`` (N,): each point's share of the outline (px of length;
    default equal). Only the move across counts: an outline sliding along itself does not change the image."""
    design = similarity_fields(points, normal)
    if fields is not None:
        design = np.concatenate([design, fields], 1)
    w = np.sqrt(np.ones(len(change)) if weights is None else np.asarray(weights, dtype=np.float64))
    coef, *_ = np.linalg.lstsq(design * w[:, None], change * w, rcond=None)
    return np.abs(change - design @ coef)


def contour_points(mesh, vertices: np.ndarray, normals: np.ndarray,
                   source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the rays graze the surface (:func:`threeddx.meshing.ssm.contour_generator`; vertex normals, world
    mm): the crossing edges (E, 2), the fraction ``t`` (E,) along each, and the contour's segments (S, 2): pairs
    of those edges that share a face. A point on the contour moves across the outline only by what moves the
    outline."""
    from threeddx.meshing.ssm import contour_generator

    edges = np.asarray(mesh.edges_unique)
    crossing, t = contour_generator(vertices, normals, edges, source)
    index = np.full(len(edges), -1)
    index[crossing] = np.arange(len(crossing))
    per_face = index[np.asarray(mesh.faces_unique_edges)]  # (F, 3): each face's crossing edges, -1 elsewhere
    two = (per_face >= 0).sum(1) == 2
    segments = np.sort(per_face[two], 1)[:, 1:]
    return edges[crossing], t, segments


@dataclass(frozen=True)
class OutlineFrame:
    """A bone's outline in one view, to measure changes against: its contour points inside the detector
    (:func:`contour_points` of ``base``, the mesh's vertices, world mm), their pixels ``points`` (N, 2), the
    outline's unit normal there ``normal`` (N, 2) and each point's share of the outline's length ``weights``
    (N,) px."""

    base: np.ndarray
    points: np.ndarray
    normal: np.ndarray
    weights: np.ndarray
    on_contour: Callable[[np.ndarray], np.ndarray]
    proj: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

    def across(self, moved: np.ndarray) -> np.ndarray:
        """Each contour point's move across the outline (px) when the vertices go to ``moved`` (V, 3)."""
        return ((self.proj(self.on_contour(moved))[0] - self.points) * self.normal).sum(1)

    def field(self, direction: np.ndarray, eps: float = 0.1) -> np.ndarray:
        """The outline's move (px) per unit of the vertex displacement ``direction`` (V, 3) mm (finite
        difference of ``eps`` units)."""
        return self.across(self.base + eps * direction) / eps


def outline_frame(mesh, geometry) -> OutlineFrame:
    """:class:`OutlineFrame` of a bone (``trimesh.Trimesh``, world mm) seen through ``geometry``."""
    base = np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals)
    edges, t, segments = contour_points(mesh, base, normals, geometry.source_position_world)
    rows, cols = geometry.detector_shape

    def proj(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, c, d = geometry.project(v)
        return np.stack([r, c], -1), d

    def on_contour_all(values: np.ndarray) -> np.ndarray:  # per-vertex values (V, ...) at the contour points
        shape = (-1,) + (1,) * (values.ndim - 1)
        return values[edges[:, 0]] * (1 - t).reshape(shape) + values[edges[:, 1]] * t.reshape(shape)

    c0 = on_contour_all(base)
    p0, _ = proj(c0)
    inside = np.isfinite(p0).all(1) & (p0[:, 0] >= 0) & (p0[:, 0] < rows) & (p0[:, 1] >= 0) & (p0[:, 1] < cols)
    step = proj(c0 + 0.1 * on_contour_all(normals))[0] - p0
    normal2d = (step / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-12))[inside]
    # each contour point's share of the outline's length in the image (px): half of each segment it ends
    keep = inside[segments].all(1)
    length = np.linalg.norm(p0[segments[keep, 0]] - p0[segments[keep, 1]], axis=1)
    weights = np.zeros(len(p0))
    np.add.at(weights, segments[keep].ravel(), np.repeat(length / 2, 2))
    return OutlineFrame(base, p0[inside], normal2d, weights[inside],
                        lambda values: on_contour_all(values)[inside], proj)


def turned(points: np.ndarray, centre: np.ndarray, axis, deg: float) -> np.ndarray:
    """``points`` (..., 3) turned by ``deg`` about ``axis`` (3,) through ``centre`` (world mm)."""
    from threeddx.geometry import rotation_matrix

    return (points - centre) @ rotation_matrix(axis, math.radians(deg)).T + centre


def unit_fields(frame: OutlineFrame, turns: dict, centre: np.ndarray, eps_deg: float = 0.1) -> dict[str, np.ndarray]:
    """Per turn (name -> axis (3,), world; about ``centre``) the outline's move (px) per degree."""
    return {name: frame.across(turned(frame.base, centre, axis, eps_deg)) / eps_deg for name, axis in turns.items()}


#: A turn whose outline's move a 2-D similarity takes all but this share of (RMS) lies in the image plane.
IN_PLANE = 0.02


def outline_changes(mesh, centre: np.ndarray, geometry, turns: dict, modes: np.ndarray, step_deg: float,
                    probe: np.ndarray | None = None) -> dict:
    """What each of ``turns`` (name -> axis (3,), world; by ``step_deg`` about ``centre``), a 1 % larger bone
    (about ``centre``) and 1 mm along the central ray do to a bone (``trimesh.Trimesh``, world mm): the visible
    surface's mean depth change (mm), ``probe``'s depth change (mm; a point that moves with the bone, e.g. a hip
    joint), and its outline's move across itself on the contour points inside the detector
    (:func:`contour_points`; px of ``geometry``): raw, after a similarity, after that and the other turns and
    ``modes`` (V, 3, K: the shape model's modes for the mesh's vertices, mm per SD), and the least SD of an
    unbiased fit of the outline with 1 px of edge noise (Cramer-Rao; scales with the noise)."""
    frame = outline_frame(mesh, geometry)
    base, p0, normal2d, weights, across = frame.base, frame.points, frame.normal, frame.weights, frame.across
    proj, rows, cols = frame.proj, *geometry.detector_shape
    # the depth change is the visible surface's mean, as the metrics' beam shift is: vertices weighted by area
    p_base, d_base = proj(base)
    seen = (p_base[:, 0] >= 0) & (p_base[:, 0] < rows) & (p_base[:, 1] >= 0) & (p_base[:, 1] < cols)
    area = np.zeros(len(base))
    np.add.at(area, np.asarray(mesh.faces).ravel(), np.repeat(mesh.area_faces / 3.0, 3))

    per_unit = unit_fields(frame, turns, centre)
    shape_fields = [frame.field(modes[:, :, k]) for k in range(modes.shape[2])]
    central = np.asarray(geometry.world_to_source)[:3, :3].T @ np.array([0.0, 0.0, 1.0])  # central ray, world
    probe = centre if probe is None else np.asarray(probe, dtype=np.float64)
    out = {}
    for name, move in [(n, lambda v, ax=ax: turned(v, centre, ax, step_deg)) for n, ax in turns.items()] + [
        ("size", lambda v: (v - centre) * 1.01 + centre),
        ("beam", lambda v: v + central),
    ]:
        moved = move(base)
        change = across(moved)
        res = outline_residual(p0, change, normal2d, weights=weights)
        others = np.stack([f for n, f in per_unit.items() if n != name] + shape_fields, 1)
        res_all = outline_residual(p0, change, normal2d, others, weights)
        out[name] = {
            "depth_mm": float(np.sum(area[seen] * (proj(moved)[1] - d_base)[seen]) / area[seen].sum()),
            "probe_mm": float(proj(move(probe[None]))[1][0] - proj(probe[None])[1][0]),
            "raw_rms": float(np.sqrt(np.mean(change**2))), "raw_max": float(np.abs(change).max()),
            "res_rms": float(np.sqrt(np.mean(res**2))), "res_max": float(res.max()),
            "all_rms": float(np.sqrt(np.mean(res_all**2))), "all_max": float(res_all.max()),
            "floor": float(1.0 / np.sqrt(np.sum(weights * res_all**2))),
        }
    out["visible_mm"] = float(np.ptp(base[seen][:, 2]))
    out["outline_points"] = len(p0)
    out["outline_px"] = float(weights.sum())
    return out


def _based(mesh, centre: np.ndarray, modes: np.ndarray, axis, deg: float):
    """The mesh and its modes turned by ``deg`` about ``axis`` through ``centre`` (the base pose)."""
    import trimesh

    from threeddx.geometry import rotation_matrix

    rot = rotation_matrix(axis, math.radians(deg))
    moved = trimesh.Trimesh((np.asarray(mesh.vertices) - centre) @ rot.T + centre, mesh.faces, process=False)
    return moved, np.einsum("ij,vjk->vik", rot, modes)


def posed(bone: str, mesh, centre: np.ndarray, modes: np.ndarray, base_deg: float) -> tuple:
    """A bone in its base pose and its turns: (mesh, modes, the point it turns about, turns (name -> axis,
    world), probe). A femur (``centre``: its hip centre) is flexed ``base_deg`` about the hip and turns by its
    flexion (the left-right axis), rotation (about its long axis, hip to knee, as the simulator's articulation
    takes it) and adduction (the antero-posterior axis); a pelvis (``centre``: its two hip joints (2, 3)) is
    tilted ``base_deg`` about the joints' mid-point and turns by its tilt (the left-right axis), its turn about
    the body's long axis and its obliquity (the antero-posterior axis), its probe the left hip joint, whose depth
    the femur's anchoring takes (a turn moves the two joints oppositely along the beam)."""
    from threeddx.simulator.anatomy import knee_center

    if bone == "femur":
        mesh, modes = _based(mesh, centre, modes, (1, 0, 0), base_deg)
        long_axis = centre - knee_center(np.asarray(mesh.vertices))
        return mesh, modes, centre, {"flexion": (1, 0, 0), "rotation": long_axis, "adduction": (0, 1, 0)}, None
    joints = np.asarray(centre, dtype=np.float64)
    mid = joints.mean(0)
    mesh, modes = _based(mesh, mid, modes, (1, 0, 0), base_deg)
    left = turned(joints[0], mid, (1, 0, 0), base_deg)
    return mesh, modes, mid, {"tilt": (1, 0, 0), "turn": (0, 0, 1), "obliquity": (0, 1, 0)}, left


def femur_changes(mesh, hip: np.ndarray, geometry, base_deg: float, step_deg: float, modes: np.ndarray) -> dict:
    """:func:`outline_changes` of a femur flexed ``base_deg`` about its hip centre ``hip`` (:func:`posed`)."""
    mesh, modes, centre, turns, _ = posed("femur", mesh, hip, modes, base_deg)
    return outline_changes(mesh, centre, geometry, turns, modes, step_deg)


def pelvis_changes(mesh, joints: np.ndarray, geometry, base_deg: float, step_deg: float, modes: np.ndarray) -> dict:
    """:func:`outline_changes` of a pelvis tilted ``base_deg`` about its hip joints' mid-point (:func:`posed`)."""
    mesh, modes, centre, turns, probe = posed("pelvis", mesh, joints, modes, base_deg)
    return outline_changes(mesh, centre, geometry, turns, modes, step_deg, probe=probe)


def best_approximation(truth: np.ndarray, mean: np.ndarray, modes: np.ndarray,
                       iterations: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a shape model that does not hold this bone makes of it: ``R (mean + modes z) + t`` nearest to
    ``truth`` (V, 3) mm in least squares over the corresponding vertices (Kabsch and linear least squares in
    turn). ``mean`` (V, 3), ``modes`` (V, 3, K) mm per SD. Returns the approximation (V, 3), its modes turned
    into its pose (V, 3, K) and ``z`` (K,) SD."""
    from threeddx.meshing.ssm import rigid_align

    k = modes.shape[2]
    z = np.zeros(k)
    for _ in range(iterations):
        r, t = rigid_align(mean + modes @ z, truth)
        turned = np.einsum("ij,vjk->vik", r, modes)
        z = np.linalg.lstsq(turned.reshape(-1, k), (truth - mean @ r.T - t).ravel(), rcond=None)[0]
    r, t = rigid_align(mean + modes @ z, truth)
    return (mean + modes @ z) @ r.T + t, np.einsum("ij,vjk->vik", r, modes), z


def unseen_bias(mesh, centre: np.ndarray, geometry, turns: dict, mean: np.ndarray, modes: np.ndarray,
                noise_px: float) -> dict:
    """How far a fit of a bone's outline reads each of ``turns`` (degrees) when the bone (``mesh``, the truth,
    world mm) is not in the shape model (``mean`` (V, 3) and ``modes`` (V, 3, K) mm per SD, of other people;
    first order about the model's best approximation of the truth, :func:`best_approximation`; the fit free in
    a 2-D similarity, the turns and the modes):

    * ``free``: the modes free (an unbiased fit): the shape the model cannot make, read as a turn;
    * ``map``, ``map_sd``: the modes held to their prior N(0, 1) around the mean shape and every px of outline
      read to ``noise_px`` across (the maximum a-posteriori fit): its error and its SD from the noise.

    A turn in the image plane (its outline's move a similarity's, :data:`IN_PLANE`) is left to the similarity
    and absent. Also the approximation's vertex residual RMS (mm) and its move of the outline RMS (px)."""
    frame = outline_frame(mesh, geometry)
    approx, turned, z = best_approximation(frame.base, mean, modes)
    change = frame.across(approx)  # the model's best outline against the truth's
    sim = similarity_fields(frame.points, frame.normal)
    fields = {}  # a turn in the image plane is the similarity's own rotation: left to it
    for name, f in unit_fields(frame, turns, centre).items():
        if np.sqrt(np.mean(outline_residual(frame.points, f, frame.normal, weights=frame.weights) ** 2)) \
                >= IN_PLANE * np.sqrt(np.mean(f**2)):
            fields[name] = f
    shape = np.stack([frame.field(turned[:, :, k]) for k in range(turned.shape[2])], 1)
    design = np.concatenate([sim, np.stack(list(fields.values()), 1), shape], 1)
    w = frame.weights
    n_free = 4 + len(fields)
    free = np.linalg.lstsq(design * np.sqrt(w)[:, None], -change * np.sqrt(w), rcond=None)[0]
    prior = np.r_[np.zeros(n_free), np.ones(shape.shape[1])]
    h = (design * w[:, None]).T @ design / noise_px**2 + np.diag(prior) + 1e-9 * np.eye(len(prior))
    cov = np.linalg.inv(h)
    fit = cov @ ((design * w[:, None]).T @ -change / noise_px**2 - np.r_[np.zeros(n_free), z])
    out = {name: {"free": float(free[4 + i]), "map": float(fit[4 + i]), "map_sd": float(np.sqrt(cov[4 + i, 4 + i]))}
           for i, name in enumerate(fields)}
    out["shape_rms_mm"] = float(np.sqrt(np.mean(np.sum((approx - frame.base) ** 2, 1))))
    out["outline_rms_px"] = float(np.sqrt(np.average(change**2, weights=w)))
    return out


#: Per bone: the turns in the table's order (the first is the base pose's), and the label of its base angle.
TURNS = {"femur": (("flexion", "rotation", "adduction"), "flexion"),
         "pelvis": (("tilt", "turn", "obliquity"), "pelvic tilt")}


def bone_cases(bone: str, shapes: list, pca) -> list[tuple]:
    """(mesh, centre or joints, modes (V, 3, K) mm per SD, the model's mean (V, 3)) per LLP26 adult in
    ``shapes`` (both femurs for ``femur``), of the shape model ``pca``."""
    import trimesh

    from threeddx.simulator.anatomy import PARTS

    start, offsets = 0, {}
    for part in PARTS:
        offsets[part] = start
        start += shapes[0].vertices[part].size
    k = len(pca.std)

    def modes_of(part: str) -> np.ndarray:
        n = shapes[0].vertices[part].size
        return (pca.modes[offsets[part]:offsets[part] + n] * pca.std).reshape(-1, 3, k)

    def mean_of(part: str) -> np.ndarray:
        return pca.mean[offsets[part]:offsets[part] + shapes[0].vertices[part].size].reshape(-1, 3)

    cases = []
    for s in shapes:
        if bone == "femur":
            for part, hip in (("femur-l", s.hip_centers[0]), ("femur-r", s.hip_centers[1])):
                cases.append((trimesh.Trimesh(s.vertices[part], s.faces[part], process=False), hip, modes_of(part),
                              mean_of(part)))
        else:
            parts = ("hemipelvis-left", "hemipelvis-right", "sacrum")
            verts = [s.vertices[p] for p in parts]
            first = np.cumsum([0] + [len(v) for v in verts[:-1]])
            faces = np.concatenate([s.faces[p] + f for p, f in zip(parts, first)])
            mesh = trimesh.Trimesh(np.concatenate(verts), faces, process=False)
            cases.append((mesh, s.hip_centers, np.concatenate([modes_of(p) for p in parts]),
                          np.concatenate([mean_of(p) for p in parts])))
    return cases


def print_unseen(bone: str, cases: list, geometry, base_degs, noise_px: float, size: int) -> None:
    """The table of :func:`unseen_bias` over ``cases`` (each adult's bones with the other adults' shape model)."""
    names, base_label = TURNS[bone]
    print(f"### {bone}, {size} px: an outline fit of a {bone} the shape model does not hold (each adult against "
          f"the {len(cases) and cases[0][2].shape[2] + 1} others' model; degrees, RMS over the bones, the largest "
          f"in brackets)\n")
    print(f"| base {base_label} (deg) | turn | read from the shape the model lacks, modes free | modes held to their "
          f"prior, edges read to {noise_px:g} px: error | its SD from the edge noise | both, RMS |")
    print("|---" * 6 + "|")
    shape_mm, outline_px = [], []
    for base_deg in base_degs:
        rows = []
        for mesh, centre, modes, mean in cases:
            m, _, c, turns, _ = posed(bone, mesh, centre, modes, base_deg)
            rows.append(unseen_bias(m, c, geometry, turns, mean, modes, noise_px))
        shape_mm += [r["shape_rms_mm"] for r in rows]
        outline_px += [r["outline_rms_px"] for r in rows]
        for name in names:
            if any(name not in r for r in rows):
                print(f"| {base_deg:+g} | {name} | - (in the image plane: a similarity's own) | - | - | - |")
                continue

            def rms(key: str) -> str:
                v = np.array([r[name][key] for r in rows])
                return f"{np.sqrt(np.mean(v**2)):.2f} ({v[np.argmax(np.abs(v))]:+.2f})"
            both = np.sqrt(np.mean([r[name]["map"] ** 2 + r[name]["map_sd"] ** 2 for r in rows]))
            print(f"| {base_deg:+g} | {name} | {rms('free')} | {rms('map')} | {rms('map_sd')} | {both:.2f} |")
    print(f"\nThe shape the model lacks: vertex RMS {np.median(shape_mm):.2f} mm, its outline's move RMS "
          f"{np.median(outline_px):.2f} px (medians).\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bones", nargs="+", choices=list(TURNS), default=list(TURNS))
    ap.add_argument("--step-deg", type=float, default=1.0, help="each turn's change (default 1 degree)")
    ap.add_argument("--base-deg", type=float, nargs="+", default=[-8.0, 0.0, 8.0],
                    help="flexions (femur) or pelvic tilts it starts from (the simulator draws +-8 degrees of "
                         "flexion; default -8 0 8)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 2048], help="detector sizes, px (default 256 2048)")
    ap.add_argument("--edge-noise-px", type=float, default=0.3,
                    help="the SD of an edge point's position across the outline, px, for the least-SD column "
                         "(default 0.3: the calibration ball's edge points on noisy films at 2048 px)")
    ap.add_argument("--no-unseen", action="store_true",
                    help="leave out the tables of an outline fit of a bone the shape model does not hold")
    a = ap.parse_args()
    from threeddx.geometry import standard_ap_geometry
    from threeddx.simulator.anatomy import USABLE_SUBJECTS, ShapePCA, load_shape

    shapes = [load_shape(k) for k in USABLE_SUBJECTS]
    pca = ShapePCA.fit(USABLE_SUBJECTS)
    n_modes = len(pca.std)
    vectors = np.stack([sh.as_vector() for sh in shapes])
    loo_cases = {}  # per bone: each adult's bones with the shape model of the other adults
    for bone in [] if a.no_unseen else a.bones:
        loo_cases[bone] = [c for i, sh in enumerate(shapes) for c in bone_cases(
            bone, [sh], ShapePCA.from_vectors(np.delete(vectors, i, 0), [k for k in USABLE_SUBJECTS if k != i]))]
    print(f"# How much of a bone's turn an AP image shows ({datetime.date.today()}, {platform.machine()}; "
          f"{len(shapes)} LLP26 adults, standard AP preset, hips at its iso-centre; medians over the bones, the "
          f"largest in brackets)\n")
    for bone in a.bones:
        names, base_label = TURNS[bone]
        cases = bone_cases(bone, shapes, pca)
        changes = femur_changes if bone == "femur" else pelvis_changes
        for size in a.sizes:
            geometry = standard_ap_geometry((0.0, 0.0, 0.0), size=size)
            print(f"## {bone}, {size} px ({430 / size:.3f} mm pixels at the detector)\n")
            print(f"| base {base_label} (deg) | change | depth change (mm) | "
                  + ("left hip joint's depth change (mm) | " if bone == "pelvis" else "")
                  + "outline's change RMS (px) | largest (px) | left after a 2-D similarity, RMS (px) | largest (px) "
                  f"| left after that, the other two turns and {n_modes} shape modes, RMS (px) | largest (px) | "
                  f"least SD of a fit of the outline, edges read to {a.edge_noise_px:g} px (deg) |")
            print("|---" * (10 + (bone == "pelvis")) + "|")
            for base_deg in a.base_deg:
                rows = [changes(mesh, centre, geometry, base_deg, a.step_deg, modes) for mesh, centre, modes, _ in cases]
                for name, label in [(n, f"{n} +{a.step_deg:g} deg") for n in names] + [
                        ("size", f"{bone} 1 % larger"), ("beam", "1 mm along the beam")]:
                    def col(key: str, fmt: str = "{:.3f}") -> str:
                        v = np.array([r[name][key] for r in rows])
                        big = v[np.argmax(np.abs(v))]
                        return f"{fmt.format(np.median(v))} ({fmt.format(big)})"
                    floor = "-"
                    if name in names:
                        f = np.array([r[name]["floor"] for r in rows]) * a.edge_noise_px * a.step_deg
                        in_plane = np.median([r[name]["res_rms"] / r[name]["raw_rms"] for r in rows]) < IN_PLANE
                        floor = "- (in the image plane: a similarity's own)" if in_plane else \
                            f"{np.median(f):.3f} ({f.max():.3f})"
                    probe = f" {col('probe_mm', '{:+.2f}')} |" if bone == "pelvis" else ""
                    print(f"| {base_deg:+g} | {label} | {col('depth_mm', '{:+.2f}')} |{probe} {col('raw_rms')} | "
                          f"{col('raw_max')} | {col('res_rms')} | {col('res_max')} | {col('all_rms')} | "
                          f"{col('all_max')} | {floor} |")
            vis = np.median([r["visible_mm"] for r in rows])
            pts = np.median([r["outline_points"] for r in rows])
            px = np.median([r["outline_px"] for r in rows])
            print(f"\nVisible: {vis:.0f} mm of the {bone}'s height inside the detector; its outline {px:.0f} px long, "
                  f"{pts:.0f} contour points (medians).\n")
            if not a.no_unseen:
                print_unseen(bone, loo_cases[bone], geometry, a.base_deg, a.edge_noise_px, size)


if __name__ == "__main__":
    main()
