"""One bone registry (threeddx.bones): a bone registered in that one place flows through every stage.

The test registers the two hemipelves as bones of their own (LLP26 has them as parts) and runs them through
simulate (a tiny sample), one training epoch, predict and evaluate; every list the package keeps of bones is a
view of the registry, so nothing else is edited.
"""
import csv
import json

import numpy as np
import pytest

from threeddx import bones
from threeddx.bones import Bone

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
TOY = ("hemipelvis_left", "hemipelvis_right")


@pytest.fixture
def hemipelves():
    bones.register(Bone("hemipelvis_left", (0.6, 0.3, 0.1), ("hemipelvis-left",), ("hip_left",),
                        mirror="hemipelvis_right", group="hemipelvis"))
    bones.register(Bone("hemipelvis_right", (0.1, 0.3, 0.6), ("hemipelvis-right",), ("hip_right",),
                        mirror="hemipelvis_left", group="hemipelvis"))
    yield TOY
    for b in TOY:
        bones.unregister(b)


def test_the_derived_tables_are_views_of_the_registry(hemipelves):
    from threeddx.simulator.anatomy import BONE_PARTS
    from threeddx.evaluation.evaluate import summarise
    from threeddx.inference.hipjoint import JOINTS
    from threeddx.io import BONE_GROUPS
    from threeddx.network.preprocess import mirror_partners

    assert BONE_PARTS["hemipelvis_left"] == ("hemipelvis-left",) and "hemipelvis_left" in bones.simulated()
    assert BONE_GROUPS["hemipelvis_left"] == ("hip_left",) and "pelvis" in BONE_GROUPS
    assert mirror_partners(["hemipelvis_left", "femur_left", "hemipelvis_right", "femur_right"]) == [2, 3, 0, 1]
    assert dict(JOINTS) == {"femur_left": "hjc_left", "femur_right": "hjc_right"}
    assert np.allclose(bones.colour("hemipelvis_right"), (0.1, 0.3, 0.6))
    assert "hemipelvis" in summarise([], list(TOY)) and "femur" not in summarise([], list(TOY))
    with pytest.raises(ValueError, match="did you mean 'hemipelvis_left'"):
        bones.get("hemipelvis_lft")
    with pytest.raises(ValueError, match="bone name"):
        bones.register(Bone("../x", (0, 0, 0)))


def test_a_registered_bone_is_simulated_trained_predicted_and_evaluated(hemipelves, tmp_path):
    from threeddx.evaluation.evaluate import evaluate
    from threeddx.inference.predictor import Predictor
    from threeddx.apps.predict import predict_file
    from threeddx.simulator.simulate import SimSettings, simulate
    from threeddx.training.train import load_config, train

    data = tmp_path / "sim"
    names = [*TOY, "femur_left", "femur_right"]
    simulate(SimSettings(subjects=[0, 2], poses=1, size=32, seed=0, voxel_mm=3.0, bones=names), data, progress=False)
    with np.load(next((data / "samples").rglob("*.npz"))) as z:
        assert list(z["bones"]) == names and z["masks"][0].any() and z["masks"][1].any()

    cfg = load_config(REPO / "configs" / "tiny.yaml", {"data": {"root": str(data), "size": 32, "bones": names},
                                                        "out": str(tmp_path / "run"),
                                                        "optim": {"epochs": 1, "batch_size": 1},
                                                        "model": {"width": 8, "levels": 2}})
    train(cfg, progress=False)
    ckpt = tmp_path / "run" / "last.pt"

    sample = next((data / "samples").rglob("*.npz"))
    s = predict_file(sample, Predictor(ckpt), tmp_path / "pred", mesh_method="dual", force=True, report=True)
    assert set(s["checks"]) == set(names)
    written = {p.stem for p in (tmp_path / "pred").glob("*.stl")}
    assert written == {b for b in names if b in s["bones"]}
    assert s["checks"]["femur_left"]["hip_anchor"]["skipped"]  # no pelvis among the bones: nothing to anchor to

    evaluate(data, tmp_path / "eval", ckpt, split="val", mesh_method="dual", progress=False)
    with open(tmp_path / "eval" / "results.csv", newline="") as f:
        assert {r["bone"] for r in csv.DictReader(f)} == set(names)  # a row per bone (an untrained net: maybe missing)
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())["bones"]
    assert set(summary) == {*names, "femur", "hemipelvis"}  # each registered group pooled
