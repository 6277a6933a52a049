"""Surface and depth metrics against shapes with known distances."""
import numpy as np
import pytest
import trimesh

from threeddx.geometry import standard_ap_geometry
from threeddx.metrics import (depth_metrics, dice, faces_see, ray_crossings, sample_surface, seen_part,
                              surface_distances, visible_part)


def test_concentric_spheres():
    a, b = trimesh.creation.icosphere(6, radius=40.0), trimesh.creation.icosphere(6, radius=41.0)
    r = surface_distances(a, b)
    assert r["assd"] == pytest.approx(1.0, abs=0.02)
    assert r["hd95"] == pytest.approx(1.0, abs=0.05)
    assert r["chamfer"] == pytest.approx(2.0, abs=0.04)
    assert r["within_2mm"] == 100.0 and r["within_1mm"] > 50


@pytest.mark.parametrize("gap", [10.0, 50.0])
def test_far_surfaces_keep_their_distance(gap):
    """Exact at any distance (libigl); the icospheres' facets lie up to ~0.01 mm inside their radii."""
    a, b = trimesh.creation.icosphere(6, radius=40.0), trimesh.creation.icosphere(6, radius=40.0 + gap)
    r = surface_distances(a, b)
    assert r["assd"] == pytest.approx(gap, abs=0.02) and r["hd95"] == pytest.approx(gap, abs=0.05)


def test_mesh_against_itself_is_zero():
    m = trimesh.creation.icosphere(5, radius=25.0)
    r = surface_distances(m, m)
    assert r["assd"] < 1e-9 and r["hd95"] < 1e-9


def test_shifted_flat_patch_gives_the_shift():
    patch = trimesh.Trimesh([[-100, -100, 0], [100, -100, 0], [100, 100, 0], [-100, 100, 0]], [[0, 1, 2], [0, 2, 3]])
    moved = patch.copy()
    moved.apply_translation([0, 0, 0.7])
    r = surface_distances(patch, moved)
    assert r["assd"] == pytest.approx(0.7, abs=1e-6) and r["hd95"] == pytest.approx(0.7, abs=1e-6)


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
    """A surface part the other lacks: 6.5 % of B's points lie 20 mm from A; A's points all lie 1 mm from B.

    Directed: P95(A -> B) = 1, P95(B -> A) = 20, so HD95 = 20. Pooled: the far points are ~3.4 % of
    A's and B's points together (A 10 000 mm^2, B 10 700 mm^2, equal density), under 5 %: HD95 pooled = 1.
    """
    def patch(x1, z):
        return trimesh.Trimesh([[0, 0, z], [x1, 0, z], [x1, 100, z], [0, 100, z]], [[0, 1, 2], [0, 2, 3]])

    a = patch(100.0, 0.0)
    b = trimesh.util.concatenate([patch(100.0, 1.0), patch(7.0, -20.0)])  # the second part under A, 20 mm away
    r = surface_distances(a, b)
    assert r["hd95"] == pytest.approx(20.0, abs=0.2)
    assert r["hd95_pooled"] == pytest.approx(1.0, abs=1e-6)
    assert r["pred_to_gt"] == pytest.approx(1.0, abs=1e-6)


def test_sampling_is_uniform_and_seeded():
    m = trimesh.creation.box((10.0, 20.0, 40.0))
    a, b = sample_surface(m, 2.0, seed=3), sample_surface(m, 2.0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(a) == pytest.approx(m.area * 2.0, rel=0.01)
    # the two 20 x 40 faces hold 1600 / 2800 of the area
    on_x_faces = np.isclose(np.abs(a[:, 0]), 5.0).mean()
    assert on_x_faces == pytest.approx(1600 / 2800, abs=0.02)


def test_visible_part_keeps_what_projects_inside():
    g = standard_ap_geometry((0, 0, 0), size=64)
    rod = trimesh.creation.cylinder(radius=10.0, height=800.0)  # along z: longer than the detector's view
    part = visible_part(rod, g)
    row, col, _ = g.project(part.vertices)
    assert row.min() >= -0.5 and row.max() <= 63.5
    assert part.area < rod.area


def test_depth_metrics_and_dice_by_hand():
    pred = np.array([[110.0, 90.0, 5.0]])
    tgt = np.array([[100.0, 100.0, 0.0]])
    r = depth_metrics(pred, tgt, np.ones_like(pred))
    assert r["absrel"] == pytest.approx(0.1) and r["rmse_mm"] == pytest.approx(10.0)
    assert dice(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])) == pytest.approx(2 / 3)


