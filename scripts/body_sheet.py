"""A preview sheet of random synthetic bodies (docs/bodies.png): how varied the training patients are.

    python scripts/body_sheet.py [--n 16] [--voxel-mm 3] [--out docs/bodies.png]

Each tile is one seeded body (phantom.sample_tissue) around LLP26 subject 0's
bones (a training subject), rendered at the standard AP pose through the
``standard`` imaging chain, with an axial CT slice at the hip centres beside it;
the title gives its fat thickness and what it carries.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from threeddx.simulator.anatomy import BONE_PARTS, PART_LABEL_IDS, PARTS, articulate, load_shape
    from threeddx.geometry import standard_ap_geometry
    from threeddx.simulator.phantom import synthesize_ct
    from threeddx.simulator.physics import decompose_hu, radiograph
    from threeddx.simulator.render import Scene, hu_to_mu, render
    from threeddx.simulator.simulate import ISOCENTER_ABOVE_HIPS_MM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--voxel-mm", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bodies.png"))
    a = ap.parse_args()
    shape, _ = articulate(load_shape(0), np.random.default_rng(0))
    parts = {p: (shape.vertices[p], shape.faces[p]) for p in PARTS}
    geom = standard_ap_geometry((0.0, 0.0, ISOCENTER_ABOVE_HIPS_MM), size=a.size)
    cols = 4
    rows = int(np.ceil(a.n / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.4 * rows), constrained_layout=True)
    for i in range(a.n):
        sct = synthesize_ct(parts, PART_LABEL_IDS, {"pelvis": BONE_PARTS["pelvis"]}, shape.hip_centers, 1000 + i,
                            spacing=a.voxel_mm)
        scene = Scene(mu=hu_to_mu(sct.ct.array), index_to_world=sct.ct.index_to_world,
                      materials=decompose_hu(sct.ct.array))
        res = render(scene, geom)
        img = radiograph(dict(zip(res.material_names, res.materials)), geom, "standard")
        t = sct.tissue
        k = int(round((0.0 - sct.ct.origin[2]) / a.voxel_mm))
        extras = [n for n in ("table", "zip", "buttons", "gonad_shield", "calcifications", "panniculus") if t[n]]
        ax_img, ax_ct = axes.flat[2 * i], axes.flat[2 * i + 1]
        ax_img.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax_img.set_title(f"#{i}: fat {t['fat_mm']:.0f} mm, gas {int(t['gas_pockets'])}", fontsize=8)
        ax_ct.imshow(np.clip(sct.ct.array[k], -400, 600), cmap="gray")
        ax_ct.set_title(", ".join(extras) or "-", fontsize=7)
        for ax in (ax_img, ax_ct):
            ax.set_axis_off()
        print(f"body {i}: fat {t['fat_mm']:.0f} mm, thigh spread {t['thigh_spread_mm']:.0f} mm, {', '.join(extras)}",
              flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
