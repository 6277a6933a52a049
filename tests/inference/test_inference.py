"""The one inference path: the model's view of an image, resampling, and a Prediction from an untrained model."""
import numpy as np
import pytest
import torch

from threeddx.network.checkpoint import CKPT_FORMAT, save_checkpoint
from threeddx.geometry import model_view, standard_ap_geometry
from threeddx.inference.predictor import Predictor, view_coverage, view_image
from threeddx.network.model import DualFaceNet, ModelConfig


def test_the_identity_view_returns_the_image_exactly():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    out = view_image(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (32, 32))
    np.testing.assert_array_equal(out, img)


def test_a_4x_smaller_view_averages_whole_blocks():
    """Each output pixel of a 4x downsampling is the mean of its 4 x 4 block (area sampling, no aliasing)."""
    img = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    out = view_image(img, np.array([[4.0, 0, 0], [0, 4.0, 0]]), (16, 16))
    np.testing.assert_allclose(out, img.reshape(16, 4, 16, 4).mean(axis=(1, 3)), atol=1e-6)


def test_view_arrays_with_leading_axes_and_nearest():
    masks = np.zeros((3, 20, 20), np.float32)
    masks[1, 5:10, 5:10] = 1
    out = view_image(masks, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (20, 20), nearest=True)
    np.testing.assert_array_equal(out, masks)


@pytest.mark.parametrize("detector_mm,cover", [(430.0, 1.0), (300.0, (300 / 430) ** 2)], ids=["same", "smaller"])
def test_coverage_of_the_trained_field(detector_mm, cover):
    model = standard_ap_geometry(size=64)
    img = standard_ap_geometry(size=64, detector_mm=detector_mm)
    v = model_view(img, model, 820.0, 820.0)
    assert view_coverage(v, img.detector_shape) == pytest.approx(cover, abs=0.04)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained network saved through the checkpoint module (no training needed)."""
    torch.manual_seed(0)
    cfg = ModelConfig(width=8, levels=2)
    geo = standard_ap_geometry((0.0, 0.0, 30.0), size=32)
    path = tmp_path_factory.mktemp("ck") / "untrained.pt"
    save_checkpoint({"format": CKPT_FORMAT, "model": DualFaceNet(cfg).state_dict(), "model_config": cfg.to_dict(),
                     "bones": cfg.bones, "geometry": geo.to_json(), "casi_offset_mm": None, "config": {}}, path)
    return Predictor(path)


def test_a_prediction_at_the_training_geometry(untrained):
    img = np.random.default_rng(2).random((32, 32)).astype(np.float32)
    p = untrained.infer(img, untrained.geometry)
    assert p.view.is_identity and p.notes == []
    assert p.masks.shape == p.depth_front.shape == p.depth_back.shape == (3, 32, 32)
    assert np.all(p.depth_back >= p.depth_front) and set(p.checks) == set(p.bones)
    assert p.geometry.sdd == untrained.geometry.sdd


def test_a_prediction_at_another_distance_moves_the_depths(untrained, monkeypatch):
    """A network that answers 800 mm everywhere, for an image declared 30 mm further: 830 mm along each ray's z."""
    def constant(self, image01):
        full = np.ones((3, 32, 32), bool)
        return {"masks": full, "probabilities": full.astype(np.float32), "depth_front": np.full((3, 32, 32), 800.0),
                "depth_back": np.full((3, 32, 32), 820.0), "checks": {b: {"found": True} for b in self.bones}}

    monkeypatch.setattr(Predictor, "__call__", constant)
    img = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    far = untrained.infer(img, standard_ap_geometry((0.0, 0.0, 30.0), size=32, source_to_isocenter=850.0))
    assert far.view.shift_mm == pytest.approx(30.0) and far.geometry.sdd == pytest.approx(1000.0 * 850 / 820)
    model_rays = untrained.geometry.ray_directions_source()
    z = 800.0 * model_rays[..., 2] + 30.0  # the model's ray, moved 30 mm along the beam
    np.testing.assert_allclose(far.depth_front[0], z / far.geometry.ray_directions_source()[..., 2], rtol=1e-6)
    np.testing.assert_allclose(far.depth_front[0, 16, 16], 830.0, atol=0.5)


