"""Synthetic CT around real bone shapes: voxelisation, tissues, HU.

The shape sources have bones but no intensities, so a training CT is built
around them. Every tissue parameter is drawn per subject from a seeded range
(:data:`TISSUE_RANGES`, documented in docs/data.md with its sources), so no two
CTs look the same. The CT is an ordinary :class:`~threeddx.io.Volume` in HU on
an axis-aligned LPS grid; written as NIfTI it reads back through the same code
as a real CT.

Voxelisation (:func:`voxelise`) is exact along the grid's y axis (the AP beam
direction of the preset): each column of the grid is intersected with the
mesh's triangles, every crossing is signed by the triangle's outward normal,
and each voxel gets the fraction of its y-extent that lies inside. Across the
column (x and z) the voxel is sampled at ``supersample**2`` sub-columns. The
result is a partial-volume occupancy; the label map is its 0.5 level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from .errors import InputError
from .anatomy import knee_center
from .io import Volume
from .raster import points_in_triangles

#: Uniform ranges of the tissue model (HU, mm). See docs/data.md.
TISSUE_RANGES: dict[str, tuple[float, float]] = {
    "hu_fat": (-120.0, -80.0),
    "hu_muscle": (30.0, 60.0),
    "hu_cortical": (1200.0, 1900.0),
    "hu_trabecular": (150.0, 400.0),
    "trabecular_texture_sd": (20.0, 60.0),  # HU, smooth texture at ~4 mm
    "cortical_mm": (1.0, 2.5),
    "fat_mm": (8.0, 45.0),  # subcutaneous fat thickness
    "soft_lateral_mm": (25.0, 70.0),  # soft tissue beyond the pelvis' bony width, each side
    "soft_ap_mm": (30.0, 90.0),  # beyond the pelvis' bony AP depth, front and back
    "thigh_radius_mm": (65.0, 100.0),
    "gas_pockets": (0.0, 4.0),  # bowel gas bubbles in the lower abdomen (integer count)
    "gas_radius_mm": (8.0, 25.0),
    "noise_sd": (5.0, 25.0),  # HU
}

HU_AIR = -1000.0

#: Default CT box around the hip-joint-centre midpoint (LPS mm): wide enough for
#: the preset's cone (430 mm detector, magnification up to ~1.5 at the back of
#: the box) at every pose of :func:`threeddx.geometry.sample_pose`.
DEFAULT_BOX_MM = ((-245.0, 245.0), (-170.0, 170.0), (-300.0, 215.0))


def sample_tissue(rng: np.random.Generator | int) -> dict[str, float]:
    rng = np.random.default_rng(rng)
    p = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in TISSUE_RANGES.items()}
    p["gas_pockets"] = float(int(rng.integers(int(TISSUE_RANGES["gas_pockets"][0]), int(TISSUE_RANGES["gas_pockets"][1]) + 1)))
    return p


@dataclass(frozen=True)
class Grid:
    """An axis-aligned LPS grid: voxel (i, j, k) centre at ``origin + spacing * (i, j, k)``."""

    origin: tuple[float, float, float]
    spacing: float
    shape_zyx: tuple[int, int, int]

    @classmethod
    def around(cls, box_mm=DEFAULT_BOX_MM, spacing: float = 1.0) -> "Grid":
        lo = np.array([b[0] for b in box_mm])
        hi = np.array([b[1] for b in box_mm])
        n = np.ceil((hi - lo) / spacing).astype(int)
        return cls(origin=tuple(lo + 0.5 * spacing), spacing=float(spacing), shape_zyx=(int(n[2]), int(n[1]), int(n[0])))

    def axis(self, m: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along index axis m (0: x, 1: y, 2: z)."""
        return self.origin[m] + self.spacing * np.arange(self.shape_zyx[2 - m])

    def volume(self, array: np.ndarray, source: str = "<synthetic>") -> Volume:
        return Volume(array=array, spacing=(self.spacing,) * 3, origin=self.origin, direction=np.eye(3), source=source)


