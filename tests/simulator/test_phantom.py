"""The synthetic body (threeddx.simulator.phantom): seeded, within its documented ranges, overridable; its fast parts
equal the plain computations they replace."""
import numpy as np
import pytest
from scipy import ndimage

from threeddx.simulator.anatomy import load_shape
from threeddx.errors import InputError
from threeddx.simulator.phantom import (
    HU_METAL, OPTIONAL_PROBABILITIES, TISSUE_RANGES, _ellipse_inside, _linear_upsample, _or_ellipse, near_outside,
    sample_tissue, synthesize_ct,
)
from threeddx.simulator.physics import decompose_hu

SEEDS = range(200)


@pytest.fixture(scope="module")
def bodies():
    return [sample_tissue(s) for s in SEEDS]


@pytest.mark.parametrize("key", sorted(TISSUE_RANGES))
def test_every_parameter_stays_in_its_range(bodies, key):
    lo, hi = TISSUE_RANGES[key]
    v = np.array([b[key] for b in bodies])
    assert v.min() >= lo and v.max() <= hi


def test_habitus_spans_thin_to_obese(bodies):
    fat = np.array([b["fat_mm"] for b in bodies])
    assert (fat < 8).mean() > 0.1 and (fat > 45).mean() > 0.1  # log-uniform 3-80 mm


@pytest.mark.parametrize("key", sorted(OPTIONAL_PROBABILITIES))
def test_optional_things_appear_and_are_absent(bodies, key):
    v = np.array([b[key] for b in bodies])
    assert set(np.unique(v)) <= {0.0, 1.0} and 0 < v.mean() < 1


def test_panniculus_only_with_fat(bodies):
    assert all(not b["panniculus"] for b in bodies if b["fat_mm"] <= 35)


@pytest.fixture(scope="module")
def subject0():
    return load_shape(0)


def _ct(shape, seed, overrides=None):
    parts = {p: (shape.vertices[p], shape.faces[p]) for p in ("hemipelvis-left", "hemipelvis-right", "femur-l", "femur-r")}
    labels = {"hemipelvis-left": 77, "hemipelvis-right": 78, "femur-l": 75, "femur-r": 76}
    return synthesize_ct(parts, labels, {"pelvis": ("hemipelvis-left", "hemipelvis-right")}, shape.hip_centers, seed,
                         spacing=4.0, overrides=overrides)


def test_overrides_fix_the_body_and_unknown_keys_are_refused(subject0):
    ct = _ct(subject0, 1, {"fat_mm": 80.0, "zip": 1.0, "buttons": 1.0, "table": 1.0})
    assert ct.tissue["fat_mm"] == 80.0 and ct.tissue["zip"] == 1.0
    with pytest.raises(InputError, match="unknown body parameter"):
        _ct(subject0, 1, {"fat": 3.0})


def test_obese_body_holds_more_fat_than_a_thin_one(subject0):
    fat = {}
    for name, mm in (("thin", 3.0), ("obese", 80.0)):
        hu = _ct(subject0, 2, {"fat_mm": mm, "panniculus": 0.0}).ct.array
        fat[name] = int(((hu > -150) & (hu < -50)).sum())
    assert fat["obese"] > 3 * fat["thin"]


@pytest.mark.parametrize("sd", [5.0, 30.0])
def test_noise_is_white_with_the_bodys_sd_and_absent_from_air_and_metal(subject0, sd):
    """The same body without noise (sd 0) is the same CT less the noise: its spread is the sd asked for,
    it has no mean, and air and metal carry none."""
    fixed = {"zip": 1.0, "buttons": 1.0}
    quiet = _ct(subject0, 4, fixed | {"noise_sd": 0.0}).ct.array
    noise = _ct(subject0, 4, fixed | {"noise_sd": sd}).ct.array - quiet
    body = (quiet > -900) & (quiet < 3000)
    assert body.sum() > 10_000 and (quiet > 3000).any()
    assert abs(noise[body].std() / sd - 1.0) < 0.03 and abs(noise[body].mean()) < 0.05 * sd
    assert np.all(noise[~body] == 0.0)


def test_metal_on_the_body_is_metal_for_the_physics(subject0):
    ct = _ct(subject0, 3, {"zip": 1.0, "buttons": 1.0, "gonad_shield": 1.0})
    hu = ct.ct.array
    assert (hu > 3000).any() and hu.max() <= HU_METAL + 1
    metal = decompose_hu(hu)["metal"]
    assert metal.max() > 0 and ((metal > 0) == (hu > 1500)).mean() > 0.999
    bone_hu = hu[ct.labels.array > 0]
    assert bone_hu.max() < 2500  # bone stays bone: metal is only on the body


@pytest.mark.parametrize("distance_vox", [0.7, 1.0, 1.5, 2.3, 3.0, 4.6])
def test_near_outside_is_the_euclidean_distance_threshold(distance_vox):
    rng = np.random.default_rng(int(distance_vox * 10))
    inside = ndimage.gaussian_filter(rng.standard_normal((30, 26, 34)), 2.0) > 0.05
    inside[0] = inside[:, 0] = False  # open on two sides, touching the others: beyond the array is not outside
    expected = ndimage.distance_transform_edt(inside) <= distance_vox
    assert np.array_equal(near_outside(inside, distance_vox), expected)


@pytest.mark.parametrize("shape", [(17, 9, 30), (5, 40, 2)])
def test_linear_upsample_is_ndimage_zoom(shape):
    coarse = np.random.default_rng(1).standard_normal((4, 3, 2))
    expected = ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse.shape)], order=1)[
        : shape[0], : shape[1], : shape[2]]
    np.testing.assert_allclose(_linear_upsample(coarse, shape), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cx, cy, a, b", [(0.0, 0.0, 20.0, 12.0), (-49.0, 30.0, 15.0, 25.0), (80.0, 0.0, 5.0, 5.0)])
def test_an_ellipse_on_its_window_is_the_ellipse_on_the_slice(cx, cy, a, b):
    xs, ys = np.arange(-50.0, 50.0, 1.5), np.arange(-40.0, 40.0, 1.5)
    xx, yy = np.meshgrid(xs, ys, indexing="xy")
    mask = np.zeros(xx.shape, bool)
    _or_ellipse(mask, xs, ys, cx, cy, a, b)
    assert np.array_equal(mask, _ellipse_inside(xx, yy, cx, cy, a, b))
