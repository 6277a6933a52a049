"""predict and evaluate: every output, every input kind, bad input."""
import json
import re

import numpy as np
import pytest
import trimesh

from threeddx.cli import main
from threeddx.training.dataset import read_manifest
from threeddx.errors import InputError
from threeddx.geometry import XrayGeometry
from threeddx.apps.predict import Predictor, predict_file, read_radiograph
from phantoms import example_with_marker as _example_with_marker

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sample(small_sim):
    row = read_manifest(small_sim)[0]
    return small_sim / row["render"]


OUTPUTS = ["masks.png", "depth.png", "summary.json", "report.png"]


def test_predict_writes_every_output(tiny_ckpt, sample, tmp_path, capsys):
    # an untrained model (every pixel bone, conftest.tiny_ckpt): --force writes what it predicts
    code = main(["predict", str(sample), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path), "--force",
                 "--no-measure"])
    assert code == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["geometry_from"] == "file" and s["mesh_method"] == "dual"
    assert "measurements" not in s and "measuring_s" not in s["timings_s"]
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
    s = predict_file(png, pred, tmp_path / "png", gpath, report=False, force=True)
    assert s["geometry_from"] == "--geometry"

    dcm = _write_dicom(tmp_path / "x.dcm", img, sdd=g.sdd, spacing=g.pixel_spacing)
    got, geo, src = read_radiograph(dcm, None, pred.geometry)
    assert src == "DICOM" and geo.sdd == pytest.approx(g.sdd) and geo.pixel_spacing == pytest.approx(g.pixel_spacing)
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


@pytest.mark.parametrize(
    "case,pattern",
    [("not-an-image", "cannot read image"), ("other-detector", "50x50 px detector"),
     ("foreign-checkpoint", "not a 3ddx checkpoint")],
)
def test_bad_inputs_are_clear(case, pattern, tiny_ckpt, sample, tmp_path, capsys):
    import torch

    notimg = tmp_path / "x.png"
    notimg.write_text("hello")
    other = tmp_path / "g.json"
    other.write_text(XrayGeometry.from_json(str(np.load(sample)["geometry"])).resample(50).to_json())
    fake_ck = tmp_path / "fake.pt"
    torch.save({"format": 999}, fake_ck)
    args = {
        "not-an-image": [str(notimg), "--checkpoint", str(tiny_ckpt)],
        "other-detector": [str(sample), "--checkpoint", str(tiny_ckpt), "--geometry", str(other)],
        "foreign-checkpoint": [str(sample), "--checkpoint", str(fake_ck)],
    }[case]
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

    s = predict_file(sample, Blind(tiny_ckpt), tmp_path, report=False, force=True)
    assert s["missing"][0].startswith(pred.bones[0]) and pred.bones[0] not in s["bones"]
    assert not (tmp_path / f"{pred.bones[0]}.stl").exists()


# ---------------------------------------------------------------- not a hip? say so
EXAMPLE = REPO / "src" / "threeddx" / "data" / "example" / "llp26-10_p00.npz"


def _pydicom_data(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    assert spec is not None, "pydicom-data is installed by scripts/install.sh"
    return Path(spec.submodule_search_locations[0]) / "data" / name


def _nominal_geometry_for(path: Path, tmp_path: Path) -> Path:
    """The declared geometry of a radiograph whose own tags are missing: nominal SDD and pose, 430 mm detector."""
    import pydicom

    from threeddx.geometry import standard_ap_geometry

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    g = standard_ap_geometry((0.0, 0.0, 30.0), size=128)
    s = 430.0 / max(rows, cols)
    d = {**g.to_dict(), "detector_shape": [rows, cols], "pixel_spacing_mm": [s, s], "principal_point_px": [cols / 2, rows / 2]}
    p = tmp_path / "geometry.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG3_UNCR.dcm"], ids=["chest-PA", "lower-leg-AP"])
