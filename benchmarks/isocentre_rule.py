"""Where the hip joints lie in the training bodies: the numbers behind the iso-centre rules.

    .venv/bin/python benchmarks/isocentre_rule.py [--bodies 20] [--seed 0]

A declared table height (geometry JSON ``source_to_table_mm``, DICOM Distance Source to Patient (0018,1111))
or skin distance becomes an iso-centre distance by :func:`threeddx.geometry.isocenter_from_table` and
:func:`~threeddx.geometry.isocenter_from_entrance`, whose constants are the medians printed here: per LLP26
adult (0-21) and ``--bodies`` bodies drawn as the simulator draws them (:func:`threeddx.simulator.phantom.sample_tissue`),
how far the hip joints' mid-point lies in front of the back (the table top) and behind the front skin
(:func:`threeddx.simulator.phantom.hip_depths`). The spread is what the rule cannot know from one image.
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
    from threeddx.simulator.phantom import hip_depths, pelvic_points, sample_tissue

    rng = np.random.default_rng(a.seed)
    back, front = [], []
    for k in range(22):
        shape = load_shape(k)
        pelvis = pelvic_points({p: (shape.vertices[p], shape.faces[p]) for p in PARTS})
        for _ in range(a.bodies):
            b, f = hip_depths(pelvis, shape.hip_centers, sample_tissue(rng))
            back.append(b)
            front.append(f)
    print(f"# {datetime.date.today()} {platform.machine()}; 22 adults x {a.bodies} bodies, seed {a.seed}")
    print("| hip joints' mid-point | median (mm) | 5 % | 95 % | SD | constant in threeddx.geometry |")
    print("|---|---|---|---|---|---|")
    for name, v, const in (("in front of the table top (back)", back, f"HIPS_ABOVE_TABLE_MM = {HIPS_ABOVE_TABLE_MM:g}"),
                           ("behind the skin facing the source", front,
                            f"HIPS_BELOW_ENTRANCE_MM = {HIPS_BELOW_ENTRANCE_MM:g}"),
                           ("body thickness (AP)", np.add(back, front), "")):
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        print(f"| {name} | {p50:.1f} | {p5:.1f} | {p95:.1f} | {np.std(v):.1f} | {const} |")


if __name__ == "__main__":
    main()
