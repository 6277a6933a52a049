"""A calibration marker: a metal sphere of known diameter that tells how far the anatomy is from the source.

One AP image cannot tell a patient shifted along the beam from a bigger or smaller one
(:mod:`threeddx.geometry`, ``POSE_RANGES``). Clinics settle it as digital templating does before a hip
arthroplasty: a steel ball of known diameter (typically 25 mm) is placed at the level of the greater
trochanter, and its magnification gives its distance from the source.

**Finding it** (:func:`find_marker`): the ball is a round, flat, bright disc (dark on a film displayed bone
dark: the caller says so, :func:`shows_bone_dark` tells it from the network's bones). The image is block-averaged
so the smallest ball it can show is ~12 px across and scored per radius (a ladder 7 % apart, between the
ball's images at :data:`NEAREST` of the SDD and at the detector) as the disc's mean minus the ring's around
it, less twice the spread inside (:func:`marker_candidates`); each bright, flat local maximum (one per place
and size: a ball on a larger saturated region of bone is its own candidate) is then fitted
at full resolution (:func:`_measure_candidate`): edge points where the profile falls fastest along rays
from its centre (robust to anatomy behind the ball that is brighter on one side), a cone through them
(0.35 px RMS at most, else it is not a sphere), refined on the pixels. None, several, one cut by the
image's border, or one whose outline shows only in part (under the collimator's blade) is an error in one
line. Measured on the simulator's processed radiographs
(``benchmarks/marker.py``, ``benchmarks/marker_finding.py``, docs/results.md): at a clinical detector's
resolution (2048 px) the ball is found in 32 of 36 random-chain films (the other 4 lie half under the
collimator's blade: 2 refused as such; eleventh session), none is invented on the same films without a ball,
its depth error an RMS of 1.8-3.1 mm (at most 9.7) on the films and 0.55-0.56 mm (at most 1.3) on their
detector signal at the file's KVP (validation-test; tenth and eleventh sessions); at the model's 128 px a 9 px ball
was found in 1-3 of 12 with 13-63 mm errors (a tenth of a pixel is 15 mm there; seventh session): predict reads
it from the image's own resolution.

**Measuring it**: the sphere's outline is where the cone from the focal spot touches the sphere: every
outline ray ``u`` (unit, source frame) makes the same angle ``alpha`` with the cone's axis ``c``,
``u . c = cos(alpha)``; ``sin(alpha) = r / D`` then gives the centre's distance ``D`` from the source (off
the central ray the outline is an ellipse and this is still exact). A first cone comes from edge points
(the steepest fall along rays from the candidate's centre; :func:`fit_cone`, linear least squares in
``w = c / cos(alpha)``); it is refined on the pixels themselves (:func:`refine_cone`): each pixel near
the outline predicted as the background plus the ball's contrast times the share of the pixel inside the
cone (sub-rays), the cone moved until the prediction matches, in a band about the outline wide enough to
hold a blurred edge (:func:`refine_band_px`), laid again about each new outline. On a noiseless image the
centre and the diameter come out within 0.02 px (tests); the edge points alone are ~0.15 px small at 9 px
across. A film's display (the logarithm, a window, an S-shaped curve, edge enhancement) moves a blurred
ball's visible edge by up to a pixel, which at a detector's 2048 px is several mm of depth: where the file
holds the detector's linear signal (a "for processing" DICOM), the ball found on the film is measured again
on that signal (:func:`measure_on_signal`), fitting the blurred image a steel ball makes there: steel is not
opaque at its outline (a ray grazing it crosses little steel), and read as an opaque disc a 25 mm ball comes
out 6-35 um small in radius at 60-100 kVp, up to ~2 mm too far at 2048 px (:class:`SteelEdge`; the ninth
session's +0.8..+1.1 mm mean lean).

**Drawing it** (:func:`sphere_cover`, :func:`with_marker`): the chord a sphere cuts from each sub-ray is
analytic, so a training or test sample gets a ball on the fly: per pixel the steel of its part inside the
outline and that part's share, which the physics lets through at each energy and adds as intensities, as a
detector pixel does (training: ``data.marker``, a share of the items with a ball where practice puts one,
:func:`random_marker`). Until the ninth session the ball was one mean chord per pixel, which passes almost
nothing where a pixel is half over the ball: its image grew by a few tenths of a pixel. The marker benchmarks'
films draw it exactly (``exact``, :func:`sphere_transmission`): each covered pixel's transmission at every
energy, the steel's thin last tens of um included, which the pixel-share maps pass too little of.

**Placing the bones by it** (:func:`place_by_marker`, the last step of
:meth:`threeddx.inference.predictor.Predictor.infer` when a marker is given): the declared iso-centre is the
marker's depth plus its offset from the hip joints' plane (``offset_mm``, default 0: the ball at the level of
the greater trochanter, as deep as the hip joints), so the image is shown to the network at the right scale;
then the network's bones, which one AP image can only place up to a scaling about the focal spot, are
scaled about it (every depth by the same factor; the silhouettes do not move) until the hip-joint centres'
mid-point (the pelvis fit's landmarks) lies at that depth.

Frames and units: the source frame and pixel indices of :mod:`threeddx.geometry` (the centre of pixel
(i, j) at (i, j)); mm.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from threeddx.errors import InputError
from threeddx.geometry import NEAREST_ANATOMY, XrayGeometry

#: Diameters a calibration marker may have (mm).
DIAMETER_RANGE_MM = (5.0, 60.0)
#: The nearest to the source a marker is looked for, as a share of the SDD (its largest image).
NEAREST = NEAREST_ANATOMY
#: A marker's pixels lie at least this share of the way from the image's median to its maximum.
BRIGHT = 0.85
#: Two candidates at one place are one when their radii are within this factor (else both are fitted).
SAME_SIZE = 1.3
#: The profiles along them are smoothed by a Gaussian of this SD (px) before the steepest fall is found: a noisy
#: 2048 px film's edge points scattered 0.42 px about the cone with 0.3 px (test film 14 of the 256 px
#: evaluation, eleventh session: not a sphere at 0.35 px), 0.31 with 1 px; the pixels' fit that follows is not
#: smoothed, and the blur moves a step's steepest point by about sd^2 / 2r (0.01 px on a 70 px ball's outline).
EDGE_SMOOTH_PX = 1.0
#: Radial lines along which the edge is found.
EDGE_RAYS = 90
#: How many candidate discs (strongest first) are fitted before giving up (a collimated film's bright bands
#: and burned-in text give dozens before a ball on bone: 40 left some balls unfitted).
MAX_CANDIDATES = 120
#: A candidate disc is at least this much brighter than the ring around it (share of the image's 0.5-99.9 %
#: range): a ball over bone under a window that saturates both is only ~0.05 brighter; a film whose large
#: unsharp mask greys the ball against the bone beside it 0.031 (validation film 1, eleventh session; 0.04
#: lost it), one whose range a white shield stretches 0.038. The outline's fit, not this, tells a ball.
MIN_CONTRAST = 0.025
#: A candidate's SD inside is at most this share of its contrast (a ball is flat; a grey ball of low contrast
#: has noise of about half its contrast: 0.35 missed it).
MAX_FLATNESS = 0.5
#: A ball has an edge all round: at least this share of the rays that stay inside the image must find one.
MIN_EDGE_SHARE = 0.7


def _source_rays(geometry: XrayGeometry, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Unit ray directions in the source frame (..., 3) through continuous pixel indices: the geometry's own
    :meth:`~threeddx.geometry.XrayGeometry.ray_directions_at` with the source frame as the world."""
    return geometry.with_pose(np.eye(4)).ray_directions_at(rows, cols)


