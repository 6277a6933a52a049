"""Reading radiographs as hospitals and users store them: the pixels, the geometry, and what was assumed.

Images: PNG/TIFF/JPEG (Pillow), NPY (a 2D array), NPZ (``image`` and, if present, ``geometry``: our
render.npz), or DICOM (pydicom, python-gdcm). Geometry, first found wins (:func:`read_radiograph`):
``--geometry G.json``; ``--pixel-mm``/``--sdd-mm`` (:class:`Declared`); a DICOM's tags
(:func:`dicom_geometry`: the detector from Distance Source to Detector (0018,1110) and Imager Pixel
Spacing (0018,1164), else Pixel Spacing (0028,0030); the iso-centre from a fiducial pixel calibration,
Distance Source to Patient (0018,1111) or the Estimated Radiographic Magnification Factor (0018,1114); the
principal point is the image centre); an NPZ's own geometry; the model's nominal one. A DICOM gives the
detector, not the patient's pose: the pose is the model's nominal one, so meshes are in that nominal frame.

A DICOM's pixels go through DICOM's grayscale pipeline (:func:`displayed_pixels`) or, for a "for
processing" image, are taken back to the detector's signal (:func:`recovered_signal`) and through the standard
imaging chain's processing (:func:`threeddx.simulator.physics.process`), the signal kept for a calibration
ball's measurement (:attr:`Reading.signal`); an image
stored in another orientation than an AP film's reading, or a PA view, is turned to it
(:func:`dicom_orientation`). What was read and assumed is a :class:`Reading`, which predict writes into
summary.json and ``3ddx inspect`` prints. Nothing here runs the network (:mod:`threeddx.apps.predict` does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from threeddx.errors import InputError
from threeddx.geometry import (MAX_DETECTOR_PIXELS, NEAREST_ANATOMY, XrayGeometry, isocenter_from_entrance,
                               isocenter_from_table, table_basis)

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


# ------------------------------------------------------------------ reading
def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


@dataclass
class Reading:
    """What was read from an image file and what was assumed about it (summary.json ``reading``,
    ``3ddx inspect``): the intensity steps taken, the DICOM tags used (``"Name (gggg,eeee)"`` -> value), the
    turns and flips that brought it to an AP film's reading, and every assumption made for want of a tag."""

    steps: list[str] = field(default_factory=list)
    tags: dict = field(default_factory=dict)
    orientation: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    #: where a DICOM's iso-centre distance came from (None: no tag gave it)
    isocenter_from: str | None = None
    #: what it rests on: a key of :data:`threeddx.geometry.ISOCENTER_SD_MM` (None: nothing was read or declared)
    isocenter_basis: str | None = None
    #: a "for processing" image: (Pixel Intensity Relationship, its sign, the largest storable value), converted
    #: once the geometry is known (:func:`read_radiograph`)
    raw: tuple[str, int, float] | None = None
    #: a LIN "for processing" image's detector signal (H, W; :func:`recovered_signal`), which a calibration
    #: ball is measured on (:func:`threeddx.inference.marker.measure_on_signal`); None for any other image
    signal: np.ndarray | None = field(default=None, repr=False)
    #: the exposure's tube voltage (kVp) from a DICOM's KVP (0018,0060) (:func:`dicom_kvp`); None when not stated
    kvp: float | None = None

    def to_dict(self) -> dict:
        d = {"intensity_steps": self.steps, "dicom_tags": self.tags,
             "orientation": self.orientation or ["as stored: an AP film's reading"], "assumptions": self.assumptions}
        if self.isocenter_from is not None:
            d["isocenter_from"] = self.isocenter_from
        return d

    def isocenter_sd_mm(self, geometry: XrayGeometry) -> float:
        """The iso-centre's own 1-SD uncertainty (mm, :data:`threeddx.geometry.ISOCENTER_SD_MM`) for ``geometry``
        as read: by :attr:`isocenter_basis`, else exact when the geometry states the distance, else assumed."""
        from threeddx.geometry import ISOCENTER_SD_MM

        basis = self.isocenter_basis or ("declared" if geometry.isocenter_distance is not None else "assumed")
        return ISOCENTER_SD_MM[basis]


