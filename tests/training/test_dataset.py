"""The training dataset's imaging chain on the fly and its negatives (threeddx.training.dataset, threeddx.simulator.negatives)."""
import numpy as np
import pytest
import torch

from threeddx.training.dataset import SimulatedDataset, mirror_partners
from threeddx.errors import InputError
from threeddx.simulator.negatives import noise_image


def test_random_chain_is_seeded_by_epoch_and_index(small_sim):
    ds = SimulatedDataset(small_sim, split=None, chain="random", seed=5)
    a, b = ds[0]["image"], ds[0]["image"]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0]["image"])
    assert not torch.equal(a, SimulatedDataset(small_sim, split=None, chain="random", seed=6)[0]["image"])


def test_fixed_chain_differs_from_the_stored_image_but_keeps_the_targets(small_sim):
    stored = SimulatedDataset(small_sim, split=None)[0]
    chained = SimulatedDataset(small_sim, split=None, chain="no-grid")[0]
    assert not torch.equal(stored["image"], chained["image"])
    for k in ("masks", "depth_front", "depth_back"):
        assert torch.equal(stored[k], chained[k])
    with pytest.raises(InputError, match="unknown imaging chain"):
        SimulatedDataset(small_sim, split=None, chain="nope")


def test_negatives_have_empty_targets(small_sim):
    ds = SimulatedDataset(small_sim, split=None, chain="random", negatives=1.0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["masks"].sum() == 0 and item["depth_front"].abs().sum() == 0 and item["depth_back"].abs().sum() == 0
        assert item["image"].shape == (1, 64, 64) and float(item["image"].std()) > 0


@pytest.mark.parametrize("seed", range(8))
def test_noise_images_are_in_range_and_not_constant(seed):
    img = noise_image((32, 32), np.random.default_rng(seed))
    assert img.min() >= 0 and img.max() <= 1 and img.std() > 0


@pytest.mark.parametrize("bones, partners", [
    (["pelvis", "femur_left", "femur_right"], [0, 2, 1]),
    (["femur_right", "sacrum", "femur_left"], [2, 1, 0]),
    (["pelvis"], [0]),
    (["pelvis", "femur_left"], None),  # the mirrored left femur would need a right femur channel
])
def test_mirror_partners(bones, partners):
    assert mirror_partners(bones) == partners


def test_a_mirrored_item_is_the_flipped_item_with_left_and_right_swapped(small_sim):
    plain = SimulatedDataset(small_sim, split=None)
    mirrored = SimulatedDataset(small_sim, split=None, mirror=1.0)
    a, b = plain[1], mirrored[1]
    assert not a["mirrored"] and b["mirrored"]
    assert torch.equal(b["image"], a["image"].flip(-1))
    for k in ("masks", "depth_front", "depth_back"):
        assert torch.equal(b[k], a[k][[0, 2, 1]].flip(-1))
    # the patient's left femur, mirrored, is where a right femur is imaged: on the other half of the image
    cols = torch.arange(a["masks"].shape[-1], dtype=torch.float32)
    left_a = (a["masks"][1].sum(0) * cols).sum() / a["masks"][1].sum()
    left_b = (b["masks"][1].sum(0) * cols).sum() / b["masks"][1].sum()
    assert (left_a - 31.5) * (left_b - 31.5) > 0  # each item's femur_left channel is on the same side


def test_mirroring_flips_the_materials_before_the_chain(small_sim):
    # with a fixed chain and the same draws, mirroring commutes with the chain except for what the chain
    # itself places (markers, text, heel effect): compare the targets only, and that the image differs
    plain = SimulatedDataset(small_sim, split=None, chain="standard")
    mirrored = SimulatedDataset(small_sim, split=None, chain="standard", mirror=1.0)
    a, b = plain[0], mirrored[0]
    assert torch.equal(b["depth_front"], a["depth_front"][[0, 2, 1]].flip(-1))
    assert float((b["image"] - a["image"].flip(-1)).abs().mean()) < 0.05


def test_mirroring_is_refused_where_it_would_not_be_exact(small_sim):
    with pytest.raises(InputError, match="partner"):
        SimulatedDataset(small_sim, split=None, bones=["pelvis", "femur_left"], mirror=0.5)
    with pytest.raises(InputError, match="probability"):
        SimulatedDataset(small_sim, split=None, mirror=1.5)


def test_no_mirroring_draws_nothing(small_sim):
    # mirror 0 keeps every earlier run's draws: the same chain images as before the option existed
    a = SimulatedDataset(small_sim, split=None, chain="random", seed=3)[2]["image"]
    b = SimulatedDataset(small_sim, split=None, chain="random", seed=3, mirror=0.0)[2]["image"]
    assert torch.equal(a, b)
