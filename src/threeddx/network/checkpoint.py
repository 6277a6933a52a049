"""Checkpoints: save, load safely, export a release, find the released models.

A checkpoint is a ``torch.save`` dict of plain data (str, int, float, bool,
None, lists, dicts) and tensors: the model's weights and settings, its bones,
the nominal geometry it was trained for, the CASI offset, the training config
and, for ``last.pt``, the optimiser, scheduler and RNG states.

**Loading cannot run code.** :func:`load_checkpoint` reads with
``torch.load(weights_only=True)``: PyTorch's restricted unpickler accepts only
tensors and plain containers, so a crafted pickle (one whose ``__reduce__``
calls ``os.system``, say) is refused before anything in it runs, with one line
naming the file. For that, every state is stored as plain data: the Python
and NumPy RNG states become lists and tensors (:func:`rng_state`).

**A checkpoint is a file a user hands us**, so its contents are checked
before anything is allocated or run (:meth:`Checkpoint.check_names`,
:meth:`Checkpoint.check_values`): bone names that are safe identifiers and
agree with the network, a network of bounded size, a physical nominal
geometry, thresholds and offsets within range, typed refusal statistics.
The checks are plain code, not a schema library (pydantic is installed, with
FastAPI): the schema is one dataclass of a dozen fields, the bounds are
ranges pydantic would need validators for anyway, and every failure must be
one line naming the file and key, which plain checks give directly.

Neither this module nor :mod:`threeddx.network.model` imports the training code, so
predict, evaluate and demo load models without it.
"""
from __future__ import annotations

import pickle
import random
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from threeddx.errors import InputError, check_number
from threeddx.geometry import PHYSICAL_LIMITS
from threeddx.io import atomic_path, check_names

#: Checkpoint layout version (1: the first; still the same keys).
CKPT_FORMAT = 1

