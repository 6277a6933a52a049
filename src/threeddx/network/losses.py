"""Scale-invariant depth losses (the paper's core) and the mask loss.

Notation (shared/reference/method.md): for depth maps ``j`` with valid pixels
``I_j`` (inside the mask and with a positive target), ``g = log(pred) -
log(target)``.

* ``"single"`` (one map per image) and ``"dependent"`` (object-dependent: all
  maps of an image pooled into one set of N pixels)::

      L = alpha * sqrt( sum g^2 / N - lam * (sum g)^2 / N^2 )

* ``"independent"`` (object-independent): one such loss per map, averaged over
  the maps that have valid pixels.

Names follow the poster's formulas: *dependent* pools the maps, *independent*
treats them apart. (The authors' public code calls the per-map variant
``channel_dependent=True``, and its demo prints the opposite labels.)

``center_aligned=True`` is CASI: before the loss, the prediction is shifted by
the masked mean of ``target - pred`` over all maps of the image (mm). The shift
is computed inside the autograd graph, as in the authors' code, so neither the
value nor the gradient changes when a constant is added to the prediction
inside the masks: the network learns shape, not position.

As in the authors' code: ``relu`` on the prediction and a small ``eps`` inside
the log and the square root; the loss is averaged over the images of the batch
that have at least one valid pixel. Images or maps without valid pixels add
nothing, and a batch without any gives exactly 0 (never NaN), still connected
to the graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("single", "dependent", "independent")


def _si_from_sums(s1: torch.Tensor, s2: torch.Tensor, n: torch.Tensor, lam: float, alpha: float, eps: float) -> torch.Tensor:
    """alpha * sqrt(s2/n - lam (s1/n)^2), for n > 0 (caller masks n == 0)."""
    n_safe = n.clamp_min(1.0)
    var = s2 / n_safe - lam * (s1 / n_safe) ** 2
    return alpha * torch.sqrt(var.clamp_min(0.0) + eps)


def scale_invariant_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "dependent",
    center_aligned: bool = False,
    lam: float = 0.85,
    alpha: float = 10.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Scale-invariant log loss over M depth maps per image.

    Args:
        pred, target: (B, M, H, W) depths in mm (positive distances, never normalised).
        mask: (B, M, H, W), valid where > 0.5 (and target > 0).
        mode: "single" (M must be 1), "dependent" (maps pooled), "independent" (per map, averaged).
        center_aligned: CASI (see the module doc).
        lam: the lambda of the variance term (0.85 as in the authors' code; 1 gives a
            scale-invariant loss: pred * c leaves it unchanged).
        alpha: scale of the loss.
        eps: added inside the log and the square root.

    Returns:
        A scalar tensor.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if pred.shape != target.shape or pred.shape != mask.shape or pred.dim() != 4:
        raise ValueError(f"pred, target and mask must share a (B, M, H, W) shape, got {pred.shape}, {target.shape}, {mask.shape}")
    if mode == "single" and pred.shape[1] != 1:
        raise ValueError(f"mode 'single' takes one depth map per image, got {pred.shape[1]}")
    valid = (mask > 0.5) & (target > 0)
    v = valid.to(pred.dtype)
    if center_aligned:
        n_img = v.sum(dim=(1, 2, 3), keepdim=True)
        diff = torch.where(valid, target - pred, torch.zeros_like(pred))
        shift = diff.sum(dim=(1, 2, 3), keepdim=True) / n_img.clamp_min(1.0)
        pred = pred + shift
    g = torch.log(F.relu(pred) + eps) - torch.log(target.clamp_min(0) + eps)
    g = torch.where(valid, g, torch.zeros_like(g))
    if mode in ("single", "dependent"):
        n = v.sum(dim=(1, 2, 3))
        per_img = _si_from_sums(g.sum(dim=(1, 2, 3)), (g * g).sum(dim=(1, 2, 3)), n, lam, alpha, eps)
        has = n > 0
    else:
        n = v.sum(dim=(2, 3))  # (B, M)
        per_map = _si_from_sums(g.sum(dim=(2, 3)), (g * g).sum(dim=(2, 3)), n, lam, alpha, eps)
        has_map = (n > 0).to(pred.dtype)
        n_maps = has_map.sum(dim=1)
        per_img = (per_map * has_map).sum(dim=1) / n_maps.clamp_min(1.0)
        has = n_maps > 0
    if not bool(has.any()):
        return pred.sum() * 0.0
    return per_img[has].mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, smooth: float = 1.0) -> torch.Tensor:
    """Multi-label mask loss: BCE with logits + soft Dice, per bone channel, averaged.

    Bones overlap in projection, so each channel is its own binary problem
    (no softmax across bones). ``logits``/``target``: (B, C, H, W).
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    denom = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    return bce + dice_weight * dice.mean()
