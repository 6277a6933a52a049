"""A calibration marker: a metal sphere of known diameter that tells how far the anatomy is from the source.

One AP image cannot tell a patient shifted along the beam from a bigger or smaller one
(:mod:`threeddx.geometry`, ``POSE_RANGES``). Clinics settle it as digital templating does before a hip
arthroplasty: a steel ball of known diameter (typically 25 mm) is placed at the level of the greater
trochanter, and its magnification gives its distance from the source.

**Finding it** (:func:`find_marker`): the ball is a round blob much brighter than its surroundings.
Pixels at least :data:`BRIGHT` of the way from the median to the maximum of the image minus its
background (a Gaussian of half the largest expected diameter) are grouped; a group is a marker candidate
when it is round (its second moments those of a filled disc or mild ellipse) and its size is one the
ball can have between :data:`NEAREST` of the SDD and the detector. None, several, or one cut by the
image's border is an error in one line. Known limit (issue 31, open): on the simulator's processed
radiographs (scatter behind the ball, a gonad shield, edge enhancement) this finds no ball yet
(``benchmarks/marker.py``: 0 of 24 at 128 and 512 px); the
measuring below is exact on analytic images (tests/inference/test_marker.py). Nothing in predict uses it yet.

**Measuring it**: the sphere's outline is where the cone from the focal spot touches the sphere: every
outline ray ``u`` (unit, source frame) makes the same angle ``alpha`` with the cone's axis ``c``,
``u . c = cos(alpha)``; ``sin(alpha) = r / D`` then gives the centre's distance ``D`` from the source (off
the central ray the outline is an ellipse and this is still exact). A first cone comes from edge points
(the half-level crossings along rays from the blob's centre; :func:`fit_cone`, linear least squares in
``w = c / cos(alpha)``); it is refined on the pixels themselves (:func:`refine_cone`): each pixel near
the outline predicted as the background plus the ball's contrast times the share of the pixel inside the
cone (sub-rays), the cone moved until the prediction matches. On a noiseless image the centre and the
diameter come out within 0.02 px (tests); the edge points alone are ~0.15 px small at 9 px across.

**Drawing it** (:func:`sphere_chord_mm`, :func:`with_marker`): the chord a sphere cuts from each pixel's
ray is analytic, so a training or test sample gets a ball added to its metal line integral on the fly.

Frames and units: the source frame and pixel indices of :mod:`threeddx.geometry` (the centre of pixel
(i, j) at (i, j)); mm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threeddx.errors import InputError
from threeddx.geometry import NEAREST_ANATOMY, XrayGeometry

#: Diameters a calibration marker may have (mm).
DIAMETER_RANGE_MM = (5.0, 60.0)
#: The nearest to the source a marker is looked for, as a share of the SDD (its largest image).
NEAREST = NEAREST_ANATOMY
#: A marker's pixels lie at least this share of the way from the image's median to its maximum.
BRIGHT = 0.85
#: Radial lines along which the edge is found.
EDGE_RAYS = 90


def _source_rays(geometry: XrayGeometry, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Unit ray directions in the source frame (..., 3) through continuous pixel indices: the geometry's own
    :meth:`~threeddx.geometry.XrayGeometry.ray_directions_at` with the source frame as the world."""
    return geometry.with_pose(np.eye(4)).ray_directions_at(rows, cols)


def sphere_chord_mm(geometry: XrayGeometry, centre_source: np.ndarray, radius_mm: float,
                    supersample: int = 4) -> np.ndarray:
    """Length (mm) of each pixel's ray inside a sphere (centre in the source frame, mm), (rows, cols) float32;
    ``supersample``: mean over that many sub-rays per pixel side (partial volume at the outline)."""
    c = np.asarray(centre_source, np.float64)
    rows, cols = geometry.detector_shape
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    rr, cc = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    out = np.zeros((rows, cols))
    for dr in off:
        for dc in off:
            u = _source_rays(geometry, rr + dr, cc + dc)
            t = u @ c
            disc = radius_mm**2 - (c @ c - t**2)
            out += 2.0 * np.sqrt(np.maximum(disc, 0.0)) * (t > 0)
    return (out / supersample**2).astype(np.float32)


