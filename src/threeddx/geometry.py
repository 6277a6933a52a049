"""Cone-beam X-ray geometry: the one place where the projection formulas live.

Frames and units
----------------
* **Source frame** (mm): origin at the focal spot, ``+z`` towards the detector,
  the detector plane at ``z = SDD`` (source-to-detector distance). ``+x`` runs
  along increasing column index, ``+y`` along increasing row index.
* **Detector pixels**: pixel (row ``i``, column ``j``) has its centre at
  ``x = (j + 0.5 - u0) * col_spacing``, ``y = (i + 0.5 - v0) * row_spacing``,
  ``z = SDD``, where ``(u0, v0)`` is the principal point in continuous pixel
  coordinates (default: the detector centre, ``(cols / 2, rows / 2)``).
  Continuous pixel coordinates put the centre of pixel ``(i, j)`` at
  ``(i + 0.5, j + 0.5)``; the arrays returned by :func:`XrayGeometry.project`
  are *indices* (centre of pixel ``(i, j)`` at ``(i, j)``).
* **World frame** (mm): the CT's physical coordinates as SimpleITK reports
  them (LPS: ``+x`` patient left, ``+y`` posterior, ``+z`` superior).
* **Pose**: a rigid 4x4 matrix ``world_to_source``.
* **Depth** of a surface point: its Euclidean distance from the source, in mm,
  measured along the pixel's ray (not the ``z`` coordinate).
* **Iso-centre distance** (optional, JSON ``source_to_isocenter_mm``; or set by a calibration ball in the
  picture, JSON ``marker_diameter_mm`` and ``marker_offset_mm``, :data:`MARKER_KEYS`): how far
  from the source, along the central ray, the centre of the anatomy lies (the
  hip joints' mid-plane); the preset's is 820 mm. It is what a user can declare
  about the patient without a calibrated pose (e.g. a table height), and what
  :func:`model_view` uses to show an image to a model trained at another one.
  What a room records instead, a table's or the skin's distance from the
  source, becomes one by :func:`isocenter_from_table` and
  :func:`isocenter_from_entrance` (JSON ``source_to_table_mm``; DICOM
  (0018,1111)), with the body's AP thickness at the hips when it is known
  (JSON ``body_thickness_mm``; DICOM Body Part Thickness (0018,11A0);
  :data:`TABLE_TO_HIPS_LINE`).

Standard preset (AP hip / pelvis radiograph)
--------------------------------------------
:func:`standard_ap_geometry` models a table-bucky AP pelvis exposure:

* source-to-detector distance 1000 mm (the usual 100 cm SID of an AP pelvis);
* a 430 x 430 mm detector (the common 17 x 17 inch flat panel), square pixels,
  ``size x size`` of them (430/size mm each);
* the iso-centre (the centre of the anatomy of interest) 820 mm from the
  source, i.e. 180 mm in front of the detector: half of a typical 200-250 mm
  AP pelvic thickness plus the table-to-detector gap. Magnification at the
  iso-centre is 1000/820 = 1.22, in the range of hip radiographs;
* display convention of an AP radiograph: the source is anterior, the patient's
  superior end is at the top of the image (row 0) and the patient's right is on
  the image's left (column 0). A real AP radiograph therefore needs no flipping.
  In LPS terms: source ``+x`` = world ``+x`` (towards patient left), source
  ``+y`` = world ``-z`` (inferior), source ``+z`` = world ``+y`` (posterior).

:func:`sample_pose` draws seeded poses around that preset (ranges in its doc).

AP frame (where shape models are fitted)
----------------------------------------
No answer may depend on the frame ``world_to_source`` is written in: a CT's
patient coordinates, an atlas's or a scanner's origin 1.5 m away, RAS instead
of LPS axes. What an AP exposure does say about the patient is the view: the
source is anterior, the image's top is superior, its left is the patient's
right, and the anatomy lies about the iso-centre distance from the source.
:attr:`XrayGeometry.world_to_ap` maps world mm to that **AP frame**: the
source frame's axes read as the patient's LPS axes of the preset (``x`` =
source ``x``, ``y`` = source ``z``, ``z`` = source ``-y``), its origin on the
central ray at :attr:`XrayGeometry.isocenter_distance_or_assumed` from the
source. It depends on the detector and the declared distance only, never on
the world frame; for the preset pose (:func:`ap_pose`) it is the world frame
moved to the iso-centre. Shape-model fits (:mod:`threeddx.meshing.ssm`) start and are
judged there, and their results are mapped back to the world, so a rigid change
of the world frame moves every output with it.

Size: about 700 lines, on purpose: this is the one home of every projection formula and frame (the
reference the rest of the package and its tests cite); split, the formulas would have two homes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from threeddx.errors import InputError

#: Rotation from world (LPS) axes to source axes for the AP preset (rows are
#: the source axes written in world coordinates).
AP_WORLD_TO_SOURCE_ROTATION = np.array(
    [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
)

STANDARD_SDD_MM = 1000.0
STANDARD_DETECTOR_MM = 430.0
STANDARD_SOURCE_TO_ISOCENTER_MM = 820.0
#: The iso-centre's height above the detector in the preset (mm): the patient lies on the
#: table, so this, not the distance from the source, stays when the SDD changes.
ISOCENTER_ABOVE_DETECTOR_MM = STANDARD_SDD_MM - STANDARD_SOURCE_TO_ISOCENTER_MM

#: The nearest to the source the anatomy may be declared or found, as a share of the SDD (an iso-centre from
#: tags or options, a calibration marker): nearer, magnification over 3.3x, which no hip radiograph has.
NEAREST_ANATOMY = 0.3
#: How far the hip joints' centres lie in front of the table top for a supine AP pelvis (mm): the median
#: of the training bodies (:mod:`threeddx.simulator.phantom`: posterior pelvis, muscle and fat behind the hip joints;
#: 5-95 %: 115-199 mm over the 22 LLP26 adults x 20 bodies each; ``benchmarks/isocentre_rule.py``).
HIPS_ABOVE_TABLE_MM = 145.0
#: How far the hip joints' centres lie behind the skin facing the source (mm): the same bodies' median
#: (5-95 %: 88-229 mm; the belly and any fold in front).
HIPS_BELOW_ENTRANCE_MM = 120.0


#: The hip joints' height above the table top from the body's AP thickness T at the hips (mm): ``a + b T``, the
#: least-squares line over the same bodies (``benchmarks/isocentre_rule.py``): residual SD 5.2 mm, against
#: 25.7 mm for :data:`HIPS_ABOVE_TABLE_MM` alone. Thicker bodies carry their hips higher, but by less than half
#: of what they add: fat and muscle lie in front as well as behind.
TABLE_TO_HIPS_LINE = (40.8, 0.381)
#: AP thicknesses at the hips a declared body may have (mm): the training bodies span 200-420 (5-95 %).
BODY_THICKNESS_RANGE_MM = (100.0, 600.0)


#: How uncertain (1 SD, mm) the hip joints' distance from the source is, by what it rests on: said exactly
#: (``source_to_isocenter_mm``, ``--isocenter-mm``, a FIDUCIAL calibration); a table or skin distance with the
#: body's AP thickness (:data:`TABLE_TO_HIPS_LINE`'s residual); a table alone, or nothing (the model's default
#: height above the detector, which is the median body on a table: :data:`HIPS_ABOVE_TABLE_MM`'s spread over the
#: bodies); a skin distance alone (:data:`HIPS_BELOW_ENTRANCE_MM`'s spread); a calibration ball (the RMS depth
#: error of the balls found on the validation films, random imaging chains at a detector's resolution:
#: ``benchmarks/marker_finding.py``, tenth session), measured on the film (``marker``; 2.9 before the ninth
#: session's wider, repeated outline fit) or on a "for processing" file's detector signal, its steel edge fitted
#: at the file's KVP (``marker+signal+kvp``) or at 80 kVp assumed (``marker+signal``; 1.2 in the ninth session,
#: the ball then fitted as opaque). The body figures are
#: ``benchmarks/isocentre_rule.py``'s (22 adults x 20 bodies). predict adds it to the network's own
#: calibrated placement SD (summary.json ``isocenter_sd_mm``, each bone's ``placement_total_sd_mm``).
ISOCENTER_SD_MM = {"declared": 0.0, "table+thickness": 5.2, "entrance+thickness": 5.2, "table": 25.7,
                   "assumed": 25.7, "entrance": 41.1, "marker": 1.8, "marker+signal": 0.74, "marker+signal+kvp": 0.55}


def table_basis(body_thickness_mm: float | None) -> str:
    """What an iso-centre placed from a table's distance rests on (a key of :data:`ISOCENTER_SD_MM`)."""
    return "table" if body_thickness_mm is None else "table+thickness"


