import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import ellipsoid_occupancy, make_volume
from threeddx.cli import main
from threeddx.geometry import XrayGeometry, standard_ap_geometry


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 64^3 CT with three labelled 'bones' (ids 77, 78 and 75) written as NIfTI."""
    d = tmp_path_factory.mktemp("case")
    vol = make_volume(fill=-1000.0)
    body = ellipsoid_occupancy(vol, (0, 0, 0), (30, 25, 30)) > 0
    lab = np.zeros(vol.array.shape, np.uint8)
    for label_id, c in ((77, (-14, 0, 8)), (78, (14, 0, 8)), (75, (-12, 4, -14))):
        lab[ellipsoid_occupancy(vol, c, (9, 7, 8)) > 0] = label_id
    vol.array[body] = 40.0
    vol.array[lab > 0] = 900.0
    ct_path, lab_path = d / "ct.nii.gz", d / "labels.nii.gz"
    sitk.WriteImage(vol.to_sitk(), str(ct_path))
    lab_vol = make_volume()
    lab_vol.array = lab
    sitk.WriteImage(lab_vol.to_sitk(), str(lab_path))
    return ct_path, lab_path, vol


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_render_writes_the_npz_format_and_preview(case, tmp_path, capsys):
    ct, lab, _ = case
    out = tmp_path / "r"
    code, stdout, _ = run(capsys, "render", "--ct", ct, "--labels", lab, "--bones", "pelvis=77+78", "femur_left",
                          "--size", 128, "--seed", 3, "--out", out)
    assert code == 0, stdout
    z = np.load(out / "render.npz")
    assert z["image"].shape == (128, 128) and z["image"].dtype == np.float32
    assert z["masks"].shape == (2, 128, 128) and z["masks"].dtype == np.uint8
    assert z["depth_front"].shape == z["depth_back"].shape == (2, 128, 128)
    assert z["depth_front"].dtype == np.float32
    assert list(z["bones"]) == ["pelvis", "femur_left"]
    g = XrayGeometry.from_json(str(z["geometry"]))
    assert g.detector_shape == (128, 128)
    assert z["masks"][0].sum() > 60 and z["masks"][1].sum() > 20
    # the pelvis here is two blobs left and right of the midline: both must be in its mask
    cols = np.nonzero(z["masks"][0].any(0))[0]
    assert cols.min() < 60 and cols.max() > 68
    m = z["masks"].astype(bool)
    assert np.all(z["depth_front"][m] > 700) and np.all(z["depth_back"][m] > z["depth_front"][m])
    assert (out / "preview.png").stat().st_size > 10_000
    assert sorted(p.name for p in out.iterdir()) == ["preview.png", "render.npz"]


def test_render_with_a_geometry_file(case, tmp_path, capsys):
    ct, lab, _ = case
    gpath = tmp_path / "g.json"
    gpath.write_text(standard_ap_geometry((0, 0, 0), size=40, detector_mm=200.0).to_json())  # 5 mm pixels
    code, _, _ = run(capsys, "render", "--ct", ct, "--labels", lab, "--bones", "femur_left", "--geometry", gpath,
                     "--out", tmp_path / "r")
    assert code == 0
    assert np.load(tmp_path / "r" / "render.npz")["masks"].shape == (1, 40, 40)


def _error_cases(case, tmp_path):
    ct, lab, vol = case
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage")
    other = make_volume((64, 64, 32))
    other_path = tmp_path / "other.nii.gz"
    sitk.WriteImage(sitk.Cast(other.to_sitk(), sitk.sitkUInt8), str(other_path))
    g = standard_ap_geometry((0, 0, 0), size=64).to_dict()
    missing = dict(g)
    missing.pop("principal_point_px")
    nonrigid = dict(g, world_to_source=np.diag([1.0, 1.0, 3.0, 1.0]).tolist())
    behind = dict(g)
    behind["world_to_source"] = np.array(g["world_to_source"])
    behind["world_to_source"][2, 3] = 10.0
    behind["world_to_source"] = behind["world_to_source"].tolist()
    files = {}
    for name, d in (("missing", missing), ("nonrigid", nonrigid), ("behind", behind)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(d))
    base = ["render", "--out"]
    return [
        ("not found", ["--ct", tmp_path / "nope.nii.gz", "--labels", lab]),
        ("cannot read", ["--ct", corrupt, "--labels", lab]),
        ("not on the CT's grid", ["--ct", ct, "--labels", other_path]),
        ("'femur_right'.*no voxel", ["--ct", ct, "--labels", lab, "--bones", "femur_right"]),
        ("missing key.*principal_point_px", ["--ct", ct, "--labels", lab, "--geometry", files["missing"]]),
        ("not rigid", ["--ct", ct, "--labels", lab, "--geometry", files["nonrigid"]]),
        ("behind the X-ray source", ["--ct", ct, "--labels", lab, "--bones", "femur_left", "--geometry", files["behind"]]),
        ("both --ct and --labels", ["--ct", ct]),
    ], base


ERROR_CASES = ["missing-ct", "corrupt-ct", "other-grid", "absent-bone", "geometry-key", "geometry-nonrigid",
               "geometry-behind", "ct-without-labels"]


@pytest.mark.parametrize("i", range(len(ERROR_CASES)), ids=ERROR_CASES)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(i, case, tmp_path, capsys):
    import re

    cases, base = _error_cases(case, tmp_path)
    pattern, args = cases[i]
    out = tmp_path / "out"
    code, _, err = run(capsys, *base, out, *args)
    assert code == 2, (pattern, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("3ddx: error: "), err
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert not out.exists()


def test_console_script_error_has_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "threeddx.cli", "render", "--ct", str(tmp_path / "x.nii"), "--labels",
         str(tmp_path / "y.nii"), "--out", str(tmp_path / "o")],
        capture_output=True, encoding="utf-8", errors="replace",
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_bundled_chest_ct(tmp_path, capsys):
    """The README's first render: the real chest CT, scapulae and spine, AP display convention."""
    out = tmp_path / "chest"
    code, stdout, _ = run(capsys, "render", "--size", 64, "--out", out)
    assert code == 0
    z = np.load(out / "render.npz")
    assert list(z["bones"]) == ["scapula_left", "scapula_right", "spine"]
    masks = z["masks"].astype(bool)
    col = lambda m: np.nonzero(m)[1].mean()  # noqa: E731
    # the patient's left scapula is on the image's right, the spine in the middle
    assert col(masks[0]) > col(masks[2]) > col(masks[1])
    # scapulae are posterior: their front faces are deeper than the spine's front face on average
    f = z["depth_front"]
    assert f[0][masks[0]].mean() > f[2][masks[2]].mean()


