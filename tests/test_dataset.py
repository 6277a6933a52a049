"""The training dataset's imaging chain on the fly and its negatives (threeddx.dataset, threeddx.negatives)."""
import numpy as np
import pytest
import torch

from threeddx.dataset import SimulatedDataset
from threeddx.errors import InputError
from threeddx.negatives import noise_image


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