def with_marker(materials: dict, geometry: XrayGeometry, centre_source: np.ndarray, diameter_mm: float) -> dict:
    """A sample's material line integrals (g/cm^2, :data:`threeddx.simulator.physics.MATERIALS`) with a steel ball added
    to its metal: the ball's chord (cm) times the metal's density (:data:`threeddx.simulator.physics.RHO_IRON`)."""
    from threeddx.simulator.physics import RHO_IRON

    out = dict(materials)
    chord_cm = sphere_chord_mm(geometry, centre_source, diameter_mm / 2.0) / 10.0
    metal = np.asarray(out.get("metal", np.zeros(geometry.detector_shape, np.float32)), np.float32)
    out["metal"] = (metal + RHO_IRON * chord_cm).astype(np.float32)
    return out


@dataclass(frozen=True)
class Marker:
    """A calibration sphere found in a radiograph.

    ``centre_source``: its centre in the source frame (mm); ``row``/``col``: where that centre projects
    (pixel indices); ``distance_mm``: source to centre; ``apparent_diameter_px``: its outline's cone
    diameter on the detector at the central ray (``2 SDD tan(alpha)`` in pixels); ``edge_rms_px``: the fit's
    misfit (edge points: pixels off the cone; refined: the pixels' RMS residual as a share of the ball's
    contrast); ``edge_points``: how many points or pixels it used.
    """

    diameter_mm: float
    centre_source: np.ndarray
    row: float
    col: float
    distance_mm: float
    apparent_diameter_px: float
    edge_rms_px: float
    edge_points: int

    @property
    def depth_mm(self) -> float:
        """The centre's distance from the source along the central ray (its source-frame z), mm."""
        return float(self.centre_source[2])

    def to_dict(self) -> dict:
        return {"diameter_mm": self.diameter_mm, "centre_source_mm": np.round(self.centre_source, 2).tolist(),
                "centre_px": [round(self.row, 3), round(self.col, 3)], "distance_mm": round(self.distance_mm, 2),
                "depth_mm": round(self.depth_mm, 2), "apparent_diameter_px": round(self.apparent_diameter_px, 3),
                "edge_rms_px": round(self.edge_rms_px, 3), "edge_points": self.edge_points}


def fit_cone(rows: np.ndarray, cols: np.ndarray, geometry: XrayGeometry, diameter_mm: float) -> Marker:
    """The sphere of ``diameter_mm`` whose outline passes through the edge points (pixel indices), module doc."""
    u = _source_rays(geometry, rows, cols)
    if len(u) < 6:
        raise InputError(f"the marker's edge gave {len(u)} points; too few to measure it")
    keep = np.ones(len(u), bool)
    for _ in range(3):  # least squares, then without the edge points far off the cone
        w, *_ = np.linalg.lstsq(u[keep], np.ones(int(keep.sum())), rcond=None)
        cos_a = 1.0 / np.linalg.norm(w)
        c = w * cos_a
        ang = np.arccos(np.clip(u @ c, -1.0, 1.0)) - np.arccos(cos_a)  # radians off the cone
        res = np.abs(ang)
        keep = res <= max(3.0 * np.median(res[keep]), 1e-9)
    alpha = float(np.arccos(np.clip(cos_a, -1.0, 1.0)))
    if not 0 < alpha < np.pi / 2:
        raise InputError("the marker's edge does not outline a sphere")
    distance = (diameter_mm / 2.0) / np.sin(alpha)
    centre = distance * c
    px = float(np.mean(geometry.pixel_spacing))
    row, col = _project_source(geometry, centre)
    rms_px = float(np.sqrt(np.mean(ang[keep] ** 2)) * geometry.sdd / px)
    return Marker(float(diameter_mm), centre, row, col, float(distance), 2 * geometry.sdd * np.tan(alpha) / px,
                  rms_px, int(keep.sum()))


def _project_source(geometry: XrayGeometry, p: np.ndarray) -> tuple[float, float]:
    """Where a source-frame point (3,) projects (row, col pixel indices): :meth:`XrayGeometry.project` with the
    source frame as the world."""
    row, col, _ = geometry.with_pose(np.eye(4)).project(np.asarray(p, np.float64))
    return float(row), float(col)


