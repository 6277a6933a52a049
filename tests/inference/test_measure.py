"""The hip's measurements (threeddx.inference.measure) on shapes with known answers, exact within 0.1 degree.

A femur of cylinders and a sphere at a set neck-shaft angle and version, a hemispherical cup at a set
inclination and version, a tilted plane; and the mirror rule: the left measure of a patient equals the right
measure of its mirror image.
"""
import numpy as np
import pytest

from threeddx.inference import measure as m

FRAME = m.PelvicFrame.lps()
RNG = np.random.default_rng(0)


def _deg(x):
    return np.radians(x)


def _sphere_points(c, r, n=400, cap=None):
    v = RNG.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if cap is not None:
        v = v[v @ cap > 0]
    return np.asarray(c) + r * v


def test_the_head_sphere_comes_back_from_a_cap_of_it():
    c, r = np.array([80.0, -10.0, 5.0]), 23.5
    centre, radius = m.fit_sphere(_sphere_points(c, r, 600, cap=np.array([0, 0, 1.0])))  # the visible top half
    np.testing.assert_allclose(centre, c, atol=1e-6)
    assert radius == pytest.approx(r, abs=1e-6)


def _femur(side: str, ccd: float, version: float, offset_along: float = 60.0):
    """A femur's key points for a set neck-shaft angle and version: shaft along -z from the origin, the neck
    from the shaft towards the head, the posterior condyles along the medial axis."""
    lat = FRAME.lateral(side)
    med, ant, sup = -lat, FRAME.anterior, FRAME.superior
    distal = -sup
    # neck direction: ccd from the distal shaft axis, turned by the version about the shaft towards anterior
    horiz = np.cos(_deg(version)) * med + np.sin(_deg(version)) * ant
    neck_dir = np.cos(_deg(ccd)) * distal + np.sin(_deg(ccd)) * horiz
    neck_base = np.zeros(3)
    head = neck_base + offset_along * neck_dir
    return dict(head_centre=head, neck_centre=neck_base + 0.5 * offset_along * neck_dir,
                shaft_proximal=np.zeros(3), shaft_distal=400 * distal,
                condyle_medial=400 * distal + 25 * med - 20 * ant, condyle_lateral=400 * distal - 25 * med - 20 * ant)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("ccd, version", [(125.0, 15.0), (135.0, -5.0), (118.0, 30.0)])
def test_neck_shaft_angle_offset_and_version_of_a_femur_of_lines(side, ccd, version):
    f = _femur(side, ccd, version)
    assert m.neck_shaft_angle_deg(f["head_centre"], f["neck_centre"], f["shaft_proximal"], f["shaft_distal"]) == \
        pytest.approx(ccd, abs=0.1)
    assert m.femoral_version_deg(**f, side=side, frame=FRAME) == pytest.approx(version, abs=0.1)
    assert m.femoral_offset_mm(f["head_centre"], f["shaft_proximal"], f["shaft_distal"]) == \
        pytest.approx(60.0 * np.sin(_deg(ccd)), abs=1e-6)


def _cup_rim(side: str, inclination: float, version: float, centre=(90.0, 0.0, 0.0), radius=26.0, n=180,
             opening: float = 90.0):
    """An acetabular rim: the circle where a sphere of ``radius`` about ``centre`` is cut by the cup's opening,
    ``opening`` degrees from its axis (90: a hemisphere), the axis at Murray's inclination and version."""
    lat, sup, ant = FRAME.lateral(side), FRAME.superior, FRAME.anterior
    a = np.cos(_deg(version)) * (np.sin(_deg(inclination)) * lat - np.cos(_deg(inclination)) * sup) + \
        np.sin(_deg(version)) * ant
    e1 = np.cross(a, ant)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    depth = np.cos(_deg(opening)) * radius  # the rim's plane lies this far out along the axis... into the socket
    ring = np.sin(_deg(opening)) * radius
    return np.asarray(centre) - depth * a + ring * (np.cos(t)[:, None] * e1 + np.sin(t)[:, None] * e2), a


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("inclination, version", [(40.0, 15.0), (55.0, 25.0), (35.0, -10.0), (45.0, 0.0)])
def test_murrays_inclination_and_version_of_a_hemispherical_cup(side, inclination, version):
    rim, _ = _cup_rim(side, inclination, version)
    got = m.acetabular_angles_deg(rim, side, FRAME)
    assert got == pytest.approx((inclination, version), abs=0.1)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("inclination", [35.0, 40.0, 50.0])
