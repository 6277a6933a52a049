"""Many radiographs at once (threeddx.apps.batch): a folder, a CSV or a glob; one result each; resumable."""
import csv
import json
import shutil

import numpy as np

from threeddx.cli import main
from threeddx.apps.demo import example_path


def _study(tmp_path):
    """Three 'radiographs': the example twice (NPZ, and NPY with its geometry JSON) and a broken PNG."""
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(example_path(), study / "hip one.npz")  # a space: the result's name is made safe
    with np.load(example_path()) as z:
        np.save(study / "hip-two.npy", z["image"])
        (tmp_path / "hip-two.json").write_text(str(z["geometry"]))
    (study / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return study


def test_a_folder_is_predicted_once_and_a_rerun_skips_what_is_done(tmp_path, capsys):
    study = _study(tmp_path)
    table = tmp_path / "study.csv"
    table.write_text("image,geometry\nstudy/hip one.npz,\nstudy/hip-two.npy,hip-two.json\nstudy/broken.png,\n")
    out = tmp_path / "out"
    assert main(["predict", str(table), "--out", str(out), "--mesh", "dual"]) == 0
    assert "2 of 3 images written" in capsys.readouterr().out
    assert (out / "hip_one" / "summary.json").is_file() and (out / "hip-two" / "summary.json").is_file()
    rows = list(csv.DictReader(open(out / "batch.csv")))
    assert {(r["result"], r["bone"]) for r in rows} == {(n, b) for n in ("hip_one", "hip-two")
                                                        for b in ("pelvis", "femur_left", "femur_right")}
    assert all(r["found"] == "True" and r["mesh_method"] == "dual" for r in rows)
    # one row per image of the hip's measurements; the two copies of one exposure measure the same
    from threeddx.apps.batch import MEASUREMENT_COLUMNS

    measured = {r["result"]: r for r in csv.DictReader(open(out / "measurements.csv"))}
    assert set(measured) == {"hip_one", "hip-two"} and list(measured["hip_one"]) == list(MEASUREMENT_COLUMNS)
    for col in MEASUREMENT_COLUMNS[2:-2]:
        assert float(measured["hip_one"][col]) == float(measured["hip-two"][col]), col
    assert "femur_left.version_deg" in measured["hip_one"]["inferred"]
    (problem,) = list(csv.DictReader(open(out / "problems.csv")))
    assert problem["image"].endswith("broken.png") and "cannot read image" in problem["problem"]
    stamp = (out / "hip_one" / "summary.json").stat().st_mtime_ns
    assert main(["predict", str(table), "--out", str(out), "--mesh", "dual"]) == 0  # resumed: nothing redone
    assert (out / "hip_one" / "summary.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "batch.json").read_text())["images"] == 3


def test_a_folder_and_its_warnings_and_an_out_that_is_no_batch(tmp_path, capsys):
    """A folder: every image in it; an image without a geometry of its own is predicted in the model's nominal
    geometry and batch.csv carries that warning; an --out holding other files is refused, untouched."""
    study = _study(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", str(study), "--out", str(out), "--mesh", "dual"]) == 0
    problems = [r["image"].rsplit("/", 1)[-1] for r in csv.DictReader(open(out / "problems.csv"))]
    assert problems == ["broken.png"]
    two = [r for r in csv.DictReader(open(out / "batch.csv")) if r["result"] == "hip-two"]
    assert len(two) == 3 and all("nominal pose is assumed" in r["warnings"] for r in two)
    assert main(["predict", str(study / "*.npz"), "--out", str(tmp_path / "glob"), "--mesh", "dual"]) == 0
    assert [p.name for p in (tmp_path / "glob").iterdir() if p.is_dir()] == ["hip_one"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["predict", str(study), "--out", str(other)]) == 2
    assert "not a 3ddx batch" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"
