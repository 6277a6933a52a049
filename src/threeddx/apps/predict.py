"""X-ray in, bone meshes out: the pipeline from a radiograph file to a result folder.

Reading the file (pixels, geometry, orientation, what was assumed) is :mod:`threeddx.apps.radiograph`;
everything after reading (intensity normalisation, the model's view of the image's geometry, the network,
the refusal checks, the hip-joint anchoring) is :meth:`threeddx.inference.predictor.Predictor.infer`; this module
runs the two, meshes the bones (:data:`threeddx.meshing.reconstruct.MESHERS`) and writes the meshes, maps,
report and summary (:func:`write_reconstruction`), or says what it would read (:func:`inspect_image`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from threeddx.bones import in_group
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry, document_isocenter_basis
from threeddx.inference.predictor import Prediction, Predictor  # noqa: F401 (the inference API, re-exported)
from threeddx.io import atomic_path, check_out_folder, named_path, result_folder
from threeddx.apps.radiograph import (  # noqa: F401 (reading radiographs; re-exported where predict's callers look)
    IMAGE_SUFFIXES, MAX_PIXELS, Declared, Reading, check_pixel_limit, dicom_geometry, read_radiograph)

if TYPE_CHECKING:
    from threeddx.meshing.reconstruct import MeshMethod
    from threeddx.meshing.ssm import FitSettings

#: The file that makes a folder a predict result (replaced whole by the next predict into it).
RESULT_MARKER = "summary.json"


@dataclass(frozen=True)
class MarkerSpec:
    """A calibration sphere the user says is in the image (``--marker-mm``, ``--marker-offset-mm``): its
    diameter (mm) and how much further from the source the hip joints lie than its centre (mm)."""

    diameter_mm: float
    offset_mm: float = 0.0

    @classmethod
    def from_geometry(cls, path: str | Path | None) -> "MarkerSpec | None":
        """The ball a geometry document declares (``marker_diameter_mm``, ``marker_offset_mm``:
        :data:`threeddx.geometry.MARKER_KEYS`; :meth:`XrayGeometry.load` has refused a malformed document), or
        None."""
        if path is None:
            return None
        d = json.loads(Path(path).read_text())
        if d.get("marker_diameter_mm") is None:
            return None
        try:
            spec = cls(float(d["marker_diameter_mm"]), float(d.get("marker_offset_mm") or 0.0))
        except (TypeError, ValueError):
            raise InputError(f"{path}: marker_diameter_mm and marker_offset_mm must be numbers") from None
        try:
            return spec.check()
        except InputError as e:
            raise InputError(f"{path}: {e}") from None

    def check(self) -> "MarkerSpec":
        """Refuse, in one line, a diameter outside :data:`threeddx.inference.marker.DIAMETER_RANGE_MM` or an
        offset beyond +-300 mm; return self."""
        from threeddx.inference.marker import DIAMETER_RANGE_MM

        lo, hi = DIAMETER_RANGE_MM
        if not (np.isfinite(self.diameter_mm) and lo <= self.diameter_mm <= hi):
            raise InputError(f"the calibration marker's diameter must be between {lo:g} and {hi:g} mm, got "
                             f"{self.diameter_mm:g}")
        if not np.isfinite(self.offset_mm) or abs(self.offset_mm) > 300:
            raise InputError(f"the calibration marker's offset must be within +-300 mm, got {self.offset_mm:g}")
        return self

    def read(self, image: np.ndarray, geometry: XrayGeometry, predictor: Predictor, reading: Reading | None = None):
        """The marker found in ``image`` at its own resolution (:func:`threeddx.inference.marker.find_marker`;
        one-line InputError when none, several or a cut one is found), as a
        :class:`~threeddx.inference.marker.MarkerReading`; a dark disc where ``predictor`` sees the image show
        bone dark (:meth:`~threeddx.inference.predictor.Predictor.shows_bone_dark`). Measured on the file's
        detector signal when ``reading`` holds one (a "for processing" file, :attr:`Reading.signal`), its steel's
        soft edge reckoned at the file's tube voltage (:attr:`Reading.kvp`) or an assumed one; the
        ``reading``'s iso-centre basis is set to what the ball's depth rests on
        (:data:`threeddx.geometry.ISOCENTER_SD_MM`: ``marker``, ``marker+signal`` or ``marker+signal+kvp``)."""
        from threeddx.inference.marker import EDGE_KVP, MarkerReading, find_marker

        self.check()
        dark = predictor.shows_bone_dark(image, geometry)
        signal = reading.signal if reading is not None else None
        kvp = reading.kvp if reading is not None else None
        found = find_marker(image, geometry, self.diameter_mm, bone_dark=dark, signal=signal, kvp=kvp)
        if reading is not None:
            on_signal = found.read_on == "detector signal"
            reading.isocenter_basis = ("marker" if not on_signal else "marker+signal" if kvp is None
                                       else "marker+signal+kvp")
            if on_signal and kvp is None:
                reading.assumptions.append(f"the calibration ball's soft edge reckoned at {EDGE_KVP:g} kVp (the "
                                           "file states no KVP)")
        return MarkerReading(found, float(self.offset_mm))


def marker_for(marker: MarkerSpec | None, geometry_path: str | Path | None,
               declared: "Declared | None") -> tuple[MarkerSpec | None, str]:
    """The calibration ball to read and who declared it: ``--marker-mm`` over the geometry document's
    ``marker_diameter_mm``; a document's ball beside ``--isocenter-mm``/``--table-mm`` is refused (each sets
    the iso-centre)."""
    if marker is not None:
        return marker, "--marker-mm"
    from_file = MarkerSpec.from_geometry(geometry_path)
    if from_file is None:
        return None, ""
    if declared is not None and (declared.isocenter_mm is not None or declared.table_mm is not None):
        raise InputError("the geometry's marker_diameter_mm sets the iso-centre: drop --isocenter-mm/--table-mm "
                         "or the marker")
    return from_file, "the geometry's marker_diameter_mm"


def read_input(image_path: str | Path, predictor: Predictor, geometry_path: str | Path | None,
               declared: "Declared | None", reading: Reading) -> tuple[np.ndarray, XrayGeometry, str]:
    """What predict and inspect read: the image and its geometry (``--geometry`` or ``--pixel-mm``, not both;
    :func:`read_radiograph`), the model's nominal geometry the fallback. ``reading.isocenter_basis`` says what
    the iso-centre distance rests on (:data:`threeddx.geometry.ISOCENTER_SD_MM`)."""
    if geometry_path is not None and declared is not None and declared.builds_geometry:
        raise InputError("give either --geometry or --pixel-mm/--sdd-mm, not both")
    given = XrayGeometry.load(geometry_path) if geometry_path else None
    if given is not None and given.isocenter_distance is not None:  # the document, already checked by load
        reading.isocenter_basis = document_isocenter_basis(json.loads(Path(geometry_path).read_text()))
    raw, geo, source = read_radiograph(image_path, given, predictor.geometry, declared, reading)
    if source == "checkpoint" and reading.isocenter_basis is None:  # the model's nominal distance, not the image's
        reading.isocenter_basis = "assumed"
    return raw, geo, source


def placement_uncertainty(bones: dict, reading: Reading, geometry: XrayGeometry) -> float:
    """Add each calibrated bone's ``placement_total_sd_mm``: its network's ``placement_sd_mm`` and the iso-centre's
    own uncertainty (:meth:`Reading.isocenter_sd_mm`) in quadrature; return the latter (mm)."""
    iso = reading.isocenter_sd_mm(geometry)
    for b in bones.values():
        if "placement_sd_mm" in b:
            b["placement_total_sd_mm"] = round(float(np.hypot(b["placement_sd_mm"], iso)), 2)
    return iso


def inspect_image(image_path: str | Path, predictor: Predictor, geometry_path: str | Path | None = None,
                  declared: "Declared | None" = None, marker: "MarkerSpec | None" = None) -> dict:
    """What predict reads from an image and what it assumes, and whether the model sees a hip (``3ddx inspect``).

    Nothing is written. Keys: the file, its size; the geometry (SDD, pixel size, the iso-centre distance,
    declared or assumed) and where it came from; the pose's origin; the intensity steps applied; the
    reading convention; per bone the model's confidence and verdict; every warning predict would print.
    """
    reading = Reading()
    raw, geo, source = read_input(image_path, predictor, geometry_path, declared, reading)
    marker, marker_from = marker_for(marker, geometry_path, declared)
    found = marker.read(raw, geo, predictor, reading) if marker is not None else None
    if found is not None:
        from dataclasses import replace

        geo = replace(geo, isocenter_distance=found.hips_depth_mm)
        reading.isocenter_from = marker_from
    pred = predictor.infer(raw, geo)
    extra = {"marker": {**found.marker.to_dict(), "offset_mm": found.offset_mm}} if found is not None else {}
    return {**extra,
        "image": str(image_path),
        "size_px": list(raw.shape),
        "geometry_from": source,
        "source_to_detector_mm": geo.sdd,
        "pixel_spacing_mm": list(geo.pixel_spacing),
        "source_to_isocenter_mm": geo.isocenter_distance_or_assumed,
        "isocenter": (f"declared: {reading.isocenter_from}" if reading.isocenter_from and
                      reading.isocenter_from.startswith(("--", "the geometry's")) else
                      f"from the DICOM tags: {reading.isocenter_from}" if reading.isocenter_from and source == "DICOM"
                      else "the model's nominal geometry's" if source == "checkpoint" else
                      "declared" if geo.isocenter_distance is not None else
                      f"assumed: the patient on the table, {geo.sdd - geo.isocenter_distance_or_assumed:g} mm above "
                      "the detector"),
        "pose": "the model's nominal AP pose" if pose_warning(source) else "from the geometry",
        "reading": "as an AP radiograph is read: superior at the top, the patient's right on the image's left; "
                   + ("; ".join(reading.orientation) if reading.orientation else "no turn or flip needed"),
        **reading.to_dict(),
        "model_view": {"scale": round(pred.view.scale, 5), "isocenter_shift_mm": round(pred.view.shift_mm, 3)},
        "bones": {b: {k: c[k] for k in ("confidence", "found", "why_not") if k in c} for b, c in pred.checks.items()},
        "hip_found": pred.any_found,
        "warnings": pred.notes + pose_warning(source),
    }


# ------------------------------------------------------------------ predict
def pose_warning(source: str) -> list[str]:
    """A line when the patient's pose is not in the input (the model's nominal pose is used)."""
    if source in ("checkpoint", "DICOM", "--pixel-mm"):
        return ["the patient's pose is not in the image file: the model's nominal pose is assumed, so meshes are in "
                "that nominal frame (give --geometry for a calibrated pose)"]
    return []


def rejected_fit_lines(pred: Prediction, info: dict) -> list[str]:
    """One warning line per bone whose shape-model fit was judged implausible (threeddx.meshing.ssm.judge_fit)."""
    lines = {}
    for bone, entry in info.items():
        if isinstance(entry, dict) and "ssm_rejected" in entry:
            lines[bone] = (f"{bone}: shape-model fit rejected ({entry['ssm_rejected']}); meshed "
                           f"{entry['mesh_method']} (the network's own surface) instead")
    pelvis = pred.fits.get("pelvis")
    if pelvis is not None and "pelvis" in pelvis.rejected:
        anchored = "; the femurs were not anchored at its hip joints"
        lines["pelvis"] = lines.get("pelvis", f"pelvis: shape-model fit rejected ({pelvis.rejected['pelvis']})") + anchored
    return list(lines.values())


@dataclass
class Reconstruction:
    """One radiograph reconstructed, in memory: what :func:`write_reconstruction` writes.

    ``prediction``: the network's maps (:class:`~threeddx.inference.predictor.Prediction`);
    ``world_meshes``: per bone the mesh in world mm (for scoring); ``meshes``: the
    same in the output frame; ``clouds``: the front/back points; ``summary``: what
    goes into summary.json (timings completed by the writer).
    """

    prediction: Prediction
    world_meshes: dict
    meshes: dict
    clouds: dict
    summary: dict
    title: str = ""
    truth: dict | None = None

    def add_truth(self, truth_world: dict, metrics: dict) -> None:
        """Attach the ground truth (bone -> world mesh) and its scores (bone -> {assd, hd95}, mm).

        Written as ``truth/BONE.ply`` in the output frame and ``truth_metrics`` in summary.json; the view
        overlays it.
        """
        geo = self.prediction.geometry
        self.truth = {}
        for name, mesh in truth_world.items():
            mesh = mesh.copy()
            if self.summary["frame"] == "source":
                mesh.apply_transform(geo.world_to_source)
            self.truth[name] = mesh
        self.summary["truth_metrics"] = metrics

    def view_data(self):
        """What :mod:`threeddx.apps.view` shows of this reconstruction."""
        from threeddx.apps.view import ViewData

        p = self.prediction
        return ViewData(self.title, p.image, p.masks, list(p.bones), self.meshes, p.geometry,
                        self.summary["frame"], self.summary, self.truth)


def bone_summary(mesh, check: dict) -> dict:
    """A reconstructed bone's entry in summary.json: its mesh's size and volume, the model's judgement."""
    return {
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "watertight": bool(mesh.is_watertight),
        "volume_cm3": float(mesh.volume / 1000) if mesh.is_watertight else None,
        "confidence": check.get("confidence"),
        "found": check.get("found", True),
    }


