"""Reading simulated samples for training: a PyTorch Dataset over a manifest.

**Imaging chain on the fly**: a sample that stores material line integrals
(``materials``, ``3ddx simulate`` since settings version 3) is turned into a
detector image by :func:`threeddx.simulator.physics.radiograph` every time it is read:
``chain="random"`` draws a new chain per (seed, epoch, index), reproducible and
different each epoch (training); a preset name (``"standard"``, ``"no-grid"``,
...) or a :class:`~threeddx.simulator.physics.Chain` gives fixed settings (evaluation
sets); ``None`` reads the stored ``image`` (the windowed monochromatic DRR, and
the only choice for older samples).

**Negatives**: with ``negatives=p`` a share p of the items is replaced by an
image without hip anatomy and empty targets (:mod:`threeddx.simulator.negatives`), so the
network learns to find no bone where there is none.

**Mirroring**: with ``mirror=p`` a share p of the items is the patient's
mirror image: the material line integrals (or the stored image) and the
targets are flipped left to right and the left and right bones' channels
swapped (:func:`mirror_partners`), before the imaging chain, so markers and
text stay readable. It is exact, not an approximation: the camera's principal
point is at the detector's centre, so the flipped image is what the same
camera records of the patient mirrored about the source frame's y-z plane;
each ray maps onto the mirrored ray with the same length, so every depth
target keeps its value. It removes the side bias of a few subjects' posture
(in data/sim128 the left femur lies on average 10 mm nearer the source than
the right: the released model without mirroring learnt it, docs/results.md
"Mirrored patients"). Samples whose principal point is off-centre, or whose
bones lack their mirror partner, are refused.

**Calibration balls**: with ``marker=p`` a share p of the items (negatives included) shows a steel ball
where clinics put one (:func:`threeddx.inference.marker.random_marker`: beside the greater trochanter,
between the thighs, on the table; 20-30 mm), added to the metal line integral before the imaging chain
(:func:`~threeddx.inference.marker.with_marker`), so the network learns that a ball is not bone; the
targets do not change. It needs the material line integrals (a chain).

Otherwise only **photometric** augmentation is offered (intensity, contrast,
gamma, noise): other geometric changes (crop, rotate, resize) would change the
pixel-to-ray mapping that the depth targets are defined through. Every hook's
output is checked to keep the image's shape.

Resolution: a sample can be read at its stored size or downsampled by an
integer factor ``f``. The new pixel (i, j) covers the f x f block of old pixels;
its ray passes through the block's centre, so its depth is the mean of the
block's central 1 (odd f) or 2 x 2 (even f) depths, and it is in the mask only
if all of those are. The geometry is resampled to match
(:meth:`~threeddx.geometry.XrayGeometry.resample`).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.network.preprocess import centred, mirror_partners, normalise_radiograph, window_image  # noqa: F401 (used and re-exported)


Hook = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


@dataclass
class PhotometricAugment:
    """Random gamma, contrast, brightness and Gaussian noise on a [0, 1] image."""

    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: tuple[float, float] = (-0.08, 0.08)
    noise_sd: tuple[float, float] = (0.0, 0.03)

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        g = float(rng.uniform(*self.gamma))
        c = float(rng.uniform(*self.contrast))
        b = float(rng.uniform(*self.brightness))
        sd = float(rng.uniform(*self.noise_sd))
        out = img.clamp(0, 1) ** g
        out = (out - 0.5) * c + 0.5 + b
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        out = out + sd * torch.randn(out.shape, generator=gen)
        return out.clamp(0, 1)


def read_manifest(root: str | Path) -> list[dict[str, str]]:
    path = Path(root) / "manifest.csv"
    if not path.exists():
        raise InputError(f"no manifest.csv in {root}: run 3ddx simulate first")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def downsample_sample(
    image: np.ndarray, masks: np.ndarray, front: np.ndarray, back: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer-factor downsampling that keeps depths on the new pixels' rays (module doc)."""
    f = int(factor)
    if f == 1:
        return image, masks, front, back
    h, w = image.shape
    if h % f or w % f:
        raise InputError(f"cannot downsample {h}x{w} by {f}")
    img = image.reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    c = [f // 2] if f % 2 else [f // 2 - 1, f // 2]

    def centre(a: np.ndarray) -> np.ndarray:
        blocks = a.reshape(a.shape[0], h // f, f, w // f, f)
        return blocks[:, :, c][:, :, :, :, c]  # (C, H', k, W', k)

    m = centre(masks.astype(bool)).all(axis=(2, 4))
    fr = np.where(m, centre(front).mean(axis=(2, 4)), 0.0)
    bk = np.where(m, centre(back).mean(axis=(2, 4)), 0.0)
    return img.astype(np.float32), m.astype(np.uint8), fr.astype(np.float32), bk.astype(np.float32)


def downsample_inner(inner: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The inner faces (C, K-2, H, W) mm and their gaps' validity (C, K/2-1, H, W) downsampled as
    :func:`downsample_sample` does the masks and depths: a gap is valid where it is at every centre sample."""
    f = int(factor)
    if f == 1:
        return inner, valid
    c, n, h, w = inner.shape
    k = [f // 2] if f % 2 else [f // 2 - 1, f // 2]

    def centre(a: np.ndarray) -> np.ndarray:
        return a.reshape(*a.shape[:2], h // f, f, w // f, f)[:, :, :, k][:, :, :, :, :, k]

    v = centre(valid.astype(bool)).all(axis=(3, 5))
    face_valid = np.repeat(v, 2, axis=1)  # gap j covers faces 2j-1, 2j
    d = np.where(face_valid, centre(inner).mean(axis=(3, 5)), 0.0)
    return d.astype(np.float32), v.astype(np.uint8)


class SimulatedDataset(torch.utils.data.Dataset):
    """Samples of a ``3ddx simulate`` folder.

    Each item is a dict: ``image`` (1, H, W) float32 in [0, 1] (per-image
    normalised, then augmented), ``masks`` (C, H, W) float32 0/1,
    ``depth_front`` / ``depth_back`` (C, H, W) float32 mm (0 outside the masks),
    ``geometry`` (JSON string at this resolution), ``mirrored`` (module doc),
    ``sample_id``. With ``faces`` K > 2 (samples simulated with ``--faces K``)
    also ``depth_inner`` (C, K-2, H, W) mm and ``inner_valid`` (C, K/2-1, H, W)
    0/1 (:mod:`threeddx.simulator.render`'s K faces).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] | None = "train",
        size: int | None = None,
        bones: Sequence[str] | None = None,
        augment: Sequence[Hook] | None = None,
        seed: int = 0,
        chain: "str | Chain | None" = None,
        negatives: float = 0.0,
        mirror: float = 0.0,
        faces: int = 2,
        marker: float = 0.0,
    ) -> None:
        self.root = Path(root)
        rows = read_manifest(self.root)
        splits = None if split is None else ({split} if isinstance(split, str) else set(split))
        self.rows = [r for r in rows if splits is None or r["split"] in splits]
        if not self.rows:
            raise InputError(f"no samples of split {split!r} in {self.root / 'manifest.csv'}")
        stored = int(self.rows[0]["size"])
        self.size = stored if size is None else int(size)
        if stored % self.size:
            raise InputError(f"size {self.size} must divide the stored size {stored}")
        self.factor = stored // self.size
        with np.load(self.root / self.rows[0]["render"]) as z:
            self.stored_bones = [str(b) for b in z["bones"]]
            first_geometry = XrayGeometry.from_json(str(z["geometry"]))
            stored_faces = 2 + (z["depth_inner"].shape[1] if "depth_inner" in z.files else 0)
        self.faces = int(faces)
        if self.faces not in (2, stored_faces):
            raise InputError(f"{self.root} has {stored_faces} depth faces per bone; a model of {self.faces} needs "
                             f"samples simulated with --faces {self.faces}")
        self.bones = list(bones) if bones else self.stored_bones
        missing = [b for b in self.bones if b not in self.stored_bones]
        if missing:
            raise InputError(f"bone(s) {', '.join(missing)} not in the samples (they have {', '.join(self.stored_bones)})")
        self.channels = [self.stored_bones.index(b) for b in self.bones]
        self.augment = list(augment or [])
        self.seed = seed
        self.epoch = 0
        self.chain = chain
        self.negatives = float(negatives)
        self.mirror = float(mirror)
        self.partners = mirror_partners(self.bones)
        if not 0.0 <= self.mirror <= 1.0:
            raise InputError(f"mirror must be a probability within 0-1, got {mirror}")
        if self.mirror > 0 and self.partners is None:
            raise InputError(f"mirror needs every bone's left/right partner among the bones ({', '.join(self.bones)})")
        if self.mirror > 0 and not centred(first_geometry):
            raise InputError(f"mirror needs the principal point at the detector's centre; {self.root} has "
                             f"{first_geometry.principal_point} on a {first_geometry.detector_shape} detector")
        self.marker = float(marker)
        if not 0.0 <= self.marker <= 1.0:
            raise InputError(f"marker must be a probability within 0-1, got {marker}")
        if self.marker > 0 and chain is None:
            raise InputError("marker needs the imaging chain (a ball joins the metal line integral): set a chain")
        if chain is not None and chain != "random":
            from threeddx.simulator.physics import chain_from

            chain_from(chain)  # an unknown preset is refused here, not at the first item

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are seeded by (seed, epoch, index): reproducible, different each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        path = self.root / row["render"]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        try:
            with np.load(path) as z:
                # with a chain the stored image is not used (the chain makes one): not decompressed (~15 % of an item)
                image, masks = (z["image"] if self.chain is None else None), z["masks"][self.channels]
                front, back = z["depth_front"][self.channels], z["depth_back"][self.channels]
                inner = (z["depth_inner"][self.channels], z["inner_valid"][self.channels]) if self.faces > 2 else None
                geom = XrayGeometry.from_json(str(z["geometry"]))
                materials = None
                if self.chain is not None:
                    from threeddx.simulator.physics import sample_materials

                    materials = sample_materials(z)
                    if materials is None:
                        raise InputError(f"sample {path} has no material line integrals (simulated before settings "
                                         "version 3): use chain None or simulate again")
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"cannot read sample {path}: {e}") from None
        negative = self.negatives > 0 and rng.random() < self.negatives
        mirrored = self.mirror > 0 and rng.random() < self.mirror  # no draw without mirroring: old runs replay
        if mirrored:
            image = None if image is None else image[:, ::-1].copy()
            masks, front, back = (a[self.partners][..., ::-1].copy() for a in (masks, front, back))
            if inner is not None:
                inner = tuple(a[self.partners][..., ::-1].copy() for a in inner)
            if materials is not None:
                materials = {k: v[:, ::-1].copy() for k, v in materials.items()}
        kind = str(rng.choice(["chest", "upside-down", "noise"], p=[0.45, 0.3, 0.25])) if negative else ""
        if kind == "chest":
            from threeddx.simulator.negatives import CHEST_VIEWS, chest_view

            materials = chest_view(self.root / "negatives", geom, int(rng.integers(CHEST_VIEWS)))
        if self.marker > 0 and rng.random() < self.marker:  # no draw without balls: old runs replay
            from threeddx.inference.marker import random_marker, with_marker

            hips = geom.to_source(np.zeros((1, 3)))[0]  # simulated samples: the world origin is the hips' mid-point
            if mirrored:  # the mirrored patient's hips: the source frame's x flipped (module doc, "Mirroring")
                hips = hips * np.array([-1.0, 1.0, 1.0])
            centre, diameter, _ = random_marker(rng, hips)
            materials = with_marker(materials, geom, centre, diameter)
        if materials is not None:
            from threeddx.simulator.physics import chain_for, radiograph

            image = radiograph(materials, geom, chain_for(self.chain, rng))
        if kind == "upside-down":
            image = image[::-1].copy()
        elif kind == "noise":
            from threeddx.simulator.negatives import noise_image

            image = noise_image(image.shape, rng)
        if negative:
            masks, front, back = np.zeros_like(masks), np.zeros_like(front), np.zeros_like(back)
            inner = None if inner is None else tuple(np.zeros_like(a) for a in inner)
        image, masks, front, back = downsample_sample(image, masks, front, back, self.factor)
        if inner is not None:
            inner = downsample_inner(*inner, self.factor)  # a valid gap lies inside its bone's mask
        if self.factor != 1:
            geom = geom.resample(self.size)
        img = torch.from_numpy(normalise_radiograph(image))[None]
        for hook in self.augment:
            out = hook(img, rng)
            if out.shape != img.shape:
                raise InputError("an augmentation changed the image's shape: that would break the pixel-to-ray geometry")
            img = out
        item = {
            "image": img.float(),
            "masks": torch.from_numpy(masks.astype(np.float32)),
            "depth_front": torch.from_numpy(front.astype(np.float32)),
            "depth_back": torch.from_numpy(back.astype(np.float32)),
            "geometry": geom.to_json(),  # for a mirrored item: its rays in the source frame, not its world pose
            "mirrored": mirrored,
            "sample_id": row["sample_id"],
        }
        if inner is not None:
            item["depth_inner"] = torch.from_numpy(inner[0].astype(np.float32))
            item["inner_valid"] = torch.from_numpy(inner[1].astype(np.float32))
        return item
