"""The dual-face network: one 2D encoder-decoder from the X-ray to masks and depths.

A backbone (:class:`UNetTrunk`: a U-Net with residual blocks, GroupNorm, SiLU) and a head
(:class:`DualFaceHead`), each swappable for another module of the same interface
(:class:`DualFaceNet`). Input: the per-image normalised radiograph (B, 1, H, W). Output, per bone ``c``:

* ``mask_logits[:, c]``: the bone's mask logit (multi-label: bones overlap);
* ``depth_front[:, c]`` = SDD * (lo + (hi - lo) * sigmoid(a)): positive by
  construction and within [lo, hi] x SDD (defaults 0.5-1.0: 500-1000 mm for the
  standard preset), i.e. predicted relative to the source-to-detector distance;
* ``depth_back[:, c]`` = front + thickness_scale * softplus(b): never in front of
  the front face.

With ``faces`` K > 2 (:mod:`threeddx.simulator.render`'s K faces) it also predicts,
per bone, K/2 - 1 **gap logits** (``gap_logits[:, c, j]``: does the ray have
gap j + 1) and the K - 2 inner faces, ordered by construction between the
front and the back: the thickness back - front is split into K - 1 segments by
a softmax over K - 1 logits, and inner face k lies at front + thickness x the
sum of the first k segments (``depth_inner``, (B, C, K-2, H, W)). The first
3C output channels are those of a two-face network, so K = 2 is exactly the
network as before and its checkpoints load unchanged.

The single-depth baseline (``single_depth=True``) is the same network with one
depth map for the whole image (the nearest bone surface), trained with the
``"single"`` loss; it still predicts the per-bone masks.

**Context for absolute depth** (both off by default, so every earlier checkpoint loads as it was):
``coords`` adds two input channels, each pixel's position on the detector in [-1, 1] (columns, rows):
since the model always sees an image on its nominal detector (:func:`threeddx.geometry.model_view`),
that is the direction of the pixel's ray, which a convolution cannot otherwise know; ``attention``
heads of self-attention over the bottleneck's positions let every part of the image inform every
other (the receptive field of the whole image).

**Presets** (:data:`PRESETS`): named architectures, the network's room for backbones; a training config
names one (``model: {preset: NAME}``) and may override its fields.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from threeddx.bones import DEFAULT_BONES


@dataclass
class ModelConfig:
    bones: list[str] = field(default_factory=lambda: list(DEFAULT_BONES))
    width: int = 32  # channels at full resolution
    levels: int = 4  # down-sampling steps
    blocks: int = 1  # residual blocks per level
    single_depth: bool = False
    sdd_mm: float = 1000.0
    depth_lo: float = 0.5  # fraction of the SDD
    depth_hi: float = 1.0
    thickness_mm: float = 20.0  # scale of the back-face offset
    faces: int = 2  # depth faces per bone (even; module doc)
    coords: bool = False  # the pixels' detector positions as two more input channels (module doc)
    attention: int = 0  # heads of self-attention at the bottleneck (0: none)

    def to_dict(self) -> dict:
        return asdict(self)


#: Named architectures (module doc): name -> (what it is, its ModelConfig fields). ``release-128`` is the released
#: dual-face models' (128 px, and fine-tuned at 256 px: configs/release-256-ft.yaml); the others are the
#: candidates for 256 px trained from scratch (issue 30; docs/results.md compares them).
PRESETS: dict[str, tuple[str, dict]] = {
    "small": ("width 16, 4 levels, 1 block: the CPU ablation's", {"width": 16, "levels": 4, "blocks": 1}),
    "release-128": ("width 24, 4 levels, 1 block: the released dual-face models (128 px; fine-tuned at 256 px)",
                    {"width": 24, "levels": 4, "blocks": 1}),
    "context-256": ("width 24, 5 levels, 1 block, ray directions in, 4-head attention at the bottleneck: the "
                    "context for absolute depth at 256 px", {"width": 24, "levels": 5, "blocks": 1, "coords": True,
                                                             "attention": 4}),
    "deep-256": ("width 24, 5 levels, 2 blocks: deeper, no attention", {"width": 24, "levels": 5, "blocks": 2}),
    "gpu-256": ("width 32, 5 levels, 2 blocks, ray directions, attention: for a GPU", {
        "width": 32, "levels": 5, "blocks": 2, "coords": True, "attention": 4}),
}


def model_config(settings: dict, **fixed) -> ModelConfig:
    """A :class:`ModelConfig` from a config's ``model`` section: its ``preset`` (a :data:`PRESETS` name), then
    the section's other fields over it, then ``fixed`` (what the data decides: bones, single depth)."""
    from threeddx.errors import look_up_option

    d = {k: v for k, v in settings.items() if v is not None}  # unset: the preset's, else ModelConfig's
    name = d.pop("preset", None)
    base = dict(PRESETS[look_up_option(name, PRESETS, "model preset")][1]) if name is not None else {}
    return ModelConfig(**{**base, **d, **fixed})