def voxelise(vertices: np.ndarray, faces: np.ndarray, grid: Grid, supersample: int = 2) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Partial-volume occupancy of a closed mesh on ``grid`` (either orientation).

    Returns ``(occupancy, offset)``: a (z, y, x) float32 crop in [0, 1] around the
    mesh (clipped to the grid) and the grid index (i, j, k) of its voxel 0.
    """
    s = int(supersample)
    u = (np.asarray(vertices, np.float64) - np.asarray(grid.origin)) / grid.spacing  # index coords
    nz, ny, nx = grid.shape_zyx
    lo = np.maximum(np.floor(u.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(u.max(0)).astype(int) + 2, [nx, ny, nz])
    if np.any(hi <= lo):
        raise InputError("mesh lies outside the CT grid")
    cx, cy, cz = hi - lo
    # sub-column coordinates: integer X, Z hit sub-column centres; a tiny irrational
    # jitter keeps columns off edges and vertices (each crossing counted once)
    X = (u[:, 0] - lo[0] + 0.5) * s - 0.5 + np.sqrt(2.0) * 1e-5
    Z = (u[:, 2] - lo[2] + 0.5) * s - 0.5 + np.sqrt(3.0) * 1e-5
    Y = u[:, 1] - lo[1]
    f = np.asarray(faces)
    # outward normal's y-component (sign only): a +y crossing enters where n_y < 0
    e1 = u[f[:, 1]] - u[f[:, 0]]
    e2 = u[f[:, 2]] - u[f[:, 0]]
    ny_sign = -np.sign(e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2])
    # an inward-oriented mesh (negative signed volume) gets its crossings' signs flipped
    signed_volume = np.einsum("ij,ij->", u[f[:, 0]], np.cross(e1, e2)) / 6.0
    if signed_volume < 0:
        ny_sign = -ny_sign
    xz = np.stack([X, Z], axis=1)
    tri, px, pz, a, b, c = points_in_triangles(xz[f[:, 0]], xz[f[:, 1]], xz[f[:, 2]], shape=(cx * s, cz * s))
    yc = a * Y[f[tri, 0]] + b * Y[f[tri, 1]] + c * Y[f[tri, 2]]
    sign = ny_sign[tri]
    # per crossing: voxel jc holds it; the part of jc above it and every voxel after are inside (entry)
    jc = np.floor(yc + 0.5).astype(np.int64)
    frac = jc + 0.5 - yc
    below = jc < 0
    jc = np.where(below, 0, jc)
    frac = np.where(below, 1.0, frac)
    keep = jc < cy
    col = (pz[keep] // s) * cx + (px[keep] // s)  # voxel column index (k, i)
    jc, frac, sign = jc[keep], frac[keep], sign[keep]
    size = cz * cx * (cy + 1)
    step = np.bincount(col * (cy + 1) + jc + 1, weights=sign, minlength=size).reshape(cz, cx, cy + 1)
    part = np.bincount(col * (cy + 1) + jc, weights=sign * frac, minlength=size).reshape(cz, cx, cy + 1)
    occ = (np.cumsum(step, axis=2) + part)[:, :, :cy] / (s * s)
    occ = np.clip(occ, 0.0, 1.0).astype(np.float32).transpose(0, 2, 1)  # (z, x, y) -> (z, y, x)
    return np.ascontiguousarray(occ), (int(lo[0]), int(lo[1]), int(lo[2]))


def paste(full: np.ndarray, crop: np.ndarray, offset: tuple[int, int, int], op=np.maximum) -> None:
    """Combine a (z, y, x) crop at grid index ``offset`` (i, j, k) into ``full`` in place."""
    i, j, k = offset
    nz, ny, nx = crop.shape
    sl = (slice(k, k + nz), slice(j, j + ny), slice(i, i + nx))
    full[sl] = op(full[sl], crop)


@dataclass
class SyntheticCT:
    ct: Volume  # HU
    labels: Volume  # TotalSegmentator ids (0 background)
    occupancy: dict[str, tuple[np.ndarray, tuple[int, int, int]]]  # bone -> (crop, offset)
    tissue: dict[str, float]


def _ellipse_inside(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0


def synthesize_ct(
    bone_parts: Mapping[str, tuple[np.ndarray, np.ndarray]],
    part_labels: Mapping[str, int],
    bones: Mapping[str, tuple[str, ...]],
    hip_centers: np.ndarray,
    rng: np.random.Generator | int,
    spacing: float = 1.0,
    box_mm=DEFAULT_BOX_MM,
    supersample: int = 2,
) -> SyntheticCT:
    """Build a CT in HU around bone meshes (LPS mm, origin at the hip-centre midpoint).

    Args:
        bone_parts: part name -> (vertices, faces), closed outward-oriented meshes.
        part_labels: part name -> label id written into the label map.
        bones: bone name -> its parts (the occupancy is kept per bone).
        hip_centers: (2, 3) left and right hip-joint centres (for the thighs).
        rng: seed of the tissue parameters and noise.
        spacing: voxel size (mm).
    """
    rng = np.random.default_rng(rng)
    tissue = sample_tissue(rng)
    grid = Grid.around(box_mm, spacing)
    nz, ny, nx = grid.shape_zyx
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)

    # ---- bones: per part occupancy, per bone union, labels
    part_occ = {p: voxelise(v, f, grid, supersample) for p, (v, f) in bone_parts.items()}
    labels = np.zeros(grid.shape_zyx, np.uint8)
    bone_any = np.zeros(grid.shape_zyx, np.float32)
    for p, (occ, off) in part_occ.items():
        paste(labels, np.where(occ >= 0.5, np.uint8(part_labels[p]), np.uint8(0)), off, op=np.maximum)
        paste(bone_any, occ, off)
    occupancy = {}
    for b, parts in bones.items():
        lo = np.min([part_occ[p][1] for p in parts], axis=0)
        hi = np.max([np.array(part_occ[p][1]) + np.array(part_occ[p][0].shape[::-1]) for p in parts], axis=0)
        crop = np.zeros((hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]), np.float32)
        for p in parts:
            o, off = part_occ[p]
            paste(crop, o, tuple(np.array(off) - lo))
        occupancy[b] = (crop, tuple(int(v) for v in lo))

    # ---- soft tissue envelope, slice by slice (z)
    pelvis_pts = np.concatenate([v for p, (v, _) in bone_parts.items() if "pelvis" in p or p == "sacrum"])
    pmin, pmax = pelvis_pts.min(0), pelvis_pts.max(0)
    a_out = 0.5 * (pmax[0] - pmin[0]) + tissue["soft_lateral_mm"]
    b_out = 0.5 * (pmax[1] - pmin[1]) + tissue["soft_ap_mm"]
    cx_p, cy_p = 0.5 * (pmax[0] + pmin[0]), 0.5 * (pmax[1] + pmin[1])
    z_crotch = pmin[2] + 10.0
    fat = tissue["fat_mm"]
    # thigh axis: from each hip centre to its knee (lowest 30 mm of the femur)
    thigh_axes = []
    for part, hc in (("femur-l", hip_centers[0]), ("femur-r", hip_centers[1])):
        if part in bone_parts:
            thigh_axes.append((hc, knee_center(bone_parts[part][0])))
    r_t = tissue["thigh_radius_mm"]
    xx, yy = np.meshgrid(xs, ys, indexing="xy")  # (ny, nx)
    hu = np.full(grid.shape_zyx, HU_AIR, np.float32)
    for k, z in enumerate(zs):
        outer = np.zeros((ny, nx), bool)
        inner = np.zeros((ny, nx), bool)
        # the trunk's outline narrows over 60 mm below the crotch level into the thighs
        taper = 1.0 if z >= z_crotch else 1.0 - 0.5 * (z_crotch - z) / 60.0
        if taper > 0.5:
            a_z, b_z = a_out * taper, b_out * (0.5 + 0.5 * taper)
            outer |= _ellipse_inside(xx, yy, cx_p, cy_p, a_z, b_z)
            inner |= _ellipse_inside(xx, yy, cx_p, cy_p, max(a_z - fat, 1.0), max(b_z - fat, 1.0))
        if z <= z_crotch + 60.0:
            for hc, knee in thigh_axes:
                t = np.clip((z - hc[2]) / (knee[2] - hc[2]), -0.3, 1.2)
                c = hc + t * (knee - hc)
                # lateral offset: the thigh's soft tissue centre sits lateral of the femur shaft
                lat = np.sign(hc[0] - cx_p) * 0.15 * r_t
                outer |= _ellipse_inside(xx, yy, c[0] + lat, c[1], r_t, 0.9 * r_t)
                inner |= _ellipse_inside(xx, yy, c[0] + lat, c[1], r_t - fat, 0.9 * r_t - fat)
        sl = hu[k]
        sl[outer] = tissue["hu_fat"]
        sl[inner] = tissue["hu_muscle"]

    # ---- bowel gas in the lower abdomen (never inside bone: bone is pasted after)
    for _ in range(int(tissue["gas_pockets"])):
        c = np.array([rng.uniform(-60, 60), rng.uniform(-50, 10), rng.uniform(70, 150)])
        r = rng.uniform(*TISSUE_RANGES["gas_radius_mm"]) * rng.uniform(0.6, 1.0, 3)
        kk = np.nonzero(np.abs(zs - c[2]) <= r[2])[0]
        for k in kk:
            rr = np.sqrt(max(0.0, 1 - ((zs[k] - c[2]) / r[2]) ** 2))
            m = _ellipse_inside(xx, yy, c[0], c[1], r[0] * rr + 1e-6, r[1] * rr + 1e-6)
            hu[k][m & (hu[k] > -500)] = HU_AIR

    # ---- bone: cortical shell + textured trabecular interior, partial-volume blended
    for p, (occ, off) in part_occ.items():
        inside = occ >= 0.5
        depth_mm = ndimage.distance_transform_edt(inside) * spacing
        coarse = rng.standard_normal(tuple(max(2, int(np.ceil(n * spacing / 4.0)) + 1) for n in occ.shape))
        texture = ndimage.zoom(coarse, [n / c for n, c in zip(occ.shape, coarse.shape)], order=1)[
            : occ.shape[0], : occ.shape[1], : occ.shape[2]
        ]
        bone_hu = np.where(
            depth_mm <= tissue["cortical_mm"] + 0.5 * spacing,
            tissue["hu_cortical"],
            tissue["hu_trabecular"] + tissue["trabecular_texture_sd"] * texture,
        ).astype(np.float32)
        i, j, k = off
        sl = (slice(k, k + occ.shape[0]), slice(j, j + occ.shape[1]), slice(i, i + occ.shape[2]))
        hu[sl] = occ * bone_hu + (1.0 - occ) * hu[sl]

    # ---- acquisition noise, not in the air around the body
    noise = rng.standard_normal(grid.shape_zyx, dtype=np.float32) * np.float32(tissue["noise_sd"])
    body = hu > -900
    hu[body] += noise[body]
    del noise
    return SyntheticCT(
        ct=grid.volume(hu, "<synthetic CT>"),
        labels=grid.volume(labels, "<synthetic labels>"),
        occupancy=occupancy,
        tissue=tissue,
    )
