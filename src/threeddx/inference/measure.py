"""The hip's measurements in 3D, from points on the bones: the geometry of each definition.

Every function takes points in mm in one patient frame (:class:`PelvicFrame`: the anterior pelvic plane's
left, superior and anterior axes, or the patient's LPS axes) and a ``side`` (``"left"``/``"right"``: the
patient's), so that the left measure of a patient is the right measure of its mirror image. Angles are in
degrees. The definitions, with their sources (docs/measurements.md):

* **Femoral head**: the least-squares sphere of its surface points (:func:`fit_sphere`): centre and diameter.
* **Neck-shaft (CCD) angle**: between the neck axis (neck centre -> head centre) and the shaft axis
  (proximal -> distal), about 125-135 degrees in adults (:func:`neck_shaft_angle_deg`).
* **Femoral offset**: the head centre's distance from the shaft axis (:func:`femoral_offset_mm`).
* **Femoral version**: the neck axis's angle to the posterior condylar axis (the line through the two
  condyles' most posterior points), both seen along the shaft axis; positive when the neck points anterior
  of the condylar axis, anteversion (:func:`femoral_version_deg`).
* **Acetabular inclination and version**, Murray's radiographic definitions (Murray 1993, J Bone Joint Surg
  Br 75:228): of the acetabular axis (the rim plane's normal, out of the socket), the inclination is the
  angle between its projection on the coronal plane and the longitudinal axis, the version its angle to the
  coronal plane, positive anterior (:func:`acetabular_angles_deg`).
* **Lateral centre-edge angle** (Wiberg 1939): in the coronal plane through the head centre, between the
  longitudinal axis and the line from the head centre to the lateral edge of the acetabular roof
  (:func:`lateral_center_edge_deg`).
* **Head coverage**: the share of the femoral head's sphere inside the acetabular rim, seen from the head
  centre (:func:`head_coverage_pct`).
* **Femoral shaft tilt**: the shaft axis's angle out of the detector plane, positive when the distal end
  lies nearer the source: hip flexion as a supine AP view sees it, the angle one AP image shows least
  (:func:`shaft_tilt_deg`; issue 31 measures how well it is read).
* **Pelvic tilt**: the anterior pelvic plane's (both anterior superior iliac spines and the pubic symphysis)
  angle to the detector plane about the left-right axis, positive when the spines lie nearer the source
  than the symphysis (:func:`pelvic_tilt_deg`).
* **Leg-length difference**: how much further below the line through both hip-joint centres the left
  lesser trochanter lies than the right, perpendicular to that line in the coronal plane, positive when
  the left leg is longer (:func:`leg_length_difference_mm`).

**From bones to numbers** (:func:`measure_hips`): the points are landmarks on whole LLP26 bones
(:mod:`threeddx.meshing.landmarks`: a shape-model fit, or a simulated truth), taken in the exposure's AP
frame (:mod:`threeddx.geometry`), so no number depends on the frame the geometry is written in; the
acetabular and femoral measures use the anterior pelvic plane's frame when the pelvis is there (else the AP
frame's LPS axes, said in ``frame``); ``head_centre_mm`` is in world mm. The geometry below is tested on
shapes with known answers, the whole on LLP26 bones (tests/inference/test_measure.py); how well each measure
is read from one radiograph: ``benchmarks/measurements.py``, docs/measurements.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from threeddx.errors import InputError


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v)
    if not n > 0:
        raise InputError("a measurement axis has zero length")
    return v / n


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(_unit(a) @ _unit(b), -1.0, 1.0))))


@dataclass(frozen=True)
class PelvicFrame:
    """Orthonormal patient axes (unit vectors in the points' frame): ``left`` (towards the patient's left),
    ``superior``, ``anterior``. :meth:`lps` is the patient's own LPS frame; :meth:`from_app` the anterior
    pelvic plane's."""

    left: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray

    @classmethod
    def lps(cls) -> "PelvicFrame":
        return cls(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0, -1.0, 0]))

    @classmethod
    def from_app(cls, asis_left: np.ndarray, asis_right: np.ndarray, pubis: np.ndarray) -> "PelvicFrame":
        """The anterior pelvic plane's frame: left along the spines, superior in the plane from the symphysis
        towards the spines' midpoint, anterior its normal (left x superior)."""
        left = _unit(np.subtract(asis_left, asis_right))
        up = np.subtract((np.asarray(asis_left) + asis_right) / 2.0, pubis)
        superior = _unit(up - (up @ left) * left)
        return cls(left, superior, np.cross(left, superior))

    def lateral(self, side: str) -> np.ndarray:
        """Away from the midline on the patient's ``side``."""
        if side not in ("left", "right"):
            raise InputError(f"side must be left or right, got {side!r}")
        return self.left if side == "left" else -self.left


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The least-squares sphere through (N, 3) points: (centre (3,), radius), algebraic fit refined by
    Gauss-Newton on the geometric distances."""
    p = np.asarray(points, np.float64)
    if len(p) < 4:
        raise InputError(f"a sphere needs at least 4 points, got {len(p)}")
    a = np.c_[2 * p, np.ones(len(p))]
    sol, *_ = np.linalg.lstsq(a, (p**2).sum(1), rcond=None)
    c = sol[:3]
    r = float(np.sqrt(max(sol[3] + c @ c, 0.0)))
    for _ in range(10):
        d = p - c
        dist = np.linalg.norm(d, axis=1)
        jac = np.c_[-d / dist[:, None], -np.ones(len(p))]
        step, *_ = np.linalg.lstsq(jac, -(dist - r), rcond=None)
        c, r = c + step[:3], r + float(step[3])
        if np.abs(step).max() < 1e-10:
            break
    return c, abs(r)


def neck_shaft_angle_deg(head_centre: np.ndarray, neck_centre: np.ndarray, shaft_proximal: np.ndarray,
                         shaft_distal: np.ndarray) -> float:
    """The CCD angle: neck axis (neck centre -> head centre) against the shaft axis (proximal -> distal)."""
    return _angle_deg(np.subtract(head_centre, neck_centre), np.subtract(shaft_distal, shaft_proximal))


def femoral_offset_mm(head_centre: np.ndarray, shaft_proximal: np.ndarray, shaft_distal: np.ndarray) -> float:
    """The head centre's distance from the shaft axis (mm)."""
    d = _unit(np.subtract(shaft_distal, shaft_proximal))
    v = np.subtract(head_centre, shaft_proximal)
    return float(np.linalg.norm(v - (v @ d) * d))


