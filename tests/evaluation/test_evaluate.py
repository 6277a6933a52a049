"""evaluate: the oracle and a checkpoint on a simulated split, its files and table."""
import csv
import json

import numpy as np
import pytest


def test_evaluate_oracle_and_checkpoint(small_sim, tiny_ckpt, tmp_path):
    from threeddx.evaluation.evaluate import evaluate

    dual = evaluate(small_sim, tmp_path / "oracle", split="val", oracle=True, limit=2, progress=False)
    front = evaluate(small_sim, tmp_path / "front", split="val", oracle=True, mesh_method="front", limit=2, progress=False)
    for bone in ("pelvis", "femur_left"):
        assert dual["bones"][bone]["n"] == 2
        assert front["bones"][bone]["assd_mean"] > dual["bones"][bone]["assd_mean"] + 1.0
    md = (tmp_path / "oracle" / "results.md").read_text()
    assert "pelvis ASSD" in md and "2 images of 1 subjects" in md
    rows = (tmp_path / "oracle" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3
    # the oracle's meshes sit where the truth is: the best shift along the beam is ~0 and changes nothing
    for r in csv.DictReader(open(tmp_path / "oracle" / "results.csv")):
        assert abs(float(r["beam_shift_mm"])) < 1.0, r
        assert float(r["hd95_beam_aligned"]) == pytest.approx(float(r["hd95"]), abs=0.5), r
    net = evaluate(small_sim, tmp_path / "net", tiny_ckpt, split="val", limit=1, progress=False)
    assert net["images"] == 1 and set(net["bones"]) >= {"pelvis", "femur"}


def test_evaluate_on_a_local_dask_cluster_gives_the_one_process_tables(small_sim, tmp_path):
    """Images as Dask tasks (two worker processes, each loading the model once): the same rows, in order
    (equal up to float rounding: a worker's torch runs on one thread, this process's on two). The femurs'
    hip-joint anchoring fits a shape model whose discrete steps (trimming, closest faces) turn that rounding
    into up to ~0.02 mm of shift (1e-5 mm of noise on the pelvis points does the same), so the femurs'
    figures agree to 0.1 mm / 1 %; the pelvis's to 0.1 % (its HD95 is a percentile of sampled distances:
    rounding can swap which sample it is, 0.07 % of its SD with the mirrored view's two-image batch)."""
    from threeddx.evaluation.evaluate import evaluate

    # the network's own meshes (not the released model's shape-model pelvis: its fit's discrete steps would
    # turn the rounding into the femurs' 1 % there too)
    a = evaluate(small_sim, tmp_path / "one", "dualface", split="train", limit=2, progress=False, mesh_method="dual")
    b = evaluate(small_sim, tmp_path / "dask", "dualface", split="train", limit=2, progress=False, workers=2,
                 mesh_method="dual")
    assert a["images"] == b["images"] == 2
    for bone, row in a["bones"].items():
        tol = dict(rel=1e-3, abs=1e-4) if bone == "pelvis" else dict(rel=1e-2, abs=0.1)
        for key, value in row.items():
            assert b["bones"][bone][key] == (value if value is None else pytest.approx(value, **tol)), (bone, key)
    ra, rb = (list(csv.DictReader(open(tmp_path / d / "results.csv"))) for d in ("one", "dask"))
    assert [(r["sample_id"], r["bone"], r["status"]) for r in ra] == [(r["sample_id"], r["bone"], r["status"]) for r in rb]


def test_mirrored_patients_need_a_network(small_sim, tmp_path):
    """(What mirroring does to a prediction is tests/inference/test_inference.py's; a network's full evaluation of a
    mirrored patient is benchmarks/mirror.py's: an untrained network's masks cover the image, and scoring
    them takes minutes.)"""
    from threeddx.errors import InputError
    from threeddx.evaluation.evaluate import evaluate

    with pytest.raises(InputError, match="not with --oracle"):
        evaluate(small_sim, tmp_path / "x", split="val", oracle=True, mirrored=True, progress=False)
    assert not (tmp_path / "x").exists()


def test_oracle_with_four_faces_and_the_seen_protocol(four_face_sim, tmp_path):
    """The oracle meshes the inner faces; protocol (b) is scored beside (a). (What K = 4 buys at a real
    resolution is benchmarks/faces.py's; at this test's 32 px the pixels, not the faces, limit it.)"""
    from threeddx.errors import InputError
    from threeddx.evaluation.evaluate import evaluate

    four = evaluate(four_face_sim[4], tmp_path / "k4", split="train", oracle=True, faces=4, seen=True,
                    bones=["pelvis"], progress=False)
    p4 = four["bones"]["pelvis"]
    assert four["faces"] == 4 and four["protocols"] == ["field of view", "seen by the faces"] and p4["n"] == 1
    assert p4["hd95_pooled_mean"] <= p4["hd95_mean"] and p4["assd_seen_mean"] <= p4["assd_mean"] + 0.05
    md = (tmp_path / "k4" / "results.md").read_text()
    assert "oracle (GT depths, 4 faces)" in md and "(b) seen by its faces" in md and "HD95 pooled" in md
    with pytest.raises(InputError, match="--faces 4"):
        evaluate(four_face_sim[2], tmp_path / "x", split="train", oracle=True, faces=4, progress=False)
    with pytest.raises(InputError, match="oracle's"):
        evaluate(four_face_sim[2], tmp_path / "y", "dualface", split="train", faces=4, progress=False)


def test_the_oracles_measurements_against_the_truths(small_sim, tmp_path):
    """evaluate --measure: per image and measure the predicted, true and error values, and per measure the
    MAE, bias and limits of agreement. The oracle (true maps, 64 px) reads the head's size and the
    acetabulum's angles within a few units: the pipeline measures what the truth measures."""
    from threeddx.evaluation.evaluate import MEASURE_COLUMNS, evaluate

    s = evaluate(small_sim, tmp_path / "m", split="val", oracle=True, limit=2, progress=False, measure=True)
    rows = list(csv.DictReader(open(tmp_path / "m" / "measurements.csv")))
    assert list(rows[0]) == list(MEASURE_COLUMNS)
    from threeddx.inference.measure import MEASURES

    per_image = 2 * len(MEASURES["femur"]) + 2 * len(MEASURES["acetabulum"]) + len(MEASURES["pelvis"])
    assert len(rows) == 2 * per_image and all(r["status"] == "ok" for r in rows), rows
    m = s["measurements"]
    assert m["femur.head_diameter_mm"]["n"] == 4 and m["femur.head_diameter_mm"]["mae"] < 3.0
    assert m["acetabulum.acetabular_inclination_deg"]["mae"] < 5.0
    for stats in m.values():
        assert stats["loa_low"] <= stats["bias"] <= stats["loa_high"]


def test_a_marker_trial_reads_the_ball_in_every_image(small_sim, tmp_path):
    """evaluate with a MarkerTrial: each image made at a detector's resolution with a ball beside the right
    trochanter at the hips' depth; the ball is read (its depth error per row) and places the bones; the
    oracle is refused (a marker tests a network's placement); read="truth" uses the true ball (no reading error)."""
    from threeddx.errors import InputError
    from threeddx.evaluation.evaluate import MarkerTrial, evaluate

    evaluate(small_sim, tmp_path / "m", "dualface", split="val", limit=1, progress=False,
             marker=MarkerTrial(render_px=512))
    rows = list(csv.DictReader(open(tmp_path / "m" / "results.csv")))
    err = {float(r["marker_depth_error_mm"]) for r in rows}
    assert len(err) == 1 and abs(err.pop()) < 15.0  # one ball per image, read within a few mm at 512 px
    evaluate(small_sim, tmp_path / "t", "dualface", split="val", limit=1, progress=False,
             marker=MarkerTrial(render_px=512, read="truth"))
    rows = list(csv.DictReader(open(tmp_path / "t" / "results.csv")))
    assert {float(r["marker_depth_error_mm"]) for r in rows} == {0.0}  # read perfectly: its true centre
    with pytest.raises(InputError, match="unknown marker reading 'truths'"):
        MarkerTrial(read="truths")
    with pytest.raises(InputError, match="not with --oracle"):
        evaluate(small_sim, tmp_path / "o", oracle=True, split="val", limit=1, progress=False, marker=MarkerTrial())


@pytest.fixture(scope="module")
def on_table_sim(tmp_path_factory):
    """Test subject 10 (of the test split) lying on the table, 2 poses, 64 px."""
    from threeddx.simulator.simulate import SimSettings, simulate

    out = tmp_path_factory.mktemp("on_table")
    simulate(SimSettings(subjects=[10], poses=2, size=64, seed=0, voxel_mm=2.0, on_table=True,
                         bones=["pelvis", "femur_left", "femur_right"]), out, progress=False)
    return out


def test_on_the_table_the_hips_lie_where_the_back_carries_them_and_evaluate_declares_it(on_table_sim, small_sim,
                                                                                       tmp_path):
    """simulate --on-table: each sample's hips lie its body's back in front of the table top (within the pose's
    tilt about the iso-centre 30 mm above them), and it stores the table and the body's thickness; evaluate
    --declare gives the predictor the iso-centre the rule makes of them; a sample not on the table is refused."""
    from threeddx.errors import InputError
    from threeddx.evaluation.evaluate import declared_geometry, evaluate
    from threeddx.geometry import XrayGeometry, isocenter_from_table

    for f in sorted(on_table_sim.glob("samples/*/*.npz")):
        with np.load(f) as z:
            geo = XrayGeometry.from_json(str(z["geometry"]))
            hips = float(geo.to_source(np.zeros((1, 3)))[0, 2])
            table, back = float(z["source_to_table_mm"]), float(z["hips_above_table_mm"])
            assert abs(hips - (table - back)) < 6.0
            assert geo.isocenter_distance == 820.0  # the sample's default declares nothing of this body
            thick = float(z["body_thickness_mm"])
            assert declared_geometry(z, geo, "table").isocenter_distance == isocenter_from_table(table)
            assert declared_geometry(z, geo, "table+thickness").isocenter_distance == pytest.approx(
                isocenter_from_table(table, body_thickness_mm=thick))
            # the thickness rule is within its residual of this body's truth; the constant need not be
            assert abs(declared_geometry(z, geo, "table+thickness").isocenter_distance - (table - back)) < 20.0
    evaluate(on_table_sim, tmp_path / "d", "dualface", split="test", limit=1, progress=False, declare="table+thickness")
    assert json.loads((tmp_path / "d" / "results.json").read_text())["images"] == 1
    with pytest.raises(InputError, match="was not simulated --on-table") as e:
        evaluate(small_sim, tmp_path / "x", "dualface", split="val", limit=1, progress=False, declare="table")
    assert "\n" not in str(e.value) and not (tmp_path / "x").exists()
