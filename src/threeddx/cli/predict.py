"""``3ddx predict``: one radiograph in, meshes out (:func:`threeddx.apps.predict.predict_file`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threeddx.errors import InputError
from threeddx.meshing.reconstruct import MESHERS, mesher_help, mesher_option
from ._common import (CHECKPOINT_HELP, add_geometry_options, add_hip_anchor_option, add_mirror_option,
                      add_ssm_options, declared_geometry, device, hip_anchor, marker_spec, ssm_settings)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="X-ray in, bone meshes out",
        description=(
            "Predict every bone's mask and front/back depth maps from one radiograph and mesh them. "
            "IMAGE: PNG, TIFF, NPY, NPZ or DICOM. Geometry: --geometry, else --pixel-mm (and --sdd-mm), else "
            "the DICOM's tags, else the NPZ's own, else the checkpoint's."
        ),
    )
    p.add_argument("image", type=str, help="a radiograph; or a folder, a CSV (image[,geometry]) or a quoted glob "
                   "pattern of many: then --out is the batch folder (threeddx.apps.batch)")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    add_geometry_options(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mesh", type=mesher_option, metavar="{" + ",".join(MESHERS) + "}",
                   help=f"meshing of every bone ({mesher_help()}); default: the model's own (the released dual-face "
                   "model: ssm for the pelvis, dual for the femurs, chosen on the validation split; any other model: "
                   "dual)")
    p.add_argument("--complete-femur", action="store_true",
                   help="with --mesh ssm: output whole femurs; the part outside the image is inferred by the model")
    add_ssm_options(p)
    p.add_argument("--no-measure", dest="measure", action="store_false",
                   help="skip the hip's measurements (summary.json's measurements; they fit the femurs' shape model "
                   "when --mesh does not, about a second per femur)")
    p.add_argument("--frame", default="world", choices=["world", "source"], help="coordinates of the outputs")
    p.add_argument("--view", action="store_true", help="also write view.html, the interactive 3D view (3ddx view)")
    add_hip_anchor_option(p)
    add_mirror_option(p)
    p.add_argument("--force", action="store_true",
                   help="reconstruct every bone with a mask even when the image does not look like a hip radiograph")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1, help="many images: local worker processes (Dask; default 1)")
    p.add_argument("--scheduler", help="many images: a running Dask scheduler's address (tcp://HOST:8786)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.apps.predict import Predictor, predict_file

    declared = declared_geometry(args)
    from threeddx.apps.batch import is_batch_input

    if is_batch_input(args.image):
        return run_batch(args, declared)
    if args.workers != 1 or args.scheduler:
        raise InputError("--workers and --scheduler are for many images (a folder, a CSV or a glob pattern)")
    predictor = Predictor(args.checkpoint, device(args.device), hip_anchor=hip_anchor(args), mirror=args.mirror)
    s = predict_file(args.image, predictor, args.out, args.geometry, args.mesh, args.frame,
                     ssm_settings=ssm_settings(args, predictor.ck.get("config")), complete_femur=args.complete_femur,
                     force=args.force, warn=lambda line: print(f"3ddx: warning: {line}", file=sys.stderr),
                     view=args.view, declared=declared, measure=args.measure, marker=marker_spec(args))
    for name, b in s["bones"].items():
        vol = f", {b['volume_cm3']:.0f} cm3" if b["volume_cm3"] else ""
        print(f"  {name}: {b['vertices']} vertices{vol}")
        if "inferred" in b:
            print(f"    note: {b['inferred']}")
    for name in s["missing"]:
        print(f"  {name}: not found in the image")
    if s.get("marker", {}).get("applied"):
        m = s["marker"]
        print(f"  marker: {m['diameter_mm']:g} mm ball {m['distance_mm']:.0f} mm from the source (measured on the "
              f"{m['read_on']}); the hips placed at {m['hips_depth_mm']:.0f} mm (moved {m['moved_mm']:+.1f} mm)")
    for name, b in s["bones"].items():
        if not b["found"]:
            print(f"  {name}: written because of --force, but not found ({s['checks'][name]['why_not']})")
    total = sum(s["timings_s"].values())
    print(f"wrote {args.out} ({total:.2f} s: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in s["timings_s"].items()) + ")")
    return 0


def run_batch(args: argparse.Namespace, declared) -> int:
    """Many images (threeddx.apps.batch): one result folder each, batch.csv and problems.csv."""
    from threeddx.apps.batch import predict_batch

    if args.geometry or declared is not None:
        raise InputError("a batch takes each image's geometry from its file or the table's 'geometry' column, "
                         "not --geometry, --pixel-mm, --isocenter-mm or --table-mm")
    spec = {"checkpoint": args.checkpoint, "device": device(args.device), "hip_anchor": not args.no_hip_anchor,
            "mirror": args.mirror}
    options = {"mesh_method": args.mesh, "frame": args.frame, "complete_femur": args.complete_femur,
               "force": args.force, "view": args.view, "measure": args.measure, "marker": marker_spec(args)}
    if args.ssm_config or args.ssm_coupled:
        from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint

        options["ssm_settings"] = ssm_settings(args, load_checkpoint(resolve_checkpoint(args.checkpoint)).get("config"))
    r = predict_batch(args.image, args.out, spec, options, args.workers, args.scheduler)
    print(f"{r['written']} of {r['images']} images written to {args.out} ({r['refused']} refused: "
          f"{r['problems_csv']}); per image and bone: {r['batch_csv']}")
    return 0
