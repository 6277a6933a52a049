"""Dual-face renderer: DRR, per-bone masks and front/back depth maps in one pass.

Method
------
Rays leave the focal spot through every pixel centre (:mod:`threeddx.geometry`).
Each ray is sampled where it crosses the volume's slices along the *dominant
axis* (the index axis most parallel to the beam), with bilinear interpolation
inside the slice: Joseph's projector. Batches of slices go through one batched
2D ``grid_sample``, which on a CPU is about ten times faster than 3D trilinear
ray marching at the same number of samples, and the same code runs on CUDA.

* **DRR**: linear attenuation ``mu = mu_water * max(0, 1 + HU / 1000)`` (per mm)
  is summed along each ray times the ray's path length per slice, giving the
  line integral (optical depth, dimensionless). ``image`` is that line integral
  windowed per image to [0, 1] between its 0.5th and 99.5th percentiles (bone
  bright, air dark, as a processed radiograph is displayed); the raw line
  integral is kept as ``line_integral``.
* **Bones**: each bone is an occupancy field (1 inside, 0 outside, or a
  partial-volume fraction) on a crop of the grid around the bone, read with the
  same trilinear interpolation; the bone surface is its 0.5 level. Along a ray
  the first slice sample at or above 0.5 brackets the **front face** (first
  entry) and the last one the **back face** (last exit). Each bracket is then
  refined by bisection on the 3D trilinear field (default 6 steps, i.e. to
  1/64 of a slice step) and a final linear interpolation, so depths are
  sub-voxel, not voxel-step. The mask is "the ray enters the bone".
  Depths are Euclidean distances from the source in mm, 0 outside the mask.
* **K faces** (``faces=K``, K even; 2 is the above): a ray may cross a bone
  several times (the acetabulum, the pelvic ring). With its bone intervals
  I_1 .. I_n along the ray (entries e_i, exits x_i), the K faces are the first
  K/2 - 1 intervals and the last one: d_0 = e_1 and d_{K-1} = x_n (the two
  faces above), and in between K/2 - 1 **gaps**, gap j = (d_{2j-1}, d_{2j}) =
  (x_j, e_{j+1}) for j < K/2 - 1 and (x_{K/2-1}, e_n) for the last. Gap j
  exists (``inner_valid``) where the ray has more than j intervals; the bone
  along the ray is [d_0, d_{K-1}] minus the valid gaps, and what lies inside
  the last gap (intervals I_{K/2} .. I_{n-1}) is what K faces cannot say.
  Every crossing is bracketed and refined by bisection as above; inner faces
  of an invalid gap are 0. For K = 4: first entry, first exit, last entry,
  last exit. A gap of a single slice sample is not one (:func:`_crossing_slices`).

Memory stays bounded: rays are processed in chunks so that at most
``max_samples`` slice samples are in flight at once. A scene made from a CT
(:func:`scene_from_ct`) holds only the box of its non-air voxels
(:func:`content_box`): outside it every value is 0, as the sampler reads
outside a grid, so the line integrals are those of the whole CT with fewer
slices to sample.

Size: about 740 lines: the ray set-up, the DRR and the face maps share one ray-marching kernel and its
batching; the orchestration for ``3ddx render`` (:func:`render_to_folder`) is the part that could move out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from threeddx.network.preprocess import window_image  # noqa: F401 (the renderer's window; also threeddx.simulator.render.window_image)
from threeddx.errors import InputError
from threeddx.facemaps import FaceMaps
from threeddx.geometry import XrayGeometry
from threeddx.io import Volume

#: Linear attenuation of water per mm at an effective energy near 70 keV.
MU_WATER_PER_MM = 0.02


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Hounsfield units -> linear attenuation (1/mm), clamped at 0 (air, padding).

    Slab by slab along the first axis, so the temporaries stay small (element-wise: the same numbers).
    """
    h = np.asarray(hu, dtype=np.float32)
    if h.ndim < 2:
        return (mu_water * np.maximum(0.0, 1.0 + h / 1000.0)).astype(np.float32)
    out = np.empty(h.shape, np.float32)
    step = max(1, (1 << 18) // int(np.prod(h.shape[1:])))
    for k in range(0, h.shape[0], step):
        out[k:k + step] = mu_water * np.maximum(0.0, 1.0 + h[k:k + step] / 1000.0)
    return out


@dataclass
class BoneField:
    """One bone's occupancy on a crop of the CT grid.

    ``occupancy`` is (z, y, x) float32 in [0, 1] with at least one voxel of zeros
    on every side; ``offset`` is the CT index (i, j, k) of the crop's voxel 0.
    """

    name: str
    occupancy: np.ndarray
    offset: tuple[int, int, int]


@dataclass
class Scene:
    """What the renderer needs: attenuation on a grid, and the bones on crops of it."""

    #: (z, y, x) 1/mm; may be None when ``materials`` are given (the DRR is then made from them)
    mu: np.ndarray | None
    index_to_world: np.ndarray  # 4x4
    bones: list[BoneField] = field(default_factory=list)
    #: material -> (z, y, x) mass density in g/cm^3 (:func:`threeddx.simulator.physics.decompose_hu`); when
    #: given, the material line integrals are rendered and the DRR is their linear combination
    materials: dict[str, np.ndarray] | None = None
    mu_water: float = MU_WATER_PER_MM  # the mu of water used to make ``mu`` (1/mm)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def slice_stack(self, key: str, arrays, axis: int, device: torch.device) -> torch.Tensor:
        """Volumes as a (S, C, n_c, n_b) stack of slices along index ``axis`` on ``device``, kept for the next view.

        Index axis m is array dimension 2 - m; a slice's columns run along the smaller remaining index
        axis b, its rows along c.

        ``arrays``: one (z, y, x) array, or a list of channels, each an array or the name of one of the
        scene's own volumes (``"mu"`` or a material), fetched only when copied so that, on a CPU, each
        is replaced by a view of its channel at once (one copy in memory at any time, not two).
        Rendering many poses of one scene (the simulator) reuses the stack as
        long as the dominant axis stays the same; one stack per key is kept.
        """
        hit = self._cache.get(key)
        if hit is not None and hit[0] == (axis, str(device)):
            return hit[1]
        channels = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
        def volume(ch):
            if isinstance(ch, str):
                if ch == "mu" and self.mu is None:
                    raise ValueError("this scene has no attenuation volume (mu): render it with its materials")
                return self.mu if ch == "mu" else self.materials[ch]
            return ch

        shape = volume(channels[0]).shape  # (z, y, x)
        b, c = [k for k in range(3) if k != axis]
        order = (2 - axis, 2 - c, 2 - b)
        dtype = torch.as_tensor(volume(channels[0])[:1, :1, :1]).dtype
        stack = torch.empty((shape[order[0]], len(channels), shape[order[1]], shape[order[2]]), dtype=dtype,
                            device=device)
        for k, ch in enumerate(channels):
            stack[:, k] = torch.as_tensor(volume(ch), device=device).permute(*order)
            if stack.device.type == "cpu":
                self._share(volume(ch), stack[:, k:k + 1], axis)
        self._cache[key] = ((axis, str(device)), stack)
        return stack

    def _share(self, array: np.ndarray, stack: torch.Tensor, axis: int) -> None:
        """Make the scene's own volume a (z, y, x) view of its CPU stack: one copy in memory, not two.

        The values are the same; a later view along another axis copies from the view.
        """
        b, c = [k for k in range(3) if k != axis]
        order = (2 - axis, 2 - c, 2 - b)
        view = stack[:, 0].permute(*np.argsort(order)).numpy()
        if array is self.mu:
            self.mu = view
        elif self.materials:
            for name, a in self.materials.items():
                if a is array:
                    self.materials[name] = view

    @property
    def shape(self) -> tuple[int, int, int]:
        """The CT grid's (z, y, x) shape."""
        return (self.mu if self.mu is not None else next(iter(self.materials.values()))).shape

    def empty_materials(self) -> set[str]:
        """Materials with no voxel of them (all zero; a CT without metal): their line integrals are 0 exactly."""
        if "empty" not in self._cache:
            self._cache["empty"] = {m: not (a.max() > 0) for m, a in (self.materials or {}).items()}
        return {m for m, e in self._cache["empty"].items() if e}

    @property
    def bone_names(self) -> list[str]:
        return [b.name for b in self.bones]

    def bone_index_to_world(self, bone: BoneField) -> np.ndarray:
        """4x4 affine from a bone crop's continuous index (i, j, k) to world LPS mm."""
        return offset_affine(self.index_to_world, bone.offset)


def offset_affine(index_to_world: np.ndarray, offset_ijk: Sequence[float]) -> np.ndarray:
    """The 4x4 index-to-world affine of a crop of a grid whose voxel 0 is the grid's index ``offset_ijk``."""
    shift = np.eye(4)
    shift[:3, 3] = offset_ijk
    return index_to_world @ shift


def crop_occupancy(mask: np.ndarray, name: str = "bone") -> BoneField:
    """Crop a (z, y, x) occupancy to its support plus a one-voxel zero margin."""
    occ = np.asarray(mask, dtype=np.float32)
    nz = np.argwhere(occ > 0)
    if nz.size == 0:
        raise InputError(f"bone {name!r} is empty: no voxel inside it")
    lo = nz.min(0) - 1
    hi = nz.max(0) + 2
    pad_lo = np.maximum(0, -lo)
    pad_hi = np.maximum(0, hi - np.array(occ.shape))
    sl = tuple(slice(max(0, a), min(s, b)) for a, b, s in zip(lo, hi, occ.shape))
    crop = np.pad(occ[sl], list(zip(pad_lo, pad_hi)))
    # (z, y, x) array order -> (i, j, k) index order
    return BoneField(name=name, occupancy=np.ascontiguousarray(crop), offset=(int(lo[2]), int(lo[1]), int(lo[0])))


#: HU at or below which a voxel attenuates nothing: air and scanner padding (-1024, -3024); there
#: ``max(0, 1 + HU / 1000)``, so :func:`hu_to_mu` and every density of
#: :func:`~threeddx.simulator.physics.decompose_hu`, is 0.
HU_EMPTY = -1000.0


def content_box(hu: np.ndarray) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the smallest box holding every voxel of a CT (HU) above :data:`HU_EMPTY` (NaN too).

    The whole grid if no voxel is (an all-air CT). The air left out is slices that every ray would sample
    as 0: a synthetic subject's box (llp26-01 at 1.5 mm) is 61 % of its grid (docs/benchmarks.md).
    """
    solid = ~(hu <= HU_EMPTY)  # NaN stays in the box, as it would in the line integral
    box = []
    for axis in range(3):
        hit = np.flatnonzero(solid.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if len(hit) else slice(0, hu.shape[axis]))
    return tuple(box)


def scene_from_ct(ct: Volume, bones: Sequence[BoneField] = (), mu_water: float = MU_WATER_PER_MM,
                  materials: bool = True) -> Scene:
    """The scene of a CT (HU) on its :func:`content_box`, with ``bones`` given on the CT's own grid.

    The scene's ``index_to_world`` is that of the box's voxel 0 and every bone's offset is moved to it,
    so each bone keeps its world position. ``materials``: the material densities
    (:func:`~threeddx.simulator.physics.decompose_hu`), from which the DRR is rendered; the attenuation volume
    ``mu`` is then not made (it would not be used). Without them, ``mu`` (:func:`hu_to_mu`).
    """
    from threeddx.simulator.physics import decompose_hu

    box = content_box(ct.array)
    hu = ct.array[box]
    lo = np.array([box[2].start, box[1].start, box[0].start])  # (i, j, k)
    return Scene(
        mu=None if materials else hu_to_mu(hu, mu_water), index_to_world=offset_affine(ct.index_to_world, lo),
        mu_water=mu_water, materials=decompose_hu(hu) if materials else None,
        bones=[BoneField(b.name, b.occupancy, tuple(int(v) for v in np.asarray(b.offset) - lo)) for b in bones],
    )


def make_scene(
    ct: Volume,
    labels: Volume | None = None,
    bones: Mapping[str, Sequence[int]] | None = None,
    mu_water: float = MU_WATER_PER_MM,
    materials: bool = True,
) -> Scene:
    """Prepare a CT (HU) and its label volume for rendering (:func:`scene_from_ct`).

    ``bones``: name -> label ids; each bone is the union of its labels.
    """
    if bones and labels is None:
        raise InputError("bones were requested but no label volume was given")
    fields = [crop_occupancy(np.isin(labels.array, list(ids)), name) for name, ids in (bones or {}).items()]
    return scene_from_ct(ct, fields, mu_water, materials)


@dataclass(kw_only=True)
class RenderResult(FaceMaps):
    """One rendered view: the bones' face maps (:class:`~threeddx.facemaps.FaceMaps`, K faces) and the image.
    Arrays are (H, W) or (C, H, W); depths in mm."""

    image: np.ndarray
    line_integral: np.ndarray
    geometry: XrayGeometry
    materials: np.ndarray | None = None  # (M, H, W) g/cm^2 along each ray, M = len(material_names)
    material_names: list[str] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the ``render.npz`` format: the face maps', the image, line integral and geometry
        (``materials`` and ``material_names`` when rendered)."""
        extra = {} if self.materials is None else {
            "materials": self.materials.astype(np.float32), "material_names": np.array(self.material_names, dtype=str)}
        return extra | super().arrays() | {
            "image": self.image.astype(np.float32),
            "line_integral": self.line_integral.astype(np.float32),
            "geometry": np.array(self.geometry.to_json()),
        }


# ------------------------------------------------------------------ ray set-up
@dataclass
class _Rays:
    """Rays in one grid's continuous index space, Joseph-parametrised."""

    axis: int  # dominant index axis a
    base: torch.Tensor  # (N, 2) in-plane index (b, c) where the ray meets slice index 0
    slope: torch.Tensor  # (N, 2) in-plane index change per slice
    t0: torch.Tensor  # (N,) mm along the ray at slice index 0
    dt: torch.Tensor  # (N,) mm along the ray per slice index (signed)
    origin: torch.Tensor  # (3,) source in index coords
    direction: torch.Tensor  # (N, 3) index change per mm
    grid_base: torch.Tensor = None  # (N, 2) float32: base in grid_sample units of the slices
    grid_slope: torch.Tensor = None  # (N, 2) float32: slope in grid_sample units

    def for_slices(self, slices: torch.Tensor) -> "_Rays":
        """Precompute grid_sample coordinates for a (S, 1, n_c, n_b) slice stack."""
        nb, nc = slices.shape[3], slices.shape[2]
        scale = torch.tensor([2.0 / max(nb - 1, 1), 2.0 / max(nc - 1, 1)], dtype=torch.float64, device=self.base.device)
        self.grid_base = (self.base * scale - 1.0).to(torch.float32)
        self.grid_slope = (self.slope * scale).to(torch.float32)
        return self


def _rays_in_grid(geometry: XrayGeometry, world_to_index: np.ndarray, device: torch.device,
                  dirs: np.ndarray | None = None) -> _Rays:
    """The rays of ``geometry`` in a grid's index space (``dirs``: its (N, 3) world ray directions, if known)."""
    src = geometry.source_position_world
    dirs = geometry.ray_directions_world().reshape(-1, 3) if dirs is None else dirs
    o = world_to_index[:3, :3] @ src + world_to_index[:3, 3]
    d = dirs @ world_to_index[:3, :3].T  # index units per mm
    # the axis whose worst ray is still most parallel to it
    ad = np.abs(d)
    longest = np.maximum(np.maximum(ad[:, 0], ad[:, 1]), ad[:, 2])  # np.max(ad, axis=1), without its slow short-axis loop
    score = np.array([np.min(ad[:, a] / longest) for a in range(3)])
    axis = int(np.argmax(score))
    da = d[:, axis]
    if np.any(np.abs(da) < 1e-9) or not (np.all(da > 0) or np.all(da < 0)):
        raise InputError("geometry: rays are parallel to every volume axis; cannot render this pose")
    b, c = [k for k in range(3) if k != axis]
    t0 = -o[axis] / da
    base = np.stack([o[b] + t0 * d[:, b], o[c] + t0 * d[:, c]], axis=-1)
    slope = np.stack([d[:, b] / da, d[:, c] / da], axis=-1)
    f64 = dict(device=device, dtype=torch.float64)
    return _Rays(
        axis=axis,
        base=torch.as_tensor(base, **f64),
        slope=torch.as_tensor(slope, **f64),
        t0=torch.as_tensor(t0, **f64),
        dt=torch.as_tensor(1.0 / da, **f64),
        origin=torch.as_tensor(o, **f64),
        direction=torch.as_tensor(d, **f64),
    )


def _norm(p: torch.Tensor, n: int) -> torch.Tensor:
    """Index -> grid_sample coordinate for align_corners=True."""
    return p * (2.0 / max(n - 1, 1)) - 1.0


def _sample_slices(slices: torch.Tensor, rays: _Rays, ray_idx: torch.Tensor, s0: int, s1: int) -> torch.Tensor:
    """Bilinear samples of slices ``s0 .. s1-1`` along rays ``ray_idx`` (N,) -> (S, C, N), C the channels."""
    base = rays.grid_base[ray_idx]  # (N, 2), grid_sample units
    slope = rays.grid_slope[ray_idx]
    s = torch.arange(s0, s1, device=base.device, dtype=torch.float32)[:, None, None]
    grid = torch.addcmul(base[None], s, slope[None])  # (S, N, 2)
    out = F.grid_sample(slices[s0:s1], grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, :, 0, :]


def _ray_box_hits(rays: _Rays, shape_zyx: Sequence[int]) -> torch.Tensor:
    """Rays whose line crosses the box of voxel centres [0, n-1] on every axis."""
    o, d = rays.origin, rays.direction
    n = torch.tensor([shape_zyx[2], shape_zyx[1], shape_zyx[0]], dtype=torch.float64, device=o.device)
    with torch.no_grad():
        inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1 = (0.0 - o) * inv
        t2 = (n - 1.0 - o) * inv
        tmin = torch.minimum(t1, t2).amax(dim=1)
        tmax = torch.maximum(t1, t2).amin(dim=1)
    return (tmax >= tmin) & (tmax > 0)


# ------------------------------------------------------------------ rendering
def _check_in_front(geometry: XrayGeometry, index_to_world: np.ndarray, shape_zyx: Sequence[int]) -> None:
    nz, ny, nx = shape_zyx
    corners = np.array([[i, j, k] for i in (-1, nx) for j in (-1, ny) for k in (-1, nz)], dtype=np.float64)
    world = corners @ index_to_world[:3, :3].T + index_to_world[:3, 3]
    z = geometry.to_source(world)[:, 2]
    if np.any(z <= 0):
        raise InputError(
            "pose puts part of the volume behind the X-ray source "
            f"(nearest corner at z = {z.min():.1f} mm in the source frame); move the source further away"
        )


def _drr(scene: Scene, geometry: XrayGeometry, device: torch.device, max_samples: int, bar,
         key: str = "mu", arrays: list | None = None, dirs: np.ndarray | None = None) -> np.ndarray:
    """Line integrals (sum of value x path length in mm) per pixel, (C, H, W): one per volume of ``arrays``
    (:meth:`Scene.slice_stack`'s channels; default: the attenuation). The channels share the rays and every interpolation weight, so one pass
    renders them all; each channel's numbers are those of a pass of its own. ``dirs``: the world ray
    directions, when the caller has them."""
    rays = _rays_in_grid(geometry, np.linalg.inv(scene.index_to_world), device, dirs)
    slices = scene.slice_stack(key, ["mu"] if arrays is None else arrays, rays.axis, device)
    rays.for_slices(slices)
    n_slices, n_ch = slices.shape[0], slices.shape[1]
    n_rays = rays.base.shape[0]
    out = torch.zeros((n_ch, n_rays), dtype=torch.float64, device=device)
    chunk = max(1, min(n_rays, max_samples // 64))
    s_batch = max(1, max_samples // chunk)
    for r0 in range(0, n_rays, chunk):
        ridx = torch.arange(r0, min(n_rays, r0 + chunk), device=device)
        acc = torch.zeros((n_ch, len(ridx)), dtype=torch.float32, device=device)
        for s0 in range(0, n_slices, s_batch):
            acc += _sample_slices(slices, rays, ridx, s0, min(n_slices, s0 + s_batch)).sum(0)
        out[:, ridx] = acc.to(torch.float64) * rays.dt[ridx].abs()
        bar.update(len(ridx) * n_ch)
    return out.reshape(n_ch, *geometry.detector_shape).cpu().numpy()


def _grid_point(vol5: torch.Tensor, rays: _Rays, ray_idx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points at distance ``t`` (mm) along rays, as float32 grid_sample coordinates of a (1, 1, z, y, x) volume."""
    p = rays.origin[None] + t.to(torch.float64)[:, None] * rays.direction[ray_idx]
    nz, ny, nx = vol5.shape[2:]
    return torch.stack([_norm(p[:, 0], nx), _norm(p[:, 1], ny), _norm(p[:, 2], nz)], dim=-1).to(torch.float32)


def _sample_grid(vol5: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of a (1, 1, z, y, x) volume at (N, 3) grid_sample coordinates -> (N,)."""
    out = F.grid_sample(vol5, grid[None, None, None], mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(-1)


def _bisect(
    vol5: torch.Tensor, rays: _Rays, ridx: torch.Tensor, t_out: torch.Tensor, t_in: torch.Tensor, steps: int
) -> torch.Tensor:
    """Refine a 0.5-crossing bracketed by t_out (field < 0.5) and t_in (>= 0.5); returns t (mm, float64).

    The bracket is bisected as the fraction s in [0, 1] of the segment from t_out to t_in, its points
    interpolated in grid units (float32, as the samples are taken), then the crossing is the linear
    interpolation of the field over the last bracket.
    """
    g_out, g_in = _grid_point(vol5, rays, ridx, t_out), _grid_point(vol5, rays, ridx, t_in)
    span = g_in - g_out
    f_out, f_in = _sample_grid(vol5, g_out), _sample_grid(vol5, g_in)
    s_out = torch.zeros_like(f_out)
    s_in = torch.ones_like(f_out)
    for _ in range(steps):
        s_mid = 0.5 * (s_out + s_in)
        f_mid = _sample_grid(vol5, torch.addcmul(g_out, s_mid[:, None], span))
        inside = f_mid >= 0.5
        s_in = torch.where(inside, s_mid, s_in)
        f_in = torch.where(inside, f_mid, f_in)
        s_out = torch.where(inside, s_out, s_mid)
        f_out = torch.where(inside, f_out, f_mid)
    w = ((0.5 - f_out) / (f_in - f_out).clamp_min(1e-12)).clamp(0.0, 1.0)
    s = (s_out + w * (s_in - s_out)).to(torch.float64)
    return t_out + s * (t_in - t_out)


def _crossing_slices(inside: torch.Tensor, faces: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per ray, the profile positions of its K faces (module doc), from an (S, N) inside-profile along t.

    Returns ``k`` (K, N) long: the inside sample of each crossing's bracket, ``entry`` (K,) bool: whether
    face k is an entry (its outside neighbour is k - 1) or an exit (k + 1), and ``valid`` (K/2 - 1, N)
    bool: gap j + 1 exists. Every ray must enter the bone at least once.

    A gap of one sample (thinner than about a slice step) is closed first: it is the staircase of a
    voxelised surface met at a grazing angle, not a gap in the bone (a binary sphere gives such
    0.6 mm "gaps" under its skin). The crossings left are at samples inside the raw profile.
    """
    s = inside.shape[0]
    first_in = inside.to(torch.uint8).argmax(0)
    if faces == 2:  # the first entry and the last exit; the margin guarantees outside neighbours
        last_out = s - 1 - inside.flip(0).to(torch.uint8).argmax(0)
        return torch.stack([first_in, last_out]), torch.tensor([True, False], device=inside.device), \
            inside.new_zeros((0, inside.shape[1]))

    def shifted(a: torch.Tensor, by: int) -> torch.Tensor:  # a[k - by] at k, False beyond the ends
        out = torch.zeros_like(a)
        if by > 0:
            out[by:] = a[:-by]
        else:
            out[:by] = a[-by:]
        return out

    inside = inside | (shifted(inside, 1) & shifted(inside, -1))
    before, after = shifted(inside, 1), shifted(inside, -1)
    enter, leave = inside & ~before, inside & ~after
    n = enter.sum(0)
    c_in, c_out = enter.cumsum(0), leave.cumsum(0)

    def nth(count: torch.Tensor, j: int) -> torch.Tensor:  # the profile index where the j-th crossing happens
        return (count >= j).to(torch.uint8).argmax(0)

    last_in = s - 1 - enter.flip(0).to(torch.uint8).argmax(0)
    last_out = s - 1 - inside.flip(0).to(torch.uint8).argmax(0)
    half = faces // 2
    k = [first_in]  # closing fills no sample before the first inside one, nor after the last
    for j in range(1, half):
        k += [nth(c_out, j), last_in if j == half - 1 else nth(c_in, j + 1)]
    k.append(last_out)
    entry = torch.tensor([True] + [False, True] * (half - 1) + [False], device=inside.device)
    return torch.stack(k), entry, torch.stack([n > j for j in range(1, half)])


def _bone_faces(
    bone: BoneField,
    scene: Scene,
    geometry: XrayGeometry,
    device: torch.device,
    max_samples: int,
    refine_steps: int,
    bar,
    faces: int = 2,
    dirs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One bone's mask (H, W) bool, depths (K, H, W) mm and gap validity (K/2 - 1, H, W) bool (module doc).

    ``dirs``: the (N, 3) world ray directions, when the caller has them (the same for every bone)."""
    w2i = np.linalg.inv(scene.bone_index_to_world(bone))
    rays = _rays_in_grid(geometry, w2i, device, dirs)
    vol5 = torch.as_tensor(bone.occupancy, device=device)[None, None]
    slices = scene.slice_stack("bone:" + bone.name, bone.occupancy, rays.axis, device)
    rays.for_slices(slices)
    n_slices = slices.shape[0]
    n_rays = rays.base.shape[0]
    mask = torch.zeros(n_rays, dtype=torch.bool, device=device)
    depth = torch.zeros((faces, n_rays), dtype=torch.float64, device=device)
    valid = torch.zeros((faces // 2 - 1, n_rays), dtype=torch.bool, device=device)
    candidates = torch.nonzero(_ray_box_hits(rays, bone.occupancy.shape)).reshape(-1)
    # slice order along increasing distance from the source
    order = torch.arange(n_slices, device=device)
    reverse = bool(rays.dt[0] < 0)
    if reverse:
        order = order.flip(0)
    chunk = max(1, max_samples // n_slices)
    bar.update(n_rays - len(candidates))  # rays that miss the bone's box are done
    for r0 in range(0, len(candidates), chunk):
        ridx = candidates[r0 : r0 + chunk]
        prof = _sample_slices(slices, rays, ridx, 0, n_slices)[:, 0]  # (S, N)
        if reverse:
            prof = prof.flip(0)  # now along increasing t
        inside = prof >= 0.5
        hit = inside.any(0)
        if hit.any():
            ridx_h = ridx[hit]
            ks, entry, ok = _crossing_slices(inside[:, hit], faces)
            valid[:, ridx_h] = ok
            # every crossing of the chunk, all faces at once: its inside sample and the outside one before or after it
            rs, fs, kin, kout = [], [], [], []
            for f in range(faces):
                sel = None if f in (0, faces - 1) else ok[(f - 1) // 2]
                r, k = (ridx_h, ks[f]) if sel is None else (ridx_h[sel], ks[f, sel])
                rs.append(r)
                fs.append(torch.full_like(r, f))
                kin.append(k)
                kout.append((k - 1).clamp_min(0) if entry[f] else (k + 1).clamp_max(n_slices - 1))
            r, f_of, k, k_out = (torch.cat(v) for v in (rs, fs, kin, kout))
            if len(r):
                t_in, t_out = (rays.t0[r] + order[x].to(torch.float64) * rays.dt[r] for x in (k, k_out))
                depth[f_of, r] = _bisect(vol5, rays, r, t_out, t_in, refine_steps)
            mask[ridx_h] = True
        bar.update(len(ridx))
    shape = geometry.detector_shape
    return (
        mask.reshape(shape).cpu().numpy(),
        depth.reshape(faces, *shape).cpu().numpy(),
        valid.reshape(-1, *shape).cpu().numpy(),
    )


def check_faces(faces: int) -> None:
    """Refuse a face count that is not even and at least 2 (``--faces``; module doc)."""
    if int(faces) != faces or faces < 2 or faces % 2:
        raise InputError(f"--faces must be an even number of at least 2 (2: front and back), got {faces}")


def render(
    scene: Scene,
    geometry: XrayGeometry,
    device: str | torch.device = "cpu",
    max_samples: int | None = None,
    refine_steps: int = 6,
    progress: bool = False,
    drr: bool = True,
    faces: int = 2,
) -> RenderResult:
    """Render the DRR and every bone's mask and front/back depth maps (and inner faces for ``faces`` > 2).

    Args:
        scene: attenuation and bones (:func:`make_scene`).
        geometry: detector and pose.
        device: torch device ("cpu", "cuda").
        max_samples: slice samples in flight at once (bounds memory: about
            ``16 * max_samples`` bytes of temporaries). Default: 2**19 on a CPU
            (measured fastest: the working set stays in cache), 2**24 on CUDA.
        refine_steps: bisection steps refining each surface crossing.
        progress: show a progress bar (stderr).
        drr: compute the DRR (set False for depths only). With ``scene.materials``
            the material line integrals (g/cm^2) are rendered and the DRR is
            ``mu_water * sum_m r_m * A_m`` (exact for :func:`~threeddx.simulator.physics.decompose_hu`).
        faces: K, the depth faces per bone and ray (even, at least 2; module doc): for K > 2 the
            result also has ``depth_inner`` and ``inner_valid``.
    """
    check_faces(faces)
    device = torch.device(device)
    if max_samples is None:
        max_samples = 1 << 24 if device.type == "cuda" else 1 << 19
    _check_in_front(geometry, scene.index_to_world, scene.shape)
    n_rays = geometry.detector_shape[0] * geometry.detector_shape[1]
    mats = scene.materials if drr and scene.materials else {}
    bar = tqdm(
        total=n_rays * (len(scene.bones) + (len(mats) if mats else int(drr))), desc="render", unit="ray",
        unit_scale=True, leave=False, disable=None if progress else True,
    )
    try:
        with torch.no_grad():
            mat_maps = None
            dirs = geometry.ray_directions_world().reshape(-1, 3)  # one set of rays for the DRR and every bone
            if mats:
                from threeddx.simulator.physics import RELATIVE_ATTENUATION_PER_DENSITY

                # (g/cm^3) x mm -> g/cm^2: x 0.1; one pass for every material that has a voxel (an empty one's
                # line integral is 0 exactly: most bodies carry no metal)
                mat_maps = np.zeros((len(mats), *geometry.detector_shape))
                empty = scene.empty_materials()
                todo = [m for m in mats if m not in empty]
                bar.update(n_rays * (len(mats) - len(todo)))
                if todo:
                    maps = _drr(scene, geometry, device, max_samples, bar, "materials:" + ",".join(todo), todo, dirs)
                    mat_maps[[list(mats).index(m) for m in todo]] = 0.1 * maps
                li = scene.mu_water * 10.0 * sum(RELATIVE_ATTENUATION_PER_DENSITY[m] * mat_maps[i] for i, m in enumerate(mats))
            elif drr:
                li = _drr(scene, geometry, device, max_samples, bar, dirs=dirs)[0]
            else:
                li = np.zeros(geometry.detector_shape)
            c = len(scene.bones)
            masks = np.zeros((c, *geometry.detector_shape), np.uint8)
            depths = np.zeros((c, faces, *geometry.detector_shape), np.float32)
            valid = np.zeros((c, faces // 2 - 1, *geometry.detector_shape), np.uint8)
            for i, bone in enumerate(scene.bones):
                masks[i], depths[i], valid[i] = _bone_faces(bone, scene, geometry, device, max_samples,
                                                            refine_steps, bar, faces, dirs)
    finally:
        bar.close()
    return RenderResult(
        image=window_image(li),
        line_integral=li.astype(np.float32),
        masks=masks,
        depth_front=np.ascontiguousarray(depths[:, 0]),
        depth_back=np.ascontiguousarray(depths[:, -1]),
        bones=scene.bone_names,
        geometry=geometry,
        materials=None if mat_maps is None else mat_maps.astype(np.float32),
        material_names=None if mat_maps is None else list(mats),
        depth_inner=np.ascontiguousarray(depths[:, 1:-1]) if faces > 2 else None,
        inner_valid=valid if faces > 2 else None,
    )



def mesh_silhouette(vertices_world: np.ndarray, faces: np.ndarray, geometry: XrayGeometry) -> np.ndarray:
    """Exact silhouette of a triangle mesh: pixels whose centre ray hits any triangle.

    Vertices in world mm; returns a (rows, cols) bool mask. Used to check masks
    and to tell which part of a surface the detector sees.
    """
    from threeddx.raster import points_in_triangles

    row, col, _ = geometry.project(vertices_world)
    f = np.asarray(faces)
    uv = np.stack([col + np.sqrt(2.0) * 1e-7, row + np.sqrt(3.0) * 1e-7], axis=1)
    front = np.all(np.isfinite(uv[f]), axis=(1, 2))
    f = f[front]
    rows, cols = geometry.detector_shape
    _, u, v, *_ = points_in_triangles(uv[f[:, 0]], uv[f[:, 1]], uv[f[:, 2]], shape=(cols, rows))
    mask = np.zeros((rows, cols), bool)
    mask[v, u] = True
    return mask


# ------------------------------------------------------------------ files in, files out
def bones_center_world(scene: Scene) -> np.ndarray:
    """Centre (world mm) of the box around all bones: the preset's iso-centre. Without bones, the centre of
    the scene's grid (for a scene made by :func:`scene_from_ct`, the box of the CT's non-air voxels)."""
    pts = []
    for b in scene.bones:
        nz, ny, nx = b.occupancy.shape
        lo = np.array(b.offset, dtype=float)
        hi = lo + np.array([nx - 1, ny - 1, nz - 1])
        pts += [lo, hi]
    if not pts:
        nz, ny, nx = scene.shape
        pts = [np.zeros(3), np.array([nx - 1, ny - 1, nz - 1], float)]
    lo, hi = np.min(pts, axis=0), np.max(pts, axis=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ scene.index_to_world[:3, :3].T + scene.index_to_world[:3, 3]
    return 0.5 * (world.min(0) + world.max(0))


def render_to_folder(out, ct_path=None, label_path=None, bone_items=None, label_table=None, geometry=None,
                     size: int = 256, seed: int | None = None, device: str = "cpu", progress: bool = True,
                     faces: int = 2) -> dict:
    """``3ddx render``: a CT and its labels (or the bundled chest CT) -> ``out/render.npz`` and ``preview.png``.

    The geometry is ``geometry`` (an :class:`~threeddx.geometry.XrayGeometry`), else
    the AP preset at ``size`` px centred on the bones (a random pose with
    ``seed``). ``faces``: K depth faces per bone (:func:`render`). The folder is
    written all or nothing. Returns what was done (bones, mask pixels, timings).
    """
    import time
    from pathlib import Path

    from threeddx.geometry import sample_pose, standard_ap_geometry
    from threeddx.io import (CHEST_DEFAULT_BONES, bundled_chest_ct, check_bones_present, check_out_folder, load_ct,
                     load_label_table, load_labels, parse_bones, result_folder, save_npz_atomic)
    from threeddx.apps.viz import save_preview

    if (ct_path is None) != (label_path is None):
        raise InputError("give both --ct and --labels, or neither (the bundled chest CT)")
    if size < 8:
        raise InputError(f"--size must be at least 8 pixels, got {size}")
    check_faces(faces)
    bundled = ct_path is None
    ct_path, label_path = bundled_chest_ct() if bundled else (ct_path, label_path)
    bone_items = bone_items or (list(CHEST_DEFAULT_BONES) if bundled else None)
    bones = parse_bones(bone_items, load_label_table(label_table))
    check_out_folder(out, "render.npz")  # before any work

    t0 = time.perf_counter()
    ct = load_ct(ct_path)
    labels = load_labels(label_path, ct)
    check_bones_present(bones, labels)
    scene = make_scene(ct, labels, bones)
    if geometry is None:
        iso = bones_center_world(scene)
        geometry = standard_ap_geometry(iso, size=size)
        if seed is not None:
            geometry = geometry.with_pose(sample_pose(iso, seed))
    t1 = time.perf_counter()
    result = render(scene, geometry, device=device, progress=progress, faces=faces)
    t2 = time.perf_counter()
    with result_folder(out, "render.npz") as folder:
        save_preview(
            folder / "preview.png", result.image, result.masks, result.depth_front, result.depth_back, result.bones,
            title=f"{Path(ct_path).name}: {geometry.detector_shape[0]}x{geometry.detector_shape[1]} px, "
            f"SDD {geometry.sdd:.0f} mm",
        )
        save_npz_atomic(folder / "render.npz", **result.arrays())
    return {"bones": list(result.bones), "mask_px": {b: int(m.sum()) for b, m in zip(result.bones, result.masks)},
            "geometry": geometry, "load_s": t1 - t0, "render_s": t2 - t1}
