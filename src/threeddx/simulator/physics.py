"""X-ray physics and the imaging chain: material line integrals -> a detector image.

A simulated sample stores, per pixel, the **areal density** (g/cm^2) of each
material along the pixel's ray (``materials``: bone, soft tissue, metal; air is
zero; :func:`decompose_hu` says how a CT's HU are split). :func:`radiograph`
turns them into the image a real system would show, through a chain whose every
knob is a field of :class:`Chain` (ranges and sources: docs/data.md):

1. **Source**: a tungsten tube spectrum at ``kvp`` with ``anode_angle_deg``
   (SpekPy, tabulated by ``scripts/make_xray_tables.py``), filtered by
   ``al_mm`` aluminium and ``cu_mm`` copper. The spectrum changes across the
   field along the anode-cathode axis (image rows; ``heel_sign`` says which way
   the cathode points): that is the heel effect, taken from SpekPy's angular
   model.
2. **Patient**: energy-dependent attenuation ``exp(-sum_m mu_m(E) A_m)`` with
   xraydb's mass attenuation coefficients (ICRU-44 cortical bone and soft
   tissue, iron for metal), so bone/soft contrast falls and the beam hardens
   as the kVp rises.
3. **Detector**: an energy-integrating CsI flat panel (``csi_mm``: each photon
   counts its energy times its absorption probability). Scatter is a broad
   Gaussian kernel of the primary weighted by its optical depth, scaled to a
   scatter-to-primary ratio ``spr`` over the body (about 0.2 with an
   anti-scatter grid, up to about 3 without). Quantum noise at ``fluence``
   (photons per mm^2 reaching the detector behind the body, which automatic
   exposure control sets; it is the dose), counted at this pixel size;
   electronic noise; blur; a residual gain non-uniformity after flat-fielding.
4. **Processing** (what the vendor's software does): ``log`` or ``linear``
   response, dynamic range compression, multi-scale unsharp-mask edge
   enhancement, windowing on the
   anatomy (the direct exposure saturates) with clipping, a gamma and an
   S-shaped LUT, bit depth, JPEG, an inverted display.
5. **Things in the picture**: collimator edges (outside them only leakage
   and scatter reach the detector), lead side markers (opaque letters), and
   burned-in text.

The output is an image in [0, 1], bone bright unless ``invert``; the network's
own per-image normalisation (:func:`threeddx.network.preprocess.normalise_radiograph`)
follows as for any input. :func:`sample_chain` draws a random chain (training:
seeded by seed, epoch and index); :data:`PRESETS` are fixed chains for
evaluation sets, from ``standard`` to each family's extremes.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Mapping

import numpy as np
from scipy import ndimage, signal

from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry

#: Materials of a sample's ``materials`` array, in this order (g/cm^2 along each ray).
MATERIALS = ("bone", "soft", "metal")
#: A calibration ball added to a sample (:func:`threeddx.inference.marker.with_marker`): ``BALL`` the steel
#: (g/cm^2) along the rays of the pixel's part inside its outline, ``BALL_SHARE`` that part (0-1). A pixel lets
#: through ``(1 - share) + share * exp(-mu(E) ball)`` of what reaches it at each energy: a detector pixel averages
#: the intensity over its area, and a pixel half inside an opaque ball passes half the X-rays, where any single
#: line integral for the whole pixel would pass the wrong share at all but one energy.
BALL, BALL_SHARE = "ball", "ball_share"
#: A calibration ball drawn exactly (:func:`threeddx.inference.marker.with_marker`'s ``exact``): a
#: :class:`BallTransmission`, which replaces :data:`BALL` and :data:`BALL_SHARE`.
BALL_EXACT = "ball_exact"


@dataclass(frozen=True)
class BallTransmission:
    """A ball's transmission per pixel and energy: ``pixels`` (n,) the flat indices of the pixels it covers in
    part or whole, ``t`` (n, E) the share of each one's X-rays it lets through at each of :func:`tables`'
    energies (the mean over the pixel's area: what a detector pixel integrates)."""

    pixels: np.ndarray
    t: np.ndarray

# ------------------------------------------------------------ HU -> materials
#: Two- and three-material decomposition of HU (mass densities in g/cm^3):
#: soft tissue (ICRU-44, 1.06 g/cm^3) is at HU_SOFT; cortical bone (ICRU-44,
#: 1.92 g/cm^3) at HU_BONE; iron (7.874 g/cm^3) at HU_IRON. Below HU_SOFT a voxel
#: is soft tissue of lower density (fat, lung, air: density scales with 1 + HU/1000);
#: between two anchors it is a mixture by volume. Every HU maps to densities whose
#: weighted sum reproduces ``1 + HU/1000`` exactly (:func:`hu_from_materials`), so the
#: monochromatic line integral of :mod:`threeddx.simulator.render` is a linear combination of
#: the material integrals.
HU_SOFT, RHO_SOFT = 40.0, 1.06
HU_BONE, RHO_BONE = 1500.0, 1.92
HU_IRON, RHO_IRON = 20000.0, 7.874


#: Voxels per block of :func:`decompose_hu`: a block's temporaries stay in the CPU's cache instead of
#: streaming full-volume temporaries through memory (same numbers: it is element-wise); the simulator's
#: speed before and after is benchmarks/simulate.py's table (docs/benchmarks.md).
BLOCK_VOXELS = 1 << 16


def decompose_hu(hu: np.ndarray) -> dict[str, np.ndarray]:
    """HU -> mass densities (g/cm^3) of bone, soft tissue and metal (float32 arrays like ``hu``).

    Computed block by block (:data:`BLOCK_VOXELS`). Most voxels of a CT are below ``HU_SOFT`` (air, fat,
    soft tissue): there bone and metal are 0 and soft tissue is the density-scaled branch of
    :func:`_decompose_block`, computed by the same operations in the same order, so the numbers are
    the same bit for bit; the other voxels go through :func:`_decompose_block` itself.
    """
    h = np.ascontiguousarray(hu, dtype=np.float32)
    out = {m: (np.empty if m == "soft" else np.zeros)(h.shape, np.float32) for m in MATERIALS}
    flat, dest = h.reshape(-1), {m: a.reshape(-1) for m, a in out.items()}
    rho_soft = np.float32(RHO_SOFT)
    for start in range(0, flat.size, BLOCK_VOXELS):
        block = flat[start:start + BLOCK_VOXELS]
        soft = dest["soft"][start:start + BLOCK_VOXELS]
        # the h < HU_SOFT branch: RHO_SOFT * max(0, 1 + h / 1000) / (1 + HU_SOFT / 1000)
        np.divide(block, 1000.0, out=soft)
        np.add(1.0, soft, out=soft)
        np.maximum(0.0, soft, out=soft)
        np.multiply(rho_soft, soft, out=soft)
        np.divide(soft, 1.0 + HU_SOFT / 1000.0, out=soft)
        rest = np.flatnonzero(~(block < HU_SOFT))  # NaN included, as in _decompose_block
        if len(rest):
            parts = _decompose_block(block[rest])
            for m in MATERIALS:
                dest[m][start + rest] = parts[m]
    return out


def _decompose_block(h: np.ndarray) -> dict[str, np.ndarray]:
    """The split of :func:`decompose_hu` for float32 HU values (any shape)."""
    rel = np.maximum(0.0, 1.0 + h / 1000.0)
    f_bone = np.clip((h - HU_SOFT) / (HU_BONE - HU_SOFT), 0.0, 1.0)
    f_iron = np.clip((h - HU_BONE) / (HU_IRON - HU_BONE), 0.0, 1.0)
    soft = np.where(h < HU_SOFT, RHO_SOFT * rel / (1.0 + HU_SOFT / 1000.0), RHO_SOFT * (1.0 - f_bone))
    bone = np.where(h > HU_BONE, RHO_BONE * (1.0 - f_iron), RHO_BONE * f_bone)
    iron = RHO_IRON * f_iron
    above = h > HU_IRON  # denser than the iron anchor: iron, denser
    iron = np.where(above, RHO_IRON * rel / (1.0 + HU_IRON / 1000.0), iron)
    return {"bone": bone.astype(np.float32), "soft": soft.astype(np.float32), "metal": iron.astype(np.float32)}


#: ``1 + HU/1000`` per g/cm^3 of each material (see :func:`decompose_hu`).
RELATIVE_ATTENUATION_PER_DENSITY = {
    "bone": (1.0 + HU_BONE / 1000.0) / RHO_BONE,
    "soft": (1.0 + HU_SOFT / 1000.0) / RHO_SOFT,
    "metal": (1.0 + HU_IRON / 1000.0) / RHO_IRON,
}


def hu_from_materials(densities: Mapping[str, np.ndarray]) -> np.ndarray:
    """The HU that :func:`decompose_hu` split (inverse, for HU >= -1000)."""
    rel = sum(RELATIVE_ATTENUATION_PER_DENSITY[m] * np.asarray(densities[m], np.float64) for m in MATERIALS)
    return (1000.0 * (rel - 1.0)).astype(np.float32)


# ------------------------------------------------------------ tables
@dataclass(frozen=True)
class Tables:
    energies_kev: np.ndarray
    kvps: np.ndarray
    anode_angles_deg: np.ndarray
    positions_cm: np.ndarray
    spectra: np.ndarray  # (kVp, angle, position, E) photons / keV / mm^2 / mAs at 1 m
    mu_rho: dict[str, np.ndarray]  # material -> (E,) cm^2/g
    provenance: dict


@lru_cache(maxsize=1)
def tables() -> Tables:
    """The bundled spectra and attenuation table (scripts/make_xray_tables.py)."""
    from importlib.resources import files

    with np.load(str(files("threeddx") / "data" / "xray_tables.npz")) as z:
        names = [str(n) for n in z["materials"]]
        return Tables(
            energies_kev=z["energies_kev"].astype(np.float64), kvps=z["kvps"].astype(np.float64),
            anode_angles_deg=z["anode_angles_deg"].astype(np.float64), positions_cm=z["positions_cm"].astype(np.float64),
            spectra=z["spectra"].astype(np.float64), mu_rho=dict(zip(names, z["mu_rho"].astype(np.float64))),
            provenance=json.loads(str(z["provenance"])),
        )


def _interp_axis(values: np.ndarray, x: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of linear interpolation on a sorted grid (clamped at its ends)."""
    x = np.clip(np.asarray(x, np.float64), values[0], values[-1])
    i = np.clip(np.searchsorted(values, x) - 1, 0, len(values) - 2)
    w = (x - values[i]) / (values[i + 1] - values[i])
    return i, i + 1, w


def spectrum(kvp: float, anode_angle_deg: float = 14.0, position_cm: float | np.ndarray = 0.0,
             al_mm: float = 0.0, cu_mm: float = 0.0) -> np.ndarray:
    """Photons per keV per mm^2 per mAs at 1 m, on :func:`tables` ``energies_kev``.

    ``position_cm`` (scalar or array) along the anode-cathode axis at 1 m
    (negative: the anode side); an array gives one spectrum per position (P, E).
    Filtration by ``al_mm`` aluminium and ``cu_mm`` copper.
    """
    t = tables()
    if not (t.kvps[0] <= kvp <= t.kvps[-1]):
        raise InputError(f"kVp {kvp} outside the tabulated {t.kvps[0]:.0f}-{t.kvps[-1]:.0f}")
    a0, a1, wa = _interp_axis(t.kvps, kvp)
    b0, b1, wb = _interp_axis(t.anode_angles_deg, anode_angle_deg)
    s = ((1 - wa) * ((1 - wb) * t.spectra[a0, b0] + wb * t.spectra[a0, b1])
         + wa * ((1 - wb) * t.spectra[a1, b0] + wb * t.spectra[a1, b1]))  # (position, E)
    c0, c1, wc = _interp_axis(t.positions_cm, position_cm)
    s = (1 - np.asarray(wc))[..., None] * s[c0] + np.asarray(wc)[..., None] * s[c1]
    s = s * (t.energies_kev <= kvp)  # linear interpolation between kVp rows must not leak past the peak
    filt = np.exp(-0.1 * (al_mm * t.mu_rho["aluminium"] * 2.699 + cu_mm * t.mu_rho["copper"] * 8.96))
    return s * filt


def mean_energy(kvp: float, **kw) -> float:
    """Fluence-weighted mean photon energy (keV) of :func:`spectrum`."""
    s = spectrum(kvp, **kw)
    return float((s * tables().energies_kev).sum() / s.sum())


def detector_weights(csi_mm: float = 0.5) -> np.ndarray:
    """Energy-integrating response per photon: E x absorption probability in ``csi_mm`` of CsI."""
    t = tables()
    return t.energies_kev * (1.0 - np.exp(-t.mu_rho["csi"] * 4.51 * 0.1 * csi_mm))


def transmission(materials: Mapping[str, np.ndarray], kvp: float, al_mm: float = 3.0, cu_mm: float = 0.0,
                 anode_angle_deg: float = 14.0, csi_mm: float = 0.5, positions_cm: np.ndarray | None = None,
                 ball: "tuple[np.ndarray, np.ndarray] | BallTransmission | None" = None) -> np.ndarray:
    """Detected primary signal relative to the open field at the same position (0-1], (H, W).

    ``materials``: areal densities (g/cm^2), (H, W) each. ``positions_cm``: per
    row, the position along the anode-cathode axis (None: the central ray's
    spectrum everywhere). ``ball``: a calibration ball's steel and pixel share, (H, W) each
    (:data:`BALL`, :data:`BALL_SHARE`), or its exact transmission (:class:`BallTransmission`).
    """
    t = tables()
    first = np.asarray(next(iter(materials.values())))
    h = first.shape[0]
    pos = np.zeros(h) if positions_cm is None else np.asarray(positions_cm, np.float64)
    s = spectrum(kvp, anode_angle_deg, pos, al_mm, cu_mm) * detector_weights(csi_mm)  # (H, E)
    keep = s.max(0) > 1e-6 * s.max()
    s, mus = s[:, keep], {m: t.mu_rho["iron" if m == "metal" else m][keep] for m in materials}
    names = list(materials)
    w = first.shape[1]
    # optical depths of every pixel at every energy as one product, (H*W, M) @ (M, E), then exp in place: the same
    # figures as summing M broadcast (H, W, E) arrays, 3x faster (issue 30)
    areal = np.stack([np.asarray(materials[m], np.float32).reshape(-1) for m in names], 1)
    tau = areal @ np.stack([mus[m] for m in names]).astype(np.float32)
    np.negative(tau, out=tau)
    np.exp(tau, out=tau)
    if isinstance(ball, BallTransmission):
        tau[ball.pixels] *= ball.t[:, keep].astype(np.float32)
    elif ball is not None:  # the pixels a ball covers in part or whole: the two parts' intensities, weighted (BALL)
        steel, share = (np.asarray(a, np.float32).reshape(-1) for a in ball)
        at = np.flatnonzero(share > 0)
        mu_iron = t.mu_rho["iron"][keep].astype(np.float32)
        tau[at] *= (1.0 - share[at, None]) + share[at, None] * np.exp(-steel[at, None] * mu_iron[None])
    sig = np.matmul(tau.reshape(h, w, -1), s.astype(np.float32)[:, :, None])[..., 0]  # each row's spectrum
    return (sig / np.maximum(s.sum(1), 1e-30)[:, None]).astype(np.float32)


# ------------------------------------------------------------ the chain
@dataclass(frozen=True)
class Chain:
    """One imaging chain's settings (docs/data.md: ranges and sources)."""

    kvp: float = 80.0
    al_mm: float = 3.0  # total filtration, mm Al
    cu_mm: float = 0.0  # added copper, mm
    anode_angle_deg: float = 14.0
    heel_sign: int = 1  # +1: anode side at the top of the image (superior), -1: at the bottom
    spr: float = 0.3  # scatter-to-primary ratio over the body
    scatter_sigma_mm: float = 60.0  # width of the scatter kernel at the detector
    fluence: float = 8e4  # photons per mm^2 at the detector behind the body (exposure control), ~2.5 uGy
    electronic_noise: float = 0.002  # SD, fraction of the signal behind the body
    csi_mm: float = 0.5
    blur_px: float = 0.5  # detector + focal spot + motion, Gaussian SD in output pixels
    gain_sd: float = 0.01  # residual gain non-uniformity after flat-fielding
    response: str = "log"  # log | linear
    range_compression: float = 0.5  # share of the large-scale (40 mm) trend removed (0: none)
    edge_strength: float = 0.5  # unsharp-mask gain (0: none)
    edge_radius_mm: float = 8.0
    window_lo_pct: float = 0.5
    window_hi_pct: float = 99.5
    gamma: float = 1.0
    lut_s: float = 0.0  # S-curve LUT steepness (0: none)
    bits: int = 12
    jpeg_quality: int = 0  # 0: no JPEG
    invert: bool = False
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # fraction closed: top, bottom, left, right
    markers: int = 0  # lead side markers ("L"/"R")
    text_lines: int = 0  # burned-in text lines
    seed: int = 0  # noise, markers and text placement

    def to_dict(self) -> dict:
        return asdict(self)


#: Ranges of :func:`sample_chain` (uniform unless said). docs/data.md gives sources.
CHAIN_RANGES: dict[str, tuple[float, float]] = {
    "kvp": (60.0, 100.0),
    "al_mm": (2.5, 5.0),
    "cu_mm": (0.0, 0.2),  # with probability 0.3, else 0
    "anode_angle_deg": (12.0, 16.0),
    "spr": (0.15, 3.0),  # log-uniform: grid (0.15-0.5) to no grid (1-3)
    "scatter_sigma_mm": (30.0, 100.0),
    "fluence": (3e3, 3e5),  # log-uniform; ~0.1-10 uGy detector air kerma at ~3e4 photons/mm^2/uGy
    "electronic_noise": (0.0, 0.005),
    "blur_px": (0.0, 1.2),
    "gain_sd": (0.0, 0.03),
    "range_compression": (0.0, 0.85),
    "edge_strength": (0.0, 2.5),
    "edge_radius_mm": (3.0, 25.0),
    "window_lo_pct": (0.0, 5.0),
    "window_hi_pct": (95.0, 100.0),
    "gamma": (0.6, 1.6),  # log-uniform
    "lut_s": (0.0, 6.0),
    "jpeg_quality": (20.0, 95.0),  # with probability 0.3, else no JPEG
    "collimation": (0.0, 0.15),  # each side, with probability 0.5 per side
}


def sample_chain(rng: np.random.Generator | int) -> Chain:
    """A random chain within :data:`CHAIN_RANGES` (training)."""
    rng = np.random.default_rng(rng)
    u = lambda k: float(rng.uniform(*CHAIN_RANGES[k]))  # noqa: E731
    logu = lambda k: float(np.exp(rng.uniform(*np.log(CHAIN_RANGES[k]))))  # noqa: E731
    coll = tuple(float(rng.uniform(*CHAIN_RANGES["collimation"])) if rng.random() < 0.5 else 0.0 for _ in range(4))
    return Chain(
        kvp=u("kvp"), al_mm=u("al_mm"), cu_mm=u("cu_mm") if rng.random() < 0.3 else 0.0,
        anode_angle_deg=u("anode_angle_deg"), heel_sign=int(rng.choice([-1, 1])),
        spr=logu("spr"), scatter_sigma_mm=u("scatter_sigma_mm"), fluence=logu("fluence"),
        electronic_noise=u("electronic_noise"), blur_px=u("blur_px"), gain_sd=u("gain_sd"),
        response=str(rng.choice(["log", "linear"], p=[0.9, 0.1])),
        range_compression=u("range_compression"),
        edge_strength=u("edge_strength") if rng.random() < 0.7 else 0.0, edge_radius_mm=u("edge_radius_mm"),
        window_lo_pct=u("window_lo_pct"), window_hi_pct=u("window_hi_pct"), gamma=logu("gamma"),
        lut_s=u("lut_s") if rng.random() < 0.5 else 0.0,
        bits=int(rng.choice([8, 10, 12, 16])),
        jpeg_quality=int(u("jpeg_quality")) if rng.random() < 0.3 else 0,
        invert=bool(rng.random() < 0.15), collimation=coll,
        markers=int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2])), text_lines=int(rng.choice([0, 1, 2, 3], p=[0.4, 0.2, 0.2, 0.2])),
        seed=int(rng.integers(2**31)),
    )


