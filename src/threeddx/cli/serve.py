"""``3ddx serve``: the local web app and JSON API (:mod:`threeddx.apps.serve`)."""
from __future__ import annotations

import argparse
import os

from ._common import CHECKPOINT_HELP, device


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web app: drop a radiograph, see the 3D view, download the meshes (and a JSON API)",
        description=(
            "Serve the upload page at http://HOST:PORT/ and the API (POST /predict, GET /jobs/ID). "
            "Binds 127.0.0.1 unless --host says otherwise; any other host needs --token."
        ),
    )
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=os.environ.get("THREEDDX_TOKEN"),
                   help="required from clients as 'Authorization: Bearer TOKEN' (default: $THREEDDX_TOKEN)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    p.add_argument("--queue", type=int, default=8, help="jobs that may wait; more get 503 + Retry-After (default 8)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a job may run (default 120)")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest upload (default 64 MB)")
    p.add_argument("--jobs-dir", help="where jobs are kept, each server in its own folder; a dead server's is "
                                      "removed at start (default: TMPDIR/3ddx-serve)")
    p.add_argument("--keep-jobs", type=int, default=200, help="finished jobs kept at most (default 200)")
    p.add_argument("--keep-hours", type=float, default=24.0, help="finished jobs are deleted after this (default 24)")
    p.add_argument("--keep-gb", type=float, default=2.0,
                   help="finished jobs are deleted, oldest first, while they hold more than this (default 2 GB)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.inference.predictor import Predictor
    from threeddx.apps.serve import ServeSettings, check_port, jobs_dir, serve

    settings = ServeSettings(host=args.host, port=args.port, token=args.token, workers=args.workers,
                             queue_size=args.queue, timeout_s=args.timeout, max_upload_mb=args.max_upload_mb,
                             keep_jobs=args.keep_jobs, keep_hours=args.keep_hours, keep_gb=args.keep_gb,
                             jobs_dir=args.jobs_dir)
    settings.check()  # before the model is loaded
    check_port(settings)
    jobs_dir(settings)
    predictor = Predictor(args.checkpoint, device(args.device))
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    print(f"3ddx serve: {where} (model {predictor.checkpoint}; {args.workers} worker(s), queue {args.queue}); "
          "Ctrl-C stops it", flush=True)
    serve(predictor, settings)
    return 0
