"""The imaging chain against the laws it models (threeddx.simulator.physics)."""
import numpy as np
import pytest

from threeddx.errors import InputError
from threeddx.geometry import standard_ap_geometry
from threeddx.simulator.physics import (
    CHAIN_RANGES,
    PRESETS,
    Chain,
    chain_from,
    contrast,
    decompose_hu,
    detector_signal,
    hu_from_materials,
    mean_energy,
    radiograph,
    sample_chain,
    tables,
    transmission,
)

N = 64
GEOM = standard_ap_geometry((0.0, 0.0, 0.0), size=N)
YY, XX = np.mgrid[:N, :N]
BODY = (XX - 32) ** 2 / 26**2 + (YY - 32) ** 2 / 28**2 < 1
BONE = (XX - 32) ** 2 + (YY - 32) ** 2 < 8**2
SOFT_ONLY = BODY & ~BONE & ((XX - 32) ** 2 + (YY - 32) ** 2 < 14**2)
PHANTOM = {"soft": np.where(BODY, 20.0, 0.0).astype(np.float32), "bone": np.where(BONE, 2.0, 0.0).astype(np.float32)}
QUIET = dict(fluence=1e12, electronic_noise=0.0, gain_sd=0.0, blur_px=0.0)  # no noise: the physics alone


def test_tables_carry_their_provenance():
    t = tables()
    assert "SpekPy" in t.provenance["spectra"] and "xraydb" in t.provenance["mu_rho"]
    assert t.spectra.shape[-1] == len(t.energies_kev) and set(t.mu_rho) >= {"bone", "soft", "iron", "csi"}
    # cortical bone attenuates more than soft tissue per gram below ~100 keV (calcium's photo-effect)
    e60 = int(np.argmin(np.abs(t.energies_kev - 60)))
    assert t.mu_rho["bone"][e60] > t.mu_rho["soft"][e60]


@pytest.mark.parametrize("low,high", [(60, 80), (80, 100), (70, 120)])
def test_mean_energy_rises_with_kvp(low, high):
    assert mean_energy(high, al_mm=3.0) > mean_energy(low, al_mm=3.0)


def test_filtration_hardens_the_beam():
    assert mean_energy(80, al_mm=5.0) > mean_energy(80, al_mm=2.5) > mean_energy(80, al_mm=0.0)


@pytest.mark.parametrize("low,high", [(60, 80), (80, 100)])
def test_bone_soft_contrast_falls_as_kvp_rises(low, high):
    c = [contrast(detector_signal(PHANTOM, GEOM, Chain(kvp=k, spr=0.0, **QUIET)), BONE, SOFT_ONLY) for k in (low, high)]
    assert c[1] < c[0]


