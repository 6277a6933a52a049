"""DICOM radiographs as PACS export them: every common transfer syntax decodes to the uncompressed pixels.

The files are made here: an uncompressed 12-bit DX image from the bundled example (pydicom), transcoded by
GDCM (JPEG Lossless Process 14 and its first-order prediction, JPEG-LS, JPEG 2000, RLE, JPEG Baseline 8-bit,
JPEG Extended 12-bit) or written deflated by pydicom; each is read by predict's reader and compared with the
original pixels: exactly for the lossless syntaxes, within 1 % of the range for the lossy ones.
"""
from pathlib import Path

import numpy as np
import pytest

from threeddx.apps.demo import example_path
from threeddx.geometry import standard_ap_geometry
from threeddx.apps.predict import Reading, read_radiograph

gdcm = pytest.importorskip("gdcm")

#: name -> (GDCM's transfer syntax, bits stored, lossless)
SYNTAXES = {
    "JPEG Lossless, first-order prediction (1.2.840.10008.1.2.4.70)": ("JPEGLosslessProcess14_1", 12, True),
    "JPEG Lossless, Process 14 (1.2.840.10008.1.2.4.57)": ("JPEGLosslessProcess14", 12, True),
    "JPEG-LS Lossless (1.2.840.10008.1.2.4.80)": ("JPEGLSLossless", 12, True),
    "JPEG 2000 Lossless (1.2.840.10008.1.2.4.90)": ("JPEG2000Lossless", 12, True),
    "RLE Lossless (1.2.840.10008.1.2.5)": ("RLELossless", 12, True),
    "JPEG Baseline 8-bit (1.2.840.10008.1.2.4.50)": ("JPEGBaselineProcess1", 8, False),
    "JPEG Extended 12-bit (1.2.840.10008.1.2.4.51)": ("JPEGExtendedProcess2_4", 12, False),
}


def _pixels(bits: int) -> np.ndarray:
    """The example radiograph as a detector stores it: unsigned integers, kept off the range's ends (a lossy
    codec's ringing at a clipped edge would wrap)."""
    with np.load(example_path()) as z:
        x = np.clip(z["image"], 0, 1)
    top = 2**bits - 1
    return np.round(0.05 * top + 0.9 * top * x).astype(np.uint16 if bits > 8 else np.uint8)


def _uncompressed(path: Path, pixels: np.ndarray, bits: int, syntax=None, **tags) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16 if bits > 8 else 8, bits, bits - 1, 0
    ds.DistanceSourceToDetector = 1000.0
    ds.ImagerPixelSpacing = [430.0 / pixels.shape[0], 430.0 / pixels.shape[1]]
    ds.PixelData = pixels.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _transcoded(src: Path, dst: Path, syntax: str) -> Path:
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return dst


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_every_transfer_syntax_decodes_to_the_original_pixels(name, tmp_path):
    import pydicom

    syntax, bits, lossless = SYNTAXES[name]
    pixels = _pixels(bits)
    src = _uncompressed(tmp_path / "plain.dcm", pixels, bits)
    path = _transcoded(src, tmp_path / "coded.dcm", syntax)
    assert str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) in name
    img, geo, source = read_radiograph(path, None, standard_ap_geometry(size=128))
    assert source == "DICOM" and geo.detector_shape == pixels.shape and img.shape == pixels.shape
    err = np.abs(img - pixels.astype(np.float32))
    if lossless:
        assert err.max() == 0, name
    else:
        assert err.mean() < 0.01 * (2**bits - 1), (name, err.mean())


