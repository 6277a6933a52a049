"""``3ddx evaluate``: ASSD/HD95 on a simulated split (:func:`threeddx.evaluation.evaluate.evaluate`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from threeddx.meshing.reconstruct import MESHERS, mesher_option
from ._common import (CHECKPOINT_HELP, add_hip_anchor_option, add_mirror_option, add_ssm_options, device, hip_anchor,
                      ssm_settings)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="ASSD / HD95 against the ground-truth meshes of a simulated split",
        description="Evaluate a checkpoint (or, with --oracle, the ground-truth depths) on a simulated split.",
    )
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--data", type=Path, required=True, help="a 3ddx simulate folder")
    p.add_argument("--chain", help="imaging chain making each image from its material line integrals: 'random' "
                   "(seeded by --seed) or a preset (standard, no-grid, low-dose, edge-enhanced, jpeg-8bit, inverted, "
                   "...); default: the stored image")
    p.add_argument("--seed", type=int, default=0, help="seed of the chains' noise and of random chains")
    p.add_argument("--split", default="test")
    p.add_argument("--mesh", type=mesher_option, metavar="{" + ",".join(MESHERS) + "}",
                   help="mesher for every bone (threeddx.meshing.reconstruct.MESHERS); default: the model's own, as predict "
                   "meshes (the released dual-face model: ssm for the pelvis, dual for the femurs), dual for --oracle")
    add_ssm_options(p)
    add_hip_anchor_option(p)
    add_mirror_option(p)
    p.add_argument("--oracle", action="store_true", help="use the ground-truth masks and depths")
    p.add_argument("--faces", type=int, default=2,
                   help="with --oracle: mesh K ground-truth depth faces per bone (samples simulated with --faces K; "
                   "default 2)")
    p.add_argument("--seen", action="store_true",
                   help="also score protocol (b): against the part of the ground truth that the depth faces see "
                   "(docs/results.md)")
    p.add_argument("--declare", choices=["table", "table+thickness"],
                   help="with samples simulated --on-table: declare the table's distance (and the body's AP thickness) "
                   "as a user would, instead of the default iso-centre (threeddx.evaluation.evaluate.DECLARATIONS)")
    p.add_argument("--measure", action="store_true",
                   help="also the hip's measurements, predicted against the truth's: measurements.csv and results.json's "
                   "measurements (mean absolute error, bias, limits of agreement)")
    p.add_argument("--bones", nargs="+")
    p.add_argument("--limit", type=int, help="evaluate the first N samples only")
    p.add_argument("--view", action="store_true",
                   help="also write gallery.html (every image, worst first) and each image's 3D view (views/)")
    p.add_argument("--workers", type=int, default=1, help="worker processes of a local Dask cluster (default 1)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler to submit the images to")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.evaluation.evaluate import evaluate

    checkpoint = None if args.oracle else (args.checkpoint or "dualface")
    evaluate(args.data, args.out, checkpoint, args.split, args.mesh, args.oracle, args.bones, args.limit,
             device=device(args.device), ssm_settings=ssm_settings(args) if args.mesh == "ssm" else None,
             chain=args.chain, seed=args.seed, view=args.view, workers=args.workers, scheduler=args.scheduler,
             hip_anchor=hip_anchor(args), mirror=args.mirror, faces=args.faces, seen=args.seen,
             measure=args.measure, declare=args.declare)
    return 0
