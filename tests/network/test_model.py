"""The network: output shapes and ordering, the single-depth target, the CASI offset."""
import pytest
import torch

from threeddx.network.model import DualFaceNet, ModelConfig, apply_casi_offset, nearest_surface


def test_model_outputs_positive_ordered_depths():
    net = DualFaceNet(ModelConfig(bones=["a", "b"], width=8, levels=2))
    out = net(torch.rand(2, 1, 32, 32))
    assert out["mask_logits"].shape == out["depth_front"].shape == out["depth_back"].shape == (2, 2, 32, 32)
    assert torch.all(out["depth_front"] >= 500) and torch.all(out["depth_front"] <= 1000)
    assert torch.all(out["depth_back"] >= out["depth_front"])
    single = DualFaceNet(ModelConfig(bones=["a", "b"], width=8, levels=2, single_depth=True))(torch.rand(1, 1, 32, 32))
    assert single["depth"].shape == (1, 1, 32, 32) and single["mask_logits"].shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.rand(1, 1, 30, 32))


def test_nearest_surface_target():
    masks = torch.tensor([[[[1.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]]]])
    front = torch.tensor([[[[900.0, 0.0, 850.0]], [[880.0, 910.0, 0.0]]]])
    d, m = nearest_surface(masks, front)
    assert d.tolist() == [[[[880.0, 910.0, 850.0]]]] and m.tolist() == [[[[1.0, 1.0, 1.0]]]]


def test_casi_offset_moves_the_masked_mean_to_the_offset():
    pred = torch.tensor([[[[800.0, 820.0], [0.0, 5000.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    out = apply_casi_offset(pred, mask, 900.0)
    assert out[0, 0, 0].tolist() == [890.0, 910.0]  # mean 810 -> 900, shape kept



def test_four_faces_are_ordered_and_two_face_weights_still_fit():
    from threeddx.network.model import DualFaceNet, ModelConfig, face_masks

    torch.manual_seed(0)
    two = DualFaceNet(ModelConfig(width=8, levels=2))
    four = DualFaceNet(ModelConfig(width=8, levels=2, faces=4))
    out = four(torch.rand(2, 1, 32, 32))
    assert out["depth_inner"].shape == (2, 3, 2, 32, 32) and out["gap_logits"].shape == (2, 3, 1, 32, 32)
    d = torch.cat([out["depth_front"][:, :, None], out["depth_inner"], out["depth_back"][:, :, None]], 2)
    assert torch.all(d[:, :, 1:] >= d[:, :, :-1] - 1e-4)  # front <= inner faces <= back, by construction
    # the first channels are a two-face network's: its weights (an old checkpoint) fit them
    w2, w4 = two.state_dict(), four.state_dict()
    assert set(w2) == set(w4)
    assert all(w2[k].shape == w4[k].shape for k in w2 if not k.startswith("head.2"))
    assert w4["head.2.weight"].shape[0] == w2["head.2.weight"].shape[0] + 3 * 1 + 3 * 3
    m = torch.ones(2, 3, 32, 32)
    assert face_masks(m, out).shape == (2, 3 * 4, 32, 32)
    with pytest.raises(ValueError, match="even"):
        DualFaceNet(ModelConfig(width=8, levels=2, faces=3))


@pytest.mark.parametrize("name", ["small", "release-128", "context-256", "deep-256"])
def test_every_preset_builds_and_predicts_ordered_depths(name):
    from threeddx.network.model import PRESETS, DualFaceNet, model_config

    cfg = model_config({"preset": name}, bones=["pelvis", "femur_left", "femur_right"])
    for key, value in PRESETS[name][1].items():
        assert getattr(cfg, key) == value
    torch.manual_seed(0)
    out = DualFaceNet(cfg).eval()(torch.rand(1, 1, 64, 64))
    assert out["depth_front"].shape == (1, 3, 64, 64) and (out["depth_back"] >= out["depth_front"]).all()


def test_a_config_overrides_its_preset_and_an_unknown_preset_is_named():
    from threeddx.errors import InputError
    from threeddx.network.model import model_config
    from threeddx.training.train import load_config

    cfg = load_config(overrides={"model": {"preset": "context-256", "width": 16}})
    mc = model_config(cfg["model"], bones=["pelvis"])
    assert (mc.width, mc.levels, mc.coords, mc.attention, mc.faces) == (16, 5, True, 4, 2)
    assert model_config(load_config()["model"], bones=["pelvis"]).width == 32  # no preset: ModelConfig's defaults
    with pytest.raises(InputError, match="did you mean 'context-256'"):
        load_config(overrides={"model": {"preset": "context256"}})


def test_the_ray_channels_are_the_pixels_detector_positions():
    """``coords``: column and row position in [-1, 1] (pixel centres), the same for every image; a network without
    them keeps the released weights' layout (one input channel)."""
    from threeddx.network.model import DualFaceNet, ModelConfig, pixel_positions

    p = pixel_positions(torch.zeros(2, 1, 4, 8))
    assert p.shape == (2, 2, 4, 8)
    assert torch.allclose(p[0, 0, 0], (torch.arange(8) + 0.5) / 8 * 2 - 1) and torch.allclose(p[1, 1, :, 0], (torch.arange(4) + 0.5) / 4 * 2 - 1)
    assert DualFaceNet(ModelConfig(width=8, levels=2)).trunk.stem.in_channels == 1
    assert DualFaceNet(ModelConfig(width=8, levels=2, coords=True)).trunk.stem.in_channels == 3


def test_the_trunk_and_the_head_come_apart():
    """Another backbone under the same head: any module giving (B, channels, H, W) features; checkpoints written
    before the split (trunk keys without 'trunk.') load into the split network unchanged."""
    import torch.nn as nn

    from threeddx.network.model import DualFaceHead, DualFaceNet, ModelConfig, UNetTrunk, upgrade_state_dict

    cfg = ModelConfig(width=8, levels=2)

    class Plain(nn.Module):  # a two-convolution backbone
        out_channels, downsample_factor = 12, 1

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.SiLU(), nn.Conv2d(12, 12, 3, padding=1))

        def forward(self, x):
            return self.body(x)

    net = DualFaceNet(cfg, trunk=Plain())
    out = net(torch.rand(1, 1, 16, 16))
    assert isinstance(net.head, DualFaceHead) and out["depth_front"].shape == (1, 3, 16, 16)
    torch.manual_seed(0)
    split = DualFaceNet(cfg)
    assert isinstance(split.trunk, UNetTrunk)
    old = {k.replace("trunk.", "", 1): v for k, v in split.state_dict().items()}  # the names before the split
    assert "stem.weight" in old and "head.2.weight" in old
    fresh = DualFaceNet(cfg)
    fresh.load_state_dict(old)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(fresh.eval()(x)["depth_front"], split.eval()(x)["depth_front"])
    assert set(upgrade_state_dict(dict(old))) == set(split.state_dict())