def femoral_version_deg(head_centre: np.ndarray, neck_centre: np.ndarray, shaft_proximal: np.ndarray,
                        shaft_distal: np.ndarray, condyle_medial: np.ndarray, condyle_lateral: np.ndarray,
                        side: str, frame: PelvicFrame) -> float:
    """Femoral version: the neck axis's angle to the posterior condylar axis (lateral -> medial condyle's most
    posterior points), both projected on the plane perpendicular to the shaft; positive: anteversion."""
    d = _unit(np.subtract(shaft_distal, shaft_proximal))

    def flat(v):
        v = np.asarray(v, np.float64)
        return v - (v @ d) * d

    med = _unit(flat(-frame.lateral(side)))
    ant = _unit(flat(frame.anterior) - (flat(frame.anterior) @ med) * med)

    def azimuth(v):
        v = flat(v)
        return np.arctan2(v @ ant, v @ med)

    neck = azimuth(np.subtract(head_centre, neck_centre))
    condyles = azimuth(np.subtract(condyle_medial, condyle_lateral))
    return float(np.degrees((neck - condyles + np.pi) % (2 * np.pi) - np.pi))


def _rim_axis(rim: np.ndarray, side: str, frame: PelvicFrame) -> tuple[np.ndarray, np.ndarray]:
    """The acetabular rim's centre and axis: the normal of its least-squares plane, pointing out of the
    socket (laterally)."""
    rim = np.asarray(rim, np.float64)
    if len(rim) < 3:
        raise InputError(f"an acetabular rim needs at least 3 points, got {len(rim)}")
    c = rim.mean(0)
    axis = np.linalg.svd(rim - c)[2][2]
    return c, axis if axis @ frame.lateral(side) > 0 else -axis


