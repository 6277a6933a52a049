"""Training: configs, overfitting, exact resume, run folders, torchrun/DDP."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from threeddx.errors import InputError
from threeddx.training.train import Trainer, load_checkpoint, load_config, loss_override, train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("over, match", [
    ({"optim": {"lrr": 1}}, "unknown key 'optim.lrr'"),
    ({"loss": {"mode": "pooled"}}, "loss.mode"),
    ({"model": {"faces": 3}}, "model.faces must be an even number"),
    ({"model": {"faces": 0}}, "model.faces must be an even number"),
    ({"model": {"faces": 4}, "loss": {"mode": "single"}}, "single-depth baseline has one face"),
    ({"optim": {"lr": "fast"}}, "optim.lr must be a number"),
    ({"optim": {"lr": -0.1}}, "optim.lr must be a number in \\(0, 10\\)"),
    ({"optim": {"lr": float("nan")}}, "optim.lr"),
    ({"optim": {"batch_size": 0}}, "optim.batch_size"),
    ({"optim": {"epochs": -5}}, "optim.epochs"),
    ({"model": {"width": -8}}, "model.width"),
    ({"model": {"width": 10**400}}, "model.width"),
    ({"data": {"bones": ["../x", "femur_left"]}}, "data.bones.*is not allowed"),
    ({"data": {"bones": ["pelvis", "pelvis"]}}, "appears twice"),
    ({"augment": "yes"}, "augment must be true or false"),
    ({"optim": 5}, "'optim' must be a section"),
    ({"optim": {"lrr": 1}}, "did you mean 'optim.lr'"),
    ({"model": {"coords": "yes"}}, "model.coords must be true or false"),
    ({"model": {"preset": 5}}, "model.preset must be text or null"),
    ({"data": {"chain": 5}}, "data.chain must be a table or text or null"),
    ({"data": {"root": None}}, "data.root must be text"),
    ({"perf": {"prefetch": 0}}, "perf.prefetch"),
])
def test_config_errors(over, match):
    with pytest.raises(InputError, match=match):
        load_config(None, over)


def test_the_defaults_are_the_typed_sections():
    """One set of defaults: the trainer's dict is threeddx.training.trainconfig.TrainConfig's, section by section."""
    from dataclasses import asdict

    from threeddx.training.trainconfig import OptimConfig, TrainConfig

    assert load_config() == asdict(TrainConfig()) | {"device": "auto"}
    assert load_config()["optim"] == asdict(OptimConfig())


def test_loss_and_faces_overrides():
    assert loss_override("casi") == {"loss": {"mode": "dependent", "casi": True}}
    assert load_config(None, {"model": {"faces": 4}})["model"]["faces"] == 4


def tiny_cfg(root, out, **over):
    cfg = load_config(REPO / "configs" / "tiny.yaml", {"data": {"root": str(root)}, "out": str(out)})
    for k, v in over.items():
        cfg[k].update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    return cfg


@pytest.mark.slow  # 500 optimiser steps: 80-170 s on two cores; every loss's one-epoch run stays in the suite
def test_tiny_config_overfits_four_samples(small_sim, tmp_path):
    """Depth loss falls by 10x within a few hundred steps on a CPU."""
    cfg = tiny_cfg(small_sim, tmp_path, augment=False,
                   optim={"lr": 3e-3, "batch_size": 4, "schedule": "constant", "epochs": 1},
                   data={"limit_train": 4, "val_split": None}, model={"width": 16, "levels": 3})
    tr = Trainer(cfg, progress=False)
    batch = tr._to(next(iter(tr._loader(tr.train_set, False, 0))))
    losses = []
    for _ in range(500):
        loss, dl, _, _ = tr._batch_loss(batch)
        tr.opt.zero_grad()
        loss.backward()
        tr.opt.step()
        losses.append(dl.item())
    first, last = losses[0], min(losses[-20:])
    assert last < first / 10, (first, last)


KILL_AFTER_FIRST_EPOCH = """
import os, sys
import threeddx.training.train as t
orig = t.Trainer._save
def save(self, name):
    orig(self, name)
    if name == "last.pt" and self.epoch == 1:
        os.kill(os.getpid(), 9)  # a hard kill right after the first epoch's checkpoint
