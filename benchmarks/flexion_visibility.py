"""How much of a femur's flexion an AP radiograph shows: the geometry behind issue 31's femur goal.

    .venv/bin/python benchmarks/flexion_visibility.py [--step-deg 1] [--base-deg -8 0 8] [--sizes 256 2048]
        [--edge-noise-px 0.3]

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

Prints one table per detector size (medians over the 44 femurs, the largest in brackets). Pure geometry: no
network, no image; seconds. tests/evaluation/test_flexion_visibility.py checks it against a sphere's exact cone.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform

import numpy as np


def outline_residual(points: np.ndarray, change: np.ndarray, normal: np.ndarray,
                     fields: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-point move across the outline (px) left after the least-squares fit of a 2-D similarity (scale,
    rotation, translation) and, optionally, of other changes.

    ``points`` (N, 2): outline points (px); ``change`` (N,): each one's move across the outline (px, along
    ``normal``, the outline's unit normal (N, 2) in the image); ``fields`` (N, M): other changes' moves across
    the outline per unit, free to combine; ``weights`` (N,): each point's share of the outline (px of length;
    default equal). Only the move across counts: an outline sliding along itself does not change the image."""
    # a similarity's move, [[p, -q], [q, p]] x + t, is linear in (p, q, tx, ty)
    n0, n1 = normal[:, 0], normal[:, 1]
    x, y = points[:, 0], points[:, 1]
    design = np.stack([x * n0 + y * n1, -y * n0 + x * n1, n0, n1], 1)
    if fields is not None:
        design = np.concatenate([design, fields], 1)
    w = np.sqrt(np.ones(len(change)) if weights is None else np.asarray(weights, dtype=np.float64))
    coef, *_ = np.linalg.lstsq(design * w[:, None], change * w, rcond=None)
    return np.abs(change - design @ coef)


