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


def test_a_ball_shows_where_it_is_put_and_changes_no_target(small_sim, monkeypatch):
    """marker=1: every item shows a steel ball (a bright disc where the ball projects); masks and depths are
    those of the item without it."""
    import threeddx.inference.marker as marker

    centre = np.array([-60.0, 40.0, 700.0])
    monkeypatch.setattr(marker, "random_marker", lambda rng, hips: (centre, 25.0, "test"))
    plain = SimulatedDataset(small_sim, split=None, chain="standard")
    balled = SimulatedDataset(small_sim, split=None, chain="standard", marker=1.0)
    a, b = plain[0], balled[0]
    for k in ("masks", "depth_front", "depth_back"):
        assert torch.equal(a[k], b[k])
    geo = marker.XrayGeometry.from_json(a["geometry"])
    row, col = marker._project_source(geo, centre)
    radius_px = geo.sdd * 12.5 / np.sqrt(centre @ centre) / geo.pixel_spacing[0]
    diff = (b["image"] - a["image"])[0].numpy()
    rr, cc = np.indices(diff.shape)
    inside = np.hypot(rr - row, cc - col) < radius_px - 1
    outside = np.hypot(rr - row, cc - col) > radius_px + 2
    # steel stops more than any bone: the window's top (1) where the ball is, which the bone behind was not
    assert b["image"][0].numpy()[inside].min() > 0.99 > a["image"][0].numpy()[inside].mean()
    # elsewhere the same picture; only its grey levels may move (the window's percentiles see the steel too)
    assert np.corrcoef(a["image"][0].numpy()[outside], b["image"][0].numpy()[outside])[0, 1] > 0.98


def test_balls_are_put_where_practice_puts_them():
    from threeddx.inference.marker import PLACES, PRACTICE_DIAMETERS_MM, random_marker

    rng = np.random.default_rng(0)
    hips = np.array([5.0, -3.0, 820.0])
    draws = [random_marker(rng, hips) for _ in range(4000)]
    for name, (share, xr, yr, zr) in PLACES.items():
        mine = [(c - hips, d) for c, d, n in draws if n == name]
        assert len(mine) / len(draws) == pytest.approx(share, abs=0.03)
        off = np.array([c for c, _ in mine])
        d = np.array([d for _, d in mine])
        assert np.all((PRACTICE_DIAMETERS_MM[0] <= d) & (d <= PRACTICE_DIAMETERS_MM[1]))
        assert np.all((xr[0] <= np.abs(off[:, 0])) & (np.abs(off[:, 0]) <= xr[1])) or xr[0] < 0
        assert np.all((yr[0] <= off[:, 1]) & (off[:, 1] <= yr[1]))
        assert np.mean(off[:, 0] > 0) == pytest.approx(0.5, abs=0.1)  # both sides
    table = np.array([c[2] - hips[2] for c, _, n in draws if n == "on the table"])
    assert table.min() > 50  # on the table: behind the hips, seen from the source


def test_balls_need_a_chain_and_none_draw_nothing(small_sim):
    with pytest.raises(InputError, match="marker needs the imaging chain"):
        SimulatedDataset(small_sim, split=None, marker=0.3)
    with pytest.raises(InputError, match="probability"):
        SimulatedDataset(small_sim, split=None, chain="random", marker=2.0)
    a = SimulatedDataset(small_sim, split=None, chain="random", seed=3)[2]["image"]
    b = SimulatedDataset(small_sim, split=None, chain="random", seed=3, marker=0.0)[2]["image"]
    assert torch.equal(a, b)
