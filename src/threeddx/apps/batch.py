"""Many radiographs at once: ``3ddx predict`` over a folder, a glob or a CSV table.

**Inputs** (:func:`batch_items`): a folder (every PNG, TIFF, JPEG, NPY, NPZ
and DICOM file in it, sorted), a glob pattern (``'study/*.dcm'``, quoted), or
a CSV with the column ``image`` and optionally ``geometry`` (paths relative to
the table). Each image gets a result folder named after its file (made a safe
name, :func:`threeddx.io.check_name`; a second image of the same name gets
``_2``), exactly as ``3ddx predict IMAGE --out BATCH/NAME`` writes it.

**The batch folder** (``--out``) holds the result folders, ``batch.csv`` (per
image and bone: found, confidence, volume, mesh method, warnings) and
``measurements.csv`` (one row per image: the hip's measurements,
:data:`threeddx.inference.measure.MEASURES`, one column each as ``STRUCTURE.MEASURE``; ``inferred`` and
``not_measured`` say which are the shape model's inference and what could not be measured) and
``problems.csv`` (one line per refused image and why: not a hip, unreadable,
no geometry, ...). It is resumable: an image whose result folder is complete
is not predicted again, and the tables are rewritten from every result folder
at the end. The images run as tasks on :func:`threeddx.cluster.map_tasks`
(``--workers N`` local processes or ``--scheduler`` a running Dask cluster);
each process loads the model once (:func:`_predictor`).
"""
from __future__ import annotations

import csv
import glob
import io as _io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from threeddx.errors import InputError
from threeddx.io import atomic_path

#: Files a folder input contributes (by suffix, any case).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy", ".npz", ".dcm", ".dicom")
#: What marks a batch folder (besides result folders, batch.csv and problems.csv).
BATCH_MARKER = "batch.json"
BATCH_COLUMNS = ("image", "result", "bone", "found", "confidence", "volume_cm3", "mesh_method", "placement_sd_mm",
                 "placement_total_sd_mm", "tilt_sd_deg", "warnings")




def _measurement_columns() -> tuple[str, ...]:
    from threeddx.inference.measure import MEASURES, SIDES

    per_side = [f"{kind}_{side}.{n}" for side in SIDES for kind in ("femur", "acetabulum") for n in MEASURES[kind]]
    return ("image", "result", *per_side, *(f"pelvis.{n}" for n in MEASURES["pelvis"]), "inferred", "not_measured")


#: measurements.csv's columns: the image, its result folder, every measure, what is inferred, what is not measured.
MEASUREMENT_COLUMNS = _measurement_columns()


@dataclass(frozen=True)
class BatchItem:
    """One radiograph of a batch: its file, its optional geometry JSON, and its result folder's name."""

    image: Path
    geometry: Path | None
    name: str


def is_batch_input(path: str) -> bool:
    """Whether ``predict``'s IMAGE names many images: a folder, a CSV table or a glob pattern."""
    return Path(path).is_dir() or str(path).lower().endswith(".csv") or any(c in str(path) for c in "*?[")