def test_the_centre_edge_angle_of_a_cup_about_the_head_is_ninety_minus_its_inclination(side, inclination):
    """With no version, the rim of a hemisphere about the head centre crosses the coronal plane at 90 - the
    inclination from the vertical (Wiberg's angle of an ideal socket)."""
    centre = np.array([90.0 if side == "left" else -90.0, 0.0, 0.0])
    rim, _ = _cup_rim(side, inclination, 0.0, centre=centre)
    assert m.lateral_center_edge_deg(centre, rim, side, FRAME) == pytest.approx(90.0 - inclination, abs=0.1)


@pytest.mark.parametrize("opening", [90.0, 60.0, 110.0])
def test_head_coverage_of_a_cup_is_its_solid_angle(opening):
    """A rim at ``opening`` degrees from the axis about the head centre covers (1 - cos(opening)) / 2."""
    centre = np.array([90.0, 0.0, 0.0])
    rim, _ = _cup_rim("left", 45.0, 15.0, centre=centre, opening=opening)
    want = 100.0 * (1 - np.cos(_deg(opening))) / 2
    assert m.head_coverage_pct(centre, rim, "left", FRAME, samples=200000) == pytest.approx(want, abs=0.2)


@pytest.mark.parametrize("tilt", [-12.0, 0.0, 8.0, 20.0])
def test_pelvic_tilt_of_a_tilted_plane(tilt):
    """The spines and symphysis of a plane turned by ``tilt`` about the left-right axis, seen by a source in
    front: the tilt comes back, positive when the spines lean towards the source."""
    towards_source, up = FRAME.anterior, FRAME.superior
    r = np.radians(tilt)
    lean = np.cos(r) * up + np.sin(r) * towards_source
    pubis = np.array([3.0, 40.0, -60.0])
    spines = pubis + 90 * lean
    got = m.pelvic_tilt_deg(spines + [115.0, 0, 0], spines - [115.0, 0, 0], pubis, towards_source, up)
    assert got == pytest.approx(tilt, abs=0.1)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("flexion", [-10.0, 0.0, 7.5, 30.0])
def test_shaft_tilt_of_a_femur_flexed_about_its_hip(side, flexion):
    """A shaft turned about the left-right axis by ``flexion`` (distal end towards the source, which lies
    anterior): that angle, whatever its abduction in the detector plane."""
    f = _femur(side, 125.0, 15.0)
    towards_source = FRAME.anterior
    for abduction in (0.0, 12.0):
        distal = -np.cos(_deg(flexion)) * (np.cos(_deg(abduction)) * FRAME.superior
                                           + np.sin(_deg(abduction)) * FRAME.lateral(side)) \
            + np.sin(_deg(flexion)) * towards_source
        got = m.shaft_tilt_deg(f["shaft_proximal"], f["shaft_proximal"] + 300 * distal, towards_source)
        assert got == pytest.approx(flexion, abs=1e-9)


def test_leg_length_difference_follows_the_hip_joints_line():
    hjc_l, hjc_r = np.array([90.0, 0, 0]), np.array([-90.0, 0, 10.0])  # a pelvis 10 mm lower on the left
    lt_l, lt_r = np.array([70.0, 0, -70.0]), np.array([-70.0, 0, -50.0])
    lld = m.leg_length_difference_mm(lt_l, lt_r, hjc_l, hjc_r, FRAME)
    line = (hjc_l - hjc_r) / np.linalg.norm(hjc_l - hjc_r)
    down = np.cross(line, FRAME.anterior)  # in the coronal plane, perpendicular to the line, pointing down
    down = down if down @ FRAME.superior < 0 else -down
    assert lld == pytest.approx((lt_l - hjc_r) @ down - (lt_r - hjc_r) @ down, abs=1e-9)
    assert m.leg_length_difference_mm(lt_l, lt_l * [-1, 1, 1], hjc_l, hjc_l * [-1, 1, 1], FRAME) == pytest.approx(0)