def _tag(ds, tag: tuple[int, int], name: str, reading: Reading | None = None):
    """A DICOM element's value, None when absent or empty; recorded in ``reading`` as used."""
    el = ds.get(tag)
    if el is None or el.value in (None, "") or (hasattr(el.value, "__len__") and len(el.value) == 0):
        return None
    if reading is not None:
        v = el.value
        reading.tags[f"{name} ({tag[0]:04X},{tag[1]:04X})"] = (
            [str(x) for x in v] if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else str(v))
    return el.value


def _number(value, path: Path, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: DICOM tag {what} is not a number: {value!r}") from None
    if not np.isfinite(v):
        raise InputError(f"{path}: DICOM tag {what} is not finite")
    return v


def _spacing(value, path: Path, what: str) -> tuple[float, float]:
    values = list(value) if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) else [value]
    try:
        sr, sc = (float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{path}: DICOM tag {what} must hold two numbers (row, column), got {value!r}; "
                         "give --geometry") from None
    if not (0.01 <= sr <= 10 and 0.01 <= sc <= 10):
        raise InputError(f"{path}: DICOM tag {what} is {sr:g} x {sc:g} mm, outside 0.01-10 mm; give --geometry")
    return sr, sc


def dicom_kvp(ds, reading: Reading | None = None) -> float | None:
    """The exposure's tube voltage (kVp) from KVP (0018,0060), which a calibration ball's soft edge is reckoned
    with (:class:`threeddx.inference.marker.SteelEdge`); None when absent, or when not a number within
    :data:`threeddx.inference.marker.KVP_RANGE` (the tag only refines a reading: such a value is noted in
    ``reading``'s assumptions, not refused)."""
    from threeddx.inference.marker import KVP_RANGE

    value = _tag(ds, (0x0018, 0x0060), "KVP", reading)
    if value is None:
        return None
    try:
        kvp = float(value)
    except (TypeError, ValueError):
        kvp = float("nan")
    lo, hi = KVP_RANGE
    if not lo <= kvp <= hi:
        if reading is not None:
            reading.assumptions.append(f"KVP (0018,0060) {value!r} is not a tube voltage of {lo:g}-{hi:g} kV: "
                                       "not used")
        return None
    return kvp


#: Pixel Spacing Calibration Types (0028,0A02) that put Pixel Spacing (0028,0030) at the patient, not the detector.
CALIBRATED = ("GEOMETRY", "FIDUCIAL")
#: Distance Source to Patient (0018,1111) is the table top's distance by DICOM's DX definition; one more than
#: this short of the detector cannot be a table-bucky exposure's table and is read as the skin's distance.
MAX_TABLE_TO_DETECTOR_MM = 150.0


