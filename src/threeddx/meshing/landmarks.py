"""The hip's anatomical landmarks on LLP26 bones, as vertex indices of the shared triangulation.

Every bone the project makes from LLP26 (a simulated subject's truth mesh, a shape-model variant, a shape
model fitted to a prediction: :mod:`threeddx.meshing.ssm`) has the same vertices in the same order, so a
landmark defined once as vertex indices is found on all of them without a search. The table
(``src/threeddx/data/llp26_landmarks.json``) is made by ``scripts/make_landmarks.py`` (its doc says how each
landmark is defined: gias3's own nodes where it has them, the rest on the training split's mean shapes).

Landmarks per bone (:data:`SETS` are point sets, every other name one point: its vertices' centroid):

* ``pelvis``: ``asis_left``/``_right`` (anterior superior iliac spines), ``pubis_left``/``_right`` (the
  pubic symphysis's two sides), ``pubic_tubercle_left``/``_right``, ``rim_left``/``_right`` (each
  acetabulum's rim: an ordered closed ring of 36 points);
* ``femur_left``/``femur_right``: ``head`` (the femoral head's surface, for its sphere), ``neck`` (the
  centroid of the neck's narrowest section), ``shaft_proximal``/``shaft_distal`` (centroids of gias3's
  sub-trochanteric and mid-shaft rings: the shaft axis), ``greater_trochanter``, ``lesser_trochanter``,
  ``epicondyle_medial``/``_lateral``, ``condyle_medial``/``_lateral`` (the condyles' most posterior points).

Points come back in the frame and units of the vertices given (mm).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from threeddx.errors import InputError

LANDMARKS_PATH = Path(__file__).resolve().parents[1] / "data" / "llp26_landmarks.json"
#: Landmarks that are point sets (kept as (N, 3) arrays, in the stored order), not single points.
SETS = frozenset({"head", "rim_left", "rim_right"})


@lru_cache(maxsize=1)
def landmark_table() -> dict[str, dict[str, np.ndarray]]:
    """bone -> landmark name -> vertex indices (int arrays), read once per process."""
    if not LANDMARKS_PATH.is_file():
        raise InputError(f"the landmark table {LANDMARKS_PATH} is missing: reinstall 3ddx, or run "
                         "scripts/make_landmarks.py")
    doc = json.loads(LANDMARKS_PATH.read_text())
    return {bone: {name: np.asarray(idx, np.int64) for name, idx in marks.items()}
            for bone, marks in doc["bones"].items()}


def has_landmarks(bone: str) -> bool:
    return bone in landmark_table()


def landmarks(bone: str, vertices: np.ndarray) -> dict[str, np.ndarray]:
    """The landmarks of ``bone`` on its (V, 3) LLP26 vertices: name -> (3,) point, or (N, 3) for :data:`SETS`.

    A mesh of another triangulation (a marching-cubes surface, a clipped mesh) is refused in one line: its
    vertex indices do not mean the same places.
    """
    table = landmark_table()
    if bone not in table:
        raise InputError(f"no landmarks are defined on {bone} (have: {', '.join(table)})")
    v = np.asarray(vertices, np.float64)
    top = max(int(idx.max()) for idx in table[bone].values())
    expected = _vertex_count(bone)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) != expected or top >= len(v):
        raise InputError(f"{bone}: landmarks need the whole LLP26 bone ({expected} vertices), got "
                         f"{len(v) if v.ndim == 2 else v.shape}: measure a shape-model fit, not a clipped or "
                         "marching-cubes mesh")
    return {name: (v[idx] if name in SETS else v[idx].mean(0)) for name, idx in table[bone].items()}


@lru_cache(maxsize=8)
def _vertex_count(bone: str) -> int:
    """The LLP26 triangulation's vertex count for ``bone`` (from the shipped pelvis model, or the file's table)."""
    doc = json.loads(LANDMARKS_PATH.read_text())
    return int(doc["vertex_counts"][bone])
