"""Evaluation on a simulated split: surfaces against the ground-truth meshes, in mm.

For every sample of the split and every bone: the reconstruction (the
network's, or with ``oracle`` the ground-truth masks and depths through the
same meshing), then :func:`threeddx.metrics.surface_distances` between the
parts of the reconstructed and the ground-truth surfaces that project inside
the detector (:func:`threeddx.metrics.visible_part`), the same rule for every
method. The sample's own geometry is used: the standard geometry is known.

Outputs: ``results.csv`` (one row per sample and bone), ``results.json`` (the
summary), ``results.md`` (the paper's table format: ASSD, HD95 and the pooled
HD95 as mean (std) per bone, with the number of images and subjects).
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from threeddx.bones import DEFAULT_BONES, groups as bone_groups
from threeddx.errors import InputError, look_up_option
from threeddx.facemaps import FaceMaps
from threeddx.geometry import XrayGeometry
from threeddx.inference.hipjoint import AnchorSettings
from threeddx.io import check_out_folder, result_folder

#: The surface metrics of a row (mm, %), NaN when the bone is missing (:func:`threeddx.metrics.surface_distances`).
SURFACE_COLUMNS = ("assd", "hd95", "hd95_pooled", "chamfer", "within_1mm", "within_2mm", "within_5mm",
                   "assd_beam_aligned", "hd95_beam_aligned", "beam_shift_mm", "assd_seen", "hd95_seen", "hd95_pooled_seen")
#: Protocol (b)'s columns (``seen``): against the ground truth that the method's K faces see (threeddx.metrics).
SEEN_COLUMNS = ("assd_seen", "hd95_seen", "hd95_pooled_seen")
COLUMNS = ("sample_id", "subject_id", "bone", "status", *SURFACE_COLUMNS, "dice", "false_area_pct", "found",
           "confidence", "hip_anchor_mm", "mesh_method", "seconds", "marker_depth_error_mm", "marker_moved_mm")


def _mean_std(v: Sequence[float]) -> str:
    v = [x for x in v if not math.isnan(x)]
    if not v:
        return "n/a"
    return f"{np.mean(v):.2f} ({np.std(v):.2f})"


def summarise(rows: list[dict], bones: Sequence[str]) -> dict:
    """Per bone (and each pooled group of the bone registry, e.g. ``femur``: left and right): mean, std of ASSD
    and HD95 (and the pooled HD95's mean), counts."""
    out = {}
    groups = {b: [b] for b in bones} | bone_groups(bones)
    for g, members in groups.items():
        ok = [r for r in rows if r["bone"] in members and r["status"] == "ok"]
        out[g] = {
            "assd_mean": float(np.mean([r["assd"] for r in ok])) if ok else None,
            "assd_std": float(np.std([r["assd"] for r in ok])) if ok else None,
            "hd95_mean": float(np.mean([r["hd95"] for r in ok])) if ok else None,
            "hd95_std": float(np.std([r["hd95"] for r in ok])) if ok else None,
            "hd95_max": float(np.max([r["hd95"] for r in ok])) if ok else None,
            "hd95_pooled_mean": float(np.mean([r["hd95_pooled"] for r in ok])) if ok else None,
            "assd_beam_aligned_mean": float(np.nanmean([r["assd_beam_aligned"] for r in ok])) if ok else None,
            "hd95_beam_aligned_mean": float(np.nanmean([r["hd95_beam_aligned"] for r in ok]))
            if ok and all("hd95_beam_aligned" in r for r in ok) else None,
            **{f"{k}_mean": (float(np.mean([r[k] for r in ok])) if ok and all(k in r for r in ok) else None)
               for k in SEEN_COLUMNS},
            "n": len(ok),
            "missing": sum(1 for r in rows if r["bone"] in members and r["status"] != "ok"),
        }
        fa = [r["false_area_pct"] for r in rows if r["bone"] in members and not math.isnan(r.get("false_area_pct", math.nan))]
        out[g]["false_area_pct_mean"] = float(np.mean(fa)) if fa else None
        found = [r["found"] for r in rows if r["bone"] in members and r.get("found") is not None]
        out[g]["refused_pct"] = 100.0 * (1.0 - float(np.mean(found))) if found else None
    return out


def markdown_table(rows: list[dict], bones: Sequence[str], label: str, n_images: int, n_subjects: int) -> str:
    pooled = bone_groups(bones)
    cols = list(bones) + list(pooled)
    head = "| method | " + " | ".join(f"{c} ASSD | {c} HD95 | {c} HD95 pooled" for c in cols) + " |"
    sep = "|---|" + "---|---|---|" * len(cols)
    lines = []
    seen = any(not math.isnan(r.get("assd_seen", math.nan)) for r in rows)
    for suffix, name in [("", label)] + ([("_seen", f"{label}, (b) seen by its faces")] if seen else []):
        cells = []
        for c in cols:
            members = pooled.get(c, (c,))
            ok = [r for r in rows if r["bone"] in members and r["status"] == "ok"]
            cells += [_mean_std([r[k + suffix] for r in ok]) for k in ("assd", "hd95", "hd95_pooled")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    body = "\n".join(lines)
    return (
        f"{head}\n{sep}\n{body}\n\nmm, mean (std) over {n_images} images of {n_subjects} subjects; "
        "'femur' pools left and right. HD95: the larger of the two directed 95th "
        "percentiles; HD95 pooled: the 95th percentile of both directions pooled (threeddx.metrics)"
        + ("; (b): against the ground truth that the method's depth faces see" if seen else "") + ".\n"
    )


def _label(oracle: bool, checkpoint, mesh_method, faces: int = 2) -> str:
    """The method's name in the tables: the oracle, a released model, or the run folder's name, and its meshing."""
    from threeddx.network.checkpoint import RELEASED
    from threeddx.meshing.reconstruct import describe_mesh

    if oracle:
        label = "oracle (GT depths)" if faces == 2 else f"oracle (GT depths, {faces} faces)"
    elif str(checkpoint) in RELEASED:
        label = f"released {checkpoint}"
    else:
        label = Path(checkpoint).parent.name or str(checkpoint)
    return f"{label}, {describe_mesh(mesh_method)}"


@lru_cache(maxsize=32)
def _truth_mesh(path: str):
    """A ground-truth mesh, read once per process (a subject's meshes serve all of its poses)."""
    import trimesh

    return trimesh.load(path)


#: The femurs' hip-joint anchoring of predict (threeddx.inference.hipjoint), evaluated by default.
DEFAULT_ANCHOR = AnchorSettings()


def _predictor(checkpoint, device: str, hip_anchor=DEFAULT_ANCHOR, mirror: bool | None = None):
    from threeddx.inference.predictor import loaded_predictor

    return loaded_predictor(checkpoint, device, hip_anchor, mirror)


@dataclass
class EvalTask:
    """What every image's evaluation shares (sent once per task to a Dask worker; small and picklable)."""

    data: Path
    checkpoint: str | None  # None: the oracle
    device: str
    bones: list[str]
    stored: list[str]
    mesh_method: str
    density: float
    chain: object = None
    seed: int = 0
    ssm_settings: object = None
    view: bool = False
    hip_anchor: AnchorSettings | None = DEFAULT_ANCHOR  # threeddx.inference.hipjoint; None: off
    mirror: bool | None = None  # threeddx.inference.predictor.Predictor.mirror (None: as the checkpoint says)
    mirrored: bool = False  # score the mirror image of each patient (evaluate's doc)
    faces: int = 2  # depth faces per bone: the oracle's (threeddx.simulator.render), or the checkpoint's own
    seen: bool = False  # also protocol (b): against the ground truth that the K faces see
    measure: bool = False  # also the hip's measurements, predicted vs true (measurements.csv)
    marker: "MarkerTrial | None" = None  # a calibration ball in every image (evaluate's doc)
    declare: str | None = None  # what the user declares of an --on-table sample (DECLARATIONS; evaluate's doc)


@dataclass
class ImageResult:
    """One image's rows (one per bone), its measurement rows (one per measure, with ``measure``) and, for the
    view, what it showed."""

    index: int
    rows: list[dict]
    view: dict | None = None
    measures: list[dict] = field(default_factory=list)


#: measurements.csv's columns: per image and measure (``STRUCTURE.MEASURE``, threeddx.inference.measure.MEASURES)
MEASURE_COLUMNS = ("sample_id", "subject_id", "measure", "predicted", "true", "error", "inferred", "status")


def measure_rows(row: dict, predicted: dict, truth: dict) -> list[dict]:
    """One image's measurements.csv rows: every measure of the truth, with the prediction's value and the
    error (predicted - true; NaN, with the reason in ``status``, when the prediction could not measure it)."""
    from threeddx.inference.measure import flat_measurements

    p, t = flat_measurements(predicted), flat_measurements(truth)
    why = predicted.get("not_measured", {})
    out = []
    for key, true in t.items():
        structure, name = key.split(".", 1)
        got = p.get(key, float("nan"))
        side = structure.split("_")[-1]  # "pelvis" for the pelvis's measures, which may need either femur
        reason = next((f"{b}: {w}" for b, w in why.items() if side == "pelvis" or b == "pelvis" or b.endswith(side)),
                      "not measured")
        out.append({"sample_id": row["sample_id"], "subject_id": row["subject_id"], "measure": key,
                    "predicted": got, "true": true, "error": got - true,
                    "inferred": name in predicted.get(structure, {}).get("inferred", []),
                    "status": "ok" if key in p else reason})
    return out


@dataclass(frozen=True)
class MarkerTrial:
    """A calibration ball added to every image of a split (issue 31): ``diameter_mm`` steel (0: none, the same
    images without it), beside the right
    greater trochanter (source frame x -130..-90 mm, y +20..-70 mm by the image's index), ``true_offset_mm``
    further from the source than the hip joints' true mid-point (simulated samples: the world origin); the
    image made at ``render_px`` (the anatomy's line integrals interpolated, the ball exact: a clinical
    detector's resolution); ``use``: read it (``offset_mm`` declared, as ``--marker-offset-mm``) and place
    the bones by it, or leave it in the image unread (does the network mind it?); ``read``: "image" (found in
    the image, as predict does), "signal" (found in the image and measured on its detector signal, as predict
    does for a "for processing" file that states its KVP: the chain's tube voltage) or "truth" (its true
    centre, as if read perfectly: what the rest of the placement costs without the reading's error)."""

    diameter_mm: float = 25.0
    render_px: int = 2048
    use: bool = True
    true_offset_mm: float = 0.0
    offset_mm: float = 0.0
    read: str = "image"

    def __post_init__(self) -> None:
        look_up_option(self.read, ("image", "signal", "truth"), "marker reading")


def marker_image(npz, geometry: XrayGeometry, chain, seed: int, index: int, trial: MarkerTrial,
                 where: Path | str = "sample") -> tuple[np.ndarray, XrayGeometry, np.ndarray]:
    """The sample's radiograph with a calibration ball (:class:`MarkerTrial`) at ``trial.render_px``: (image,
    its geometry, the ball's centre in the source frame, mm)."""
    film = marker_film(npz, geometry, chain, seed, index, trial, where)
    return film.image, film.geometry, film.centre


class MarkerFilm(NamedTuple):
    """:func:`marker_film`'s film: the radiograph (H, W), the detector signal it was processed from (what a "for
    processing" file holds), their geometry, the ball's centre (source frame, mm) and the exposure's tube
    voltage (kVp, what the file's KVP tag would state)."""

    image: np.ndarray
    signal: np.ndarray
    geometry: XrayGeometry
    centre: np.ndarray
    kvp: float


def marker_film(npz, geometry: XrayGeometry, chain, seed: int, index: int, trial: MarkerTrial,
                where: Path | str = "sample") -> MarkerFilm:
    """:func:`marker_image`'s radiograph with the detector signal it was processed from, as a
    :class:`MarkerFilm`."""
    from scipy import ndimage

    from threeddx.inference.marker import with_marker
    from threeddx.simulator.physics import chain_for, detector_signal, process, sample_materials

    mats = sample_materials(npz)
    if mats is None:
        raise InputError(f"{where} has no material line integrals: a marker needs them")
    k = trial.render_px / geometry.detector_shape[0]
    geo = geometry.resample(trial.render_px, int(round(geometry.detector_shape[1] * k)))
    mats = {m: ndimage.zoom(v, (geo.detector_shape[0] / v.shape[0], geo.detector_shape[1] / v.shape[1]), order=1)
            for m, v in mats.items()}
    hips_z = float(geo.to_source(np.zeros((1, 3)))[0, 2])
    centre = np.array([-130.0 + 20 * (index % 3), 20.0 - 30 * (index % 4), hips_z + trial.true_offset_mm])
    if trial.diameter_mm > 0:  # 0: the same image without the ball
        mats = with_marker(mats, geo, centre, trial.diameter_mm, exact=True)  # the steel's edge as 2048 px see it
    c = chain_for(chain or "standard", np.random.default_rng([seed, index]))
    signal = detector_signal(mats, geo, c)
    return MarkerFilm(process(signal, geo, c), signal, geo, centre, float(c.kvp))


def chain_image(npz, geometry: XrayGeometry, chain, seed: int, index: int, where: Path | str = "sample") -> np.ndarray:
    """The radiograph evaluate scores for image ``index`` of a split: the sample's material line integrals
    through ``chain`` (``"random"``: a random chain drawn with the seed (``seed``, ``index``))."""
    from threeddx.simulator.physics import chain_for, radiograph, sample_materials

    mats = sample_materials(npz)
    if mats is None:
        raise InputError(f"{where} has no material line integrals: evaluate it without a chain")
    return radiograph(mats, geometry, chain_for(chain, np.random.default_rng([seed, index])))


#: What ``evaluate --declare`` tells the predictor of a sample simulated ``--on-table``: the table top's distance
#: (the hips by :data:`threeddx.geometry.HIPS_ABOVE_TABLE_MM`), or that and the body's AP thickness at the hips
#: (:data:`threeddx.geometry.TABLE_TO_HIPS_LINE`), as the geometry JSON's ``source_to_table_mm`` and
#: ``body_thickness_mm`` say them.
DECLARATIONS = ("table", "table+thickness")


def declared_geometry(z, geometry: XrayGeometry, declare: str | None, where: Path | str = "sample") -> XrayGeometry:
    """``geometry`` with the iso-centre distance the declaration gives (:data:`DECLARATIONS`; None: unchanged)."""
    from dataclasses import replace

    from threeddx.geometry import isocenter_from_table

    if declare is None:
        return geometry
    if "source_to_table_mm" not in z.files:
        raise InputError(f"{where} was not simulated --on-table: it has no table to declare")
    thickness = float(z["body_thickness_mm"]) if declare == "table+thickness" else None
    return replace(geometry, isocenter_distance=isocenter_from_table(float(z["source_to_table_mm"]),
                                                                     body_thickness_mm=thickness))


def score_image(task: EvalTask, index: int, row: dict) -> ImageResult:
    """Reconstruct one sample's bones and score each against its ground-truth mesh (module doc)."""
    from threeddx.metrics import beam_aligned, dice, false_area_pct, seen_part, surface_distances, visible_part
    from threeddx.meshing.reconstruct import MESHERS, mesh_bones, mesh_methods

    marker_row = {"marker_depth_error_mm": float("nan"), "marker_moved_mm": float("nan")}
    with np.load(task.data / row["render"]) as z:
        geo_full = declared_geometry(z, XrayGeometry.from_json(str(z["geometry"])), task.declare,
                                     task.data / row["render"])
        gt = {k: z[k] for k in ("image", "masks", "depth_front", "depth_back")}
        if task.checkpoint is None and task.faces > 2:  # the oracle's inner faces
            if "depth_inner" not in z.files or z["depth_inner"].shape[1] != task.faces - 2:
                raise InputError(f"{task.data / row['render']} has no {task.faces} depth faces: simulate with "
                                 f"--faces {task.faces}")
            gt["inner"] = (z["depth_inner"], z["inner_valid"])
        reading = None
        if task.marker is not None:
            from threeddx.inference.marker import MarkerReading, find_marker, sphere_marker

            from scipy import ndimage

            film = marker_film(z, geo_full, task.chain, task.seed, index, task.marker, task.data / row["render"])
            gt["image"], signal, geo_full, ball = film.image, film.signal, film.geometry, film.centre
            f = (geo_full.detector_shape[0] / gt["masks"].shape[1], geo_full.detector_shape[1] / gt["masks"].shape[2])
            gt["masks"] = ndimage.zoom(gt["masks"], (1, *f), order=0)  # the truth on the image's grid
            if task.marker.use and task.checkpoint is not None:
                try:
                    if task.marker.read == "truth":
                        ball_found = sphere_marker(geo_full, ball, task.marker.diameter_mm)
                    else:  # as predict reads it (MarkerSpec.read): a dark disc where the network sees bone dark
                        dark = _predictor(task.checkpoint, task.device, task.hip_anchor,
                                          task.mirror).shows_bone_dark(gt["image"], geo_full)
                        ball_found = find_marker(gt["image"], geo_full, task.marker.diameter_mm, bone_dark=dark,
                                                 signal=signal if task.marker.read == "signal" else None,
                                                 kvp=film.kvp)  # as the file's KVP tag states it
                    reading = MarkerReading(ball_found, task.marker.offset_mm)
                    marker_row["marker_depth_error_mm"] = ball_found.depth_mm - float(ball[2])
                except InputError:
                    reading = None  # not found: the row's marker columns are NaN, the bones as the network put them
        elif task.chain is not None:
            gt["image"] = chain_image(z, geo_full, task.chain, task.seed, index, task.data / row["render"])
    gt_masks = gt["masks"] > 0
    stored = task.stored
    if task.checkpoint is not None:
        predictor = _predictor(task.checkpoint, task.device, task.hip_anchor, task.mirror)
        if task.mirrored:  # the mirrored patient's image; its prediction mirrored back onto this patient's rays
            prediction = predictor.infer(np.ascontiguousarray(gt["image"][:, ::-1]), geo_full).mirrored()
        else:
            prediction = predictor.infer(gt["image"], geo_full, reading)
        pred, geo, pred_bones, checks = prediction.maps(), prediction.geometry, predictor.bones, prediction.checks
        gt_masks = prediction.to_view(gt_masks.astype(np.float32)) > 0.5  # the truth on the model's grid
        image = prediction.image
    else:
        checks, geo, pred_bones, image = {}, geo_full, stored, gt["image"]
        pred = {"masks": gt_masks, "depth_front": gt["depth_front"], "depth_back": gt["depth_back"]}
        inner = gt.get("inner", (None, None))
        prediction = FaceMaps(bones=list(stored), masks=gt_masks, depth_front=gt["depth_front"],
                              depth_back=gt["depth_back"], depth_inner=inner[0], inner_valid=inner[1])
    t0 = time.perf_counter()
    per_bone = mesh_methods(task.mesh_method, task.bones)
    maps, _ = prediction.for_meshing(task.bones, uses_back={b: MESHERS[m].uses_back for b, m in per_bone.items()})
    fits = prediction.fits if task.checkpoint is not None and not task.mirrored else {}
    result = mesh_bones(maps, geo, task.mesh_method, ssm_settings=task.ssm_settings, fits=fits)
    meshed, info = result.meshes, result.info
    t_mesh = (time.perf_counter() - t0) / max(len(maps), 1)  # shared out over the meshed bones
    rows = []
    for bone in task.bones:
        t0 = time.perf_counter()
        rec = {"sample_id": row["sample_id"], "subject_id": row["subject_id"], "bone": bone}
        m = pred["masks"][pred_bones.index(bone)]
        gt_mask = gt_masks[stored.index(bone)]
        rec["dice"] = dice(m, gt_mask) if m.shape == gt_mask.shape else float("nan")
        others = [gt_masks[stored.index(b)] for b in stored if b != bone]
        rec["false_area_pct"] = (false_area_pct(m, np.stack([gt_mask, *others])) if m.shape == gt_mask.shape
                                 else float("nan"))
        rec["found"] = checks.get(bone, {}).get("found")
        rec["confidence"] = checks.get(bone, {}).get("confidence", float("nan"))
        rec["hip_anchor_mm"] = checks.get(bone, {}).get("hip_anchor", {}).get("shift_mm", float("nan"))
        rec.update(marker_row)
        placed = getattr(prediction, "marker", None)
        if placed is not None and placed.get("applied"):
            rec["marker_moved_mm"] = placed["moved_mm"]
        rec["mesh_method"] = info.get(bone, {}).get("mesh_method", per_bone[bone])  # as meshed: a rejected fit's fallback
        try:
            mesh = meshed.get(bone, InputError("empty predicted mask"))
            if isinstance(mesh, InputError):
                raise mesh
            t0 -= t_mesh
            gt_mesh = _truth_mesh(str(task.data / row["mesh_dir"] / f"{bone}.ply"))
            mesh_v, gt_v = visible_part(mesh, geo, max_edge_mm=None), visible_part(gt_mesh, geo)
            rec.update(surface_distances(mesh_v, gt_v, task.density))
            aligned, rec["beam_shift_mm"] = beam_aligned(mesh_v, gt_v, geo)
            d = surface_distances(aligned, gt_v, task.density)
            rec["assd_beam_aligned"], rec["hd95_beam_aligned"] = d["assd"], d["hd95"]
            if task.seen:  # protocol (b): what the maps' faces see (a single-depth model's: as two faces')
                d = surface_distances(mesh_v, gt_v, task.density, gt_part=seen_part(gt_v, geo, task.faces))
                rec.update({f"{k}_seen": d[k] for k in ("assd", "hd95", "hd95_pooled")})
            rec["status"] = "ok"
        except InputError as e:
            rec["status"] = f"missing: {e}"
            for k in SURFACE_COLUMNS:
                rec[k] = float("nan")
        rec["seconds"] = time.perf_counter() - t0
        rows.append(rec)
    measures = []
    if task.measure:
        from threeddx.inference.measure import MEASURED_BONES, measure_hips, measure_prediction

        truth = {b: _truth_mesh(str(task.data / row["mesh_dir"] / f"{b}.ply")).vertices for b in MEASURED_BONES
                 if b in stored}
        predicted = measure_prediction(maps, geo, {**fits, **result.fit_results},
                                       [b for b in MEASURED_BONES if b in task.bones])
        measures = measure_rows(row, predicted, measure_hips(truth, geo.world_to_ap))
    view = None
    if task.view:
        view = {"image": image, "masks": np.asarray(pred["masks"]), "bones": list(pred_bones), "geometry": geo,
                "checks": checks, "meshes": {b: m for b, m in meshed.items() if not isinstance(m, InputError)}}
    return ImageResult(index, rows, view, measures)


def _case_view(folder: Path, task: EvalTask, row: dict, result: ImageResult, label: str):
    """Write one image's 3D view into ``folder/views/`` and return its gallery entry."""
    from threeddx.apps.predict import bone_summary
    from threeddx.apps.view import GalleryCase, ViewData, overlay_thumbnail, write_plotly_js, write_view

    views = folder / "views"
    if not (views / "plotly.min.js").exists():
        views.mkdir(exist_ok=True)
        write_plotly_js(views)
    v, rows = result.view, result.rows
    meshes, checks = v["meshes"], v["checks"]
    truth = {b: _truth_mesh(str(task.data / row["mesh_dir"] / f"{b}.ply")) for b in task.bones}
    metrics = {r["bone"]: {"assd": r["assd"], "hd95": r["hd95"]} for r in rows}
    summary = {
        "image": row["sample_id"], "checkpoint": label, "mesh_method": task.mesh_method, "frame": "world",
        "bones": {b: bone_summary(m, checks.get(b, {})) for b, m in meshes.items()},
        "checks": checks, "truth_metrics": {b: val for b, val in metrics.items() if b in meshes},
        "missing": [r["bone"] for r in rows if r["status"] != "ok"],
    }
    name = f"{row['sample_id']}.html"
    data = ViewData(row["sample_id"], v["image"], v["masks"], v["bones"], meshes, v["geometry"], "world", summary, truth)
    write_view(views / name, data, plotly_src="plotly.min.js")
    return GalleryCase(row["sample_id"], row["subject_id"], metrics, overlay_thumbnail(v["image"], v["masks"], list(v["bones"])),
                       f"views/{name}")


def evaluate(
    data: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    split: str = "test",
    mesh_method=None,
    oracle: bool = False,
    bones: Sequence[str] | None = None,
    limit: int | None = None,
    density: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    ssm_settings=None,
    chain=None,
    seed: int = 0,
    view: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    hip_anchor: AnchorSettings | None = DEFAULT_ANCHOR,
    mirror: bool | None = None,
    mirrored: bool = False,
    faces: int = 2,
    seen: bool = False,
    measure: bool = False,
    marker: MarkerTrial | None = None,
    declare: str | None = None,
) -> dict:
    """Evaluate a checkpoint (or the oracle) on a split; writes results.csv/json/md into ``out`` (module doc).

    ``mesh_method``: a :data:`~threeddx.meshing.reconstruct.MESHERS` row or one per bone; None: the model's own
    (:attr:`~threeddx.inference.predictor.Predictor.mesh_method`, as predict meshes), ``dual`` for the oracle.

    ``chain``: the imaging chain that makes each sample's image from its
    material line integrals (:mod:`threeddx.simulator.physics`): a preset name, a
    :class:`~threeddx.simulator.physics.Chain`, or ``"random"`` (a random chain per image,
    seeded by ``seed`` and the sample's index); None uses the stored image.
    Beside the surface metrics, each row has the ASSD after the best shift
    along the beam, the false bone area (predicted mask outside the true
    silhouettes, % of the true area), and whether the model judged the bone
    found (:func:`threeddx.network.model.bone_checks`).

    ``view``: also ``gallery.html``, every image worst first (mean ASSD over the
    bones), each linked to its interactive 3D view ``views/SAMPLE.html`` with the
    ground truth (:mod:`threeddx.apps.view`; the pages share ``views/plotly.min.js``).

    ``workers`` > 1 or ``scheduler``: the images are Dask tasks
    (:func:`threeddx.cluster.map_tasks`; each worker loads the model once); the
    tables are the same as a one-process run's, in the split's order.

    ``hip_anchor``: the settings of the femurs' hip-joint anchoring
    (:mod:`threeddx.inference.hipjoint`), None to evaluate the network's depths as they are.
    ``mirror``: average the network with its mirrored view
    (:func:`threeddx.inference.predictor.mirror_average`); None: as the checkpoint says,
    as predict does.

    ``mirrored``: score each test patient's mirror image instead (a shift: the
    patients' posture mirrored, e.g. the left femur where the right one was).
    The network sees the flipped image; its prediction, mirrored back onto the
    patient's own rays (:meth:`threeddx.inference.predictor.Prediction.mirrored`), is
    scored against the patient's own surfaces, which is the same as scoring
    the mirrored prediction against the mirrored surfaces (a reflection keeps
    every distance).

    ``faces``: with ``oracle``, the ground truth's K depth faces per bone are
    meshed (samples simulated with ``--faces K``; :func:`threeddx.meshing.reconstruct.interval_mesh`).
    ``seen``: also score protocol (b), against the part of the ground truth
    that the reconstruction's K faces see (:func:`threeddx.metrics.seen_part`;
    columns ``assd_seen``, ``hd95_seen``, ``hd95_pooled_seen``) beside (a), the
    whole surface in the field of view.

    ``marker``: a :class:`MarkerTrial`: every image is made at a clinical resolution with a calibration ball
    in it, which is read and used to place the bones (``use``) or left unread; rows gain the ball's depth
    error and how far it moved the hips (``marker_depth_error_mm``, ``marker_moved_mm``).

    ``declare``: with samples simulated ``--on-table`` (each body's hips as high as its back carries them),
    what the user declares (:data:`DECLARATIONS`): the table's distance, or it and the body's AP thickness; the
    iso-centre the rule gives replaces the sample's default (:func:`declared_geometry`). None: nothing declared.

    ``measure``: also the hip's measurements (:mod:`threeddx.inference.measure`) of the prediction (as
    predict makes them) against the same measurements of the ground-truth bones (simulated LLP26 samples:
    their vertices carry the landmarks): ``measurements.csv`` per image and measure (predicted, true, error),
    and per measure the mean absolute error, bias and 95 % limits of agreement in results.json's
    ``measurements``.
    """
    from threeddx.cluster import map_tasks
    from threeddx.training.dataset import read_manifest
    from threeddx.metrics import DEFAULT_DENSITY
    from threeddx.simulator.physics import chain_from

    data = Path(data)
    check_out_folder(out, "results.json")  # before any work
    if oracle and mirrored:
        raise InputError("mirrored patients are a test of a network: not with --oracle")
    if oracle and marker is not None:
        raise InputError("a calibration marker is a test of a network's placement: not with --oracle")
    if declare is not None and declare not in DECLARATIONS:
        raise InputError(f"--declare must be one of {', '.join(DECLARATIONS)}, got {declare!r}")
    if declare is not None and marker is not None:
        raise InputError("--declare and a calibration marker each set the iso-centre: give one")
    if not oracle and checkpoint is None:
        raise InputError("give --checkpoint, or --oracle to evaluate the ground-truth depths")
    from threeddx.simulator.render import check_faces

    check_faces(faces)
    if faces != 2 and not oracle:
        raise InputError(f"--faces {faces} is the oracle's: a network meshes the faces it predicts")
    rows_in = [r for r in read_manifest(data) if r["split"] == split]
    if not rows_in:
        raise InputError(f"no samples of split {split!r} in {data}")
    if limit:
        rows_in = rows_in[: int(limit)]
    predictor = None if oracle else _predictor(checkpoint, device, hip_anchor, mirror)
    with np.load(data / rows_in[0]["render"]) as z:
        stored = [str(b) for b in z["bones"]]
    bones = list(bones or (predictor.bones if predictor else [b for b in DEFAULT_BONES if b in stored]))
    missing = [b for b in bones if b not in stored]
    if missing:
        raise InputError(f"bone(s) {', '.join(missing)} are not in the samples of {data}")
    if predictor is not None:
        mesh_method = predictor.meshing(mesh_method)
    elif mesh_method is None:  # the oracle has both faces
        mesh_method = "dual"
    if chain is not None and chain != "random":
        chain = chain_from(chain)
    if predictor is not None:
        faces = int(predictor.ck.get("faces", 2))
    task = EvalTask(data, None if oracle else str(checkpoint), device, bones, stored, mesh_method,
                    DEFAULT_DENSITY if density is None else density, chain, seed, ssm_settings, view, hip_anchor,
                    mirror, mirrored, faces, seen, measure, marker, declare)
    out = Path(out)
    label = _label(oracle, checkpoint, mesh_method, faces)
    by_index: dict[int, list[dict]] = {}
    measured: dict[int, list[dict]] = {}
    gallery: list = []
    with result_folder(out, "results.json") as folder:
        for result in map_tasks(score_image, [(task, k, row) for k, row in enumerate(rows_in)], workers, scheduler,
                                desc="evaluate", unit="image", progress=progress):
            by_index[result.index] = result.rows
            measured[result.index] = result.measures
            if view:
                gallery.append(_case_view(folder, task, rows_in[result.index], result, label))
        results = [r for k in sorted(by_index) for r in by_index[k]]
        summary = _summary(results, rows_in, task, oracle, chain, checkpoint, split, predictor is not None)
        if predictor is not None:  # whether the mirrored view was averaged in (the checkpoint's choice, or ``mirror``)
            summary["mirror"] = predictor.mirror_partners is not None
            summary["mirrored_patients"] = bool(mirrored)
        table = markdown_table(results, bones, label, summary["images"], summary["subjects"])
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
        if measure:
            mrows = [r for k in sorted(measured) for r in measured[k]]
            summary["measurements"] = summarise_measures(mrows)
            mbuf = _io.StringIO()
            w = csv.DictWriter(mbuf, fieldnames=list(MEASURE_COLUMNS), lineterminator="\n")
            w.writeheader()
            for r in mrows:
                w.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})
            (folder / "measurements.csv").write_text(mbuf.getvalue())
        for name, text in (("results.csv", buf.getvalue()), ("results.json", json.dumps(summary, indent=2) + "\n"),
                           ("results.md", f"# {label} on {data.name} ({split})\n\n{table}")):
            (folder / name).write_text(text)
        if view:
            from threeddx.apps.view import write_gallery

            write_gallery(folder / "gallery.html", gallery, bones, f"{label} on {data.name} ({split})")
    if progress:
        print(table)
    return summary


