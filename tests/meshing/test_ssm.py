"""Shape-model completion: closest points, fitting to partial posed shapes, determinism, bad input."""
import json

import numpy as np
import pytest
import trimesh

from threeddx.simulator.anatomy import bone_meshes, load_shape
from threeddx.errors import InputError
from threeddx.geometry import rotation_matrix, standard_ap_geometry
from threeddx.metrics import surface_distances
from threeddx.meshing.ssm import BoneSSM, FitSettings, closest_points, complete_bones, fit_ssm

SUBJECTS = (0, 2, 3)  # a small model; subject 2 is one of its training shapes


def test_closest_points_match_trimesh():
    """Points in every Voronoi region of a sphere's triangles (outside, inside, near vertices and edges)."""
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=20.0)
    rng = np.random.default_rng(0)
    p = rng.normal(0, 15, (500, 3))
    face, bary, dist = closest_points(mesh.vertices, mesh.faces, p)
    ours = np.einsum("nj,njk->nk", bary, mesh.vertices[mesh.faces[face]])
    ref, ref_dist, _ = trimesh.proximity.closest_point(mesh, p)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-8)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert (bary >= -1e-9).all() and np.allclose(bary.sum(1), 1)


@pytest.fixture(scope="module")
def models():
    return {b: BoneSSM.fit(SUBJECTS, [b]) for b in ("pelvis", "femur_left")}


def _posed_partial(bone: str, keep: float = 0.7, outliers: int = 0, seed: int = 0):
    """Subject 2's bone, rotated 8 degrees and shifted, 30 % of its surface cut away by a plane."""
    gt = bone_meshes(load_shape(2), [bone])[bone]
    r, t = rotation_matrix((0.3, 1.0, 0.2), np.radians(8.0)), np.array([10.0, -15.0, 20.0])
    gt = trimesh.Trimesh(gt.vertices @ r.T + t, gt.faces, process=False)
    pts = trimesh.sample.sample_surface(gt, 8000, seed=seed)[0]
    # the femur loses its distal part (as outside the detector), the pelvis one side
    direction = np.array([0.0, 0.0, 1.0]) if bone.startswith("femur") else np.array([1.0, 0.2, 0.1])
    h = pts @ direction
    pts = pts[h >= np.quantile(h, 1 - keep)]
    if outliers:
        rng = np.random.default_rng(seed)
        pts = np.concatenate([pts, pts[rng.choice(len(pts), outliers)] + rng.normal(0, 25, (outliers, 3))])
    return gt, pts


@pytest.mark.parametrize("bone", ["pelvis", "femur_left"])
def test_fit_recovers_a_training_shape_from_70_percent_of_its_surface(models, bone):
    gt, pts = _posed_partial(bone, outliers=100)  # and ~2 % gross outliers
    fit = fit_ssm(models[bone], {bone: pts}, FitSettings(reg=0.01))
    d = surface_distances(fit.mesh(bone), gt)
    assert d["assd"] < 0.5, d
    assert fit.iterations < 30


@pytest.mark.parametrize("bone,names", [("pelvis", ("hjc_left", "hjc_right")), ("femur_left", ("head_left",))])
def test_a_fit_carries_the_hip_joint_landmarks_to_the_world(models, bone, names, tmp_path):
    """Subject 2's joints (a training shape of this model), rotated and shifted with its bone, come back from the fit."""
    gt, pts = _posed_partial(bone)
    r, t = rotation_matrix((0.3, 1.0, 0.2), np.radians(8.0)), np.array([10.0, -15.0, 20.0])  # _posed_partial's pose
    true = load_shape(2).hip_centers @ r.T + t
    fit = fit_ssm(models[bone], {bone: pts}, FitSettings(reg=0.01))
    for name in names:
        np.testing.assert_allclose(fit.landmarks[name], true[0 if name.endswith("left") else 1], atol=1.0)
    models[bone].save(tmp_path / "m.npz", dtype=np.float32)
    back = BoneSSM.load(tmp_path / "m.npz")
    assert back.landmark_bones == models[bone].landmark_bones
    for name, p in back.landmarks().items():
        np.testing.assert_allclose(p, models[bone].landmarks()[name], atol=1e-3)


def test_fit_is_deterministic_for_a_seed(models):
    gt, pts = _posed_partial("femur_left")
    st = FitSettings(max_points=1000, seed=3)
    a = fit_ssm(models["femur_left"], {"femur_left": pts}, st)
    b = fit_ssm(models["femur_left"], {"femur_left": pts}, st)
    assert np.array_equal(a.z, b.z) and np.array_equal(a.vertices["femur_left"], b.vertices["femur_left"])
    json.dumps(a.to_dict())  # the summary is JSON-able


def test_degenerate_input_is_a_clear_error(models):
    m = models["femur_left"]
    line = np.linspace(0, 1, 200)[:, None] * np.array([[1.0, 2.0, 3.0]])
    cases = {
        "too few points": np.random.default_rng(0).normal(size=(10, 3)),
        "degenerate": line,
        "NaN": np.full((100, 3), np.nan),
        "(N, 3)": np.zeros((100, 2)),
    }
    for what, pts in cases.items():
        with pytest.raises(InputError, match=what.replace("(", r"\(").replace(")", r"\)")):
            fit_ssm(m, {"femur_left": pts})
    with pytest.raises(InputError, match="no points"):
        fit_ssm(m, {"pelvis": line})