def dicom_geometry(ds, path: Path, rows: int, cols: int, pose: np.ndarray, reading: Reading | None = None,
                   transposed: bool = False) -> XrayGeometry:
    """The exposure a DICOM radiograph's tags describe (module doc), ``rows x cols`` as the network reads it
    (``transposed``: the stored image's rows are its columns).

    Detector: SDD (0018,1110); Imager Pixel Spacing (0018,1164), else Pixel Spacing (0028,0030) when it is
    not calibrated to the patient (Pixel Spacing Calibration Type (0028,0A02) absent), else that calibrated
    spacing times the Estimated Radiographic Magnification Factor (0018,1114). Iso-centre, first found: the
    ratio of a FIDUCIAL-calibrated Pixel Spacing to the Imager Pixel Spacing (the magnification at the
    calibrated plane); Distance Source to Patient (0018,1111) by :func:`~threeddx.geometry.isocenter_from_table`
    (DICOM's DX definition: the table top), or as the skin's distance
    (:func:`~threeddx.geometry.isocenter_from_entrance`) when it ends more than
    :data:`MAX_TABLE_TO_DETECTOR_MM` short of the detector; SDD over the magnification factor; a GEOMETRY
    calibration's ratio; else none (the patient on the table as in training). ``reading`` records each tag
    used and each assumption.
    """
    r = reading if reading is not None else Reading()
    sdd_v = _tag(ds, (0x0018, 0x1110), "Distance Source to Detector", r)
    if sdd_v is None:
        raise InputError(f"{path}: DICOM tag Distance Source to Detector (0018,1110) is missing; give --geometry "
                         "or --pixel-mm/--sdd-mm")
    sdd_mm = _number(sdd_v, path, "Distance Source to Detector (0018,1110)")
    if not 100 <= sdd_mm <= 5000:
        raise InputError(f"{path}: DICOM tag Distance Source to Detector (0018,1110) is {sdd_mm:g} mm, outside 100-5000 mm")
    imager_v = _tag(ds, (0x0018, 0x1164), "Imager Pixel Spacing", r)
    pixel_v = _tag(ds, (0x0028, 0x0030), "Pixel Spacing", r)
    calibration = _tag(ds, (0x0028, 0x0A02), "Pixel Spacing Calibration Type", r)
    calibration = None if calibration is None else str(calibration).strip().upper()
    emf_v = _tag(ds, (0x0018, 0x1114), "Estimated Radiographic Magnification Factor", r)
    emf = None if emf_v is None else _number(emf_v, path, "Estimated Radiographic Magnification Factor (0018,1114)")
    if emf is not None and not 1.0 <= emf <= 3.0:
        raise InputError(f"{path}: DICOM tag Estimated Radiographic Magnification Factor (0018,1114) is {emf:g}, "
                         "outside 1-3")
    imager = None if imager_v is None else _spacing(imager_v, path, "Imager Pixel Spacing (0018,1164)")
    pixel = None if pixel_v is None else _spacing(pixel_v, path, "Pixel Spacing (0028,0030)")
    calibrated = pixel is not None and calibration in CALIBRATED
    if imager is not None:
        spacing = imager
    elif pixel is not None and not calibrated:
        spacing = pixel
        r.assumptions.append("Pixel Spacing (0028,0030) read as the detector's (no Imager Pixel Spacing, no "
                             "calibration type)")
    elif pixel is not None and emf is not None:
        spacing = (pixel[0] * emf, pixel[1] * emf)
        r.assumptions.append(f"detector pixels: the {calibration}-calibrated Pixel Spacing times the magnification "
                             f"factor {emf:g}")
    elif pixel is not None:
        raise InputError(f"{path}: only a Pixel Spacing calibrated to the patient ({calibration}) and no Imager Pixel "
                         "Spacing (0018,1164) or magnification factor (0018,1114); give --pixel-mm (the detector's)")
    else:
        raise InputError(f"{path}: DICOM tags Imager Pixel Spacing (0018,1164) and Pixel Spacing (0028,0030) are "
                         "both missing; give --geometry or --pixel-mm")
    if transposed:
        spacing = (spacing[1], spacing[0])
    iso, how = None, None
    table_v = _tag(ds, (0x0018, 0x1111), "Distance Source to Patient", r)
    basis = None
    if calibrated and imager is not None and calibration == "FIDUCIAL":
        iso, how = sdd_mm * pixel[0] / imager[0], "FIDUCIAL-calibrated Pixel Spacing over Imager Pixel Spacing"
        basis = "declared"
    elif table_v is not None:
        d = _number(table_v, path, "Distance Source to Patient (0018,1111)")
        if not 0 < d < sdd_mm:
            raise InputError(f"{path}: DICOM tag Distance Source to Patient (0018,1111) is {d:g} mm, not between the "
                             f"source and the detector (0-{sdd_mm:g} mm)")
        thick_v = _tag(ds, (0x0018, 0x11A0), "Body Part Thickness", r)
        thick = None if thick_v is None else _number(thick_v, path, "Body Part Thickness (0018,11A0)")
        with_thickness = "" if thick is None else f", the hips placed by Body Part Thickness (0018,11A0) {thick:g} mm"
        try:
            if sdd_mm - d <= MAX_TABLE_TO_DETECTOR_MM:
                iso = isocenter_from_table(d, body_thickness_mm=thick)
                how = "Distance Source to Patient (0018,1111) read as the table top's" + with_thickness
                basis = table_basis(thick)
            else:
                iso = isocenter_from_entrance(d, body_thickness_mm=thick)
                basis = "entrance" if thick is None else "entrance+thickness"
                how = ("Distance Source to Patient (0018,1111) read as the skin's (it ends "
                       f"{sdd_mm - d:.0f} mm short of the detector: not a table's)" + with_thickness)
        except InputError as e:
            raise InputError(f"{path}: DICOM tag Body Part Thickness (0018,11A0): {e}") from None
    elif emf is not None:  # a modality's estimate for a nominal patient: as uncertain as a table alone
        iso, how = sdd_mm / emf, "Distance Source to Detector over the magnification factor (0018,1114)"
        basis = "table"
    elif calibrated and imager is not None:
        iso, how = sdd_mm * pixel[0] / imager[0], f"{calibration}-calibrated Pixel Spacing over Imager Pixel Spacing"
        basis = "table"
    if iso is not None and not NEAREST_ANATOMY * sdd_mm <= iso < sdd_mm:
        raise InputError(f"{path}: the iso-centre distance from the tags ({how}) is {iso:.0f} mm, not between "
                         f"{NEAREST_ANATOMY * sdd_mm:.0f} mm and the detector; give --geometry")
    r.isocenter_from, r.isocenter_basis = how, basis
    return XrayGeometry(sdd_mm, (rows, cols), spacing, (cols / 2.0, rows / 2.0), pose, isocenter_distance=iso)


