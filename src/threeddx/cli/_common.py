"""What every command shares: the device option, the shape-model options and the hip-joint anchoring switch."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from threeddx.errors import InputError


#: ``--checkpoint``'s help, one text for every command (the names: threeddx.network.checkpoint.RELEASED).
CHECKPOINT_HELP = "a checkpoint, or a released model: dualface (256 px, the default), dualface-128 or single"


def device(name: str) -> str:
    """``--device``: cpu, cuda, cuda:N, mps, or auto (cuda when available); checked before any work."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise InputError(f"--device must be cpu, cuda, cuda:N, mps or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: no Apple GPU is available")
    return name


def add_ssm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ssm-config", type=Path, help="YAML with an 'ssm' section (fit settings, see threeddx.meshing.ssm)")
    p.add_argument("--ssm-coupled", action="store_true", help="fit one shape for pelvis and femurs (default per bone)")


def ssm_settings(args: argparse.Namespace, checkpoint_config: dict | None = None):
    """Fit settings: the checkpoint config's ``ssm`` section, then --ssm-config, then --ssm-coupled."""
    from threeddx.meshing.ssm import FitSettings

    d = dict((checkpoint_config or {}).get("ssm") or {})
    if getattr(args, "ssm_config", None):
        import yaml

        try:
            user = yaml.safe_load(args.ssm_config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"cannot read --ssm-config {args.ssm_config}: {e}") from None
        section = user.get("ssm", user) if isinstance(user, dict) else None
        if not isinstance(section, dict):
            raise InputError(f"--ssm-config {args.ssm_config}: expected an 'ssm' section of settings")
        d.update(section)
    if getattr(args, "ssm_coupled", False):
        d["coupled"] = True
    return FitSettings.from_dict(d)


def add_hip_anchor_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-hip-anchor", action="store_true",
                   help="keep the network's femur depths (default: each femur is moved along the beam to the hip joint "
                   "that a shape-model fit of the pelvis locates; threeddx.inference.hipjoint)")


def add_mirror_option(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mirror", dest="mirror", action="store_const", const=True, default=None,
                   help="average the network with its mirrored view (default: when the checkpoint was trained with "
                   "mirrored patients; threeddx.inference.predictor.mirror_average)")
    g.add_argument("--no-mirror", dest="mirror", action="store_const", const=False, help="the direct view only")


def hip_anchor(args: argparse.Namespace):
    """``--no-hip-anchor``: None (off), else the default :class:`threeddx.inference.hipjoint.AnchorSettings`."""
    from threeddx.inference.hipjoint import AnchorSettings

    return None if getattr(args, "no_hip_anchor", False) else AnchorSettings()


def add_geometry_options(p: argparse.ArgumentParser) -> None:
    """--geometry, or --pixel-mm (and --sdd-mm) for an image without a geometry file (predict, inspect)."""
    p.add_argument("--geometry", type=Path, help="geometry JSON of the image")
    p.add_argument("--pixel-mm", type=float, help="without a geometry file: the detector's pixel size (mm); the "
                   "geometry is built for the image's own shape, the patient in the model's nominal pose")
    p.add_argument("--sdd-mm", type=float, help="with --pixel-mm: the source-to-detector distance (mm; default the "
                   "model's, 1000)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--isocenter-mm", type=float, help="the hip joints' distance from the source (mm), over what the "
                   "image file says (default: its tags, else the patient on the table as in training)")
    g.add_argument("--table-mm", type=float, help="the table top's distance from the source (mm): the hip joints "
                   "taken 145 mm in front of it, or by --body-thickness-mm (threeddx.geometry.isocenter_from_table)")
    g.add_argument("--marker-mm", type=float, help="a calibration sphere of this diameter (mm, typically 25) is in the "
                   "image: it is found, its magnification gives its distance from the source, and the bones are "
                   "placed by it (threeddx.inference.marker)")
    p.add_argument("--body-thickness-mm", dest="thickness_mm", type=float,
                   help="with --table-mm: the body's AP thickness at the hips (mm, a caliper's reading): the hip joints "
                   "then lie 40.8 + 0.381 x it in front of the table (threeddx.geometry.TABLE_TO_HIPS_LINE)")
    p.add_argument("--marker-offset-mm", type=float, default=0.0,
                   help="with --marker-mm: how much further from the source the hip joints lie than the marker's centre "
                   "(mm; default 0: the ball at the greater trochanter's level, as deep as the hip joints)")


def marker_spec(args: argparse.Namespace):
    """``--marker-mm``/``--marker-offset-mm`` as a :class:`threeddx.apps.predict.MarkerSpec`, or None."""
    from threeddx.apps.predict import MarkerSpec

    if getattr(args, "marker_mm", None) is None:
        if getattr(args, "marker_offset_mm", 0.0):
            raise InputError("--marker-offset-mm needs --marker-mm")
        return None
    return MarkerSpec(args.marker_mm, args.marker_offset_mm)


def declared_geometry(args: argparse.Namespace):
    """``--pixel-mm``/``--sdd-mm``/``--isocenter-mm``/``--table-mm`` as a :class:`threeddx.apps.radiograph.Declared`, or
    None when none is given."""
    from threeddx.apps.predict import Declared

    values = {k: getattr(args, k, None) for k in ("pixel_mm", "sdd_mm", "isocenter_mm", "table_mm", "thickness_mm")}
    return None if all(v is None for v in values.values()) else Declared(**values)
