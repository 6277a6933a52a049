"""Reconstruction: meshes from depth maps against exact shapes."""
import math

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from phantoms import MultiShape, ellipsoid_occupancy, make_volume, shape_occupancy
from threeddx.errors import InputError
from threeddx.geometry import rotation_matrix, standard_ap_geometry
from threeddx.metrics import point_to_surface, sample_surface, surface_distances, visible_part
from threeddx.meshing.reconstruct import backproject_bone, reconstruct_bone
from threeddx.simulator.render import Scene, crop_occupancy, render


def ellipsoid_render(size=256):
    vol = make_volume((96, 96, 96))
    c, axes, rot = (-4.0, 6.0, -2.5), (30.0, 18.0, 22.0), rotation_matrix((1, 2, 0.5), math.radians(35))
    occ = ellipsoid_occupancy(vol, c, axes, rot, partial=True)
    g = standard_ap_geometry((0, 0, 0), size=size, detector_mm=120.0)
    res = render(Scene(mu=np.zeros(vol.array.shape, np.float32), index_to_world=vol.index_to_world,
                       bones=[crop_occupancy(occ, "e")]), g, drr=False)
    exact = trimesh.creation.icosphere(6)
    exact.vertices = exact.vertices * np.array(axes) @ rot.T + np.array(c)
    return res, g, exact


@pytest.fixture(scope="module")
def ellipsoid():
    return ellipsoid_render()


@pytest.mark.parametrize("method", ["dual", "intervals", "poisson"])
def test_oracle_ellipsoid_within_0p3_mm(ellipsoid, method):
    res, g, exact = ellipsoid
    mesh = reconstruct_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, method)
    assert mesh.is_watertight
    r = surface_distances(mesh, exact)
    assert r["assd"] < 0.3, r
    assert mesh.volume == pytest.approx(exact.volume, rel=0.03)


def test_dual_mesh_is_closed_and_consistently_oriented(ellipsoid):
    res, g, _ = ellipsoid
    mesh = reconstruct_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, "dual")
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0


def test_ragged_masks_still_give_closed_meshes():
    """Random, ragged masks (diagonal contacts, holes, islands) still mesh watertight."""
    g = standard_ap_geometry((0, 0, 0), size=64)
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((64, 64)) > 0.35
        front = 800 + 5 * rng.random((64, 64))
        mesh = reconstruct_bone(mask, front, front + 20 + 5 * rng.random((64, 64)), g, "dual")
        assert mesh.is_watertight and mesh.is_winding_consistent


def test_front_only_is_clearly_worse(ellipsoid):
    res, g, exact = ellipsoid
    front = reconstruct_bone(res.masks[0], res.depth_front[0], None, g, "front")
    assert not front.is_watertight
    assert surface_distances(front, exact)["assd"] > 2.0


def test_empty_mask_is_refused():
    g = standard_ap_geometry(size=16)
    with pytest.raises(InputError, match="empty"):
        reconstruct_bone(np.zeros((16, 16)), np.zeros((16, 16)), np.zeros((16, 16)), g)
    with pytest.raises(InputError, match="unknown mesh method"):
        reconstruct_bone(np.ones((16, 16)), np.ones((16, 16)), np.ones((16, 16)), g, "marching")


def test_pelvis_oracle_mesh_is_not_worse_than_its_point_cloud(small_sim):
    """On a simulated pelvis, meshing the GT depths costs at most 0.2 mm ASSD over the points themselves."""
    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry

    row = read_manifest(small_sim)[0]
    z = np.load(small_sim / row["render"])
    g = XrayGeometry.from_json(str(z["geometry"]))
    c = list(z["bones"]).index("pelvis")
    gt = visible_part(trimesh.load(small_sim / row["mesh_dir"] / "pelvis.ply"), g)
    mesh = reconstruct_bone(z["masks"][c], z["depth_front"][c], z["depth_back"][c], g, "dual")
    mesh_assd = surface_distances(visible_part(mesh, g, max_edge_mm=None), gt)["assd"]
    pts = backproject_bone(z["masks"][c], z["depth_front"][c], z["depth_back"][c], g)
    cloud = np.concatenate([pts.front, pts.back])
    gt_pts = sample_surface(gt, seed=1)
    d = np.concatenate([point_to_surface(cloud, gt), cKDTree(cloud).query(gt_pts)[0]])
    assert mesh_assd <= d.mean() + 0.2, (mesh_assd, d.mean())


