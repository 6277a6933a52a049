"""Analytic test shapes: voxelisations and exact ray intersections (mm, world LPS); the example with a painted ball."""
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
    return occupancy(vol, lambda p: ellipsoid_inside(p, center, semi_axes, rotation), partial, sub)


def occupancy(vol: Volume, inside, partial: bool = False, sub: int = 4) -> np.ndarray:
    """Binary (voxel centre inside) or partial-volume (fraction of sub**3 sub-samples) occupancy, (z, y, x)
    float32, of a solid given by ``inside`` ((N, 3) world mm -> (N,) bool)."""
    c = voxel_centers_world(vol).reshape(-1, 3)
    if not partial:
        return inside(c).reshape(vol.array.shape).astype(np.float32)
    axes = vol.index_to_world[:3, :3]
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    frac = np.zeros(len(c), np.float32)
    for a in offs:
        for b in offs:
            for d in offs:
                frac += inside(c + axes @ np.array([a, b, d]))
    return (frac / sub**3).reshape(vol.array.shape)


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


# ------------------------------------------------------------------ shapes that a ray crosses several times
def sphere_hits(src, dirs, center, radius):
    """Exact entry/exit distances of unit rays (N, 3) through a sphere: (hit, t_in, t_out)."""
    o = np.asarray(src, float) - np.asarray(center, float)
    b = dirs @ o
    disc = b * b - (o @ o - radius**2)
    sq = np.sqrt(np.maximum(disc, 0.0))
    return disc > 0, -b - sq, -b + sq


class MultiShape:
    """A solid whose rays may cross it several times, with its exact crossings (world mm).

    ``inside(points)`` (N, 3) -> bool; ``crossings(src, dirs)`` -> (N, M) distances along each unit
    ray in increasing order, NaN-padded (entries and exits alternate, an even count per ray);
    ``gradient(points)`` the implicit function's gradient (its direction is the surface normal).
    """

    def __init__(self, kind: str, **p):
        self.kind, self.p = kind, p

    def grown(self, delta: float) -> "MultiShape":
        """The solid grown by ``delta`` mm outwards (shrunk for delta < 0): its surfaces offset along their normals."""
        p = self.p
        if self.kind == "hollow_sphere":
            return MultiShape(self.kind, center=p["center"], outer=p["outer"] + delta, inner=p["inner"] - delta)
        if self.kind == "spheres":
            return MultiShape(self.kind, balls=[(c, r + delta) for c, r in p["balls"]])
        return MultiShape(self.kind, center=p["center"], major=p["major"], minor=p["minor"] + delta)

    def intervals(self, src, dirs) -> np.ndarray:
        """The number of bone intervals along each ray, (N,)."""
        return np.sum(np.isfinite(self.crossings(src, dirs)), axis=1) // 2

    def inside(self, x: np.ndarray) -> np.ndarray:
        p = self.p
        if self.kind == "hollow_sphere":
            r = np.linalg.norm(x - p["center"], axis=-1)
            return (r <= p["outer"]) & (r >= p["inner"])
        if self.kind == "spheres":
            return np.any([np.linalg.norm(x - c, axis=-1) <= rad for c, rad in p["balls"]], axis=0)
        if self.kind == "torus":  # axis along world z, through ``center``
            q = x - p["center"]
            return (np.hypot(q[:, 0], q[:, 1]) - p["major"]) ** 2 + q[:, 2] ** 2 <= p["minor"] ** 2
        raise ValueError(self.kind)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        p = self.p
        if self.kind == "hollow_sphere":
            return x - p["center"]
        if self.kind == "spheres":
            d = np.stack([np.linalg.norm(x - c, axis=-1) - rad for c, rad in p["balls"]])
            c = np.asarray([c for c, _ in p["balls"]], float)[np.argmin(np.abs(d), axis=0)]
            return x - c
        q = x - p["center"]
        rho = np.hypot(q[:, 0], q[:, 1])
        k = (rho - p["major"]) / np.maximum(rho, 1e-12)
        return np.stack([k * q[:, 0], k * q[:, 1], q[:, 2]], axis=-1)

    def crossings(self, src, dirs) -> np.ndarray:
        p, n = self.p, len(dirs)
        if self.kind == "hollow_sphere":
            ho, a, d = sphere_hits(src, dirs, p["center"], p["outer"])
            hi, b, c = sphere_hits(src, dirs, p["center"], p["inner"])
            t = np.full((n, 4), np.nan)
            t[ho, 0], t[ho, 3] = a[ho], d[ho]
            t[ho & hi, 1], t[ho & hi, 2] = b[ho & hi], c[ho & hi]
        elif self.kind == "spheres":  # disjoint balls
            cols = []
            for c, rad in p["balls"]:
                h, a, b = sphere_hits(src, dirs, c, rad)
                cols += [np.where(h, a, np.nan), np.where(h, b, np.nan)]
            t = np.stack(cols, axis=1)
        else:  # the torus: a quartic in t, |o + t d|^2 terms
            R, r = p["major"], p["minor"]
            t = np.full((n, 4), np.nan)
            for i, d in enumerate(dirs):
                tc = -float(d @ (np.asarray(src, float) - p["center"]))  # solve near the closest approach: s = t - tc
                o = np.asarray(src, float) + tc * d - p["center"]
                od, oo = d @ o, o @ o
                k = oo - R**2 - r**2
                coef = [1.0, 4 * od, 4 * od**2 + 2 * k + 4 * R**2 * d[2] ** 2,
                        4 * od * k + 8 * R**2 * o[2] * d[2], k**2 - 4 * R**2 * (r**2 - o[2] ** 2)]
                roots = np.roots(coef)
                real = np.sort(roots[np.abs(roots.imag) < 1e-6].real)
                if len(real) in (2, 4):
                    t[i, : len(real)] = tc + real
        return np.sort(t, axis=1)  # NaNs last

    def cosines(self, src, dirs, t: np.ndarray) -> np.ndarray:
        """|ray . surface normal| at each crossing (N, M), NaN where there is none."""
        pts = np.asarray(src, float)[None, None] + t[..., None] * dirs[:, None]
        g = self.gradient(np.nan_to_num(pts).reshape(-1, 3)).reshape(pts.shape)
        g /= np.linalg.norm(g, axis=-1, keepdims=True) + 1e-30
        return np.where(np.isfinite(t), np.abs(np.sum(g * dirs[:, None], axis=-1)), np.nan)