def _outline_window(geometry: XrayGeometry, c: np.ndarray, radius_mm: float) -> tuple[int, int, int, int] | None:
    """The pixel window (r0, r1, c0, c1), end exclusive, that holds a sphere's whole image (source frame centre
    ``c``, mm), or None when it covers the source or the detector's plane (then every pixel is computed).

    The outline is the cone about ``c`` of half-angle ``alpha``: each of its rays makes at most
    ``theta + alpha`` with the central ray (``theta``: the centre's angle to it), so its image lies within
    ``SDD tan(theta + alpha)`` of the principal point, and within ``SDD (tan(theta + alpha) - tan(theta -
    alpha))`` of the centre's projection: a box that size, plus two pixels."""
    d = float(np.linalg.norm(c))
    if d <= radius_mm or c[2] <= radius_mm:
        return None
    alpha = float(np.arcsin(radius_mm / d))
    theta = float(np.arccos(np.clip(c[2] / d, -1.0, 1.0)))
    if theta + alpha >= np.pi / 2 - 1e-3:
        return None
    reach_mm = geometry.sdd * (np.tan(theta + alpha) - np.tan(theta - alpha))
    row, col = _project_source(geometry, c)
    sr, sc = geometry.pixel_spacing
    rows, cols = geometry.detector_shape
    hr, hc = reach_mm / sr + 2.0, reach_mm / sc + 2.0
    r0, r1 = max(0, int(np.floor(row - hr))), min(rows, int(np.ceil(row + hr)) + 1)
    c0, c1 = max(0, int(np.floor(col - hc))), min(cols, int(np.ceil(col + hc)) + 1)
    return (r0, max(r0, r1), c0, max(c0, c1))


def sphere_chord_mm(geometry: XrayGeometry, centre_source: np.ndarray, radius_mm: float,
                    supersample: int = 4) -> np.ndarray:
    """Length (mm) of each pixel's ray inside a sphere (centre in the source frame, mm), (rows, cols) float32;
    ``supersample``: mean over that many sub-rays per pixel side (partial volume at the outline). Only the
    window that holds the sphere's image is computed (:func:`_outline_window`); the rest is 0."""
    return sphere_cover(geometry, centre_source, radius_mm, supersample)[0]