def expected_diameter_px(geometry: XrayGeometry, diameter_mm: float) -> tuple[float, float]:
    """The smallest and largest image diameter (pixels) of a ball of ``diameter_mm`` between :data:`NEAREST`
    of the SDD from the source and the detector."""
    px = float(np.mean(geometry.pixel_spacing))
    return diameter_mm / px, diameter_mm / (NEAREST * px)


def find_marker(image: np.ndarray, geometry: XrayGeometry, diameter_mm: float) -> Marker:
    """The calibration sphere of ``diameter_mm`` in ``image`` (H, W, bone bright, as displayed) taken with
    ``geometry`` (module doc). Raises InputError, one line, when none, several or one at the border is found."""
    from scipy import ndimage

    lo_d, hi_d = DIAMETER_RANGE_MM
    if not (np.isfinite(diameter_mm) and lo_d <= diameter_mm <= hi_d):
        raise InputError(f"--marker-mm must be between {lo_d:g} and {hi_d:g} mm, got {diameter_mm:g}")
    img = np.asarray(image, np.float64)
    if img.shape != tuple(geometry.detector_shape):
        raise InputError(f"image is {img.shape[0]}x{img.shape[1]} px but the geometry's detector is "
                         f"{geometry.detector_shape[0]}x{geometry.detector_shape[1]}")
    dmin, dmax = expected_diameter_px(geometry, diameter_mm)
    local = img - ndimage.gaussian_filter(img, max(dmax / 2.0, 2.0), mode="nearest")  # brighter than around it
    med, top = float(np.median(local)), float(local.max())
    if top <= med:
        raise InputError(f"no {diameter_mm:g} mm marker found: the image is flat")
    bright = local >= med + BRIGHT * (top - med)
    bright = ndimage.binary_fill_holes(bright)
    labels, n = ndimage.label(bright)
    found, at_edge = [], []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        blob = labels[sl] == k
        area = int(blob.sum())
        d = 2.0 * np.sqrt(area / np.pi)
        if not (0.6 * dmin <= d <= 1.2 * dmax) or area < 12:
            continue
        r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if r0 <= 0 or c0 <= 0 or r1 >= img.shape[0] or c1 >= img.shape[1]:  # cut by the border: not round
            at_edge.append((k, sl))
            continue
        rr, cc = np.nonzero(blob)
        cov = np.cov(np.stack([rr, cc]).astype(np.float64))
        ev = np.linalg.eigvalsh(cov)
        if ev[0] <= 0 or ev[0] / ev[1] < 0.6:  # an outline off the central ray is a mild ellipse, never a bar
            continue
        fill = area / (4.0 * np.pi * np.sqrt(ev[0] * ev[1]) + 1e-9)  # 1 for a filled ellipse
        if not 0.8 <= fill <= 1.2:
            continue
        found.append((k, sl))
    if len(found) > 1:
        where = ", ".join(f"row {(s[0].start + s[0].stop) // 2} col {(s[1].start + s[1].stop) // 2}" for _, s in found)
        raise InputError(f"{len(found)} candidates for the {diameter_mm:g} mm marker ({where}); one marker is needed")
    if not found:
        if at_edge:
            raise InputError(f"the {diameter_mm:g} mm marker touches the image's border; it must lie wholly inside")
        raise InputError(f"no {diameter_mm:g} mm marker found (a round, saturated blob {dmin:.0f}-{dmax:.0f} px "
                         "across); check --marker-mm")
    k, sl = found[0]
    rows, cols = _edge_points(img, labels == k)
    return refine_cone(img, geometry, fit_cone(rows, cols, geometry, diameter_mm))


def _inside_share(geometry: XrayGeometry, rows: np.ndarray, cols: np.ndarray, w: np.ndarray, ss: int) -> np.ndarray:
    """Per pixel (indices ``rows``, ``cols``), the share of it inside the cone ``u . w >= 1``: ``ss x ss``
    sub-rays, each counted with a ramp one sub-pixel wide across the outline (so the share moves smoothly)."""
    off = (np.arange(ss) + 0.5) / ss - 0.5
    norm = np.linalg.norm(w)
    cos_a = 1.0 / norm
    sin_a = np.sqrt(max(1.0 - cos_a**2, 1e-12))
    px = float(np.mean(geometry.pixel_spacing))
    out = np.zeros(rows.shape)
    for dr in off:
        for dc in off:
            u = _source_rays(geometry, rows + dr, cols + dc)
            d_px = (u @ (w / norm) - cos_a) / sin_a * geometry.sdd / px  # > 0 inside, pixels from the outline
            out += np.clip(0.5 + d_px * ss, 0.0, 1.0)
    return out / ss**2


