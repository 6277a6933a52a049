"""Analytic test shapes: voxelisations and exact ray intersections (mm, world LPS)."""
from __future__ import annotations

import numpy as np

from threeddx.io import Volume


def make_volume(shape_zyx=(64, 64, 64), spacing=(1.0, 1.0, 1.0), origin=None, direction=None, fill=0.0) -> Volume:
    """A volume centred on the world origin unless ``origin`` is given."""
    nz, ny, nx = shape_zyx
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    if origin is None:
        half = direction @ (np.array(spacing) * (np.array([nx, ny, nz]) - 1) / 2.0)
        origin = -half
    return Volume(
        array=np.full(shape_zyx, fill, np.float32), spacing=tuple(spacing), origin=tuple(origin), direction=direction
    )


def voxel_centers_world(vol: Volume) -> np.ndarray:
    nz, ny, nx = vol.array.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k], -1).astype(float)
    m = vol.index_to_world
    return idx @ m[:3, :3].T + m[:3, 3]


def ellipsoid_inside(points: np.ndarray, center, semi_axes, rotation=None) -> np.ndarray:
    r = np.eye(3) if rotation is None else np.asarray(rotation)
    local = (points - np.asarray(center)) @ r  # world -> ellipsoid axes
    return np.sum((local / np.asarray(semi_axes)) ** 2, axis=-1) <= 1.0


def ellipsoid_occupancy(vol: Volume, center, semi_axes, rotation=None, partial: bool = False, sub: int = 4) -> np.ndarray:
    """Binary (voxel centre inside) or partial-volume (fraction of sub**3 sub-samples) occupancy."""
    centers = voxel_centers_world(vol)
    if not partial:
        return ellipsoid_inside(centers, center, semi_axes, rotation).astype(np.float32)
    axes = vol.index_to_world[:3, :3]
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    frac = np.zeros(vol.array.shape, np.float32)
    for a in offs:
        for b in offs:
            for c in offs:
                frac += ellipsoid_inside(centers + axes @ np.array([a, b, c]), center, semi_axes, rotation)
    return frac / sub**3


def ray_ellipsoid(src, dirs, center, semi_axes, rotation=None):
    """Exact entry/exit distances along unit rays (N, 3) and the cosines of incidence.

    Returns (hit, t_in, t_out, cos_in, cos_out); cos is |ray . surface normal|.
    """
    r = np.eye(3) if rotation is None else np.asarray(rotation)
    s = np.asarray(semi_axes, float)
    o = ((np.asarray(src) - np.asarray(center)) @ r) / s
    d = (dirs @ r) / s
    a = np.sum(d * d, -1)
    b = 2 * np.sum(o * d, -1)
    c = np.sum(o * o) - 1
    disc = b * b - 4 * a * c
    hit = disc > 0
    sq = np.sqrt(np.maximum(disc, 0))
    t_in = (-b - sq) / (2 * a)
    t_out = (-b + sq) / (2 * a)

    def cos_at(t):
        p_local = (o + t[:, None] * d) * s  # point in ellipsoid axes, mm
        n = p_local / s**2
        n = (n @ r.T)
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-30
        return np.abs(np.sum(n * dirs, -1))

    return hit, t_in, t_out, cos_at(t_in), cos_at(t_out)
