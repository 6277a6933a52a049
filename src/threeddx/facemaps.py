"""Face maps: per bone, what each pixel's ray sees of it. One type for the renderer's result, the network's
prediction and the meshers' input.

For C bones on an (H, W) detector (the rays of one :class:`~threeddx.geometry.XrayGeometry`):

* ``masks`` (C, H, W) bool: the ray crosses the bone;
* ``depth_front`` (C, H, W) float32 mm: distance from the source along the ray to its first entry into
  the bone, ``depth_back`` to its last exit (None for a single-depth model); 0 outside the mask;
* with K > 2 faces, ``depth_inner`` (C, K-2, H, W) mm: the exits and entries between, in order along the
  ray, and ``inner_valid`` (C, K/2-1, H, W) bool: gap j (faces 2j-1, 2j) exists, the ray has more than j
  intervals in the bone (:mod:`threeddx.simulator.render`'s module doc).

The arrays keep the names of the ``render.npz`` format (:meth:`FaceMaps.arrays`,
:meth:`FaceMaps.from_arrays`). :meth:`FaceMaps.for_meshing` is the one loop that turns them into the
meshers' per-bone input (:class:`BoneFaces`), used by predict and evaluate alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

#: A bone's inner faces: depths (K-2, H, W) mm and their gaps' validity (K/2-1, H, W).
Inner = tuple[np.ndarray, np.ndarray]
#: Fewest mask pixels a bone needs to be meshed.
MIN_MESH_PIXELS = 4


class BoneFaces(NamedTuple):
    """One bone's maps as a mesher takes them: mask (H, W), front and back depths (H, W) mm (back None for a
    single-depth model or a front-only mesher), and its inner faces (:data:`Inner`, None for two faces)."""

    mask: np.ndarray
    front: np.ndarray
    back: np.ndarray | None = None
    inner: Inner | None = None

    @classmethod
    def of(cls, maps: Sequence) -> "BoneFaces":
        """A (mask, front, back[, inner]) tuple as :class:`BoneFaces`."""
        return maps if isinstance(maps, cls) else cls(*maps)


@dataclass
class FaceMaps:
    """Per-bone face maps on one detector's rays (module doc)."""

    bones: list[str]
    masks: np.ndarray
    depth_front: np.ndarray
    depth_back: np.ndarray | None = None
    depth_inner: np.ndarray | None = None
    inner_valid: np.ndarray | None = None

    @property
    def faces(self) -> int:
        """K, the depth faces per bone and ray (1: a single-depth model; 2: front and back)."""
        if self.depth_back is None:
            return 1
        return 2 if self.depth_inner is None else 2 + self.depth_inner.shape[1]

    @property
    def inner(self) -> list[Inner | None]:
        """Per bone its inner faces as the meshers take them, None for two faces."""
        if self.depth_inner is None:
            return [None] * len(self.bones)
        return [(self.depth_inner[c], self.inner_valid[c]) for c in range(len(self.bones))]

    def depths(self) -> np.ndarray:
        """Every face's depth map, (C, K, H, W) mm, in order along the ray."""
        parts = [self.depth_front[:, None]]
        if self.depth_inner is not None:
            parts.append(self.depth_inner)
        return np.concatenate(parts + ([] if self.depth_back is None else [self.depth_back[:, None]]), axis=1)

    def bone(self, name: str, back: bool = True) -> BoneFaces:
        """One bone's :class:`BoneFaces` (``back=False``: the front alone, for a mesher that reads no back)."""
        c = self.bones.index(name)
        b = self.depth_back[c] if back and self.depth_back is not None else None
        inner = self.inner[c] if b is not None else None
        return BoneFaces(self.masks[c], self.depth_front[c], b, inner)

    def for_meshing(self, bones: Sequence[str] | None = None, keep: Callable[[str], str | None] | None = None,
                    uses_back: Mapping[str, bool] | None = None) -> tuple[dict[str, BoneFaces], dict[str, str]]:
        """The meshers' input: per bone (``bones``, default all) its :class:`BoneFaces`, and per bone left out
        why (fewer than :data:`MIN_MESH_PIXELS` mask pixels, or what ``keep`` says: a reason to leave it out,
        or None to keep it). ``uses_back``: per bone whether its mesher reads the back faces."""
        maps: dict[str, BoneFaces] = {}
        left_out: dict[str, str] = {}
        for name in bones if bones is not None else self.bones:
            c = self.bones.index(name)
            why = "no mask" if self.masks[c].sum() < MIN_MESH_PIXELS else (keep(name) if keep else None)
            if why:
                left_out[name] = why
                continue
            maps[name] = self.bone(name, back=(uses_back or {}).get(name, True))
        return maps, left_out

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays in ``render.npz``'s names and types."""
        out = {"masks": self.masks.astype(np.uint8), "depth_front": self.depth_front.astype(np.float32),
               "bones": np.array(self.bones, dtype=str)}
        if self.depth_back is not None:
            out["depth_back"] = self.depth_back.astype(np.float32)
        if self.depth_inner is not None:
            out |= {"depth_inner": self.depth_inner.astype(np.float32), "inner_valid": self.inner_valid.astype(np.uint8)}
        return out

    @classmethod
    def from_arrays(cls, z: Mapping) -> "FaceMaps":
        """Face maps read back from ``render.npz``-named arrays (an opened npz or a dict)."""
        names = set(z.keys()) if hasattr(z, "keys") else set(z.files)
        return cls(bones=[str(b) for b in z["bones"]], masks=np.asarray(z["masks"]) > 0,
                   depth_front=np.asarray(z["depth_front"], np.float32),
                   depth_back=np.asarray(z["depth_back"], np.float32) if "depth_back" in names else None,
                   depth_inner=np.asarray(z["depth_inner"], np.float32) if "depth_inner" in names else None,
                   inner_valid=np.asarray(z["inner_valid"]) > 0 if "inner_valid" in names else None)