def test_a_deflated_file_decodes(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    pixels = _pixels(12)
    path = _uncompressed(tmp_path / "deflated.dcm", pixels, 12, DeflatedExplicitVRLittleEndian)
    img, _, _ = read_radiograph(path, None, standard_ap_geometry(size=128))
    assert np.array_equal(img, pixels.astype(np.float32))


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return (a - a.min()) / (a.max() - a.min())


#: Files that need a step of DICOM's grayscale pipeline: (tags, how the stored values are made from the displayed
#: ones, what the image must read back as, the step summary.json names)
STEPS = {
    "rescale slope -1": (dict(RescaleSlope=-1.0, RescaleIntercept=4095.0), lambda p: 4095 - p, lambda p: p,
                         "Modality LUT"),
    "VOI window": (dict(WindowCenter=2048.0, WindowWidth=1024.0), lambda p: p,
                   lambda p: np.clip((p - 1536.0) / 1024.0, 0, 1), "VOI LUT"),
    "MONOCHROME1": (dict(PhotometricInterpretation="MONOCHROME1"), lambda p: 4095 - p, lambda p: p, "MONOCHROME1"),
    "Presentation LUT Shape INVERSE": (dict(PresentationLUTShape="INVERSE"), lambda p: 4095 - p, lambda p: p,
                                       "INVERSE"),
    "MONOCHROME1 and INVERSE (one inversion)": (dict(PhotometricInterpretation="MONOCHROME1",
                                                     PresentationLUTShape="INVERSE"), lambda p: 4095 - p, lambda p: p,
                                                "MONOCHROME1 and Presentation LUT Shape INVERSE"),
}


@pytest.mark.parametrize("case", list(STEPS))
def test_pixels_are_read_as_the_modality_means_them(case, tmp_path):
    """Each step of the grayscale pipeline a file asks for is applied (the image reads back bone bright, as
    displayed) and named in the steps that go into summary.json."""
    tags, store, expect, named = STEPS[case]
    pixels = _pixels(12).astype(np.float64)
    stored = store(pixels).astype(np.uint16)
    path = _uncompressed(tmp_path / "x.dcm", stored, 12, **tags)
    reading = Reading()
    img, _, _ = read_radiograph(path, None, standard_ap_geometry(size=128), reading=reading)
    np.testing.assert_allclose(_unit(img), _unit(expect(pixels)), atol=2e-3)
    assert any(named in s for s in reading.steps), reading.steps


def test_a_plain_file_takes_no_step_and_the_summary_says_so(tmp_path):
    from threeddx.inference.predictor import Predictor
    from threeddx.apps.predict import reconstruct_image

    path = _uncompressed(tmp_path / "plain.dcm", _pixels(12), 12)
    reading = Reading()
    read_radiograph(path, None, standard_ap_geometry(size=128), reading=reading)
    assert reading.steps == [] and reading.orientation == []
    windowed = _uncompressed(tmp_path / "w.dcm", _pixels(12), 12, WindowCenter=2048.0, WindowWidth=4096.0)
    rec = reconstruct_image(windowed, Predictor(None, hip_anchor=None), mesh_method="dual")
    assert rec.summary["intensity_steps"] == ["VOI LUT (window centre 2048, width 4096)"]


# ------------------------------------------------------------------ orientation
def _ap_image() -> np.ndarray:
    """An asymmetric 12-bit image (the example, its corner marked) so every turn shows."""
    a = _pixels(12).copy()
    a[:10, :20] = 4095
    return a


#: Patient Orientation (0020,0020) -> how the stored image is made from an AP film's reading (the inverse of
#: what the reader must do), and what the reading must say.
ORIENTATIONS = {
    "L\\F": (lambda a: a, []),
    "R\\F": (lambda a: a[:, ::-1], ["flipped left-right"]),
    "L\\H": (lambda a: a[::-1], ["flipped top-bottom"]),
    "R\\H": (lambda a: a[::-1, ::-1], ["flipped top-bottom", "flipped left-right"]),
    "F\\L": (lambda a: a.T, ["transposed"]),
    "H\\R": (lambda a: a[::-1, ::-1].T, ["transposed", "flipped top-bottom", "flipped left-right"]),
    "LP\\F": (lambda a: a, []),  # an oblique's main direction
}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_an_image_is_turned_to_an_ap_films_reading(orientation, tmp_path):
    """Whatever orientation a file is stored in, the reader returns the AP reading (superior at the top, the
    patient's right on the image's left) exactly, the pixel spacing turned with it, and says what it did."""
    store, said = ORIENTATIONS[orientation]
    ap = _ap_image()
    stored = np.ascontiguousarray(store(ap)).astype(np.uint16)
    path = _uncompressed(tmp_path / "o.dcm", stored, 12, PatientOrientation=orientation.split("\\"))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.ImagerPixelSpacing = [0.5, 0.25]  # rows, columns of the stored image
    ds.save_as(path)
    reading = Reading()
    img, geo, _ = read_radiograph(path, None, standard_ap_geometry(size=128), reading=reading)
    assert np.array_equal(img, ap.astype(np.float32))
    transposed = "transposed" in said
    assert geo.pixel_spacing == ((0.25, 0.5) if transposed else (0.5, 0.25))
    assert len(reading.orientation) == len(said)
    assert all(w in o and f"Patient Orientation {orientation}" in o for w, o in zip(said, reading.orientation))
    assert reading.tags["Patient Orientation (0020,0020)"] == orientation.split("\\")


@pytest.mark.parametrize("tags, match", [
    (dict(PatientOrientation=["A", "F"]), "lateral projection"),
    (dict(PatientOrientation=["L", "R"]), "do not run across and along"),
    (dict(PatientOrientation=["L"]), "two directions"),
    (dict(PatientOrientation=["X", "F"]), "two directions"),
    (dict(ViewPosition="LL"), "lateral view"),
])
def test_views_it_cannot_read_are_refused_in_one_line(tags, match, tmp_path):
    from threeddx.errors import InputError

    path = _uncompressed(tmp_path / "v.dcm", _ap_image(), 12, **tags)
    with pytest.raises(InputError, match=match) as e:
        read_radiograph(path, None, standard_ap_geometry(size=128))
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_pa_view_is_read_as_an_ap_one_and_says_so(tmp_path):
    """Without Patient Orientation a PA view is the beam's view (the patient's left on the image's left) and is
    flipped; with it, the tag rules. Either way the assumptions say a PA view was read as an AP one."""
    ap = _ap_image()
    beam = _uncompressed(tmp_path / "pa.dcm", ap[:, ::-1].copy(), 12, ViewPosition="PA")
    reading = Reading()
    img, _, _ = read_radiograph(beam, None, standard_ap_geometry(size=128), reading=reading)
    assert np.array_equal(img, ap.astype(np.float32))
    assert reading.orientation == ["flipped left-right (no Patient Orientation)"]
    assert any("PA view" in a for a in reading.assumptions) and any("beam sees" in a for a in reading.assumptions)
    hung = _uncompressed(tmp_path / "pa-hung.dcm", ap, 12, ViewPosition="PA", PatientOrientation=["L", "F"])
    reading = Reading()
    img, _, _ = read_radiograph(hung, None, standard_ap_geometry(size=128), reading=reading)
    assert np.array_equal(img, ap.astype(np.float32)) and reading.orientation == []
    assert any("PA view" in a for a in reading.assumptions)


def test_a_mirrored_file_gives_the_same_bones(tmp_path):
    """The patient's mirror image as stored (R\\F) reconstructs to the same bones, with the same names, as the
    AP film (L\\F): the reader undoes the flip; the summary says so."""
    from threeddx.inference.predictor import Predictor
    from threeddx.apps.predict import reconstruct_image

    ap = _ap_image()
    pred = Predictor(None, hip_anchor=None)
    plain = reconstruct_image(_uncompressed(tmp_path / "a.dcm", ap, 12, PatientOrientation=["L", "F"]), pred,
                              mesh_method="dual")
    mirrored = reconstruct_image(_uncompressed(tmp_path / "b.dcm", ap[:, ::-1].copy(), 12,
                                               PatientOrientation=["R", "F"]), pred, mesh_method="dual")
    assert mirrored.summary["orientation"] == ["flipped left-right (Patient Orientation R\\F)"]
    assert plain.summary["orientation"] == ["as stored: an AP film's reading"]
    for bone, entry in plain.summary["bones"].items():
        assert mirrored.summary["bones"][bone]["volume_cm3"] == pytest.approx(entry["volume_cm3"])
    assert np.array_equal(plain.prediction.masks, mirrored.prediction.masks)


# ------------------------------------------------------------------ geometry from tags
SDD = 1000.0
IPS = 430.0 / _pixels(8).shape[0]  # the example's detector pixel (430 mm across)

#: tags -> (the iso-centre distance they give, the detector pixel (mm), what isocenter_from names)
ISO_TAGS = {
    "table (0018,1111)": (dict(DistanceSourceToPatient=965.0), 965.0 - 145.0, IPS, "table top"),
    "skin (0018,1111)": (dict(DistanceSourceToPatient=700.0), 700.0 + 120.0, IPS, "skin"),
    "magnification factor (0018,1114)": (dict(EstimatedRadiographicMagnificationFactor=1.25), SDD / 1.25, IPS,
                                         "magnification factor"),
    "fiducial calibration": (dict(PixelSpacing=[IPS / 1.2, IPS / 1.2], PixelSpacingCalibrationType="FIDUCIAL"),
                             SDD / 1.2, IPS, "FIDUCIAL"),
    "geometry calibration": (dict(PixelSpacing=[IPS / 1.1, IPS / 1.1], PixelSpacingCalibrationType="GEOMETRY"),
                             SDD / 1.1, IPS, "GEOMETRY"),
    "table beats magnification factor": (dict(DistanceSourceToPatient=965.0,
                                              EstimatedRadiographicMagnificationFactor=1.1), 820.0, IPS, "table top"),
    "none": (dict(), None, IPS, None),
}


@pytest.mark.parametrize("case", list(ISO_TAGS))
def test_the_isocentre_comes_from_the_tags_that_carry_it(case, tmp_path):
    tags, iso, pixel, named = ISO_TAGS[case]
    path = _uncompressed(tmp_path / "g.dcm", _ap_image(), 12, **tags)
    reading = Reading()
    _, geo, source = read_radiograph(path, None, standard_ap_geometry(size=128), reading=reading)
    assert source == "DICOM" and geo.sdd == SDD and geo.pixel_spacing == pytest.approx((pixel, pixel))
    if iso is None:
        assert geo.isocenter_distance is None and reading.isocenter_from is None
    else:
        assert geo.isocenter_distance == pytest.approx(iso, abs=1e-6)
        assert named in reading.isocenter_from
    assert "Distance Source to Detector (0018,1110)" in reading.tags


def test_a_patient_calibrated_spacing_alone_needs_the_magnification(tmp_path):
    from threeddx.errors import InputError

    calibrated = dict(PixelSpacing=[2.8, 2.8], PixelSpacingCalibrationType="GEOMETRY")
    path = _uncompressed(tmp_path / "c.dcm", _ap_image(), 12, **calibrated, EstimatedRadiographicMagnificationFactor=1.2)
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.ImagerPixelSpacing
    ds.save_as(path)
    reading = Reading()
    _, geo, _ = read_radiograph(path, None, standard_ap_geometry(size=128), reading=reading)
    assert geo.pixel_spacing == pytest.approx((2.8 * 1.2, 2.8 * 1.2)) and geo.isocenter_distance == pytest.approx(SDD / 1.2)
    del ds.EstimatedRadiographicMagnificationFactor
    ds.save_as(path)
    with pytest.raises(InputError, match="--pixel-mm"):
        read_radiograph(path, None, standard_ap_geometry(size=128))


@pytest.mark.parametrize("tags, match", [
    (dict(DistanceSourceToPatient=1200.0), "not between the source and the detector"),
    (dict(EstimatedRadiographicMagnificationFactor=0.5), "outside 1-3"),
])
def test_impossible_distances_are_refused(tags, match, tmp_path):
    from threeddx.errors import InputError

    path = _uncompressed(tmp_path / "d.dcm", _ap_image(), 12, **tags)
    with pytest.raises(InputError, match=match):
        read_radiograph(path, None, standard_ap_geometry(size=128))


def test_a_declared_table_is_the_same_rule_in_json_and_dicom(tmp_path):
    """geometry JSON ``source_to_table_mm`` and DICOM (0018,1111) give the same iso-centre
    (:func:`threeddx.geometry.isocenter_from_table`); giving it with the iso-centre too is refused."""
    import json

    from threeddx.errors import InputError
    from threeddx.geometry import HIPS_ABOVE_TABLE_MM, XrayGeometry, isocenter_from_table

    d = standard_ap_geometry(size=128).to_dict()
    d.pop("source_to_isocenter_mm", None)
    geo = XrayGeometry.from_json(json.dumps(dict(d, source_to_table_mm=950.0)))
    assert geo.isocenter_distance == isocenter_from_table(950.0) == 950.0 - HIPS_ABOVE_TABLE_MM
    path = _uncompressed(tmp_path / "t.dcm", _ap_image(), 12, DistanceSourceToPatient=950.0)
    _, from_tag, _ = read_radiograph(path, None, standard_ap_geometry(size=128))
    assert from_tag.isocenter_distance == geo.isocenter_distance
    with pytest.raises(InputError, match="not both"):
        XrayGeometry.from_json(json.dumps(dict(d, source_to_table_mm=950.0, source_to_isocenter_mm=800.0)))


@pytest.mark.parametrize("thickness", [210.0, 266.4, 420.0])
def test_a_declared_table_with_the_bodys_thickness_follows_the_line(thickness, tmp_path):
    """With the body's AP thickness T at the hips, the hips lie a + b T in front of the table
    (threeddx.geometry.TABLE_TO_HIPS_LINE): the same iso-centre from the geometry JSON (body_thickness_mm), DICOM
    Body Part Thickness (0018,11A0) beside (0018,1111), and --table-mm with --body-thickness-mm; a thickness
    without a table, or one no body has, is refused in one line."""
    import json

    from threeddx.apps.predict import Declared
    from threeddx.errors import InputError
    from threeddx.geometry import TABLE_TO_HIPS_LINE, XrayGeometry, isocenter_from_entrance

    a, b = TABLE_TO_HIPS_LINE
    want = 950.0 - (a + b * thickness)
    d = standard_ap_geometry(size=128).to_dict()
    d.pop("source_to_isocenter_mm", None)
    geo = XrayGeometry.from_json(json.dumps(dict(d, source_to_table_mm=950.0, body_thickness_mm=thickness)))
    assert geo.isocenter_distance == pytest.approx(want, abs=1e-9)
    path = _uncompressed(tmp_path / "t.dcm", _ap_image(), 12, DistanceSourceToPatient=950.0,
                         BodyPartThickness=thickness)
    reading = Reading()
    _, from_tag, _ = read_radiograph(path, None, standard_ap_geometry(size=128), reading=reading)
    assert from_tag.isocenter_distance == pytest.approx(want, abs=1e-9)
    assert "Body Part Thickness (0018,11A0)" in reading.isocenter_from and reading.isocenter_basis == "table+thickness"
    reading = Reading()
    _, declared, _ = read_radiograph(path, None, standard_ap_geometry(size=128),
                                     Declared(table_mm=950.0, thickness_mm=thickness), reading)
    assert declared.isocenter_distance == pytest.approx(want, abs=1e-9) and "--body-thickness-mm" in reading.isocenter_from
    assert reading.isocenter_sd_mm(declared) == 5.2  # TABLE_TO_HIPS_LINE's residual, not the 25.7 of a table alone
    # the skin's distance: the hips lie the rest of the body's thickness behind it
    assert isocenter_from_entrance(700.0, body_thickness_mm=thickness) == pytest.approx(700.0 + thickness - a - b * thickness)
    for bad, match in ((dict(body_thickness_mm=300.0), "needs source_to_table_mm"),
                       (dict(source_to_table_mm=950.0, body_thickness_mm=2000.0), "not a body's at the hips")):
        with pytest.raises(InputError, match=match) as e:
            XrayGeometry.from_json(json.dumps(dict(d, **bad)))
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="--body-thickness-mm needs --table-mm"):
        Declared(isocenter_mm=800.0, thickness_mm=300.0)