def sphere_cover(geometry: XrayGeometry, centre_source: np.ndarray, radius_mm: float,
                 supersample: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel (rows, cols, float32): the mean chord (mm) over ``supersample`` x ``supersample`` sub-rays, the
    share of the sub-rays that cross the sphere, and the mean chord of those that do (0 where none does)."""
    c = np.asarray(centre_source, np.float64)
    rows, cols = geometry.detector_shape
    mean, share, inside = (np.zeros((rows, cols), np.float32) for _ in range(3))
    r0, r1, c0, c1 = _outline_window(geometry, c, radius_mm) or (0, rows, 0, cols)
    if r1 <= r0 or c1 <= c0:
        return mean, share, inside
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    rr, cc = np.meshgrid(np.arange(r0, r1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64), indexing="ij")
    total, hits = np.zeros(rr.shape), np.zeros(rr.shape)
    for dr in off:
        for dc in off:
            u = _source_rays(geometry, rr + dr, cc + dc)
            t = u @ c
            disc = radius_mm**2 - (c @ c - t**2)
            chord = 2.0 * np.sqrt(np.maximum(disc, 0.0)) * (t > 0)
            total += chord
            hits += chord > 0
    n = supersample**2
    mean[r0:r1, c0:c1] = total / n
    share[r0:r1, c0:c1] = hits / n
    inside[r0:r1, c0:c1] = np.where(hits > 0, total / np.maximum(hits, 1), 0.0)
    return mean, share, inside


def with_marker(materials: dict, geometry: XrayGeometry, centre_source: np.ndarray, diameter_mm: float,
                exact: bool = False) -> dict:
    """A sample's material line integrals (g/cm^2, :data:`threeddx.simulator.physics.MATERIALS`) with a steel ball:
    the steel along the rays of each pixel's part inside the ball's outline (their mean chord, cm, times
    :data:`threeddx.simulator.physics.RHO_IRON`) and that part's share (:data:`threeddx.simulator.physics.BALL`,
    ``BALL_SHARE``): the physics lets each part through at each energy and adds the intensities, as a detector
    pixel does (a pixel half over an opaque ball passes half the X-rays). Maps, so training's augmentations
    move the ball with the anatomy.

    ``exact``: each covered pixel's transmission at every energy instead (:func:`sphere_transmission`,
    :data:`threeddx.simulator.physics.BALL_EXACT`): one mean chord per pixel passes too little where the steel
    thins out at the outline (the last tens of um, :class:`SteelEdge`), which a clinical detector's
    pixels resolve in the ball's size (evaluation's 2048 px films)."""
    from threeddx.simulator.physics import BALL, BALL_EXACT, BALL_SHARE, RHO_IRON

    if BALL in materials or BALL_EXACT in materials:
        raise ValueError("one calibration ball per sample")
    if exact:
        return {**materials, BALL_EXACT: sphere_transmission(geometry, centre_source, diameter_mm / 2.0)}
    _, share, inside = sphere_cover(geometry, centre_source, diameter_mm / 2.0)
    return {**materials, BALL: (RHO_IRON * inside / 10.0).astype(np.float32), BALL_SHARE: share}


def chord_at_depth(radius_mm: float, depth_mm: np.ndarray) -> np.ndarray:
    """The chord (mm) a sphere of ``radius_mm`` cuts from a ray ``depth_mm`` inside its outline (0 outside):
    ``2 sqrt(2 R d - d^2)``."""
    d = np.asarray(depth_mm, np.float64)
    return 2.0 * np.sqrt(np.maximum(2.0 * radius_mm * d - d**2, 0.0))


def sphere_transmission(geometry: XrayGeometry, centre_source: np.ndarray, radius_mm: float,
                        supersample: int = 4) -> "BallTransmission":
    """A steel sphere's transmission per covered pixel and energy, the mean over each pixel's area
    (:class:`threeddx.simulator.physics.BallTransmission`).

    ``supersample`` x ``supersample`` sub-rays per pixel; each stands for a strip ``h`` wide across the outline
    (``h``: the sub-rays' spacing at the sphere), whose transmission is the exact mean of ``exp(-mu(E) c(d))``
    over the strip (``c(d)``: :func:`chord_at_depth`, the chord ``d`` inside the outline; a cumulative integral on
    a grid dense at the outline), so the steel's last tens of um are drawn however coarse the sub-rays."""
    from threeddx.simulator.physics import RHO_IRON, BallTransmission, tables

    c = np.asarray(centre_source, np.float64)
    r = float(radius_mm)
    rows, cols = geometry.detector_shape
    mu = tables().mu_rho["iron"] * RHO_IRON / 10.0  # (E,) per mm
    window = _outline_window(geometry, c, r) or (0, rows, 0, cols)
    r0, r1, c0, c1 = window
    if r1 <= r0 or c1 <= c0:
        return BallTransmission(np.zeros(0, np.int64), np.ones((0, len(mu)), np.float32))
    dist = float(np.linalg.norm(c))
    h = float(geometry.pixel_mm_at(dist)) / supersample  # mm at the sphere
    # G(d) = integral of the strip's transmission up to d inside the outline (d < 0: outside, transmission 1)
    d = np.concatenate([np.linspace(-2.0 * h, 0.0, 33)[:-1], r * np.linspace(0.0, 1.0, 4001) ** 3])
    f = np.exp(-chord_at_depth(r, d)[:, None] * mu[None])  # (D, E)
    g = np.concatenate([np.zeros((1, len(mu))), np.cumsum((f[1:] + f[:-1]) / 2.0 * np.diff(d)[:, None], 0)])

    def cumulative(x: np.ndarray) -> np.ndarray:  # G at depths x (mm), (n, E); beyond the grid's ends, linear
        x = np.asarray(x, np.float64)
        i = np.clip(np.searchsorted(d, x) - 1, 0, len(d) - 2)
        a = np.clip((x - d[i]) / (d[i + 1] - d[i]), 0.0, 1.0)[:, None]
        inner = g[i] * (1 - a) + g[i + 1] * a
        return inner + np.minimum(x - d[0], 0.0)[:, None] + np.maximum(x - d[-1], 0.0)[:, None] * f[-1]

    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    rr, cc = np.meshgrid(np.arange(r0, r1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    depth = np.empty((len(off) ** 2, len(rr)))
    for k, (dr, dc) in enumerate((a, b) for a in off for b in off):
        u = _source_rays(geometry, rr + dr, cc + dc)
        t = u @ c
        depth[k] = np.where(t > 0, r - np.sqrt(np.maximum(c @ c - t**2, 0.0)), -1e6)  # behind the source: none
    near = depth.max(0) > -h  # pixels whose strips reach the sphere
    depth, flat = depth[:, near], (rr[near].astype(np.int64) * cols + cc[near].astype(np.int64))
    total = np.zeros((len(flat), len(mu)))
    for k in range(depth.shape[0]):
        total += (cumulative(depth[k] + h / 2.0) - cumulative(depth[k] - h / 2.0)) / h
    return BallTransmission(flat, (total / depth.shape[0]).astype(np.float32))


#: Where clinics put a calibration ball for an AP hip radiograph, for training images (source frame axes,
#: mm from the hip joints' mid-point: +x the image's columns, +y its rows (caudal), +z away from the source;
#: a side's x is mirrored at random): (share, x, y, z ranges). Beside the greater trochanter, on the skin
#: lateral to the thigh (the trochanter lies ~50 mm lateral of the hip joint, the skin 40-80 mm further),
#: at its level; between the thighs, below the symphysis; on the table top beside the patient (the hips
#: :data:`~threeddx.geometry.HIPS_ABOVE_TABLE_MM` in front of it, give or take the body). The templating
#: literature's placements (e.g. the trochanteric and the intercrural ball, the table-mounted ball).
PLACES: dict[str, tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "beside the greater trochanter": (0.5, (140.0, 200.0), (-10.0, 60.0), (-40.0, 40.0)),
    "between the thighs": (0.25, (-25.0, 25.0), (60.0, 140.0), (-40.0, 20.0)),
    "on the table": (0.25, (170.0, 220.0), (-40.0, 100.0), (90.0, 180.0)),
}
#: Diameters of the balls in use (mm): 25 mm is the common one.
PRACTICE_DIAMETERS_MM = (20.0, 30.0)


def random_marker(rng: np.random.Generator, hips_source: np.ndarray) -> tuple[np.ndarray, float, str]:
    """A calibration ball as practice places it (:data:`PLACES`, :data:`PRACTICE_DIAMETERS_MM`): (its centre
    in the source frame (mm), its diameter (mm), the place's name), about the hip joints' mid-point
    ``hips_source`` (source frame, mm). On the table the ball rests on it: its centre a radius in front."""
    names = list(PLACES)
    name = names[int(rng.choice(len(names), p=[PLACES[n][0] for n in names]))]
    _, xr, yr, zr = PLACES[name]
    diameter = float(rng.uniform(*PRACTICE_DIAMETERS_MM))
    x = float(rng.uniform(*xr)) * (1.0 if rng.random() < 0.5 else -1.0)
    z = float(rng.uniform(*zr)) - (diameter / 2.0 if name == "on the table" else 0.0)
    offset = np.array([x, float(rng.uniform(*yr)), z])
    return np.asarray(hips_source, np.float64) + offset, diameter, name


@dataclass(frozen=True)
class Marker:
    """A calibration sphere found in a radiograph.

    ``centre_source``: its centre in the source frame (mm); ``row``/``col``: where that centre projects
    (pixel indices); ``distance_mm``: source to centre; ``apparent_diameter_px``: its outline's cone
    diameter on the detector at the central ray (``2 SDD tan(alpha)`` in pixels); ``edge_rms_px``: the fit's
    misfit (edge points: pixels off the cone; refined: the pixels' RMS residual as a share of the ball's
    contrast); ``edge_points``: how many points or pixels it used; ``dark``: found as a dark disc (the film
    shows bone dark, :func:`find_marker`'s ``bone_dark``); ``read_on``: the image its outline was measured on,
    ``"display"`` (the film as shown) or ``"detector signal"`` (a "for processing" image's linear signal,
    :func:`find_marker`'s ``signal``); ``edge_kvp``: the tube voltage its steel's soft edge was fitted at
    (:class:`SteelEdge`; None: fitted as an opaque disc, as on a film).
    """

    diameter_mm: float
    centre_source: np.ndarray
    row: float
    col: float
    distance_mm: float
    apparent_diameter_px: float
    edge_rms_px: float
    edge_points: int
    dark: bool = False
    read_on: str = "display"
    edge_kvp: float | None = None

    @property
    def depth_mm(self) -> float:
        """The centre's distance from the source along the central ray (its source-frame z), mm."""
        return float(self.centre_source[2])

    def to_dict(self) -> dict:
        return {"diameter_mm": self.diameter_mm, "centre_source_mm": np.round(self.centre_source, 2).tolist(),
                "centre_px": [round(self.row, 3), round(self.col, 3)], "distance_mm": round(self.distance_mm, 2),
                "depth_mm": round(self.depth_mm, 2), "apparent_diameter_px": round(self.apparent_diameter_px, 3),
                "edge_rms_px": round(self.edge_rms_px, 3), "edge_points": self.edge_points, "dark_disc": self.dark,
                "read_on": self.read_on, "edge_kvp": self.edge_kvp}


def sphere_marker(geometry: XrayGeometry, centre_source: np.ndarray, diameter_mm: float, edge_rms_px: float = 0.0,
                  edge_points: int = 0) -> Marker:
    """The :class:`Marker` of a sphere of ``diameter_mm`` centred at ``centre_source`` (source frame, mm) on
    ``geometry``: where its centre projects and its outline cone's diameter (module doc, "Measuring it")."""
    centre = np.asarray(centre_source, np.float64)
    distance = float(np.linalg.norm(centre))
    alpha = np.arcsin(diameter_mm / 2.0 / distance)
    row, col = _project_source(geometry, centre)
    px = float(np.mean(geometry.pixel_spacing))
    return Marker(float(diameter_mm), centre, row, col, distance, float(2 * geometry.sdd * np.tan(alpha) / px),
                  float(edge_rms_px), int(edge_points))


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
    rms_px = float(np.sqrt(np.mean(ang[keep] ** 2)) * geometry.sdd / float(np.mean(geometry.pixel_spacing)))
    return sphere_marker(geometry, distance * c, diameter_mm, rms_px, int(keep.sum()))


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


def _disc_kernels(r: float) -> tuple[np.ndarray, np.ndarray]:
    """A disc of radius ``r`` px and the ring from ``r + 1`` to ``1.5 r + 2`` px around it, each summing to 1
    (anti-aliased by 4 x 4 sub-samples)."""
    outer = 1.5 * r + 2.0
    n = int(np.ceil(outer)) + 1
    off = (np.arange(4) + 0.5) / 4 - 0.5
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float64)
    d = np.mean([np.hypot(yy + a, xx + b) for a in off for b in off], axis=0)
    disc = np.clip(r + 0.5 - d, 0.0, 1.0)
    ring = ((d >= r + 1.0) & (d <= outer)).astype(np.float64)
    return disc / disc.sum(), ring / ring.sum()


def _tilt_kernels(disc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The disc's weights times the offset from its centre along rows and along columns, each scaled so that
    convolving an image with it gives the slope of the plane fitted to the image under the disc, times the
    slope's variance reduction (:func:`marker_candidates`: the spread inside about that plane)."""
    n = disc.shape[0] // 2
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float64)
    return disc * yy / np.sqrt((disc * yy**2).sum()), disc * xx / np.sqrt((disc * xx**2).sum())


@dataclass(frozen=True)
class _Candidate:
    row: float  # full-resolution pixel indices
    col: float
    radius_px: float
    contrast: float  # inside minus the ring around it, in the image's robust range (0-1)
    flatness: float  # SD inside (about the plane fitted there) over the contrast


def marker_candidates(image: np.ndarray, diameter_px: tuple[float, float], min_contrast: float = MIN_CONTRAST,
                      max_flatness: float = MAX_FLATNESS) -> list[_Candidate]:
    """Round, flat, bright discs in ``image`` whose diameter lies in ``diameter_px`` (smallest, largest; full
    resolution pixels): module doc, "Finding it". Centres in pixel indices, radii in pixels. The image is block-averaged so that the smallest disc is
    about 12 px across, then scored per radius (a geometric ladder, 7 % apart) as the disc's mean minus the
    ring's around it, less twice the spread inside (about the plane fitted there: a background's slope, which
    a processed film leaves across a ball, is no spread); local maxima over position and radius that are bright
    (``min_contrast`` of the image's 0.5-99.9 % range) and flat (SD inside at most ``max_flatness`` of the
    contrast) are candidates, strongest first."""
    from scipy import ndimage
    from scipy.signal import fftconvolve

    img = np.asarray(image, np.float64)
    lo, hi = np.percentile(img, [0.5, 99.9])
    x = np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.2)
    f = max(1, int(diameter_px[0] // 12))
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    xs = x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    r_lo, r_hi = max(diameter_px[0] / f / 2 * 0.9, 2.0), diameter_px[1] / f / 2 * 1.05
    radii = r_lo * 1.07 ** np.arange(int(np.log(max(r_hi / r_lo, 1.0)) / np.log(1.07)) + 1)
    scores, stats = [], []
    inside = np.ones_like(xs)
    for r in radii:
        disc, ring = _disc_kernels(r)
        # means over the part of the disc and of the ring inside the image (beyond it is no darker: a bright
        # collimated strip along the border made discs in its corners)
        w_in = np.maximum(fftconvolve(inside, disc, mode="same"), 1e-6)
        w_out = np.maximum(fftconvolve(inside, ring, mode="same"), 1e-6)
        m_in = fftconvolve(xs, disc, mode="same") / w_in
        m_out = fftconvolve(xs, ring, mode="same") / w_out
        # the spread about the plane fitted inside: a processed film's large-kernel unsharp mask leaves a ball
        # flat in the signal sloping with the background around it (the plane's slopes squared, times their
        # weights' variance, are taken out of the variance; the disc is symmetric, so they are independent; a
        # disc the border cuts keeps its whole spread)
        whole = w_in > 1.0 - 1e-6
        tilt = np.where(whole, sum(fftconvolve(xs, k, mode="same") ** 2 for k in _tilt_kernels(disc)), 0.0)
        sd_in = np.sqrt(np.maximum(fftconvolve(xs**2, disc, mode="same") / w_in - m_in**2 - tilt, 0.0))
        contrast = m_in - m_out
        scores.append(contrast - 2.0 * sd_in)
        stats.append((contrast, sd_in))
    stack = np.stack(scores)
    peaks = (stack == ndimage.maximum_filter(stack, size=(3, 5, 5))) & (stack > 0)
    out = []
    for k, i, j in zip(*np.nonzero(peaks)):
        contrast, sd = stats[k][0][i, j], stats[k][1][i, j]
        if contrast >= min_contrast and sd <= max_flatness * contrast:
            out.append(_Candidate((i + 0.5) * f - 0.5, (j + 0.5) * f - 0.5, float(radii[k] * f), float(contrast),
                                  float(sd / contrast)))
    out.sort(key=lambda c: -c.contrast)
    kept: list[_Candidate] = []
    for c in out:  # one candidate per place and size: the strongest of similar radii (a small disc inside a big
        # one stays, even near its centre: a disc half over a ball and half over the bone beside it is flat about
        # its plane and may outscore the ball)
        if all(np.hypot(c.row - k.row, c.col - k.col) > min(c.radius_px, k.radius_px)
               or max(c.radius_px, k.radius_px) > SAME_SIZE * min(c.radius_px, k.radius_px) for k in kept):
            kept.append(c)
    return kept


def _crop_geometry(geometry: XrayGeometry, r0: int, c0: int, rows: int, cols: int) -> XrayGeometry:
    """The geometry of the detector window starting at pixel (r0, c0), ``rows x cols`` pixels."""
    u0, v0 = geometry.principal_point
    return replace(geometry, detector_shape=(rows, cols), principal_point=(u0 - c0, v0 - r0))


def _gradient_edge_points(win: np.ndarray, row: float, col: float, radius: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Edge points of a bright disc about (``row``, ``col``) in ``win`` (pixel indices of the window): along
    :data:`EDGE_RAYS` rays, where the profile falls fastest between 0.5 and 1.6 radii (robust to a background
    that differs from side to side, as anatomy behind a ball does). Rays whose fall is under a third of the
    median fall (the ball against something as bright) are dropped; also returns the share of rays that ran
    out of the window (a disc cut by the image's border)."""
    from scipy import ndimage

    angles = np.linspace(0, 2 * np.pi, EDGE_RAYS, endpoint=False)
    steps = np.arange(0.5 * radius, 1.6 * radius + 1.5, 0.05)
    pr = row + np.sin(angles)[:, None] * steps[None]
    pc = col + np.cos(angles)[:, None] * steps[None]
    outside = (pr < -0.5) | (pc < -0.5) | (pr > win.shape[0] - 0.5) | (pc > win.shape[1] - 0.5)
    prof = ndimage.map_coordinates(win, [pr.ravel(), pc.ravel()], order=3, mode="nearest").reshape(pr.shape)
    slope = np.gradient(ndimage.gaussian_filter1d(prof, EDGE_SMOOTH_PX / 0.05, axis=1), axis=1)
    j = np.argmin(slope, axis=1)
    fall = -slope[np.arange(len(angles)), j]
    # a fall steepest at either end of the search is no edge within it (a flat ray's steepest point is anywhere:
    # at its start, such rays made a perfect small circle in a bright strip's corner)
    ok = ~outside.any(axis=1) & (fall > 0) & (j > 0) & (j < len(steps) - 1)
    if ok.any():
        ok &= fall >= np.median(fall[ok]) / 3
    s = steps[j]
    return (row + np.sin(angles) * s)[ok], (col + np.cos(angles) * s)[ok], float(outside.any(axis=1).mean())


def _window(img: np.ndarray, row: float, col: float, radius_px: float) -> tuple[np.ndarray, int, int]:
    """The part of ``img`` within 2.5 radii (+3 px) of (``row``, ``col``), and its first row and column."""
    half = int(np.ceil(2.5 * radius_px)) + 3
    r0, c0 = max(int(round(row)) - half, 0), max(int(round(col)) - half, 0)
    r1, c1 = min(int(round(row)) + half + 1, img.shape[0]), min(int(round(col)) + half + 1, img.shape[1])
    return img[r0:r1, c0:c1], r0, c0


def _a_size_it_can_have(m: Marker, diameter_px: tuple[float, float]) -> bool:
    """Whether ``m``'s image lies within 10 % of ``diameter_px`` (the smallest and largest the ball can have)."""
    return 0.9 * diameter_px[0] <= m.apparent_diameter_px <= 1.1 * diameter_px[1]


#: A candidate's outline fitted from at least this share of its rays is reported as a ball partly hidden when it
#: has not the share a whole ball needs (:data:`MIN_EDGE_SHARE`): a sphere's arc there, the rest cut off.
MIN_ARC_SHARE = 0.3
#: Edge points off the fitted cone by more than this RMS (px) are not a sphere's outline.
MAX_EDGE_RMS_PX = 0.35


def _measure_candidate(img: np.ndarray, geometry: XrayGeometry, c: _Candidate, diameter_mm: float,
                       diameter_px: tuple[float, float] = (0.0, np.inf)) -> tuple[Marker | None, str]:
    """The sphere fitted to one candidate at full resolution (a window of 2.5 radii around it), or None when its
    edge is not a whole sphere's outline; and why not: "" (not a sphere's outline: too few rays with an edge,
    edge points off the cone by more than :data:`MAX_EDGE_RMS_PX` RMS, or a size outside ``diameter_px``, the
    smallest and largest the ball can have), "border" (a sphere's outline cut by the image's border) or
    "hidden" (a sphere's arc of a size the ball can have, its edge on too few of the rays inside the image: a
    ball part under the collimator's blade, or against something as bright)."""
    win, r0, c0 = _window(img, c.row, c.col, c.radius_px)
    rows, cols, cut = _gradient_edge_points(win, c.row - r0, c.col - c0, c.radius_px)
    if len(rows) < MIN_ARC_SHARE * EDGE_RAYS:
        return None, ""  # an edge on too few sides: a bright region's border, not a ball
    sub = _crop_geometry(geometry, r0, c0, *win.shape)
    try:
        first = fit_cone(rows, cols, sub, diameter_mm)
    except InputError:
        return None, ""
    if first.edge_rms_px > MAX_EDGE_RMS_PX:
        return None, ""  # not a sphere's outline (a cut ball's arc still is one)
    if len(rows) < MIN_EDGE_SHARE * (1.0 - cut) * EDGE_RAYS:  # an arc of a sphere: a ball partly hidden?
        arc = replace(first, row=first.row + r0, col=first.col + c0)
        return None, "hidden" if _a_size_it_can_have(arc, diameter_px) else ""
    try:
        m = refine_cone(win, sub, first)
    except InputError:
        return None, ""
    m = replace(m, row=m.row + r0, col=m.col + c0)  # the window's pixel indices -> the image's
    if not _a_size_it_can_have(m, diameter_px):
        return None, ""  # round, but not a size this ball can have
    radius = m.apparent_diameter_px / 2
    if min(m.row, m.col, img.shape[0] - 1 - m.row, img.shape[1] - 1 - m.col) < radius - 0.5:
        return None, "border"  # a sphere's outline that runs off the image: a ball cut by the border
    return m, ""


def find_marker(image: np.ndarray, geometry: XrayGeometry, diameter_mm: float, bone_dark: bool = False,
                signal: np.ndarray | None = None, kvp: float | None = None) -> Marker:
    """The calibration sphere of ``diameter_mm`` in ``image`` (H, W, as displayed) taken with ``geometry``
    (module doc). ``bone_dark``: the display shows bone dark (an inverted film, :func:`shows_bone_dark`), so the
    ball is a dark disc. ``signal``: the same image's detector signal (H, W; linear in the X-ray intensity up to
    an offset and a gain, as a "for processing" file holds it), when there is one: the ball found on ``image``
    is measured again on it (:func:`measure_on_signal`; ``kvp``: the exposure's tube voltage, as a DICOM's KVP
    states it, for the steel's soft edge). Raises InputError, one line, when none, several or one at the border
    is found."""
    lo_d, hi_d = DIAMETER_RANGE_MM
    if not (np.isfinite(diameter_mm) and lo_d <= diameter_mm <= hi_d):
        raise InputError(f"--marker-mm must be between {lo_d:g} and {hi_d:g} mm, got {diameter_mm:g}")
    img = np.asarray(image, np.float64)
    if img.shape != tuple(geometry.detector_shape):
        raise InputError(f"image is {img.shape[0]}x{img.shape[1]} px but the geometry's detector is "
                         f"{geometry.detector_shape[0]}x{geometry.detector_shape[1]}")
    if not np.ptp(img) > 0:
        raise InputError(f"no {diameter_mm:g} mm marker found: the image is flat")
    if bone_dark:
        img = img.max() + img.min() - img
    dmin, dmax = expected_diameter_px(geometry, diameter_mm)
    found, at_edge, hidden = [], [], []
    for c in marker_candidates(img, (dmin, dmax))[:MAX_CANDIDATES]:
        m, why = _measure_candidate(img, geometry, c, diameter_mm, (dmin, dmax))
        if m is not None:
            found.append(m)
        elif why == "border":
            at_edge.append(c)
        elif why == "hidden":
            hidden.append(c)
    if len(found) > 1:
        where = ", ".join(f"row {m.row:.0f} col {m.col:.0f}" for m in found)
        raise InputError(f"{len(found)} candidates for the {diameter_mm:g} mm marker ({where}); one marker is needed")
    if not found:
        if at_edge:
            where = ", ".join(f"row {c.row:.0f} col {c.col:.0f}" for c in at_edge[:3])
            raise InputError(f"no whole {diameter_mm:g} mm marker found: the round candidates ({where}) touch the "
                             "image's border; the marker must lie wholly inside the image")
        if hidden:
            where = ", ".join(f"row {c.row:.0f} col {c.col:.0f}" for c in hidden[:3])
            raise InputError(f"no whole {diameter_mm:g} mm marker found: a ball's outline shows only in part ({where}; "
                             "the rest under the collimator's blade or against something as bright); the marker "
                             "must lie wholly inside the exposed field")
        raise InputError(f"no {diameter_mm:g} mm marker found (a round, uniformly {'dark' if bone_dark else 'bright'} "
                         f"disc {dmin:.0f}-{dmax:.0f} px across); check --marker-mm")
    m = replace(found[0], dark=bool(bone_dark))
    return m if signal is None else measure_on_signal(signal, geometry, m, (dmin, dmax), kvp)


def measure_on_signal(signal: np.ndarray, geometry: XrayGeometry, found: Marker,
                      diameter_px: tuple[float, float] = (0.0, np.inf), kvp: float | None = None,
                      opaque: bool = False) -> Marker:
    """``found`` (a ball found on the displayed film) measured again on the film's detector signal ``signal``
    (H, W, linear in the intensity up to an offset and a gain): :func:`refine_cone` from ``found``'s cone, fitting
    the steel's own edge (:class:`SteelEdge` at the tube voltage ``kvp``; None: :data:`EDGE_KVP` assumed), or an
    opaque disc's (``opaque``: the ninth session's reading, kept for comparison).

    In the linear signal a steel ball's image is its transmission blurred by the detector, which the fit
    models (the blur fitted); the display's logarithm and curve move a blurred edge inside or outside the
    outline by up to a pixel, which at 2048 px is several mm of depth (``benchmarks/marker_finding.py``,
    docs/results.md). Where the signal's fit fails or gives a size the ball cannot have, ``found`` is returned
    as it was (``read_on`` says which)."""
    sig = np.asarray(signal, np.float64)
    if sig.shape != tuple(geometry.detector_shape):
        raise InputError(f"the detector signal is {sig.shape[0]}x{sig.shape[1]} px but the image is "
                         f"{geometry.detector_shape[0]}x{geometry.detector_shape[1]}")
    if not np.all(np.isfinite(sig)) or not np.ptp(sig) > 0:
        return found
    win, r0, c0 = _window(sig, found.row, found.col, found.apparent_diameter_px / 2)
    sub = _crop_geometry(geometry, r0, c0, *win.shape)
    try:
        edge = None if opaque else SteelEdge(found.diameter_mm, EDGE_KVP if kvp is None else float(kvp))
        m = refine_cone(win, sub, replace(found, row=found.row - r0, col=found.col - c0), edge=edge)
    except InputError:
        return found
    if not _a_size_it_can_have(m, diameter_px):
        return found
    return replace(m, row=m.row + r0, col=m.col + c0, dark=found.dark, read_on="detector signal",
                   edge_kvp=None if edge is None else edge.kvp)


#: What a ball's soft edge is reckoned with when the file does not say (:class:`SteelEdge`): a hip AP's tube
#: voltage (technique charts: 75-85 kVp), the chain's default total filtration (3 mm Al) and about 10 cm of soft
#: tissue along the rays (the ball beside the trochanter is seen through the side of the hip or thigh).
EDGE_KVP = 80.0
EDGE_AL_MM = 3.0
EDGE_TISSUE_G_CM2 = 10.0
#: Tube voltages a radiograph's KVP may state for the edge's reckoning (kVp); outside, :data:`EDGE_KVP`.
KVP_RANGE = (40.0, 150.0)


@dataclass(frozen=True)
class SteelEdge:
    """The share of the signal a steel ball of ``diameter_mm`` takes away ``d`` mm inside its outline (across the
    rays, at the ball), at the tube voltage ``kvp``: ``1 - t(d)``, ``t`` the transmission through the chord
    ``2 sqrt(2 R d - d^2)`` relative to beside the ball (the physics' spectrum with :data:`EDGE_AL_MM` of
    aluminium, through :data:`EDGE_TISSUE_G_CM2` of soft tissue, a CsI detector;
    :func:`threeddx.simulator.physics.transmission`).

    Steel is not opaque at its outline: a ray grazing it crosses little steel, and the beam's hard end passes
    even a few mm. The signal the last part lets through, ``integral of t(d) dd`` (:attr:`inset_mm`), is 6 um
    at 60 kVp, 18 at 80 and 35 at 100 for a 25 mm ball: a ball read as opaque is read that much small in
    radius, 0.1 % at 80 kVp, ~1 mm too far at 850 mm from the source; :func:`refine_cone` fits this profile on
    a detector signal instead of an opaque step. ``al_mm``, ``cu_mm`` and ``tissue_g_cm2`` are the beam's
    filtration and the body behind the ball (the fit's assumptions by default; ``benchmarks/marker_edge.py``
    sets a chain's own to see what they move)."""

    diameter_mm: float
    kvp: float = EDGE_KVP
    al_mm: float = EDGE_AL_MM
    cu_mm: float = 0.0
    tissue_g_cm2: float = EDGE_TISSUE_G_CM2

    @property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:  # computed once per ball, voltage and filtration
        return _steel_edge_table(float(self.diameter_mm), float(self.kvp), float(self.al_mm), float(self.cu_mm),
                                 float(self.tissue_g_cm2))

    @property
    def inset_mm(self) -> float:
        """The signal let through inside the outline, as a depth (mm): ``integral_0^R t(d) dd``."""
        d, taken = self._table
        return float(d[-1] - taken[-1])

    def taken_mm(self, d_mm: np.ndarray) -> np.ndarray:
        """``integral_0^d (1 - t)``: the signal taken away up to ``d_mm`` inside the outline (0 outside), mm."""
        d, taken = self._table
        x = np.asarray(d_mm, np.float64)
        return np.interp(x, d, taken) + np.maximum(x - d[-1], 0.0) * (1.0 - self.centre_transmission)

    @property
    def centre_transmission(self) -> float:
        """The share let through along the ball's diameter (0-1): deep inside, the edge's last value."""
        d, taken = self._table
        return float(1.0 - (taken[-1] - taken[-2]) / (d[-1] - d[-2]))


@lru_cache(maxsize=64)
def _steel_edge_table(diameter_mm: float, kvp: float, al_mm: float, cu_mm: float,
                      tissue_g_cm2: float) -> tuple[np.ndarray, np.ndarray]:
    """:class:`SteelEdge`'s depths (mm, dense at the outline) and the signal taken away up to each (mm)."""
    from threeddx.simulator.physics import RHO_IRON, transmission

    r = diameter_mm / 2.0
    d = r * np.linspace(0.0, 1.0, 4001) ** 3
    chord_mm = chord_at_depth(r, d)
    n = len(d)
    tissue = {"soft": np.full((1, n), tissue_g_cm2, np.float32)}
    steel = (chord_mm * RHO_IRON / 10.0)[None].astype(np.float32)
    through = transmission(tissue, kvp, al_mm, cu_mm, ball=(steel, np.ones((1, n), np.float32)))[0]
    t = through.astype(np.float64) / transmission(tissue, kvp, al_mm, cu_mm)[0].astype(np.float64)
    a = 1.0 - t
    return d, np.concatenate([[0.0], np.cumsum((a[1:] + a[:-1]) / 2.0 * np.diff(d))])


#: The rims this many of the model's pixels wide inside and outside the bones' outline are compared.
BAND_PX = 4


def shows_bone_dark(image: np.ndarray, masks: np.ndarray) -> bool:
    """Whether ``image`` (H, W, as displayed) shows bone darker than the body around it: an inverted film that
    did not say so (a DICOM's MONOCHROME1 is already undone by the reader). ``masks`` (C, H, W): the bones the
    network found in this image (any polarity: it is trained on inverted displays too). The mean of the rim
    :data:`BAND_PX` wide inside the bones' outline against that of the rim outside it (means, not medians: a
    hard window and 8 bits give both rims one median); False when the network found under 50 bone pixels
    (nothing to compare: the usual display is assumed). Right on all 36 random-chain films of
    ``benchmarks/marker_finding.py`` (8 inverted)."""
    from scipy import ndimage

    bone = np.asarray(masks, bool).reshape(-1, *np.shape(image)).any(axis=0)
    inner = bone & ~ndimage.binary_erosion(bone, iterations=BAND_PX)
    outer = ndimage.binary_dilation(bone, iterations=BAND_PX) & ~bone
    if bone.sum() < 50 or outer.sum() < 50:
        return False
    img = np.asarray(image, np.float64)
    return bool(img[inner].mean() < img[outer].mean())


def _inside_share(geometry: XrayGeometry, rows: np.ndarray, cols: np.ndarray, w: np.ndarray, ss: int,
                  blur_px: float = 0.0, edge: "SteelEdge | None" = None) -> np.ndarray:
    """Per pixel (indices ``rows``, ``cols``), the share of it inside the cone ``u . w >= 1``, blurred by a
    Gaussian of ``blur_px`` (SD, pixels): ``ss x ss`` sub-rays, each counted by the normal distribution's CDF of
    its signed distance from the outline, its SD ``blur_px`` widened by the sub-ray's own spacing (so the share
    moves smoothly with the cone), the outline taken ``blur_px^2 / 2r`` inside (a blurred disc of radius ``r``
    px is half as bright that much inside its outline: the curvature's leading term). With ``edge``, the share
    of the signal a steel ball takes away instead (:class:`SteelEdge`: its soft edge, blurred the same way)."""
    from scipy.special import ndtr

    off = (np.arange(ss) + 0.5) / ss - 0.5
    norm = np.linalg.norm(w)
    cos_a = 1.0 / norm
    sin_a = np.sqrt(max(1.0 - cos_a**2, 1e-12))
    px = float(np.mean(geometry.pixel_spacing))
    sd = float(np.sqrt(blur_px**2 + 1.0 / (12.0 * ss**2)))
    shrink = blur_px**2 / (2.0 * max(geometry.sdd * sin_a / cos_a / px, 1.0))
    # a pixel's size at the ball (mm): the ball's radius over its outline's radius in pixels
    profile = ndtr if edge is None else _blurred_edge(edge, sd, edge.diameter_mm / 2.0 / max(
        geometry.sdd * sin_a / cos_a / px, 1.0))
    out = np.zeros(rows.shape)
    for dr in off:
        for dc in off:
            u = _source_rays(geometry, rows + dr, cols + dc)
            d_px = (u @ (w / norm) - cos_a) / sin_a * geometry.sdd / px  # > 0 inside, pixels from the outline
            out += profile((d_px - shrink) / sd)
    return out / ss**2


def _blurred_edge(edge: "SteelEdge", sd_px: float, mm_per_px: float):
    """``edge``'s share taken away, blurred by a Gaussian of ``sd_px`` (pixels of ``mm_per_px`` at the ball), as
    a function of the signed distance inside the outline in units of ``sd_px`` (as ``ndtr`` is for an opaque
    edge): cell means on a grid an eighth of the blur apart (exact for the steep first um), then the blur."""
    from scipy import ndimage

    step = sd_px / 8.0
    x = np.arange(-12 * 8 - 1, int(np.ceil(REFINE_BAND_PX[1] / step)) + 12 * 8 + 2) * step  # px, inside > 0
    cell = (edge.taken_mm((x + step / 2) * mm_per_px) - edge.taken_mm((x - step / 2) * mm_per_px)) / (step * mm_per_px)
    blurred = ndimage.gaussian_filter1d(cell, 8.0, mode="nearest", truncate=6.0)
    return lambda z: np.interp(z * sd_px, x, blurred)


#: The band about the outline that :func:`refine_cone` fits: half the ball's radius, at least 2.5 and at most
#: 9 px. A detector's blur reaches 3-5 px from the outline (sigma 1-1.5 px) and a vendor's edge enhancement
#: further: a narrow band cuts the blurred edge and leaves the fit free to trade the ball's contrast against
#: its size (the ball blurred by 1.5 px in the tests is measured within 0.1 px; ``benchmarks/marker_finding.py``
#: on the simulator's films, docs/results.md).
REFINE_BAND_PX = (2.5, 9.0)


#: At most this many fits in :func:`refine_cone`.
REFINE_PASSES = 4


def refine_band_px(radius_px: float) -> float:
    """The band (px either side of the outline) :func:`refine_cone` fits for a ball of ``radius_px``."""
    lo, hi = REFINE_BAND_PX
    return float(np.clip(radius_px / 2.0, lo, hi))


def refine_cone(img: np.ndarray, geometry: XrayGeometry, first: Marker, band_px: float | None = None,
                edge: SteelEdge | None = None) -> Marker:
    """The cone of ``first`` moved until the pixels within ``band_px`` (default :func:`refine_band_px`) of its
    outline match a ball of uniform contrast (or a steel ball's own edge, ``edge``: :class:`SteelEdge`), its edge
    blurred by a Gaussian (its SD fitted too), on a background that may tilt across it (a plane), each pixel by
    its share inside (module doc); least squares over the cone's three parameters and the blur, the contrast and
    background solved exactly at each step. The band is then
    laid about the new outline and the fit made again, until the outline moves under 0.02 px (at most
    :data:`REFINE_PASSES` fits): a band about a first outline a pixel off cuts one side of a blurred edge. Any
    affine change of ``img``'s values gives the same cone.

    The blur is fitted, not left out: a sharp edge fitted to a blurred one weighs the ring outside the outline
    more than the one inside (it is longer), which moved the outline with the band's width
    (``benchmarks/marker_edge.py``: an opaque ball blurred by 1 px now within 0.02 mm of depth at 2048 px)."""
    m = first
    for _ in range(REFINE_PASSES):
        prev, m = m, _refine_once(img, geometry, m, band_px, edge)
        moved = (m.row - prev.row, m.col - prev.col, m.apparent_diameter_px - prev.apparent_diameter_px)
        if max(map(abs, moved)) < 0.02:
            break
    return m


#: The edge's blur (SD, px) :func:`refine_cone` starts from, and the range it may take.
REFINE_BLUR_PX = (0.7, 0.05, 6.0)


def _refine_once(img: np.ndarray, geometry: XrayGeometry, first: Marker, band_px: float | None,
                 edge: SteelEdge | None = None) -> Marker:
    """One fit of :func:`refine_cone`, its band about ``first``'s outline."""
    from scipy.optimize import least_squares

    c0 = first.centre_source / first.distance_mm
    alpha0 = np.arcsin(first.diameter_mm / 2.0 / first.distance_mm)
    w0 = c0 / np.cos(alpha0)
    radius_px = first.apparent_diameter_px / 2.0
    band_px = refine_band_px(radius_px) if band_px is None else band_px
    ss = 8 if radius_px < 25 else 4  # big balls: the outline's sub-pixel share matters less
    rr, cc = np.mgrid[: img.shape[0], : img.shape[1]]
    dist = np.hypot(rr - first.row, cc - first.col)
    band = np.abs(dist - radius_px) <= band_px
    rows, cols, values = rr[band].astype(np.float64), cc[band].astype(np.float64), img[band]
    if len(values) < 12:
        raise InputError("the marker's outline lies outside the image")
    contrast = float(np.ptp(values)) or 1.0
    values = (values - np.median(values)) / contrast  # an affine change of the image's values changes nothing

    dr, dc = (rows - first.row) / max(radius_px, 1.0), (cols - first.col) / max(radius_px, 1.0)

    def residual(x: np.ndarray) -> np.ndarray:
        share = _inside_share(geometry, rows, cols, x[:3], ss, x[3], edge)
        a = np.stack([np.ones_like(share), dr, dc, share], 1)  # a background that may tilt across the ball
        coef, *_ = np.linalg.lstsq(a, values, rcond=None)
        return a @ coef - values

    start, lo, hi = REFINE_BLUR_PX
    scale = np.abs(w0).max() * 1e-3 + 1e-9
    fit = least_squares(residual, np.append(w0, start), x_scale=np.array([scale, scale, scale, 0.1]),
                        bounds=([-np.inf] * 3 + [lo], [np.inf] * 3 + [hi]), xtol=1e-12, ftol=1e-12)
    w = fit.x[:3]
    cos_a = 1.0 / np.linalg.norm(w)
    alpha = float(np.arccos(cos_a))
    distance = (first.diameter_mm / 2.0) / np.sin(alpha)
    return replace(sphere_marker(geometry, distance * w * cos_a, first.diameter_mm,
                                 float(np.sqrt(np.mean(fit.fun**2))), int(band.sum())),
                   dark=first.dark, read_on=first.read_on)


#: The largest scaling of the bones about the focal spot a marker may ask for (1 +- this): a marker that
#: would move the hips by more than 15 % (about 120 mm at 820 mm) is more likely misplaced or misread.
MAX_MARKER_SCALE = 0.15


@dataclass(frozen=True)
class MarkerReading:
    """A marker found in an image and where it lies relative to the hip joints: ``offset_mm`` is how much
    further from the source the hip joints' mid-plane lies than the marker's centre (0: as deep)."""

    marker: Marker
    offset_mm: float = 0.0

    @property
    def hips_depth_mm(self) -> float:
        """The hip joints' mid-plane's distance from the source along the central ray (mm)."""
        return self.marker.depth_mm + self.offset_mm


def place_by_marker(front: np.ndarray, back: np.ndarray | None, inner: np.ndarray | None, geometry: XrayGeometry,
                    fits: dict, reading: MarkerReading) -> dict:
    """Scale the bones about the focal spot (depth maps in place, ``fits`` replaced) so the pelvis fit's
    hip-joint mid-point lies at the marker's hips depth (module doc, "Placing the bones"). Returns what
    summary.json's ``marker`` says: the marker, the depths before and after, the scale, or why nothing moved."""
    out = {**reading.marker.to_dict(), "offset_mm": reading.offset_mm,
           "hips_depth_mm": round(reading.hips_depth_mm, 2), "applied": False}
    pelvis = fits.get("pelvis")
    if pelvis is None or "pelvis" in pelvis.rejected or not {"hjc_left", "hjc_right"} <= set(pelvis.landmarks):
        out["skipped"] = "no accepted pelvis fit to place (the hip joints are found on it)"
        return out
    mid = (pelvis.landmarks["hjc_left"] + pelvis.landmarks["hjc_right"]) / 2
    before = float(geometry.to_source(mid[None])[0, 2])
    k = reading.hips_depth_mm / before
    out["network_hips_depth_mm"] = round(before, 2)
    if not abs(k - 1.0) <= MAX_MARKER_SCALE:
        out["skipped"] = (f"the marker puts the hips {reading.hips_depth_mm - before:+.0f} mm from where the image "
                          f"shows them (over {100 * MAX_MARKER_SCALE:.0f} %): check --marker-mm and the offset")
        return out
    for a in (front, back, inner):
        if a is not None:
            a *= np.float32(k)
    source = geometry.source_position_world
    source_ap = geometry.in_ap_frame().source_position_world
    for b, f in list(fits.items()):
        fits[b] = f.scaled_about(source, k, source_ap)
    out.update(applied=True, scale=round(k, 5), moved_mm=round(reading.hips_depth_mm - before, 2))
    return out