#: View Position (0018,5101) values of views the model cannot read (it was trained on AP views).
LATERAL_VIEWS = ("LL", "RL", "LATERAL")


@dataclass(frozen=True)
class Orientation:
    """How a stored image is turned to an AP film's reading (superior at the top, the patient's right on the
    image's left): transposed first, then flipped top-bottom and/or left-right."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.transpose:
            img = img.T
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def words(self) -> list[str]:
        return [w for w, on in (("transposed (rows and columns swapped)", self.transpose),
                                ("flipped top-bottom", self.flip_rows), ("flipped left-right", self.flip_cols)) if on]


def dicom_orientation(ds, path: Path, reading: Reading | None = None) -> Orientation:
    """The turn that brings a DICOM radiograph to an AP film's reading, from Patient Orientation (0020,0020):
    the patient directions its rows and columns run towards (``L\\F`` is an AP film's); without it, View
    Position (0018,5101) PA means the beam's view of a PA exposure (the patient's left on the image's left,
    ``R\\F``), anything else an AP reading. A PA view is read as an AP one of the same patient (the model was
    trained on AP views): said in the assumptions. A lateral view, or an orientation with A or P in it, is
    refused."""
    r = reading if reading is not None else Reading()
    view = _tag(ds, (0x0018, 0x5101), "View Position", r)
    view = "" if view is None else str(view).strip().upper()
    if view in LATERAL_VIEWS:
        raise InputError(f"{path}: a lateral view (View Position {view}); 3ddx reconstructs from AP (or PA) views")
    po = _tag(ds, (0x0020, 0x0020), "Patient Orientation", r)
    if po is not None:
        values = [str(v).strip().upper() for v in (po if not isinstance(po, str) else po.split("\\"))]
        if len(values) != 2 or not all(values) or any(set(v) - set("APRLHF") for v in values):
            raise InputError(f"{path}: DICOM tag Patient Orientation (0020,0020) is {po!r}; expected two directions "
                             "such as L\\F")
        row, col = values[0][0], values[1][0]
        how = f"Patient Orientation {values[0]}\\{values[1]}"
    else:
        row, col = ("R", "F") if view == "PA" else ("L", "F")
        how = "no Patient Orientation"
        r.assumptions.append("no Patient Orientation (0020,0020): " + (
            "a PA view taken as the beam sees it (the patient's left on the image's left)" if view == "PA" else
            "read as an AP film is displayed (the patient's right on the image's left, superior at the top)"))
    if row in "AP" or col in "AP":
        raise InputError(f"{path}: Patient Orientation {row}\\{col} is a lateral projection; 3ddx reconstructs from AP "
                         "(or PA) views")
    transpose = row in "HF"
    if transpose:
        row, col = col, row
    if row in "HF" or col in "LR":
        raise InputError(f"{path}: DICOM tag Patient Orientation (0020,0020) is {po!r}: its rows and columns do not "
                         "run across and along the body")
    turn = Orientation(transpose, col == "H", row == "R")
    r.orientation.extend(f"{w} ({how})" for w in turn.words())
    if view == "PA":
        r.assumptions.append("a PA view (View Position PA) read as an AP one: the model was trained on AP views, so "
                             "placement along the beam is approximate (front and back are magnified the other way)")
    elif view not in ("", "AP"):
        r.assumptions.append(f"View Position {view}: read as an AP view")
    return turn


#: The largest radiograph read (pixels): the biggest flat panels give ~20 megapixels (43 cm at 0.1 mm).
#: Checked from the file's header before decoding, so a small file cannot claim gigabytes.
MAX_PIXELS = MAX_DETECTOR_PIXELS


def _header_shape(path: Path, suffix: str, dicom: bool) -> tuple[int, ...] | None:
    """The image's array shape from its header alone (None when the format does not say)."""
    if dicom:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return (int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns))
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as im:  # lazy: reads the header only
            return (getattr(im, "n_frames", 1), im.size[1], im.size[0])
    if suffix == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape)
    if suffix == ".npz":
        import zipfile

        with zipfile.ZipFile(path) as zf:
            if "image.npy" not in zf.namelist():
                return None
            with zf.open("image.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, _ = read(f)
                return tuple(shape)
    return None


def check_pixel_limit(path: str | Path) -> None:
    """Refuse, before decoding, an image larger than :data:`MAX_PIXELS`."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        shape = _header_shape(path, suffix, _is_dicom(path) or suffix in (".dcm", ".dicom"))
    except Exception as e:  # noqa: BLE001 - a header no reader understands: the full read reports it
        claimed = re.search(r"Image size \((\d+) pixels\)", str(e))  # Pillow's refusal of a decompression bomb
        if type(e).__name__ != "DecompressionBombError" or claimed is None:
            return
        shape = (int(claimed.group(1)),)
    if shape and int(np.prod(shape, dtype=np.float64)) > MAX_PIXELS:
        dims = " x ".join(str(v) for v in shape if v != 1)
        raise InputError(f"{path}: image of {dims} pixels, over the limit of {MAX_PIXELS / 1e6:g} megapixels "
                         "(downsample it first)")


def _pixels(a: np.ndarray, path: Path) -> np.ndarray:
    """An array file's pixels as float32: real numbers only (no complex, text or objects), all finite in float32."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{path}: pixels of type {a.dtype}; a radiograph holds real numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        img = a.astype(np.float32)
    if not np.isfinite(img).all():
        raise InputError(f"{path}: pixels that are NaN, infinite or beyond float32's range")
    return img


def dicom_pixels(ds, path: Path) -> np.ndarray:
    """A DICOM file's stored pixel values, whatever its transfer syntax.

    pydicom decodes the uncompressed, deflated and RLE syntaxes itself and the
    JPEG family (Lossless Process 14, JPEG-LS, JPEG 2000, Baseline, Extended)
    through python-gdcm (BSD; pylibjpeg's libjpeg plugin would be GPL-3). Where
    pydicom's gdcm plugin declines (12-bit JPEG Extended), GDCM's own reader
    decodes the file. A syntax nothing decodes is one line naming it.
    """
    try:
        return ds.pixel_array
    except Exception as first:  # noqa: BLE001 - pydicom raises many kinds when no plugin decodes the data
        try:
            return _gdcm_pixels(path)
        except Exception:  # noqa: BLE001
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(syntax, "name", str(syntax))
            raise InputError(f"{path}: cannot decode its pixel data ({name}): "
                             f"{' '.join(str(first).split())[:160]}") from None


def _gdcm_pixels(path: Path) -> np.ndarray:
    """Pixels by GDCM's own reader (single-sample images): (rows, cols) or (frames, rows, cols)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise ValueError("GDCM cannot read it")
    image = reader.GetImage()
    dims = [int(d) for d in image.GetDimensions()]
    pf = image.GetPixelFormat()
    if pf.GetSamplesPerPixel() != 1:
        raise ValueError("not a grey image")
    dtypes = {gdcm.PixelFormat.UINT8: np.uint8, gdcm.PixelFormat.INT8: np.int8, gdcm.PixelFormat.UINT16: np.uint16,
              gdcm.PixelFormat.INT16: np.int16, gdcm.PixelFormat.UINT32: np.uint32, gdcm.PixelFormat.INT32: np.int32}
    buf = image.GetBuffer()  # bytes, handed over by SWIG as a str with surrogate escapes
    raw = buf.encode("utf-8", "surrogateescape") if isinstance(buf, str) else bytes(buf)
    a = np.frombuffer(raw, dtypes[pf.GetScalarType()])
    frames = dims[2] if len(dims) > 2 else 1
    return a.reshape(dims[1], dims[0]) if frames == 1 else a.reshape(frames, dims[1], dims[0])


def for_processing(ds) -> bool:
    """Whether a DICOM image is "for processing" (raw detector data, DX/MG/IO "For Processing" SOP classes or
    Presentation Intent Type (0008,0068) FOR PROCESSING)."""
    return ("For Processing" in str(getattr(ds.get("SOPClassUID"), "name", ""))
            or str(ds.get("PresentationIntentType", "")).strip().upper() == "FOR PROCESSING")


def displayed_pixels(ds, stored: np.ndarray, reading: Reading | None = None) -> np.ndarray:
    """A DICOM radiograph's stored values as it is displayed, float32, bone bright (DICOM's grayscale pipeline).

    The Modality LUT (Rescale Slope/Intercept, or a table), then the first VOI LUT (a window, or a table),
    then the inversion that MONOCHROME1 or a Presentation LUT Shape of INVERSE asks for (the two say the same
    thing for DX images; done once). ``reading.steps`` receives one line per step taken, for summary.json.
    A "for processing" image (:func:`for_processing`) takes the Modality LUT only: its values are the
    detector's, which :func:`read_radiograph` turns into a displayed radiograph once the geometry is
    known (``reading.raw`` says how: Pixel Intensity Relationship (0028,1040) and its sign (0028,1041)).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    r = reading if reading is not None else Reading()
    out = r.steps
    arr = np.asarray(stored)
    if "ModalityLUTSequence" in ds or float(ds.get("RescaleSlope", 1) or 1) != 1 or float(ds.get("RescaleIntercept", 0) or 0):
        arr = apply_modality_lut(arr, ds)
        out.append("Modality LUT" + ("" if "ModalityLUTSequence" in ds else
                                     f" (rescale slope {float(ds.RescaleSlope):g}, intercept {float(ds.RescaleIntercept):g})"))
    if for_processing(ds):
        relation = str(_tag(ds, (0x0028, 0x1040), "Pixel Intensity Relationship", r) or "").strip().upper()
        sign_v = _tag(ds, (0x0028, 0x1041), "Pixel Intensity Relationship Sign", r)
        if relation not in ("LIN", "LOG"):
            raise InputError(f"cannot read a 'for processing' image whose Pixel Intensity Relationship (0028,1040) is "
                             f"{relation or 'missing'} (LIN or LOG are understood); export it 'for presentation'")
        try:
            sign = 1 if sign_v is None else int(float(sign_v))
        except (TypeError, ValueError):
            sign = 0
        if sign not in (1, -1):
            raise InputError(f"Pixel Intensity Relationship Sign (0028,1041) must be 1 or -1, got {sign_v!r}")
        if sign_v is None:
            r.assumptions.append("no Pixel Intensity Relationship Sign (0028,1041): higher values taken as more "
                                 "X-ray intensity (+1)")
        top = float(2 ** int(ds.get("BitsStored", 16) or 16) - 1)
        if arr is not stored:  # through a Modality LUT: the top moves with the values
            top = float(np.max(apply_modality_lut(np.array([0, top]), ds)))
        r.raw = (relation, sign, top)
        return np.asarray(arr, np.float32)
    if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
        arr = apply_voi_lut(arr, ds, index=0)
        out.append("VOI LUT" + ("" if "VOILUTSequence" in ds else
                                f" (window centre {_first(ds.WindowCenter):g}, width {_first(ds.WindowWidth):g})"))
    arr = np.asarray(arr, np.float32)
    mono1 = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    if mono1 or inverse:
        arr = arr.max() + arr.min() - arr
        out.append("inverted (" + " and ".join(w for w, on in (("MONOCHROME1", mono1), ("Presentation LUT Shape "
                                                                                         "INVERSE", inverse)) if on) + ")")
    return arr


