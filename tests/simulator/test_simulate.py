"""Anatomy, synthetic CT, simulator and dataset (issue: real anatomy and the simulator)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from threeddx.simulator.anatomy import (
    RESERVED_SUBJECTS,
    Shape,
    ShapePCA,
    articulate,
    bone_meshes,
    check_subject_id,
    load_shape,
    parse_subject_range,
    subject_split,
)
from threeddx.training.dataset import PhotometricAugment, SimulatedDataset, downsample_sample
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.simulator.phantom import Grid, synthesize_ct, voxelise
from threeddx.simulator.render import mesh_silhouette
from threeddx.simulator.simulate import SimSettings, check_settings, simulate


# ---------------------------------------------------------------- subjects
def test_split_by_subject_and_reserved_subjects():
    split = subject_split()
    assert sorted(split) == list(range(22))
    assert not RESERVED_SUBJECTS & set(split)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 16, "val": 3, "test": 3}
    assert subject_split() == split  # fixed
    for k in (22, 23, 24, 25):
        with pytest.raises(InputError, match="reserved"):
            check_subject_id(k)
    with pytest.raises(InputError, match="reserved"):
        parse_subject_range("20-23")
    assert parse_subject_range("0-2,5") == [0, 1, 2, 5]


@pytest.fixture(scope="module")
def subject0():
    return load_shape(0)  # built through gias3 once (~30 s), then cached


def test_subject0_meshes_are_watertight_with_plausible_volumes(subject0):
    meshes = bone_meshes(subject0)
    assert set(meshes) == {"pelvis", "sacrum", "femur_left", "femur_right"}
    for m in meshes.values():
        assert m.is_watertight and m.volume > 0
    vol = {k: m.volume / 1000 for k, m in meshes.items()}  # cm3
    assert vol["pelvis"] == pytest.approx(751, abs=25)  # two hemipelves, ~375 each
    assert vol["femur_left"] == pytest.approx(495, abs=15)
    assert vol["femur_right"] == pytest.approx(495, abs=15)
    assert vol["sacrum"] == pytest.approx(310, abs=15)
    # LPS frame, recentred on the hip-centre midpoint: left femur at +x, superior pelvis
    assert meshes["femur_left"].centroid[0] > 0 > meshes["femur_right"].centroid[0]
    np.testing.assert_allclose(subject0.hip_centers.mean(0), 0, atol=1e-9)
    assert meshes["pelvis"].bounds[1, 2] > 100 and meshes["femur_left"].bounds[0, 2] < -300


def test_articulation_is_seeded_and_rigid(subject0):
    a, ang_a = articulate(subject0, 5)
    b, _ = articulate(subject0, 5)
    c, _ = articulate(subject0, 6)
    for p in subject0.vertices:
        np.testing.assert_array_equal(a.vertices[p], b.vertices[p])
    assert not np.allclose(a.vertices["femur-l"], c.vertices["femur-l"])
    np.testing.assert_array_equal(a.vertices["hemipelvis-left"], subject0.vertices["hemipelvis-left"])
    # rigid about the hip centre: distances to it are kept
    hc = subject0.hip_centers[0]
    np.testing.assert_allclose(
        np.linalg.norm(a.vertices["femur-l"] - hc, axis=1), np.linalg.norm(subject0.vertices["femur-l"] - hc, axis=1)
    )
    assert set(ang_a) == {"left", "right"}


def test_pca_mean_modes_and_seeded_samples(monkeypatch):
    """The PCA on shapes we control: mean, orthonormal modes, seeded draws."""
    rng = np.random.default_rng(0)
    faces = {p: np.array([[0, 1, 2]]) for p in ("hemipelvis-left", "hemipelvis-right", "sacrum", "femur-l", "femur-r")}
    shapes = {
        k: Shape(vertices={p: rng.normal(size=(3, 3)) for p in faces}, hip_centers=rng.normal(size=(2, 3)), faces=faces)
        for k in range(4)
    }
    monkeypatch.setattr("threeddx.simulator.anatomy.load_shape", lambda k: shapes[k])
    pca = ShapePCA.fit([0, 1, 2, 3])
    x = np.stack([s.as_vector() for s in shapes.values()])
    np.testing.assert_allclose(pca.mean, x.mean(0))
    assert pca.modes.shape == (x.shape[1], 3)
    np.testing.assert_allclose(pca.modes.T @ pca.modes, np.eye(3), atol=1e-10)
    # the training shapes lie in the model's span
    resid = (x - pca.mean) - (x - pca.mean) @ pca.modes @ pca.modes.T
    assert np.abs(resid).max() < 1e-9
    s1, s2 = pca.sample(3, like=shapes[0]), pca.sample(3, like=shapes[0])
    np.testing.assert_array_equal(s1.as_vector(), s2.as_vector())
    with pytest.raises(InputError, match="reserved"):
        ShapePCA.fit([0, 22])


# ---------------------------------------------------------------- voxels and CT
def test_voxelise_is_exact_in_volume_and_partial_on_the_surface():
    m = trimesh.creation.icosphere(subdivisions=4, radius=15.0)
    m.apply_translation([2.3, -1.1, 3.7])
    grid = Grid.around(((-30, 30), (-30, 30), (-30, 30)), 1.0)
    occ, off = voxelise(m.vertices, m.faces, grid)
    assert occ.sum() == pytest.approx(m.volume, rel=1e-3)
    assert occ.min() >= 0 and occ.max() <= 1
    assert ((occ > 0) & (occ < 1)).sum() > 500  # a partial-volume rim
    # an inward-facing (flipped) mesh voxelises the same
    flipped, off2 = voxelise(m.vertices, m.faces[:, ::-1], grid)
    assert off2 == off
    np.testing.assert_allclose(flipped, occ, atol=1e-6)


def _small_ct(seed, shape):
    parts = {p: (shape.vertices[p], shape.faces[p]) for p in ("hemipelvis-left", "femur-l")}
    return synthesize_ct(
        parts, {"hemipelvis-left": 77, "femur-l": 75}, {"pelvis": ("hemipelvis-left",), "femur_left": ("femur-l",)},
        shape.hip_centers, seed, spacing=4.0,
    )


def test_synthetic_ct_is_seeded_and_plausible(subject0):
    a, b, c = _small_ct(1, subject0), _small_ct(1, subject0), _small_ct(2, subject0)
    np.testing.assert_array_equal(a.ct.array, b.ct.array)
    assert a.tissue != c.tissue and not np.array_equal(a.ct.array, c.ct.array)
    hu, lab = a.ct.array, a.labels.array
    assert set(np.unique(lab)) == {0, 75, 77}
    assert np.median(hu[lab > 0]) > 150  # bone
    assert np.all(hu[0, 0, :5] == -1000)  # air in the corner
    soft = (lab == 0) & (hu > -500)
    assert -150 < np.median(hu[soft]) < 100  # fat and muscle
    assert hu[lab > 0].max() < 2100  # bone; metal (zips, buttons) may lie on the body


# ---------------------------------------------------------------- simulator
@pytest.fixture(scope="module")
def simulated(tmp_path_factory, subject0):
    out = tmp_path_factory.mktemp("sim")
    settings = SimSettings(subjects=[0], poses=2, size=64, seed=1)
    simulate(settings, out, workers=1, progress=False)
    return out, settings


def test_simulated_depths_lie_on_the_meshes_and_masks_match_silhouettes(simulated):
    out, _ = simulated
    z = np.load(out / "samples" / "llp26-00" / "pose_01.npz")
    geom = XrayGeometry.from_json(str(z["geometry"]))
    assert str(z["split"]) == subject_split()[0]
    for c, bone in enumerate(z["bones"]):
        mesh = trimesh.load(out / "meshes" / "llp26-00" / f"{bone}.ply")
        m = z["masks"][c].astype(bool)
        sil = mesh_silhouette(mesh.vertices, mesh.faces, geom)
        assert (m & sil).sum() / (m | sil).sum() > 0.98, bone
        pts = np.concatenate([geom.backproject(z["depth_front"][c], m)[0], geom.backproject(z["depth_back"][c], m)[0]])
        _, dist, _ = trimesh.proximity.closest_point(mesh, pts)
        assert np.median(dist) < 0.2, bone


def test_manifest_and_settings(simulated):
    out, settings = simulated
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[0].startswith("sample_id,subject_id,source,subject_index,split,pose")
    assert len(rows) == 1 + 2
    assert json.loads((out / "settings.json").read_text())["poses"] == 2
    other = SimSettings(subjects=[0], poses=3, size=64, seed=1)
    with pytest.raises(InputError, match="other settings.*poses"):
        check_settings(out, other)


KILL_AFTER_SECOND_RENDER = """
import os, sys
import threeddx.simulator.render as r
orig, n = r.render, [0]
def render(*a, **k):
    n[0] += 1
    if n[0] == 2:
        os.kill(os.getpid(), 9)  # a hard kill, mid-run
    return orig(*a, **k)
