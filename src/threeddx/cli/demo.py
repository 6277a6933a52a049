"""``3ddx demo``: the released models on the bundled example (:func:`threeddx.apps.demo.run_demo`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import device


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the released models on the bundled example: meshes, report.png, ASSD/HD95",
        description=(
            "Predict the bundled example radiograph (a simulated test subject) with the released dual-face "
            "model and the single-depth baseline, write meshes and report.png, and print ASSD and HD95 "
            "against the ground truth."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--view", action="store_true", help="also write each model's interactive view.html (3ddx view)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.apps.demo import run_demo

    run_demo(args.out, device=device(args.device), view=args.view)
    return 0