#: The spread of a raw LOG image's values (0.5-99.5th percentile) in natural-log units of X-ray intensity
#: when the file does not say its scale: about the simulator's, from the open field to behind the pelvis.
LOG_RAW_RANGE = 5.0


def recovered_signal(raw: np.ndarray, relation: str, sign: int, top: float | None = None) -> np.ndarray:
    """A "for processing" image's values (the detector's, after the Modality LUT) -> the detector signal,
    (H, W) float32, 1 about the open field: ``LIN``, proportional to the values, or with ``sign`` -1 to their
    distance below ``top``, the largest value the file can store (no X-rays), else below the largest present;
    ``LOG``, their exponential, the 0.5-99.5 % range taken as :data:`LOG_RAW_RANGE` natural-log units (a
    guess: the file does not state its scale, so a LOG image's signal is linear only where the guess holds)."""
    x = np.asarray(raw, np.float64)
    if relation == "LOG":
        lo, hi = np.percentile(x, [0.5, 99.5])
        t = (x - hi) / max(hi - lo, 1e-12) if sign > 0 else (lo - x) / max(hi - lo, 1e-12)
        signal = np.exp(LOG_RAW_RANGE * np.minimum(t, 1.0))
    else:
        signal = x - min(float(x.min()), 0.0) if sign > 0 else max(float(x.max()), top or 0.0) - x
        signal = signal / max(float(np.percentile(signal, 99.5)), 1e-12)
    return signal.astype(np.float32)