def acetabular_angles_deg(rim: np.ndarray, side: str, frame: PelvicFrame) -> tuple[float, float]:
    """Murray's radiographic (inclination, version) of the acetabulum whose rim is ``rim`` (N, 3) mm."""
    _, a = _rim_axis(rim, side, frame)
    version = float(np.degrees(np.arcsin(np.clip(a @ frame.anterior, -1.0, 1.0))))
    inclination = float(np.degrees(np.arctan2(a @ frame.lateral(side), -(a @ frame.superior))))
    return inclination, version


def lateral_center_edge_deg(head_centre: np.ndarray, rim: np.ndarray, side: str, frame: PelvicFrame) -> float:
    """Wiberg's angle: in the coronal plane through the head centre, the longitudinal axis against the line to
    where the rim (an ordered closed polyline, (N, 3) mm) crosses that plane above the head; positive when the
    edge is lateral of the vertical."""
    rim = np.asarray(rim, np.float64)
    c = np.asarray(head_centre, np.float64)
    s = (rim - c) @ frame.anterior
    nxt = np.roll(np.arange(len(rim)), -1)
    crossings = []
    for i, j in zip(range(len(rim)), nxt):
        if s[i] == 0 or s[i] * s[j] < 0:
            t = 0.0 if s[i] == 0 else s[i] / (s[i] - s[j])
            crossings.append(rim[i] + t * (rim[j] - rim[i]))
    above = [p for p in crossings if (p - c) @ frame.superior > 0]
    if not above:
        raise InputError("the acetabular rim does not cross the coronal plane above the head centre")
    edge = max(above, key=lambda p: (p - c) @ frame.superior)
    v = edge - c
    return float(np.degrees(np.arctan2(v @ frame.lateral(side), v @ frame.superior)))


def head_coverage_pct(head_centre: np.ndarray, rim: np.ndarray, side: str, frame: PelvicFrame,
                      samples: int = 20000) -> float:
    """The share (%) of the femoral head's sphere that lies inside the acetabular rim as seen from the head
    centre: directions whose angle from the socket's axis (into the socket) is smaller than the rim's in the
    same azimuth (a rim star-shaped about the axis)."""
    centre, a = _rim_axis(rim, side, frame)
    into = -a
    e1 = _unit(np.cross(into, [1.0, 0, 0] if abs(into[0]) < 0.9 else [0, 1.0, 0]))
    e2 = np.cross(into, e1)

    def polar(v):
        v = np.atleast_2d(v)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return np.arccos(np.clip(v @ into, -1, 1)), np.arctan2(v @ e2, v @ e1)

    rim_theta, rim_phi = polar(np.asarray(rim, np.float64) - head_centre)
    order = np.argsort(rim_phi)
    phi_s, theta_s = rim_phi[order], rim_theta[order]
    k = np.arange(samples) + 0.5  # a Fibonacci sphere: even directions
    z = 1 - 2 * k / samples
    ang = np.pi * (1 + 5**0.5) * k
    dirs = np.c_[np.sqrt(1 - z**2) * np.cos(ang), np.sqrt(1 - z**2) * np.sin(ang), z]
    theta, phi = polar(dirs)
    limit = np.interp(phi, phi_s, theta_s, period=2 * np.pi)
    return float(100.0 * np.mean(theta < limit))


