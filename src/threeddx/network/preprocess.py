"""What the network sees of a radiograph, shared by training and inference: intensities and mirror images.

Training (:mod:`threeddx.training.dataset`) and inference (:mod:`threeddx.inference.predictor`) both show the network an
image through these functions, so the two cannot drift apart; the simulator's renderer uses the same
window. Nothing here imports the simulator or the trainer (inference must not: tests/test_imports.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry


def window_image(line_integral: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Per-image window of a line-integral image to [0, 1] (percentiles)."""
    x = np.asarray(line_integral, dtype=np.float32)  # float32 throughout: a 13000 px image stays ~0.7 GB
    lo, hi = np.percentile(x, [lo_pct, hi_pct])
    if not hi > lo:
        return np.zeros_like(x)
    out = x - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def normalise_radiograph(image: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Per-image intensity normalisation of any radiograph to [0, 1] (float32).

    Robust percentiles, so the network sees the same range whatever produced
    the image (our renderer, another DRR renderer, a detector's raw or processed
    output). Bone is expected bright; :func:`threeddx.io` readers of real
    radiographs invert MONOCHROME1 images before this.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"expected a 2D grey image, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise InputError("image contains NaN or infinite values")
    lo, hi = np.percentile(img, [lo_pct, hi_pct])
    if not hi > lo:
        raise InputError("image is constant: nothing to see")
    return window_image(img, lo_pct, hi_pct)


def mirror_partners(bones: Sequence[str]) -> list[int] | None:
    """Per bone, the index of its mirror image in ``bones`` (the registry's partner, :func:`threeddx.bones.mirror`:
    ``femur_left`` <-> ``femur_right``; a midline bone itself).

    None when some bone's partner is not among ``bones``.
    """
    from threeddx.bones import mirror

    index = {b: i for i, b in enumerate(bones)}
    partners = []
    for b in bones:
        if mirror(b) not in index:
            return None
        partners.append(index[mirror(b)])
    return partners


def centred(geometry: XrayGeometry) -> bool:
    """Whether the principal point is the detector's centre (what makes a left-right flip exact)."""
    rows, cols = geometry.detector_shape
    return bool(np.allclose(geometry.principal_point, (cols / 2.0, rows / 2.0), atol=1e-6))