def reconstruct_image(
    image_path: str | Path,
    predictor: Predictor,
    geometry_path: str | Path | None = None,
    mesh_method: "MeshMethod | None" = None,
    frame: str = "world",
    ssm_settings: "FitSettings | None" = None,
    complete_femur: bool = False,
    force: bool = False,
    warn=None,
    declared: Declared | None = None,
    measure: bool = True,
    marker: MarkerSpec | None = None,
) -> Reconstruction:
    """Image -> Prediction -> meshes, nothing written (:func:`predict_file` writes them).

    ``mesh_method``: a row of :data:`threeddx.meshing.reconstruct.MESHERS`, or one per bone; None: the model's
    own (:attr:`~threeddx.inference.predictor.Predictor.mesh_method`). ``"ssm"``:
    the training-split shape model fitted to each bone's front and back points,
    clipped to the part that projects inside the detector; with
    ``complete_femur`` the femurs are whole, the part outside the field of view
    inferred by the model (the summary says how much). ``measure``: the hip's measurements
    (:func:`threeddx.inference.measure.measure_prediction`, summary.json's ``measurements``; the femurs'
    shape-model fits are made for them when the meshing did not make them). ``marker``: a calibration sphere
    in the image, found at the image's own resolution; the bones are placed by it (summary.json's ``marker``).
    """
    from threeddx.meshing.reconstruct import backproject_bone, mesh_bones, mesh_methods

    if frame not in ("world", "source"):
        raise InputError("--frame must be world or source")
    t = {}
    t0 = time.perf_counter()
    reading = Reading()
    raw, geo_full, geo_source = read_input(image_path, predictor, geometry_path, declared, reading)
    t["load_s"] = time.perf_counter() - t0

    reading_marker = None
    marker, marker_from = marker_for(marker, geometry_path, declared)
    if marker is not None:
        s = time.perf_counter()
        reading_marker = marker.read(raw, geo_full, predictor, reading)
        reading.isocenter_from = marker_from
        t["marker_s"] = time.perf_counter() - s
    t0 = time.perf_counter()
    pred = predictor.infer(raw, geo_full, marker=reading_marker)
    del raw
    t["network_s"] = time.perf_counter() - t0
    checks, geo = pred.checks, pred.geometry
    if not force and not pred.any_found:
        detail = "; ".join(f"{b}: {c.get('why_not', 'found')}" for b, c in checks.items())
        raise InputError(f"no hip anatomy found in {image_path} ({detail}); nothing written. "
                         "Not a hip radiograph, or one unlike any the model was trained on; --force reconstructs anyway")
    if pred.marker is not None and not pred.marker["applied"]:
        pred.notes.append(f"calibration marker found but not used: {pred.marker['skipped']}")
    for line in pred.notes + pose_warning(geo_source):
        (warn or (lambda s: None))(line)

    method = predictor.meshing(mesh_method)
    per_bone = mesh_methods(method, predictor.bones)
    if complete_femur and any(m != "ssm" for b, m in per_bone.items() if in_group(b, "femur")):
        raise InputError("--complete-femur needs --mesh ssm")
    bones, meshes = {}, {}
    s = time.perf_counter()
    maps, left_out = pred.for_meshing(keep=lambda b: None if force or checks[b]["found"] else "not found")
    missing = [f"{name} ({checks[name].get('why_not', 'no mask')})" for name in left_out]
    clouds = {name: backproject_bone(m.mask, m.front, m.back, geo, m.inner) for name, m in maps.items()}
    t["backprojection_s"] = time.perf_counter() - s
    s = time.perf_counter()
    result = mesh_bones(maps, geo, method, ssm_settings=ssm_settings, complete_femur=complete_femur, fits=pred.fits)
    t["meshing_s"] = time.perf_counter() - s
    for line in rejected_fit_lines(pred, result.info):
        (warn or (lambda s: None))(line)
    world_meshes = {}
    for name, mesh in result.meshes.items():
        if isinstance(mesh, InputError):
            missing.append(f"{name} ({mesh})")
            del clouds[name]
        else:
            world_meshes[name] = mesh
    for name, mesh in world_meshes.items():
        mesh = mesh.copy()
        pts = clouds[name]
        if frame == "source":
            mesh.apply_transform(geo.world_to_source)
            pts.front, pts.back = geo.to_source(pts.front), geo.to_source(pts.back) if len(pts.back) else pts.back
        meshes[name] = mesh
        bones[name] = bone_summary(mesh, checks[name])
        bones[name]["mask_px"] = int(pred.masks[predictor.bones.index(name)].sum())
        bones[name]["mesh_method"] = per_bone[name]
        for key in ("placement_sd_mm", "tilt_sd_deg"):  # calibrated on the validation split (Checkpoint's fields)
            sd = (predictor.ck.get(key) or {}).get(name)
            if sd is not None:
                bones[name][key] = round(float(sd), 2)
        bones[name].update(result.info.get(name, {}))
    isocenter_sd = placement_uncertainty(bones, reading, geo_full)

    summary = {
        "image": str(image_path),
        "checkpoint": str(predictor.checkpoint),
        "geometry_from": geo_source,
        **reading.to_dict(),
        "isocenter_sd_mm": isocenter_sd,
        "model_geometry": geo.to_dict(),
        "view": {"scale": round(pred.view.scale, 5), "isocenter_shift_mm": round(pred.view.shift_mm, 3),
                 "mirrored_view_averaged": getattr(predictor, "mirror_partners", None) is not None},
        "notes": pred.notes + pose_warning(geo_source),
        "mesh_method": method,
        "faces": getattr(pred, "faces", 2),
        "frame": frame,
        "bones": bones,
        "missing": missing,
        "checks": checks,
        "timings_s": t,
    }
    if result.fits:
        summary["ssm"] = result.fits
    if pred.marker is not None:
        summary["marker"] = pred.marker
    if measure:
        from threeddx.inference.measure import measure_prediction

        s = time.perf_counter()
        summary["measurements"] = measure_prediction(maps, geo, {**pred.fits, **result.fit_results})
        t["measuring_s"] = time.perf_counter() - s
    return Reconstruction(pred, world_meshes, meshes, clouds, summary, Path(image_path).name)


