import json
import math

import numpy as np
import pytest

from threeddx.errors import InputError
from threeddx.geometry import (
    POSE_RANGES,
    XrayGeometry,
    ap_pose,
    rotation_matrix,
    sample_pose,
    standard_ap_geometry,
)


def small_geometry(size=64, pose=None):
    g = standard_ap_geometry((10.0, -5.0, 3.0), size=size, detector_mm=120.0)
    return g if pose is None else g.with_pose(pose)


def test_pixel_centres_follow_the_documented_formula():
    g = XrayGeometry(
        sdd=900.0, detector_shape=(4, 6), pixel_spacing=(0.5, 0.25), principal_point=(2.5, 1.0), world_to_source=np.eye(4)
    )
    p = g.pixel_centers_source()
    assert p.shape == (4, 6, 3)
    # row i, col j: x = (j + 0.5 - u0) * col_spacing, y = (i + 0.5 - v0) * row_spacing, z = SDD
    assert p[3, 5, 0] == pytest.approx((5 + 0.5 - 2.5) * 0.25)
    assert p[3, 5, 1] == pytest.approx((3 + 0.5 - 1.0) * 0.5)
    assert np.all(p[..., 2] == 900.0)
    # default principal point is the detector centre: the central ray hits between the middle pixels
    c = standard_ap_geometry(size=4)
    pc = c.pixel_centers_source()
    assert pc[1, 1, 0] == pytest.approx(-pc[2, 2, 0])


def test_detector_corners_lie_half_a_pixel_outside_the_corner_pixels():
    g = XrayGeometry(
        sdd=900.0, detector_shape=(4, 6), pixel_spacing=(0.5, 0.25), principal_point=(2.5, 1.0), world_to_source=np.eye(4)
    )
    corners = g.detector_corners_source()
    centres = g.pixel_centers_source()
    half = np.array([0.25 / 2, 0.5 / 2, 0.0])
    np.testing.assert_allclose(corners[0], centres[0, 0] - half)
    np.testing.assert_allclose(corners[2], centres[3, 5] + half)
    np.testing.assert_allclose(corners[1], [centres[0, 5, 0] + half[0], centres[0, 5, 1] - half[1], 900.0])
    np.testing.assert_allclose(corners[3], [centres[3, 0, 0] - half[0], centres[3, 0, 1] + half[1], 900.0])
    # every corner projects onto the detector's outer edge (continuous pixel coordinates 0 or rows/cols)
    row, col, _ = g.project(g.to_world(corners))
    np.testing.assert_allclose(row + 0.5, [0, 0, 4, 4], atol=1e-9)
    np.testing.assert_allclose(col + 0.5, [0, 6, 6, 0], atol=1e-9)


def test_project_pixel_centre_is_its_index():
    g = small_geometry()
    dirs = g.ray_directions_world()
    src = g.source_position_world
    pts = src + 700.0 * dirs
    row, col, depth = g.project(pts)
    ii, jj = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    np.testing.assert_allclose(row, ii, atol=1e-9)
    np.testing.assert_allclose(col, jj, atol=1e-9)
    np.testing.assert_allclose(depth, 700.0, rtol=1e-12)


def test_pixel_mm_at_is_one_pixel_across_on_the_central_ray():
    """A point on the central ray moved sideways (the source frame's x) by pixel_mm_at(its distance) moves one
    column's width in the image."""
    g = small_geometry(pose=sample_pose((10.0, -5.0, 3.0), 3))
    to_world = np.asarray(g.source_to_world)
    for distance in (600.0, 820.0):
        p0 = to_world[:3, :3] @ np.array([0.0, 0.0, distance]) + to_world[:3, 3]
        _, c0, _ = g.project(p0[None])
        _, c1, _ = g.project((p0 + g.pixel_mm_at(distance) * to_world[:3, 0])[None])
        assert c1[0] - c0[0] == pytest.approx(np.mean(g.pixel_spacing) / g.pixel_spacing[1], rel=1e-9)


