"""``3ddx inspect``: what predict reads from an image and assumes, before it runs (:func:`threeddx.apps.predict.inspect_image`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import CHECKPOINT_HELP, add_geometry_options, declared_geometry, device, marker_spec


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="what predict reads from an image and what it assumes (geometry, intensities, the model's verdict)",
        description=("One screen (or --json) of an image as predict would take it: size, pixel size, SDD, the "
                     "iso-centre and where each came from, the pose, the intensity steps, the reading convention, "
                     "each bone's confidence, and every warning. Nothing is written."),
    )
    p.add_argument("image", type=Path)
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    add_geometry_options(p)
    p.add_argument("--json", action="store_true", help="print the JSON instead of the screen")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.apps.predict import Predictor, inspect_image

    r = inspect_image(args.image, Predictor(args.checkpoint, device(args.device), hip_anchor=None), args.geometry,
                      declared_geometry(args), marker_spec(args))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    rows, cols = r["size_px"]
    sr, sc = r["pixel_spacing_mm"]
    print(f"{r['image']}")
    print(f"  size:        {rows} x {cols} px, pixels {sr:g} x {sc:g} mm  (geometry from {r['geometry_from']})")
    print(f"  SDD:         {r['source_to_detector_mm']:g} mm")
    print(f"  iso-centre:  {r['source_to_isocenter_mm']:g} mm from the source ({r['isocenter']})")
    if "marker" in r:
        m = r["marker"]
        print(f"  marker:      {m['diameter_mm']:g} mm ball at row {m['centre_px'][0]:.1f} col {m['centre_px'][1]:.1f}, "
              f"{m['distance_mm']:.1f} mm from the source ({m['apparent_diameter_px']:.2f} px across, measured on "
              f"the {m['read_on']})")
    print(f"  pose:        {r['pose']}")
    print(f"  reading:     {r['reading']}")
    print(f"  intensities: {'; '.join(r['intensity_steps']) or 'as stored (no LUT, no inversion)'}")
    for name, value in r["dicom_tags"].items():
        print(f"  tag:         {name} = {value if isinstance(value, str) else chr(92).join(value)}")
    for line in r["assumptions"]:
        print(f"  assumed:     {line}")
    v = r["model_view"]
    print(f"  model view:  scale {v['scale']:g}, iso-centre shift {v['isocenter_shift_mm']:g} mm")
    for bone, c in r["bones"].items():
        verdict = "found" if c["found"] else f"not found ({c.get('why_not', '')})"
        print(f"  {bone:12s} confidence {c['confidence']:.2f}: {verdict}")
    print(f"  hip anatomy: {'found' if r['hip_found'] else 'NOT found: predict would refuse this image'}")
    for line in r["warnings"]:
        print(f"  warning: {line}")
    return 0
