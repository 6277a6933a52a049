"""Scale-invariant losses against values computed by hand."""
import math

import pytest
import torch

from threeddx.network.losses import mask_loss, scale_invariant_loss

LN2 = math.log(2.0)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_single_map_by_hand():
    # g = [ln 2, ln 2]: mean g^2 = ln2^2, mean g = ln2, so L = 10 sqrt(ln2^2 (1 - 0.85))
    pred, target, mask = t([[[[2.0, 4.0]]]]), t([[[[1.0, 2.0]]]]), t([[[[1.0, 1.0]]]])
    assert float(scale_invariant_loss(pred, target, mask, "single")) == pytest.approx(10 * LN2 * math.sqrt(0.15), rel=1e-6)
    with pytest.raises(ValueError, match="one depth map"):
        scale_invariant_loss(torch.ones(1, 2, 1, 2), torch.ones(1, 2, 1, 2), torch.ones(1, 2, 1, 2), "single")


def two_maps():
    # map A: g = [ln2, ln2]; map B: g = [0, 0]
    pred = t([[[[2.0, 2.0]], [[1.0, 1.0]]]])
    target = t([[[[1.0, 1.0]], [[1.0, 1.0]]]])
    return pred, target, torch.ones_like(pred)


def test_dependent_pools_all_maps():
    # N = 4, sum g = 2 ln2, sum g^2 = 2 ln2^2: L = 10 ln2 sqrt(1/2 - 0.85/4)
    pred, target, mask = two_maps()
    assert float(scale_invariant_loss(pred, target, mask, "dependent")) == pytest.approx(10 * LN2 * math.sqrt(0.2875), rel=1e-6)


def test_independent_averages_per_map_losses():
    # map A: 10 ln2 sqrt(0.15); map B: 10 sqrt(eps) = 1e-3; average of the two
    pred, target, mask = two_maps()
    expected = 0.5 * (10 * LN2 * math.sqrt(0.15) + 10 * math.sqrt(1e-8))
    assert float(scale_invariant_loss(pred, target, mask, "independent")) == pytest.approx(expected, rel=1e-6)
    # a map without valid pixels is left out of the average
    mask[0, 1] = 0
    assert float(scale_invariant_loss(pred, target, mask, "independent")) == pytest.approx(10 * LN2 * math.sqrt(0.15), rel=1e-6)


def test_masked_out_pixels_and_empty_images_contribute_nothing():
    pred, target, mask = two_maps()
    ref = float(scale_invariant_loss(pred, target, mask, "dependent"))
    p2 = torch.cat([pred, torch.full_like(pred, 123.0)], dim=3)
    tg2 = torch.cat([target, torch.full_like(target, 7.0)], dim=3)
    m2 = torch.cat([mask, torch.zeros_like(mask)], dim=3)
    assert float(scale_invariant_loss(p2, tg2, m2, "dependent")) == pytest.approx(ref, rel=1e-12)
    # a second image with an empty mask does not change the batch mean
    pb, tb, mb = torch.cat([pred, pred * 5]), torch.cat([target, target]), torch.cat([mask, torch.zeros_like(mask)])
    for mode in ("dependent", "independent"):
        single = float(scale_invariant_loss(pred, target, mask, mode))
        assert float(scale_invariant_loss(pb, tb, mb, mode)) == pytest.approx(single, rel=1e-12)


@pytest.mark.parametrize("mode", ["single", "dependent", "independent"])
def test_all_empty_masks_give_zero_not_nan(mode):
    m = 1 if mode == "single" else 3
    pred = torch.rand(2, m, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = scale_invariant_loss(pred, torch.rand(2, m, 4, 4, dtype=torch.float64), torch.zeros(2, m, 4, 4), mode)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(torch.isfinite(pred.grad)) and float(pred.grad.abs().sum()) == 0.0


def test_scale_invariance_with_lambda_one():
    g = torch.Generator().manual_seed(0)
    pred = 700 + 200 * torch.rand(2, 4, 8, 8, generator=g, dtype=torch.float64)
    target = 700 + 200 * torch.rand(2, 4, 8, 8, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 4, 8, 8, generator=g) > 0.3).double()
    for mode in ("dependent", "independent"):
        a = float(scale_invariant_loss(pred, target, mask, mode, lam=1.0))
        b = float(scale_invariant_loss(pred * 1.37, target, mask, mode, lam=1.0))
        assert a == pytest.approx(b, rel=1e-6)
        assert a > 0.1


@pytest.mark.parametrize("mode", ["dependent", "independent"])
def test_casi_value_and_gradient_ignore_a_constant_offset_inside_the_masks(mode):
    g = torch.Generator().manual_seed(1)
    target = 750 + 150 * torch.rand(2, 4, 8, 8, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 4, 8, 8, generator=g) > 0.4).double()
    base = 750 + 150 * torch.rand(2, 4, 8, 8, generator=g, dtype=torch.float64)
    results = []
    for c in (0.0, 37.5):
        pred = (base + c * mask).requires_grad_(True)
        loss = scale_invariant_loss(pred, target, mask, mode, center_aligned=True)
        loss.backward()
        results.append((loss.item(), pred.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-9)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-7, atol=1e-12)
    # without CASI the offset does change the loss
    assert float(scale_invariant_loss(base, target, mask, mode)) != pytest.approx(
        float(scale_invariant_loss(base + 37.5 * mask, target, mask, mode)), rel=1e-3)


def test_casi_of_a_shifted_copy_is_zero():
    target = 800 + torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    loss = scale_invariant_loss(target - 25.0, target, torch.ones_like(target), "dependent", center_aligned=True)
    assert float(loss) == pytest.approx(10 * math.sqrt(1e-8), abs=1e-6)


def test_gradients_are_finite_even_at_a_perfect_prediction():
    target = 800 + torch.rand(1, 2, 4, 4, dtype=torch.float64)
    pred = target.clone().requires_grad_(True)
    scale_invariant_loss(pred, target, torch.ones_like(target), "independent").backward()
    assert torch.all(torch.isfinite(pred.grad))


def test_mask_loss_by_hand():
    # logits 0: BCE = ln 2; p = 0.5 everywhere, target = [1, 0]: dice = 1 - (2*0.5 + 1)/(1 + 1 + 1) = 1/3
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    assert float(mask_loss(logits, target)) == pytest.approx(LN2 + 1 / 3, rel=1e-6)
    perfect = torch.tensor([[[[20.0, -20.0]]]])
    assert float(mask_loss(perfect, target)) < 1e-6