r.render = render
from threeddx.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, subject0):
    args = ["simulate", "--subjects", "0", "--poses", "3", "--size", "32", "--voxel-mm", "2", "--seed", "4"]
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_RENDER, *args, "--out", str(tmp_path / "a")],
                            capture_output=True, encoding="utf-8", errors="replace")
    assert killed.returncode == -9
    assert not (tmp_path / "a" / "manifest.csv").exists()
    assert (tmp_path / "a" / "samples" / "llp26-00" / "pose_00.npz").exists()
    before = (tmp_path / "a" / "samples" / "llp26-00" / "pose_00.npz").stat().st_mtime_ns
    for out in ("a", "b"):  # resume a; run b in one go
        done = subprocess.run([sys.executable, "-m", "threeddx.cli", *args, "--out", str(tmp_path / out)],
                              capture_output=True, encoding="utf-8", errors="replace")
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "samples" / "llp26-00" / "pose_00.npz").stat().st_mtime_ns == before  # not rewritten
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()
    for p in range(3):
        za = np.load(tmp_path / "a" / "samples" / "llp26-00" / f"pose_{p:02d}.npz")
        zb = np.load(tmp_path / "b" / "samples" / "llp26-00" / f"pose_{p:02d}.npz")
        for key in za.files:
            np.testing.assert_array_equal(za[key], zb[key])


