"""Metamorphic tests: the same exposure told another way gives the same answer, transformed.

* **World frame**: ``world_to_source`` replaced by ``world_to_source @ inv(M)`` for a rigid M (a CT's patient
  coordinates, an atlas 1.5 m away, RAS instead of LPS axes) moves every world mesh by M and leaves
  ``--frame source`` outputs as they were; the anchoring's femur shifts and the fits' statistics do not change.
* **Mirror**: the patient's mirror image (the radiograph flipped left to right, centred camera) gives the
  mirrored meshes, left and right femurs swapped.
* **Pixel size**: the same radiograph at twice the pixels, its geometry to match, gives the same meshes.
* **Intensities**: a monotonic change (gamma, 8-bit re-quantisation) barely moves the accuracy.
* **A far start**: a shape-model fit started 1.5 m from its points converges to the near fit or is rejected.

The compact set runs by default (the released model on the bundled example); the full grid of frames,
meshers and anchoring is ``-m slow``.
"""
import json

import numpy as np
import pytest
import trimesh

from threeddx.apps.demo import example_path
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry, rotation_matrix
from threeddx.inference.predictor import Predictor
from threeddx.metrics import surface_distances, visible_part
from threeddx.apps.predict import reconstruct_image

BONES = ("pelvis", "femur_left", "femur_right")


