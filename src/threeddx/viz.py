"""Pictures: the render preview (DRR, masks, front and back depth maps)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_path

#: One colour per bone (RGB, 0-1), cycled.
BONE_COLOURS = np.array(
    [
        [0.90, 0.25, 0.20],
        [0.20, 0.60, 0.95],
        [0.25, 0.80, 0.30],
        [0.95, 0.75, 0.15],
        [0.70, 0.35, 0.90],
        [0.10, 0.80, 0.80],
    ]
)


def mask_overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Grey image (H, W) in [0, 1] with (C, H, W) masks blended in colour -> (H, W, 3)."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1).astype(np.float32)
    for c, m in enumerate(masks):
        col = BONE_COLOURS[c % len(BONE_COLOURS)]
        sel = m.astype(bool)
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * col
    return rgb


def composite_depths(masks: np.ndarray, front: np.ndarray, back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the nearest front face and the farthest back face over all bones (NaN: no bone)."""
    m = masks.astype(bool)
    with np.errstate(invalid="ignore"):
        f = np.where(m, front, np.inf).min(0)
        b = np.where(m, back, -np.inf).max(0)
    f[~np.isfinite(f)] = np.nan
    b[~np.isfinite(b)] = np.nan
    return f, b


def save_preview(
    path: str | Path,
    image: np.ndarray,
    masks: np.ndarray,
    depth_front: np.ndarray,
    depth_back: np.ndarray,
    bones: Sequence[str],
    title: str = "",
) -> None:
    """DRR | masks over it | front depth | back depth, side by side, colour bar in mm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    f, b = composite_depths(masks, depth_front, depth_back)
    finite = np.concatenate([f[np.isfinite(f)], b[np.isfinite(b)]])
    vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6), constrained_layout=True)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("DRR")
    axes[1].imshow(mask_overlay(image, masks))
    axes[1].set_title("bone masks")
    axes[1].legend(
        handles=[Patch(color=BONE_COLOURS[i % len(BONE_COLOURS)], label=n) for i, n in enumerate(bones)],
        loc="lower right", fontsize=7, framealpha=0.7,
    )
    cmap = plt.get_cmap("turbo").with_extremes(bad="black")
    axes[2].imshow(f, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[2].set_title("front face (nearest bone)")
    im = axes[3].imshow(b, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[3].set_title("back face (farthest bone)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[2:], shrink=0.85, label="depth from source (mm)")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