def test_the_left_measure_is_the_right_measure_of_the_mirror_image():
    """Mirror the patient (x -> -x): every left measure becomes the same right measure."""
    flip = np.array([-1.0, 1, 1])
    f = _femur("left", 128.0, 12.0)
    mirrored = {k: v * flip for k, v in f.items()}
    assert m.femoral_version_deg(**f, side="left", frame=FRAME) == pytest.approx(
        m.femoral_version_deg(**mirrored, side="right", frame=FRAME), abs=1e-9)
    rim, _ = _cup_rim("left", 42.0, 17.0)
    assert m.acetabular_angles_deg(rim, "left", FRAME) == pytest.approx(
        m.acetabular_angles_deg(rim * flip, "right", FRAME), abs=1e-9)
    c = np.array([90.0, 0, 0])
    rim, _ = _cup_rim("left", 42.0, 0.0, centre=c)
    assert m.lateral_center_edge_deg(c, rim, "left", FRAME) == pytest.approx(
        m.lateral_center_edge_deg(c * flip, rim * flip, "right", FRAME), abs=1e-9)


def test_the_anterior_pelvic_plane_frame():
    f = m.PelvicFrame.from_app(np.array([115.0, -20, 60]), np.array([-115.0, -20, 60]), np.array([0.0, -40, -30]))
    np.testing.assert_allclose(f.left, [1, 0, 0], atol=1e-12)
    assert f.superior[2] > 0.9 and f.anterior @ [0, -1, 0] > 0.9  # anterior is -y in LPS
    np.testing.assert_allclose(np.cross(f.left, f.superior), f.anterior)


def test_the_measures_do_not_depend_on_the_world_frame():
    """The same patient written in another world frame (rotated and moved, the frame's axes with it) measures
    the same."""
    from threeddx.geometry import rotation_matrix

    rot = rotation_matrix((0.3, -0.5, 0.8), np.radians(37.0))
    move = np.array([1200.0, -340.0, 95.0])

    def w(p):
        return np.asarray(p) @ rot.T + move

    turned = m.PelvicFrame(rot @ FRAME.left, rot @ FRAME.superior, rot @ FRAME.anterior)
    f = _femur("right", 131.0, 18.0)
    g = {k: w(v) for k, v in f.items()}
    assert m.femoral_version_deg(**g, side="right", frame=turned) == pytest.approx(
        m.femoral_version_deg(**f, side="right", frame=FRAME), abs=1e-9)
    assert m.neck_shaft_angle_deg(g["head_centre"], g["neck_centre"], g["shaft_proximal"], g["shaft_distal"]) == \
        pytest.approx(131.0, abs=1e-9)
    c = np.array([-90.0, 0, 0])
    rim, _ = _cup_rim("right", 44.0, 12.0, centre=c)
    assert m.acetabular_angles_deg(w(rim), "right", turned) == pytest.approx((44.0, 12.0), abs=1e-6)
    assert m.lateral_center_edge_deg(w(c), w(rim), "right", turned) == pytest.approx(
        m.lateral_center_edge_deg(c, rim, "right", FRAME), abs=1e-9)
    assert m.head_coverage_pct(w(c), w(rim), "right", turned) == pytest.approx(
        m.head_coverage_pct(c, rim, "right", FRAME), abs=0.05)


# ----------------------------------------------------------------- on whole LLP26 bones (measure_hips)
def _subject_bones(k: int = 2) -> dict:
    from threeddx.simulator.anatomy import bone_meshes, load_shape

    return {b: np.asarray(mesh.vertices) for b, mesh in
            bone_meshes(load_shape(k), ["pelvis", "femur_left", "femur_right"]).items()}


# (lowest, highest) plausible for an adult: wide bands around the literature's norms, so that a landmark on
# the wrong place (a rim point on the ilium, a neck ring on the trochanter) fails
ADULT = {"head_diameter_mm": (38, 58), "neck_shaft_angle_deg": (110, 140), "offset_mm": (28, 62),
         "version_deg": (-10, 35), "shaft_tilt_deg": (-15, 15), "acetabular_inclination_deg": (30, 56), "acetabular_version_deg": (3, 32),
         "lateral_center_edge_angle_deg": (15, 50), "head_coverage_pct": (30, 55), "tilt_deg": (-25, 25),
         "leg_length_difference_mm": (-5, 5)}


