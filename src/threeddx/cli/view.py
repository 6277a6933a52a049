"""``3ddx view``: the interactive 3D view of a result folder (:func:`threeddx.apps.view.view_folder`)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="write view.html: the radiograph with its masks and the meshes in 3D, for any browser, offline",
        description=(
            "Write DIR/view.html for a predict result (or DIR/MODEL/view.html for each model of a demo result): "
            "one self-contained page that opens offline in any browser."
        ),
    )
    p.add_argument("dir", type=Path, help="a 3ddx predict or demo result folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.apps.view import view_folder

    for page in view_folder(args.dir):
        print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB; open it in a browser)")
    return 0
