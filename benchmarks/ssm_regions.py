"""Where does shape-model completion help? Surface error by image region, dual-face vs SSM, side by side.

    python benchmarks/ssm_regions.py --data data/sim128 [--checkpoint CKPT | --oracle] [--limit N] [--coupled]

For every test image and bone, points are sampled on the ground-truth surface
(the part inside the detector, as ``3ddx evaluate`` does) and each point's
distance to the reconstructed surface is measured (the GT -> reconstruction
half of ASSD, which is where gaps show). Points are grouped by where they
project in the image:

* ``rim``: within 2 px of the bone's silhouette (its ground-truth mask edge);
* ``inner``: the ray from the source to the point crosses the bone more than
  twice and the point is not its first entry or last exit (the acetabulum,
  the inner walls of the pelvic ring: what two depth faces never see;
  :func:`threeddx.metrics.ray_crossings`);
* ``overlap``: inside another bone's ground-truth mask (pelvis and femoral head);
* ``fov edge``: within 4 px of the detector's border;
* ``interior``: the rest.

Prints the mean distance (mm) per group and method, and the fit time per image.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    import trimesh
    from scipy import ndimage

    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry
    from threeddx.metrics import faces_see, point_to_surface, ray_crossings, sample_surface, visible_part
    from threeddx.inference.predictor import Predictor
    from threeddx.meshing.reconstruct import backproject_bone, reconstruct_bone
    from threeddx.meshing.ssm import FitSettings, complete_bones_each

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--coupled", action="store_true")
    a = ap.parse_args()
    rows = [r for r in read_manifest(a.data) if r["split"] == a.split][: a.limit]
    predictor = None if a.oracle else Predictor(a.checkpoint)
    bones = ["pelvis", "femur_left", "femur_right"]
    groups = ("rim", "inner", "overlap", "fov edge", "interior")
    acc = {(m, g): [] for m in ("dual", "ssm") for g in groups}
    fit_s = []
    for row in rows:
        with np.load(a.data / row["render"]) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            stored = [str(b) for b in z["bones"]]
            gt = {k: z[k] for k in ("image", "masks", "depth_front", "depth_back")}
        if predictor is None:
            pred = {"masks": gt["masks"] > 0, "depth_front": gt["depth_front"], "depth_back": gt["depth_back"]}
            pb = stored
        else:
            prediction = predictor.infer(gt["image"], geo)
            pred, pb = prediction.maps(), predictor.bones
            assert prediction.view.is_identity, "use data at the model's resolution and geometry"
        pts = {}
        for b in bones:
            c = pb.index(b)
            fp = backproject_bone(pred["masks"][c], pred["depth_front"][c], pred["depth_back"][c], geo)
            pts[b] = fp.both()
        t0 = time.perf_counter()
        fits = complete_bones_each(pts, geo, FitSettings(coupled=a.coupled))
        fit_s.append(time.perf_counter() - t0)
        h, w = geo.detector_shape
        for b in bones:
            c = pb.index(b)
            gm = gt["masks"][stored.index(b)] > 0
            others = np.any([gt["masks"][stored.index(o)] > 0 for o in bones if o != b], axis=0)
            rim = gm ^ ndimage.binary_erosion(gm, iterations=2)
            rim |= ndimage.binary_dilation(gm, iterations=2) & ~gm
            gt_mesh = trimesh.load(a.data / row["mesh_dir"] / f"{b}.ply", process=False)
            samples = sample_surface(visible_part(gt_mesh, geo), 0.5)
            r_, c_, _ = geo.project(samples)
            ri, ci = np.clip(np.round(r_).astype(int), 0, h - 1), np.clip(np.round(c_).astype(int), 0, w - 1)
            edge = (ri < 4) | (ri >= h - 4) | (ci < 4) | (ci >= w - 4)
            before, total = ray_crossings(samples, gt_mesh, geo)
            inner = ~faces_see(before, total, 2)
            label = np.where(edge, "fov edge", np.where(rim[ri, ci], "rim", np.where(
                inner, "inner", np.where(others[ri, ci], "overlap", "interior"))))
            meshes = {"dual": reconstruct_bone(pred["masks"][c], pred["depth_front"][c], pred["depth_back"][c], geo, "dual")}
            if not isinstance(fits.get(b), Exception):
                meshes["ssm"] = visible_part(fits[b].mesh(b), geo, max_edge_mm=None)
            for m, mesh in meshes.items():
                d = point_to_surface(samples, mesh)
                for g in groups:
                    acc[(m, g)].append(d[label == g])
    print(f"{'oracle' if a.oracle else a.checkpoint}, {len(rows)} images, {'coupled' if a.coupled else 'per-bone'} SSM; "
          f"GT -> reconstruction distance, mm (mean; share of the GT surface)")
    total = sum(len(np.concatenate(acc[("dual", g)])) for g in groups)
    print("| region | share | dual-face | ssm |\n|---|---|---|---|")
    for g in groups:
        dd, ds = np.concatenate(acc[("dual", g)]), np.concatenate(acc[("ssm", g)]) if acc[("ssm", g)] else np.array([])
        print(f"| {g} | {100 * len(dd) / total:.0f}% | {dd.mean():.2f} | {ds.mean() if len(ds) else float('nan'):.2f} |")
    print(f"\nfit time per image (3 bones): median {np.median(fit_s):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