def test_coupled_and_per_bone_fits():
    shape = load_shape(2)
    pts = {b: trimesh.sample.sample_surface(m, 3000, seed=1)[0]
           for b, m in bone_meshes(shape, ["pelvis", "femur_left", "femur_right"]).items()}
    st = FitSettings(subjects=list(SUBJECTS), reg=0.01, max_points=1500)
    geo = standard_ap_geometry()  # the anatomy frame is the AP preset's world
    per = complete_bones(pts, geo, st)
    both = complete_bones(pts, geo, FitSettings(**{**st.__dict__, "coupled": True}))
    assert len({id(f) for f in per.values()}) == 3 and len({id(f) for f in both.values()}) == 1
    for b in pts:
        assert per[b].rms_mm[b] < 0.5 and both[b].rms_mm[b] < 0.5, (b, per[b].rms_mm, both[b].rms_mm)
    with pytest.raises(InputError, match="no shape model"):
        complete_bones({"vertebra": pts["pelvis"]}, geo)


class _GroundTruthPredictor:
    """Stands in for a network: returns a simulated sample's own masks and depths."""

    def __init__(self, sample):
        from threeddx.geometry import XrayGeometry

        with np.load(sample) as z:
            self.geometry = XrayGeometry.from_json(str(z["geometry"]))
            self.bones = [str(b) for b in z["bones"]]
            self.gt = {"masks": z["masks"] > 0, "depth_front": z["depth_front"], "depth_back": z["depth_back"]}
        # a ground-truth mask is a certain one
        self.gt["checks"] = {b: {"confidence": 1.0, "mask_px": int(m.sum()), "found": bool(m.sum())}
                             for b, m in zip(self.bones, self.gt["masks"])}
        self.size = self.geometry.detector_shape[0]
        self.checkpoint = "ground truth"
        self.ck = {}
        self.hip_anchor = None  # the truth's femurs are at their joints already
        self.mesh_method = "dual"  # a model that carries no meshing of its own
        self.single_depth = False

    def __call__(self, image):
        return self.gt

    def view_of(self, image, geometry):
        from threeddx.inference.predictor import Predictor

        return Predictor.view_of(self, image, geometry)

    def infer(self, image, geometry, marker=None):
        from threeddx.inference.predictor import Predictor

        return Predictor.infer(self, image, geometry)

    def meshing(self, method=None):
        from threeddx.inference.predictor import Predictor

        return Predictor.meshing(self, method)


def test_predict_and_evaluate_with_the_shape_model(small_sim, tmp_path):
    from threeddx.training.dataset import read_manifest
    from threeddx.evaluation.evaluate import evaluate
    from threeddx.apps.predict import predict_file

    sample = small_sim / read_manifest(small_sim)[0]["render"]
    pred = _GroundTruthPredictor(sample)
    st = FitSettings(subjects=list(SUBJECTS), max_points=1000)
    s = predict_file(sample, pred, tmp_path / "clipped", mesh_method="ssm", ssm_settings=st, report=False)
    assert s["mesh_method"] == "ssm" and not s["missing"]
    assert set(s["ssm"]) == {"pelvis", "femur_left", "femur_right"} and len(s["ssm"]["pelvis"]["mode_weights_sd"]) == 2
    full = predict_file(sample, pred, tmp_path / "whole", mesh_method="ssm", ssm_settings=st,
                                 complete_femur=True, report=False)
    for femur in ("femur_left", "femur_right"):
        clipped = trimesh.load(tmp_path / "clipped" / f"{femur}.stl")
        whole = trimesh.load(tmp_path / "whole" / f"{femur}.ply", process=False)
        assert s["bones"][femur].get("outside_field_of_view_area", 0) > 0.3, s["bones"][femur]  # the distal femur is outside the detector
        assert len(whole.faces) == 6642 and len(clipped.faces) < len(whole.faces)
        assert "inferred by the shape model" in full["bones"][femur]["inferred"]
        assert "inferred" not in s["bones"][femur]
    same = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    assert same(full["ssm"]["pelvis"]) == same(s["ssm"]["pelvis"])  # same points, same seed: the same fit
    with pytest.raises(InputError, match="complete-femur needs --mesh ssm"):
        predict_file(sample, pred, tmp_path / "bad", complete_femur=True, report=False)
    r = evaluate(small_sim, tmp_path / "eval", split="val", oracle=True, mesh_method="ssm", limit=1, progress=False,
                 ssm_settings=st)
    for bone in ("pelvis", "femur_left", "femur_right"):
        assert r["bones"][bone]["n"] == 1 and 0 < r["bones"][bone]["assd_mean"] < 5.0