# ------------------------------------------------------------------ "for processing"
def _raw_signal(small_sim):
    """A simulated sample's detector signal (the standard chain's steps 1-3) and its displayed image."""
    from threeddx.training.dataset import read_manifest
    from threeddx.geometry import XrayGeometry
    from threeddx.simulator.physics import detector_signal, process, sample_materials

    with np.load(small_sim / read_manifest(small_sim)[0]["render"]) as z:
        geo = XrayGeometry.from_json(str(z["geometry"]))
        signal = detector_signal(sample_materials(z), geo, "standard")
    return signal, process(signal, geo, "standard"), geo


def _for_processing(path, pixels, geo, **tags):
    return _uncompressed(path, pixels, 16, PresentationIntentType="FOR PROCESSING", DistanceSourceToDetector=geo.sdd,
                         ImagerPixelSpacing=list(geo.pixel_spacing), **tags)


@pytest.mark.parametrize("relation, sign", [("LIN", 1), ("LIN", -1), ("LOG", 1), ("LOG", -1)])
def test_a_for_processing_image_is_processed_as_the_chain_does(relation, sign, small_sim, tmp_path):
    """Raw detector data stored linear or logarithmic, either sign, reads back as the imaging chain's own
    displayed image of that signal (correlation > 0.99), and the steps say it was converted."""
    signal, displayed, geo = _raw_signal(small_sim)
    s = np.maximum(signal / signal.max(), 1e-6)
    if relation == "LIN":
        values = 60000 * s if sign > 0 else 65535 - 60000 * s  # sign -1: no X-rays at the 16 bits' top
    else:
        values = 60000 + 4000 * np.log(s) if sign > 0 else -4000 * np.log(s)
    pixels = np.clip(np.round(values), 0, 65535).astype(np.uint16)
    path = _for_processing(tmp_path / "raw.dcm", pixels, geo, PixelIntensityRelationship=relation,
                           PixelIntensityRelationshipSign=sign)
    reading = Reading()
    img, _, _ = read_radiograph(path, None, standard_ap_geometry(size=geo.detector_shape[0]), reading=reading)
    r = np.corrcoef(img.ravel(), displayed.ravel())[0, 1]
    assert r > 0.99, r
    assert any("for processing" in s for s in reading.steps), reading.steps
    assert reading.tags["Pixel Intensity Relationship (0028,1040)"] == relation