def test_transmission_is_the_spectrum_weighted_beer_lambert_sum():
    """The product form equals sum_E s(E) exp(-sum_m mu_m(E) A_m) / sum_E s(E), computed the plain way in float64,
    with a spectrum that changes along the rows (heel)."""
    from threeddx.simulator.physics import detector_weights, spectrum

    rng = np.random.default_rng(3)
    mats = {"soft": rng.uniform(0, 30, (5, 7)).astype(np.float32), "bone": rng.uniform(0, 3, (5, 7)).astype(np.float32),
            "metal": np.where(rng.random((5, 7)) < 0.2, 4.0, 0.0).astype(np.float32)}
    pos = np.linspace(-15, 15, 5)
    got = transmission(mats, 90.0, al_mm=2.5, cu_mm=0.1, positions_cm=pos)
    t = tables()
    s = spectrum(90.0, 14.0, pos, 2.5, 0.1) * detector_weights(0.5)  # (H, E)
    mu = {m: t.mu_rho["iron" if m == "metal" else m] for m in mats}
    tau = sum(mats[m].astype(np.float64)[..., None] * mu[m] for m in mats)  # (H, W, E)
    want = (np.exp(-tau) * s[:, None, :]).sum(-1) / s.sum(1)[:, None]
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("sigma", [0.5, 3.0, 11.9, 12.0, 25.0, 60.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gauss_is_scipys_gaussian_filter_with_nearest_edges(sigma, dtype):
    """Broad kernels go through FFTs (faster); the figures are scipy's, also where the kernel outgrows the image."""
    from scipy import ndimage

    from threeddx.simulator.physics import _gauss

    img = (np.random.default_rng(0).random((40, 56)) + np.linspace(0, 4, 56)).astype(dtype)
    got = _gauss(img, sigma)
    assert got.dtype == img.dtype and got.shape == img.shape
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, ndimage.gaussian_filter(img, sigma, mode="nearest"), rtol=tol, atol=tol)


def test_beam_hardening_makes_attenuation_sublinear():
    """Optical depth per g/cm^2 falls as the beam hardens through thicker tissue (polychromatic Beer-Lambert)."""
    thick = np.array([5.0, 10.0, 20.0, 30.0], np.float32)[None, :]
    tau = -np.log(transmission({"soft": thick}, 80.0))[0] / thick[0]
    assert np.all(np.diff(tau) < 0)
    assert transmission({"soft": np.zeros((1, 1), np.float32)}, 80.0)[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("low,high", [(0.2, 1.0), (1.0, 3.0)])
def test_more_scatter_lowers_contrast(low, high):
    c = [contrast(detector_signal(PHANTOM, GEOM, Chain(spr=s, **QUIET)), BONE, SOFT_ONLY) for s in (low, high)]
    assert c[1] < c[0]


def test_noise_variance_falls_as_dose_rises():
    flat = {"soft": np.full((N, N), 15.0, np.float32)}
    var = []
    for fluence in (1e3, 1e4, 1e5):
        two = [detector_signal(flat, GEOM, Chain(fluence=fluence, electronic_noise=0.0, gain_sd=0.0, blur_px=0.0,
                                                 spr=0.0, seed=s)) for s in (1, 2)]
        diff = (two[0] - two[1]) / two[0].mean()  # the noise alone: the same signal minus itself
        var.append(float(np.var(diff)) / 2)
    assert var[0] > var[1] > var[2]
    # quantum noise: variance inversely proportional to the dose
    assert var[0] / var[2] == pytest.approx(100.0, rel=0.2)


def test_heel_effect_dims_the_anode_side():
    flat = {"soft": np.full((N, N), 15.0, np.float32)}
    sig = detector_signal(flat, GEOM, Chain(heel_sign=1, spr=0.0, **QUIET))
    assert sig[:8].mean() < sig[-8:].mean()  # heel_sign +1: anode at the top
    flipped = detector_signal(flat, GEOM, Chain(heel_sign=-1, spr=0.0, **QUIET))
    assert flipped[:8].mean() > flipped[-8:].mean()


def test_same_seed_same_image_other_seed_other_noise():
    c = sample_chain(3)
    a, b = radiograph(PHANTOM, GEOM, c), radiograph(PHANTOM, GEOM, c)
    np.testing.assert_array_equal(a, b)
    other = radiograph(PHANTOM, GEOM, Chain(**{**c.to_dict(), "seed": c.seed + 1}))
    assert not np.array_equal(a, other)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_give_images_in_range(name):
    img = radiograph(PHANTOM, GEOM, name)
    assert img.shape == (N, N) and img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    assert img[BONE].mean() != pytest.approx(img[SOFT_ONLY].mean(), abs=1e-3)


def test_inverted_display_is_the_negative():
    np.testing.assert_allclose(radiograph(PHANTOM, GEOM, "inverted"), 1.0 - radiograph(PHANTOM, GEOM, "standard"), atol=1e-6)


def test_bone_is_bright_in_the_standard_chain():
    img = radiograph(PHANTOM, GEOM, "standard")
    assert img[BONE].mean() > img[SOFT_ONLY].mean() > img[~BODY].mean()


@pytest.mark.parametrize("seed", range(5))
def test_random_chains_stay_within_their_ranges(seed):
    c = sample_chain(seed)
    for k in ("kvp", "al_mm", "anode_angle_deg", "spr", "fluence", "blur_px", "gamma"):
        lo, hi = CHAIN_RANGES[k]
        assert lo <= getattr(c, k) <= hi, k
    assert c.bits in (8, 10, 12, 16) and c.response in ("log", "linear")


def test_chain_from_refuses_unknown_names_and_keys():
    with pytest.raises(InputError, match="unknown imaging chain"):
        chain_from("xyz")
    with pytest.raises(InputError, match="unknown imaging-chain setting"):
        chain_from({"kvpp": 80})
    assert chain_from({"kvp": 70, "collimation": [0.1, 0, 0, 0]}).collimation == (0.1, 0, 0, 0)


@pytest.mark.parametrize("hu", [-1000.0, -500.0, -100.0, 0.0, 40.0, 400.0, 1500.0, 2500.0, 20000.0, 30000.0])
def test_hu_decomposition_round_trips(hu):
    d = decompose_hu(np.array([hu], np.float32))
    assert all(v[0] >= 0 for v in d.values())
    assert hu_from_materials(d)[0] == pytest.approx(hu, abs=0.05)


def test_hu_decomposition_fast_path_is_the_reference_split():
    """decompose_hu's shortcut below HU_SOFT gives the reference split's numbers bit for bit, NaN included,
    across blocks and at every anchor."""
    from threeddx.simulator.physics import BLOCK_VOXELS, HU_BONE, HU_IRON, HU_SOFT, _decompose_block

    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100.0, 2500.0, 2 * BLOCK_VOXELS + 17).astype(np.float32)
    hu[:8] = [np.nan, HU_SOFT, np.nextafter(np.float32(HU_SOFT), np.float32(0)), HU_BONE, HU_IRON, 3e4, -1000, -2000]
    hu[BLOCK_VOXELS:BLOCK_VOXELS + 100] = -1000.0  # a stretch of air across a block boundary
    got, want = decompose_hu(hu.reshape(1, 1, -1)), _decompose_block(hu)
    for m, v in want.items():
        assert got[m].shape == (1, 1, hu.size) and got[m].dtype == np.float32
        np.testing.assert_array_equal(got[m].reshape(-1), v)


def test_collimation_and_markers_block_the_primary():
    closed = detector_signal(PHANTOM, GEOM, Chain(collimation=(0.25, 0, 0, 0), spr=0.0, **QUIET))
    open_ = detector_signal(PHANTOM, GEOM, Chain(spr=0.0, **QUIET))
    assert closed[:10].mean() < 0.05 * open_[:10].mean()
