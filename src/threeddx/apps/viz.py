"""Pictures: the render preview (DRR, masks, front and back depth maps)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from threeddx.bones import PALETTE, colour, colours as _bone_colours
from threeddx.io import atomic_path

#: Colours of bones the registry does not know, by position, cycled (threeddx.bones.PALETTE); a registered
#: bone has its own colour everywhere (threeddx.bones.colour).
BONE_COLOURS = PALETTE


def mask_overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45,
                 bones: Sequence[str] | None = None) -> np.ndarray:
    """Grey image (H, W) in [0, 1] with (C, H, W) masks blended in colour -> (H, W, 3); ``bones``: the masks'
    names, for their registry colours (else the palette by position)."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1).astype(np.float32)
    cols = _bone_colours(bones) if bones is not None else PALETTE[np.arange(len(masks)) % len(PALETTE)]
    for c, m in enumerate(masks):
        col = cols[c]
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


def depth_display(masks: np.ndarray, front: np.ndarray, back: np.ndarray | None):
    """What every depth picture shows: composite front/back maps, a shared 1-99 % range, turbo.

    Returns ``(front, back, vmin, vmax, cmap)``; ``back=None`` (single depth) shows the front twice.
    """
    import matplotlib.pyplot as plt

    f, b = composite_depths(masks, front, front if back is None else back)
    finite = np.concatenate([f[np.isfinite(f)], b[np.isfinite(b)]])
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    return f, b, vmin, vmax, plt.get_cmap("turbo").with_extremes(bad="black")