def write_reconstruction(rec: Reconstruction, out: str | Path, report: bool = True, view: bool = False) -> dict:
    """Write a reconstruction into ``out``, all or nothing (README, "predict" outputs).

    Per bone ``BONE.stl``/``.ply`` and ``BONE_points.ply``; ``bones.glb`` (every
    bone in one file, coloured); ``maps.npz`` (the network's image, masks and
    depths); ``masks.png``, ``depth.png``, ``report.png``; ``truth/BONE.ply``
    when the truth is attached; ``view.html`` with ``view``; ``summary.json``.
    Returns the summary (timings in seconds per stage, writing included).
    """
    import trimesh

    t = rec.summary["timings_s"]
    t0 = time.perf_counter()
    with result_folder(out, RESULT_MARKER) as folder:
        for name, mesh in rec.meshes.items():  # a bone's name is checked before it becomes a file name
            for ext in ("stl", "ply"):
                with atomic_path(named_path(folder, name, f".{ext}")) as tmp:
                    mesh.export(tmp, file_type=ext)
            with atomic_path(named_path(folder, name, "_points.ply")) as tmp:
                trimesh.PointCloud(rec.clouds[name].both()).export(tmp, file_type="ply")
        if rec.meshes:
            export_glb(folder / GLB_FILE, rec.meshes, list(rec.prediction.bones))
        for name, mesh in (rec.truth or {}).items():
            (folder / "truth").mkdir(exist_ok=True)
            with atomic_path(named_path(folder / "truth", name, ".ply")) as tmp:
                mesh.export(tmp, file_type="ply")
        _write_maps(folder, rec.prediction)
        t["writing_s"] = time.perf_counter() - t0
        summary = dict(rec.summary, timings_s={k: round(v, 4) for k, v in t.items()})
        if report:
            s = time.perf_counter()
            from threeddx.apps.viz import save_report

            save_report(folder / "report.png", rec.prediction.image, rec.prediction.maps(), rec.prediction.bones,
                        rec.world_meshes, title=rec.title, measurements=rec.summary.get("measurements"),
                        geometry=rec.prediction.geometry)
            summary["timings_s"]["report_s"] = round(time.perf_counter() - s, 4)
        if view:
            s = time.perf_counter()
            from threeddx.apps.view import VIEW_FILE, write_view

            data = rec.view_data()
            data.summary = summary
            write_view(folder / VIEW_FILE, data)
            summary["timings_s"]["view_s"] = round(time.perf_counter() - s, 4)
        with atomic_path(folder / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


#: Every bone's mesh in one glTF binary file.
GLB_FILE = "bones.glb"


def export_glb(path: str | Path, meshes: dict, bones: list[str]) -> Path:
    """Every bone in one GLB file, one named node per bone, coloured as in report.png.

    Coordinates are those of the STL/PLY files beside it, unchanged (world LPS mm, or the source
    frame with ``--frame source``): glTF viewers assume metres and +y up, so they show the bones
    1000x large and on their side until scaled by 0.001 and turned; 3D Slicer, trimesh and
    MeshLab read the numbers as they are, matching the other files.
    """
    import trimesh

    from threeddx.bones import colour

    scene = trimesh.Scene()
    for name, mesh in meshes.items():
        m = mesh.copy()
        rgb = colour(name, bones.index(name)) if name in bones else (0.8, 0.8, 0.8)
        rgba = np.append(np.round(np.asarray(rgb) * 255), 255).astype(np.uint8)
        m.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
            name=name, baseColorFactor=rgba, metallicFactor=0.0, roughnessFactor=0.8))
        scene.add_geometry(m, node_name=name, geom_name=name)
    with atomic_path(path) as tmp:
        tmp.write_bytes(scene.export(file_type="glb"))
    return Path(path)