# ---------------------------------------------------------------- dataset
def test_dataset_items_and_downsampling(simulated):
    out, _ = simulated
    ds = SimulatedDataset(out, split=None)
    assert len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["masks"].shape == item["depth_front"].shape == (4, 64, 64)
    half = SimulatedDataset(out, split=None, size=32, bones=["femur_left"])[1]
    assert half["masks"].shape == (1, 32, 32)
    g = XrayGeometry.from_json(half["geometry"])
    assert g.detector_shape == (32, 32) and g.pixel_spacing[0] == pytest.approx(2 * 430 / 64)
    m = half["masks"][0].bool()
    assert torch.all(half["depth_front"][0][m] > 0) and torch.all(half["depth_front"][0][~m] == 0)
    with pytest.raises(InputError, match="not in the samples"):
        SimulatedDataset(out, split=None, bones=["tibia"])


def test_downsampled_depths_stay_on_the_new_rays(simulated):
    """A depth read at 32 px, back-projected through the 32 px geometry, still lies on the mesh."""
    out, _ = simulated
    item = SimulatedDataset(out, split=None, size=32, bones=["pelvis"])[0]
    g = XrayGeometry.from_json(item["geometry"])
    mesh = trimesh.load(out / "meshes" / "llp26-00" / "pelvis.ply")
    pts = g.backproject(item["depth_front"][0].numpy(), item["masks"][0].numpy() > 0)[0]
    _, d, _ = trimesh.proximity.closest_point(mesh, pts)
    assert np.median(d) < 0.5


def test_augmentation_is_photometric_and_checked(simulated):
    out, _ = simulated
    ds = SimulatedDataset(out, split=None, augment=[PhotometricAugment()], seed=3)
    a, b = ds[0]["image"], ds[0]["image"]
    assert torch.equal(a, b)  # seeded per (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0]["image"])
    bad = SimulatedDataset(out, split=None, augment=[lambda img, rng: img[:, :-1]])
    with pytest.raises(InputError, match="pixel-to-ray"):
        bad[0]


def test_downsample_rejects_non_divisible():
    with pytest.raises(InputError):
        downsample_sample(np.zeros((10, 10)), np.zeros((1, 10, 10)), np.zeros((1, 10, 10)), np.zeros((1, 10, 10)), 3)


def test_untargeted_bones_stay_in_the_ct(tmp_path, subject0):
    """Targets pelvis only: the sacrum and femurs are still in the CT (and so in the DRR)."""
    import SimpleITK as sitk

    out = tmp_path / "sim"
    simulate(SimSettings(subjects=[0], poses=1, size=32, seed=2, voxel_mm=4.0, write_ct=True, bones=["pelvis"]),
             out, progress=False)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct" / "llp26-00_labels.nii.gz")))
    assert {25, 75, 76, 77, 78} <= set(np.unique(labels).tolist())
    assert list(np.load(out / "samples" / "llp26-00" / "pose_00.npz")["bones"]) == ["pelvis"]