# ---------------------------------------------------------------- K faces
@pytest.fixture(scope="module")
def hollow_sphere():
    """A hollow sphere (outer 30 mm, inner 16 mm) rendered with 4 faces, and its exact surfaces."""
    vol = make_volume((80, 80, 80))
    c = np.array([1.5, -2.0, 1.0])
    occ = shape_occupancy(vol, MultiShape("hollow_sphere", center=c, outer=30.0, inner=16.0), partial=True)
    g = standard_ap_geometry((0, 0, 0), size=128, detector_mm=110.0)
    res = render(Scene(mu=np.zeros(vol.array.shape, np.float32), index_to_world=vol.index_to_world,
                       bones=[crop_occupancy(occ, "shell")]), g, drr=False, faces=4)
    outer, inner = trimesh.creation.icosphere(6, radius=30.0), trimesh.creation.icosphere(6, radius=16.0)
    inner.faces = inner.faces[:, ::-1]
    exact = trimesh.util.concatenate([outer, inner])
    exact.apply_translation(c)
    return res, g, exact


def test_four_faces_mesh_the_cavity(hollow_sphere):
    """With the inner faces the mesh (threeddx.meshing.reconstruct.interval_mesh) has the cavity (two closed shells, the
    shell's volume); with two it has not."""
    res, g, exact = hollow_sphere
    inner = (res.depth_inner[0], res.inner_valid[0])
    mesh = reconstruct_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, "dual", inner=inner)
    assert mesh.is_watertight and mesh.is_winding_consistent and len(mesh.split(only_watertight=False)) == 2
    assert mesh.volume == pytest.approx(exact.volume, rel=0.03)  # 4/3 pi (30^3 - 16^3)
    r = surface_distances(mesh, exact)
    assert r["assd"] < 0.3, r
    two = reconstruct_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, "dual")
    r2 = surface_distances(two, exact)
    assert r2["hd95"] > 10.0 > 2 * r["hd95"]  # the missing inner sphere: over 5 % of the truth is 14 mm away


def test_inner_faces_normals_point_out_of_the_bone(hollow_sphere):
    """Poisson's and the shape model's input: a gap's faces have normals into the cavity (out of the bone)."""
    from threeddx.meshing.reconstruct import oriented_points

    res, g, _ = hollow_sphere
    c = np.array([1.5, -2.0, 1.0])
    pts, nrm = oriented_points(res.masks[0], res.depth_front[0], res.depth_back[0], g,
                               (res.depth_inner[0], res.inner_valid[0]))
    r = np.linalg.norm(pts - c, axis=1)
    radial = np.sum(nrm * (pts - c), axis=1) / r
    on_inner, on_outer = np.abs(r - 16.0) < 1.0, np.abs(r - 30.0) < 1.0
    assert on_inner.sum() > 1000 and on_inner.sum() + on_outer.sum() == len(pts)
    assert np.median(radial[on_inner]) < -0.95 and np.median(radial[on_outer]) > 0.95


def test_k_face_points_include_the_inner_faces(hollow_sphere):
    res, g, _ = hollow_sphere
    pts = backproject_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, (res.depth_inner[0], res.inner_valid[0]))
    r = np.linalg.norm(pts.inner - np.array([1.5, -2.0, 1.0]), axis=1)
    assert len(pts.inner) == 2 * res.inner_valid[0].sum() and np.median(np.abs(r - 16.0)) < 0.1
    assert len(pts.both()) == len(pts.front) + len(pts.back) + len(pts.inner)


def _two_parts_exact(name):
    if name == "torus, seen edge-on":  # axis along world z: an AP ray through the middle crosses the tube twice
        m = trimesh.creation.torus(18.0, 7.0, major_sections=96, minor_sections=48)
        m.apply_translation([-1.0, 0.5, 2.0])
        return MultiShape("torus", center=np.array([-1.0, 0.5, 2.0]), major=18.0, minor=7.0), m
    balls = [(np.array([6.0, -14.0, 1.0]), 11.0), (np.array([-6.0, 14.0, -1.0]), 10.0)]  # behind each other, offset
    parts = []
    for c, r in balls:
        s = trimesh.creation.icosphere(5, radius=r)
        s.apply_translation(c)
        parts.append(s)
    return MultiShape("spheres", balls=balls), trimesh.util.concatenate(parts)