def k_faces(crossings: np.ndarray, faces: int) -> tuple[np.ndarray, np.ndarray]:
    """The K faces of each ray (threeddx.simulator.render's doc) from its sorted crossings: (N, K) distances
    (NaN where a face does not exist) and the crossing each face is, (N, K) column indices (-1)."""
    n_int = np.sum(np.isfinite(crossings), axis=1) // 2
    out = np.full((len(crossings), faces), np.nan)
    col = -np.ones((len(crossings), faces), int)
    half = faces // 2
    for i, n in enumerate(n_int):
        if n == 0:
            continue
        idx = {0: 0, faces - 1: 2 * n - 1}
        for j in range(1, half):
            if n > j:
                idx[2 * j - 1] = 2 * j - 1  # x_j
                idx[2 * j] = 2 * j if j < half - 1 else 2 * n - 2  # e_{j+1}, or e_n for the last gap
        for f, c in idx.items():
            out[i, f], col[i, f] = crossings[i, c], c
    return out, col


def shape_occupancy(vol: Volume, shape: MultiShape, partial: bool = False, sub: int = 4) -> np.ndarray:
    """:func:`occupancy` of a :class:`MultiShape`."""
    return occupancy(vol, shape.inside, partial, sub)


def example_with_marker(tmp_path, depth_mm: float, size: int = 512, x_mm: float = -120.0):
    """The bundled example upsampled to ``size`` px with a 25 mm ball painted beside the right trochanter at
    ``depth_mm`` from the source (``x_mm`` lateral of the central ray; its exact projection, partial pixels
    included), saved as an NPZ."""
    from scipy import ndimage

    from threeddx.apps.demo import example_path
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.marker import sphere_chord_mm

    with np.load(example_path()) as z:
        geo = XrayGeometry.from_json(str(z["geometry"])).resample(size)
        img = ndimage.zoom(z["image"].astype(np.float64), size / z["image"].shape[0], order=1)
    chord = sphere_chord_mm(geo, np.array([x_mm, 10.0, depth_mm]), 12.5)
    share = np.clip(chord / 3.0, 0.0, 1.0)  # opaque a few tenths of a mm inside the outline
    img = img * (1 - share) + img.max() * 1.1 * share
    path = tmp_path / "with_marker.npz"
    np.savez(path, image=img.astype(np.float32), geometry=geo.to_json())
    return path
