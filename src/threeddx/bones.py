"""Every bone's facts in one place: the registry every list and lookup of bones derives from.

A bone is a name (an identifier: checkpoints, configs and file names use it) and what the package knows
of it (:class:`Bone`): the LLP26 parts it is made of (the simulator's shapes; :data:`threeddx.simulator.anatomy.PARTS`); the TotalSegmentator structures it is made of in a real CT; its
left/right partner (mirrored patients); its colour (every picture); its landmarks (rows of an LLP26
shape's hip centres, carried by shape-model fits); the pelvis landmark of its hip joint (femurs); the
group it is pooled in (evaluate's ``femur``); and how far a shape-model fit may turn it from the view's
AP orientation.

**Adding a bone** is one :func:`register` call: the simulator then makes its masks and depth maps
(when it has LLP26 parts), training, predict, evaluate and the pictures take it by name
(tests/test_bones.py registers hemipelvis bones and runs them through every stage). A bone that only
real CTs have needs only its TotalSegmentator structures (names of that table are bones already). With
Dask workers, register in a module the workers import too.

Derived tables (:data:`threeddx.simulator.anatomy.BONE_PARTS`, :data:`threeddx.io.BONE_GROUPS`,
:data:`threeddx.meshing.ssm.LANDMARKS`, :data:`threeddx.inference.hipjoint.JOINTS`) are live views of this registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from threeddx.errors import look_up_option


@dataclass(frozen=True)
class Bone:
    """One bone's facts (module doc). ``colour``: RGB in 0-1; ``llp26_parts``: the LLP26 parts it is made of
    (:data:`threeddx.simulator.anatomy.PARTS`); ``totalseg``: the TotalSegmentator v2 structures a real CT's
    labels make it of; ``mirror``: the partner in a mirrored patient (None: a midline bone, itself);
    ``landmarks``: name -> row of :attr:`threeddx.simulator.anatomy.Shape.hip_centers`; ``joint``: the pelvis landmark
    of its hip joint; ``group``: the pooled column it joins in evaluate's tables; ``max_rotation_deg``: the
    largest turn from the AP view a shape-model fit may have (:class:`threeddx.meshing.ssm.FitBounds`)."""

    name: str
    colour: tuple[float, float, float]
    llp26_parts: tuple[str, ...] = ()
    totalseg: tuple[str, ...] = ()
    mirror: str | None = None
    landmarks: Mapping[str, int] = field(default_factory=dict)
    joint: str | None = None
    group: str | None = None
    max_rotation_deg: float = 30.0


#: The registered bones, by name, in registration order.
REGISTRY: dict[str, Bone] = {}


def register(bone: Bone) -> Bone:
    """Add (or replace) a bone; its name must be an identifier (:func:`threeddx.io.check_name`)."""
    from threeddx.io import check_name

    check_name(bone.name, "bone name")
    REGISTRY[bone.name] = bone
    return bone


def unregister(name: str) -> None:
    """Remove a registered bone (tests; a user's own bones)."""
    REGISTRY.pop(name, None)


for _b in (Bone("pelvis", (0.90, 0.25, 0.20), ("hemipelvis-left", "hemipelvis-right"), ("hip_left", "hip_right"),
              landmarks={"hjc_left": 0, "hjc_right": 1}, max_rotation_deg=25.0),
           Bone("sacrum", (0.95, 0.75, 0.15), ("sacrum",), ("sacrum",), max_rotation_deg=30.0),
           Bone("femur_left", (0.20, 0.60, 0.95), ("femur-l",), ("femur_left",), mirror="femur_right",
              landmarks={"head_left": 0}, joint="hjc_left", group="femur", max_rotation_deg=40.0),
           Bone("femur_right", (0.25, 0.80, 0.30), ("femur-r",), ("femur_right",), mirror="femur_left",
              landmarks={"head_right": 1}, joint="hjc_right", group="femur", max_rotation_deg=40.0)):
    REGISTRY[_b.name] = _b  # the package's own bones (register() checks a user's name first)

#: The paper's bones: what the network predicts, CT collections render and evaluate scores by default.
DEFAULT_BONES: tuple[str, ...] = ("pelvis", "femur_left", "femur_right")
#: Colours of bones the registry does not know (a CT's other structures), by their position in a list.
PALETTE = np.array([[0.90, 0.25, 0.20], [0.20, 0.60, 0.95], [0.25, 0.80, 0.30], [0.95, 0.75, 0.15],
                    [0.70, 0.35, 0.90], [0.10, 0.80, 0.80]])


def get(name: str) -> Bone:
    """The registered bone of this name; an InputError with "did you mean" otherwise."""
    return REGISTRY[look_up_option(name, REGISTRY, "bone")]


def simulated() -> tuple[str, ...]:
    """The bones the simulator can make from LLP26 shapes (those with parts), in registration order."""
    return tuple(b.name for b in REGISTRY.values() if b.llp26_parts)


def colour(name: str, index: int = 0) -> np.ndarray:
    """A bone's RGB colour (0-1): the registry's, else the palette's by the bone's position ``index``."""
    b = REGISTRY.get(name)
    return np.asarray(b.colour, float) if b is not None else PALETTE[index % len(PALETTE)]


def colours(bones: Sequence[str]) -> np.ndarray:
    """(len(bones), 3) RGB colours of a list of bones (:func:`colour`)."""
    return np.array([colour(b, i) for i, b in enumerate(bones)]).reshape(-1, 3)


def mirror(name: str) -> str:
    """A bone's partner in the mirrored patient: the registry's, else by name (``_left`` <-> ``_right``, so a
    CT's ``scapula_left`` is ``scapula_right``); a midline bone is its own."""
    b = REGISTRY.get(name)
    if b is not None:
        return b.mirror or name
    swap = {"left": "right", "right": "left"}
    return "_".join(swap.get(part, part) for part in name.split("_"))


def in_group(name: str, group: str) -> bool:
    """Whether a bone belongs to a pooled group (e.g. ``femur``)."""
    b = REGISTRY.get(name)
    return b is not None and b.group == group


def groups(bones: Sequence[str]) -> dict[str, list[str]]:
    """Pooled groups whose every registered member is among ``bones``: group -> members (in ``bones`` order)."""
    out: dict[str, list[str]] = {}
    for g in dict.fromkeys(b.group for b in REGISTRY.values() if b.group):
        members = [b.name for b in REGISTRY.values() if b.group == g]
        if all(m in bones for m in members):
            out[g] = [b for b in bones if b in members]
    return out


class View(Mapping):
    """A read-only mapping computed from the registry whenever it is read (so a later registration shows)."""

    def __init__(self, build: Callable[[], dict]) -> None:
        self._build = build

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self) -> Iterator:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())