def test_real_non_hip_radiograph_is_refused_in_one_line(name, tmp_path, capsys):
    path = _pydicom_data(name)
    out = tmp_path / "out"
    code = main(["predict", str(path), "--geometry", str(_nominal_geometry_for(path, tmp_path)), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("3ddx: error")]
    assert len(lines) == 1 and "no hip anatomy found" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("kind", ["noise", "blank", "upside-down"])
def test_non_hip_images_are_refused(kind, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    if kind == "noise":
        img = rng.random((128, 128))
    elif kind == "blank":
        img = 0.5 + 0.01 * rng.standard_normal((128, 128))
    else:
        with np.load(EXAMPLE) as z:
            img = z["image"][::-1]
    p = tmp_path / f"{kind}.png"
    Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).save(p)
    assert main(["predict", str(p), "--out", str(tmp_path / "out")]) == 2
    assert "no hip anatomy found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bundled_example_is_not_refused_and_confidences_are_reported(tmp_path):
    s = predict_file(EXAMPLE, Predictor(None), tmp_path)
    assert set(s["bones"]) == {"pelvis", "femur_left", "femur_right"} and not s["missing"]
    for b in s["bones"].values():
        assert b["found"] and 0.75 <= b["confidence"] <= 1.0
    # the hip's measurements: every structure, the femurs fitted for them (their meshes are the network's own)
    m = s["measurements"]
    assert set(m) == {"frame", "pelvis", "femur_left", "femur_right", "acetabulum_left", "acetabulum_right", "points_mm"}
    assert 38 < m["femur_left"]["head_diameter_mm"] < 58 and 30 < m["acetabulum_right"]["acetabular_inclination_deg"] < 56
    assert "measuring_s" in s["timings_s"]


def test_force_reconstructs_what_would_be_refused(tmp_path):
    from PIL import Image

    with np.load(EXAMPLE) as z:
        img = z["image"][::-1]
    p = tmp_path / "upside-down.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(p)
    s = predict_file(p, Predictor(None), tmp_path / "out", force=True)
    assert all(not c["found"] for c in s["checks"].values())


STATS = {"size": 64, "bones": {"b": {"area_px_median": 400.0, "area_px_min": 200.0, "centroid_mean": [32.0, 32.0],
                                     "centroid_sd": [3.0, 3.0]}}}


def _probs(value: float, rows=slice(22, 42), cols=slice(22, 42), size=64) -> np.ndarray:
    p = np.zeros((1, size, size), np.float32)
    p[0, rows, cols] = value
    return p


@pytest.mark.parametrize(
    "probs,found,why",
    [
        (_probs(0.97), True, None),
        (_probs(0.0), False, "no mask"),
        (_probs(0.6), False, "confidence"),
        (_probs(0.97, slice(30, 33), slice(30, 33)), False, "mask area"),
        (_probs(0.97, slice(0, 20), slice(0, 20)), False, "SD from where"),
        (_probs(0.97, slice(44, 84), slice(44, 84), size=128), True, None),  # the same bone at twice the resolution
    ],
    ids=["plausible", "empty", "unsure", "too-small", "misplaced", "other-resolution"],
)
def test_bone_checks(probs, found, why):
    from threeddx.network.model import bone_checks

    c = bone_checks(probs, ["b"], STATS)["b"]
    assert c["found"] is found
    if why:
        assert why in c["why_not"]


@pytest.mark.parametrize(
    "geometry,line",
    [
        (dict(sdd=1500.0, source_to_isocenter=1320.0), "the anatomy is 1320 mm from the source; the model was "
                                                       "trained at 820 mm and validated up to 150 mm from it"),
        (dict(sdd=1150.0, source_to_isocenter=None), "source-to-detector distance 1150 mm and no "
                                                     "source_to_isocenter_mm declared: the anatomy is assumed 970 mm"),
        (dict(sdd=1000.0, detector_mm=300.0), "the image covers 4[89] % of the field the model was trained on"),  # (300/430)^2
    ],
    ids=["declared-far", "sdd-undeclared", "small-detector"],
)
def test_geometry_unlike_the_training_one_is_warned_about(geometry, line, tmp_path, capsys):
    from threeddx.geometry import standard_ap_geometry

    with np.load(EXAMPLE) as z:
        size = z["image"].shape[0]
    g = standard_ap_geometry((0.0, 0.0, 30.0), size=size, **{k: v for k, v in geometry.items() if v is not None})
    d = g.to_dict()
    if "source_to_isocenter" in geometry and geometry["source_to_isocenter"] is None:
        del d["source_to_isocenter_mm"]
    gp = tmp_path / "g.json"
    gp.write_text(json.dumps(d))
    with np.load(EXAMPLE) as z:
        np.save(tmp_path / "x.npy", z["image"])
    code = main(["predict", str(tmp_path / "x.npy"), "--geometry", str(gp), "--out", str(tmp_path / "out"), "--force"])
    err = capsys.readouterr().err
    assert code == 0
    assert re.search("3ddx: warning: " + line.replace("(", r"\(").replace(")", r"\)"), err), err


def test_an_image_without_pose_is_warned_about(tmp_path, capsys):
    with np.load(EXAMPLE) as z:
        np.save(tmp_path / "x.npy", z["image"])
    assert main(["predict", str(tmp_path / "x.npy"), "--out", str(tmp_path / "out2")]) == 0
    assert "nominal pose is assumed" in capsys.readouterr().err


# ---------------------------------------------------------------- all-or-nothing result folders
def test_two_predicts_into_one_folder_leave_one_complete_set(tmp_path):
    """Run alone, each image gives its set; run at once into one folder, the folder is exactly one of them."""
    import subprocess
    import sys

    with np.load(EXAMPLE) as z:
        np.save(tmp_path / "other.npy", z["image"])  # the same anatomy at the nominal pose: other meshes
    images = [str(EXAMPLE), str(tmp_path / "other.npy")]
    cmd = lambda img, out: [sys.executable, "-m", "threeddx.cli", "predict", img, "--out", str(out)]  # noqa: E731
    # alone: each into its own folder (the two at once, as they share nothing)
    procs = [subprocess.Popen(cmd(img, tmp_path / f"alone{k}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, img in enumerate(images)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    alone = [(tmp_path / f"alone{k}" / "pelvis.stl").read_bytes() for k in range(len(images))]
    assert alone[0] != alone[1]
    shared = tmp_path / "shared"
    procs = [subprocess.Popen(cmd(img, shared), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for img in images]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    summary = json.loads((shared / "summary.json").read_text())
    k = images.index(summary["image"])
    assert (shared / "pelvis.stl").read_bytes() == alone[k]
    assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in (tmp_path / f"alone{k}").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_full_disk_ends_in_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    import threeddx.apps.predict as predict

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predict, "_write_maps", full)
    out = tmp_path / "out"
    assert main(["predict", str(EXAMPLE), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"3ddx: error: cannot write {out}: No space left on device; nothing written"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["a-file", "under-a-file", "foreign-folder"])
def test_a_bad_out_is_refused_before_inference(kind, tmp_path, capsys, monkeypatch):
    import threeddx.inference.predictor as inference

    def never(*a, **k):
        raise AssertionError("inference ran")

    monkeypatch.setattr(inference.Predictor, "infer", never)
    target = {"a-file": tmp_path / "f", "under-a-file": tmp_path / "f" / "out", "foreign-folder": tmp_path / "d"}[kind]
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    assert main(["predict", str(EXAMPLE), "--out", str(target)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("fmt", ["png", "npy", "npz", "dcm"])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(fmt, tmp_path, capsys, monkeypatch):
    """A tiny file may claim a huge image: the header is read, not the pixels (limit lowered for the test)."""
    import threeddx.apps.radiograph as radiograph

    monkeypatch.setattr(radiograph, "MAX_PIXELS", 100 * 100)
    img = np.zeros((120, 110), np.uint16)
    path = tmp_path / f"big.{fmt}"
    if fmt == "png":
        from PIL import Image

        Image.fromarray(img).save(path)
    elif fmt == "npy":
        np.save(path, img)
    elif fmt == "npz":
        np.savez_compressed(path, image=img)
    else:
        import pydicom

        ds = pydicom.dcmread(_pydicom_data("RG1_UNCR.dcm"), stop_before_pixels=True)
        ds.Rows, ds.Columns = 120, 110
        ds.save_as(path)  # no pixel data at all: only the header says how big
    assert main(["predict", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image of 120 x 110 pixels, over the limit of 0.01 megapixels" in err[0], err


def test_a_marker_places_the_bones_and_says_so(tmp_path, capsys):
    """--marker-mm: the ball is found at the image's own resolution, the iso-centre is its depth, and the bones
    are scaled about the focal spot until the pelvis fit's hip joints lie there; summary.json says by how
    much. A marker that asks for an implausible move is reported and not applied."""
    path = _example_with_marker(tmp_path, 800.0)
    assert main(["predict", str(path), "--marker-mm", "25", "--out", str(tmp_path / "m"), "--no-measure"]) == 0
    s = json.loads((tmp_path / "m" / "summary.json").read_text())
    m = s["marker"]
    # a painted ball on an upsampled film (not a physical projection): a few mm (benchmarks/marker.py measures it)
    assert abs(m["distance_mm"] - np.linalg.norm([-120.0, 10.0, 800.0])) < 5.0
    assert m["applied"] and m["hips_depth_mm"] == pytest.approx(m["depth_mm"], abs=0.01)
    assert m["moved_mm"] == pytest.approx(m["hips_depth_mm"] - m["network_hips_depth_mm"], abs=0.02)
    assert s["isocenter_from"] == "--marker-mm" and "marker_s" in s["timings_s"]
    assert "marker: 25 mm ball" in capsys.readouterr().out
    # the offset moves the hips' target by as much
    assert main(["predict", str(path), "--marker-mm", "25", "--marker-offset-mm", "20", "--out", str(tmp_path / "o"),
                 "--no-measure"]) == 0
    o = json.loads((tmp_path / "o" / "summary.json").read_text())["marker"]
    assert o["hips_depth_mm"] == pytest.approx(m["hips_depth_mm"] + 20.0, abs=0.5)
    # a ball 300 mm nearer than the hips can be: found, but not used, and said
    far = _example_with_marker(tmp_path, 560.0, x_mm=-70.0)
    assert main(["predict", str(far), "--marker-mm", "25", "--out", str(tmp_path / "f"), "--no-measure"]) == 0
    f = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert not f["marker"]["applied"] and "calibration marker found but not used" in " ".join(f["notes"])


def test_an_inverted_film_s_dark_ball_is_read_as_the_upright_one(tmp_path):
    """A film displayed bone dark (a PNG of an inverted display, which says nothing of it): the network sees the
    bones dark against the body, so the ball is read as a dark disc; the reading is the upright film's."""
    path = _example_with_marker(tmp_path, 800.0)
    with np.load(path) as z:
        img, geo = z["image"], str(z["geometry"])
    inverted = tmp_path / "inverted.npz"
    np.savez(inverted, image=(img.max() - img).astype(np.float32), geometry=geo)
    got = []
    for k, p in enumerate((path, inverted)):
        assert main(["predict", str(p), "--marker-mm", "25", "--out", str(tmp_path / f"r{k}"), "--no-measure"]) == 0
        got.append(json.loads((tmp_path / f"r{k}" / "summary.json").read_text())["marker"])
    assert got[1]["distance_mm"] == pytest.approx(got[0]["distance_mm"], abs=0.05)
    assert (got[0]["dark_disc"], got[1]["dark_disc"]) == (False, True)  # summary.json says how it was looked for


def test_a_missing_marker_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["predict", str(EXAMPLE), "--marker-mm", "25", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("no 25 mm marker found" in err[0] or "no whole 25 mm marker found" in err[0])
    assert not (tmp_path / "x").exists()
    assert main(["predict", str(EXAMPLE), "--marker-offset-mm", "10", "--out", str(tmp_path / "y")]) == 2
    assert "--marker-offset-mm needs --marker-mm" in capsys.readouterr().err


def test_the_marker_places_the_same_in_another_world_frame(tmp_path):
    """The same exposure with its pose written in a world frame 1.2 m away and turned: the ball, the hips'
    move and the scale are the same (placement works in the source frame only)."""
    from threeddx.geometry import rotation_matrix

    path = _example_with_marker(tmp_path, 800.0)
    with np.load(path) as z:
        geo, img = XrayGeometry.from_json(str(z["geometry"])), z["image"]
    t = np.eye(4)
    t[:3, :3] = rotation_matrix((0.3, 0.8, -0.2), np.radians(40.0))
    t[:3, 3] = [1200.0, -300.0, 500.0]
    far = tmp_path / "far.npz"
    np.savez(far, image=img, geometry=geo.with_pose(geo.world_to_source @ np.linalg.inv(t)).to_json())
    got = []
    for k, p in enumerate((path, far)):
        assert main(["predict", str(p), "--marker-mm", "25", "--out", str(tmp_path / f"r{k}"), "--no-measure"]) == 0
        got.append(json.loads((tmp_path / f"r{k}" / "summary.json").read_text())["marker"])
    for key in ("distance_mm", "depth_mm", "hips_depth_mm", "network_hips_depth_mm", "moved_mm", "scale"):
        assert got[1][key] == pytest.approx(got[0][key], abs=0.05), key


def test_a_geometry_document_declares_the_marker(tmp_path, capsys):
    """marker_diameter_mm/marker_offset_mm in the geometry JSON are --marker-mm/--marker-offset-mm: the same
    ball and move; the option wins over the document; a document's ball beside a declared iso-centre, an offset
    without a ball, or a diameter no ball has, is one line, exit 2, nothing written."""
    path = _example_with_marker(tmp_path, 800.0)
    with np.load(path) as z:
        geo = json.loads(str(z["geometry"]))
        np.save(tmp_path / "ball.npy", z["image"])
    geo.pop("source_to_isocenter_mm", None)  # the ball states it (a document giving both is refused below)
    doc = tmp_path / "g.json"
    doc.write_text(json.dumps({**geo, "marker_diameter_mm": 25, "marker_offset_mm": 10}))
    image = tmp_path / "ball.npy"
    assert main(["predict", str(image), "--geometry", str(doc), "--out", str(tmp_path / "j"), "--no-measure"]) == 0
    assert main(["predict", str(image), "--geometry", str(tmp_path / "g.json"), "--marker-mm", "25",
                 "--marker-offset-mm", "10", "--out", str(tmp_path / "o"), "--no-measure"]) == 0
    j, o = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("j", "o"))
    assert j["marker"] == o["marker"] and j["marker"]["applied"]
    assert j["isocenter_from"] == "the geometry's marker_diameter_mm" and o["isocenter_from"] == "--marker-mm"
    capsys.readouterr()
    for extra, args, message in (
            ({"marker_diameter_mm": 25, "source_to_table_mm": 900}, [], "not both"),
            ({"marker_offset_mm": 5}, [], "marker_offset_mm needs marker_diameter_mm"),
            ({"marker_diameter_mm": 25}, ["--isocenter-mm", "800"], "drop --isocenter-mm/--table-mm or the marker"),
            ({"marker_diameter_mm": 900}, [], "diameter must be between 5 and 60 mm")):
        doc.write_text(json.dumps({**geo, **extra}))
        out = tmp_path / "bad"
        assert main(["predict", str(image), "--geometry", str(doc), *args, "--out", str(out)]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
        assert not out.exists()