def rigid(shift=(0.0, 0.0, 0.0), axis=(0.0, 0.0, 1.0), degrees=0.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation_matrix(axis, np.radians(degrees))
    m[:3, 3] = shift
    return m


#: Compact frames of the default suite: far and turned, RAS instead of LPS, and a moderate move.
FRAMES = {
    "1500 mm along x, 30 deg about z": rigid((1500.0, 0.0, 0.0), (0, 0, 1), 30.0),
    "RAS axes (180 deg about z), 300 mm along y": rigid((0.0, 300.0, 0.0), (0, 0, 1), 180.0),
    "1200 mm away, 30 deg about x": rigid((600.0, -900.0, 500.0), (1, 0, 0), 30.0),
}


@pytest.fixture(scope="module")
def example():
    with np.load(example_path()) as z:
        return {"image": z["image"].astype(np.float32), "geometry": XrayGeometry.from_json(str(z["geometry"])),
                "truth": {b: trimesh.Trimesh(z[f"gt_vertices_{b}"], z[f"gt_faces_{b}"], process=False) for b in BONES}}


@pytest.fixture(scope="module")
def released():
    return {"on": Predictor(None), "off": Predictor(None, hip_anchor=None)}


def _reconstruct(tmp_path, predictor, image, geometry, mesh=None, frame="world", name="x"):
    """predict's own path (file in, meshes out, nothing written) for an image and a declared geometry."""
    np.save(tmp_path / f"{name}.npy", image)
    (tmp_path / f"{name}.json").write_text(json.dumps(geometry.to_dict()))
    return reconstruct_image(tmp_path / f"{name}.npy", predictor, tmp_path / f"{name}.json", mesh_method=mesh, frame=frame)


def _max_vertex_gap(a, b, m=None) -> float:
    """Largest distance (mm) between corresponding vertices of two meshes, ``b`` moved by ``m``.

    Meshes of one topology are compared vertex by vertex; otherwise (pymeshlab's Poisson lists the same
    triangles in another order from run to run, the same input or not) each vertex with the other mesh's
    nearest, both ways.
    """
    from scipy.spatial import cKDTree

    va = np.asarray(a.vertices)
    vb = np.asarray(b.vertices) if m is None else np.asarray(b.vertices) @ m[:3, :3].T + m[:3, 3]
    if va.shape == vb.shape and np.array_equal(a.faces, b.faces):
        return float(np.abs(va - vb).max())
    return float(max(cKDTree(vb).query(va)[0].max(), cKDTree(va).query(vb)[0].max()))


def _check_frame(tmp_path, example, predictor, mesh, m):
    geo = example["geometry"]
    moved = geo.with_pose(geo.world_to_source @ np.linalg.inv(m))
    a = _reconstruct(tmp_path, predictor, example["image"], geo, mesh, name="a")
    b = _reconstruct(tmp_path, predictor, example["image"], moved, mesh, name="b")
    assert set(a.world_meshes) == set(b.world_meshes) == set(BONES)
    for bone in BONES:
        assert _max_vertex_gap(b.world_meshes[bone], a.world_meshes[bone], m) < 0.1, bone
        assert a.summary["bones"][bone]["mesh_method"] == b.summary["bones"][bone]["mesh_method"]
    for femur in ("femur_left", "femur_right"):  # the anchoring moved each femur by the same amount
        sa, sb = (r.summary["checks"][femur].get("hip_anchor", {}) for r in (a, b))
        assert sa.get("shift_mm") == sb.get("shift_mm") and sa.get("skipped") == sb.get("skipped")
    if "ssm" in a.summary:  # the fits: the same weights, RMS and verdicts
        for key, fit in a.summary["ssm"].items():
            other = b.summary["ssm"][key]
            assert fit["mode_weights_sd"] == other["mode_weights_sd"] and fit["rms_mm"] == other["rms_mm"]
            assert fit["rejected"] == other["rejected"] == {}
    sa = _reconstruct(tmp_path, predictor, example["image"], geo, mesh, frame="source", name="a")
    sb = _reconstruct(tmp_path, predictor, example["image"], moved, mesh, frame="source", name="b")
    for bone in BONES:  # the source frame does not know the world
        assert _max_vertex_gap(sb.meshes[bone], sa.meshes[bone]) < 0.1, bone


@pytest.mark.parametrize("mesh", [None, "dual"], ids=["default (ssm pelvis)", "dual"])
@pytest.mark.parametrize("frame", list(FRAMES))
def test_another_world_frame_moves_the_meshes_with_it(tmp_path, example, released, frame, mesh):
    _check_frame(tmp_path, example, released["on"], mesh, FRAMES[frame])


def _assd(a, b, geo) -> float:
    return surface_distances(visible_part(a, geo, max_edge_mm=None), visible_part(b, geo))["assd"]


def test_the_patients_mirror_image_gives_the_mirrored_meshes(tmp_path, example, released):
    """Flipping a centred camera's image left to right mirrors the patient about the source frame's y-z plane.

    The released model averages its view and the mirrored view (mirror_tta), so its maps are exactly
    mirrored: meshed ``dual`` without the anchoring, the meshes are the mirror of each other. The default
    meshing fits a shape model of 16 adults, which is not mirror-symmetric (its mesh has no left-right
    vertex correspondence to symmetrise it with), so the mirrored pelvis is a slightly other fit (measured
    1.2 mm ASSD between the two, 2026-12-06), its hip joints a little elsewhere, and the anchored femurs
    follow them (0.2-0.3 mm ASSD between the two); each is as accurate against its own patient's truth
    within 0.5 mm ASSD (measured 0.31 mm at most).
    """
    geo = example["geometry"]
    assert geo.principal_point == (geo.detector_shape[1] / 2, geo.detector_shape[0] / 2)
    s = geo.source_to_world @ np.diag([-1.0, 1.0, 1.0, 1.0]) @ geo.world_to_source  # the mirror, world mm
    swap = {"pelvis": "pelvis", "femur_left": "femur_right", "femur_right": "femur_left"}
    flipped = np.ascontiguousarray(example["image"][:, ::-1])
    truth = {b: example["truth"][swap[b]].copy().apply_transform(s) for b in BONES}  # the mirrored patient
    for predictor, mesh, tol in ((released["off"], "dual", 0.05), (released["on"], None, None)):
        a = _reconstruct(tmp_path, predictor, example["image"], geo, mesh, name="a").world_meshes
        b = _reconstruct(tmp_path, predictor, flipped, geo, mesh, name="b").world_meshes
        for bone in BONES:
            mirrored = a[swap[bone]].copy().apply_transform(s)
            gap = surface_distances(b[bone], mirrored)["assd"]
            if tol is not None:
                assert gap < tol, (bone, gap)
            else:
                assert gap < (1.5 if bone == "pelvis" else 0.5), (bone, gap)
                err_a, err_b = _assd(a[swap[bone]], example["truth"][swap[bone]], geo), _assd(b[bone], truth[bone], geo)
                assert abs(err_a - err_b) < 0.5, (bone, err_a, err_b)


def test_twice_the_pixels_gives_the_same_meshes(tmp_path, example, released):
    import torch

    img, geo = example["image"], example["geometry"]
    up = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], scale_factor=2, mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    a = _reconstruct(tmp_path, released["on"], img, geo, name="a").world_meshes
    b = _reconstruct(tmp_path, released["on"], up, geo.resample(2 * geo.detector_shape[0]), name="b").world_meshes
    for bone in BONES:
        assert surface_distances(b[bone], a[bone])["assd"] < 1.0, bone


@pytest.mark.parametrize("change", ["gamma 0.8", "gamma 1.25", "8 bit"])
def test_a_monotonic_intensity_change_barely_moves_the_accuracy(tmp_path, example, released, change):
    """The shape (ASSD after the best shift along the beam) moves under 0.3 mm, and the bone's place along the beam
    by under a quarter of the 1-SD placement uncertainty the model reports for it (the 256 px model's right femur
    on this image: ~0.8 mm of its 6.7 mm, which moves its plain ASSD by ~0.4 mm; its shape by 0.04 mm)."""
    from threeddx.metrics import beam_aligned
    from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint

    img, geo, truth = example["image"], example["geometry"], example["truth"]
    sd = load_checkpoint(resolve_checkpoint(None))["placement_sd_mm"]
    x = (img - img.min()) / (img.max() - img.min())
    changed = {"gamma 0.8": x**0.8, "gamma 1.25": x**1.25, "8 bit": np.round(x * 255) / 255}[change]
    a = _reconstruct(tmp_path, released["on"], img, geo, name="a").world_meshes
    b = _reconstruct(tmp_path, released["on"], changed.astype(np.float32), geo, name="b").world_meshes
    for bone in BONES:
        (a_aligned, a_shift), (b_aligned, b_shift) = (beam_aligned(m[bone], truth[bone], geo) for m in (a, b))
        assert abs(_assd(a_aligned, truth[bone], geo) - _assd(b_aligned, truth[bone], geo)) < 0.3, bone
        assert abs(a_shift - b_shift) < 0.25 * sd[bone], bone


