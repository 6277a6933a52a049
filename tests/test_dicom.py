"""DICOM radiographs as PACS export them: every common transfer syntax decodes to the uncompressed pixels.

The files are made here: an uncompressed 12-bit DX image from the bundled example (pydicom), transcoded by
GDCM (JPEG Lossless Process 14 and its first-order prediction, JPEG-LS, JPEG 2000, RLE, JPEG Baseline 8-bit,
JPEG Extended 12-bit) or written deflated by pydicom; each is read by predict's reader and compared with the
original pixels: exactly for the lossless syntaxes, within 1 % of the range for the lossy ones.
"""
from pathlib import Path

import numpy as np
import pytest

from threeddx.demo import example_path
from threeddx.geometry import standard_ap_geometry
from threeddx.predict import read_radiograph

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
    steps: list = []
    img, _, _ = read_radiograph(path, None, standard_ap_geometry(size=128), steps=steps)
    np.testing.assert_allclose(_unit(img), _unit(expect(pixels)), atol=2e-3)
    assert any(named in s for s in steps), steps


def test_a_plain_file_takes_no_step_and_the_summary_says_so(tmp_path):
    from threeddx.inference import Predictor
    from threeddx.predict import reconstruct_image

    path = _uncompressed(tmp_path / "plain.dcm", _pixels(12), 12)
    steps: list = []
    read_radiograph(path, None, standard_ap_geometry(size=128), steps=steps)
    assert steps == []
    windowed = _uncompressed(tmp_path / "w.dcm", _pixels(12), 12, WindowCenter=2048.0, WindowWidth=4096.0)
    rec = reconstruct_image(windowed, Predictor(None, hip_anchor=None), mesh_method="dual")
    assert rec.summary["intensity_steps"] == ["VOI LUT (window centre 2048, width 4096)"]