def save_depth_maps(path, masks: np.ndarray, front: np.ndarray, back: np.ndarray | None) -> None:
    """Front and back depth maps side by side with a colour bar in mm (predict's depth.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, b, vmin, vmax, cmap = depth_display(masks, front, back)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), constrained_layout=True)
    for ax, d, title in ((axes[0], f, "front face"), (axes[1], b, "back face")):
        im = ax.imshow(d, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="depth from source (mm)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


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

    f, b, vmin, vmax, cmap = depth_display(masks, depth_front, depth_back)
    # a fixed layout: four square panels and a colour bar (the simulator writes one per subject, and
    # constrained_layout's solver alone took ~0.5 s of the ~0.8 s a preview cost)
    fig = plt.figure(figsize=(17, 4.6))
    w, h, gap, left, bottom = 0.205, 0.205 * 17 / 4.6, 0.012, 0.01, 0.06
    axes = [fig.add_axes((left + k * (w + gap), bottom, w, h)) for k in range(4)]
    cax = fig.add_axes((left + 4 * (w + gap), bottom + 0.1 * h, 0.008, 0.8 * h))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("DRR")
    axes[1].imshow(mask_overlay(image, masks, bones=bones))
    axes[1].set_title("bone masks")
    axes[1].legend(
        handles=[Patch(color=colour(n, i), label=n) for i, n in enumerate(bones)],
        loc="lower right", fontsize=7, framealpha=0.7,
    )
    axes[2].imshow(f, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[2].set_title("front face (nearest bone)")
    im = axes[3].imshow(b, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[3].set_title("back face (farthest bone)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, cax=cax, label="depth from source (mm)")
    if title:
        fig.suptitle(title, y=0.99)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def mesh_view(meshes: dict, view: str = "front", size: int = 400, colours: dict | None = None) -> np.ndarray:
    """Shaded orthographic picture (size x size RGB in [0, 1]) of world-frame (LPS) meshes.

    A z-buffer over the triangles (the same rasteriser as the voxeliser).
    ``front``: seen from anterior as an AP radiograph is read (patient's right on
    the left, superior up). ``side``: seen from the patient's left (anterior on
    the left, superior up). ``colours``: bone name -> RGB (default: by position).
    """
    from threeddx.raster import points_in_triangles

    img = np.ones((size, size, 3))
    if not meshes:
        return img
    if view == "front":
        axes, depth_axis, near_sign = (0, 2), 1, -1.0  # anterior (small y) is near
    else:
        axes, depth_axis, near_sign = (1, 2), 0, 1.0  # the patient's left (large x) is near
    light = np.zeros(3)
    light[depth_axis] = near_sign
    allv = np.concatenate([m.vertices for m in meshes.values()])
    lo, hi = allv[:, axes].min(0), allv[:, axes].max(0)
    scale = (size - 8) / max(float((hi - lo).max()), 1e-6)
    pix, dep, col = [], [], []
    for c, (name, mesh) in enumerate(meshes.items()):
        rgb = np.asarray(colours[name]) if colours and name in colours else colour(name, c)
        uv = (mesh.vertices[:, axes] - lo) * scale + 4
        uv[:, 1] = size - 1 - uv[:, 1]  # superior up
        f = mesh.faces
        tri, u, v, w0, w1, w2 = points_in_triangles(uv[f[:, 0]], uv[f[:, 1]], uv[f[:, 2]], shape=(size, size))
        z = -near_sign * mesh.vertices[:, depth_axis]  # smaller is nearer
        dep.append(w0 * z[f[tri, 0]] + w1 * z[f[tri, 1]] + w2 * z[f[tri, 2]])
        shade = 0.25 + 0.75 * np.abs(mesh.face_normals[tri] @ light)
        col.append(rgb[None] * shade[:, None])
        pix.append(v * size + u)
    pix, dep, col = np.concatenate(pix), np.concatenate(dep), np.concatenate(col)
    order = np.lexsort((dep, pix))  # per pixel, nearest first
    first = order[np.unique(pix[order], return_index=True)[1]]
    img.reshape(-1, 3)[pix[first]] = col[first]
    return img


def measurement_lines(measurements: dict) -> list[str]:
    """summary.json's ``measurements`` as short text lines (report.png's panel; ``*``: inferred by the shape
    model, not seen)."""
    from threeddx.inference.measure import MEASURES

    short = {"head_diameter_mm": "head diameter", "neck_shaft_angle_deg": "neck-shaft (CCD)", "offset_mm": "offset",
             "version_deg": "femoral version", "shaft_tilt_deg": "shaft tilt (flexion)", "acetabular_inclination_deg": "inclination",
             "acetabular_version_deg": "acetabular version", "lateral_center_edge_angle_deg": "LCE angle",
             "head_coverage_pct": "head coverage", "tilt_deg": "pelvic tilt", "leg_length_difference_mm": "leg length L-R"}
    unit = {"mm": " mm", "deg": "°", "pct": " %"}
    lines = []
    for key, values in measurements.items():
        if key in ("frame", "points_mm", "not_measured") or not isinstance(values, dict):
            continue
        lines.append(key.replace("_", " ") + ":")
        for name in MEASURES[key.split("_")[0]]:
            if name in values:
                flag = "*" if name in values.get("inferred", []) else ""
                lines.append(f"  {short[name]:<19s}{values[name]:7.1f}{unit[name.rsplit('_', 1)[1]]}{flag}")
    lines += [f"{b}: not measured ({why})" for b, why in measurements.get("not_measured", {}).items()]
    if any("inferred" in v for v in measurements.values() if isinstance(v, dict)):
        lines.append("* inferred by the shape model (outside the image)")
    return lines


def draw_measurements(ax, measurements: dict, geometry) -> None:
    """The measures' landmarks projected on the X-ray panel (``geometry``: the panel's camera, world mm):
    each femoral head's sphere, neck and shaft axes, each acetabular rim, the anterior pelvic plane's spines
    and symphysis."""
    pts = measurements.get("points_mm", {})

    def proj(p):
        row, col, _ = geometry.project(np.atleast_2d(np.asarray(p, np.float64)))
        return col, row

    for side in ("left", "right"):
        f = pts.get(f"femur_{side}")
        if f:
            c = np.asarray(f["head_centre"])
            r = measurements[f"femur_{side}"]["head_diameter_mm"] / 2
            ray = c - geometry.source_position_world
            ray /= np.linalg.norm(ray)
            e1 = np.cross(ray, [0.0, 0.0, 1.0] if abs(ray[2]) < 0.9 else [1.0, 0.0, 0.0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(ray, e1)
            t = np.linspace(0, 2 * np.pi, 49)
            ax.plot(*proj(c + r * (np.outer(np.cos(t), e1) + np.outer(np.sin(t), e2))), color="yellow", lw=1)
            neck, prox, dist = (np.asarray(f[k]) for k in ("neck", "shaft_proximal", "shaft_distal"))
            ax.plot(*proj(np.stack([c, c + 1.6 * (neck - c)])), color="cyan", lw=1)
            up = prox + 0.8 * (prox - dist)
            ax.plot(*proj(np.stack([up, dist])), color="cyan", lw=1)
        rim = pts.get(f"acetabulum_{side}", {}).get("rim")
        if rim:
            ring = np.asarray(rim + rim[:1])
            ax.plot(*proj(ring), color="magenta", lw=1)
    p = pts.get("pelvis")
    if p:
        tri = np.asarray([p["asis_right"], p["asis_left"], p["pubis"], p["asis_right"]])
        ax.plot(*proj(tri), color="white", lw=0.8, ls="--")


def save_report(path, image, pred: dict, bones: Sequence[str], meshes_world: dict, title: str = "",
                measurements: dict | None = None, geometry=None) -> None:
    """The predict report: X-ray with masks, front/back depths, the meshes from the front and the side; with
    ``measurements`` (summary.json's) and ``geometry`` (the X-ray panel's camera) the measures' landmarks drawn
    on the X-ray and their values listed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    f, b, vmin, vmax, cmap = depth_display(pred["masks"], pred["depth_front"], pred["depth_back"])
    fig, axes = plt.subplots(2, 3, figsize=(14, 9.5), constrained_layout=True)
    axes[0, 0].imshow(mask_overlay(image, pred["masks"], bones=bones))
    axes[0, 0].set_title("X-ray and predicted masks")
    axes[0, 0].legend(handles=[Patch(color=colour(n, i), label=n) for i, n in enumerate(bones)],
                      loc="lower right", fontsize=7, framealpha=0.7)
    axes[0, 1].imshow(f, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[0, 1].set_title("front face (mm)")
    im = axes[0, 2].imshow(b, cmap=cmap, vmin=vmin, vmax=vmax)
    axes[0, 2].set_title("back face (mm)" if pred["depth_back"] is not None else "front face only (single depth)")
    fig.colorbar(im, ax=axes[0, 1:], shrink=0.8, label="depth from source (mm)")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    ordered = {n: meshes_world[n] for n in bones if n in meshes_world}
    for ax, view, t in ((axes[1, 0], "front", "meshes, front (AP) view"),
                        (axes[1, 1], "side", "meshes, side view (from the patient's left)")):
        colours = {n: colour(n, i) for i, n in enumerate(bones)}
        ax.imshow(mesh_view(ordered, view, colours=colours))
        ax.set_title(t)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 2].set_axis_off()
    lines = [f"{n}: {len(m.vertices)} vertices" + (", watertight" if m.is_watertight else "") for n, m in ordered.items()]
    lines += [f"{n}: not found" for n in bones if n not in meshes_world]
    if measurements:
        lines += ["", "measurements (3D):"] + measurement_lines(measurements)
        if geometry is not None:
            draw_measurements(axes[0, 0], measurements, geometry)
            h, w = np.asarray(image).shape[:2]
            axes[0, 0].set_xlim(-0.5, w - 0.5)
            axes[0, 0].set_ylim(h - 0.5, -0.5)
    axes[1, 2].text(0.02, 0.98, "\n".join(lines), va="top", family="monospace", fontsize=8)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
