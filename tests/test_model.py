"""The network: output shapes and ordering, the single-depth target, the CASI offset."""
import pytest
import torch

from threeddx.model import DualFaceNet, ModelConfig, apply_casi_offset, nearest_surface


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