def test_a_fit_started_far_away_converges_or_is_rejected(example, released):
    """From the old start (the world's origin, 1.5 m from the hips), the pelvis fit either reaches the fit
    started from the view (within 1 mm at every vertex) or is rejected; it is never returned crumpled."""
    from threeddx.meshing.reconstruct import backproject_bone
    from threeddx.meshing.ssm import FitSettings, fit_ssm, judge_fit, training_ssm

    geo = example["geometry"]
    p = released["off"].infer(example["image"], geo)
    ap = p.geometry.in_ap_frame()
    pts = backproject_bone(p.masks[0], p.depth_front[0], p.depth_back[0], ap).both()
    model = training_ssm(["pelvis"])
    from threeddx.inference.hipjoint import fit_pelvis

    near = fit_pelvis(pts, p.geometry).transformed(geo.world_to_ap)  # started from the view, points only
    assert near.rejected == {} and near.outline_weight == 0.0
    outcomes = []
    for start in ([0.0, 0.0, 0.0], [1500.0, 0.0, 0.0], [0.0, -900.0, 1200.0], [-1060.0, 1060.0, 0.0]):
        t0 = pts.mean(0) - model.mean.mean(0) + start
        try:
            far = fit_ssm(model, {"pelvis": pts}, FitSettings(), init={"pelvis": (np.eye(3), t0)})
        except InputError:
            outcomes.append("refused")  # no answer, no crumpled mesh
            continue
        if judge_fit(model, far):
            outcomes.append("rejected")  # the bone falls back to its own surface
            continue
        assert np.abs(far.vertices["pelvis"] - near.vertices["pelvis"]).max() < 1.0
        outcomes.append("converged")
    assert outcomes[0] == "converged"  # from the points' centroid (measured: the three far starts are rejected)


def test_a_rejected_fit_falls_back_to_the_bones_own_surface(tmp_path, example, released, monkeypatch):
    """A bound no pelvis meets: the pelvis is meshed dual, summary.json says why, one warning line, and the
    femurs are not anchored at the rejected fit's joints."""
    from threeddx.meshing import ssm
    from threeddx.apps.predict import predict_file

    strict = ssm.FitBounds(max_mode_sd=0.01)  # no adult's pelvis is that close to the mean
    monkeypatch.setattr(ssm, "FitBounds", lambda: strict)
    np.save(tmp_path / "x.npy", example["image"])
    (tmp_path / "x.json").write_text(json.dumps(example["geometry"].to_dict()))
    lines = []
    s = predict_file(tmp_path / "x.npy", released["on"], tmp_path / "out", tmp_path / "x.json", report=False,
                     warn=lines.append)
    pelvis = s["bones"]["pelvis"]
    assert pelvis["mesh_method"] == "dual" and "mode weight" in pelvis["ssm_rejected"]
    assert s["ssm"]["pelvis"]["rejected"]["pelvis"] == pelvis["ssm_rejected"]
    assert (tmp_path / "out" / "pelvis.stl").is_file() and pelvis["watertight"]
    rejected = [line for line in lines if "shape-model fit rejected" in line]
    assert len(rejected) == 1 and rejected[0].startswith("pelvis:") and "not anchored" in rejected[0]
    for femur in ("femur_left", "femur_right"):
        assert "rejected" in s["checks"][femur]["hip_anchor"]["skipped"]


# ------------------------------------------------------------------ the full grid (slow)
GRID = {f"{d} mm along {'xyz'[a]}": rigid(tuple(d if i == a else 0.0 for i in range(3))) for d in (0.0, 300.0, 1500.0)
        for a in range(3)}
GRID.update({f"30 deg about {'xyz'[a]}": rigid(axis=tuple(float(i == a) for i in range(3)), degrees=30.0)
             for a in range(3)})


@pytest.mark.slow
@pytest.mark.parametrize("anchor", ["on", "off"])
@pytest.mark.parametrize("mesh", [None, "dual", "intervals", "poisson", "front", "ssm"])
@pytest.mark.parametrize("frame", list(GRID))
def test_every_frame_mesher_and_anchoring(tmp_path, example, released, frame, mesh, anchor):
    _check_frame(tmp_path, example, released[anchor], mesh, GRID[frame])