def predict_file(
    image_path: str | Path,
    predictor: Predictor,
    out: str | Path,
    geometry_path: str | Path | None = None,
    mesh_method: "MeshMethod | None" = None,
    frame: str = "world",
    report: bool = True,
    ssm_settings: "FitSettings | None" = None,
    complete_femur: bool = False,
    force: bool = False,
    warn=None,
    view: bool = False,
    declared: Declared | None = None,
    measure: bool = True,
    marker: MarkerSpec | None = None,
) -> dict:
    """The whole X-ray-to-meshes path, written into ``out`` (README): :func:`reconstruct_image`, then
    :func:`write_reconstruction`. ``out`` is checked before any work. Returns the summary."""
    check_out_folder(out, RESULT_MARKER)  # before any work: a bad --out costs nothing
    rec = reconstruct_image(image_path, predictor, geometry_path, mesh_method, frame, ssm_settings, complete_femur,
                            force, warn, declared, measure, marker)
    return write_reconstruction(rec, out, report, view)


def _write_maps(out: Path, prediction: Prediction) -> None:
    """maps.npz (the numbers; what ``3ddx view`` redraws from), masks.png and depth.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from threeddx.io import save_npz_atomic
    from threeddx.apps.viz import mask_overlay, save_depth_maps

    pred = prediction.maps()
    arrays = {"image": prediction.image.astype(np.float32), "masks": pred["masks"].astype(np.uint8),
              "probabilities": prediction.probabilities.astype(np.float16),
              "depth_front": pred["depth_front"].astype(np.float32), "bones": np.array(list(prediction.bones))}
    if pred["depth_back"] is not None:
        arrays["depth_back"] = pred["depth_back"].astype(np.float32)
    if prediction.depth_inner is not None:  # a K-face model: the render.npz names (threeddx.simulator.render)
        arrays["depth_inner"] = prediction.depth_inner.astype(np.float32)
        arrays["inner_valid"] = prediction.inner_valid.astype(np.uint8)
    save_npz_atomic(out / "maps.npz", **arrays)
    with atomic_path(out / "masks.png") as tmp:
        plt.imsave(tmp, mask_overlay(prediction.image, pred["masks"], bones=list(prediction.bones)), format="png")
    save_depth_maps(out / "depth.png", pred["masks"], pred["depth_front"], pred["depth_back"])
