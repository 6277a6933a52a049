"""``3ddx simulate``: training data from the LLP26 shapes (:func:`threeddx.simulator.simulate.simulate`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from threeddx.errors import InputError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="training data: synthetic CTs around real bone shapes, rendered at seeded poses",
        description=(
            "Build a training set from the LLP26 adult shapes (subjects 0-21; 22-25 are reserved "
            "and refused) and random shapes from a PCA of the training subjects: a synthetic CT per "
            "subject, rendered at seeded AP poses. Or, with --cts/--ct-dir, from your own CTs and label "
            "maps. Resumable: run the same command again to finish."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--subjects", default="0-21", help="LLP26 subjects, e.g. 0-21 or 0,3,5 (default 0-21)")
    p.add_argument("--random-subjects", type=int, default=0, help="random PCA shapes (training split)")
    p.add_argument("--poses", type=int, default=4, help="views per subject (default 4)")
    p.add_argument("--size", type=int, default=256, help="detector pixels per side (default 256)")
    p.add_argument("--bones", nargs="+", default=None,
                   help="bones (default: pelvis sacrum femur_left femur_right; with --cts/--ct-dir as in 3ddx render: "
                   "TotalSegmentator names, groups such as pelvis or spine, NAME=ID+ID; default pelvis femur_left "
                   "femur_right)")
    p.add_argument("--voxel-mm", type=float, default=1.0, help="synthetic CT voxel size (default 1 mm)")
    p.add_argument("--write-ct", action="store_true", help="also write each subject's CT and labels as NIfTI")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes of a local Dask cluster (default 1: no cluster, this process)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://HOST:8786) to submit to; its "
                   "workers must see --out and the inputs at the same paths")
    p.add_argument("--cts", type=Path, help="a CT collection: CSV with case_id, ct, labels[, split] (README)")
    p.add_argument("--ct-dir", type=Path, help="a CT collection as a folder (CASE/ct.nii.gz + CASE/labels.nii.gz, ...)")
    p.add_argument("--label-table", help="with --cts/--ct-dir: CSV id,name of the label maps (default TotalSegmentator v2)")
    p.add_argument("--seed", type=int, default=0, help="seed of shapes, tissues and poses (default 0)")
    p.add_argument("--body", nargs="+", default=[], metavar="KEY=VALUE",
                   help="fix body parameters for every subject, e.g. fat_mm=80 thigh_spread_mm=-25 zip=1 "
                   "(keys: threeddx.simulator.phantom.TISSUE_RANGES and OPTIONAL_PROBABILITIES; docs/data.md)")
    p.add_argument("--sdd-mm", type=float, default=1000.0,
                   help="source-to-detector distance (default 1000); the patient stays 180 mm from the detector")
    p.add_argument("--faces", type=int, default=2,
                   help="depth faces per bone and ray, even (default 2: first entry, last exit; 4 adds the first "
                   "exit and the last entry: the inner surfaces, docs/data.md)")
    p.add_argument("--beam-offset-mm", type=float, default=0.0,
                   help="shift every pose along the beam, e.g. a table 30 mm higher (default 0)")
    p.add_argument("--on-table", action="store_true",
                   help="each body rests on a table top 35 mm above the detector, so its hips lie as high as its back "
                   "carries them (no random shift along the beam); each sample stores the table's distance and the "
                   "body's AP thickness, for evaluate --declare")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError("--workers must be at least 1")
    if args.cts is not None or args.ct_dir is not None:
        return run_collection(args)
    from threeddx.simulator.anatomy import parse_subject_range
    from threeddx.bones import simulated
    from threeddx.simulator.phantom import parse_body_overrides
    from threeddx.simulator.simulate import SimSettings, simulate

    settings = SimSettings(
        subjects=parse_subject_range(args.subjects) if args.subjects else [],
        random_subjects=args.random_subjects,
        poses=args.poses,
        size=args.size,
        seed=args.seed,
        bones=list(args.bones or simulated()),
        voxel_mm=args.voxel_mm,
        write_ct=args.write_ct,
        body=parse_body_overrides(args.body),
        sdd_mm=args.sdd_mm,
        beam_offset_mm=args.beam_offset_mm,
        on_table=args.on_table,
        faces=args.faces,
    )
    simulate(settings, args.out, workers=args.workers, scheduler=args.scheduler)
    return 0


def run_collection(args: argparse.Namespace) -> int:
    """``--cts`` / ``--ct-dir``: the user's CTs instead of synthetic bodies (:mod:`threeddx.simulator.collection`)."""
    from threeddx.simulator.collection import collection_settings, simulate_collection
    from threeddx.bones import DEFAULT_BONES

    synthetic_only = [o for o, v in (("--random-subjects", args.random_subjects), ("--write-ct", args.write_ct),
                                     ("--body", args.body), ("--beam-offset-mm", args.beam_offset_mm),
                                     ("--on-table", args.on_table),
                                     ("--voxel-mm", args.voxel_mm != 1.0)) if v]
    if synthetic_only:
        raise InputError(f"{', '.join(synthetic_only)}: only for synthetic bodies, not with --cts/--ct-dir")
    settings = collection_settings(args.cts, args.ct_dir, bones=list(args.bones or DEFAULT_BONES),
                                   label_table=args.label_table, poses=args.poses, size=args.size, seed=args.seed,
                                   sdd_mm=args.sdd_mm, faces=args.faces)
    simulate_collection(settings, args.out, workers=args.workers, scheduler=args.scheduler)
    return 0