def document_isocenter_basis(d: dict[str, Any]) -> str | None:
    """What a geometry document's iso-centre rests on (a key of :data:`ISOCENTER_SD_MM`): ``declared`` for
    ``source_to_isocenter_mm``, :func:`table_basis` for ``source_to_table_mm``; None when it states neither."""
    if d.get("source_to_table_mm") is not None:
        return table_basis(d.get("body_thickness_mm"))
    return "declared" if d.get("source_to_isocenter_mm") is not None else None


def table_to_hips_mm(body_thickness_mm: float | None = None) -> float:
    """How far (mm) the hip joints' mid-point lies in front of the table top of a supine AP exposure: from the
    body's AP thickness at the hips when it is known (:data:`TABLE_TO_HIPS_LINE`), else the median body's
    (:data:`HIPS_ABOVE_TABLE_MM`)."""
    if body_thickness_mm is None:
        return HIPS_ABOVE_TABLE_MM
    lo, hi = BODY_THICKNESS_RANGE_MM
    t = float(body_thickness_mm)
    if not (np.isfinite(t) and lo <= t <= hi):
        raise InputError(f"body thickness {t:g} mm is not a body's at the hips ({lo:g}-{hi:g} mm)")
    a, b = TABLE_TO_HIPS_LINE
    return a + b * t