def test_similarity_pose_recovers_a_scaled_shape(models):
    gt = bone_meshes(load_shape(2), ["femur_left"])["femur_left"]
    c = gt.vertices.mean(0)
    gt = trimesh.Trimesh((gt.vertices - c) * 1.08 + c + [5.0, 0.0, -5.0], gt.faces, process=False)
    pts = trimesh.sample.sample_surface(gt, 6000, seed=0)[0]
    rigid = fit_ssm(models["femur_left"], {"femur_left": pts}, FitSettings(reg=0.01))
    sim = fit_ssm(models["femur_left"], {"femur_left": pts}, FitSettings(reg=0.01, scale=True))
    assert abs(sim.scale["femur_left"] - 1.08) < 0.005 and rigid.scale["femur_left"] == 1.0
    assert surface_distances(sim.mesh("femur_left"), gt)["assd"] < 0.1 < surface_distances(rigid.mesh("femur_left"), gt)["assd"]


@pytest.mark.parametrize("bone", ["femur_left", "femur_right"])
def test_the_shipped_femur_models_are_the_training_split_ones(bone):
    """predict's femur fits read the shipped model (no LLP26 shape built, nothing of the simulator imported:
    tests/test_imports.py); it is the training split's model of that femur, stored as float32."""
    from threeddx.meshing.ssm import SHIPPED_MODELS, _cached_ssm, training_ssm
    from threeddx.simulator.anatomy import subject_split

    shipped = training_ssm([bone])
    assert SHIPPED_MODELS[(bone,)].is_file() and shipped.bones == (bone,)
    train = sorted(k for k, s in subject_split().items() if s == "train")
    assert list(shipped.subjects) == train and set(shipped.landmark_bones) == {f"head_{bone.split('_')[1]}"}
    built = _cached_ssm([bone], train)
    np.testing.assert_allclose(shipped.mean, built.mean, atol=1e-3)
    np.testing.assert_allclose(shipped.std, built.std, rtol=1e-5)


def _sphere_outline(geometry, radius: float, centre, n: int = 720):
    """The exact outline (n, 2) (row, col px) of a sphere in ``geometry``'s image: the circle the cone of rays
    tangent to it cuts from the detector (a sphere centred on the central ray)."""
    d = float(np.linalg.norm(np.asarray(centre) - geometry.source_position_world))
    r_px = geometry.sdd * radius / np.sqrt(d**2 - radius**2) / geometry.pixel_spacing[0]
    row, col, _ = geometry.project(np.asarray(centre, float)[None])
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([row[0] + r_px * np.sin(phi), col[0] + r_px * np.cos(phi)], 1), r_px


def test_outline_points_of_a_disc_lie_on_its_circle_and_not_on_the_border():
    """The level set of a smooth disc's probability is its circle (sub-pixel); a disc cut by the image's edge
    has no outline there."""
    from threeddx.meshing.ssm import outline_points

    rr, cc = np.mgrid[:64, :64].astype(float)
    r = np.hypot(rr - 30.3, cc - 33.7)
    prob = 1 / (1 + np.exp((r - 15.0) / 0.8))  # 0.5 exactly at radius 15
    pts = outline_points(prob)
    np.testing.assert_allclose(np.hypot(pts[:, 0] - 30.3, pts[:, 1] - 33.7), 15.0, atol=0.02)
    cut = outline_points(1 / (1 + np.exp((np.hypot(rr - 5.0, cc - 33.0) - 15.0) / 0.8)))
    assert len(cut) > 20 and (cut[:, 0] > 1.5).all()  # the part beyond row 0 is not an edge


def test_outline_rows_of_a_sphere_are_its_distances_and_their_derivatives():
    """The outline term (ssm._outline_rows) on an icosphere against its exact circle: residuals near zero in place,
    the lateral offset in mm when moved sideways, and the translation columns of the Jacobian as the residuals'
    change."""
    from threeddx.meshing.ssm import Outline, _outline_rows, _unique_edges

    geometry = standard_ap_geometry(size=256)
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=25.0)
    verts = np.asarray(sphere.vertices)
    faces, edges = np.asarray(sphere.faces), _unique_edges(np.asarray(sphere.faces))
    circle, r_px = _sphere_outline(geometry, 25.0, (0.0, 0.0, 0.0))
    outline = Outline("ball", circle, geometry, 1.0)
    none = np.zeros((len(verts), 3, 0))

    def rows(t):
        return _outline_rows(verts + t, faces, edges, outline, np.asarray(t, float), none, np.eye(3), 1.0,
                             np.asarray(t, float), False)

    r0, jac, _ = rows(np.zeros(3))
    assert np.sqrt(np.mean(r0**2)) < 0.05  # mm: the mesh's facets only
    step = np.array([0.5, 0.0, 0.0])  # 0.5 mm towards the patient's left: the image's columns
    r1, _, _ = rows(step)
    np.testing.assert_allclose(r1 - r0, jac[:, 3:6] @ step, atol=0.03)
    # a sideways move shows across the outline by its cosine with the outline's normal, at the ball's scale
    phi = np.arctan2(circle[:, 0] - circle[:, 0].mean(), circle[:, 1] - circle[:, 1].mean())
    np.testing.assert_allclose(r1 - r0, 0.5 * np.cos(phi) * 820.0 / np.sqrt(820.0**2 - 25.0**2), atol=0.03)