def _first(value) -> float:
    """A DICOM value that may be multi-valued (several windows): its first, as a number."""
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else float(value)
    except (TypeError, ValueError, IndexError):
        return float("nan")


def read_radiograph(path: str | Path, geometry: XrayGeometry | None, fallback: XrayGeometry,
                    declared: "Declared | None" = None, reading: Reading | None = None
                    ) -> tuple[np.ndarray, XrayGeometry, str]:
    """(image float32 (H, W) in an AP film's reading, its geometry, where the geometry came from); ``reading``
    receives what was read and assumed (:class:`Reading`).

    The geometry is, in this order: ``geometry`` (``--geometry``), one built from ``declared`` pixel size and
    SDD for the image's own shape (``--pixel-mm``, ``--sdd-mm``), the file's own (DICOM tags, an NPZ's JSON),
    or the model's nominal one (``fallback``, resampled when the image has its detector's aspect). A DICOM
    image is turned to an AP film's reading first (:func:`dicom_orientation`); a given geometry describes
    the image so turned.
    """
    path = Path(path)
    r = reading if reading is not None else Reading()
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if not path.is_file():
        raise InputError(f"image is not a file: {path}")
    check_pixel_limit(path)
    suffix = path.suffix.lower()
    own: XrayGeometry | None = None
    own_source = "file"
    try:
        if _is_dicom(path) or suffix in (".dcm", ".dicom"):
            import pydicom

            ds = pydicom.dcmread(str(path))
            turn = dicom_orientation(ds, path, r)
            r.kvp = dicom_kvp(ds, r)
            img = displayed_pixels(ds, dicom_pixels(ds, path), r)
            if img.ndim != 2:
                raise InputError(f"{path}: expected a single-frame grey radiograph, got shape {img.shape}")
            img = turn.apply(img)
            if geometry is None and (declared is None or not declared.builds_geometry):
                own = dicom_geometry(ds, path, img.shape[0], img.shape[1], fallback.world_to_source, r, turn.transpose)
                own_source = "DICOM"
        elif suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGB", "RGBA", "P", "LA"):
                    im = im.convert("L")
                img = np.asarray(im, dtype=np.float32)
        elif suffix == ".npy":
            img = _pixels(np.load(path), path)
        elif suffix == ".npz":
            with np.load(path) as z:
                if "image" not in z:
                    raise InputError(f"{path}: an NPZ image needs an 'image' array")
                img = _pixels(z["image"], path)
                if "geometry" in z:
                    own = XrayGeometry.from_json(str(z["geometry"]), where=f"{path}:geometry")
        else:
            raise InputError(f"{path}: unknown image type {suffix!r} (PNG, TIFF, JPEG, NPY, NPZ or DICOM)")
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except Exception as e:  # noqa: BLE001 - Pillow/pydicom/numpy raise many kinds for a bad file
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {str(e)[:120]}") from None
    if img.ndim != 2:
        raise InputError(f"{path}: expected a 2D grey image, got shape {img.shape}")
    if geometry is not None:
        geo, source = geometry, "--geometry"
    elif declared is not None and declared.builds_geometry:
        geo, source = declared.geometry(img.shape, fallback), "--pixel-mm"
    elif own is not None:
        geo, source = own, own_source
    else:
        geo, source = fallback, "checkpoint"
    if geo.detector_shape != img.shape:
        if source == "checkpoint" and np.isclose(img.shape[0] / img.shape[1], geo.detector_shape[0] / geo.detector_shape[1]):
            geo = geo.resample(img.shape[0], img.shape[1])  # same detector read out at another size
        else:
            raise InputError(
                f"{path}: image is {img.shape[0]}x{img.shape[1]} px but the geometry ({source}) has a "
                f"{geo.detector_shape[0]}x{geo.detector_shape[1]} px detector; give --geometry G.json, or "
                "--pixel-mm MM (and --sdd-mm MM) for this image"
            )
    if declared is not None:
        geo = declared.placed(geo, r)
    if r.raw is not None:
        from threeddx.simulator.physics import process

        relation, sign, top = r.raw
        signal = recovered_signal(img, relation, sign, top)
        if relation == "LIN":  # a LOG file's scale is guessed: its signal is not known to be linear
            r.signal = signal
        img = process(signal, geo, "standard")  # the standard chain's processing: the film the network knows
        r.steps.append(f"a 'for processing' image ({relation}, sign {sign:+d}): the detector signal recovered and "
                       "processed as the standard imaging chain does (log, range compression, edge enhancement, "
                       "windowing on the anatomy)")
    return img, geo, source


