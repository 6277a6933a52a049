"""``3ddx train``: train or resume a run from a YAML config (:func:`threeddx.training.train.train`)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from threeddx.errors import InputError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the dual-face network (or the single-depth baseline) from a YAML config",
        description=(
            "Train from a YAML config (see configs/). Multi-GPU: launch the same command with "
            "torchrun --nproc_per_node N (DistributedDataParallel)."
        ),
    )
    p.add_argument("--config", type=Path, required=True, help="YAML config")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint (last.pt)")
    p.add_argument("--init", help="fine-tune: start from this checkpoint's weights (a path, or a released name: dualface, dualface-128, single)")
    p.add_argument("--init-match", help="which of --init's tensors to take: all (the "
                   "same model settings; the default) or shapes (those of the same name and shape, e.g. a "
                   "single-depth head on a dual-face backbone; the others start fresh and are printed)")
    p.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run (deletes it)")
    p.add_argument("--loss", help="override the loss: single, dependent, independent or casi")
    p.add_argument("--data", help="override data.root")
    p.add_argument("--out", help="override out (run folder)")
    p.add_argument("--limit-train", type=int, help="override data.limit_train: train on the split's first N samples "
                   "(the manifest's order: whole subjects, their poses together; a data-size curve)")
    p.add_argument("--epochs", type=int, help="override optim.epochs")
    p.add_argument("--faces", type=int, help="override model.faces: depth faces per bone, even (2: front and back; "
                   "K > 2 needs data simulated with --faces K or more)")
    p.add_argument("--device", help="override device (cpu, cuda, auto)")
    p.add_argument("--budget-min", type=float, help="stop cleanly at the last epoch that ends within this many minutes "
                   "of this run (at least one epoch); --resume OUT/last.pt continues it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from threeddx.training.train import load_config, loss_override, train

    over: dict = {}
    if args.loss:
        over.update(loss_override(args.loss))
    if args.data:
        over["data"] = {"root": args.data}
    if args.out:
        over["out"] = args.out
    if args.limit_train is not None:
        over.setdefault("data", {})["limit_train"] = args.limit_train
    if args.epochs is not None:
        over.setdefault("optim", {})["epochs"] = args.epochs
    if args.device:
        over["device"] = args.device
    if args.faces is not None:
        over.setdefault("model", {})["faces"] = args.faces
    if args.init:
        over["init"] = args.init
    if args.init_match:
        over["init_match"] = args.init_match
    cfg = load_config(args.config, over)
    if args.budget_min is not None and not (args.budget_min > 0 and math.isfinite(args.budget_min)):
        raise InputError(f"--budget-min must be a positive number of minutes, got {args.budget_min}")
    budget = None if args.budget_min is None else 60.0 * args.budget_min
    rec = train(cfg, resume=args.resume, overwrite=args.overwrite, budget_s=budget)
    if rec.get("stopped_at_budget"):
        print(f"{cfg['out']}: stopped at the budget after epoch {rec['epoch']} of {cfg['optim']['epochs']}; "
              f"--resume {cfg['out']}/last.pt continues")
    elif rec.get("finished"):
        print(f"{cfg['out']}: training had already finished (epoch {rec['epoch']} of {cfg['optim']['epochs']}); "
              "nothing to do (raise --epochs to train longer)")
    elif rec:
        print(f"done: {cfg['out']}/last.pt and best.pt (epoch {rec['epoch']})")
    return 0