def test_project_jacobian_is_the_projections_derivative():
    """project_jacobian against central differences of project, for a posed geometry off the central ray."""
    g = small_geometry(pose=sample_pose((10.0, -5.0, 3.0), 3))
    pts = g.source_position_world + np.array([650.0, 800.0, 950.0])[:, None] * g.ray_directions_at(
        np.array([3.0, 30.0, 60.0]), np.array([5.0, 40.0, 20.0]))
    jac = g.project_jacobian(pts)
    assert jac.shape == (3, 2, 3)
    h = 1e-4
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        r1, c1, _ = g.project(pts + e)
        r0, c0, _ = g.project(pts - e)
        np.testing.assert_allclose(jac[:, 0, k], (r1 - r0) / (2 * h), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(jac[:, 1, k], (c1 - c0) / (2 * h), rtol=1e-6, atol=1e-9)


def test_backproject_then_project_round_trip():
    rng = np.random.default_rng(0)
    g = small_geometry(pose=sample_pose((10.0, -5.0, 3.0), 3))
    depth = rng.uniform(600, 1000, g.detector_shape)
    mask = rng.random(g.detector_shape) > 0.3
    world, source, idx = g.backproject(depth, mask)
    assert world.shape == source.shape == (mask.sum(), 3)
    row, col, d = g.project(world)
    np.testing.assert_allclose(row, idx[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(col, idx[:, 1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d, depth[mask], rtol=1e-6)
    # source-frame points are at distance = depth from the origin (the focal spot)
    np.testing.assert_allclose(np.linalg.norm(source, axis=1), depth[mask], rtol=1e-12)


def test_rays_at_continuous_pixels_invert_project():
    rng = np.random.default_rng(1)
    g = small_geometry(pose=sample_pose((10.0, -5.0, 3.0), 4))
    row, col = rng.uniform(-0.5, 63.5, 50), rng.uniform(-0.5, 63.5, 50)
    pts = g.source_position_world + 750.0 * g.ray_directions_at(row, col)
    r, c, d = g.project(pts)
    np.testing.assert_allclose(r, row, atol=1e-9)
    np.testing.assert_allclose(c, col, atol=1e-9)
    np.testing.assert_allclose(d, 750.0, rtol=1e-12)
    ii, jj = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")  # at the centres: ray_directions_world
    np.testing.assert_allclose(g.ray_directions_at(ii, jj), g.ray_directions_world(), atol=1e-12)


def test_backproject_rejects_wrong_shape():
    g = small_geometry()
    with pytest.raises(InputError, match="does not match the detector"):
        g.backproject(np.ones((10, 10)))


def test_resample_keeps_the_physical_detector():
    g = XrayGeometry(
        sdd=1000.0, detector_shape=(100, 80), pixel_spacing=(0.4, 0.5), principal_point=(41.0, 49.0),
        world_to_source=np.eye(4),
    )
    h = g.resample(50, 40)
    assert h.detector_shape == (50, 40)
    assert h.pixel_spacing == pytest.approx((0.8, 1.0))
    # the detector's edges (continuous pixel coordinates 0 and N) stay at the same place in mm
    for geo in (g, h):
        rows, cols = geo.detector_shape
        u0, v0 = geo.principal_point
        sr, sc = geo.pixel_spacing
        assert (0 - u0) * sc == pytest.approx(-41.0 * 0.5)
        assert (cols - u0) * sc == pytest.approx((80 - 41.0) * 0.5)
        assert (rows - v0) * sr == pytest.approx((100 - 49.0) * 0.4)
    # a point projects to the same place in physical units
    p = np.array([[3.0, -7.0, 700.0]])
    r1, c1, d1 = g.project(p)
    r2, c2, d2 = h.project(p)
    assert (c1 + 0.5) / 80 == pytest.approx((c2 + 0.5) / 40)
    assert (r1 + 0.5) / 100 == pytest.approx((r2 + 0.5) / 50)
    assert d1 == pytest.approx(d2)


def test_json_round_trip_and_format():
    g = small_geometry(pose=sample_pose((0, 0, 0), 1))
    d = json.loads(g.to_json())
    assert set(d) == {"source_to_detector_mm", "detector_shape", "pixel_spacing_mm", "principal_point_px", "world_to_source",
                      "source_to_isocenter_mm"}  # the last one optional (the preset declares it)
    h = XrayGeometry.from_json(g.to_json())
    assert h.detector_shape == g.detector_shape and h.isocenter_distance == g.isocenter_distance
    np.testing.assert_allclose(h.world_to_source, g.world_to_source)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("pixel_spacing_mm"), "missing key.*pixel_spacing_mm"),
        (lambda d: d.__setitem__("world_to_source", np.diag([2.0, 2.0, 2.0, 1.0]).tolist()), "not rigid"),
        (lambda d: d.__setitem__("world_to_source", np.eye(3).tolist()), "4x4"),
        (lambda d: d.__setitem__("detector_shape", [64]), "two numbers"),
        (lambda d: d.__setitem__("source_to_detector_mm", -5), "positive"),
    ],
)
def test_json_errors_are_clear(edit, message):
    d = small_geometry().to_dict()
    edit(d)
    with pytest.raises(InputError, match=message):
        XrayGeometry.from_dict(d)


@pytest.mark.parametrize("text, message", [
    (lambda t: t.replace("}", ', "source_to_isocentre_mm": 800}'), "unknown key 'source_to_isocentre_mm'; did you mean "
                                                                   "'source_to_isocenter_mm'"),
    (lambda t: t[:-1] + ', "source_to_detector_mm": 900}', "'source_to_detector_mm' appears twice"),
    (lambda t: "[" * 50_000 + "]" * 50_000, "characters, more than a geometry holds"),
    (lambda t: '{"a": ' + "[" * 500 + "]" * 500 + "}", "nested 501 levels deep"),
    (lambda t: t.replace('"source_to_detector_mm": 1000.0', '"source_to_detector_mm": ' + "9" * 400), "malformed value"),
    (lambda t: t.replace('"source_to_detector_mm": 1000.0', '"source_to_detector_mm": ' + "9" * 5000), "malformed value"),
], ids=["misspelt key", "duplicate key", "huge", "deep", "400 digits", "5000 digits"])
def test_hostile_geometry_documents_are_one_line(text, message, tmp_path):
    """A geometry document a user hands us: bounded in size and depth, every key once and known."""
    p = tmp_path / "g.json"
    p.write_text(text(standard_ap_geometry(size=64).to_json()))
    with pytest.raises(InputError, match=message) as e:
        XrayGeometry.load(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_mirror_pose_is_not_rigid():
    m = np.eye(4)
    m[0, 0] = -1
    with pytest.raises(InputError, match="not rigid"):
        small_geometry(pose=m)


def test_ap_preset_display_convention():
    """Superior at the top, the patient's right on the image's left, source anterior."""
    iso = np.array([0.0, 0.0, 0.0])
    g = standard_ap_geometry(iso, size=256)
    assert g.sdd == 1000.0 and g.pixel_spacing == pytest.approx((430 / 256, 430 / 256))
    src = g.source_position_world
    assert src[1] == pytest.approx(-820.0)  # LPS: -y is anterior
    r, c, _ = g.project(np.array([[0, 0, 0], [-50.0, 0, 0], [0, 0, 50.0]]))
    assert r[0] == pytest.approx(127.5) and c[0] == pytest.approx(127.5)  # iso-centre on the central ray
    assert c[1] < c[0]  # patient's right (LPS -x) is on the image's left
    assert r[2] < r[0]  # superior (LPS +z) is at the top


def test_rotation_about_the_source_preserves_depth_and_moves_pixels():
    g = small_geometry()
    p = np.array([[12.0, 4.0, -9.0]])
    _, c0, d0 = g.project(p)
    rot = np.eye(4)
    rot[:3, :3] = rotation_matrix((0, 1, 0), math.radians(1.0))  # about the source's y axis
    h = g.with_pose(rot @ g.world_to_source)
    _, c1, d1 = h.project(p)
    assert d1 == pytest.approx(d0, rel=1e-12)
    assert abs(c1[0] - c0[0]) > 5  # 1 degree at ~1000 mm is ~17 mm on the detector


def test_sample_pose_is_seeded_and_within_ranges():
    iso = (1.0, 2.0, 3.0)
    a, b, c = sample_pose(iso, 7), sample_pose(iso, 7), sample_pose(iso, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    base = ap_pose(iso)
    for seed in range(50):
        m = sample_pose(iso, seed)
        rel = m[:3, :3] @ base[:3, :3].T
        angle = math.degrees(math.acos(np.clip((np.trace(rel) - 1) / 2, -1, 1)))
        assert angle <= POSE_RANGES["tilt_deg"] + POSE_RANGES["rotation_deg"] + POSE_RANGES["inplane_deg"]
        # the iso-centre moves by at most the stated shifts
        iso_src = m[:3, :3] @ np.array(iso) + m[:3, 3]
        shift = iso_src - np.array([0, 0, 820.0])
        assert abs(shift[0]) <= POSE_RANGES["shift_lateral_mm"] + 1e-9
        assert abs(shift[2]) <= POSE_RANGES["shift_beam_mm"] + 1e-9


# ------------------------------------------------------------ the model's view
def _image_geometry(sdd=1150.0, iso=820.0, size=96, spacing=2.1, pp=(40.0, 55.0)):
    pose = sample_pose((0.0, 0.0, 30.0), 4, source_to_isocenter=iso)
    return XrayGeometry(sdd, (size, size + 8), (spacing, spacing), pp, pose, isocenter_distance=iso)


@pytest.mark.parametrize("iso", [820.0, 850.0, 970.0], ids=["same-distance", "table-30mm", "sdd-1150-on-table"])
def test_the_view_camera_has_the_image_rays(iso):
    """The view's affine takes each model pixel to the image pixel of the same ray, for any distances."""
    from threeddx.geometry import model_view

    img = _image_geometry(iso=iso)
    model = standard_ap_geometry((0.0, 0.0, 30.0), size=64)
    v = model_view(img, model, iso, 820.0)
    rng = np.random.default_rng(1)
    pts = img.source_position_world + rng.uniform(700, 1000, (50, 1)) * img.ray_directions_world()[
        rng.integers(0, 96, 50), rng.integers(0, 104, 50)]
    r_c, c_c, d_c = v.camera.project(pts)
    r_i, c_i, d_i = img.project(pts)
    u, vv = v.affine @ np.stack([c_c + 0.5, r_c + 0.5, np.ones_like(c_c)])
    np.testing.assert_allclose(u, c_i + 0.5, atol=1e-9)
    np.testing.assert_allclose(vv, r_i + 0.5, atol=1e-9)
    np.testing.assert_allclose(d_c, d_i, rtol=1e-12)


def test_the_view_of_the_training_geometry_is_the_identity():
    from threeddx.geometry import model_view

    g = standard_ap_geometry((0.0, 0.0, 30.0), size=64)
    v = model_view(g, g, 820.0, 820.0)
    assert v.is_identity
    d = np.full((2, 64, 64), 812.5, np.float32)
    assert v.depth_to_image(d) is d


def test_a_view_at_the_same_distance_maps_depths_exactly():
    """Other SDD, pixels and principal point but the same distance: rays equal, depths unchanged."""
    from threeddx.geometry import model_view

    model = standard_ap_geometry((0.0, 0.0, 30.0), size=64)
    v = model_view(_image_geometry(iso=820.0), model, 820.0, 820.0)
    assert v.scale == 1.0 and not v.is_identity
    d = np.random.default_rng(0).uniform(700, 900, (64, 64))
    np.testing.assert_allclose(v.depth_to_image(d), d, rtol=1e-12)


@pytest.mark.parametrize("shift", [-30.0, 30.0])
def test_a_view_at_another_distance_moves_the_anatomy_along_the_beam(shift):
    """Anatomy at 820 + shift mm, seen as if at 820 mm: back in place within the weak-perspective error.

    The model view shows a point X of the image at the pixel of tangent s * t(X);
    a network that knows the anatomy answers the depth of X moved to 820 mm.
    """
    from threeddx.geometry import model_view

    iso = 820.0 + shift
    img = _image_geometry(iso=iso)
    model = standard_ap_geometry((0.0, 0.0, 30.0), size=64)
    v = model_view(img, model, iso, 820.0)
    rng = np.random.default_rng(2)
    xs = np.stack([rng.uniform(-120, 120, 200), rng.uniform(-120, 120, 200), iso + rng.uniform(-80, 80, 200)], 1)
    # where the model view shows it (the camera has the image's rays) and what the network would answer
    t = xs[:, :2] / xs[:, 2:]
    moved = xs - np.array([0.0, 0.0, shift])
    tm = v.scale * t  # the model's tangent of that pixel
    d_m = moved[:, 2] * np.sqrt(1 + (tm**2).sum(1))  # the moved point's z along the model's ray
    z = d_m / np.sqrt(1 + (tm**2).sum(1)) + v.shift_mm
    back = np.concatenate([t * z[:, None], z[:, None]], 1)
    err = np.linalg.norm(back - xs, axis=1)
    assert err.max() < 1e-9  # on the model's ray the moved point's z comes back exactly
    # the weak-perspective error: the moved point's true model tangent differs from s * t
    true_tm = moved[:, :2] / moved[:, 2:]
    lateral = np.abs(true_tm - tm).max(1) * moved[:, 2]
    assert lateral.max() < 0.005 * 170  # < 0.5 % of the offset from the central ray (here < 170 mm)


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("source_to_detector_mm", 1e300, "source_to_detector_mm is 1e+300 mm, outside 100-5000 mm"),
        ("source_to_detector_mm", 50.0, "outside 100-5000 mm"),
        ("pixel_spacing_mm", [0.001, 0.001], "pixel_spacing_mm is [0.001, 0.001], outside 0.01-10 mm"),
        ("principal_point_px", [1e9, 64.0], "principal_point_px (1e+09, 64) lies more than a detector's width"),
        ("detector_shape", [128.7, 128], "detector_shape: must be whole numbers of pixels, got 128.7"),
        ("source_to_isocenter_mm", 1200.0, "source_to_isocenter_mm must lie between the source and the detector"),
    ],
    ids=["sdd-huge", "sdd-small", "spacing", "principal-point", "fractional-shape", "iso-beyond-detector"],
)
def test_impossible_geometry_files_are_refused_naming_the_key(key, value, msg, tmp_path):
    import re

    d = standard_ap_geometry(size=128).to_dict()
    d.pop("source_to_isocenter_mm")  # optional: not declared here
    d[key] = value
    p = tmp_path / "g.json"
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match=re.escape(msg)):
        XrayGeometry.load(p)


