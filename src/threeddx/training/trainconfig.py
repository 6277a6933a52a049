"""The training configuration as typed sections: one set of defaults, every value's type and range.

A training config (``configs/*.yaml``) is read over :class:`TrainConfig`'s defaults
(:func:`threeddx.training.train.load_config`): a key the sections do not have is refused in one line with the
nearest key ("did you mean"), a section given as a value is refused, and :func:`check` refuses every value
of the wrong type (text, true/false, a whole number, a number; ``| None`` also null) or out of its range
(each field's ``range``). The trainer keeps the config as the plain nested dict :func:`defaults` has the
shape of (it is what checkpoints store), so a run's config reads back anywhere.
"""
from __future__ import annotations

import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from threeddx.bones import DEFAULT_BONES
from threeddx.errors import InputError, check_number


def _num(default: Any, kind: str, lo: float, hi: float):
    """A number field: ``kind`` ``int`` (whole), ``float`` or ``float>0`` (open at both ends), in [lo, hi]."""
    return field(default=default, metadata={"range": (kind, lo, hi)})


@dataclass
class DataConfig:
    root: str = "data"
    size: int | None = _num(None, "int", 8, 8192)  # pixels per side read (None: as stored; a divisor of it)
    bones: list[str] = field(default_factory=lambda: list(DEFAULT_BONES))
    train_split: str = "train"
    val_split: str | None = "val"
    workers: int = _num(0, "int", 0, 256)  # loader processes (the imaging chain runs in them)
    limit_train: int | None = _num(None, "int", 1, 10**9)
    # imaging chain (physics.radiograph): "random" per (seed, epoch, index), a preset name, a table of Chain fields,
    # or null (the stored image); validation uses the same chain at fixed seeds
    chain: str | dict | None = None
    negatives: float = _num(0.0, "float", 0.0, 1.0)  # share of items without a hip (threeddx.simulator.negatives)
    mirror: float = _num(0.0, "float", 0.0, 1.0)  # share of items shown as the patient's mirror image
    marker: float = _num(0.0, "float", 0.0, 1.0)  # share of items with a calibration ball (needs a chain)


@dataclass
class ModelSection:
    """The architecture: a :data:`threeddx.network.model.PRESETS` name and/or ModelConfig fields over it (null: the
    preset's, else :class:`threeddx.network.model.ModelConfig`'s)."""

    preset: str | None = None
    width: int | None = _num(None, "int", 1, 512)
    levels: int | None = _num(None, "int", 1, 8)
    blocks: int | None = _num(None, "int", 1, 8)
    coords: bool | None = None
    attention: int | None = _num(None, "int", 0, 64)
    faces: int = 2  # depth faces per bone, even (2: front and back; K > 2 needs --faces K data; load_config checks)


@dataclass
class LossConfig:
    mode: str = "dependent"  # threeddx.network.losses.MODES
    casi: bool = False
    lam: float = _num(0.85, "float", 0.0, 1.0)
    alpha: float = _num(10.0, "float", 0.0, 1e4)
    seg_weight: float = _num(1.0, "float", 0.0, 1e4)


@dataclass
class OptimConfig:
    lr: float = _num(1e-3, "float>0", 0.0, 10.0)
    weight_decay: float = _num(1e-4, "float", 0.0, 10.0)
    epochs: int = _num(20, "int", 1, 10**6)
    batch_size: int = _num(8, "int", 1, 65536)
    schedule: str = "cosine"
    grad_clip: float | None = _num(1.0, "float", 0.0, 1e9)


@dataclass
class PerfConfig:
    """CPU speed (benchmarks/train.py measures each): NHWC tensors; bfloat16 autocast of the network (the
    losses stay float32); torch.compile of the network; batches prefetched per loader worker."""

    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    prefetch: int = _num(2, "int", 1, 64)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: bool = True
    seed: int = _num(0, "int", 0, 2**32 - 1)
    device: str = "auto"
    amp: bool = True  # CUDA: float16 autocast with a gradient scaler (CPU: see perf.bf16)
    perf: PerfConfig = field(default_factory=PerfConfig)
    out: str = "runs/default"
    # fine-tuning: start from this checkpoint's weights (a path or a released name; same model settings), with a
    # new optimiser and schedule; ignored when resuming
    init: str | None = None
    # which of init's tensors are taken: "all" (the same model settings, every tensor) or "shapes" (every tensor
    # whose name and shape this model shares; the others keep their fresh initialisation and are printed): e.g. a
    # single-depth head on a dual-face backbone (README, train; configs/ablation-256-ft.yaml)
    init_match: str = "all"


def defaults() -> dict[str, Any]:
    """The defaults of every section, as the nested dict the trainer and checkpoints keep."""
    return asdict(TrainConfig())


def _kinds(hint) -> tuple[set, bool]:
    """The plain types a hint allows and whether it allows None (``str | None`` -> ({str}, True))."""
    args = typing.get_args(hint)
    options = args if args and typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = {typing.get_origin(o) or o for o in options if o is not type(None)}
    return kinds, type(None) in options


def check(cfg: dict, where: str, cls: type = TrainConfig, prefix: str = "") -> None:
    """Every value of ``cfg`` (a nested dict of :class:`TrainConfig`'s shape) of its field's type and within its
    range: one InputError naming ``where`` and the key otherwise."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key, value, hint = prefix + f.name, cfg.get(f.name, MISSING), hints[f.name]
        if value is MISSING:
            continue
        kinds, optional = _kinds(hint)
        if len(kinds) == 1 and is_dataclass(next(iter(kinds))):
            if not isinstance(value, dict):
                raise InputError(f"{where}: '{key}' must be a section of settings, got {str(value)[:40]!r}")
            check(value, where, next(iter(kinds)), key + ".")
            continue
        if value is None and optional:
            continue
        if "range" in f.metadata:
            kind, lo, hi = f.metadata["range"]
            check_number(value, lo, hi, where, key, whole=kind == "int", open_ends=kind == "float>0")
        elif bool in kinds:
            if not isinstance(value, bool):
                raise InputError(f"{where}: {key} must be true or false, got {str(value)[:40]!r}")
        elif list in kinds:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{where}: {key} must be a list of names, got {str(value)[:40]!r}")
        elif not isinstance(value, tuple(k for k in kinds if isinstance(k, type))):
            kind = " or ".join(sorted({"text" if k is str else "a table" if k is dict else k.__name__ for k in kinds}))
            raise InputError(f"{where}: {key} must be {kind}{' or null' if optional else ''}, got {str(value)[:40]!r}")