def test_a_for_processing_image_without_its_relationship_is_refused(small_sim, tmp_path):
    from threeddx.errors import InputError

    signal, _, geo = _raw_signal(small_sim)
    path = _for_processing(tmp_path / "raw.dcm", np.round(60000 * signal / signal.max()).astype(np.uint16), geo)
    with pytest.raises(InputError, match="Pixel Intensity Relationship"):
        read_radiograph(path, None, standard_ap_geometry(size=geo.detector_shape[0]))


def test_a_declared_isocentre_or_table_overrides_the_file(tmp_path):
    """``--isocenter-mm``/``--table-mm`` (threeddx.apps.predict.Declared) place the patient over the tags or the
    default, for a DICOM and for a PNG with ``--pixel-mm``; the reading says where it came from."""
    from PIL import Image

    from threeddx.errors import InputError
    from threeddx.apps.predict import Declared

    dcm = _uncompressed(tmp_path / "t.dcm", _ap_image(), 12, DistanceSourceToPatient=965.0)
    nominal = standard_ap_geometry(size=128)
    reading = Reading()
    _, geo, _ = read_radiograph(dcm, None, nominal, Declared(isocenter_mm=870.0), reading)
    assert geo.isocenter_distance == 870.0 and reading.isocenter_from == "--isocenter-mm"
    png = tmp_path / "x.png"
    Image.fromarray((_ap_image()[:, :100] // 16).astype(np.uint8)).save(png)
    reading = Reading()
    _, geo, source = read_radiograph(png, None, nominal, Declared(pixel_mm=0.5, table_mm=1100.0, sdd_mm=1200.0), reading)
    assert source == "--pixel-mm" and geo.detector_shape == (_ap_image().shape[0], 100) and geo.isocenter_distance == 955.0
    assert reading.isocenter_from.startswith("--table-mm 1100")
    with pytest.raises(InputError, match="between"):
        read_radiograph(png, None, nominal, Declared(pixel_mm=0.5, isocenter_mm=1500.0))
    with pytest.raises(InputError, match="not both"):
        Declared(isocenter_mm=800.0, table_mm=950.0)


def _ball_for_processing(tmp_path, relation, **tags):
    """The bundled example as a 512 px "for processing" DICOM (its film taken back to a detector signal) with an
    opaque 25 mm ball beside the right trochanter, 800 mm from the source, blurred by the detector; ``tags``
    more of the file's tags."""
    from scipy import ndimage

    from threeddx.geometry import XrayGeometry
    from threeddx.inference.marker import sphere_cover

    with np.load(example_path()) as z:
        geo = XrayGeometry.from_json(str(z["geometry"])).resample(512)
        film = ndimage.zoom(z["image"].astype(np.float64), 2, order=1)
    _, share, inside = sphere_cover(geo, np.array([-120.0, 10.0, 800.0]), 12.5)
    transmission = 1.0 - share + share * np.exp(-5.0 * inside)
    signal = ndimage.gaussian_filter(np.exp(-3.0 * film / film.max()) * transmission + 0.005, 1.0)
    values = 60000 * signal / signal.max() if relation == "LIN" else 60000 + 4000 * np.log(signal / signal.max())
    path = _for_processing(tmp_path / f"{relation}.dcm", np.clip(np.round(values), 0, 65535).astype(np.uint16), geo,
                           PixelIntensityRelationship=relation, PixelIntensityRelationshipSign=1, **tags)
    return path


@pytest.mark.parametrize("relation, read_on", [("LIN", "detector signal"), ("LOG", "display")])
def test_a_ball_in_a_for_processing_file_is_measured_on_its_signal(relation, read_on, tmp_path):
    """predict --marker-mm on a "for processing" file: a LIN file's ball is measured on the detector signal it
    holds, and the iso-centre's uncertainty is that reading's (``marker+signal``); a LOG file's scale is not
    stated (its signal is not known to be linear): the ball is read on the film, as for any other image."""
    import json

    from threeddx.cli import main
    from threeddx.geometry import ISOCENTER_SD_MM

    path = _ball_for_processing(tmp_path, relation)
    assert main(["predict", str(path), "--marker-mm", "25", "--out", str(tmp_path / "o"), "--no-measure",
                 "--mesh", "dual"]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["marker"]["read_on"] == read_on
    # on the signal within 3 mm (2 here); the film's curve moves the edge (13 mm here; benchmarks/marker_finding.py)
    assert abs(s["marker"]["depth_mm"] - 800.0) < (3.0 if relation == "LIN" else 25.0)
    basis = "marker+signal" if relation == "LIN" else "marker"
    assert s["isocenter_sd_mm"] == pytest.approx(ISOCENTER_SD_MM[basis])
    # the steel's edge: at 80 kVp when the file states no KVP, and the summary says it was assumed
    assert s["marker"]["edge_kvp"] == (80.0 if relation == "LIN" else None)
    assert any("80 kVp" in a for a in s["assumptions"]) == (relation == "LIN")


@pytest.mark.parametrize("kvp, used", [("90", 90.0), ("12", None), ("n/a", None)])
def test_the_tube_voltage_is_read_from_kvp(kvp, used, tmp_path):
    """KVP (0018,0060) gives the tube voltage a ball's steel edge is fitted at (Reading.kvp, recorded among the
    tags used); one that is no tube voltage (12 kV, text a modality wrote against the standard) is not used, the
    file is still read and the reading says so."""
    path = _uncompressed(tmp_path / "kvp.dcm", np.full((64, 64), 1000, np.uint16), 12, KVP="99.9")
    data = path.read_bytes()
    assert data.count(b"99.9") == 1
    path.write_bytes(data.replace(b"99.9", kvp.ljust(4).encode()))  # as written, valid or not (pydicom refuses text)
    reading = Reading()
    read_radiograph(path, None, standard_ap_geometry(size=64), reading=reading)
    assert reading.kvp == used
    assert reading.tags["KVP (0018,0060)"].strip() == kvp
    assert any("KVP" in a for a in reading.assumptions) == (used is None)


def test_a_ball_on_the_signal_is_fitted_at_the_file_s_kvp(tmp_path):
    """A LIN "for processing" file stating KVP 100: the ball's steel edge is fitted at 100 kVp (summary.json's
    ``marker.edge_kvp``), nothing is assumed about it, and the iso-centre's SD is that reading's."""
    import json

    from threeddx.cli import main
    from threeddx.geometry import ISOCENTER_SD_MM

    path = _ball_for_processing(tmp_path, "LIN", KVP="100")
    assert main(["predict", str(path), "--marker-mm", "25", "--out", str(tmp_path / "o"), "--no-measure",
                 "--mesh", "dual"]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["marker"]["edge_kvp"] == 100.0 and s["marker"]["read_on"] == "detector signal"
    assert not any("kVp" in a for a in s["assumptions"])
    assert s["isocenter_sd_mm"] == pytest.approx(ISOCENTER_SD_MM["marker+signal+kvp"])