def test_the_iso_centre_distance_round_trips_and_defaults_to_the_table():
    g = standard_ap_geometry(size=32, sdd=1150.0, source_to_isocenter=850.0)
    back = XrayGeometry.from_json(g.to_json())
    assert back.isocenter_distance == 850.0
    d = g.to_dict()
    del d["source_to_isocenter_mm"]
    assert XrayGeometry.from_dict(d).isocenter_distance_or_assumed == 1150.0 - 180.0


def _sphere_depths(dirs: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Exact first-entry distance from the source along unit rays (source frame), nan for a miss."""
    b = dirs @ centre
    disc = b ** 2 - (centre @ centre - radius ** 2)
    return np.where(disc >= 0, b - np.sqrt(np.maximum(disc, 0.0)), np.nan)


def test_a_centred_camera_images_the_mirrored_patient_as_the_flipped_image():
    # what makes the mirror augmentation and the mirrored view exact (threeddx.training.dataset, threeddx.inference.predictor):
    # with the principal point at the detector's centre, the ray through pixel (i, W-1-j) is the ray through
    # (i, j) mirrored about the source frame's y-z plane, so depths of a mirrored object are the flipped depths
    g = standard_ap_geometry((0.0, 0.0, 0.0), size=48, detector_mm=200.0)
    assert np.allclose(g.principal_point, (24.0, 24.0))
    dirs = g.ray_directions_source()
    assert np.allclose(dirs[:, ::-1] * [-1.0, 1.0, 1.0], dirs, atol=1e-12)
    centre = np.array([35.0, -12.0, 820.0])
    direct = _sphere_depths(dirs, centre, 30.0)
    mirrored = _sphere_depths(dirs, centre * [-1.0, 1.0, 1.0], 30.0)
    assert np.isfinite(direct).sum() > 50
    np.testing.assert_allclose(mirrored[:, ::-1], direct, atol=1e-9, equal_nan=True)
    # off-centre, the flip is not the mirror image
    shifted = XrayGeometry.from_dict({**json.loads(g.to_json()), "principal_point_px": [27.0, 24.0]})
    d2 = shifted.ray_directions_source()
    assert not np.allclose(d2[:, ::-1] * [-1.0, 1.0, 1.0], d2, atol=1e-6)