def pelvic_tilt_deg(asis_left: np.ndarray, asis_right: np.ndarray, pubis: np.ndarray, towards_source: np.ndarray,
                    superior_on_detector: np.ndarray) -> float:
    """The anterior pelvic plane's angle to the detector about the left-right axis: the symphysis -> spines'
    midpoint line against the detector's superior direction, positive when the spines lie nearer the source
    (``towards_source``, ``superior_on_detector``: unit vectors in the points' frame)."""
    up = (np.asarray(asis_left, np.float64) + asis_right) / 2.0 - np.asarray(pubis, np.float64)
    lr = _unit(np.subtract(asis_left, asis_right))
    up = up - (up @ lr) * lr
    return float(np.degrees(np.arctan2(up @ towards_source, up @ superior_on_detector)))


def shaft_tilt_deg(shaft_proximal: np.ndarray, shaft_distal: np.ndarray, towards_source: np.ndarray) -> float:
    """The femoral shaft axis's angle out of the detector plane: positive when its distal end lies nearer the
    source (``towards_source``: unit vector in the points' frame), which for a supine AP exposure is hip
    flexion as the view sees it (relative to the detector, not to the pelvis; 0: the femur parallel to it)."""
    d = _unit(np.subtract(shaft_distal, shaft_proximal))
    return float(np.degrees(np.arcsin(np.clip(d @ _unit(towards_source), -1.0, 1.0))))


def leg_length_difference_mm(lesser_trochanter_left: np.ndarray, lesser_trochanter_right: np.ndarray,
                             hjc_left: np.ndarray, hjc_right: np.ndarray, frame: PelvicFrame) -> float:
    """How much further below the line through both hip-joint centres the left lesser trochanter lies than the
    right (mm, in the coronal plane, perpendicular to that line): positive when the left leg is longer."""
    u = np.subtract(hjc_left, hjc_right)
    u = _unit(u - (u @ frame.anterior) * frame.anterior)
    down = -_unit(frame.superior - (frame.superior @ u) * u - (frame.superior @ frame.anterior) * frame.anterior)
    below = [float(np.subtract(p, hjc_right) @ down) for p in (lesser_trochanter_left, lesser_trochanter_right)]
    return below[0] - below[1]


#: summary.json's ``measurements`` keys per structure (issue 33): one home for the names the writers,
#: the evaluation and the benchmark use.
MEASURES: dict[str, tuple[str, ...]] = {
    "femur": ("head_diameter_mm", "neck_shaft_angle_deg", "offset_mm", "version_deg", "shaft_tilt_deg"),
    "acetabulum": ("acetabular_inclination_deg", "acetabular_version_deg", "lateral_center_edge_angle_deg",
                   "head_coverage_pct"),
    "pelvis": ("tilt_deg", "leg_length_difference_mm"),
}
SIDES = ("left", "right")