def summarise_measures(rows: list[dict]) -> dict:
    """Per measure (``STRUCTURE.MEASURE``; the two sides pooled as ``femur.MEASURE`` etc. too): images measured
    of those with a truth, mean absolute error, bias (mean error), its SD and the 95 % limits of agreement
    (bias +- 1.96 SD, Bland and Altman 1986)."""
    groups: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in rows:
        structure, name = r["measure"].split(".", 1)
        for key in {r["measure"], f"{structure.split('_')[0]}.{name}"}:
            counts[key] = counts.get(key, 0) + 1
            if r["status"] == "ok" and np.isfinite(r["error"]):
                groups.setdefault(key, []).append(float(r["error"]))
    out = {}
    for key in sorted(counts):
        e = np.asarray(groups.get(key, []))
        if not len(e):
            out[key] = {"n": 0, "of": counts[key]}
            continue
        sd = float(e.std(ddof=1)) if len(e) > 1 else 0.0
        bias = float(e.mean())
        out[key] = {"n": int(len(e)), "of": counts[key], "mae": float(np.abs(e).mean()), "bias": bias, "sd": sd,
                    "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}
    return out


def _summary(results: list[dict], rows_in: list[dict], task: EvalTask, oracle: bool, chain, checkpoint, split: str,
             learned: bool) -> dict:
    """results.json: the run's settings and the per-bone summary."""
    summary = {
        "data": str(task.data), "split": split, "checkpoint": None if oracle else str(checkpoint), "oracle": oracle,
        "mesh_method": task.mesh_method, "density_per_mm2": task.density,
        "faces": task.faces,
        "protocols": ["field of view"] + (["seen by the faces"] if task.seen else []),
        "hip_anchor": None if oracle or task.hip_anchor is None else asdict(task.hip_anchor),
        "images": len(rows_in),
        "subjects": len({r["subject_id"] for r in rows_in}),
        "chain": chain if chain is None or isinstance(chain, str) else chain.to_dict(),
        "bones": summarise(results, task.bones),
    }
    if learned:
        by_image: dict[str, list] = {}
        for r in results:
            by_image.setdefault(r["sample_id"], []).append(bool(r["found"]))
        summary["images_refused_pct"] = 100.0 * float(np.mean([not any(v) for v in by_image.values()]))
    return summary
