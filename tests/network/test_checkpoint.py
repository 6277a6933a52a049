"""Checkpoints: loading never runs code; plain-data RNG states round-trip; release export."""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from threeddx.network.checkpoint import (
    export_release,
    load_checkpoint,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from threeddx.errors import InputError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "src" / "threeddx" / "data" / "example" / "llp26-10_p00.npz"


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(tmp_path: Path, hidden_in_release: bool) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    if hidden_in_release:
        ck = load_checkpoint(resolve_checkpoint("dualface"))
        ck["release"]["note"] = _Payload(marker)  # a copy of the released model with a payload inside
    else:
        ck = _Payload(marker)
    path = tmp_path / "evil.pt"
    torch.save(ck, path)
    return path, marker


@pytest.mark.parametrize("hidden_in_release", [False, True], ids=["bare", "inside-released-model"])
def test_malicious_pickle_is_refused_before_anything_runs(tmp_path, hidden_in_release):
    path, marker = _malicious(tmp_path, hidden_in_release)
    with pytest.raises(InputError, match="refused checkpoint .*evil.pt.*never loads code"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["predict", str(EXAMPLE), "--checkpoint", "{ck}", "--out", "{tmp}/out"],
        ["evaluate", "--checkpoint", "{ck}", "--data", "{tmp}/nodata", "--out", "{tmp}/out"],
        ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--resume", "{ck}", "--data", "{tmp}/nodata",
         "--out", "{tmp}/out"],
    ],
    ids=["predict", "evaluate", "train-resume"],
)
def test_cli_refuses_malicious_checkpoint_in_one_line(tmp_path, command):
    path, marker = _malicious(tmp_path, hidden_in_release=True)
    args = [a.format(ck=path, tmp=tmp_path) for a in command]
    r = subprocess.run([sys.executable, "-m", "threeddx.cli", *args], capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "the checkpoint's payload ran"
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_rng_state_round_trips_as_plain_data(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint({"format": 1, "rng": rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])  # weights_only=True inside
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_release_export_is_slim_and_half(tmp_path):
    state = {"format": 1, "model": {"w": torch.ones(3), "n": torch.tensor(2)}, "optimizer": {"x": 1},
             "model_config": {}, "bones": ["pelvis"]}
    save_checkpoint(state, tmp_path / "full.pt")
    export_release(tmp_path / "full.pt", tmp_path / "rel.pt", info={"name": "t"})
    rel = load_checkpoint(tmp_path / "rel.pt")
    assert "optimizer" not in rel and rel["release"] == {"name": "t"}
    assert rel["model"]["w"].dtype == torch.float16 and rel["model"]["n"].dtype == torch.int64


@pytest.mark.parametrize("name", ["dualface", "dualface-128", "single"])
def test_released_models_load_safely(name):
    ck = load_checkpoint(resolve_checkpoint(name))
    assert ck["bones"] == ["pelvis", "femur_left", "femur_right"]


def test_bad_checkpoint_files(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(p)
    torch.save({"hello": 1}, p)
    with pytest.raises(InputError, match="not a 3ddx checkpoint"):
        load_checkpoint(p)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_the_typed_checkpoint_round_trips_and_names_what_is_missing(tmp_path):
    from threeddx.network.checkpoint import Checkpoint
    from threeddx.errors import InputError

    ck = load_checkpoint(resolve_checkpoint("dualface"))
    typed = Checkpoint.from_dict(ck, "dualface")
    assert typed.bones == ["pelvis", "femur_left", "femur_right"] and typed.faces == 2
    assert typed["model_config"] == ck["model_config"] and typed.get("casi_offset_mm", "none") == "none"
    assert typed.release["test"] and typed.threeddx_version
    again = Checkpoint.from_dict(typed.to_dict())
    assert again.geometry == typed.geometry and set(again.model) == set(typed.model)
    with pytest.raises(InputError, match="x.pt: a 3ddx checkpoint without geometry"):
        Checkpoint.from_dict({k: v for k, v in ck.items() if k != "geometry"}, "x.pt")


def test_the_release_meshing_rule_picks_the_lowest_validation_assd_per_bone():
    """scripts/release_mesh.py: per bone the mesher with the lower validation ASSD; dual ones are not recorded."""
    rule = _script("release_mesh")

    def results(pelvis, left, right):
        return {"bones": {b: {"assd_mean": v, "hd95_mean": 3 * v} for b, v in
                          (("pelvis", pelvis), ("femur_left", left), ("femur_right", right))}}

    chosen, evidence = rule.choose({"dual": results(3.9, 3.8, 5.0), "ssm": results(3.6, 3.9, 5.0)})
    assert chosen == {"pelvis": "ssm"}  # a tie (the right femur) keeps the first candidate
    assert evidence["pelvis"] == {"dual": {"assd": 3.9, "hd95": 11.7}, "ssm": {"assd": 3.6, "hd95": 10.8}, "chosen": "ssm"}
    assert evidence["femur_right"]["chosen"] == "dual"


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[2] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_release_replaces_only_its_own_section_of_the_model_card():
    """scripts/release.py: one model's marked section is replaced; the others and the hand-written notes stay; a new
    model's section goes before the trust notes."""
    release = _script("release")
    card = ("# Released models\n\nintro\n\n<!-- release:a -->\n## a.pt\nold a\n<!-- /release:a -->\n\n"
            "<!-- release:b -->\n## b.pt\nb, edited by hand\n<!-- /release:b -->\n\n## How far to trust them\n\nnotes\n")
    again = release.put_section(card, "a", ["<!-- release:a -->", "## a.pt", "new a", "<!-- /release:a -->"])
    assert "new a" in again and "old a" not in again and "b, edited by hand" in again and again.endswith("notes\n")
    added = release.put_section(again, "c", ["<!-- release:c -->", "## c.pt", "<!-- /release:c -->"])
    assert added.index("## b.pt") < added.index("## c.pt") < added.index("## How far to trust them")
    assert release.put_section(added, "c", ["<!-- release:c -->", "## c.pt", "<!-- /release:c -->"]) == added


def test_the_release_counts_its_data_from_the_manifest(tmp_path):
    release = _script("release")
    rows = ["sample_id,subject_id,split,pose"]
    for subject, split in (("llp26-00", "train"), ("llp26-01", "train"), ("llp26-02", "val"), ("llp26-10", "test"),
                           ("pca-000", "train"), ("pca-001", "train"), ("pca-002", "train")):
        rows += [f"{subject}_p{k:02d},{subject},{split},{k}" for k in range(4)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    text = release.describe_data(tmp_path)
    assert "(train 2, val 1, test 1;" in text and "plus 3 random shapes" in text and "4 seeded poses each (28 samples)" in text


def _renamed(tmp_path: Path, bones: list) -> Path:
    """A copy of the released model whose bone names are ``bones`` (loadable: plain data only)."""
    ck = load_checkpoint(resolve_checkpoint("dualface"))
    ck["bones"] = bones
    ck["model_config"]["bones"] = bones
    path = tmp_path / "renamed.pt"
    torch.save(ck, path)
    return path


TRAVERSING = {
    "parent folders": ["../../escape/x", "femur_left", "femur_right"],
    "absolute path": [None, "femur_left", "femur_right"],  # filled with tmp_path below
    "NUL": ["pel\x00vis", "femur_left", "femur_right"],
    "hidden file": [".pelvis", "femur_left", "femur_right"],
    "duplicate": ["pelvis", "pelvis", "femur_right"],
    "not a string": [7, "femur_left", "femur_right"],
}


@pytest.mark.parametrize("case", list(TRAVERSING))
def test_a_checkpoints_bone_names_never_become_paths_outside_the_output(tmp_path, case, capsys, monkeypatch):
    """Bone names become file names: a checkpoint whose names are paths, odd or doubled is refused in one
    line before anything is written, and nothing appears outside --out."""
    from threeddx.cli import main

    bones = list(TRAVERSING[case])
    if bones[0] is None:
        bones[0] = str(tmp_path / "abs" / "x")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    ck = _renamed(tmp_path, bones)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["predict", str(EXAMPLE), "--checkpoint", str(ck), "--out", str(work / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "bone" in lines[0] and "renamed.pt" in lines[0], lines
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, here or elsewhere


def test_a_traversing_checkpoint_is_refused_by_predict_and_serve_processes(tmp_path):
    """The attack itself, through the installed command: predict and serve refuse it in one line, no traceback."""
    import socket

    ck = _renamed(tmp_path, ["../../escape/x", "femur_left", "femur_right"])
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "threeddx.cli", "predict", str(EXAMPLE), "--checkpoint", str(ck),
                        "--out", str(work / "out")], capture_output=True, text=True, timeout=300, cwd=work)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "renamed.pt" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "escape").exists() and not (work / "out").exists()
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "threeddx.cli", "serve", "--checkpoint", str(ck), "--port", str(port),
                        "--jobs-dir", str(tmp_path / "jobs")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "renamed.pt" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not any((tmp_path / "jobs").iterdir())  # refused before any job folder was made


def test_a_checkpoints_per_bone_tables_name_only_its_bones(tmp_path):
    from threeddx.network.checkpoint import Checkpoint

    ck = load_checkpoint(resolve_checkpoint("dualface"))
    ck["mesh"] = {"../x": "ssm"}
    with pytest.raises(InputError, match="mesh names a bone the model does not have"):
        Checkpoint.from_dict(ck, "c.pt")
    ck = load_checkpoint(resolve_checkpoint("dualface"))
    ck["model_config"]["bones"] = ["a", "b", "c"]
    with pytest.raises(InputError, match="differ from the network"):
        Checkpoint.from_dict(ck, "c.pt")


def test_names_are_identifiers(tmp_path):
    from threeddx.io import check_name, named_path

    for ok in ("pelvis", "femur_left", "vertebrae_L1", "L5", "hip-joint"):
        assert named_path(tmp_path, ok, ".stl") == tmp_path / f"{ok}.stl"
    for bad in ("", "..", "../x", "a/b", "a\\b", "/abs", "C:x", "a.b", " pelvis", "x" * 65, "a\x00"):
        with pytest.raises(InputError, match="is not allowed"):
            check_name(bad, "here")


BAD_VALUES = {
    "mask threshold NaN": (lambda ck: ck.update(mask_threshold=float("nan")), "mask_threshold"),
    "mask threshold -1": (lambda ck: ck.update(mask_threshold=-1.0), "mask_threshold"),
    "infinite CASI offset": (lambda ck: ck.update(casi_offset_mm=float("inf")), "casi_offset_mm"),
    "negative CASI offset": (lambda ck: ck.update(casi_offset_mm=-300.0), "casi_offset_mm"),
    "SDD 1e9": (lambda ck: ck.update(geometry=ck["geometry"].replace('"source_to_detector_mm": 1000.0',
                                                                     '"source_to_detector_mm": 1e9')), "source_to_detector_mm"),
    "huge detector": (lambda ck: ck.update(geometry=re.sub(r'"detector_shape": \[\d+, \d+\]',
                                                          '"detector_shape": [100000, 100000]', ck["geometry"])),
                      "model grid"),
    "huge width": (lambda ck: ck["model_config"].update(width=10**6), "model_config.width"),
    "string width": (lambda ck: ck["model_config"].update(width="24"), "model_config.width"),
    "odd faces": (lambda ck: ck.update(faces=3), "faces"),
    "confidence of the wrong type": (lambda ck: ck["confidence"]["bones"]["pelvis"].update(centroid_sd="wide"),
                                     "centroid_sd"),
    "unknown mesher": (lambda ck: ck.update(mesh={"pelvis": "magic"}), "mesh.pelvis"),
    "negative placement SD": (lambda ck: ck.update(placement_sd_mm={"pelvis": -2.0}), "placement_sd_mm.pelvis"),
    "placement SD of another bone": (lambda ck: ck.update(placement_sd_mm={"tibia": 2.0}), "placement_sd_mm"),
    "tilt SD over 90 degrees": (lambda ck: ck.update(tilt_sd_deg={"femur_left": 120.0}), "tilt_sd_deg.femur_left"),
    "tilt SD of another bone": (lambda ck: ck.update(tilt_sd_deg={"tibia": 2.0}), "tilt_sd_deg"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_checkpoints_values_are_checked_before_anything_runs(tmp_path, case):
    from threeddx.network.checkpoint import Checkpoint

    change, key = BAD_VALUES[case]
    ck = load_checkpoint(resolve_checkpoint("dualface"))
    change(ck)
    with pytest.raises(InputError, match=key) as e:
        Checkpoint.from_dict(ck, "c.pt")
    assert str(e.value).startswith("c.pt") and "\n" not in str(e.value)


def test_a_casi_checkpoint_s_mean_depth_is_a_depth_from_the_source():
    """The CASI offset is the training bones' mean depth, mm from the source (838.8 for the ten-times data): it is
    accepted within the SDD's bounds (it was refused above 500 mm, so no CASI model could be evaluated)."""
    from threeddx.network.checkpoint import Checkpoint

    ck = load_checkpoint(resolve_checkpoint("dualface"))
    ck["casi_offset_mm"] = 838.8
    assert Checkpoint.from_dict(ck, "c.pt").casi_offset_mm == 838.8


def test_a_calibrated_placement_uncertainty_reaches_the_summary(tmp_path):
    """A checkpoint's placement_sd_mm (benchmarks/placement.py writes it) is each bone's in summary.json."""
    from threeddx.apps.demo import example_path
    from threeddx.inference.predictor import Predictor
    from threeddx.apps.predict import predict_file

    ck = load_checkpoint(resolve_checkpoint("dualface"))
    ck["placement_sd_mm"] = {"pelvis": 3.5, "femur_left": 9.25}
    ck["tilt_sd_deg"] = {"femur_left": 4.5, "femur_right": 4.5}
    path = tmp_path / "calibrated.pt"
    save_checkpoint(ck, path)
    with np.load(example_path()) as z:  # the example's geometry without its stated iso-centre distance
        arrays = {k: z[k] for k in z.files}
    geometry = json.loads(str(arrays["geometry"]))
    geometry.pop("source_to_isocenter_mm", None)
    arrays["geometry"] = np.array(json.dumps(geometry))
    np.savez(tmp_path / "example.npz", **arrays)
    s = predict_file(tmp_path / "example.npz", Predictor(path), tmp_path / "out", mesh_method="dual", report=False)
    assert s["bones"]["pelvis"]["placement_sd_mm"] == 3.5 and s["bones"]["femur_left"]["placement_sd_mm"] == 9.25
    assert "placement_sd_mm" not in s["bones"]["femur_right"]
    assert s["bones"]["femur_right"]["tilt_sd_deg"] == 4.5 and "tilt_sd_deg" not in s["bones"]["pelvis"]
    # a geometry that does not state the iso-centre: the default's body spread joins the network's SD
    assert s["isocenter_sd_mm"] == 25.7 and s["bones"]["pelvis"]["placement_total_sd_mm"] == pytest.approx(
        (3.5**2 + 25.7**2) ** 0.5, abs=0.01)


@pytest.mark.parametrize("declare, basis", [
    ({"source_to_isocenter_mm": 820.0}, "declared"),  # the hips' distance said outright
    ({"source_to_table_mm": 965.0}, "table"),
    ({"source_to_table_mm": 965.0, "body_thickness_mm": 260.0}, "table+thickness"),
    ({}, "assumed"),  # no distance anywhere: the model's default height
])
def test_the_total_placement_sd_adds_what_the_isocentre_rests_on(declare, basis, tmp_path):
    """summary.json's isocenter_sd_mm is threeddx.geometry.ISOCENTER_SD_MM of what the iso-centre distance rests
    on, and each calibrated bone's placement_total_sd_mm is it and the network's SD in quadrature."""
    import json

    import numpy as np

    from threeddx.apps.demo import example_path
    from threeddx.apps.predict import predict_file
    from threeddx.geometry import ISOCENTER_SD_MM
    from threeddx.inference.predictor import Predictor

    with np.load(example_path()) as z:
        geo = json.loads(str(z["geometry"]))
        np.save(tmp_path / "x.npy", z["image"])
    geo.pop("source_to_isocenter_mm", None)
    geo.update(declare)
    (tmp_path / "g.json").write_text(json.dumps(geo))
    s = predict_file(tmp_path / "x.npy", Predictor("dualface"), tmp_path / "out", geometry_path=tmp_path / "g.json",
                     mesh_method="dual", report=False, measure=False)
    assert s["isocenter_sd_mm"] == ISOCENTER_SD_MM[basis]
    net = s["bones"]["pelvis"]["placement_sd_mm"]
    assert s["bones"]["pelvis"]["placement_total_sd_mm"] == pytest.approx(np.hypot(net, ISOCENTER_SD_MM[basis]),
                                                                           abs=0.01)
