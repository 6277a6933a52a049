"""Import gias3 on a current SciPy.

gias3 (the reader of the LLP26 lower-limb shape model) still calls NumPy
functions through the ``scipy`` namespace (``scipy.dot`` and friends), which
SciPy removed. This module aliases the missing names from NumPy before gias3
is imported, and is the only place that does so.
"""
from __future__ import annotations

import numpy as np
import scipy

_ALIASES = ("dot", "array", "zeros", "sqrt", "cross", "hstack", "vstack", "arange", "where", "ones")


def patch_scipy() -> None:
    for name in _ALIASES:
        if not hasattr(scipy, name):
            setattr(scipy, name, getattr(np, name))


def lower_limb_atlas():
    """A loaded gias3 ``LowerLimbAtlas`` with 25 shape modes (about 10 s)."""
    patch_scipy()
    from gias3.musculoskeletal.bonemodels.lowerlimbatlas import LowerLimbAtlas

    ll = LowerLimbAtlas("ll")
    ll.load_bones()
    ll.shape_modes = list(range(25))
    return ll