@dataclass(frozen=True)
class Declared:
    """What a user says of an image on the command line.

    Without a geometry file (``--pixel-mm``, ``--sdd-mm``): its detector pixels' size (mm, square) and the
    source-to-detector distance (mm; default: the model's); the patient is taken in the model's nominal pose,
    centred on the detector. And for any image, where the patient is along the beam, over what its file says:
    ``--isocenter-mm`` (source to the hip joints' mid-plane) or ``--table-mm`` (source to the table top; the
    rule :func:`threeddx.geometry.isocenter_from_table`, with ``--body-thickness-mm``, the body's AP thickness at
    the hips, when it is known)."""

    pixel_mm: float | None = None
    sdd_mm: float | None = None
    isocenter_mm: float | None = None
    table_mm: float | None = None
    thickness_mm: float | None = None

    def __post_init__(self) -> None:
        if self.isocenter_mm is not None and self.table_mm is not None:
            raise InputError("give --isocenter-mm or --table-mm, not both")
        if self.thickness_mm is not None and self.table_mm is None:
            raise InputError("--body-thickness-mm needs --table-mm (it places the hips above the table)")
        if self.sdd_mm is not None and self.pixel_mm is None:
            raise InputError("--sdd-mm needs --pixel-mm (the detector's pixel size, mm) to build a geometry")

    @property
    def builds_geometry(self) -> bool:
        return self.pixel_mm is not None

    def geometry(self, shape: tuple[int, int], fallback: XrayGeometry) -> XrayGeometry:
        rows, cols = shape
        geo = XrayGeometry(self.sdd_mm or fallback.sdd, (rows, cols), (self.pixel_mm, self.pixel_mm),
                           (cols / 2.0, rows / 2.0), fallback.world_to_source)
        try:
            geo.check_physical()
        except InputError as e:
            raise InputError(f"--pixel-mm/--sdd-mm: {e}") from None
        return geo

    def placed(self, geo: XrayGeometry, reading: Reading) -> XrayGeometry:
        """``geo`` with the declared iso-centre distance (recorded in ``reading``); unchanged when none is."""
        if self.isocenter_mm is None and self.table_mm is None:
            return geo
        if self.isocenter_mm is not None:
            iso, how = float(self.isocenter_mm), "--isocenter-mm"
            reading.isocenter_basis = "declared"
        else:
            reading.isocenter_basis = table_basis(self.thickness_mm)
            iso = isocenter_from_table(self.table_mm, body_thickness_mm=self.thickness_mm)
            how = (f"--table-mm {self.table_mm:g}: the hip joints {self.table_mm - iso:.1f} mm in front of the table "
                   "top" + ("" if self.thickness_mm is None else f" (--body-thickness-mm {self.thickness_mm:g})"))
        if not (np.isfinite(iso) and NEAREST_ANATOMY * geo.sdd <= iso < geo.sdd):
            raise InputError(f"{how.split(':')[0]}: the hip joints would be {iso:g} mm from the source; they must lie "
                             f"between {NEAREST_ANATOMY * geo.sdd:.0f} mm and the detector ({geo.sdd:g} mm)")
        reading.isocenter_from = how
        from dataclasses import replace

        return replace(geo, isocenter_distance=iso)
