"""Where the hip joints lie in the training bodies: the numbers behind the iso-centre rules.

    .venv/bin/python benchmarks/isocentre_rule.py [--bodies 20] [--seed 0]

A declared table height (geometry JSON ``source_to_table_mm``, DICOM Distance Source to Patient (0018,1111))
or skin distance becomes an iso-centre distance by :func:`threeddx.geometry.isocenter_from_table` and
:func:`~threeddx.geometry.isocenter_from_entrance`, whose constants are the medians printed here: per LLP26
adult (0-21) and ``--bodies`` bodies drawn as the simulator draws them (:func:`threeddx.simulator.phantom.sample_tissue`),
how far the hip joints' mid-point lies in front of the back (the table top) and behind the front skin
(:func:`threeddx.simulator.phantom.hip_depths`). The spread is what the rule cannot know from one image.

**With the body's AP thickness** at the hips (a caliper's reading, as technique charts use it; DICOM Body Part
Thickness (0018,11A0)): the least-squares lines hips-above-table = a + b T and hips-below-skin = T - (a + b T)
over the same bodies, their residual SD beside the constant's SD (:data:`threeddx.geometry.TABLE_TO_HIPS_LINE`
holds a and b). And what the image's own width would give instead (the body's lateral extent at the hips, when
the field shows it: the share of bodies narrower than the standard detector's field at the hips).
"""
from __future__ import annotations

import argparse
import datetime
import platform

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bodies", type=int, default=20, help="bodies drawn per LLP26 adult (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from threeddx.simulator.anatomy import PARTS, load_shape
    from threeddx.geometry import HIPS_ABOVE_TABLE_MM, HIPS_BELOW_ENTRANCE_MM
    from threeddx.geometry import (STANDARD_DETECTOR_MM, STANDARD_SDD_MM, STANDARD_SOURCE_TO_ISOCENTER_MM,
                                   TABLE_TO_HIPS_LINE)
    from threeddx.simulator.phantom import hip_depths, pelvic_points, sample_tissue, trunk_outline

    rng = np.random.default_rng(a.seed)
    back, front, width = [], [], []
    for k in range(22):
        shape = load_shape(k)
        pelvis = pelvic_points({p: (shape.vertices[p], shape.faces[p]) for p in PARTS})
        for _ in range(a.bodies):
            tissue = sample_tissue(rng)
            b, f = hip_depths(pelvis, shape.hip_centers, tissue)
            back.append(b)
            front.append(f)
            width.append(2 * (trunk_outline(pelvis, tissue)[0] + tissue["fat_mm"]))
    print(f"# {datetime.date.today()} {platform.machine()}; 22 adults x {a.bodies} bodies, seed {a.seed}")
    print("| hip joints' mid-point | median (mm) | 5 % | 95 % | SD | constant in threeddx.geometry |")
    print("|---|---|---|---|---|---|")
    for name, v, const in (("in front of the table top (back)", back, f"HIPS_ABOVE_TABLE_MM = {HIPS_ABOVE_TABLE_MM:g}"),
                           ("behind the skin facing the source", front,
                            f"HIPS_BELOW_ENTRANCE_MM = {HIPS_BELOW_ENTRANCE_MM:g}"),
                           ("body thickness (AP)", np.add(back, front), "")):
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        print(f"| {name} | {p50:.1f} | {p5:.1f} | {p95:.1f} | {np.std(v):.1f} | {const} |")
    back, front, width = np.asarray(back), np.asarray(front), np.asarray(width)
    thick = back + front
    print("\n| hips above the table top, predicted from | a (mm) | b | residual SD (mm) | in threeddx.geometry |")
    print("|---|---|---|---|---|")
    print(f"| nothing (the median) | {np.median(back):.1f} | 0 | {np.std(back - np.median(back)):.1f} | "
          f"HIPS_ABOVE_TABLE_MM |")
    for name, x, const in (("the AP thickness T", thick, f"TABLE_TO_HIPS_LINE = {TABLE_TO_HIPS_LINE}"),
                           ("the lateral width W", width, "")):
        (c0, c1), *_ = np.linalg.lstsq(np.c_[np.ones_like(x), x], back, rcond=None)
        print(f"| {name} | {c0:.1f} | {c1:.3f} | {np.std(back - c0 - c1 * x):.1f} | {const} |")
    field = STANDARD_DETECTOR_MM * STANDARD_SOURCE_TO_ISOCENTER_MM / STANDARD_SDD_MM
    print(f"\nbodies narrower than the standard field at the hips ({field:.0f} mm): "
          f"{100 * np.mean(width < field):.0f} % (widths 5-95 %: {np.percentile(width, 5):.0f}-"
          f"{np.percentile(width, 95):.0f} mm)")


if __name__ == "__main__":
    main()