def test_an_llp26_adult_measures_in_the_adult_range():
    got = m.measure_hips(_subject_bones(2), np.eye(4))
    assert got["frame"] == "anterior pelvic plane"
    assert set(got) == {"frame", "pelvis", "femur_left", "femur_right", "acetabulum_left", "acetabulum_right",
                        "points_mm"}
    assert len(got["points_mm"]["acetabulum_left"]["rim"]) == 36 and set(got["points_mm"]["pelvis"]) == {
        "asis_left", "asis_right", "pubis"}
    for key in ("femur_left", "femur_right", "acetabulum_left", "acetabulum_right", "pelvis"):
        kind = key.split("_")[0]
        assert set(m.MEASURES[kind]) <= set(got[key]), key
        for name in m.MEASURES[kind]:
            lo, hi = ADULT[name]
            assert lo <= got[key][name] <= hi, (key, name, got[key][name])


def test_whole_bones_measure_the_same_in_another_world_frame():
    """The same exposure written in another world frame (the bones and world_to_ap moved together): the same
    numbers, the head centres moved with the frame."""
    from threeddx.geometry import rotation_matrix

    bones = _subject_bones(2)
    t = np.eye(4)
    t[:3, :3] = rotation_matrix((0.2, 0.9, -0.3), np.radians(113.0))
    t[:3, 3] = [-800.0, 1500.0, 40.0]
    moved = {b: v @ t[:3, :3].T + t[:3, 3] for b, v in bones.items()}
    a = m.measure_hips(bones, np.eye(4))
    b = m.measure_hips(moved, np.linalg.inv(t))
    fa, fb = m.flat_measurements(a), m.flat_measurements(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        assert fb[key] == pytest.approx(fa[key], abs=0.011), key
    for side in ("left", "right"):
        np.testing.assert_allclose(b[f"femur_{side}"]["head_centre_mm"],
                                   t[:3, :3] @ a[f"femur_{side}"]["head_centre_mm"] + t[:3, 3], atol=0.02)


def test_femurs_alone_measure_without_the_acetabula_and_flags_pass_through():
    bones = _subject_bones(2)
    got = m.measure_hips({"femur_left": bones["femur_left"]}, np.eye(4), inferred={"femur_left": ["version_deg"]})
    assert set(got) == {"frame", "femur_left", "points_mm"} and "no pelvis" in got["frame"]
    assert got["femur_left"]["inferred"] == ["version_deg"]


def test_landmarks_refuse_a_mesh_of_another_triangulation():
    from threeddx.errors import InputError
    from threeddx.meshing.landmarks import landmarks

    v = _subject_bones(2)["femur_left"]
    with pytest.raises(InputError, match="whole LLP26 bone"):
        landmarks("femur_left", v[:-10])
    with pytest.raises(InputError, match="no landmarks"):
        landmarks("sacrum", v)


def test_a_rejected_or_failed_fit_is_not_measured_and_says_why(monkeypatch):
    """measure_prediction: the frame guards' rejection (or no fit at all) leaves the bone's structures out and
    says why in not_measured; the rest is measured."""
    from threeddx.errors import InputError
    from threeddx.geometry import standard_ap_geometry

    bones = _subject_bones(2)

    class Fit:  # what measure_prediction reads of a FitResult
        def __init__(self, bone, rejected=None):
            self.bone, self.rejected = bone, rejected or {}

        def mesh(self, bone):
            import trimesh
            return trimesh.Trimesh(bones[bone], process=False)

    fits = {"pelvis": Fit("pelvis"), "femur_left": Fit("femur_left", {"femur_left": "mode weights beyond 3 SD"}),
            "femur_right": InputError("too few points")}
    geo = standard_ap_geometry(size=128)
    got = m.measure_prediction({b: None for b in bones}, geo, fits)
    assert set(got) == {"frame", "pelvis", "not_measured", "points_mm", "acetabulum_left", "acetabulum_right"}
    for side in ("left", "right"):  # the socket's angles without the femoral head; Wiberg's angle needs it
        assert set(got[f"acetabulum_{side}"]) == {"acetabular_inclination_deg", "acetabular_version_deg"}
    assert "rejected (mode weights beyond 3 SD)" in got["not_measured"]["femur_left"]
    assert "too few points" in got["not_measured"]["femur_right"]
    assert "leg_length_difference_mm" not in got["pelvis"]
    missing = m.measure_prediction({"pelvis": None}, geo, {"pelvis": Fit("pelvis")})
    assert missing["not_measured"] == {"femur_left": "not found in the image", "femur_right": "not found in the image"}