def _hollow_sphere(outer=30.0, inner=15.0, center=(2.0, -1.0, 3.0)):
    o, i = trimesh.creation.icosphere(5, radius=outer), trimesh.creation.icosphere(5, radius=inner)
    i.faces = i.faces[:, ::-1]
    m = trimesh.util.concatenate([o, i])
    m.apply_translation(center)
    return m


def test_ray_crossings_count_a_hollow_sphere_exactly():
    """Points on a hollow sphere: a ray through the cavity crosses 4 times, others twice; each point is its own crossing."""
    g = standard_ap_geometry((0, 0, 0), size=96, detector_mm=110.0)
    m = _hollow_sphere()
    c = np.array([2.0, -1.0, 3.0])
    before, total = ray_crossings(m.triangles_center, m, g)
    pts = m.triangles_center
    src = g.source_position_world
    d = (pts - src) / np.linalg.norm(pts - src, axis=1, keepdims=True)
    # exact: does the ray pass through the inner sphere (distance of its line from the centre < 15)?
    miss = np.linalg.norm(np.cross(c - src, d), axis=1)
    clear = np.abs(miss - 15.0) > 0.5  # away from the inner sphere's rim (a faceted sphere)
    np.testing.assert_array_equal(total[clear], np.where(miss[clear] < 15.0, 4, 2))
    r = np.linalg.norm(pts - c, axis=1)
    near = np.einsum("ij,ij->i", pts - c, d) < 0  # on the half facing the source
    want = np.where(r > 20, np.where(near, 0, total - 1), np.where(near, 1, 2))  # outer near/far, inner near/far
    assert np.mean(before[clear] == want[clear]) > 0.99


@pytest.mark.parametrize("faces, inner_seen", [(2, 0.0), (4, 1.0)])
def test_seen_part_of_a_hollow_sphere(faces, inner_seen):
    """Two faces see the outer sphere only; four see the cavity too (protocol (b))."""
    g = standard_ap_geometry((0, 0, 0), size=96, detector_mm=110.0)
    m = _hollow_sphere()
    part = seen_part(m, g, faces)
    r = np.linalg.norm(part.triangles_center - np.array([2.0, -1.0, 3.0]), axis=1)
    inner_area = part.area_faces[r < 20].sum() / (4 * np.pi * 15.0**2)
    assert inner_area == pytest.approx(inner_seen, abs=0.02)
    assert part.area_faces[r > 20].sum() == pytest.approx(4 * np.pi * 30.0**2, rel=0.02)


@pytest.mark.parametrize("k, n, faces, seen", [
    (0, 2, 2, True), (1, 2, 2, True), (1, 4, 2, False), (2, 4, 2, False), (3, 4, 2, True),
    (1, 4, 4, True), (2, 4, 4, True), (2, 6, 4, False), (3, 6, 4, False), (4, 6, 4, True), (5, 6, 4, True),
    (2, 6, 6, True), (3, 6, 6, True), (4, 8, 6, False), (6, 8, 6, True),
])
def test_which_crossings_the_faces_see(k, n, faces, seen):
    assert bool(faces_see(np.array([k]), np.array([n]), faces)[0]) is seen


def test_protocol_b_scores_the_seen_ground_truth_against_the_prediction():
    """A prediction of the outer sphere alone: in (a) the missing cavity is its error, in (b) (two faces) none."""
    g = standard_ap_geometry((0, 0, 0), size=96, detector_mm=110.0)
    truth = _hollow_sphere()
    outer = trimesh.creation.icosphere(5, radius=30.0)
    outer.apply_translation((2.0, -1.0, 3.0))
    a = surface_distances(outer, truth)
    b = surface_distances(outer, truth, gt_part=seen_part(truth, g, 2))
    assert a["hd95"] == pytest.approx(15.0, abs=0.3)  # the cavity's points are 15 mm from the outer sphere
    assert b["assd"] < 0.05 and b["hd95"] < 0.1