def _groups(c: int) -> int:
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(_groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n2 = nn.GroupNorm(_groups(cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


def pixel_positions(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): each pixel centre's column and row position on the detector in [-1, 1] (x's dtype)."""
    b, _, h, w = x.shape
    cols = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w * 2 - 1
    rows = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h * 2 - 1
    return torch.stack(torch.broadcast_tensors(cols[None, :], rows[:, None]))[None].expand(b, 2, h, w)


class BottleneckAttention(nn.Module):
    """Multi-head self-attention over every position of a (B, C, H, W) map, residual, with a learnt position
    embedding added to the keys and queries (sized for the map it first sees; interpolated for others)."""

    def __init__(self, channels: int, heads: int, grid: int = 8) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.pos = nn.Parameter(torch.zeros(1, channels, grid, grid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = F.interpolate(self.pos, size=(h, w), mode="bilinear", align_corners=False)
        t = (self.norm(x) + pos).flatten(2).transpose(1, 2)  # (B, HW, C)
        out, _ = self.attn(t, t, t, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNetTrunk(nn.Module):
    """The backbone: a U-Net of residual blocks (GroupNorm, SiLU) from the image (B, 1, H, W) to features
    (B, :attr:`out_channels`, H, W); with ``coords`` the pixels' detector positions join the input, with
    ``attention`` self-attention runs over the bottleneck (module doc). Its size is the config's ``width``,
    ``levels`` and ``blocks`` (:data:`PRESETS`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, L = cfg.width, cfg.levels
        chans = [w * min(2**i, 8) for i in range(L + 1)]
        self.out_channels = chans[0]
        self.stem = nn.Conv2d(3 if cfg.coords else 1, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i in range(L + 1):
            cin = chans[max(i - 1, 0)] if i else chans[0]
            blocks = [ResBlock(cin if b == 0 else chans[i], chans[i]) for b in range(cfg.blocks)]
            self.enc.append(nn.Sequential(*blocks))
            if i < L:
                self.down.append(nn.Conv2d(chans[i], chans[i], 3, stride=2, padding=1))
        self.attend = BottleneckAttention(chans[L], cfg.attention) if cfg.attention else None
        self.dec = nn.ModuleList()
        for i in reversed(range(L)):
            blocks = [ResBlock(chans[i + 1] + chans[i] if b == 0 else chans[i], chans[i]) for b in range(cfg.blocks)]
            self.dec.append(nn.Sequential(*blocks))

    @property
    def downsample_factor(self) -> int:
        return 2**self.cfg.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of {f}")
        if self.cfg.coords:
            x = torch.cat([x, pixel_positions(x)], dim=1)
        h = self.stem(x)
        skips = []
        for i, enc in enumerate(self.enc):
            h = enc(h)
            if i < len(self.down):
                skips.append(h)
                h = self.down[i](h)
        if self.attend is not None:
            h = self.attend(h)
        for dec in self.dec:
            s = skips.pop()
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = dec(torch.cat([h, s], dim=1))
        return h


class DualFaceHead(nn.Sequential):
    """The head: features (B, channels, H, W) -> per bone the mask logit and the depth faces (module doc):
    GroupNorm, SiLU and a 1x1 convolution, then the depth decoding, the last two in float32 under any autocast
    (a bfloat16 logit, 8 significant bits, would put the depths on a ~1 mm grid). Its front-depth bias starts
    at the preset's iso-centre."""

    def __init__(self, cfg: ModelConfig, channels: int) -> None:
        c = len(cfg.bones)
        if cfg.faces < 2 or cfg.faces % 2 or (cfg.single_depth and cfg.faces != 2):
            raise ValueError(f"faces must be even and at least 2 (2 for the single-depth baseline), got {cfg.faces}")
        n_depth = 1 if cfg.single_depth else 2 * c
        # K > 2: per bone K/2 - 1 gap logits and K - 1 segment logits, after the two-face channels
        n_inner = 0 if cfg.faces == 2 else c * (cfg.faces // 2 - 1) + c * (cfg.faces - 1)
        super().__init__(nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, c + n_depth + n_inner, 1))
        self.cfg, self.n_depth, self.n_inner = cfg, n_depth, n_inner
        with torch.no_grad():
            # start the front depth near the preset's iso-centre (820 mm of a 1000 mm SDD)
            b = self[-1].bias
            b.zero_()
            frac = (0.82 - cfg.depth_lo) / (cfg.depth_hi - cfg.depth_lo)
            frac = min(max(frac, 0.05), 0.95)
            start = torch.logit(torch.tensor(frac))
            if cfg.single_depth:
                b[c] = start
            else:
                b[c : 2 * c] = start

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self[1](self[0](h))
        with torch.autocast(device_type=h.device.type, enabled=False):
            out = self[-1](h.float())
        cfg, c = self.cfg, len(self.cfg.bones)
        span = cfg.sdd_mm * (cfg.depth_hi - cfg.depth_lo)
        res = {"mask_logits": out[:, :c]}
        if cfg.single_depth:
            res["depth"] = cfg.sdd_mm * cfg.depth_lo + span * torch.sigmoid(out[:, c : c + 1])
        else:
            front = cfg.sdd_mm * cfg.depth_lo + span * torch.sigmoid(out[:, c : 2 * c])
            res["depth_front"] = front
            res["depth_back"] = front + cfg.thickness_mm * F.softplus(out[:, 2 * c : 3 * c])
            if cfg.faces > 2:
                res.update(inner_faces(out[:, 3 * c:], front, res["depth_back"], cfg.faces))
        return res


#: The trunk's parameters' names in checkpoints written before the trunk had a name of its own.
_TRUNK_PARTS = ("stem.", "down.", "enc.", "attend.", "dec.")


def upgrade_state_dict(weights: dict, prefix: str = "") -> dict:
    """A state dict written before the trunk/head split (``stem.*``, ``enc.*``, ...) with today's names
    (``trunk.stem.*``, ...), in place; the head's names did not change. Returns it."""
    for key in [k for k in weights if k.startswith(tuple(prefix + p for p in _TRUNK_PARTS))]:
        weights[prefix + "trunk." + key[len(prefix):]] = weights.pop(key)
    return weights


class DualFaceNet(nn.Module):
    """The dual-face network: a backbone (``trunk``, default :class:`UNetTrunk`) and a head (``head``,
    default :class:`DualFaceHead`), either swappable for another module of the same interface (features
    (B, channels, H, W); the outputs' dict). Checkpoints whose trunk parameters have no ``trunk.`` prefix
    (written before the split) load unchanged."""

    def __init__(self, cfg: ModelConfig, trunk: nn.Module | None = None, head: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = trunk if trunk is not None else UNetTrunk(cfg)
        self.head = head if head is not None else DualFaceHead(cfg, self.trunk.out_channels)
        self.n_depth = getattr(self.head, "n_depth", None)
        self.n_inner = getattr(self.head, "n_inner", None)
        self._register_load_state_dict_pre_hook(self._upgrade_keys)

    @staticmethod
    def _upgrade_keys(state_dict, prefix, *args) -> None:
        upgrade_state_dict(state_dict, prefix)

    @property
    def downsample_factor(self) -> int:
        return self.trunk.downsample_factor

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.trunk(x))


def inner_faces(raw: torch.Tensor, front: torch.Tensor, back: torch.Tensor, faces: int) -> dict[str, torch.Tensor]:
    """The K > 2 outputs (module doc) from the head's extra channels (B, C (K/2-1) + C (K-1), H, W):
    ``gap_logits`` (B, C, K/2-1, H, W) and ``depth_inner`` (B, C, K-2, H, W) mm, front <= ... <= back."""
    b, c, h, w = front.shape
    n_gap = faces // 2 - 1
    gaps = raw[:, : c * n_gap].reshape(b, c, n_gap, h, w)
    seg = torch.softmax(raw[:, c * n_gap:].reshape(b, c, faces - 1, h, w), dim=2)
    frac = torch.cumsum(seg, dim=2)[:, :, : faces - 2]  # the first k segments, k = 1 .. K-2
    return {"gap_logits": gaps, "depth_inner": front[:, :, None] + (back - front)[:, :, None] * frac}


def face_masks(masks: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The predicted validity of the stacked depth maps (fronts, inner faces bone by bone, backs; threeddx.training.train's
    ``depth_prediction``) (two-face and K-face models): the masks, and for
    the inner faces the mask and their gap's probability over 0.5."""
    if "gap_logits" not in out:
        return torch.cat([masks, masks], 1)
    gaps = (torch.sigmoid(out["gap_logits"]) > 0.5) & (masks[:, :, None] > 0.5)
    inner = torch.repeat_interleave(gaps, 2, dim=2).flatten(1, 2).to(masks.dtype)
    return torch.cat([masks, inner, masks], 1)


def nearest_surface(masks: torch.Tensor, front: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-depth target: per pixel the nearest front face over all bones, and its mask.

    (B, C, H, W) -> (B, 1, H, W) depth (0 where no bone) and mask.
    """
    m = masks > 0.5
    d = torch.where(m, front, torch.full_like(front, float("inf"))).amin(dim=1, keepdim=True)
    union = m.any(dim=1, keepdim=True)
    return torch.where(union, d, torch.zeros_like(d)), union.to(front.dtype)


def apply_casi_offset(pred: torch.Tensor, mask: torch.Tensor, offset_mm: float) -> torch.Tensor:
    """Shift (B, M, H, W) depths so that their mean inside ``mask`` is ``offset_mm`` per image."""
    v = (mask > 0.5).to(pred.dtype)
    mean = (pred * v).sum(dim=(1, 2, 3), keepdim=True) / v.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    return pred - mean + offset_mm


# ------------------------------------------------------------------ is there a bone?
#: Decision rule of :func:`bone_checks` (calibrated in benchmarks/robustness.py, docs/results.md "Refusal").
FOUND_MIN_CONFIDENCE = 0.75  # mean sigmoid probability inside the predicted mask
FOUND_AREA_RATIO = (0.2, 5.0)  # predicted area / median training area
FOUND_MAX_CENTROID_Z = 4.0  # |centroid - training mean| / training SD, per axis


def bone_checks(probs: np.ndarray, bones: list[str], stats: dict | None) -> dict[str, dict]:
    """Is each bone in the image? Per bone: confidence, plausibility figures, ``found`` and why not.

    ``probs``: (C, H, W) sigmoid mask probabilities at the model's resolution.
    ``stats``: the checkpoint's ``confidence`` entry (training masks' area and
    centroid per bone, :func:`threeddx.training.train.mask_statistics`); None for older
    checkpoints, which are judged on confidence and a minimum area only.

    The **confidence** is the mean probability inside the predicted mask (0
    when the mask is empty): the network's own certainty. A bone is found when
    the confidence reaches :data:`FOUND_MIN_CONFIDENCE`, its area is within
    :data:`FOUND_AREA_RATIO` of the training masks' median and its centroid
    within :data:`FOUND_MAX_CENTROID_Z` standard deviations of theirs.
    """
    out: dict[str, dict] = {}
    per_bone = (stats or {}).get("bones", {})
    scale = probs.shape[-1] / float((stats or {}).get("size", probs.shape[-1]))
    for c, b in enumerate(bones):
        p = probs[c]
        m = p > 0.5
        area = int(m.sum())
        conf = float(p[m].mean()) if area else 0.0
        info: dict = {"confidence": round(conf, 4), "mask_px": area}
        reasons = []
        if area < 4:
            reasons.append("no mask")
        elif conf < FOUND_MIN_CONFIDENCE:
            reasons.append(f"confidence {conf:.2f} < {FOUND_MIN_CONFIDENCE}")
        st = per_bone.get(b)
        if st and area >= 4:
            ratio = area / (st["area_px_median"] * scale**2)
            r, k = np.nonzero(m)
            z = np.abs((np.array([r.mean(), k.mean()]) / scale - np.array(st["centroid_mean"])) / np.array(st["centroid_sd"]))
            info.update({"area_ratio": round(float(ratio), 3), "centroid_z": round(float(z.max()), 2)})
            if not FOUND_AREA_RATIO[0] <= ratio <= FOUND_AREA_RATIO[1]:
                reasons.append(f"mask area {ratio:.2f}x the training median")
            if z.max() > FOUND_MAX_CENTROID_Z:
                reasons.append(f"mask {z.max():.1f} SD from where this bone lies in training images")
        info["found"] = not reasons
        if reasons:
            info["why_not"] = "; ".join(reasons)
        out[b] = info
    return out
