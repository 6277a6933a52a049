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


def draw_meshes(ax, meshes: dict, view: str = "front", max_faces: int = 60000) -> None:
    """Shaded orthographic view of world-frame (LPS) meshes, drawn far to near.

    ``front``: seen from anterior as an AP radiograph is read (patient's right on
    the left, superior up). ``side``: seen from the patient's left (anterior on the
    left, superior up).
    """
    from matplotlib.collections import PolyCollection

    polys, shades, depths, colours = [], [], [], []
    for c, (name, mesh) in enumerate(meshes.items()):
        tri = mesh.triangles
        n = mesh.face_normals
        if len(tri) > max_faces:
            keep = np.random.default_rng(0).choice(len(tri), max_faces, replace=False)
            tri, n = tri[keep], n[keep]
        if view == "front":
            xy = tri[:, :, [0, 2]]
            depth = -tri[:, :, 1].mean(1)  # anterior (small y) is near
            light = np.array([0.0, -1.0, 0.0])
        else:
            xy = tri[:, :, [1, 2]]
            depth = tri[:, :, 0].mean(1)  # the patient's left (large x) is near
            light = np.array([1.0, 0.0, 0.0])
        polys.append(xy)
        shades.append(0.25 + 0.75 * np.abs(n @ light))
        depths.append(depth)
        colours.append(np.repeat(BONE_COLOURS[c % len(BONE_COLOURS)][None], len(tri), 0))
    if not polys:
        ax.text(0.5, 0.5, "no mesh", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    xy, shade, depth, col = (np.concatenate(v) for v in (polys, shades, depths, colours))
    order = np.argsort(depth)  # far first
    fc = col[order] * shade[order, None]
    ax.add_collection(PolyCollection(xy[order], facecolors=fc, edgecolors="none"))
    pts = xy.reshape(-1, 2)
    ax.set_xlim(pts[:, 0].min() - 5, pts[:, 0].max() + 5)
    ax.set_ylim(pts[:, 1].min() - 5, pts[:, 1].max() + 5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def save_report(path, image, pred: dict, bones: Sequence[str], meshes_world: dict, title: str = "") -> None:
    """The predict report: X-ray with masks, front/back depths, the meshes from the front and the side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    back = pred["depth_back"] if pred["depth_back"] is not None else pred["depth_front"]
    f, b = composite_depths(pred["masks"], pred["depth_front"], back)
    finite = np.concatenate([f[np.isfinite(f)], b[np.isfinite(b)]])
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(2, 3, figsize=(14, 9.5), constrained_layout=True)
    axes[0, 0].imshow(mask_overlay(image, pred["masks"]))
    axes[0, 0].set_title("X-ray and predicted masks")
    axes[0, 0].legend(handles=[Patch(color=BONE_COLOURS[i % len(BONE_COLOURS)], label=n) for i, n in enumerate(bones)],
                      loc="lower right", fontsize=7, framealpha=0.7)
    cmap = plt.get_cmap("turbo").with_extremes(bad="black")
    axes[0, 1].imshow(f, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[0, 1].set_title("front face (mm)")
    im = axes[0, 2].imshow(b, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[0, 2].set_title("back face (mm)" if pred["depth_back"] is not None else "front face only (single depth)")
    fig.colorbar(im, ax=axes[0, 1:], shrink=0.8, label="depth from source (mm)")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    ordered = {n: meshes_world[n] for n in bones if n in meshes_world}
    draw_meshes(axes[1, 0], ordered, "front")
    axes[1, 0].set_title("meshes, front (AP) view")
    draw_meshes(axes[1, 1], ordered, "side")
    axes[1, 1].set_title("meshes, side view (from the patient's left)")
    axes[1, 2].set_axis_off()
    lines = [f"{n}: {len(m.vertices)} vertices" + (", watertight" if m.is_watertight else "") for n, m in ordered.items()]
    lines += [f"{n}: not found" for n in bones if n not in meshes_world]
    axes[1, 2].text(0.02, 0.98, "\n".join(lines), va="top", family="monospace", fontsize=9)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