def refine_cone(img: np.ndarray, geometry: XrayGeometry, first: Marker, band_px: float = 2.5) -> Marker:
    """The cone of ``first`` moved until the pixels within ``band_px`` of its outline match a ball of uniform
    contrast on a uniform background, each pixel by its share inside (module doc); least squares over the
    cone's three parameters, the contrast and background solved exactly at each step."""
    from scipy.optimize import least_squares

    c0 = first.centre_source / first.distance_mm
    alpha0 = np.arcsin(first.diameter_mm / 2.0 / first.distance_mm)
    w0 = c0 / np.cos(alpha0)
    radius_px = first.apparent_diameter_px / 2.0
    ss = 8 if radius_px < 25 else 2  # big balls: the outline's sub-pixel share matters little
    rr, cc = np.mgrid[: img.shape[0], : img.shape[1]]
    dist = np.hypot(rr - first.row, cc - first.col)
    band = np.abs(dist - radius_px) <= band_px
    rows, cols, values = rr[band].astype(np.float64), cc[band].astype(np.float64), img[band]

    def residual(w: np.ndarray) -> np.ndarray:
        share = _inside_share(geometry, rows, cols, w, ss)
        a = np.stack([np.ones_like(share), share], 1)
        coef, *_ = np.linalg.lstsq(a, values, rcond=None)
        return a @ coef - values

    fit = least_squares(residual, w0, x_scale=np.abs(w0).max() * 1e-3 + 1e-9, xtol=1e-12, ftol=1e-12)
    w = fit.x
    cos_a = 1.0 / np.linalg.norm(w)
    alpha = float(np.arccos(cos_a))
    distance = (first.diameter_mm / 2.0) / np.sin(alpha)
    centre = distance * w * cos_a
    row, col = _project_source(geometry, centre)
    px = float(np.mean(geometry.pixel_spacing))
    contrast = float(np.ptp(values)) or 1.0
    return Marker(first.diameter_mm, centre, row, col, float(distance), 2 * geometry.sdd * np.tan(alpha) / px,
                  float(np.sqrt(np.mean(fit.fun**2)) / contrast), int(band.sum()))


def _edge_points(img: np.ndarray, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel edge points of a bright blob: along :data:`EDGE_RAYS` rays from its centroid, where the image
    crosses half-way between the blob's inside and the ring just outside it."""
    from scipy import ndimage

    rr, cc = np.nonzero(blob)
    r0, c0 = rr.mean(), cc.mean()
    radius = np.sqrt(blob.sum() / np.pi)
    inner = ndimage.binary_erosion(blob, iterations=max(1, int(radius // 3)))
    inside = float(np.median(img[inner if inner.any() else blob]))
    angles = np.linspace(0, 2 * np.pi, EDGE_RAYS, endpoint=False)
    steps = np.arange(0.4 * radius, 1.8 * radius + 2.0, 0.05)
    pr = r0 + np.sin(angles)[:, None] * steps[None]
    pc = c0 + np.cos(angles)[:, None] * steps[None]
    prof = ndimage.map_coordinates(img, [pr.ravel(), pc.ravel()], order=1, mode="nearest").reshape(pr.shape)
    ring = (steps >= radius + 1.5)
    out_r, out_c = [], []
    for a in range(len(angles)):
        outside = float(np.median(prof[a, ring]))
        level = 0.5 * (inside + outside)
        below = np.nonzero(prof[a] < level)[0]
        if len(below) == 0 or below[0] == 0 or inside - outside <= 0:
            continue
        j = below[0]
        f = (prof[a, j - 1] - level) / max(prof[a, j - 1] - prof[a, j], 1e-12)
        s = steps[j - 1] + f * (steps[j] - steps[j - 1])
        out_r.append(r0 + np.sin(angles[a]) * s)
        out_c.append(c0 + np.cos(angles[a]) * s)
    return np.asarray(out_r), np.asarray(out_c)