t.Trainer._save = save
from threeddx.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_training_resumes_exactly(small_sim, tmp_path):
    """Training 2 epochs equals training 1 epoch, being killed, and resuming for 1 (CPU)."""
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(small_sim), "--epochs", "2"]
    train(tiny_cfg(small_sim, a, optim={"epochs": 2}), progress=False)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, *args, "--out", str(b)], capture_output=True)
    assert killed.returncode == -9
    assert load_checkpoint(b / "last.pt")["epoch"] == 1
    resumed = subprocess.run([sys.executable, "-m", "threeddx.cli", *args, "--out", str(b), "--resume", str(b / "last.pt")],
                             capture_output=True, encoding="utf-8", errors="replace")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == 2 and ca["step"] == cb["step"]
    for k in ca["model"]:
        torch.testing.assert_close(ca["model"][k], cb["model"][k], rtol=0, atol=0)
    rows = lambda p: list(csv.DictReader(open(p / "metrics.csv")))  # noqa: E731
    ra, rb = rows(a), rows(b)
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]
    assert [r["val_absrel"] for r in ra] == [r["val_absrel"] for r in rb]
    # the checkpoint knows what it was trained for
    assert ca["bones"] == ["pelvis", "femur_left", "femur_right"]
    assert '"detector_shape": [64, 64]' in ca["geometry"]
    assert (a / "best.pt").exists() and any((a / "tb").iterdir())


@pytest.mark.parametrize("loss", ["single", "independent", "casi"])
def test_every_loss_trains_one_epoch(small_sim, tmp_path, loss):
    from threeddx.training.train import loss_override

    cfg = tiny_cfg(small_sim, tmp_path, optim={"epochs": 1})
    for k, v in loss_override(loss).items():
        cfg[k].update(v)
    rec = train(cfg, progress=False)
    assert rec["val_absrel"] < 0.5 and 0 <= rec["val_dice"] <= 1
    ck = load_checkpoint(tmp_path / "last.pt")
    assert (ck["casi_offset_mm"] is not None) == (loss == "casi")
    if loss == "casi":
        assert 700 < ck["casi_offset_mm"] < 950
    from threeddx.network.checkpoint import Checkpoint

    Checkpoint.from_dict(ck, "last.pt")  # what predict and evaluate check before they run it (a CASI model's
    # offset, a depth of ~840 mm, was refused there)


@pytest.mark.parametrize("size", [None, 32])
def test_casi_offset_is_the_mean_depth_of_the_stored_bones(small_sim, size):
    """The CASI prior is the mean of the front and back faces inside the masks, as the (unaugmented) items hold
    them at the model's size: computed from the files, so it needs no imaging chain and is the same every run."""
    from threeddx.training.dataset import SimulatedDataset
    from threeddx.training.train import casi_offset_prior

    ds = SimulatedDataset(small_sim, "train", size=size)
    s, n = 0.0, 0
    for i in range(len(ds)):
        item = ds[i]
        m = item["masks"] > 0.5
        s += float(item["depth_front"][m].double().sum() + item["depth_back"][m].double().sum())
        n += 2 * int(m.sum())
    assert n > 0
    assert casi_offset_prior(ds) == pytest.approx(s / n, rel=1e-9)
    chained = SimulatedDataset(small_sim, "train", size=size, chain="random", negatives=0.5, mirror=0.5)
    assert casi_offset_prior(chained) == pytest.approx(s / n, rel=1e-9)  # neither chain nor augmentation moves it