def _safe_name(stem: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem).strip("_-")[:56] or "image"
    if not name[0].isalnum():
        name = "i" + name
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def batch_items(source: str) -> list[BatchItem]:
    """The images of a folder, a CSV table (``image[,geometry]``) or a glob pattern (module doc)."""
    path = Path(source)
    pairs: list[tuple[Path, Path | None]]
    if path.is_dir():
        pairs = [(p, None) for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif str(source).lower().endswith(".csv"):
        try:
            rows = list(csv.DictReader(path.read_text().splitlines()))
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        if not rows or "image" not in rows[0]:
            raise InputError(f"{path}: a batch table needs the column 'image' (and optionally 'geometry')")
        base = path.parent
        pairs = [(base / r["image"].strip(), base / r["geometry"].strip() if (r.get("geometry") or "").strip() else None)
                 for r in rows]
    else:
        pairs = [(Path(p), None) for p in sorted(glob.glob(str(source))) if Path(p).is_file()]
    if not pairs:
        raise InputError(f"{source}: no image found (a folder of PNG/TIFF/JPEG/NPY/NPZ/DICOM files, a CSV with an "
                         "'image' column, or a quoted glob pattern)")
    taken: set[str] = set()
    return [BatchItem(img, geo, _safe_name(img.stem, taken)) for img, geo in pairs]


def check_batch_folder(out: Path) -> None:
    """``--out`` of a batch: absent, empty, or an earlier batch (resumed); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / BATCH_MARKER).exists():
        raise InputError(f"--out {out} holds files that are not a 3ddx batch (no {BATCH_MARKER}); give a new or empty "
                         "folder")


def _predictor(spec: dict):
    """This process's loaded model for ``spec`` (checkpoint, device, anchoring, mirror): loaded once per worker."""
    from threeddx.inference.hipjoint import AnchorSettings
    from threeddx.inference.predictor import loaded_predictor

    return loaded_predictor(spec["checkpoint"], spec["device"], AnchorSettings() if spec["hip_anchor"] else None,
                            spec["mirror"])


def _run_item(spec: dict, item: BatchItem, out: Path, options: dict) -> tuple[str, str | None]:
    """One image of the batch (a task): (its name, None) when written or already there, (name, why) when refused."""
    from threeddx.apps.predict import RESULT_MARKER, predict_file

    folder = out / item.name
    if (folder / RESULT_MARKER).exists():
        return item.name, None
    try:  # the warnings are in the result's summary.json (notes) and batch.csv
        predict_file(item.image, _predictor(spec), folder, item.geometry, **options)
    except InputError as e:
        return item.name, " ".join(str(e).split())
    return item.name, None


def predict_batch(source: str, out: str | Path, spec: dict, options: dict | None = None, workers: int = 1,
                  scheduler: str | None = None, progress: bool = True) -> dict:
    """Predict every image of ``source`` into ``out`` (module doc); returns counts and the tables' paths.

    ``spec``: the model (``checkpoint``, ``device``, ``hip_anchor`` bool, ``mirror``); ``options``: what
    :func:`threeddx.apps.predict.predict_file` takes besides (``mesh_method``, ``frame``, ``report``, ...).
    """
    from threeddx.cluster import map_tasks

    out = Path(out)
    items = batch_items(source)
    check_batch_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / BATCH_MARKER) as tmp:
        tmp.write_text(json.dumps({"source": str(source), "images": len(items)}, indent=2) + "\n")
    problems: dict[str, str] = {}
    for name, why in map_tasks(_run_item, [(spec, it, out, dict(options or {})) for it in items], workers, scheduler,
                               desc="predict", unit="image", progress=progress):
        if why is not None:
            problems[name] = why
    return write_tables(out, items, problems)


def write_tables(out: Path, items: list[BatchItem], problems: dict[str, str]) -> dict:
    """``batch.csv`` and ``measurements.csv`` from every complete result folder, ``problems.csv`` from the
    refusals (atomically)."""
    from threeddx.apps.predict import RESULT_MARKER
    from threeddx.inference.measure import flat_measurements

    rows, measured = [], []
    for it in items:
        summary_path = out / it.name / RESULT_MARKER
        if not summary_path.exists():
            continue
        s = json.loads(summary_path.read_text())
        warnings = " | ".join(s.get("notes", []))
        if "measurements" in s:
            m = s["measurements"]
            measured.append({"image": str(it.image), "result": it.name, **flat_measurements(m),
                             "inferred": " ".join(f"{k}.{n}" for k, v in m.items() if isinstance(v, dict)
                                                  for n in v.get("inferred", []) if k != "not_measured"),
                             "not_measured": " | ".join(f"{b}: {w}" for b, w in m.get("not_measured", {}).items())})
        for bone, b in s.get("bones", {}).items():
            rows.append({"image": str(it.image), "result": it.name, "bone": bone, "found": b.get("found"),
                         "confidence": b.get("confidence"), "volume_cm3": b.get("volume_cm3"),
                         "mesh_method": b.get("mesh_method"), "placement_sd_mm": b.get("placement_sd_mm"),
                         "placement_total_sd_mm": b.get("placement_total_sd_mm"), "tilt_sd_deg": b.get("tilt_sd_deg"),
                         "warnings": warnings})
        for missing in s.get("missing", []):
            rows.append({"image": str(it.image), "result": it.name, "bone": missing.split(" ")[0], "found": False,
                         "confidence": None, "volume_cm3": None, "mesh_method": None, "placement_sd_mm": None,
                         "placement_total_sd_mm": None, "tilt_sd_deg": None,
                         "warnings": missing})
    tables = {"batch.csv": (BATCH_COLUMNS, rows), "measurements.csv": (MEASUREMENT_COLUMNS, measured),
              "problems.csv": (("image", "problem"), [{"image": str(it.image), "problem": problems[it.name]}
                                                      for it in items if it.name in problems])}
    for name, (cols, rows_) in tables.items():
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(cols), lineterminator="\n", restval="")
        w.writeheader()
        w.writerows(rows_)
        with atomic_path(out / name) as tmp:
            tmp.write_text(buf.getvalue())
    done = sum((out / it.name / RESULT_MARKER).exists() for it in items)
    return {"images": len(items), "written": done, "refused": len(problems), "batch_csv": str(out / "batch.csv"),
            "measurements_csv": str(out / "measurements.csv"), "problems_csv": str(out / "problems.csv")}
