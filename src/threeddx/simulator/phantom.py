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

import math

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from threeddx.errors import InputError
from threeddx.simulator.anatomy import knee_center
from threeddx.io import Volume
from threeddx.raster import points_in_triangles

#: Ranges of the body and tissue model (HU, mm; uniform unless said). See docs/data.md.
TISSUE_RANGES: dict[str, tuple[float, float]] = {
    "hu_fat": (-120.0, -80.0),
    "hu_muscle": (30.0, 60.0),
    "hu_cortical": (1200.0, 1900.0),
    "hu_trabecular": (150.0, 400.0),
    "trabecular_texture_sd": (20.0, 60.0),  # HU, smooth texture at ~4 mm
    "cortical_mm": (1.0, 2.5),
    # ---- habitus and outline
    "fat_mm": (3.0, 80.0),  # subcutaneous fat, log-uniform: thin to obese
    "muscle_lateral_mm": (15.0, 60.0),  # muscle beyond the pelvis' bony width, each side
    "muscle_ap_mm": (10.0, 45.0),  # beyond the pelvis' bony AP depth, front and back
    "outline_power": (1.7, 3.2),  # superellipse exponent: 2 round, > 2 wide and square-shouldered
    "asymmetry_mm": (-15.0, 15.0),  # lateral shift of the outline
    "panniculus_mm": (0.0, 70.0),  # anterior abdominal fold hanging over the groin (obese bodies only)
    "fat_plane_mm": (0.0, 5.0),  # intermuscular fat plane inside the muscle
    # ---- thighs
    "thigh_radius_mm": (55.0, 110.0),
    "thigh_spread_mm": (-25.0, 35.0),  # medial (touching) to lateral (apart) shift of each thigh
    # ---- abdomen
    "gas_pockets": (0.0, 6.0),  # bowel gas bubbles and loops (integer count; 0: none)
    "gas_radius_mm": (6.0, 30.0),
    "faecal_fraction": (0.0, 0.6),  # share of gas pockets that are mottled faeces
    "bladder_radius_mm": (20.0, 55.0),
    "hu_bladder": (0.0, 20.0),
    # ---- outside and inside the body
    "table_mm": (8.0, 25.0),  # carbon-fibre/foam table behind the patient
    "hu_table": (-700.0, -300.0),
    "noise_sd": (5.0, 25.0),  # HU
}

#: Probabilities of the optional things in and on the body (per subject).
OPTIONAL_PROBABILITIES: dict[str, float] = {
    "table": 0.7,
    "zip": 0.2,
    "buttons": 0.25,
    "gonad_shield": 0.1,
    "calcifications": 0.25,
    "panniculus": 0.5,  # given fat_mm > 35
}

HU_AIR = -1000.0
#: Metal (steel zips, buttons, snaps, shields) in HU: the iron anchor of physics.decompose_hu.
HU_METAL = 20000.0

#: Default CT box around the hip-joint-centre midpoint (LPS mm): wide enough for
#: the preset's cone (430 mm detector, magnification up to ~1.5 at the back of
#: the box) at every pose of :func:`threeddx.geometry.sample_pose`, and for an
#: obese body's outline (fat up to 80 mm).
DEFAULT_BOX_MM = ((-275.0, 275.0), (-240.0, 200.0), (-300.0, 215.0))


def sample_tissue(rng: np.random.Generator | int) -> dict[str, float]:
    """One body's parameters within :data:`TISSUE_RANGES` and :data:`OPTIONAL_PROBABILITIES`."""
    rng = np.random.default_rng(rng)
    p = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in TISSUE_RANGES.items()}
    lo, hi = TISSUE_RANGES["fat_mm"]
    p["fat_mm"] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    p["gas_pockets"] = float(int(rng.integers(int(TISSUE_RANGES["gas_pockets"][0]), int(TISSUE_RANGES["gas_pockets"][1]) + 1)))
    for k, prob in OPTIONAL_PROBABILITIES.items():
        p[k] = float(rng.random() < prob)
    if p["fat_mm"] <= 35.0:
        p["panniculus"] = 0.0
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


