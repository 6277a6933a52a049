"""evaluate: the oracle and a checkpoint on a simulated split, its files and table."""


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