#: Fixed chains for evaluation sets: a typical processed hip film and each family's extreme,
#: every one differing from ``standard`` in its own knobs only.
STANDARD = Chain(lut_s=3.0)
PRESETS: dict[str, Chain] = {
    "standard": STANDARD,
    "no-grid": replace(STANDARD, spr=3.0, scatter_sigma_mm=60.0),
    "low-dose": replace(STANDARD, fluence=3e3, electronic_noise=0.005),
    "edge-enhanced": replace(STANDARD, edge_strength=2.5, edge_radius_mm=5.0),
    "jpeg-8bit": replace(STANDARD, bits=8, jpeg_quality=20),
    "inverted": replace(STANDARD, invert=True),
    "high-kvp": replace(STANDARD, kvp=100.0, cu_mm=0.2),
    "low-kvp": replace(STANDARD, kvp=60.0, al_mm=2.5),
    "linear": replace(STANDARD, response="linear"),
    "markers-text-collimation": replace(STANDARD, markers=2, text_lines=3, collimation=(0.1, 0.08, 0.12, 0.1)),
}


def chain_from(name_or_dict: str | Mapping | Chain) -> Chain:
    """A preset name, a dict of :class:`Chain` fields, or a Chain."""
    if isinstance(name_or_dict, Chain):
        return name_or_dict
    if isinstance(name_or_dict, str):
        if name_or_dict not in PRESETS:
            raise InputError(f"unknown imaging chain {name_or_dict!r}; known: {', '.join(PRESETS)}")
        return PRESETS[name_or_dict]
    known = set(Chain.__dataclass_fields__)
    bad = [k for k in name_or_dict if k not in known]
    if bad:
        raise InputError(f"unknown imaging-chain setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    d = dict(name_or_dict)
    if "collimation" in d:
        d["collimation"] = tuple(d["collimation"])
    return Chain(**d)


def replace_seed(chain: Chain | str | Mapping, seed: int) -> Chain:
    """``chain`` with another noise seed (a fixed evaluation chain, new noise per image)."""
    return replace(chain_from(chain), seed=int(seed))


def chain_for(chain: "Chain | str | Mapping", rng: np.random.Generator) -> Chain:
    """The chain of one image: ``"random"`` draws one from ``rng``, anything else is fixed with a noise seed from it."""
    return sample_chain(rng) if chain == "random" else replace_seed(chain, int(rng.integers(2**31)))


def sample_materials(npz) -> dict[str, np.ndarray] | None:
    """A sample's material line integrals (name -> (H, W) g/cm^2) from an open NPZ; None when it has none."""
    if "materials" not in npz:
        return None
    stack = npz["materials"]  # an NpzFile decompresses the whole array on every access: once
    return {str(n): stack[i] for i, n in enumerate(npz["material_names"])}


#: From this SD (px) on, :func:`_gauss` filters through FFTs (faster on this machine; docs/benchmarks.md, issue 30).
FFT_GAUSS_FROM_PX = 12.0


def _gauss(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """``ndimage.gaussian_filter(img, sigma_px, mode="nearest")``; broad kernels (scatter, gain, range compression)
    as the same truncated kernel (4 SD) applied by FFT to the edge-padded image, separably: equal within float32
    rounding (tests/simulator/test_physics.py), 3-4x faster at 256 px."""
    if sigma_px <= 0:
        return img
    if sigma_px < FFT_GAUSS_FROM_PX:
        return ndimage.gaussian_filter(img, sigma_px, mode="nearest")
    r = int(4.0 * sigma_px + 0.5)  # scipy's radius for truncate=4
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    dtype = np.result_type(img.dtype, np.float32)
    k = (k / k.sum()).astype(dtype)
    out = np.pad(np.asarray(img, dtype), r, mode="edge")
    out = signal.fftconvolve(out, k[None, :], mode="valid", axes=1)
    out = signal.fftconvolve(out, k[:, None], mode="valid", axes=0)
    return out.astype(img.dtype, copy=False)


def _letters_mask(shape: tuple[int, int], text: str, xy: tuple[int, int], height_px: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=max(6, height_px))
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    draw.text(xy, text, fill=255, font=font)
    return np.asarray(canvas) > 127


def _field_mask(shape: tuple[int, int], collimation: tuple[float, float, float, float]) -> np.ndarray:
    h, w = shape
    top, bottom, left, right = (int(round(f * n)) for f, n in zip(collimation, (h, h, w, w)))
    m = np.zeros(shape, bool)
    m[top : h - bottom, left : w - right] = True
    return m


def radiograph(materials: Mapping[str, np.ndarray], geometry: XrayGeometry, chain: Chain | str | Mapping = "standard",
               ) -> np.ndarray:
    """The displayed image of a sample through ``chain`` (module doc): (H, W) float32 in [0, 1].

    ``materials``: areal densities in g/cm^2 per material name of
    :data:`MATERIALS` (missing ones are zero), each (H, W) on ``geometry``'s
    detector. Deterministic for a given chain (its ``seed`` drives the noise).
    """
    c = chain_from(chain)
    signal = detector_signal(materials, geometry, c)
    return process(signal, geometry, c)


def detector_signal(materials: Mapping[str, np.ndarray], geometry: XrayGeometry, chain: Chain | str | Mapping = "standard",
                    ) -> np.ndarray:
    """Steps 1-3 of the module doc: the detector's signal relative to the central open field, (H, W) float32.

    Primary (spectrum, heel, attenuation, inverse square), collimation and lead
    markers, scatter, gain non-uniformity, quantum and electronic noise, blur.
    """
    c = chain_from(chain)
    mats = {m: np.asarray(a, np.float32) for m, a in materials.items() if m in MATERIALS}
    if not mats:
        raise InputError(f"no material line integrals (expected some of {', '.join(MATERIALS)})")
    ball = (materials[BALL], materials[BALL_SHARE]) if BALL in materials else None
    shape = next(iter(mats.values())).shape
    if BALL_EXACT in materials:
        if ball is not None:
            raise InputError("a ball is drawn either exactly or as steel and share, not both")
        ball = materials[BALL_EXACT]
    if (any(np.shape(a) != shape for a in [*mats.values(), *(ball if isinstance(ball, tuple) else ())])
            or tuple(shape) != tuple(geometry.detector_shape)):
        raise InputError("material maps must all have the detector's shape")
    rng = np.random.default_rng(c.seed)
    h, w = shape
    row_mm, col_mm = geometry.pixel_spacing
    px_area = row_mm * col_mm
    # heel effect: rows along the anode-cathode axis, positions scaled to the table's 1 m
    v = (np.arange(h) + 0.5 - geometry.principal_point[1]) * row_mm
    pos_cm = c.heel_sign * v / 10.0 * (1000.0 / geometry.sdd)
    primary = transmission(mats, c.kvp, c.al_mm, c.cu_mm, c.anode_angle_deg, c.csi_mm, pos_cm, ball)
    # the open field's own spectrum and fluence vary along the axis (heel), relative to the centre
    open_field = spectrum(c.kvp, c.anode_angle_deg, pos_cm, c.al_mm, c.cu_mm) @ detector_weights(c.csi_mm)
    centre = spectrum(c.kvp, c.anode_angle_deg, 0.0, c.al_mm, c.cu_mm) @ detector_weights(c.csi_mm)
    primary = primary * (open_field / centre)[:, None].astype(np.float32)
    # inverse square and obliquity (cos^3 of the ray angle) across the flat detector
    xs = (np.arange(w) + 0.5 - geometry.principal_point[0]) * col_mm
    r2 = xs[None, :] ** 2 + v[:, None] ** 2
    primary = primary * (geometry.sdd**2 / (geometry.sdd**2 + r2)) ** 1.5
    # collimation and lead markers stop the primary (leakage 1%)
    field_open = _field_mask(shape, c.collimation)
    primary = np.where(field_open, primary, 0.01 * primary)
    for k in range(c.markers):
        letter = "R" if k == 0 else "L"
        size = max(6, int(round(25.0 / row_mm)))
        x0 = int(rng.uniform(0.05, 0.25) * w) if letter == "R" else int(rng.uniform(0.65, 0.85) * w)
        y0 = int(rng.uniform(0.05, 0.2) * h)
        primary = np.where(_letters_mask(shape, letter, (x0, y0), size), 0.002 * primary, primary)
    # scatter: a broad kernel of the primary weighted by its optical depth, scaled to the SPR over the body
    tau = -np.log(np.clip(primary, 1e-6, 1.0))
    source = _gauss(primary * tau, c.scatter_sigma_mm / row_mm)
    body = field_open & (primary < 0.8)
    if not body.any():
        body = field_open
    if source[body].mean() > 0:
        source = source * (c.spr * primary[body].mean() / source[body].mean())
    signal = primary + source
    # gain non-uniformity (smooth, residual after flat-field), then quantum and electronic noise
    if c.gain_sd > 0:
        g = _gauss(rng.standard_normal(shape).astype(np.float32), max(h, w) / 8.0)
        signal = signal * (1.0 + c.gain_sd * g / max(float(g.std()), 1e-12))
    # exposure control: ``fluence`` photons per mm^2 reach the detector behind the body (median)
    level = max(float(np.median(signal[body])), 1e-9)
    per_unit = c.fluence * px_area / level  # photons per pixel per unit of signal
    signal = signal + rng.standard_normal(shape).astype(np.float32) * np.sqrt(np.maximum(signal, 0) / per_unit)
    signal = signal + c.electronic_noise * level * rng.standard_normal(shape).astype(np.float32)
    return _gauss(signal, c.blur_px).astype(np.float32)


def process(signal: np.ndarray, geometry: XrayGeometry, chain: Chain | str | Mapping = "standard") -> np.ndarray:
    """Steps 4-5 of the module doc: the vendor's processing and burned-in text -> [0, 1], bone bright unless inverted."""
    c = chain_from(chain)
    shape = signal.shape
    h, w = shape
    row_mm = geometry.pixel_spacing[0]
    rng = np.random.default_rng([c.seed, 1])
    field_open = _field_mask(shape, c.collimation)
    floor = max(float(np.percentile(signal, 0.1)), 1e-9) * 0.5
    img = -np.log(np.maximum(signal, floor)) if c.response == "log" else -signal
    if c.range_compression > 0:  # dynamic range compression: less of the slow soft-tissue trend
        img = img - c.range_compression * _gauss(img, 40.0 / row_mm)
    if c.edge_strength > 0:
        r = c.edge_radius_mm / row_mm
        img = img + c.edge_strength * (img - _gauss(img, r)) + 0.5 * c.edge_strength * (img - _gauss(img, 4 * r))
    # values of interest: the anatomy, not the direct exposure around it or the collimated border
    # (a vendor's exposure recognition); the air then saturates dark, as on processed films
    anatomy = field_open & (signal < 0.6 * np.percentile(signal[field_open] if field_open.any() else signal, 99.5))
    if anatomy.sum() < 0.05 * anatomy.size:
        anatomy = field_open if field_open.any() else np.ones(shape, bool)
    lo, hi = np.percentile(img[anatomy], [c.window_lo_pct, c.window_hi_pct])
    img = np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0) ** c.gamma
    if c.lut_s > 0:  # S-shaped LUT: more contrast in the mid-tones, soft shoulders
        a = 1.0 / (1.0 + np.exp(0.5 * c.lut_s))
        img = (1.0 / (1.0 + np.exp(-c.lut_s * (img - 0.5))) - a) / (1.0 - 2.0 * a)
    levels = 2**c.bits - 1
    img = np.round(img * levels) / levels
    for k in range(c.text_lines):
        txt = ["PELVIS AP", "80kV 20mAs", "ID 04711 2026-11-25", "EI 320"][k % 4]
        y0 = int((0.86 + 0.045 * k) * h) if k % 2 else int((0.02 + 0.045 * k) * h)
        x0 = int(rng.uniform(0.02, 0.5) * w)
        img = np.where(_letters_mask(shape, txt, (x0, y0), max(6, h // 28)), 1.0, img)
    if c.jpeg_quality:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=int(c.jpeg_quality))
        img = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255.0
    if c.invert:
        img = 1.0 - img
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def contrast(image: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> float:
    """Michelson-style contrast between two regions' mean values."""
    a, b = float(np.mean(image[inside])), float(np.mean(image[outside]))
    return abs(a - b) / max(abs(a) + abs(b), 1e-12)