def test_written_ct_renders_like_the_sample_through_the_ordinary_path(tmp_path, subject0):
    """--write-ct output read back as a real CT (load_ct/load_labels, TotalSegmentator names)."""
    from threeddx.io import load_ct, load_labels, parse_bones
    from threeddx.simulator.render import make_scene, render

    out = tmp_path / "sim"
    simulate(SimSettings(subjects=[0], poses=1, size=48, seed=2, voxel_mm=3.0, write_ct=True), out, progress=False)
    ct = load_ct(out / "ct" / "llp26-00_ct.nii.gz")
    labels = load_labels(out / "ct" / "llp26-00_labels.nii.gz", ct)
    bones = parse_bones(["pelvis", "sacrum", "femur_left", "femur_right"])
    z = np.load(out / "samples" / "llp26-00" / "pose_00.npz")
    res = render(make_scene(ct, labels, bones), XrayGeometry.from_json(str(z["geometry"])))
    np.testing.assert_allclose(res.line_integral, z["line_integral"], rtol=1e-5, atol=1e-5)  # same CT
    for c in range(4):  # binary labels vs the partial-volume occupancy: same silhouettes, near depths
        a, b = res.masks[c].astype(bool), z["masks"][c].astype(bool)
        assert (a & b).sum() / (a | b).sum() > 0.93
        both = a & b
        assert np.median(np.abs(res.depth_front[c][both] - z["depth_front"][c][both])) < 1.0


# ---------------------------------------------------------------- K faces
def test_four_face_sim_keep_the_two_and_add_the_inner_surfaces_on_the_mesh(four_face_sim):
    z2 = np.load(four_face_sim[2] / "samples" / "llp26-00" / "pose_00.npz")
    z4 = np.load(four_face_sim[4] / "samples" / "llp26-00" / "pose_00.npz")
    assert "depth_inner" not in z2.files  # two faces: the format as before
    for key in ("image", "masks", "depth_front", "depth_back", "materials"):
        np.testing.assert_array_equal(z2[key], z4[key])
    assert z4["depth_inner"].shape == (3, 2, 32, 32) and z4["inner_valid"].shape == (3, 1, 32, 32)
    geom = XrayGeometry.from_json(str(z4["geometry"]))
    valid = z4["inner_valid"][0, 0].astype(bool)
    assert valid.sum() >= 10 and not (valid & ~z4["masks"][0].astype(bool)).any()  # rays that cross the pelvis twice
    mesh = trimesh.load(four_face_sim[4] / "meshes" / "llp26-00" / "pelvis.ply")
    pts = np.concatenate([geom.backproject(z4["depth_inner"][0, f], valid)[0] for f in (0, 1)])
    _, dist, _ = trimesh.proximity.closest_point(mesh, pts)
    assert np.median(dist) < 0.4
    d = np.stack([z4["depth_front"][0], *z4["depth_inner"][0], z4["depth_back"][0]])[:, valid]
    assert np.all(np.diff(d, axis=0) >= 0)  # in order along the ray


def test_dataset_reads_four_face_sim_downsampled_and_mirrored(four_face_sim):
    with pytest.raises(InputError, match="--faces 4"):
        SimulatedDataset(four_face_sim[2], split=None, faces=4)
    two = SimulatedDataset(four_face_sim[4], split=None)[0]
    assert "depth_inner" not in two  # a two-face model reads a four-face folder as before
    full = SimulatedDataset(four_face_sim[4], split=None, faces=4)[0]
    item = SimulatedDataset(four_face_sim[4], split=None, faces=4, size=16)[0]
    assert item["depth_inner"].shape == (3, 2, 16, 16) and item["inner_valid"].shape == (3, 1, 16, 16)
    v = item["inner_valid"].bool()
    assert not (v[:, 0] & ~item["masks"].bool()).any()
    assert torch.all(item["depth_inner"][:, 0][v[:, 0]] > 0) and torch.all(item["depth_inner"][:, 0][~v[:, 0]] == 0)
    assert v.sum() <= full["inner_valid"].sum()
    blocks = full["inner_valid"].reshape(3, 1, 16, 2, 16, 2).bool().all(dim=(3, 5))  # valid at all 4 samples
    assert torch.equal(v, blocks)
    block_mean = full["depth_inner"].reshape(3, 2, 16, 2, 16, 2).mean(dim=(3, 5))
    torch.testing.assert_close(item["depth_inner"][:, :, v[0, 0]][0], block_mean[:, :, v[0, 0]][0])
    mirrored = SimulatedDataset(four_face_sim[4], split=None, faces=4, mirror=1.0)[0]
    for k in ("depth_inner", "inner_valid"):
        assert torch.equal(mirrored[k], full[k][[0, 2, 1]].flip(-1))