def measure_hips(shapes: dict[str, np.ndarray], world_to_ap: np.ndarray,
                 inferred: dict[str, list[str]] | None = None) -> dict:
    """The hip's measurements from whole LLP26 bones: ``shapes`` bone -> (V, 3) world mm (``pelvis``,
    ``femur_left``, ``femur_right``; any may be missing), ``world_to_ap`` the exposure's rigid 4x4
    (:attr:`threeddx.geometry.XrayGeometry.world_to_ap`).

    Returns summary.json's ``measurements``: ``femur_left``/``femur_right`` (head diameter and centre (world
    mm), neck-shaft angle, offset, version, shaft tilt), ``acetabulum_left``/``_right`` (Murray's inclination and version,
    from the pelvis; Wiberg's angle and the head coverage, which also need that side's femoral head),
    ``pelvis`` (tilt; the leg-length difference, which needs both femurs), ``frame``; what cannot be measured
    is absent. ``points_mm``: the landmarks the measures were taken from, world mm (:func:`_drawn_points`), for
    the pictures. ``inferred``: structure -> measures to flag as inferred (listed under the structure's
    ``inferred``), e.g. a femur's version when its distal end lies outside the image.
    """
    from threeddx.meshing.landmarks import landmarks

    m = np.asarray(world_to_ap, np.float64)
    world = {b: landmarks(b, v) for b, v in shapes.items()}  # centroids of vertices: they move as the vertices do
    marks = {b: {n: p @ m[:3, :3].T + m[:3, 3] for n, p in lm.items()} for b, lm in world.items()}
    out: dict = {}
    pelvis = marks.get("pelvis")
    if pelvis is not None:
        pubis = (pelvis["pubis_left"] + pelvis["pubis_right"]) / 2
        frame = PelvicFrame.from_app(pelvis["asis_left"], pelvis["asis_right"], pubis)
        out["frame"] = "anterior pelvic plane"
    else:
        frame = PelvicFrame.lps()  # the AP frame's axes are the patient's LPS as the view shows them
        out["frame"] = "the view's patient axes (no pelvis)"
    heads: dict[str, np.ndarray] = {}
    for side in SIDES:
        f = marks.get(f"femur_{side}")
        if f is None:
            continue
        centre, radius = fit_sphere(f["head"])
        heads[side] = centre
        centre_world = np.linalg.solve(m[:3, :3], centre - m[:3, 3])
        out[f"femur_{side}"] = {
            "head_diameter_mm": 2 * radius,
            "head_centre_mm": [round(float(x), 2) for x in centre_world],
            "neck_shaft_angle_deg": neck_shaft_angle_deg(centre, f["neck"], f["shaft_proximal"], f["shaft_distal"]),
            "offset_mm": femoral_offset_mm(centre, f["shaft_proximal"], f["shaft_distal"]),
            "version_deg": femoral_version_deg(centre, f["neck"], f["shaft_proximal"], f["shaft_distal"],
                                               f["condyle_medial"], f["condyle_lateral"], side, frame),
            # in the AP frame the source lies anterior (-y): the view's own angle, not the pelvic plane's
            "shaft_tilt_deg": shaft_tilt_deg(f["shaft_proximal"], f["shaft_distal"], np.array([0.0, -1.0, 0.0])),
        }
    if pelvis is not None:
        for side in SIDES:  # the socket's angles need the pelvis only; Wiberg's angle and the coverage, the head
            rim = pelvis[f"rim_{side}"]
            incl, vers = acetabular_angles_deg(rim, side, frame)
            out[f"acetabulum_{side}"] = {"acetabular_inclination_deg": incl, "acetabular_version_deg": vers}
            if side in heads:
                out[f"acetabulum_{side}"].update(
                    lateral_center_edge_angle_deg=lateral_center_edge_deg(heads[side], rim, side, frame),
                    head_coverage_pct=head_coverage_pct(heads[side], rim, side, frame))
        # in the AP frame the source lies anterior (-y) and the detector's superior is +z (geometry, "AP frame")
        out["pelvis"] = {"tilt_deg": pelvic_tilt_deg(pelvis["asis_left"], pelvis["asis_right"], pubis,
                                                     np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]))}
        if len(heads) == 2:
            out["pelvis"]["leg_length_difference_mm"] = leg_length_difference_mm(
                marks["femur_left"]["lesser_trochanter"], marks["femur_right"]["lesser_trochanter"],
                heads["left"], heads["right"], frame)
    out["points_mm"] = _drawn_points(world, heads_world={s: out[f"femur_{s}"]["head_centre_mm"] for s in heads})
    for key, values in out.items():
        if isinstance(values, dict) and key != "points_mm":
            for name, x in values.items():
                if isinstance(x, float):
                    values[name] = round(x, 2)
            flags = [n for n in (inferred or {}).get(key, []) if n in values]
            if flags:
                values["inferred"] = flags
    return out


