"""Integer grid points covered by 2D triangles (the core of voxelising and silhouettes)."""
from __future__ import annotations

import numpy as np


def points_in_triangles(
    p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, ...]:
    """All integer points (u, v) inside 2D triangles, with barycentric weights.

    Args:
        p0, p1, p2: (T, 2) triangle corners in continuous grid units (u, v).
        shape: optional (nu, nv): keep only points with 0 <= u < nu, 0 <= v < nv.

    Returns:
        ``(tri, u, v, w0, w1, w2)``: for every covered point, its triangle's index,
        its integer coordinates and the barycentric weights of the three corners.
        Degenerate (zero-area) triangles cover nothing. Points exactly on an edge
        may be reported for both neighbours; callers jitter the grid to avoid ties.
    """
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    lo = np.ceil(np.minimum(np.minimum(p0, p1), p2)).astype(np.int64)
    hi = np.floor(np.maximum(np.maximum(p0, p1), p2)).astype(np.int64)
    if shape is not None:
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, np.array(shape) - 1)
    w = np.clip(hi[:, 0] - lo[:, 0] + 1, 0, None)
    h = np.clip(hi[:, 1] - lo[:, 1] + 1, 0, None)
    counts = w * h
    tri = np.repeat(np.arange(len(p0)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    u = lo[tri, 0] + local % w[tri]
    v = lo[tri, 1] + local // w[tri]
    e0 = p1[tri] - p0[tri]
    e1 = p2[tri] - p0[tri]
    du, dv = u - p0[tri, 0], v - p0[tri, 1]
    den = e0[:, 0] * e1[:, 1] - e1[:, 0] * e0[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        w1 = (du * e1[:, 1] - e1[:, 0] * dv) / den
        w2 = (e0[:, 0] * dv - du * e0[:, 1]) / den
        w0 = 1.0 - w1 - w2
    ok = (np.abs(den) > 1e-12) & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    return tri[ok], u[ok], v[ok], w0[ok], w1[ok], w2[ok]