def test_weights_of_another_architecture_are_refused_in_one_line(tmp_path):
    from threeddx.errors import InputError

    cfg = ModelConfig(width=8, levels=2)
    other = DualFaceNet(ModelConfig(width=16, levels=2)).state_dict()
    path = tmp_path / "other.pt"
    save_checkpoint({"format": CKPT_FORMAT, "model": other, "model_config": cfg.to_dict(), "bones": cfg.bones,
                     "geometry": standard_ap_geometry(size=32).to_json(), "casi_offset_mm": None, "config": {}}, path)
    with pytest.raises(InputError, match="weights of another architecture: .*shape differs"):
        Predictor(path)


def test_the_mirrored_view_makes_the_prediction_mirror_equivariant(untrained):
    """With the mirrored view averaged in, a flipped image gives exactly the flipped prediction, left and right
    swapped (P(Mx) = M P(x) by construction); the untrained network alone is not equivariant."""
    img = np.random.default_rng(4).random((32, 32)).astype(np.float32)
    swap = [0, 2, 1]
    with_mirror = Predictor(untrained.checkpoint, mirror=True, hip_anchor=None)
    assert with_mirror.mirror_partners == swap and untrained.mirror_partners is None  # the checkpoint says no
    a, b = with_mirror(img), with_mirror(img[:, ::-1].copy())
    for k in ("probabilities", "depth_front", "depth_back"):
        np.testing.assert_allclose(b[k], a[k][swap][..., ::-1], rtol=1e-5, atol=1e-4)
    c, d = untrained(img), untrained(img[:, ::-1].copy())
    assert not np.allclose(d["probabilities"], c["probabilities"][swap][..., ::-1], atol=1e-3)
    assert np.all(a["depth_back"] >= a["depth_front"])


def test_a_mirrored_prediction_mirrored_again_is_itself(untrained):
    img = np.random.default_rng(5).random((32, 32)).astype(np.float32)
    p = Predictor(untrained.checkpoint, hip_anchor=None).infer(img, untrained.geometry)
    m = p.mirrored()
    np.testing.assert_array_equal(m.depth_front[1], p.depth_front[2][:, ::-1])  # the left femur is the right, flipped
    assert m.checks["femur_left"] is p.checks["femur_right"]
    twice = m.mirrored()
    for k in ("masks", "probabilities", "depth_front", "depth_back", "image"):
        np.testing.assert_array_equal(getattr(twice, k), getattr(p, k))


@pytest.mark.parametrize("name,mesh,want", [
    ("untrained", None, "dual"),
    ("untrained", {"pelvis": "ssm"}, {"pelvis": "ssm", "femur_left": "dual", "femur_right": "dual"}),
    ("released dualface", None, {"pelvis": "ssm", "femur_left": "dual", "femur_right": "dual"}),
    ("released single", None, "front"),
])
def test_a_model_meshes_as_its_checkpoint_says(untrained, name, mesh, want):
    """The mesher a model uses unless told otherwise: the checkpoint's ``mesh`` per bone, dual (front for a
    single-depth model) for the rest; the released dual-face model's pelvis is its fitted shape model."""
    if name == "untrained":
        pred = Predictor(untrained.checkpoint)
        pred.ck.mesh = mesh
    else:
        pred = Predictor(name.split()[1])
    assert pred.mesh_method == want


@pytest.mark.parametrize("model,asked,want", [
    ("single", "dual", "front"), ("single", "ssm", "ssm"), ("single", None, "front"),
    ("dualface", "dual", "dual"), ("dualface", None, {"pelvis": "ssm", "femur_left": "dual", "femur_right": "dual"}),
])
def test_asked_meshing_against_what_the_model_has(model, asked, want):
    """``--mesh``: a single-depth model (no back face) meshes its front faces unless a shape model is fitted."""
    assert Predictor(model).meshing(asked) == want
