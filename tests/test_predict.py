"""predict and evaluate: every output, every input kind, bad input."""
import json

import numpy as np
import pytest
import trimesh

from threeddx.cli import main
from threeddx.dataset import read_manifest
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.predict import Predictor, predict_file, read_radiograph
from threeddx.train import load_config, train

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_ckpt(small_sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(REPO / "configs" / "tiny.yaml", {"data": {"root": str(small_sim)}, "out": str(out),
                                                        "optim": {"epochs": 3}})
    train(cfg, progress=False)
    return out / "last.pt"


@pytest.fixture(scope="session")
def sample(small_sim):
    row = read_manifest(small_sim)[0]
    return small_sim / row["render"]


OUTPUTS = ["masks.png", "depth.png", "summary.json", "report.png"]


def test_predict_writes_every_output(tiny_ckpt, sample, tmp_path, capsys):
    # the tiny model is barely trained: give it ground-truth-like behaviour for the bones it finds
    code = main(["predict", str(sample), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path)])
    assert code == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["geometry_from"] == "file" and s["mesh_method"] == "dual"
    assert set(s["timings_s"]) >= {"load_s", "network_s", "backprojection_s", "meshing_s", "writing_s"}
    for f in OUTPUTS:
        assert (tmp_path / f).stat().st_size > 1000, f
    assert s["bones"], "the tiny model found no bone at all"
    for bone in s["bones"]:
        for suffix in (".stl", ".ply", "_points.ply"):
            assert (tmp_path / f"{bone}{suffix}").exists()
        mesh = trimesh.load(tmp_path / f"{bone}.stl")
        assert mesh.is_watertight


def _geometry_json(sample, tmp_path):
    with np.load(sample) as z:
        g, img = XrayGeometry.from_json(str(z["geometry"])), z["image"]
    p = tmp_path / "g.json"
    p.write_text(g.to_json())
    return g, img, p


def test_png_with_geometry_and_dicom_with_tags(tiny_ckpt, sample, tmp_path):
    from PIL import Image

    g, img, gpath = _geometry_json(sample, tmp_path)
    png = tmp_path / "x.png"
    Image.fromarray((img * 65535).astype(np.uint16)).save(png)
    got, geo, src = read_radiograph(png, XrayGeometry.load(gpath), g)
    assert src == "--geometry" and got.shape == img.shape
    pred = Predictor(tiny_ckpt)
    s = predict_file(png, pred, tmp_path / "png", gpath, report=False)
    assert s["geometry_from"] == "--geometry"

    dcm = _write_dicom(tmp_path / "x.dcm", img, sdd=g.sdd, spacing=g.pixel_spacing)
    got, geo, src = read_radiograph(dcm, None, pred.geometry)
    assert src == "file" and geo.sdd == pytest.approx(g.sdd) and geo.pixel_spacing == pytest.approx(g.pixel_spacing)
    bad = _write_dicom(tmp_path / "nosdd.dcm", img, sdd=None, spacing=g.pixel_spacing)
    with pytest.raises(InputError, match=r"\(0018,1110\)"):
        read_radiograph(bad, None, pred.geometry)


def _write_dicom(path, img, sdd, spacing):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "DX"
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = (img * 4095).astype(np.uint16).tobytes()
    if sdd is not None:
        ds.DistanceSourceToDetector = float(sdd)
    ds.ImagerPixelSpacing = [float(spacing[0]), float(spacing[1])]
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def test_bad_inputs_are_clear(tiny_ckpt, sample, tmp_path, capsys):
    notimg = tmp_path / "x.png"
    notimg.write_text("hello")
    other = tmp_path / "g.json"
    other.write_text(XrayGeometry.from_json(str(np.load(sample)["geometry"])).resample(50).to_json())
    fake_ck = tmp_path / "fake.pt"
    import torch

    torch.save({"format": 999}, fake_ck)
    for args, pattern in (
        ([str(notimg), "--checkpoint", str(tiny_ckpt)], "cannot read image"),
        ([str(sample), "--checkpoint", str(tiny_ckpt), "--geometry", str(other)], "50x50 px detector"),
        ([str(sample), "--checkpoint", str(fake_ck)], "not a 3ddx checkpoint"),
    ):
        out = tmp_path / "o"
        assert main(["predict", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and pattern in err[0], err
        assert not out.exists()


def test_an_empty_predicted_mask_is_reported_missing(tiny_ckpt, sample, tmp_path):
    pred = Predictor(tiny_ckpt)
    real = pred.__class__.__call__

    class Blind(Predictor):
        def __call__(self, image01):
            r = real(self, image01)
            r["masks"][0] = False
            return r

    s = predict_file(sample, Blind(tiny_ckpt), tmp_path, report=False)
    assert pred.bones[0] in s["missing"]
    assert not (tmp_path / f"{pred.bones[0]}.stl").exists()


def test_evaluate_oracle_and_checkpoint(small_sim, tiny_ckpt, tmp_path):
    from threeddx.evaluate import evaluate

    dual = evaluate(small_sim, tmp_path / "oracle", split="val", oracle=True, limit=2, progress=False)
    front = evaluate(small_sim, tmp_path / "front", split="val", oracle=True, mesh_method="front", limit=2, progress=False)
    for bone in ("pelvis", "femur_left"):
        assert dual["bones"][bone]["n"] == 2
        assert front["bones"][bone]["assd_mean"] > dual["bones"][bone]["assd_mean"] + 1.0
    md = (tmp_path / "oracle" / "results.md").read_text()
    assert "pelvis ASSD" in md and "2 images of 1 subjects" in md
    rows = (tmp_path / "oracle" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3
    net = evaluate(small_sim, tmp_path / "net", tiny_ckpt, split="val", limit=1, progress=False)
    assert net["images"] == 1 and set(net["bones"]) >= {"pelvis", "femur"}