def contour_points(mesh, vertices: np.ndarray, normals: np.ndarray,
                   source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the rays graze the surface: the mesh edges along which ``cos(normal, ray)`` changes sign (vertex
    normals, world mm) and, per such edge, the fraction ``t`` of the way from its first vertex to its second
    where it is zero (linear). Returns the edges (E, 2), ``t`` (E,) and the contour's segments (S, 2): pairs of
    those edges that share a face. The contour generator is what makes a bone's edges in a radiograph; a point
    on it moves across the outline only by what moves the outline."""
    ray = vertices - source
    f = (normals * ray).sum(1) / np.linalg.norm(ray, axis=1)
    edges = np.asarray(mesh.edges_unique)
    fi, fj = f[edges[:, 0]], f[edges[:, 1]]
    cross = fi * fj < 0
    index = np.full(len(edges), -1)
    index[cross] = np.arange(cross.sum())
    per_face = index[np.asarray(mesh.faces_unique_edges)]  # (F, 3): each face's crossing edges, -1 elsewhere
    two = (per_face >= 0).sum(1) == 2
    segments = np.sort(per_face[two], 1)[:, 1:]
    return edges[cross], fi[cross] / (fi[cross] - fj[cross]), segments


def femur_changes(mesh, hip: np.ndarray, geometry, base_deg: float, step_deg: float, modes: np.ndarray) -> dict:
    """The outline's changes of one femur (``trimesh.Trimesh``, world mm; hip centre (3,)) for ``step_deg``
    more flexion, rotation and adduction about the hip centre from ``base_deg`` of flexion, for a 1 % larger
    femur and for 1 mm along the central ray, in px of ``geometry``'s detector, on its contour points inside
    the detector (:func:`contour_points`). ``modes`` (V, 3, K): the shape model's modes for this femur's
    vertices (mm per SD), fitted together with the other two turns to each turn's change."""
    from threeddx.geometry import rotation_matrix
    from threeddx.simulator.anatomy import knee_center

    def turned(points: np.ndarray, axis, deg: float) -> np.ndarray:
        return (points - hip) @ rotation_matrix(axis, math.radians(deg)).T + hip

    def proj(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, c, d = geometry.project(v)
        return np.stack([r, c], -1), d

    rot = rotation_matrix((1, 0, 0), math.radians(base_deg))
    base = turned(np.asarray(mesh.vertices), (1, 0, 0), base_deg)
    normals = np.asarray(mesh.vertex_normals) @ rot.T
    modes = np.einsum("ij,vjk->vik", rot, modes)
    edges, t, segments = contour_points(mesh, base, normals, geometry.source_position_world)

    def on_contour(values: np.ndarray) -> np.ndarray:  # per-vertex values (V, ...) at the contour points
        shape = (-1,) + (1,) * (values.ndim - 1)
        return values[edges[:, 0]] * (1 - t).reshape(shape) + values[edges[:, 1]] * t.reshape(shape)

    c0 = on_contour(base)
    p0, _ = proj(c0)
    rows, cols = geometry.detector_shape
    inside = np.isfinite(p0).all(1) & (p0[:, 0] >= 0) & (p0[:, 0] < rows) & (p0[:, 1] >= 0) & (p0[:, 1] < cols)
    step = proj(c0 + 0.1 * on_contour(normals))[0] - p0
    normal2d = (step / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-12))[inside]
    # each contour point's share of the outline's length in the image (px): half of each segment it ends
    keep = inside[segments].all(1)
    length = np.linalg.norm(p0[segments[keep, 0]] - p0[segments[keep, 1]], axis=1)
    weights = np.zeros(len(p0))
    np.add.at(weights, segments[keep].ravel(), np.repeat(length / 2, 2))
    weights = weights[inside]
    p0 = p0[inside]
    # the depth change is the visible surface's mean, as the metrics' beam shift is: vertices weighted by area
    _, d_base = proj(base)
    rv, cv, _ = geometry.project(base)
    seen = (rv >= 0) & (rv < rows) & (cv >= 0) & (cv < cols)
    area = np.zeros(len(base))
    np.add.at(area, np.asarray(mesh.faces).ravel(), np.repeat(mesh.area_faces / 3.0, 3))
    long_axis = hip - knee_center(base)  # as the simulator's articulation takes it

    def across(moved: np.ndarray) -> np.ndarray:  # each contour point's move across the outline (px)
        return ((proj(on_contour(moved)[inside])[0] - p0) * normal2d).sum(1)

    eps = 0.1
    turns = {"flexion": (1, 0, 0), "rotation": long_axis, "adduction": (0, 1, 0)}
    per_unit = {name: across(turned(base, axis, eps)) / eps for name, axis in turns.items()}
    shape_fields = [across(base + eps * modes[:, :, k]) / eps for k in range(modes.shape[2])]
    central = np.asarray(geometry.world_to_source)[:3, :3].T @ np.array([0.0, 0.0, 1.0])  # central ray, world
    out = {}
    for name, moved in [(n, turned(base, axis, step_deg)) for n, axis in turns.items()] + [
        ("size", (base - hip) * 1.01 + hip),
        ("beam", base + central),
    ]:
        change = across(moved)
        res = outline_residual(p0, change, normal2d, weights=weights)
        others = np.stack([f for n, f in per_unit.items() if n != name] + shape_fields, 1)
        res_all = outline_residual(p0, change, normal2d, others, weights)
        out[name] = {
            "depth_mm": float(np.sum(area[seen] * (proj(moved)[1] - d_base)[seen]) / area[seen].sum()),
            "raw_rms": float(np.sqrt(np.mean(change**2))), "raw_max": float(np.abs(change).max()),
            "res_rms": float(np.sqrt(np.mean(res**2))), "res_max": float(res.max()),
            "all_rms": float(np.sqrt(np.mean(res_all**2))), "all_max": float(res_all.max()),
            # the least SD (in units of the change) an unbiased fit of the outline could reach, every edge
            # point read with 1 px of noise per px of outline (Cramer-Rao; scales with the edge noise)
            "floor": float(1.0 / np.sqrt(np.sum(weights * res_all**2))),
        }
    out["visible_mm"] = float(np.ptp(base[seen][:, 2]))
    out["outline_points"] = int(inside.sum())
    out["outline_px"] = float(weights.sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--step-deg", type=float, default=1.0, help="the flexion's change (default 1 degree)")
    ap.add_argument("--base-deg", type=float, nargs="+", default=[-8.0, 0.0, 8.0],
                    help="flexions it starts from (the simulator draws +-8; default -8 0 8)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 2048], help="detector sizes, px (default 256 2048)")
    ap.add_argument("--edge-noise-px", type=float, default=0.3,
                    help="the SD of an edge point's position across the outline, px, for the least-SD column "
                         "(default 0.3: the calibration ball's edge points on noisy films at 2048 px)")
    a = ap.parse_args()
    import trimesh

    from threeddx.geometry import standard_ap_geometry
    from threeddx.simulator.anatomy import PARTS, USABLE_SUBJECTS, ShapePCA, load_shape

    shapes = [load_shape(k) for k in USABLE_SUBJECTS]
    pca = ShapePCA.fit(USABLE_SUBJECTS)
    start, offsets = 0, {}
    for part in PARTS:
        offsets[part] = start
        start += shapes[0].vertices[part].size
    n_modes = len(pca.std)
    print(f"# How much of a femur's flexion an AP image shows ({datetime.date.today()}, {platform.machine()}; "
          f"{len(shapes)} LLP26 adults, both femurs, standard AP preset, hips at its iso-centre; "
          f"medians over the femurs, the largest in brackets)\n")
    for size in a.sizes:
        geometry = standard_ap_geometry((0.0, 0.0, 0.0), size=size)
        print(f"## {size} px ({430 / size:.3f} mm pixels at the detector)\n")
        print("| base flexion (deg) | change | depth change (mm) | outline's change RMS (px) | largest (px) "
              "| left after a 2-D similarity, RMS (px) | largest (px) | left after that, the other two turns "
              f"and {n_modes} shape modes, RMS (px) | largest (px) | least SD of a fit of the outline, edges read "
              f"to {a.edge_noise_px:g} px (deg) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for base_deg in a.base_deg:
            rows = []
            for s in shapes:
                for part, hip in (("femur-l", s.hip_centers[0]), ("femur-r", s.hip_centers[1])):
                    n = s.vertices[part].size
                    modes = (pca.modes[offsets[part]:offsets[part] + n] * pca.std).reshape(-1, 3, n_modes)
                    mesh = trimesh.Trimesh(s.vertices[part], s.faces[part], process=False)
                    rows.append(femur_changes(mesh, hip, geometry, base_deg, a.step_deg, modes))
            for name, label in (("flexion", f"flexion +{a.step_deg:g} deg"),
                                ("rotation", f"rotation +{a.step_deg:g} deg"),
                                ("adduction", f"adduction +{a.step_deg:g} deg"), ("size", "femur 1 % larger"),
                                ("beam", "1 mm along the beam")):
                def col(key: str, fmt: str = "{:.3f}") -> str:
                    v = np.array([r[name][key] for r in rows])
                    big = v[np.argmax(np.abs(v))]
                    return f"{fmt.format(np.median(v))} ({fmt.format(big)})"
                floor = "-"
                if name in ("flexion", "rotation", "adduction"):
                    f = np.array([r[name]["floor"] for r in rows]) * a.edge_noise_px * a.step_deg
                    floor = f"{np.median(f):.2f} ({f.max():.2f})"
                print(f"| {base_deg:+g} | {label} | {col('depth_mm', '{:+.2f}')} | {col('raw_rms')} | "
                      f"{col('raw_max')} | {col('res_rms')} | {col('res_max')} | {col('all_rms')} | "
                      f"{col('all_max')} | {floor} |")
        vis = np.median([r["visible_mm"] for r in rows])
        pts = np.median([r["outline_points"] for r in rows])
        px = np.median([r["outline_px"] for r in rows])
        print(f"\nVisible femur: {vis:.0f} mm of its length inside the detector; its outline {px:.0f} px long, "
              f"{pts:.0f} contour points (medians).\n")


if __name__ == "__main__":
    main()
