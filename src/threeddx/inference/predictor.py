"""One inference path: a radiograph and its geometry in, a :class:`Prediction` out.

Predict, evaluate, demo and the benchmarks all call :meth:`Predictor.infer`
(as ml-depth-pro's ``DepthPro.infer`` owns its post-processing), so they
cannot drift apart. The steps, in order:

1. **intensities**: normalised per image (robust percentiles,
   :func:`threeddx.network.preprocess.normalise_radiograph`), as in training;
2. **the model's view** (:func:`threeddx.geometry.model_view`): the image is
   resampled so that the anatomy appears at the scale the network was trained
   at, whatever the detector, pixel size, SDD or declared iso-centre distance;
   big images are block-averaged first (no aliasing), parts of the view outside
   the image repeat its border;
3. **the network** (:meth:`Predictor.__call__`): masks, depths, the CASI
   offset for CASI checkpoints, and per bone a confidence and plausibility
   checks (:func:`threeddx.network.model.bone_checks`); with ``mirror`` the network
   also sees the view mirrored left to right, and its outputs, mirrored back
   with the left and right bones swapped, are averaged with the direct ones
   (:func:`mirror_average`: test-time augmentation, exact for the model's
   centred camera; only for checkpoints trained with mirrored patients, whose
   ``mirror_tta`` says so);
4. **depths back to the image's rays** (:meth:`threeddx.geometry.View.depth_to_image`):
   ``Prediction.geometry`` is the camera to back-project the maps with;
5. **hip-joint anchoring** (:func:`threeddx.inference.hipjoint.anchor_femurs`, dual-face
   models with a pelvis and femurs): each femur is moved along the beam so its
   head meets the hip joint that a shape-model fit of the predicted pelvis
   locates; ``Predictor(hip_anchor=None)`` (``--no-hip-anchor``) leaves the
   network's depths as they are. That pelvis fit is kept (``Prediction.fits``)
   and the ``ssm`` mesher meshes the pelvis from it: one fit per image;
6. **a calibration marker** (optional, ``infer(..., marker=)``): the bones scaled about the focal spot
   so the hip joints lie at the marker's depth (:func:`threeddx.inference.marker.place_by_marker`).

Nothing here imports the training module: a released checkpoint is read by
:mod:`threeddx.network.checkpoint` alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from threeddx.network.preprocess import centred, mirror_partners, normalise_radiograph
from threeddx.errors import InputError
from threeddx.geometry import View, XrayGeometry, model_view, view_axes
from threeddx.facemaps import FaceMaps
from threeddx.inference.hipjoint import AnchorSettings, anchor_femurs

#: A pixel belongs to a bone's mask (what is meshed) when its probability exceeds this. Calibrated
#: on the validation split of data/sim128 through random chains (benchmarks/mask_threshold.py,
#: docs/results.md "Mask threshold"): the lowest threshold with a mean false bone area under 5 %
#: among those within 0.005 of the best mean Dice; for the released dual-face model 0.7 is also the
#: best Dice (0.5: Dice 0.946, false area 6.6 %; 0.7: 0.949, 4.8 %), and for the single-depth baseline
#: the best Dice too (0.934). A checkpoint may carry its own (``mask_threshold``). The refusal checks
#: keep 0.5 (their calibration).
MASK_THRESHOLD = 0.7
#: A view that covers less than this share of the model's field with image pixels is warned about.
MIN_COVERAGE = 0.8
#: Iso-centre distances further than this from the training one are warned about (mm): the
#: largest shift benchmarks/robustness.py validates (SDD 1150 mm, the patient on the table).
MAX_VALIDATED_SHIFT_MM = 150.0


@dataclass(kw_only=True)
class Prediction(FaceMaps):
    """What the network says about one radiograph, on the model's pixel grid: the bones' face maps
    (:class:`~threeddx.facemaps.FaceMaps`) and how it came to them.

    ``masks`` (C, H, W) bool, ``depth_front``/``depth_back`` (C, H, W) float32, mm from the source along
    the rays of ``geometry`` (0 outside the masks; ``depth_back`` is None for a
    single-depth model; the femurs' depths as the hip-joint anchoring, step 5, moved them);
    for a K-face model (K > 2) ``depth_inner`` (C, K-2, H, W) mm and ``inner_valid``
    (C, K/2-1, H, W) bool; ``image``: the normalised radiograph as the network saw it (H, W) in [0, 1];
    ``probabilities`` (C, H, W) float32 per bone;
    ``checks``: per bone its confidence and whether it is found
    (:func:`threeddx.network.model.bone_checks`), and per femur ``hip_anchor`` (the
    shift applied, or why none was); ``view``: how the image was
    shown to the model; ``notes``: geometry warnings, one line each.
    """

    image: np.ndarray
    probabilities: np.ndarray
    checks: dict
    view: View
    notes: list[str] = field(default_factory=list)
    #: shape-model fits made on the way (bone -> :class:`threeddx.meshing.ssm.FitResult`, world mm, judged): the
    #: hip-joint anchoring's pelvis fit, which the ``ssm`` mesher reuses (one fit per image)
    fits: dict = field(default_factory=dict)
    #: the calibration marker's reading and what it moved (:func:`threeddx.inference.marker.place_by_marker`),
    #: None without a marker
    marker: dict | None = None

    @property
    def geometry(self) -> XrayGeometry:
        """The camera of the maps: the model's pixel grid on the image's rays, the image's pose."""
        return self.view.camera

    @property
    def any_found(self) -> bool:
        return any(c["found"] for c in self.checks.values())

    def maps(self) -> dict:
        """The arrays as the report and depth-map writers take them."""
        return {"masks": self.masks, "depth_front": self.depth_front, "depth_back": self.depth_back}

    def mirrored(self) -> "Prediction":
        """The prediction flipped left to right, the left and right bones swapped: what it says of the
        mirror image of the patient, on the same rays (exact for a centred camera; :func:`mirror_average`).

        Used to score a model on mirrored patients (:func:`threeddx.evaluation.evaluate.evaluate`, ``mirrored``):
        predict on the flipped image, then mirror the prediction back onto the patient's own rays.
        """
        partners = mirror_partners(self.bones)
        if partners is None or not centred(self.geometry):
            raise InputError("a prediction can be mirrored only with every bone's left/right partner and a centred camera")

        def flip(a):
            return None if a is None else np.ascontiguousarray(a[partners][..., ::-1])

        checks = {self.bones[partners[k]]: self.checks[b] for k, b in enumerate(self.bones) if b in self.checks}
        return Prediction(bones=self.bones, image=np.ascontiguousarray(self.image[:, ::-1]), masks=flip(self.masks),
                          probabilities=flip(self.probabilities), depth_front=flip(self.depth_front),
                          depth_back=flip(self.depth_back), checks=checks, view=self.view, notes=list(self.notes),
                          depth_inner=flip(self.depth_inner), inner_valid=flip(self.inner_valid))  # fits: the other maps

    def to_view(self, array: np.ndarray, nearest: bool = True) -> np.ndarray:
        """An array on the input image's pixel grid (H0, W0) resampled onto the view's grid."""
        return view_image(array, self.view.affine, self.masks.shape[-2:], nearest)


def view_image(image: np.ndarray, affine: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resample ``image`` (..., H0, W0) at ``affine @ (u, v, 1)`` for every pixel centre of a ``shape`` grid.

    Continuous pixel coordinates as in :mod:`threeddx.geometry` (the centre of
    pixel (i, j) at (j + 0.5, i + 0.5)). When one output pixel spans two or
    more input pixels, the input is first averaged over whole blocks of them
    (area sampling, as a detector read out at a lower resolution would be);
    then bilinear (or nearest) interpolation, the border repeated outside.
    float32 throughout.
    """
    image = np.asarray(image, dtype=np.float32)
    lead = image.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(image.reshape(-1, 1, *image.shape[-2:])))
    a = np.asarray(affine, dtype=np.float64).copy()
    if not nearest:
        fv, fu = max(int(a[1, 1]), 1), max(int(a[0, 0]), 1)
        if fv > 1 or fu > 1:
            t = F.avg_pool2d(t, (fv, fu))
            a[0] /= fu
            a[1] /= fv
    h0, w0 = t.shape[-2:]
    rows, cols = shape
    u, v = view_axes(a, shape)
    gx = torch.from_numpy(2.0 * u / w0 - 1.0).float()
    gy = torch.from_numpy(2.0 * v / h0 - 1.0).float()
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].expand(t.shape[0], -1, -1, -1)
    out = F.grid_sample(t, grid, mode="nearest" if nearest else "bilinear", padding_mode="border", align_corners=False)
    return out[:, 0].numpy().reshape(*lead, rows, cols)


def mirror_average(direct: dict, mirrored: dict, partners: list[int]) -> dict:
    """The network's outputs on a view and on the view mirrored left to right, averaged on the view's grid.

    Exact for a camera whose principal point is the detector's centre (the
    model's view): the mirrored image is that of the patient mirrored about
    the source frame's y-z plane, every ray maps onto the mirrored ray with the
    same length, so a depth predicted on the mirrored view and mirrored back is
    a depth of the same anatomy on the direct ray; the patient's left femur
    is a right femur there (``partners``, :func:`threeddx.network.preprocess.mirror_partners`).
    Tensors (B, C, H, W) with a channel per bone are mirrored back and their
    channels put back; a one-channel map (the single-depth model's nearest
    face) is mirrored back only. Depths are averaged in mm and mask logits as
    logits; a back face stays behind its front face (each is, so are the means).
    """
    out = {}
    for key, a in direct.items():
        b = torch.flip(mirrored[key], dims=[-1])
        if b.shape[1] == len(partners):
            b = b[:, partners]
        out[key] = 0.5 * (a + b)
    return out


def view_coverage(view: View, image_shape: tuple[int, int]) -> float:
    """Share of the view's pixels whose centre falls inside the image (0-1)."""
    u, v = view.image_coordinates()
    return float(np.mean((u >= 0) & (u <= image_shape[1]))) * float(np.mean((v >= 0) & (v <= image_shape[0])))


@dataclass
class Predictor:
    """A loaded checkpoint, ready to infer (the released name, or a path)."""

    checkpoint: Path | str | None
    device: str = "cpu"
    #: step 5 of the module doc; None: off
    hip_anchor: AnchorSettings | None = field(default_factory=AnchorSettings)
    #: step 3 of the module doc; None: as the checkpoint says (its ``mirror_tta``, False when absent)
    mirror: bool | None = None
    ck: "Checkpoint" = field(init=False, repr=False)  # noqa: F821 (threeddx.network.checkpoint.Checkpoint)
    model: torch.nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from threeddx.network.checkpoint import Checkpoint, build_model, load_checkpoint, resolve_checkpoint

        self.checkpoint = resolve_checkpoint(self.checkpoint)
        self.ck = Checkpoint.from_dict(load_checkpoint(self.checkpoint, map_location=self.device), self.checkpoint)
        self.model = build_model(self.ck, self.checkpoint).to(self.device).eval()

    @property
    def bones(self) -> list[str]:
        return list(self.ck["bones"])

    @property
    def geometry(self) -> XrayGeometry:
        """The nominal geometry the model was trained for (its detector, SDD, iso-centre distance, pose)."""
        return XrayGeometry.from_json(self.ck["geometry"], where=f"{self.checkpoint}:geometry")

    @property
    def size(self) -> int:
        return self.geometry.detector_shape[0]

    @property
    def single_depth(self) -> bool:
        return bool(self.ck["model_config"]["single_depth"])

    @property
    def mesh_method(self) -> str | dict[str, str]:
        """How this model's bones are meshed unless told otherwise: the checkpoint's ``mesh`` ({bone: mesher},
        chosen on the validation split when the model was released), each other bone ``dual`` (``front``
        for a single-depth model, which has no back face)."""
        base = "front" if self.single_depth else "dual"
        chosen = self.ck.get("mesh") or {}
        return {b: chosen.get(b, base) for b in self.bones} if chosen else base

    def meshing(self, method: "str | None" = None) -> str | dict[str, str]:
        """The meshing to use for ``method`` (``--mesh``): None gives :attr:`mesh_method`; a single-depth model,
        which has no back face, meshes its front faces unless a shape model is fitted to them (``ssm``)."""
        if method is None:
            return self.mesh_method
        return "front" if self.single_depth and method != "ssm" else method

    @property
    def mirror_partners(self) -> list[int] | None:
        """The channel order of :func:`mirror_average`, or None when the mirrored view is not used."""
        on = bool(self.ck.get("mirror_tta", False)) if self.mirror is None else self.mirror
        if not on or not centred(self.geometry):
            return None
        return mirror_partners(self.bones)

    @torch.no_grad()
    def __call__(self, image01: np.ndarray) -> dict:
        """The network on a view image (size, size) in [0, 1]: masks, probabilities, depths (model rays), checks."""
        from threeddx.network.model import apply_casi_offset, bone_checks, face_masks

        x = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None].to(self.device)
        partners = self.mirror_partners
        if partners is None:
            out = self.model(x)
        else:
            both = self.model(torch.cat([x, torch.flip(x, dims=[-1])]))
            out = mirror_average({k: v[:1] for k, v in both.items()}, {k: v[1:] for k, v in both.items()}, partners)
        probs = torch.sigmoid(out["mask_logits"])
        masks = probs > float(self.ck.get("mask_threshold", MASK_THRESHOLD))
        if self.single_depth:
            front, back = out["depth"].expand_as(out["mask_logits"]), None
        else:
            front, back = out["depth_front"], out["depth_back"]
        inner = out.get("depth_inner")  # K > 2: (1, C, K-2, H, W)
        valid = None if inner is None else (torch.sigmoid(out["gap_logits"]) > 0.5) & masks[:, :, None]
        off = self.ck.get("casi_offset_mm")
        if off is not None and back is not None:
            c = front.shape[1]
            maps = torch.cat([front, *([] if inner is None else [inner.flatten(1, 2)]), back], 1)
            shifted = apply_casi_offset(maps, face_masks(masks.float(), out), off)
            front, back = shifted[:, :c], shifted[:, -c:]
            if inner is not None:
                inner = shifted[:, c:-c].reshape(inner.shape)
        p = probs[0].cpu().numpy()
        res = {
            "masks": masks[0].cpu().numpy(),
            "probabilities": p,
            "depth_front": (front[0] * masks[0]).cpu().numpy(),
            "depth_back": None if back is None else (back[0] * masks[0]).cpu().numpy(),
            "checks": bone_checks(p, self.bones, self.ck.get("confidence")),
        }
        if inner is not None:
            v = torch.repeat_interleave(valid[0], 2, dim=1)  # gap j: faces 2j-1 and 2j
            res["depth_inner"] = (inner[0] * v).cpu().numpy()
            res["inner_valid"] = valid[0].cpu().numpy()
        return res

    def view_of(self, image: np.ndarray, geometry: XrayGeometry) -> tuple[View, np.ndarray]:
        """The model's view of a radiograph (H0, W0, any intensity scale) taken with ``geometry``: the view
        (:func:`model_view`) and its image (size, size) in [0, 1]."""
        nominal = self.geometry
        view = model_view(geometry, nominal, geometry.isocenter_distance_or_assumed,
                          nominal.isocenter_distance_or_assumed)
        image01 = normalise_radiograph(np.asarray(image, dtype=np.float32))
        return view, view_image(image01, view.affine, nominal.detector_shape)

    def shows_bone_dark(self, image: np.ndarray, geometry: XrayGeometry) -> bool:
        """Whether the radiograph shows bone dark (an inverted display; a calibration ball is then a dark disc):
        the network's bones against the body around them (:func:`threeddx.inference.marker.shows_bone_dark`)."""
        from threeddx.inference.marker import shows_bone_dark

        _, img = self.view_of(image, geometry)
        return shows_bone_dark(img, self(img)["masks"])

    def infer(self, image: np.ndarray, geometry: XrayGeometry, marker: "MarkerReading | None" = None) -> Prediction:
        """A radiograph (H0, W0, any intensity scale, bone bright) taken with ``geometry`` -> :class:`Prediction`.

        ``marker``: a calibration sphere found in this image (:class:`threeddx.inference.marker.MarkerReading`):
        its hips depth is the iso-centre distance, and the bones are placed by it (step 6,
        :func:`threeddx.inference.marker.place_by_marker`; ``Prediction.marker`` says what moved)."""
        from dataclasses import replace

        if marker is not None:
            geometry = replace(geometry, isocenter_distance=marker.hips_depth_mm)
        nominal = self.geometry
        d_model = nominal.isocenter_distance_or_assumed
        d_image = geometry.isocenter_distance_or_assumed
        view, img = self.view_of(image, geometry)
        raw = self(img)
        notes = []
        cover = view_coverage(view, image.shape)
        if cover < MIN_COVERAGE:
            notes.append(f"the image covers {100 * cover:.0f} % of the field the model was trained on "
                         f"({nominal.detector_shape[0] * nominal.pixel_spacing[0]:.0f} mm at {nominal.sdd:.0f} mm); "
                         "the rest repeats the image's border")
        if geometry.isocenter_distance is None and abs(geometry.sdd - nominal.sdd) > 0.01 * nominal.sdd:
            notes.append(f"source-to-detector distance {geometry.sdd:.0f} mm and no source_to_isocenter_mm declared: the "
                         f"anatomy is assumed {d_image:.0f} mm from the source (the patient on the table, as high above "
                         "the detector as in training)")
        if abs(view.shift_mm) > MAX_VALIDATED_SHIFT_MM:
            notes.append(f"the anatomy is {d_image:.0f} mm from the source; the model was trained at {d_model:.0f} mm "
                         f"and validated up to {MAX_VALIDATED_SHIFT_MM:.0f} mm from it: depths may be off")
        masks = raw["masks"]
        front = view.depth_to_image(raw["depth_front"]) * masks
        back = None if raw["depth_back"] is None else view.depth_to_image(raw["depth_back"]) * masks
        inner = None
        if raw.get("depth_inner") is not None:
            valid = raw["inner_valid"]
            inner = (view.depth_to_image(raw["depth_inner"]) * np.repeat(valid, 2, axis=1), valid)
        fits: dict = {}
        if self.hip_anchor is not None and back is not None:
            anchor_femurs(self.bones, masks, front, back, view.camera, raw["checks"], self.hip_anchor,
                          found={b: c["found"] for b, c in raw["checks"].items()}, inner=inner, fits=fits,
                          probabilities=raw.get("probabilities"))
        depth_inner, inner_valid = inner or (None, None)
        placed = None
        if marker is not None:
            from threeddx.inference.marker import place_by_marker

            placed = place_by_marker(front, back, depth_inner, view.camera, fits, marker)
        return Prediction(bones=self.bones, image=img, masks=masks,
                          probabilities=raw.get("probabilities", masks.astype(np.float32)), depth_front=front,
                          depth_back=back, checks=raw["checks"], view=view, marker=placed, notes=notes, depth_inner=depth_inner,
                          inner_valid=inner_valid, fits=fits)


#: Loaded predictors of this process, by (checkpoint, device, anchoring, mirror): a Dask worker loads a model once.
_LOADED: dict = {}


def loaded_predictor(checkpoint, device: str = "cpu", hip_anchor: AnchorSettings | None = AnchorSettings(),
                     mirror: bool | None = None) -> Predictor:
    """The :class:`Predictor` of these settings, loaded once per process (evaluate's and a batch's tasks)."""
    key = (str(checkpoint), device, hip_anchor, mirror)
    if key not in _LOADED:
        _LOADED[key] = Predictor(checkpoint, device, hip_anchor=hip_anchor, mirror=mirror)
    return _LOADED[key]