def isocenter_from_table(source_to_table_mm: float, hips_above_table_mm: float | None = None,
                         body_thickness_mm: float | None = None) -> float:
    """The iso-centre distance (mm) of a supine AP exposure whose table top lies ``source_to_table_mm`` from
    the source: the hip joints ``hips_above_table_mm`` in front of it, by default :func:`table_to_hips_mm` of
    the body's AP thickness (mm) when it is known, else :data:`HIPS_ABOVE_TABLE_MM`."""
    above = table_to_hips_mm(body_thickness_mm) if hips_above_table_mm is None else float(hips_above_table_mm)
    return float(source_to_table_mm) - above


def isocenter_from_entrance(source_to_skin_mm: float, hips_below_skin_mm: float | None = None,
                            body_thickness_mm: float | None = None) -> float:
    """The iso-centre distance (mm) when the distance from the source to the patient's skin facing it is
    known (an entrance-surface distance): the hip joints ``hips_below_skin_mm`` behind the skin, by default
    the thickness less :func:`table_to_hips_mm` when the body's AP thickness is known, else
    :data:`HIPS_BELOW_ENTRANCE_MM`."""
    if hips_below_skin_mm is None:
        hips_below_skin_mm = (HIPS_BELOW_ENTRANCE_MM if body_thickness_mm is None
                              else float(body_thickness_mm) - table_to_hips_mm(body_thickness_mm))
    return float(source_to_skin_mm) + float(hips_below_skin_mm)


_JSON_KEYS = (
    "source_to_detector_mm",
    "detector_shape",
    "pixel_spacing_mm",
    "principal_point_px",
    "world_to_source",
)