def _window(xs: np.ndarray, ys: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
    """(rows, columns) of a slice whose voxel centres cover [x0, x1] x [y0, y1] mm, one voxel to spare.

    A shape that lies inside that box is evaluated on the window only; the
    spare voxel keeps the result the same as on the whole slice (a centre
    on the box's edge is evaluated by the same expression either way).
    """
    i0 = max(int(np.searchsorted(xs, x0)) - 1, 0)
    i1 = min(int(np.searchsorted(xs, x1, side="right")) + 1, len(xs))
    j0 = max(int(np.searchsorted(ys, y0)) - 1, 0)
    j1 = min(int(np.searchsorted(ys, y1, side="right")) + 1, len(ys))
    return slice(j0, max(j1, j0)), slice(i0, max(i1, i0))


def _or_ellipse(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, a: float, b: float) -> None:
    """``mask |= _ellipse_inside(...)`` on the (ny, nx) slice, evaluated inside the ellipse's box only."""
    w = _window(xs, ys, cx - a, cx + a, cy - b, cy + b)
    mask[w] |= _ellipse_inside(xs[None, w[1]], ys[w[0], None], cx, cy, a, b)


def near_outside(inside: np.ndarray, distance_vox: float) -> np.ndarray:
    """``distance_transform_edt(inside) <= distance_vox``, ~10x faster for a distance of a few voxels.

    True where a voxel centre lies within ``distance_vox`` voxels (Euclidean)
    of a voxel centre outside ``inside`` (in the array), the outside itself
    included: the outside dilated by the ball of that radius, instead of the
    exact distance to every voxel (tests/simulator/test_phantom.py compares the two).
    """
    r = int(np.floor(distance_vox))
    if r < 1:
        return ~inside
    o = np.arange(-r, r + 1)
    ball = o[:, None, None] ** 2 + o[None, :, None] ** 2 + o[None, None, :] ** 2 <= distance_vox ** 2
    return ndimage.binary_dilation(~inside, structure=ball)


def _linear_upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``ndimage.zoom(coarse, order=1)`` to ``shape`` (corners aligned), separably as three small matrix products."""
    out = np.asarray(coarse, np.float64)
    for axis, n in enumerate(shape):
        c = out.shape[axis]
        pos = np.arange(n) * ((c - 1) / (n - 1)) if n > 1 else np.zeros(1)
        lo = np.minimum(np.floor(pos).astype(int), c - 2) if c > 1 else np.zeros(n, int)
        w = np.zeros((n, c))
        frac = pos - lo
        w[np.arange(n), lo] = 1.0 - frac
        if c > 1:
            w[np.arange(n), lo + 1] += frac
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return out


def _superellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a: float, b_front: float, b_back: float,
                  n: float) -> np.ndarray:
    """The superellipse's normalised radius to the power n, |x/a|^n + |y/b|^n (< 1 inside); anterior (-y)
    and posterior semi-axes differ. Compare it with a radius r as ``<= r ** n`` (no n-th root per voxel)."""
    b = np.where(yy < cy, b_front, b_back)
    return np.abs((xx - cx) / a) ** n + np.abs((yy - cy) / b) ** n


def _ball(hu: np.ndarray, grid: "Grid", centre: np.ndarray, radii: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """(slices, mask) of an axis-aligned ellipsoid (LPS mm) on a crop of the grid."""
    lo = np.floor((centre - radii - np.asarray(grid.origin)) / grid.spacing).astype(int)
    hi = np.ceil((centre + radii - np.asarray(grid.origin)) / grid.spacing).astype(int) + 1
    nz, ny, nx = hu.shape
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [nx, ny, nz])
    if np.any(hi <= lo):
        return (slice(0, 0),) * 3, np.zeros((0, 0, 0), bool)
    sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    zz, yy, xx = np.meshgrid(*(grid.axis(m)[lo[m]:hi[m]] for m in (2, 1, 0)), indexing="ij")
    inside = ((xx - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + ((zz - centre[2]) / radii[2]) ** 2 <= 1
    return sl, inside


def _thin_plate_hu(thickness_mm: float, spacing: float, hu_material: float = HU_METAL) -> float:
    """HU of one voxel layer holding a plate thinner than a voxel (partial volume, linear in HU)."""
    f = min(1.0, thickness_mm / spacing)
    return HU_AIR + f * (hu_material - HU_AIR) if f < 1 else hu_material


def pelvic_points(bone_parts: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The bony pelvis's vertices (N, 3) mm, both hip bones and the sacrum, from LLP26 parts -> (vertices, faces):
    what the trunk's outline is drawn about."""
    return np.concatenate([v for p, (v, _) in bone_parts.items() if "pelvis" in p or p == "sacrum"])


def trunk_outline(pelvis_pts: np.ndarray, tissue: Mapping[str, float]) -> tuple[float, float, float, float, float]:
    """The trunk's muscle outline about the bony pelvis (N, 3 LPS mm points of the hip bones and sacrum):
    lateral and AP semi-axes (mm), the belly's anterior bulge factor, and the centre (x, y) in mm. Fat
    (``fat_mm``) lies outside it, the front times the bulge."""
    pmin, pmax = pelvis_pts.min(0), pelvis_pts.max(0)
    a_m = 0.5 * (pmax[0] - pmin[0]) + tissue["muscle_lateral_mm"]
    b_m = 0.5 * (pmax[1] - pmin[1]) + tissue["muscle_ap_mm"]
    belly = 1.0 + 0.35 * tissue["fat_mm"] / 80.0  # the anterior wall bulges with fat
    return (float(a_m), float(b_m), float(belly), float(0.5 * (pmax[0] + pmin[0]) + tissue["asymmetry_mm"]),
            float(0.5 * (pmax[1] + pmin[1])))


def hip_depths(pelvis_pts: np.ndarray, hip_centers: Sequence[np.ndarray], tissue: Mapping[str, float]
               ) -> tuple[float, float]:
    """How far (mm) the hip joints' mid-point lies in front of the body's back (the table top it lies on)
    and behind its front skin, for this body: the numbers behind
    :data:`threeddx.geometry.HIPS_ABOVE_TABLE_MM` and :data:`~threeddx.geometry.HIPS_BELOW_ENTRANCE_MM`."""
    _, b_m, belly, _, cy = trunk_outline(pelvis_pts, tissue)
    fat = tissue["fat_mm"]
    hip_y = float(np.mean([np.asarray(c)[1] for c in hip_centers]))
    return cy + b_m + fat - hip_y, hip_y - (cy - (b_m + fat) * belly)


def synthesize_ct(
    bone_parts: Mapping[str, tuple[np.ndarray, np.ndarray]],
    part_labels: Mapping[str, int],
    bones: Mapping[str, tuple[str, ...]],
    hip_centers: np.ndarray,
    rng: np.random.Generator | int,
    spacing: float = 1.0,
    box_mm=DEFAULT_BOX_MM,
    supersample: int = 2,
    overrides: Mapping[str, float] | None = None,
) -> SyntheticCT:
    """Build a CT in HU around bone meshes (LPS mm, origin at the hip-centre midpoint).

    Args:
        bone_parts: part name -> (vertices, faces), closed outward-oriented meshes.
        part_labels: part name -> label id written into the label map.
        bones: bone name -> its parts (the occupancy is kept per bone).
        hip_centers: (2, 3) left and right hip-joint centres (for the thighs).
        rng: seed of the body and tissue parameters and noise.
        spacing: voxel size (mm).
        overrides: body parameters to fix (keys of :data:`TISSUE_RANGES` and
            :data:`OPTIONAL_PROBABILITIES`), e.g. ``{"fat_mm": 80}`` for an obese body.
    """
    rng = np.random.default_rng(rng)
    tissue = sample_tissue(rng)
    unknown = [k for k in (overrides or {}) if k not in tissue]
    if unknown:
        raise InputError(f"unknown body parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(tissue))}")
    tissue.update({k: float(v) for k, v in (overrides or {}).items()})
    grid = Grid.around(box_mm, spacing)
    nz, ny, nx = grid.shape_zyx
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)

    # ---- bones: per part occupancy, per bone union, labels
    part_occ = {p: voxelise(v, f, grid, supersample) for p, (v, f) in bone_parts.items()}
    labels = np.zeros(grid.shape_zyx, np.uint8)
    for p, (occ, off) in part_occ.items():
        paste(labels, np.where(occ >= 0.5, np.uint8(part_labels[p]), np.uint8(0)), off, op=np.maximum)
    occupancy = {}
    for b, parts in bones.items():
        lo = np.min([part_occ[p][1] for p in parts], axis=0)
        hi = np.max([np.array(part_occ[p][1]) + np.array(part_occ[p][0].shape[::-1]) for p in parts], axis=0)
        crop = np.zeros((hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]), np.float32)
        for p in parts:
            o, off = part_occ[p]
            paste(crop, o, tuple(np.array(off) - lo))
        occupancy[b] = (crop, tuple(int(v) for v in lo))

    # ---- body outline, slice by slice (z): muscle inside fat inside a superellipse
    pelvis_pts = pelvic_points(bone_parts)
    pmin, pmax = pelvis_pts.min(0), pelvis_pts.max(0)
    fat = tissue["fat_mm"]
    a_m, b_m, belly, cx_p, cy_p = trunk_outline(pelvis_pts, tissue)
    n_pow = tissue["outline_power"]
    z_crotch = pmin[2] + 10.0
    thigh_axes = []
    for part, hc in (("femur-l", hip_centers[0]), ("femur-r", hip_centers[1])):
        if part in bone_parts:
            thigh_axes.append((hc, knee_center(bone_parts[part][0])))
    r_t = tissue["thigh_radius_mm"]
    fat_t = min(0.7 * fat, 0.5 * r_t)
    xx, yy = np.meshgrid(xs, ys, indexing="xy")  # (ny, nx)
    hu = np.full(grid.shape_zyx, HU_AIR, np.float32)
    pann = tissue["panniculus_mm"] if tissue["panniculus"] else 0.0
    plane = tissue["fat_plane_mm"]

    def trunk(taper: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The trunk's (outer, inner, fat-plane) masks of a slice at this taper (1: above the crotch)."""
        am, bm = a_m * taper, b_m * (0.5 + 0.5 * taper)
        outer, inner, fatty = (np.zeros((ny, nx), bool) for _ in range(3))
        w = _window(xs, ys, cx_p - am - fat, cx_p + am + fat, cy_p - (bm + fat) * belly, cy_p + bm + fat)
        x, y = xx[w], yy[w]
        r_in = _superellipse(x, y, cx_p, cy_p, am, bm * belly, bm, n_pow)  # radius ** n_pow
        outer[w] = _superellipse(x, y, cx_p, cy_p, am + fat, (bm + fat) * belly, bm + fat, n_pow) <= 1.0
        inner[w] = r_in <= 1.0
        if plane > 0:  # the fat plane: radius 0.78 to 0.78 + plane / am
            fatty[w] = (r_in > 0.78 ** n_pow) & (r_in <= (0.78 + plane / am) ** n_pow)
        return outer, inner, fatty

    upper = trunk(1.0)  # every slice above the crotch has the same trunk outline
    plain_slice = None  # the HU of a slice above the thighs and the fold: the same for every such slice
    for k, z in enumerate(zs):
        fold = pann > 0 and z_crotch - pann <= z <= z_crotch + 110.0
        thighs = z <= z_crotch + 60.0
        plain = not (fold or thighs)
        if plain and plain_slice is not None:
            hu[k] = plain_slice
            continue
        # the trunk's outline narrows over 60 mm below the crotch level into the thighs
        taper = 1.0 if z >= z_crotch else 1.0 - 0.5 * (z_crotch - z) / 60.0
        if taper > 0.5:
            outer, inner, fatty = (m.copy() for m in (upper if taper == 1.0 else trunk(taper)))
        else:
            outer, inner, fatty = (np.zeros((ny, nx), bool) for _ in range(3))
        if fold:
            # the fold hangs in front of the groin: fat only
            _or_ellipse(outer, xs, ys, cx_p, cy_p - (b_m + fat) * belly + 0.3 * pann, 0.75 * a_m, 0.5 * pann + fat)
        if thighs:
            for hc, knee in thigh_axes:
                t = np.clip((z - hc[2]) / (knee[2] - hc[2]), -0.3, 1.2)
                c = hc + t * (knee - hc)
                # the thigh's soft tissue centre sits lateral of the femur shaft; spread < 0 brings them together
                lat = np.sign(hc[0] - cx_p) * (0.15 * r_t + tissue["thigh_spread_mm"])
                _or_ellipse(outer, xs, ys, c[0] + lat, c[1], r_t + fat_t, 0.9 * r_t + fat_t)
                _or_ellipse(inner, xs, ys, c[0] + lat, c[1], r_t, 0.9 * r_t)
        sl = hu[k]
        np.copyto(sl, np.float32(tissue["hu_fat"]), where=outer)
        np.copyto(sl, np.float32(tissue["hu_muscle"]), where=inner & ~fatty)
        if plain:
            plain_slice = sl.copy()
    soft_body = hu > -500

    # ---- bladder: fluid above the pubic symphysis
    centre = np.array([0.5 * (pmin[0] + pmax[0]), pmin[1] + 35.0, pmin[2] + 45.0 + tissue["bladder_radius_mm"]])
    sl, m = _ball(hu, grid, centre, tissue["bladder_radius_mm"] * np.array([1.2, 0.9, 0.8]))
    hu[sl][m & soft_body[sl]] = tissue["hu_bladder"]

    # ---- bowel gas: bubbles and loops (chains of bubbles), some mottled as faeces
    for _ in range(int(tissue["gas_pockets"])):
        c = np.array([rng.uniform(-90, 90), rng.uniform(-70, 20), rng.uniform(40, 190)])
        r0 = rng.uniform(*TISSUE_RANGES["gas_radius_mm"])
        step = rng.standard_normal(3) * np.array([1.0, 0.4, 1.0])
        step = step / max(np.linalg.norm(step), 1e-9)
        mottled = rng.random() < tissue["faecal_fraction"]
        for _ in range(int(rng.integers(1, 6))):  # a loop: up to 5 bubbles along a wandering path
            r = r0 * rng.uniform(0.6, 1.0, 3)
            sl, m = _ball(hu, grid, c, r)
            m = m & soft_body[sl]
            if mottled and m.any():
                speck = ndimage.gaussian_filter(rng.standard_normal(m.shape).astype(np.float32), 1.5 / spacing)
                m = m & (speck > 0.15 * speck.std())
            hu[sl][m] = HU_AIR
            step = step + 0.5 * rng.standard_normal(3) * np.array([1.0, 0.3, 1.0])
            step = step / max(np.linalg.norm(step), 1e-9)
            c = c + step * r0 * 1.3

    # ---- vascular calcifications along the iliac arteries (bifurcation -> groin)
    if tissue["calcifications"]:
        bif = np.array([cx_p, cy_p - 10.0, pmax[2] + 20.0])
        for side in (-1.0, 1.0):
            groin = np.array([side * 75.0, pmin[1] + 25.0, pmin[2] + 25.0])
            for _ in range(int(rng.integers(3, 12))):
                p = bif + rng.uniform(0, 1) * (groin - bif) + rng.normal(0, 2.0, 3)
                sl, m = _ball(hu, grid, p, rng.uniform(1.0, 3.0) * np.array([1.0, 1.0, 1.5]))
                hu[sl][m & soft_body[sl]] = rng.uniform(400.0, 1000.0)

    # ---- on the body: the anterior skin line at the midline decides where metal sits
    ix = int(np.clip(round((cx_p - grid.origin[0]) / spacing), 0, nx - 1))
    def skin_front(z: float) -> float | None:  # noqa: E306
        k = int(np.clip(round((z - grid.origin[2]) / spacing), 0, nz - 1))
        col = np.nonzero(hu[k, :, ix] > -500)[0]
        return None if len(col) == 0 else float(ys[col[0]])

    def plate(x0: float, x1: float, z0: float, z1: float, thickness: float) -> None:
        """A thin steel plate in the x-z plane, just in front of the skin."""
        i0, i1 = (int(np.clip(round((v - grid.origin[0]) / spacing), 0, nx)) for v in (x0, x1))
        for z in np.arange(z0, z1, spacing):
            y = skin_front(z)
            if y is None:
                continue
            k = int(np.clip(round((z - grid.origin[2]) / spacing), 0, nz - 1))
            j = int(np.clip(round((y - 2.0 - grid.origin[1]) / spacing), 0, ny - 1))
            hu[k, j, i0:i1] = np.maximum(hu[k, j, i0:i1], _thin_plate_hu(thickness, spacing))

    if tissue["zip"]:
        z0 = rng.uniform(40.0, 120.0)
        plate(cx_p - 3.0, cx_p + 3.0, z0, z0 + rng.uniform(60.0, 150.0), 1.5)
    if tissue["buttons"]:
        for _ in range(int(rng.integers(1, 5))):
            x0, z0, r = rng.uniform(-50, 50), rng.uniform(60, 200), rng.uniform(5.0, 8.0)
            plate(cx_p + x0 - r, cx_p + x0 + r, z0 - r, z0 + r, 2.0)
    if tissue["gonad_shield"]:
        if rng.random() < 0.5:  # ovarian shield over the pelvic inlet
            plate(cx_p - 45.0, cx_p + 45.0, pmin[2] + 55.0, pmin[2] + 125.0, 1.0)
        else:  # testicular shield below the symphysis
            plate(cx_p - 35.0, cx_p + 35.0, pmin[2] - 70.0, pmin[2] + 5.0, 1.0)

    # ---- the table behind the patient: foam core between carbon-fibre skins
    if tissue["table"]:
        body_y = np.nonzero(soft_body.any(axis=(0, 2)))[0]
        if len(body_y):
            y0 = ys[body_y[-1]] + spacing
            core = (ys > y0) & (ys <= y0 + tissue["table_mm"])
            skins = core & ((ys <= y0 + 1.5) | (ys > y0 + tissue["table_mm"] - 1.5))
            hu[:, core, :] = tissue["hu_table"]
            hu[:, skins, :] = 300.0

    # ---- bone: cortical shell + textured trabecular interior, partial-volume blended
    for p, (occ, off) in part_occ.items():
        # cortical: within cortical_mm (+ half a voxel) of the outside by the Euclidean distance (the partial
        # volume voxels outside the 0.5 level included: they blend the cortex with what surrounds the bone)
        shell = near_outside(occ >= 0.5, (tissue["cortical_mm"] + 0.5 * spacing) / spacing)
        coarse = rng.standard_normal(tuple(max(2, int(np.ceil(n * spacing / 4.0)) + 1) for n in occ.shape))
        texture = _linear_upsample(coarse, occ.shape)
        bone_hu = np.where(
            shell, tissue["hu_cortical"], tissue["hu_trabecular"] + tissue["trabecular_texture_sd"] * texture,
        ).astype(np.float32)
        i, j, k = off
        sl = (slice(k, k + occ.shape[0]), slice(j, j + occ.shape[1]), slice(i, i + occ.shape[2]))
        part = occ > 0  # elsewhere the blend below leaves the HU as it is
        h = hu[sl]
        h[part] = occ[part] * bone_hu[part] + (1.0 - occ[part]) * h[part]

    # ---- acquisition noise on the body, not in the air around it nor in metal: one draw per noisy voxel,
    # in voxel order, slab by slab (the air, 70 % of llp26-01's grid, draws nothing; simulator version 4)
    sd = np.float32(tissue["noise_sd"])
    slab = max(1, (1 << 18) // (ny * nx))
    for k0 in range(0, nz, slab):
        h = hu[k0:k0 + slab].reshape(-1)  # a view: hu is C-contiguous
        noisy = np.flatnonzero((h > -900) & (h < 3000))
        h[noisy] += rng.standard_normal(len(noisy), dtype=np.float32) * sd
    return SyntheticCT(
        ct=grid.volume(hu, "<synthetic CT>"),
        labels=grid.volume(labels, "<synthetic labels>"),
        occupancy=occupancy,
        tissue=tissue,
    )


def parse_body_overrides(items: Sequence[str]) -> dict[str, float]:
    """``KEY=VALUE`` items (``simulate --body``) -> body parameters, checked against the known keys."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--body items are KEY=VALUE, got {item!r}")
        if key not in TISSUE_RANGES and key not in OPTIONAL_PROBABILITIES:
            raise InputError(f"--body: unknown body parameter {key!r}; known: "
                             f"{', '.join(sorted([*TISSUE_RANGES, *OPTIONAL_PROBABILITIES]))}")
        try:
            out[key] = float(value)
        except ValueError:
            raise InputError(f"--body {key}: {value!r} is not a number") from None
        lo, hi = body_override_limits(key)
        if not (math.isfinite(out[key]) and lo <= out[key] <= hi):
            raise InputError(f"--body {key}: {value} is outside {lo:g}-{hi:g} (the random range, widened)")
    return out


def body_override_limits(key: str) -> tuple[float, float]:
    """What ``--body KEY=VALUE`` accepts: the random range widened by its own width each way (sizes not below
    zero), so extreme bodies can be made but not ones that exhaust memory (a 10 m layer of fat); an optional
    thing is 0 (absent) or 1 (present)."""
    if key in OPTIONAL_PROBABILITIES:
        return 0.0, 1.0
    lo, hi = TISSUE_RANGES[key]
    w = hi - lo
    lo, hi = lo - w, hi + w
    return (max(lo, 0.0) if key.endswith("_mm") and TISSUE_RANGES[key][0] >= 0 else lo), hi