@pytest.mark.parametrize(
    "argv,line",
    [
        (["predict", "x.png", "--chekpoint", "y", "--out", "o"],
         "3ddx: error: 3ddx predict: no option --chekpoint (did you mean --checkpoint?) (see 3ddx predict --help)"),
        (["predict"], "3ddx: error: 3ddx predict: the following arguments are required: image, --out"),
        (["evaluate", "--data", "d", "--out", "o", "--device", "tpu"],
         "3ddx: error: --device must be cpu, cuda, cuda:N, mps or auto, got 'tpu'"),
        (["simulate", "--out", "o", "--subjects", "5-2"],
         "3ddx: error: --subjects '5-2': the range 5-2 runs backwards (write 2-5)"),
        (["train", "--config", str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), "--faces", "3",
          "--out", "o"], "3ddx: error: config: model.faces must be an even number of at least 2, got 3"),
    ],
    ids=["typo", "missing", "device", "backwards-range", "odd-faces"],
)
def test_command_line_mistakes_get_one_line(argv, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
    assert list(tmp_path.iterdir()) == []


def test_the_inference_path_never_loads_the_training_module():
    """predict, evaluate and demo (and a prediction) in a fresh interpreter: threeddx.training.train stays unloaded."""
    code = (
        "import sys, numpy as np\n"
        "import threeddx.cli, threeddx.apps.predict, threeddx.evaluation.evaluate, threeddx.apps.demo\n"
        "from threeddx.inference.predictor import Predictor\n"
        "from threeddx.apps.demo import example_path\n"
        "p = Predictor(None)\n"
        "with np.load(example_path()) as z: img = z['image']\n"
        "assert p.infer(img, p.geometry).any_found\n"
        "print(sorted(m for m in sys.modules if m.startswith('threeddx.training.train')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("case", ["complex NPY", "overflowing NPY", "undecodable DICOM"])
def test_odd_files_give_exactly_one_line(case, tmp_path, capsys):
    """Errors whose text came from a library (numpy's cast warnings, the decoders' multi-line messages)
    are one line too."""
    if case == "complex NPY":
        path = tmp_path / "c.npy"
        np.save(path, np.ones((64, 64), np.complex64))
        want = "pixels of type complex64"
    elif case == "overflowing NPY":
        path = tmp_path / "o.npy"
        np.save(path, np.full((64, 64), 1e300))
        want = "beyond float32's range"
    else:  # pixel data under a transfer syntax no decoder knows (pydicom's and GDCM's messages span lines)
        from pydicom.dataset import FileDataset, FileMetaDataset

        path = tmp_path / "odd.dcm"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", "1.2.3.4.5"
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: video, never a radiograph
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored = 1, "MONOCHROME2", 8, 8
        ds.HighBit, ds.PixelRepresentation, ds.DistanceSourceToDetector = 7, 0, 1000.0
        ds.ImagerPixelSpacing = [3.0, 3.0]
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(range(256)) * 16])
        ds["PixelData"].is_undefined_length = True
        ds.save_as(str(path), enforce_file_format=True)
        want = "cannot decode its pixel data"
    code, _, err = run(capsys, "predict", path, "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and want in lines[0], err
    assert not (tmp_path / "out").exists()


def test_a_library_warning_is_one_line(tmp_path, capsys, monkeypatch):
    """A warning a library raises while a command runs is printed as one line, not with its source line."""
    import argparse
    import warnings

    from threeddx.cli import build_parser
    from threeddx.errors import InputError

    def warn_then_fail(args):
        warnings.warn("a library's warning\nwith a second line", UserWarning)
        raise InputError("stopped")

    def parser():
        p = build_parser()
        for sub in next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices.values():
            sub.set_defaults(func=warn_then_fail)
        return p

    monkeypatch.setattr("threeddx.cli.build_parser", parser)
    code, _, err = run(capsys, "view", tmp_path)
    assert code == 2 and err.strip().splitlines() == [
        "3ddx: warning: a library's warning with a second line (UserWarning)", "3ddx: error: stopped"]


@pytest.mark.parametrize("text, want", [
    ("ssm:\n  modes: x\n", "ssm.modes must be a whole number"),
    ("ssm:\n  reg: .nan\n", "ssm.reg"),
    ("ssm:\n  max_points: 5\n", "ssm.max_points"),
    ("ssm: 5\n", "expected an 'ssm' section"),
])
def test_bad_ssm_settings_are_one_line(text, want, tmp_path, capsys):
    cfg = tmp_path / "ssm.yaml"
    cfg.write_text(text)
    example = Path(__file__).resolve().parents[1] / "src" / "threeddx" / "data" / "example" / "llp26-10_p00.npz"
    code, _, err = run(capsys, "predict", example, "--out", tmp_path / "out", "--mesh", "ssm", "--ssm-config", cfg)
    assert code == 2 and len(err.strip().splitlines()) == 1 and want in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("item, want", [("fat_mm=1e400", "outside"), ("fat_mm=5000", "outside"), ("zip=7", "outside"),
                                        ("fat_mm=abc", "not a number")])
def test_body_overrides_are_bounded(item, want, tmp_path, capsys):
    code, _, err = run(capsys, "simulate", "--out", tmp_path / "out", "--subjects", "0", "--body", item)
    assert code == 2 and len(err.strip().splitlines()) == 1 and want in err, err


def test_a_png_of_any_shape_gets_its_geometry_from_two_numbers(tmp_path, capsys):
    """Without a geometry file a 1280x1024 PNG is refused with the options that fix it; --pixel-mm (and --sdd-mm)
    build its geometry; --sdd-mm alone or an impossible pixel size is one line."""
    import json

    from PIL import Image

    with np.load(Path(__file__).resolve().parents[1] / "src" / "threeddx" / "data" / "example" / "llp26-10_p00.npz") as z:
        img = np.clip(z["image"], 0, 1)
    k = 1024 // img.shape[0]
    wide = np.zeros((1024, 1280), np.uint16)
    wide[:, 128:1152] = np.kron(img, np.ones((k, k))) * 65535  # the example at 1024 px, 0.42 mm pixels, padded sideways
    png = tmp_path / "wide.png"
    Image.fromarray(wide).save(png)
    code, _, err = run(capsys, "predict", png, "--out", tmp_path / "a")
    assert code == 2 and "give --geometry G.json, or --pixel-mm MM (and --sdd-mm MM)" in err
    code, _, err = run(capsys, "predict", png, "--out", tmp_path / "b", "--pixel-mm", 430 / 1024, "--mesh", "dual")
    assert code == 0, err
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["geometry_from"] == "--pixel-mm" and not s["missing"]
    for args, want in ((["--sdd-mm", "1100"], "--sdd-mm needs --pixel-mm"), (["--pixel-mm", "50"], "outside 0.01-10")):
        code, _, err = run(capsys, "predict", png, "--out", tmp_path / "c", *args)
        assert code == 2 and want in err and len(err.strip().splitlines()) == 1, err


def test_inspect_says_what_it_reads_and_assumes(tmp_path, capsys):
    """`3ddx inspect`: the example's geometry from its file, the hip found; noise with the model's geometry, not
    found and the pose warning; --json the same facts; nothing written."""
    import json

    example = Path(__file__).resolve().parents[1] / "src" / "threeddx" / "data" / "example" / "llp26-10_p00.npz"
    code, out, _ = run(capsys, "inspect", example)
    assert code == 0 and "(geometry from file)" in out and "hip anatomy: found" in out
    assert "iso-centre:  820 mm from the source (declared)" in out  # its geometry states the hips' distance
    with np.load(example) as z:  # the same geometry without that distance: the default's, and said so
        geometry = json.loads(str(z["geometry"]))
        np.save(tmp_path / "x.npy", z["image"])
    geometry.pop("source_to_isocenter_mm")
    (tmp_path / "g.json").write_text(json.dumps(geometry))
    code, out, _ = run(capsys, "inspect", tmp_path / "x.npy", "--geometry", tmp_path / "g.json")
    assert code == 0 and "assumed: the patient on the table, 180 mm above the detector" in out
    for made in ("x.npy", "g.json"):
        (tmp_path / made).unlink()
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).random((128, 128)).astype(np.float32))
    code, out, _ = run(capsys, "inspect", noise, "--json")
    r = json.loads(out)
    assert code == 0 and r["geometry_from"] == "checkpoint" and r["hip_found"] is False
    assert r["pose"] == "the model's nominal AP pose" and any("nominal pose" in w for w in r["warnings"])
    assert r["isocenter"] == "the model's nominal geometry's" and r["intensity_steps"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.npy"]


def test_the_checkpoint_help_names_every_released_model():
    """One help text for --checkpoint (predict, evaluate, inspect, serve), kept in step with the released names."""
    from threeddx.cli._common import CHECKPOINT_HELP
    from threeddx.network.checkpoint import RELEASED

    assert all(name in CHECKPOINT_HELP for name in RELEASED)