def _drawn_points(world: dict[str, dict[str, np.ndarray]], heads_world: dict[str, list]) -> dict:
    """The landmarks the pictures draw (``world``: bone -> its landmarks, world mm), rounded to 0.1 mm: per femur
    its head's centre (its sphere's), neck centre, shaft axis ends, lesser trochanter and posterior condyles; per
    acetabulum its rim (an ordered ring); the pelvis's spines and symphysis (the anterior pelvic plane)."""

    def r(p):
        return np.round(np.asarray(p, np.float64), 1).tolist()

    out: dict = {}
    for side in SIDES:
        f = world.get(f"femur_{side}")
        if f is not None and side in heads_world:
            out[f"femur_{side}"] = {"head_centre": heads_world[side], **{k: r(f[k]) for k in (
                "neck", "shaft_proximal", "shaft_distal", "lesser_trochanter", "condyle_medial", "condyle_lateral")}}
    p = world.get("pelvis")
    if p is not None:
        out["pelvis"] = {"asis_left": r(p["asis_left"]), "asis_right": r(p["asis_right"]),
                         "pubis": r((p["pubis_left"] + p["pubis_right"]) / 2)}
        for side in SIDES:
            out[f"acetabulum_{side}"] = {"rim": r(p[f"rim_{side}"])}
    return out


def flat_measurements(measurements: dict) -> dict[str, float]:
    """summary.json's ``measurements`` as one row: ``STRUCTURE.MEASURE`` -> value (the numbers of
    :data:`MEASURES` only), for measurements.csv and the evaluation's tables."""
    row = {}
    for key, values in measurements.items():
        if not isinstance(values, dict) or key in ("points_mm", "not_measured"):
            continue
        for name, x in values.items():
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                row[f"{key}.{name}"] = x
    return row


#: The bones the measurements read, each as a whole shape-model fit.
MEASURED_BONES = ("pelvis", "femur_left", "femur_right")


def measure_prediction(maps: dict, geometry, fits: dict, bones=MEASURED_BONES) -> dict:
    """summary.json's ``measurements`` for one radiograph: the bones' shape-model fits measured
    (:func:`measure_hips`), and per bone that could not be, why (``not_measured``).

    ``maps``: the bones' face maps as meshing takes them (bone -> :class:`~threeddx.facemaps.BoneFaces`;
    a bone not found in the image is absent); ``geometry``: their camera (world mm); ``fits``: fits already
    made for this image (bone -> :class:`~threeddx.meshing.ssm.FitResult`: the hip-joint anchoring's pelvis,
    the ``ssm`` mesher's bones). A bone without one is fitted here (the same fit as ``--mesh ssm``:
    :func:`threeddx.meshing.reconstruct.fit_maps`; about a second per femur on two cores). A fit the frame
    guards reject (:func:`threeddx.meshing.ssm.judge_fit`) is not measured: its structures are absent and
    ``not_measured`` gives the reason. A femur's version is flagged ``inferred`` when its posterior condyles
    project outside the detector (the shape model's completion, not seen).
    """
    from threeddx.meshing.landmarks import landmarks
    from threeddx.meshing.reconstruct import fit_maps

    need = [b for b in bones if b in maps]
    have = {b: f for b, f in fits.items() if b in need}
    todo = {b: maps[b] for b in need if b not in have}
    if todo:
        have.update(fit_maps(todo, geometry))
    shapes, why_not, inferred = {}, {}, {}
    for b in bones:
        f = have.get(b)
        if b not in need:
            why_not[b] = "not found in the image"
        elif isinstance(f, InputError):
            why_not[b] = f"no shape-model fit ({f})"
        elif b in f.rejected:
            why_not[b] = f"shape-model fit rejected ({f.rejected[b]})"
        else:
            shapes[b] = np.asarray(f.mesh(b).vertices, np.float64)
            if b.startswith("femur_"):
                marks = landmarks(b, shapes[b])
                if not geometry.on_detector(np.stack([marks["condyle_medial"], marks["condyle_lateral"]])).all():
                    inferred[b] = ["version_deg"]
    out = measure_hips(shapes, geometry.world_to_ap, inferred)
    if why_not:
        out["not_measured"] = why_not
    return out