def _check_rigid(matrix: np.ndarray, what: str = "world_to_source") -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise InputError(f"{what} must be a 4x4 matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{what} contains NaN or infinite values")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise InputError(f"{what} last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
        raise InputError(
            f"{what} is not rigid: its 3x3 part must be a rotation (orthonormal, det +1)"
        )
    return m


@dataclass(frozen=True)
class XrayGeometry:
    """A calibrated cone-beam X-ray system plus the patient's pose.

    Attributes:
        sdd: source-to-detector distance (mm).
        detector_shape: (rows, cols) in pixels.
        pixel_spacing: (row_spacing, col_spacing) in mm.
        principal_point: (u0, v0) in continuous pixel coordinates (u: columns).
        world_to_source: rigid 4x4 transform from world (LPS mm) to source mm.
        isocenter_distance: source to the centre of the anatomy along the central
            ray (mm), when declared; None when unknown.
    """

    sdd: float
    detector_shape: tuple[int, int]
    pixel_spacing: tuple[float, float]
    principal_point: tuple[float, float]
    world_to_source: np.ndarray = field(repr=False)
    isocenter_distance: float | None = None

    def __post_init__(self) -> None:
        rows, cols = (int(v) for v in self.detector_shape)
        if rows <= 0 or cols <= 0:
            raise InputError(f"detector_shape must be positive, got {self.detector_shape}")
        if not (math.isfinite(self.sdd) and self.sdd > 0):
            raise InputError(f"source_to_detector_mm must be positive, got {self.sdd}")
        sr, sc = (float(v) for v in self.pixel_spacing)
        if not (sr > 0 and sc > 0 and math.isfinite(sr) and math.isfinite(sc)):
            raise InputError(f"pixel_spacing_mm must be positive, got {self.pixel_spacing}")
        u0, v0 = (float(v) for v in self.principal_point)
        if not (math.isfinite(u0) and math.isfinite(v0)):
            raise InputError("principal_point_px must be finite")
        object.__setattr__(self, "sdd", float(self.sdd))
        object.__setattr__(self, "detector_shape", (rows, cols))
        object.__setattr__(self, "pixel_spacing", (sr, sc))
        object.__setattr__(self, "principal_point", (u0, v0))
        object.__setattr__(self, "world_to_source", _check_rigid(self.world_to_source))
        if self.isocenter_distance is not None:
            d = float(self.isocenter_distance)
            if not (math.isfinite(d) and 0 < d < self.sdd):
                raise InputError(f"source_to_isocenter_mm must lie between the source and the detector "
                                 f"(0-{self.sdd:g} mm), got {self.isocenter_distance}")
            object.__setattr__(self, "isocenter_distance", d)

    # ------------------------------------------------------------------ frames
    @property
    def source_to_world(self) -> np.ndarray:
        """Inverse pose (4x4), exact for a rigid transform."""
        r = self.world_to_source[:3, :3]
        t = self.world_to_source[:3, 3]
        out = np.eye(4)
        out[:3, :3] = r.T
        out[:3, 3] = -r.T @ t
        return out

    @property
    def source_position_world(self) -> np.ndarray:
        """The focal spot in world coordinates (mm)."""
        return self.source_to_world[:3, 3].copy()

    @property
    def isocenter_distance_or_assumed(self) -> float:
        """The declared iso-centre distance (mm), else the patient on the table: SDD - 180 mm."""
        if self.isocenter_distance is not None:
            return self.isocenter_distance
        return self.sdd - ISOCENTER_ABOVE_DETECTOR_MM

    def with_pose(self, world_to_source: np.ndarray) -> "XrayGeometry":
        return replace(self, world_to_source=np.asarray(world_to_source, dtype=np.float64))

    @property
    def ap_to_source(self) -> np.ndarray:
        """Rigid 4x4 from this exposure's **AP frame** to the source frame (module doc, "AP frame")."""
        m = np.eye(4)
        m[:3, :3] = AP_WORLD_TO_SOURCE_ROTATION
        m[2, 3] = self.isocenter_distance_or_assumed
        return m

    def in_ap_frame(self) -> "XrayGeometry":
        """The same exposure with its AP frame as the world (module doc): points back-projected through it are
        in the AP frame, bit for bit the same whatever frame ``world_to_source`` was written in."""
        return self.with_pose(self.ap_to_source)

    @property
    def ap_to_world(self) -> np.ndarray:
        """Rigid 4x4 from this exposure's AP frame to world mm (the inverse of :attr:`world_to_ap`)."""
        return self.source_to_world @ self.ap_to_source

    @property
    def world_to_ap(self) -> np.ndarray:
        """Rigid 4x4 from world mm to this exposure's AP frame (module doc): what the view says of the
        patient's axes and place, independent of the frame ``world_to_source`` is written in."""
        return self.in_ap_frame().source_to_world @ self.world_to_source

    # -------------------------------------------------------------- detector
    def pixel_centers_source(self) -> np.ndarray:
        """Pixel centres on the detector in the source frame, (rows, cols, 3) mm."""
        rows, cols = self.detector_shape
        sr, sc = self.pixel_spacing
        u0, v0 = self.principal_point
        x = (np.arange(cols) + 0.5 - u0) * sc
        y = (np.arange(rows) + 0.5 - v0) * sr
        xx, yy = np.meshgrid(x, y, indexing="xy")
        return np.stack([xx, yy, np.full_like(xx, self.sdd)], axis=-1)

    def detector_corners_source(self) -> np.ndarray:
        """The detector's four outer corners in the source frame, (4, 3) mm.

        In order: pixel (0, 0)'s outer corner, then (0, cols-1)'s, (rows-1, cols-1)'s and
        (rows-1, 0)'s (clockwise as the image is displayed), on the plane ``z = SDD``.
        """
        rows, cols = self.detector_shape
        sr, sc = self.pixel_spacing
        u0, v0 = self.principal_point
        x = np.array([0.0, cols, cols, 0.0]) - u0
        y = np.array([0.0, 0.0, rows, rows]) - v0
        return np.stack([x * sc, y * sr, np.full(4, self.sdd)], axis=-1)

    def ray_directions_source(self) -> np.ndarray:
        """Unit ray directions through every pixel centre, source frame, (rows, cols, 3)."""
        p = self.pixel_centers_source()
        return p / np.linalg.norm(p, axis=-1, keepdims=True)

    def ray_directions_world(self) -> np.ndarray:
        """Unit ray directions through every pixel centre, world frame, (rows, cols, 3)."""
        return self.ray_directions_source() @ self.source_to_world[:3, :3].T

    def ray_directions_at(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Unit ray directions, world frame, (..., 3), through continuous pixel *indices* (``row``, ``col``) as
        :meth:`project` returns them (the centre of pixel (i, j) at (i, j)): the inverse of :meth:`project`."""
        sr, sc = self.pixel_spacing
        u0, v0 = self.principal_point
        row, col = np.asarray(row, np.float64), np.asarray(col, np.float64)
        p = np.stack([(col + 0.5 - u0) * sc, (row + 0.5 - v0) * sr, np.full(np.broadcast(row, col).shape, self.sdd)], -1)
        p /= np.linalg.norm(p, axis=-1, keepdims=True)
        return p @ self.source_to_world[:3, :3].T

    # ------------------------------------------------------------ projection
    def to_source(self, points_world: np.ndarray) -> np.ndarray:
        p = np.asarray(points_world, dtype=np.float64)
        return p @ self.world_to_source[:3, :3].T + self.world_to_source[:3, 3]

    def to_world(self, points_source: np.ndarray) -> np.ndarray:
        p = np.asarray(points_source, dtype=np.float64)
        s2w = self.source_to_world
        return p @ s2w[:3, :3].T + s2w[:3, 3]

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project world points (..., 3) mm to (row, col, depth).

        Returns float arrays: ``row`` and ``col`` as pixel *indices* (the centre of
        pixel (i, j) is at (i, j)), ``depth`` the distance from the source in mm.
        Points at or behind the source plane (z <= 0) get NaN row/col.
        """
        ps = self.to_source(points_world)
        z = ps[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xd = np.where(z > 0, ps[..., 0] * self.sdd / z, np.nan)
            yd = np.where(z > 0, ps[..., 1] * self.sdd / z, np.nan)
        sr, sc = self.pixel_spacing
        u0, v0 = self.principal_point
        col = xd / sc + u0 - 0.5
        row = yd / sr + v0 - 0.5
        depth = np.linalg.norm(ps, axis=-1)
        return row, col, depth

    def pixel_mm_at(self, distance_mm):
        """The mean detector pixel's size (mm) seen at ``distance_mm`` from the source (float or array): the pixel
        divided by the magnification ``sdd / distance``, on the central ray (off it the same to first order)."""
        return float(np.mean(self.pixel_spacing)) * np.asarray(distance_mm, np.float64) / self.sdd

    def project_jacobian(self, points_world: np.ndarray) -> np.ndarray:
        """d(row, col) / d(world point) of :meth:`project` at world points (..., 3) mm: (..., 2, 3), px per mm
        (points in front of the source)."""
        ps = self.to_source(points_world)
        x, y, z = ps[..., 0], ps[..., 1], ps[..., 2]
        sr, sc = self.pixel_spacing
        zero = np.zeros_like(z)
        d_row = np.stack([zero, 1 / z, -y / z**2], -1) * (self.sdd / sr)
        d_col = np.stack([1 / z, zero, -x / z**2], -1) * (self.sdd / sc)
        return np.stack([d_row, d_col], -2) @ self.world_to_source[:3, :3]

    def on_detector(self, points_world: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
        """Whether each world point (..., 3) mm projects onto the detector (``margin_px`` inside its edge)."""
        row, col, _ = self.project(points_world)
        rows, cols = self.detector_shape
        lo = -0.5 + margin_px
        return (row >= lo) & (row <= rows - 0.5 - margin_px) & (col >= lo) & (col <= cols - 0.5 - margin_px)

    def backproject(
        self, depth: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Back-project a depth map (rows, cols) mm to 3D points.

        Args:
            depth: distance from the source along each pixel's ray (mm).
            mask: pixels to use (default: depth > 0 and finite).

        Returns:
            ``(points_world, points_source, pixel_index)``: (N, 3) mm each and the
            (N, 2) integer (row, col) of every point, in row-major order.
        """
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != tuple(self.detector_shape):
            raise InputError(
                f"depth map shape {depth.shape} does not match the detector {self.detector_shape}"
            )
        if mask is None:
            mask = np.isfinite(depth) & (depth > 0)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise InputError(f"mask shape {mask.shape} does not match depth shape {depth.shape}")
        idx = np.argwhere(mask)
        dirs = self.ray_directions_source()[mask]
        ps = dirs * depth[mask][:, None]
        return self.to_world(ps), ps, idx

    def resample(self, rows: int, cols: int | None = None) -> "XrayGeometry":
        """The same physical detector read out at ``rows x cols`` pixels."""
        cols = rows if cols is None else cols
        r0, c0 = self.detector_shape
        fr, fc = rows / r0, cols / c0
        return replace(
            self,
            detector_shape=(int(rows), int(cols)),
            pixel_spacing=(self.pixel_spacing[0] / fr, self.pixel_spacing[1] / fc),
            principal_point=(self.principal_point[0] * fc, self.principal_point[1] * fr),
        )

    def check_physical(self) -> None:
        """Refuse a geometry no X-ray system has (one line naming the JSON key).

        SDD within 100-5000 mm, pixel spacing within 0.01-10 mm
        (:data:`PHYSICAL_LIMITS`), the principal point within one detector
        width of the detector. Geometry files a user gives (:meth:`load`) go
        through this check; geometries the project makes itself (tiny test
        detectors have 13 mm pixels) and analytic tests do not.
        """
        lo, hi = PHYSICAL_LIMITS["source_to_detector_mm"]
        if not lo <= self.sdd <= hi:
            raise InputError(f"source_to_detector_mm is {self.sdd:g} mm, outside {lo:g}-{hi:g} mm")
        lo, hi = PHYSICAL_LIMITS["pixel_spacing_mm"]
        if not all(lo <= s <= hi for s in self.pixel_spacing):
            raise InputError(f"pixel_spacing_mm is {list(self.pixel_spacing)}, outside {lo:g}-{hi:g} mm")
        rows, cols = self.detector_shape
        if rows * cols > MAX_DETECTOR_PIXELS:
            raise InputError(f"detector_shape {rows}x{cols} is over {MAX_DETECTOR_PIXELS / 1e6:g} megapixels")
        u0, v0 = self.principal_point
        if not (-cols <= u0 <= 2 * cols and -rows <= v0 <= 2 * rows):
            raise InputError(f"principal_point_px ({u0:g}, {v0:g}) lies more than a detector's width outside "
                             f"the {rows}x{cols} px detector")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d = {
            "source_to_detector_mm": self.sdd,
            "detector_shape": list(self.detector_shape),
            "pixel_spacing_mm": list(self.pixel_spacing),
            "principal_point_px": list(self.principal_point),
            "world_to_source": self.world_to_source.tolist(),
        }
        if self.isocenter_distance is not None:
            d["source_to_isocenter_mm"] = self.isocenter_distance
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "geometry") -> "XrayGeometry":
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a JSON object")
        unknown = [k for k in d if k not in _ALL_KEYS]
        if unknown:
            import difflib

            near = difflib.get_close_matches(str(unknown[0]), _ALL_KEYS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(_ALL_KEYS)})"
            raise InputError(f"{where}: unknown key {str(unknown[0])[:60]!r}{hint}")
        missing = [k for k in _JSON_KEYS if k not in d]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
        if d.get("marker_diameter_mm") is not None and (d.get("source_to_isocenter_mm") is not None
                                                         or d.get("source_to_table_mm") is not None):
            raise InputError(f"{where}: a calibration marker sets the iso-centre; give marker_diameter_mm or "
                             "source_to_isocenter_mm/source_to_table_mm, not both")
        if d.get("marker_offset_mm") is not None and d.get("marker_diameter_mm") is None:
            raise InputError(f"{where}: marker_offset_mm needs marker_diameter_mm")
        if d.get("source_to_table_mm") is not None:
            if d.get("source_to_isocenter_mm") is not None:
                raise InputError(f"{where}: give source_to_isocenter_mm or source_to_table_mm, not both")
            try:
                table = float(d["source_to_table_mm"])
                thickness = None if d.get("body_thickness_mm") is None else float(d["body_thickness_mm"])
            except (TypeError, ValueError):
                raise InputError(f"{where}: source_to_table_mm and body_thickness_mm must be numbers") from None
            try:
                d = dict(d, source_to_isocenter_mm=isocenter_from_table(table, body_thickness_mm=thickness))
            except InputError as e:
                raise InputError(f"{where}: body_thickness_mm: {e}") from None
        elif d.get("body_thickness_mm") is not None:
            raise InputError(f"{where}: body_thickness_mm needs source_to_table_mm (it places the hips above the table)")
        try:
            geo = cls(
                sdd=float(d["source_to_detector_mm"]),
                detector_shape=_pair(d["detector_shape"], _whole, "detector_shape"),
                pixel_spacing=_pair(d["pixel_spacing_mm"], float, "pixel_spacing_mm"),
                principal_point=_pair(d["principal_point_px"], float, "principal_point_px"),
                world_to_source=np.asarray(d["world_to_source"], dtype=np.float64),
                isocenter_distance=None if d.get("source_to_isocenter_mm") is None else float(d["source_to_isocenter_mm"]),
            )
            return geo
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(f"{where}: malformed value ({str(e)[:100]})") from None

    @classmethod
    def from_json(cls, text: str, where: str = "geometry") -> "XrayGeometry":
        """Parse a geometry document: at most :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH`
        deep, every key once (the last of two would win silently), then :meth:`from_dict`."""
        if len(text) > MAX_JSON_BYTES:
            raise InputError(f"{where}: {len(text)} characters, more than a geometry holds ({MAX_JSON_BYTES})")
        depth = _json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise InputError(f"{where}: nested {depth} levels deep; a geometry is at most {MAX_JSON_DEPTH}")
        try:
            d = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
        except _DuplicateKey as e:
            raise InputError(f"{where}: key {str(e)[:60]!r} appears twice") from None
        except ValueError as e:  # an integer of thousands of digits
            raise InputError(f"{where}: malformed value ({str(e)[:100]})") from None
        return cls.from_dict(d, where)

    @classmethod
    def load(cls, path: str | Path) -> "XrayGeometry":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise InputError(f"cannot read geometry file {path}: {e.strerror}") from None
        geo = cls.from_json(text, where=str(path))
        try:
            geo.check_physical()
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        return geo


#: What a geometry document may say of a calibration ball in the picture (not the camera's: read by
#: :meth:`threeddx.apps.predict.MarkerSpec.from_geometry`, the ``--marker-mm``/``--marker-offset-mm`` options'
#: JSON twins): its diameter (mm) and the hip joints' distance behind its centre (mm, default 0).
MARKER_KEYS = ("marker_diameter_mm", "marker_offset_mm")
#: Every key a geometry document may hold: the required ones and the optional iso-centre distance, or the
#: table top's distance from the source (:func:`isocenter_from_table` turns it into the iso-centre's, with the
#: body's AP thickness at the hips when ``body_thickness_mm`` gives it), or a calibration ball (:data:`MARKER_KEYS`).
_ALL_KEYS = (*_JSON_KEYS, "source_to_isocenter_mm", "source_to_table_mm", "body_thickness_mm", *MARKER_KEYS)
#: Bounds of a geometry document (:meth:`XrayGeometry.from_json`): ours are ~1 kB and 3 levels deep.
MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 4


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise _DuplicateKey(k)
    return dict(pairs)


def _json_depth(text: str) -> int:
    """How deep a JSON text's arrays and objects nest (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _pair(v: Any, typ, name: str) -> tuple:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise InputError(f"{name} must be a list of two numbers")
    try:
        return (typ(v[0]), typ(v[1]))
    except InputError as e:
        raise InputError(f"{name}: {e}") from None


def _whole(v: Any) -> int:
    """A pixel count: a whole number (128 or 128.0), never silently truncated (128.7)."""
    f = float(v)
    if not f.is_integer():
        raise InputError(f"must be whole numbers of pixels, got {v!r}")
    return int(f)


#: What :meth:`XrayGeometry.check_physical` accepts (a geometry file or DICOM outside them is a mistake).
PHYSICAL_LIMITS = {"source_to_detector_mm": (100.0, 5000.0), "pixel_spacing_mm": (0.01, 10.0)}
#: The most pixels a detector (and so an image predict reads) may have: 50 megapixels, over any flat panel.
MAX_DETECTOR_PIXELS = 50_000_000


# ---------------------------------------------------------------- presets
def ap_pose(isocenter_world: Sequence[float], source_to_isocenter: float = STANDARD_SOURCE_TO_ISOCENTER_MM) -> np.ndarray:
    """The AP preset's ``world_to_source``: ``isocenter_world`` (LPS mm) lands on
    the central ray at ``source_to_isocenter`` mm from the source."""
    r = AP_WORLD_TO_SOURCE_ROTATION
    c = np.asarray(isocenter_world, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.array([0.0, 0.0, source_to_isocenter]) - r @ c
    return m


def standard_ap_geometry(
    isocenter_world: Sequence[float] = (0.0, 0.0, 0.0),
    size: int = 256,
    sdd: float = STANDARD_SDD_MM,
    detector_mm: float = STANDARD_DETECTOR_MM,
    source_to_isocenter: float = STANDARD_SOURCE_TO_ISOCENTER_MM,
) -> XrayGeometry:
    """The standard AP hip/pelvis preset (see the module doc) at ``size x size`` px."""
    spacing = detector_mm / size
    return XrayGeometry(
        sdd=sdd,
        detector_shape=(size, size),
        pixel_spacing=(spacing, spacing),
        principal_point=(size / 2.0, size / 2.0),
        world_to_source=ap_pose(isocenter_world, source_to_isocenter),
        isocenter_distance=source_to_isocenter,
    )


def rotation_matrix(axis: Sequence[float], angle_rad: float) -> np.ndarray:
    """Right-handed rotation about a unit axis (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


#: Ranges of :func:`sample_pose` (uniform, +-): rotations about the patient's
#: axes through the iso-centre, in degrees, and translations in mm. They span a
#: realistically imperfect positioning for an AP pelvis: pelvic tilt (about the
#: left-right axis) varies most with lordosis and table contact, axial rotation
#: (about the longitudinal axis) is what positioning aids try to limit to a few
#: degrees, in-plane rotation is small; the anatomy is off-centre by a few cm
#: and the table height/patient thickness moves it along the beam.
#: Pose ranges of :func:`sample_pose` (uniform, +-). Along the beam the range is small on
#: purpose: in the standard geometry the patient lies on the table at a fixed distance
#: from the detector, so the bones' distance from the source varies only with the soft
#: tissue behind them (~1 cm). A single AP image cannot tell a shift along the beam from
#: a bigger or smaller patient (a 40 mm shift changes the magnification by 5 %, about
#: the spread of adult bone sizes), so a wider range would be an absolute-depth error no
#: network can remove: with +-40 mm every trained model's depth RMSE sat at ~25 mm, the
#: standard deviation of the shift.
POSE_RANGES = {
    "tilt_deg": 10.0,  # about world x (left-right)
    "rotation_deg": 8.0,  # about world z (superior-inferior)
    "inplane_deg": 5.0,  # about world y (anterior-posterior, the beam)
    "shift_lateral_mm": 25.0,
    "shift_longitudinal_mm": 25.0,
    "shift_beam_mm": 10.0,
}


def sample_pose(
    isocenter_world: Sequence[float],
    rng: np.random.Generator | int,
    ranges: dict[str, float] | None = None,
    source_to_isocenter: float = STANDARD_SOURCE_TO_ISOCENTER_MM,
) -> np.ndarray:
    """A seeded random ``world_to_source`` around the AP preset.

    The patient is rotated about ``isocenter_world`` by uniform angles in
    +-``tilt_deg`` (world x), +-``rotation_deg`` (world z), +-``inplane_deg``
    (world y), then shifted by uniform offsets (mm) left-right, up-down and along
    the beam. Defaults: :data:`POSE_RANGES`.
    """
    rng = np.random.default_rng(rng)
    rg = dict(POSE_RANGES)
    if ranges:
        rg.update(ranges)
    u = lambda k: rng.uniform(-rg[k], rg[k])  # noqa: E731
    rot = (
        rotation_matrix((0, 1, 0), math.radians(u("inplane_deg")))
        @ rotation_matrix((0, 0, 1), math.radians(u("rotation_deg")))
        @ rotation_matrix((1, 0, 0), math.radians(u("tilt_deg")))
    )
    shift_src = np.array([u("shift_lateral_mm"), u("shift_longitudinal_mm"), u("shift_beam_mm")])
    c = np.asarray(isocenter_world, dtype=np.float64)
    # patient motion in world: x -> R (x - c) + c ; then the AP preset.
    patient = np.eye(4)
    patient[:3, :3] = rot
    patient[:3, 3] = c - rot @ c
    m = ap_pose(c, source_to_isocenter) @ patient
    m[:3, 3] += shift_src
    return m


# ------------------------------------------------------------ model views
@dataclass(frozen=True)
class View:
    """How a network trained at one geometry is shown an image taken at another.

    A network learns what bones look like at its training geometry: a focal
    length (SDD over pixel size) and an iso-centre distance. An image taken
    with another detector, SDD or table height shows the same anatomy at
    another scale. The view resamples the image so that the anatomy appears as
    it would have in training, and maps the network's depths back:

    * pixel (continuous ``(u, v)``) of the model's grid -> the image's pixel
      ``affine @ (u, v, 1)``: the ray with the image's tangent ``t = t_m / s``,
      where ``t_m`` is the model's tangent and ``s = D_image / D_model`` the
      ratio of iso-centre distances (weak perspective: the anatomy is scaled
      as if moved from ``D_image`` to ``D_model``);
    * a depth ``d_m`` along a model ray -> ``z = d_m / |(t_m, 1)| + D_image -
      D_model``, ``d = z |(t, 1)|`` along the image's ray (the anatomy moved
      back along the beam). Exact when nothing differs (``s = 1``, the
      identity); otherwise the perspective within the anatomy (+-100 mm deep)
      is that of ``D_model``, an error below 0.5 % of a point's offset from
      the central ray per 30 mm of distance change.

    ``camera`` is the geometry to back-project the network's maps with: the
    model's pixel grid on the image's rays and the image's pose.
    """

    affine: np.ndarray  # (2, 3): model continuous (u, v, 1) -> image continuous (u, v)
    scale: float  # s = D_image / D_model
    shift_mm: float  # D_image - D_model
    model: XrayGeometry  # the model's camera (its grid, SDD and tangents)
    camera: XrayGeometry  # the model's grid on the image's rays, the image's pose

    @property
    def is_identity(self) -> bool:
        return bool(np.allclose(self.affine, [[1, 0, 0], [0, 1, 0]], atol=1e-9) and abs(self.shift_mm) < 1e-9)

    def depth_to_image(self, depth: np.ndarray) -> np.ndarray:
        """Depths (..., rows, cols) mm along the model's rays -> along the image's rays (``camera``)."""
        if self.is_identity:
            return depth
        # a ray's z per mm of depth is its direction's z component (the cosine of its angle)
        z = depth * self.model.ray_directions_source()[..., 2] + self.shift_mm
        return (z / self.camera.ray_directions_source()[..., 2]).astype(depth.dtype)

    def image_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """The image's continuous (u, v) of the model grid's pixel centres: (cols,) and (rows,)."""
        return view_axes(self.affine, self.model.detector_shape)


def view_axes(affine: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Continuous (u, v) that an axis-aligned ``affine`` (2, 3) gives the pixel centres of a ``shape`` grid."""
    rows, cols = shape
    return (affine[0, 0] * (np.arange(cols) + 0.5) + affine[0, 2],
            affine[1, 1] * (np.arange(rows) + 0.5) + affine[1, 2])


def model_view(image: XrayGeometry, model: XrayGeometry, image_distance_mm: float, model_distance_mm: float) -> View:
    """The :class:`View` that shows an image taken with ``image`` to a model trained at ``model``.

    ``image_distance_mm`` and ``model_distance_mm`` are the iso-centre distances
    (source to the anatomy's centre, mm) of the image and of the training data.
    """
    s = float(image_distance_mm) / float(model_distance_mm)
    (sr_m, sc_m), (sr_i, sc_i) = model.pixel_spacing, image.pixel_spacing
    (u0_m, v0_m), (u0_i, v0_i) = model.principal_point, image.principal_point
    # image px per model px, per axis: (tangent per model px) / s / (tangent per image px)
    ku = (sc_m / model.sdd) / s / (sc_i / image.sdd)
    kv = (sr_m / model.sdd) / s / (sr_i / image.sdd)
    affine = np.array([[ku, 0.0, u0_i - ku * u0_m], [0.0, kv, v0_i - kv * v0_m]])
    camera = replace(model, sdd=model.sdd * s, world_to_source=image.world_to_source,
                     isocenter_distance=float(image_distance_mm))
    return View(affine, s, float(image_distance_mm) - float(model_distance_mm), model, camera)