@pytest.mark.parametrize("name", ["torus, seen edge-on", "two spheres, one behind the other"])
def test_four_faces_where_one_part_ends_behind_another(name):
    """Rays that meet one part or both: the interval mesh joins each part's faces, not one part's to the other's."""
    shape, exact = _two_parts_exact(name)
    vol = make_volume((64, 64, 64))
    g = standard_ap_geometry((0, 0, 0), size=96, detector_mm=110.0)
    res = render(Scene(mu=np.zeros(vol.array.shape, np.float32), index_to_world=vol.index_to_world,
                       bones=[crop_occupancy(shape_occupancy(vol, shape, partial=True), "b")]), g, drr=False, faces=4)
    inner = (res.depth_inner[0], res.inner_valid[0])
    four = reconstruct_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, "dual", inner=inner)
    two = reconstruct_bone(res.masks[0], res.depth_front[0], res.depth_back[0], g, "dual")
    assert four.is_watertight and four.volume == pytest.approx(exact.volume, rel=0.05)
    r4, r2 = surface_distances(four, exact), surface_distances(two, exact)
    assert r4["assd"] < 0.3 and r4["hd95"] < 1.0, r4
    assert r2["hd95"] > 3 * r4["hd95"]


def test_one_mesher_per_bone_is_each_mesher_on_its_bones(ellipsoid):
    """{bone: mesher} meshes every bone exactly as that mesher alone does, in the order of the maps."""
    from threeddx.meshing.reconstruct import describe_mesh, mesh_bones

    res, g, _ = ellipsoid
    m = (res.masks[0], res.depth_front[0], res.depth_back[0])
    maps = {"a": m, "b": m, "c": m}
    mixed = mesh_bones(maps, g, {"a": "front", "b": "dual"}).meshes  # c is not named: dual
    assert list(mixed) == ["a", "b", "c"]
    for bone, method in (("a", "front"), ("b", "dual"), ("c", "dual")):
        alone = mesh_bones({bone: m}, g, method).meshes
        np.testing.assert_array_equal(mixed[bone].vertices, alone[bone].vertices)
    assert describe_mesh({"a": "front", "b": "dual", "c": "dual"}) == "front (a), dual (b, c)"
    assert describe_mesh({"a": "ssm", "b": "ssm"}) == "ssm" and describe_mesh("poisson") == "poisson"
    with pytest.raises(InputError, match="unknown mesh method 'cubes'"):
        mesh_bones(maps, g, {"a": "cubes"})


def test_a_mesher_is_one_row(ellipsoid, monkeypatch):
    """A row added to MESHERS is a mesher everywhere: mesh_bones runs it, the CLI's --mesh takes it and its help
    names it; a misspelt name gets "did you mean"."""
    import argparse

    from threeddx.meshing.reconstruct import MESHERS, Meshed, Mesher, mesh_bones, mesher_help, mesher_option

    res, g, _ = ellipsoid
    m = (res.masks[0], res.depth_front[0], res.depth_back[0])
    calls = []

    def hull(maps, geometry, options):
        calls.append(sorted(maps))
        return Meshed({b: MESHERS["dual"].run({b: v}, geometry, options).meshes[b].convex_hull for b, v in maps.items()},
                      {b: {"note": "convex hull"} for b in maps})

    monkeypatch.setitem(MESHERS, "hull", Mesher("hull", "the dual-face mesh's convex hull", hull))
    out = mesh_bones({"a": m, "b": m}, g, {"a": "hull"})
    assert calls == [["a"]] and out.info == {"a": {"note": "convex hull"}} and out.meshes["a"].is_convex
    assert mesher_option("hull") == "hull" and "hull: the dual-face mesh's convex hull" in mesher_help()
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean 'hull'"):
        mesher_option("hul")
