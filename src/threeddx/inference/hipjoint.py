"""Hip-joint anchoring: each femur placed along the beam by its hip joint.

**Why.** From one AP radiograph, how far a bone lies along the beam shows only
through magnification; the released network places each femur with a spread
of 9-13 mm from image to image, the pelvis (a bigger bone) within 3.9 mm, while
the femurs' *shapes* are as good as the pelvis's (docs/results.md, "Where the
femur error comes from"). The femoral head sits in the acetabulum: its centre
is the hip-joint centre (HJC). The acetabulum is an inner face, which the
dual-face maps never see, but the pelvis's visible faces do fix a shape model
of the whole pelvis, and that model carries the HJCs (LLP26's ``pelvis-LHJC``
/ ``-RHJC`` landmarks, :mod:`threeddx.meshing.ssm`).

**What :func:`anchor_femurs` does**, after the network (it is the last step of
:meth:`threeddx.inference.predictor.Predictor.infer`):

1. **hip joints**: the pelvis shape model (training split only;
   ``data/hip_model.npz``, written by ``scripts/make_hip_model.py``) is fitted
   to the predicted pelvis's front and back points (:func:`threeddx.meshing.ssm.fit_ssm`,
   rigid pose and 15 modes) in the exposure's AP frame, started at the
   points' centroid with the orientation the view implies
   (:func:`threeddx.meshing.ssm.fit_in_view`; nothing depends on the world frame), matching also the
   pelvis's outline in the image (its probability at 0.5, weight :data:`OUTLINE_WEIGHT`; a fit the outline
   makes implausible is dropped for the points' own), and
   judged (:func:`threeddx.meshing.ssm.judge_fit`: a rejected fit anchors nothing);
   its landmarks give both HJCs in world mm; the ``ssm`` mesher reuses this fit;
2. **head depth**: per femur, the mean mid-depth ``(front + back) / 2`` of its
   pixels within :data:`HEAD_RADIUS_MM` (on the detector) of the HJC's
   projection; in ground truth that is within -0.4 +- 0.7 mm of the head
   centre's distance from the source (``benchmarks/femur_offset.py``);
3. **shift**: the femur's front and back depths are moved along their own
   rays by ``weight * (|HJC - source| - head depth)``. A shift along the rays
   keeps the femur's silhouette and, to first order, its shape.

A femur is left where the network put it, and its check says why
(``hip_anchor.skipped``), when the pelvis is not found or has too few points,
the pelvis fit's RMS exceeds :data:`MAX_FIT_RMS_MM`, the femur has fewer than
:data:`MIN_HEAD_PIXELS` pixels around the joint, or the shift would exceed
:data:`MAX_SHIFT_MM` (a joint that far from the head is more likely a bad
fit than a bad femur). The settings (:class:`AnchorSettings`) were chosen on
the validation split, never the test split (docs/results.md, "Hip-joint anchoring").

Units: mm; depths are distances from the source along each pixel's ray, as
everywhere in the package. Frames: the view's AP frame for the fit, the joints and the
head depths (nothing here sees the world frame); the summary's joints in world mm.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from threeddx.bones import REGISTRY as _REGISTRY, View as _View
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.meshing.reconstruct import backproject_bone
from threeddx.meshing.ssm import PELVIS_MODEL_PATH, FitBounds

#: Femur -> the pelvis landmark of its joint (a live view of the bone registry, threeddx.bones).
JOINTS: Mapping[str, str] = _View(lambda: {b.name: b.joint for b in _REGISTRY.values() if b.joint})
#: Radius (mm on the detector) of the disc around the joint's projection whose femur pixels give the head depth:
#: inside a femoral head (radius ~22-27 mm, ~1.2x magnified) wherever the joint projects on it.
HEAD_RADIUS_MM = 15.0
#: Fewest femur pixels around the joint that give a head depth, and fewest pelvis pixels (each a front and a
#: back point) that a pelvis fit is tried on.
MIN_HEAD_PIXELS = 5
MIN_PELVIS_PIXELS = 100
#: A pelvis fit worse than this (RMS of its inliers' distances, mm) anchors nothing: the shape-model fit's own bound.
MAX_FIT_RMS_MM = FitBounds.max_rms_mm
#: A shift larger than this (mm) is not applied.
MAX_SHIFT_MM = 40.0
#: Weight of the pelvis's outline (from the network's pelvis probability) in its shape-model fit, against its
#: surface points (:class:`threeddx.meshing.ssm.Outline`): chosen on the validation split (docs/results.md, "The
#: pelvis's outline in its fit"); and the fewest outline points it is used with.
OUTLINE_WEIGHT = 3.0
MIN_OUTLINE_POINTS = 50


@dataclass(frozen=True)
class AnchorSettings:
    """How far to trust the joint: ``weight`` 1 moves each femur all the way to it, 0 not at all."""

    weight: float = 1.0
    head_radius_mm: float = HEAD_RADIUS_MM
    max_shift_mm: float = MAX_SHIFT_MM
    max_fit_rms_mm: float = MAX_FIT_RMS_MM
    #: weight of the pelvis's outline in its shape-model fit (0: its surface points only)
    outline_weight: float = OUTLINE_WEIGHT


def load_hip_model(path: str | Path = PELVIS_MODEL_PATH):
    """The pelvis shape model with its HJC landmarks (:func:`threeddx.meshing.ssm.shipped_pelvis_model`), read once per process."""
    from threeddx.meshing.ssm import shipped_pelvis_model

    return shipped_pelvis_model(path)


def fit_pelvis(pelvis_points: np.ndarray, geometry: XrayGeometry, model=None, outline: np.ndarray | None = None,
               outline_weight: float = OUTLINE_WEIGHT):
    """The pelvis shape model fitted to the pelvis's surface points (N, 3) mm in ``geometry``'s AP frame
    (back-projected through ``geometry.in_ap_frame()``).

    Started from the data and the view, judged, returned in world mm
    (:func:`threeddx.meshing.ssm.fit_in_view`): a :class:`threeddx.meshing.ssm.FitResult` whose
    ``landmarks`` hold both hip-joint centres. The ``ssm`` mesher meshes the pelvis
    from this same fit (one fit per image). ``outline``: the pelvis's probability (or mask) on ``geometry``'s
    pixels, whose outline the fit matches too with ``outline_weight`` (:class:`threeddx.meshing.ssm.Outline`).
    Raises InputError when the points cannot be fitted.
    """
    from threeddx.meshing.ssm import FitSettings, Outline, fit_in_view, outline_points

    model = model or load_hip_model()
    points = {"pelvis": np.asarray(pelvis_points, np.float64)}
    if outline is not None and outline_weight > 0:
        edge = outline_points(outline)
        if len(edge) >= MIN_OUTLINE_POINTS:
            fit = fit_in_view(model, points, geometry, FitSettings(),
                              outline=Outline("pelvis", edge, geometry, outline_weight, mask=np.asarray(outline) > 0.5))
            if "pelvis" not in fit.rejected:
                return fit
    # no outline, or one that made the fit implausible (judge_fit): the surface points' own fit
    return fit_in_view(model, points, geometry, FitSettings())


def hip_joint_centres(pelvis_points: np.ndarray, geometry: XrayGeometry, model=None) -> tuple[dict[str, np.ndarray], float]:
    """Both hip-joint centres (name -> (3,) world mm) from the pelvis's surface points (N, 3) mm in the AP frame.

    Returns the centres and the fit's RMS (mm). Raises InputError when the points cannot be fitted.
    """
    fit = fit_pelvis(pelvis_points, geometry, model)
    return {n: fit.landmarks[n] for n in JOINTS.values()}, fit.rms_mm["pelvis"]


def head_depth(mask: np.ndarray, front: np.ndarray, back: np.ndarray, geometry: XrayGeometry,
               centre_world: np.ndarray, radius_mm: float = HEAD_RADIUS_MM) -> tuple[float, int]:
    """Mean mid-depth (mm from the source) of a femur's pixels within ``radius_mm`` of a point's projection.

    ``mask``, ``front``, ``back``: (rows, cols), the femur's maps on ``geometry``'s rays.
    Returns (depth, number of pixels); the depth is NaN with no pixel.
    """
    row, col, _ = geometry.project(np.asarray(centre_world, np.float64)[None])
    rr, cc = np.mgrid[: mask.shape[0], : mask.shape[1]]
    sr, sc = geometry.pixel_spacing
    disc = ((rr - row[0]) * sr) ** 2 + ((cc - col[0]) * sc) ** 2 <= radius_mm**2
    sel = disc & (mask > 0)
    n = int(sel.sum())
    if n == 0:
        return float("nan"), 0
    return float(((front + back) / 2)[sel].mean()), n


def anchor_femurs(bones: list[str], masks: np.ndarray, front: np.ndarray, back: np.ndarray | None,
                  geometry: XrayGeometry, checks: dict, settings: AnchorSettings | None = None,
                  found: dict[str, bool] | None = None, inner: tuple[np.ndarray, np.ndarray] | None = None,
                  fits: dict | None = None, probabilities: np.ndarray | None = None) -> dict:
    """Shift each femur's depth maps (in place) along its rays so its head meets the pelvis's hip joint.

    ``masks`` (C, H, W) bool, ``front``/``back`` (C, H, W) mm on ``geometry``'s rays,
    ``bones`` the C names. Writes a ``hip_anchor`` entry into each femur's ``checks``
    (the shift applied, or why none was) and returns the same entries, femur -> dict.
    ``found``: per bone whether it was found (default: every bone is). ``inner``:
    a K-face model's inner faces (C, K-2, H, W) mm and gap validity (C, K/2-1, H, W)
    bool, shifted with the rest. ``fits``: when given, receives the pelvis fit (``fits["pelvis"]``, a
    :class:`threeddx.meshing.ssm.FitResult` in world mm, judged) for the ``ssm`` mesher to reuse.
    ``probabilities``: (C, H, W) the bones' probabilities, whose pelvis outline the fit matches too when
    ``settings.outline_weight`` > 0 (default: the masks').
    """
    st = settings or AnchorSettings()
    femurs = [b for b in JOINTS if b in bones]
    out: dict[str, dict] = {}

    def skip(why: str) -> dict:
        for b in femurs:
            out[b] = {"applied": False, "skipped": why}
            checks.setdefault(b, {})["hip_anchor"] = out[b]
        return out

    if back is None or not femurs or "pelvis" not in bones:
        return skip("needs a dual-face model with a pelvis and femurs")
    found = found or {}
    p = bones.index("pelvis")
    if not found.get("pelvis", True):
        return skip("pelvis not found")
    in_ap = geometry.in_ap_frame()  # every position below in the view's AP frame: nothing sees the world frame
    pelvis = backproject_bone(masks[p], front[p], back[p], in_ap,
                              None if inner is None else (inner[0][p], inner[1][p]))
    if len(pelvis.pixels) < MIN_PELVIS_PIXELS:
        return skip("too few pelvis pixels")
    try:
        outline = masks[p].astype(np.float32) if probabilities is None else probabilities[p]
        fit = fit_pelvis(pelvis.both(), geometry, outline=outline,  # its points in_ap's world: the AP frame
                         outline_weight=st.outline_weight)
    except InputError as e:
        return skip(f"pelvis fit failed ({e})")
    if fits is not None:
        fits["pelvis"] = fit
    rms = fit.rms_mm["pelvis"]
    centres = {n: fit.landmarks[n] for n in JOINTS.values()}  # world mm, for the summary
    centres_ap = {n: fit.local_landmarks[n] for n in JOINTS.values()}
    checks.setdefault("pelvis", {})["hip_fit_rms_mm"] = round(rms, 3)
    checks["pelvis"]["hip_fit_outline_weight"] = fit.outline_weight
    if "pelvis" in fit.rejected:
        return skip(f"pelvis fit rejected: {fit.rejected['pelvis']}")
    if rms > st.max_fit_rms_mm:
        return skip(f"pelvis fit RMS {rms:.1f} mm > {st.max_fit_rms_mm:g} mm")
    source = in_ap.source_position_world
    for b in femurs:
        c = bones.index(b)
        hjc = centres_ap[JOINTS[b]]
        entry: dict = {"applied": False, "joint_world_mm": np.round(centres[JOINTS[b]], 2).tolist()}
        depth, n = head_depth(masks[c], front[c], back[c], in_ap, hjc, st.head_radius_mm)
        shift = float(np.linalg.norm(hjc - source)) - depth
        if not found.get(b, True):
            entry["skipped"] = "femur not found"
        elif n < MIN_HEAD_PIXELS:
            entry["skipped"] = f"{n} femur pixels around the joint (need {MIN_HEAD_PIXELS})"
        elif abs(shift) > st.max_shift_mm:
            entry["skipped"] = f"the joint is {shift:+.1f} mm from the head along the beam (over {st.max_shift_mm:g} mm)"
        else:
            d = np.float32(st.weight * shift)
            sel = masks[c]
            front[c][sel] += d
            back[c][sel] += d
            if inner is not None:  # K > 2: the inner faces move with the bone, where their gap exists
                depth_inner, valid = inner
                for j in range(valid.shape[1]):
                    on = sel & valid[c, j]
                    depth_inner[c, 2 * j][on] += d
                    depth_inner[c, 2 * j + 1][on] += d
            entry.update(applied=True, shift_mm=round(float(d), 3), head_pixels=n)
        if "shift_mm" not in entry and np.isfinite(shift):
            entry["joint_minus_head_mm"] = round(shift, 3)
        out[b] = entry
        checks.setdefault(b, {})["hip_anchor"] = entry
    return out