@dataclass
class Checkpoint:
    """The typed contents of a checkpoint: what inference needs, and where it came from.

    The file is a dict of plain data and tensors (:func:`save_checkpoint`); this
    is its schema. A training checkpoint (``last.pt``) also holds the optimiser,
    scheduler, scaler and RNG states and the epoch/step/best counters, read by
    the trainer only.
    """

    model: dict  # weights: parameter name -> tensor
    model_config: dict  # threeddx.network.model.ModelConfig as a dict
    bones: list  # the bones, in the order of the network's outputs
    geometry: str  # the nominal geometry trained for (XrayGeometry JSON)
    config: dict  # the training config (YAML as a dict)
    casi_offset_mm: float | None = None  # the CASI models' mean bone depth (mm from the source), else None
    confidence: dict | None = None  # training masks' statistics for the refusal checks
    faces: int = 2  # depth faces per bone (front and back)
    mask_threshold: float | None = None  # the calibrated mask threshold, else the inference default
    #: trained with mirrored patients (data.mirror > 0): inference averages with the mirrored view
    #: (threeddx.inference.predictor.mirror_average); a model without them has learnt side-specific priors
    mirror_tta: bool = False
    #: {bone: mesher} chosen for this model on the validation split (threeddx.meshing.reconstruct.MESHERS; a bone not
    #: named, or no entry: dual, front for a single-depth model); ``--mesh`` overrides it
    mesh: dict | None = None
    #: {bone: mm}: the 1-SD uncertainty of the bone's placement along the beam, the RMS of the best shift along
    #: the beam on the validation split (benchmarks/placement.py); None: not calibrated
    placement_sd_mm: dict | None = None
    #: {femur bone: degrees}: the 1-SD uncertainty of the femur's shaft tilt out of the detector plane (hip
    #: flexion as the view sees it; threeddx.inference.measure.shaft_tilt_deg), the RMS of the predicted minus
    #: the true tilt on the validation split (benchmarks/placement.py); None: not calibrated
    tilt_sd_deg: dict | None = None
    epoch: int = 0
    threeddx_version: str = ""  # provenance: the version that wrote it
    release: dict = field(default_factory=dict)  # provenance of a released model (run, command, test figures)
    format: int = CKPT_FORMAT

    REQUIRED = ("model", "model_config", "bones", "geometry")

    @classmethod
    def from_dict(cls, ck: dict, where: str | Path = "checkpoint") -> "Checkpoint":
        missing = [k for k in cls.REQUIRED if k not in ck]
        if missing:
            raise InputError(f"{where}: a 3ddx checkpoint without {', '.join(missing)}")
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in ck.items() if k in names and v is not None}
        kwargs["config"] = ck.get("config") or {}
        out = cls(**kwargs)
        out.check_names(where)
        out.check_values(where)
        return out

    def check_values(self, where: str | Path) -> None:
        """Every setting inference reads, within what a trained model can hold, before anything is allocated
        or run (one InputError naming the file and the key): the network's size, the nominal geometry
        (a valid document, an X-ray system's SDD, a bounded grid), the mask threshold, the CASI offset,
        the refusal statistics and the meshers."""
        from threeddx.geometry import PHYSICAL_LIMITS, XrayGeometry
        from threeddx.meshing.reconstruct import MESHERS

        mc = self.model_config
        if not isinstance(mc, dict):
            raise InputError(f"{where}: model_config must be a table of settings")
        check_number(mc.get("width", 32), 1, MAX_WIDTH, where, "model_config.width", whole=True)
        check_number(mc.get("levels", 4), 1, 8, where, "model_config.levels", whole=True)
        check_number(mc.get("blocks", 1), 1, 8, where, "model_config.blocks", whole=True)
        for key, lo, hi in (("sdd_mm", 100.0, 5000.0), ("depth_lo", 0.01, 2.0), ("depth_hi", 0.01, 2.0),
                            ("thickness_mm", 0.1, 500.0)):
            if key in mc:
                check_number(mc[key], lo, hi, where, f"model_config.{key}")
        for key, value in (("faces", self.faces), ("model_config.faces", mc.get("faces", self.faces))):
            if check_number(value, 2, MAX_FACES, where, key, whole=True) % 2:
                raise InputError(f"{where}: {key} must be even, got {value!r}")
        if not isinstance(self.geometry, str):
            raise InputError(f"{where}: geometry must be a geometry JSON string")
        geo = XrayGeometry.from_json(self.geometry, where=f"{where}: geometry")
        lo, hi = PHYSICAL_LIMITS["source_to_detector_mm"]  # the pixel size is the model's own (tiny tests: 13 mm)
        check_number(geo.sdd, lo, hi, where, "geometry.source_to_detector_mm")
        if geo.detector_shape[0] * geo.detector_shape[1] > MAX_MODEL_PIXELS:
            raise InputError(f"{where}: geometry: a {geo.detector_shape[0]}x{geo.detector_shape[1]} model grid is over "
                             f"{MAX_MODEL_PIXELS} pixels")
        if self.mask_threshold is not None:
            check_number(self.mask_threshold, 0.0, 1.0, where, "mask_threshold", open_ends=True)
        if self.casi_offset_mm is not None:  # a mean bone depth: mm from the source, within the SDD's bounds
            check_number(self.casi_offset_mm, *PHYSICAL_LIMITS["source_to_detector_mm"], where, "casi_offset_mm")
        if not isinstance(self.mirror_tta, bool):
            raise InputError(f"{where}: mirror_tta must be true or false, got {self.mirror_tta!r}")
        if self.placement_sd_mm is not None:
            if not isinstance(self.placement_sd_mm, dict):
                raise InputError(f"{where}: placement_sd_mm must be a table of bones")
            for bone, sd in self.placement_sd_mm.items():
                check_number(sd, 0.0, 500.0, where, f"placement_sd_mm.{bone}")
        if self.tilt_sd_deg is not None:
            if not isinstance(self.tilt_sd_deg, dict):
                raise InputError(f"{where}: tilt_sd_deg must be a table of bones")
            for bone, sd in self.tilt_sd_deg.items():
                check_number(sd, 0.0, 90.0, where, f"tilt_sd_deg.{bone}")
        for bone, mesher in (self.mesh or {}).items():
            if mesher not in MESHERS:
                raise InputError(f"{where}: mesh.{bone} {str(mesher)[:40]!r} is not a mesher ({', '.join(MESHERS)})")
        if self.confidence is not None:
            c = self.confidence
            if not isinstance(c, dict) or not isinstance(c.get("bones", {}), dict):
                raise InputError(f"{where}: confidence must be a table with 'size' and 'bones'")
            check_number(c.get("size", 1), 1, 16384, where, "confidence.size", whole=True)
            for bone, st in c.get("bones", {}).items():
                key = f"confidence.bones.{bone}"
                if not isinstance(st, dict):
                    raise InputError(f"{where}: {key} must be a table")
                for k in ("area_px_median", "area_px_min"):
                    if k in st:
                        check_number(st[k], 0.0, 1e9, where, f"{key}.{k}")
                for k in ("centroid_mean", "centroid_sd"):
                    if k in st:
                        v = st[k]
                        if not isinstance(v, (list, tuple)) or len(v) != 2:
                            raise InputError(f"{where}: {key}.{k} must be two numbers")
                        for x in v:
                            check_number(x, 1e-9 if k == "centroid_sd" else -1e6, 1e6, where, f"{key}.{k}")

    def check_names(self, where: str | Path) -> None:
        """Bone names become file names (``BONE.stl``): each must be a safe identifier, each once
        (:func:`threeddx.io.check_names`), and every per-bone table must name only these bones."""
        bones = check_names(self.bones, f"{where}: bones")
        model_bones = self.model_config.get("bones") if isinstance(self.model_config, dict) else None
        if model_bones is not None and list(model_bones) != bones:
            raise InputError(f"{where}: bones {bones} differ from the network's model_config.bones {list(model_bones)[:8]}")
        for key in ("mesh", "confidence", "placement_sd_mm", "tilt_sd_deg"):
            table = getattr(self, key)
            if key == "confidence" and isinstance(table, dict):
                table = table.get("bones", {})
            if table is None:
                continue
            if not isinstance(table, dict) or any(b not in bones for b in table):
                odd = [b for b in (table if isinstance(table, dict) else [table]) if b not in bones][:1]
                raise InputError(f"{where}: {key} names a bone the model does not have ({str(odd)[:80]})")

    def to_dict(self) -> dict:
        """Plain data for :func:`save_checkpoint` (the weights as they are, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # read access by key, as for the plain dict older code and tests use
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in {f.name for f in fields(self)} and getattr(self, key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value


#: Bounds of :meth:`Checkpoint.check_values`: far above any trained model, far below what exhausts memory.
MAX_WIDTH = 512
MAX_FACES = 16
MAX_MODEL_PIXELS = 4096 * 4096


#: What a released checkpoint keeps: the typed fields (enough to predict, nothing to resume training);
#: ``release`` is written by :func:`export_release` itself.
RELEASE_KEYS = tuple(f.name for f in fields(Checkpoint) if f.name != "release")

#: The released models bundled with the package (src/threeddx/data/weights/MODEL_CARD.md): name -> file.
#: ``dualface`` (the default of predict, evaluate, the demo and the server) is the 256 px dual-face model;
#: ``dualface-128`` the 128 px one it was fine-tuned from (the release until 2026-12-06); ``single`` the
#: single-depth baseline (128 px).
RELEASED = {"dualface": "dualface-256.pt", "dualface-128": "dualface-128.pt", "single": "single-128.pt"}


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain data (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [int(version), list(internal), gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(s: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = s["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(s["torch"])


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` atomically (a complete file or the previous one, never half a file)."""
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint without running any code from it.

    A missing, corrupt, foreign or code-carrying file ends in one
    :class:`~threeddx.errors.InputError` line that names it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise InputError(f"checkpoint is not a file: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:
            raise InputError(f"cannot read checkpoint {path}: not a PyTorch checkpoint file") from None
        # the restricted unpickler refused a global (a function or class) before calling it
        raise InputError(f"refused checkpoint {path}: it asks to load {found.group(1)}, but a checkpoint may hold only "
                         "tensors and plain data; 3ddx never loads code from a checkpoint") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise InputError(f"cannot read checkpoint {path}: {type(e).__name__}") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise InputError(f"{path} is not a 3ddx checkpoint of format {CKPT_FORMAT}")
    return ck


def export_release(checkpoint: str | Path, out: str | Path, half: bool = True, info: dict | None = None) -> int:
    """Write a slim, predict-only copy of a checkpoint (no optimiser or RNG state); returns its size in bytes.

    ``half`` stores the weights as float16 (half the size; they are cast back
    to float32 on loading). ``info`` (JSON-able) is kept under ``release``.
    """
    ck = load_checkpoint(checkpoint)
    slim = {k: ck[k] for k in RELEASE_KEYS if k in ck}
    if half:
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
    slim["release"] = dict(info or {})
    out = Path(out)
    save_checkpoint(slim, out)
    return out.stat().st_size


def resolve_checkpoint(name: str | Path | None) -> Path:
    """A checkpoint path, or a released model's name (:data:`RELEASED`; None: ``dualface``)."""
    if name is None or str(name) in RELEASED:
        from importlib.resources import files

        key = "dualface" if name is None else str(name)
        path = Path(str(files("threeddx") / "data" / "weights" / RELEASED[key]))
        if not path.exists():
            raise InputError(f"the released model {key!r} is not installed ({path}); give --checkpoint")
        return path
    return Path(name)


def build_model(ck: dict, where: str | Path = "checkpoint") -> torch.nn.Module:
    """The network of a loaded checkpoint, its weights in place (float32).

    A checkpoint whose settings or weights do not fit this version's network
    (another architecture, a foreign state dict) ends in one line that says
    which keys or shapes differ.
    """
    from threeddx.network.model import DualFaceNet, ModelConfig, upgrade_state_dict

    try:
        model = DualFaceNet(ModelConfig(**ck["model_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: model settings this version cannot build ({type(e).__name__}: {str(e)[:100]})") from None
    weights = upgrade_state_dict({k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                                  for k, v in ck["model"].items()})
    mine = model.state_dict()
    missing = sorted(set(mine) - set(weights))
    extra = sorted(set(weights) - set(mine))
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in mine.items()
              if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", extra), ("shape differs", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:2])})")
        raise InputError(f"{where}: weights of another architecture: {'; '.join(parts)}")
    model.load_state_dict(weights)
    return model