def test_torchrun_ddp_on_cpu(small_sim, tmp_path):
    """The same command under torchrun trains with DistributedDataParallel (gloo on a CPU)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "threeddx.cli", "train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(small_sim),
         "--out", str(tmp_path), "--epochs", "1"],
        capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 1 and ck["step"] == 1  # 4 train samples / (batch 4 x 2 ranks) -> 1 step
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 1


def test_the_rules_of_a_run_folder(small_sim, tmp_path, capsys):
    """Used folder refused without --resume; a finished run says so; resume elsewhere writes both; --overwrite."""
    from threeddx.cli import main

    args = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(small_sim), "--epochs", "1"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*args, "--out", str(a)]) == 0
    from threeddx.io import writer_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = writer_tag().rsplit(".", 1)[0]
    (a / f".last.pt.{host}.{dead.pid}.k1ll3d.tmp.pt").write_bytes(b"half")  # what a kill during a save leaves
    (a / f".best.pt.{writer_tag()}.w0rk1n.tmp.pt").write_bytes(b"half")  # a live writer's: left alone
    capsys.readouterr()
    assert main([*args, "--out", str(a)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a training run; --resume" in err[0]
    assert main([*args, "--out", str(a), "--resume", str(a / "last.pt")]) == 0
    assert "training had already finished (epoch 1 of 1); nothing to do" in capsys.readouterr().out
    assert [p.name for p in a.glob(".*tmp*")] == [f".best.pt.{writer_tag()}.w0rk1n.tmp.pt"]
    (a / f".best.pt.{writer_tag()}.w0rk1n.tmp.pt").unlink()
    args[-1] = "2"
    c = tmp_path / "c"  # a refused resume (other model settings) leaves nothing that blocks a fresh run there
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text((REPO / "configs" / "tiny.yaml").read_text().replace("width: 8", "width: 4"))
    capsys.readouterr()
    assert main(["train", "--config", str(narrow), *args[3:], "--out", str(c), "--resume", str(a / "last.pt")]) == 2
    assert "model settings differ" in capsys.readouterr().err and not (c / "best.pt").exists()
    assert main([*args, "--out", str(c)]) == 0
    assert main([*args, "--out", str(b), "--resume", str(a / "last.pt")]) == 0
    assert (b / "last.pt").exists() and (b / "best.pt").exists()
    assert load_checkpoint(b / "last.pt")["epoch"] == 2
    assert [r["epoch"] for r in csv.DictReader(open(b / "metrics.csv"))] == ["1", "2"]  # the log continues a's
    assert main([*args, "--out", str(a), "--overwrite"]) == 0
    assert [r["epoch"] for r in csv.DictReader(open(a / "metrics.csv"))] == ["1", "2"]


def test_fine_tuning_starts_from_the_weights_and_records_mirroring(small_sim, tmp_path):
    first = tiny_cfg(small_sim, tmp_path / "first", optim={"epochs": 1})
    train(first, progress=False)
    ck = load_checkpoint(tmp_path / "first" / "last.pt")
    assert ck["mirror_tta"] is False
    cfg = tiny_cfg(small_sim, tmp_path / "second", init=str(tmp_path / "first" / "last.pt"), data={"mirror": 0.5})
    tr = Trainer(cfg, progress=False)
    assert all(torch.equal(v, ck["model"][k]) for k, v in tr.model.state_dict().items())
    assert tr.epoch == 0 and tr.sched.last_epoch == 0  # a new run: new optimiser and schedule
    assert tr.state()["mirror_tta"] is True
    other = tiny_cfg(small_sim, tmp_path / "third", init=str(tmp_path / "first" / "last.pt"), model={"width": 4})
    with pytest.raises(InputError, match="model settings differ"):
        Trainer(other, progress=False)


def test_init_match_shapes_puts_a_single_depth_head_on_a_dual_face_backbone(small_sim, tmp_path, capsys):
    """init_match: shapes takes every tensor of the same name and shape (the backbone) and starts the rest fresh,
    naming them; "all" refuses the other model; an unknown option is one error at load time."""
    from threeddx.training.train import load_config, shared_tensors

    first = tiny_cfg(small_sim, tmp_path / "first", optim={"epochs": 1})
    train(first, progress=False)
    ck = load_checkpoint(tmp_path / "first" / "last.pt")
    single = tiny_cfg(small_sim, tmp_path / "single", init=str(tmp_path / "first" / "last.pt"),
                      loss={"mode": "single"})
    with pytest.raises(InputError, match="model settings differ"):
        Trainer(single, progress=False)
    single["init_match"] = "shapes"
    tr = Trainer(single, progress=False)
    fresh = {k for k, v in tr.model.state_dict().items() if v.shape != ck["model"][k].shape}
    assert fresh == {"head.2.weight", "head.2.bias"}  # the output layer: 1 depth per bone instead of 2
    assert all(torch.equal(v, ck["model"][k]) for k, v in tr.model.state_dict().items() if k not in fresh)
    assert "2 fresh: head.2.bias, head.2.weight" in capsys.readouterr().out
    # names from before the trunk had its own (released files of that time) match too
    old = {k.removeprefix("trunk."): v for k, v in ck["model"].items()}
    taken, left = shared_tensors(tr.model.state_dict(), old)
    assert left == sorted(fresh) and len(taken) == len(ck["model"]) - 2
    with pytest.raises(InputError, match="unknown init_match in config .*tiny.yaml: 'shape'; did you mean 'shapes'"):
        load_config(REPO / "configs" / "tiny.yaml", {"init_match": "shape"})


def test_a_four_face_model_trains_predicts_and_meshes(four_face_sim, tmp_path):
    """model.faces 4 on samples simulated with --faces 4: the loss sees the inner faces, the checkpoint says K,
    and the one inference path gives inner faces that evaluate meshes."""
    import numpy as np

    from threeddx.training.dataset import read_manifest
    from threeddx.evaluation.evaluate import evaluate
    from threeddx.geometry import XrayGeometry
    from threeddx.inference.predictor import Predictor

    cfg = tiny_cfg(four_face_sim[4], tmp_path / "run", optim={"epochs": 1}, model={"faces": 4},
                   data={"size": 32, "val_split": None, "train_split": "train"})
    tr = Trainer(cfg, progress=False)
    batch = tr._to(next(iter(tr._loader(tr.train_set, False, 0))))
    assert batch["depth_inner"].shape[1:] == (3, 2, 32, 32)
    from threeddx.training.train import depth_prediction, depth_targets

    out = tr.model(batch["image"])
    pred, (tgt, m) = depth_prediction(out, False), depth_targets(batch, False)
    assert pred.shape == tgt.shape == m.shape and pred.shape[1] == 3 * 4
    assert m[:, 3:9].sum() == 2 * batch["inner_valid"].sum()  # the inner faces count where their gap exists
    train(cfg, progress=False)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["faces"] == 4 and ck["model_config"]["faces"] == 4
    row = read_manifest(four_face_sim[4])[0]
    with np.load(four_face_sim[4] / row["render"]) as z:
        image, geo = z["image"], XrayGeometry.from_json(str(z["geometry"]))
    p = Predictor(tmp_path / "run" / "last.pt", hip_anchor=None).infer(image, geo)
    assert p.faces == 4 and p.depth_inner.shape == (3, 2, 32, 32) and p.inner_valid.shape == (3, 1, 32, 32)
    assert not (p.inner_valid[:, 0] & ~p.masks).any()
    s = evaluate(four_face_sim[4], tmp_path / "eval", tmp_path / "run" / "last.pt", split="train", progress=False,
                 hip_anchor=None, seen=True)
    assert s["faces"] == 4
    # a two-face checkpoint still loads and predicts without inner faces
    old = Predictor("dualface", hip_anchor=None).infer(image, geo)
    assert old.faces == 2 and old.depth_inner is None


def test_the_cpu_speed_ups_train_and_their_checkpoint_predicts(small_sim, tmp_path):
    """channels_last, bfloat16 autocast and loader workers: one epoch trains (finite losses), the depths leave
    the network in float32, validation runs in float32, and the checkpoint loads for inference as any other."""
    from threeddx.inference.predictor import Predictor

    cfg = tiny_cfg(small_sim, tmp_path / "fast", optim={"epochs": 1}, data={"workers": 1},
                   perf={"channels_last": True, "bf16": True})
    tr = Trainer(cfg, progress=False)
    batch = tr._to(next(iter(tr._loader(tr.train_set, False, 0))))
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    _, _, _, out = tr._batch_loss(batch)
    assert out["depth_front"].dtype == torch.float32 and out["depth_back"].dtype == torch.float32
    rec = train(cfg, progress=False)
    assert all(np.isfinite(v) for k, v in rec.items() if isinstance(v, float)), rec
    p = Predictor(tmp_path / "fast" / "last.pt", hip_anchor=None)
    with np.load(small_sim / "samples" / "llp26-00" / "pose_00.npz") as z:
        from threeddx.geometry import XrayGeometry

        pred = p.infer(z["image"], XrayGeometry.from_json(str(z["geometry"])))
    assert np.isfinite(pred.depth_front).all()


def test_a_time_budget_stops_at_an_epoch_boundary_and_resume_continues(small_sim, tmp_path, capsys):
    """--budget-min: the run stops after the last epoch that fits (at least one), says how to go on, and
    --resume continues it and its log, epoch after epoch."""
    from threeddx.cli import main

    args = ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(small_sim), "--epochs", "3",
            "--out", str(tmp_path / "run")]
    assert main([*args, "--budget-min", "0.0001"]) == 0
    assert "stopped at the budget after epoch 1 of 3; --resume" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert main([*args, "--resume", str(tmp_path / "run" / "last.pt")]) == 0
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))] == ["1", "2", "3"]
    assert main([*args, "--budget-min", "-1"]) == 2


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    """Each config in configs/ passes the checks and builds its network; one that starts from a released model
    (``init: dualface``) fits that model's weights exactly."""
    from threeddx.network.checkpoint import RELEASED, build_model, load_checkpoint, resolve_checkpoint
    from threeddx.network.model import DualFaceNet, model_config

    cfg = load_config(path)
    net = DualFaceNet(model_config(cfg["model"], bones=cfg["data"]["bones"]))
    if cfg.get("init") in RELEASED:
        released = build_model(load_checkpoint(resolve_checkpoint(cfg["init"])))
        net.load_state_dict(released.state_dict(), strict=True)  # raises on any key or shape that differs
