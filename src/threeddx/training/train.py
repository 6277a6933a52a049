"""Training: YAML config -> checkpoints, CSV and TensorBoard logs.

``3ddx train --config CONFIG.yaml [--resume CKPT] [--loss MODE]``. The same
command launched by ``torchrun --nproc_per_node N`` trains on N GPUs (or N CPU
processes with the gloo backend) with DistributedDataParallel; rank 0 writes
logs and checkpoints.

Determinism: on a CPU, the same config gives the same losses, and resuming from
``last.pt`` continues exactly: the data order of epoch e is drawn from (seed, e),
augmentations from (seed, e, index), and the checkpoint holds the model,
optimiser, scheduler and RNG states.

Checkpoints (``best.pt`` by lowest validation depth AbsRel, ``last.pt``) hold
the config, the model's bones and settings, the nominal geometry the model was
trained for (the standard AP preset at the training resolution), and for CASI
models the depth offset used at inference (see :func:`casi_offset_prior`).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from threeddx import __version__
from threeddx.training.trainconfig import check, defaults
from threeddx.errors import InputError, check_number, look_up_option
from threeddx.io import check_names, is_dead_temporary
from threeddx.geometry import XrayGeometry, standard_ap_geometry
from threeddx.network.checkpoint import (  # noqa: F401 (re-exported)
    CKPT_FORMAT, Checkpoint, export_release, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from threeddx.io import atomic_path
from threeddx.network.losses import MODES, mask_loss, scale_invariant_loss
from threeddx.network.model import DualFaceNet, ModelConfig, apply_casi_offset, model_config, face_masks, nearest_surface, upgrade_state_dict  # noqa: F401 (re-exported)

LOSS_CHOICES = ("single", "dependent", "independent", "casi")

#: The defaults of every setting: :class:`threeddx.training.trainconfig.TrainConfig`'s, as the nested dict runs keep.
DEFAULTS: dict[str, Any] = defaults()


def check_config(cfg: dict, where: str) -> None:
    """Every value of the right type and range (:func:`threeddx.training.trainconfig.check`): one InputError naming the key."""
    check(cfg, where)


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base:
            import difflib

            near = difflib.get_close_matches(str(k), list(map(str, base)), n=1)
            hint = f"; did you mean '{where}{near[0]}'?" if near else ""
            raise InputError(f"config: unknown key '{where}{k}'{hint} (known: {', '.join(map(str, base))})")
        if isinstance(base[k], dict) and not isinstance(v, dict):
            raise InputError(f"config: '{where}{k}' must be a section of settings, got {str(v)[:40]!r}")
        out[k] = _merge(base[k], v, f"{where}{k}.") if isinstance(base[k], dict) and isinstance(v, dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the YAML file, then ``overrides`` (same nesting)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise InputError(f"cannot read config {path}: {e.strerror}") from None
        try:
            user = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise InputError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(user, dict):
            raise InputError(f"config {path}: expected a table of settings, got {type(user).__name__}")
        cfg = _merge(cfg, user)
    cfg = _merge(cfg, overrides or {})
    if cfg["loss"]["mode"] not in MODES:
        raise InputError(f"config: loss.mode must be one of {MODES}, got {cfg['loss']['mode']!r}")
    check_names(cfg["data"]["bones"], f"config {path or '(defaults)'}: data.bones")
    check_config(cfg, f"config {path or '(defaults)'}")
    look_up_option(cfg["init_match"], INIT_MATCH, f"init_match in config {path or '(defaults)'}:")
    if cfg["model"]["preset"] is not None:
        from threeddx.network.model import PRESETS

        look_up_option(cfg["model"]["preset"], PRESETS, f"model preset in config {path or '(defaults)'}:")
    faces = cfg["model"].get("faces", 2)
    if not isinstance(faces, int) or faces < 2 or faces % 2:
        raise InputError(f"config: model.faces must be an even number of at least 2, got {faces!r}")
    if faces > 2 and cfg["loss"]["mode"] == "single":
        raise InputError(f"config: the single-depth baseline has one face; model.faces {faces} needs a dual-face loss")
    return cfg


def loss_override(name: str) -> dict:
    """``--loss`` shorthand -> config overrides (casi = dependent SI, center-aligned)."""
    if name not in LOSS_CHOICES:
        raise InputError(f"--loss must be one of {', '.join(LOSS_CHOICES)}")
    if name == "casi":
        return {"loss": {"mode": "dependent", "casi": True}}
    return {"loss": {"mode": name, "casi": False}}


# ------------------------------------------------------------------ helpers
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_init(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def _device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("config device is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank if name == "cuda" else torch.device(name).index)
    return torch.device(name)


def depth_prediction(out: dict[str, torch.Tensor], single: bool) -> torch.Tensor:
    """Stack a model's depth outputs as the loss sees them: (B, M, H, W): the fronts, the inner faces (K > 2,
    bone by bone), the backs."""
    if single:
        return out["depth"]
    inner = [out["depth_inner"].flatten(1, 2)] if "depth_inner" in out else []
    return torch.cat([out["depth_front"], *inner, out["depth_back"]], dim=1)


def depth_targets(batch: dict, single: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets and validity masks of :func:`depth_prediction`'s maps: an inner face counts where its gap exists."""
    if single:
        return nearest_surface(batch["masks"], batch["depth_front"])
    m = batch["masks"]
    if "depth_inner" not in batch:
        return torch.cat([batch["depth_front"], batch["depth_back"]], 1), torch.cat([m, m], 1)
    valid = torch.repeat_interleave(batch["inner_valid"], 2, dim=2)  # gap j: faces 2j-1 and 2j
    return (torch.cat([batch["depth_front"], batch["depth_inner"].flatten(1, 2), batch["depth_back"]], 1),
            torch.cat([m, valid.flatten(1, 2), m], 1))


def stored_maps(dataset, depths: bool = True):
    """Yield each sample's stored masks (C, H, W, 0/1) and, with ``depths``, its front and back faces (C, H, W,
    mm; else None) at the model's size, as :func:`threeddx.training.dataset.downsample_sample` takes them: no
    imaging chain and no augmentation (the statistics below are of the samples, the same on every run)."""
    from threeddx.training.dataset import downsample_sample

    for row in dataset.rows:
        with np.load(dataset.root / row["render"]) as z:
            m = z["masks"][dataset.channels]
            front, back = ((z["depth_front"][dataset.channels], z["depth_back"][dataset.channels]) if depths
                           else (m.astype(np.float32), m.astype(np.float32)))
        _, m, front, back = downsample_sample(np.zeros(m.shape[1:], np.float32), m, front, back, dataset.factor)
        yield (m, front, back) if depths else (m, None, None)


def casi_offset_prior(dataset) -> float:
    """Mean ground-truth bone depth (mm) over a dataset's samples: the CASI model's offset at inference.

    A CASI-trained network predicts shape, not position; at inference its depths
    are shifted so that their masked mean equals this prior (the geometry
    preset's typical bone depth, measured on the training set). The error of
    this choice is the spread of the true mean depth over patients and poses.

    Read from the stored samples (:func:`stored_maps`): mirroring only swaps the
    bones and negatives only drop samples, so the prior is the same on every run
    and costs seconds, not an epoch's worth of imaging chains.
    """
    s, n = 0.0, 0
    for m, front, back in stored_maps(dataset):
        inside = m > 0
        s += float(front[inside].sum(dtype=np.float64) + back[inside].sum(dtype=np.float64))
        n += 2 * int(inside.sum())
    if n == 0:
        raise InputError("no bone pixel in the training set: cannot compute the CASI offset")
    return s / n


def mask_statistics(dataset) -> dict:
    """Per bone, the training masks' area (pixels) and centroid (row, col) at the model's resolution.

    Stored in the checkpoint (``confidence``): :meth:`threeddx.network.model.Prediction`
    users judge whether a predicted mask is plausible against them (a bone 20x
    too small, or at the other end of the image, is "not found").
    """
    areas: dict[str, list[float]] = {b: [] for b in dataset.bones}
    cents: dict[str, list[tuple[float, float]]] = {b: [] for b in dataset.bones}
    for m, _, _ in stored_maps(dataset, depths=False):
        for c, b in enumerate(dataset.bones):
            if m[c].sum():
                areas[b].append(float(m[c].sum()))
                r, k = np.nonzero(m[c])
                cents[b].append((float(r.mean()), float(k.mean())))
    out = {}
    for b in dataset.bones:
        if not areas[b]:
            continue
        c = np.array(cents[b])
        out[b] = {"area_px_median": float(np.median(areas[b])), "area_px_min": float(np.min(areas[b])),
                  "centroid_mean": c.mean(0).tolist(), "centroid_sd": np.maximum(c.std(0), 1.0).tolist()}
    return {"size": dataset.size, "bones": out}


# ------------------------------------------------------------------ training
class Trainer:
    def __init__(self, cfg: dict, resume: str | Path | None = None, progress: bool = True) -> None:
        from threeddx.training.dataset import PhotometricAugment, SimulatedDataset

        self.cfg = cfg
        self.progress = progress
        dev = _device(cfg["device"], int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = _dist_init(dev)
        self.device = dev
        if dev.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        _seed_everything(int(cfg["seed"]))
        d = cfg["data"]
        aug = [PhotometricAugment()] if cfg["augment"] else []
        faces = int(cfg["model"].get("faces", 2))
        self.train_set = SimulatedDataset(d["root"], d["train_split"], d["size"], d["bones"], aug, seed=cfg["seed"],
                                          chain=d["chain"], negatives=d["negatives"], mirror=d["mirror"], faces=faces,
                                          marker=d["marker"])
        if d.get("limit_train"):
            self.train_set.rows = self.train_set.rows[: int(d["limit_train"])]
        if d["negatives"]:
            from threeddx.simulator.negatives import ensure_chest_views

            with np.load(self.train_set.root / self.train_set.rows[0]["render"]) as z:
                ensure_chest_views(self.train_set.root / "negatives", XrayGeometry.from_json(str(z["geometry"])))
        self.val_set = (SimulatedDataset(d["root"], d["val_split"], d["size"], d["bones"], None, seed=1_000_003,
                                         chain=d["chain"], faces=faces) if d["val_split"] else None)
        self.size = self.train_set.size
        self.single = cfg["loss"]["mode"] == "single"
        self.mcfg = model_config(cfg["model"], bones=list(self.train_set.bones), single_depth=self.single)
        self.model = DualFaceNet(self.mcfg).to(dev)
        if self.size % self.model.downsample_factor:
            raise InputError(f"data.size {self.size} must be a multiple of {self.model.downsample_factor} (2^levels)")
        perf = cfg["perf"]
        self.memory_format = torch.channels_last if perf["channels_last"] else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.ddp = torch.compile(self.model) if perf["compile"] else self.model
        if self.dist.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        o = cfg["optim"]
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
        self.steps_per_epoch = math.ceil(len(self.train_set) / (o["batch_size"] * self.dist.world))
        total = max(1, o["epochs"] * self.steps_per_epoch)
        if o["schedule"] == "cosine":
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        elif o["schedule"] == "constant":
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)
        else:
            raise InputError(f"config: optim.schedule must be cosine or constant, got {o['schedule']!r}")
        self.amp = bool(cfg["amp"]) and dev.type == "cuda"
        self.bf16 = bool(perf["bf16"]) and dev.type == "cpu"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.step, self.best = 0, 0, float("inf")
        self.casi_offset = casi_offset_prior(self.train_set) if cfg["loss"]["casi"] else None
        self.confidence = mask_statistics(self.train_set)
        self.out = Path(cfg["out"])
        if resume:
            self._load(resume)
        elif cfg["init"]:
            self._init_weights(cfg["init"])

    # ---------------------------------------------------------- checkpoints
    def geometry(self):
        from threeddx.simulator.simulate import ISOCENTER_ABOVE_HIPS_MM

        g = standard_ap_geometry((0.0, 0.0, ISOCENTER_ABOVE_HIPS_MM), size=self.size)
        with np.load(self.train_set.root / self.train_set.rows[0]["render"]) as z:
            stored = XrayGeometry.from_json(str(z["geometry"])).resample(self.size)
        return stored.with_pose(g.world_to_source)

    def state(self) -> dict:
        """The typed checkpoint (:class:`threeddx.network.checkpoint.Checkpoint`) plus the training state."""
        typed = Checkpoint(
            model=self.model.state_dict(), model_config=self.mcfg.to_dict(), bones=list(self.mcfg.bones),
            geometry=self.geometry().to_json(), config=self.cfg, casi_offset_mm=self.casi_offset,
            confidence=self.confidence, epoch=self.epoch, threeddx_version=__version__, format=CKPT_FORMAT,
            mirror_tta=float(self.cfg["data"]["mirror"]) > 0, faces=self.mcfg.faces,
        ).to_dict()
        return {
            **typed,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "rng": rng_state(),
        }

    def _save(self, name: str) -> None:
        save_checkpoint(self.state(), self.out / name)

    def _same_model(self, ck: dict) -> bool:
        """The checkpoint's model settings are this run's (settings added later read as their defaults)."""
        try:
            return ModelConfig(**ck["model_config"]).to_dict() == self.mcfg.to_dict()
        except TypeError:
            return False

    def _init_weights(self, name: str | Path) -> None:
        """The weights of a checkpoint (path or released name) as the starting point; nothing else of its run."""
        from threeddx.network.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(name)
        ck = load_checkpoint(path, map_location=self.device)
        match = self.cfg.get("init_match", "all")  # checked by load_config
        if match == "all":
            if not self._same_model(ck):
                raise InputError(f"init {path}: the checkpoint's model settings differ from the config's "
                                 "(init_match: shapes takes the tensors they share)")
            self.model.load_state_dict(ck["model"])  # float16 release weights are cast to the model's float32
            return
        taken, fresh = shared_tensors(self.model.state_dict(), ck["model"])
        if not taken:
            raise InputError(f"init {path}: the checkpoint shares no tensor (name and shape) with this model")
        self.model.load_state_dict(taken, strict=False)
        if self.dist.rank == 0 and fresh:
            print(f"init {path}: {len(taken)} tensors taken, {len(fresh)} fresh: {', '.join(fresh)}")

    def _load(self, path: str | Path) -> None:
        ck = load_checkpoint(path, map_location=self.device)
        if not self._same_model(ck):
            raise InputError(f"{path}: the checkpoint's model settings differ from the config's")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.epoch, self.step, self.best = ck["epoch"], ck["step"], ck["best"]
        self.casi_offset = ck["casi_offset_mm"]
        self.confidence = ck.get("confidence", self.confidence)
        set_rng_state(ck["rng"])
        self._truncate_log(self.epoch)

    def _truncate_log(self, epoch: int) -> None:
        """Drop log rows after ``epoch`` (written by a run killed before its checkpoint)."""
        path = self.out / "metrics.csv"
        if not self.dist.main or not path.exists():
            return
        write_log(path, log_rows_until(path, epoch))  # a few hundred bytes, rewritten once per resume

    # ---------------------------------------------------------- loops
    def _batch_loss(self, batch: dict, training: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """(loss, depth loss, mask loss, the network's outputs) of a batch; ``training``: in the training precision
        (:meth:`autocast`), else float32 (validation chooses ``best.pt`` on the depths inference will give)."""
        lc = self.cfg["loss"]
        with self.autocast() if training else contextlib.nullcontext():
            out = self.ddp(batch["image"])
        pred = depth_prediction(out, self.single).float()
        tgt, m = depth_targets(batch, self.single)
        dl = scale_invariant_loss(pred, tgt, m, lc["mode"], lc["casi"], lc["lam"], lc["alpha"])
        ml = mask_loss(out["mask_logits"].float(), batch["masks"])
        if "gap_logits" in out:  # K > 2: does each ray have each gap (a mask per bone and gap)
            ml = ml + mask_loss(out["gap_logits"].float().flatten(1, 2), batch["inner_valid"].flatten(1, 2))
        return dl + lc["seg_weight"] * ml, dl, ml, out

    def autocast(self):
        """The network's precision: float16 on CUDA with ``amp``, bfloat16 on CPU with ``perf.bf16``, else float32."""
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast("cuda", enabled=self.amp)

    def _loader(self, dataset, shuffle: bool, epoch: int):
        from torch.utils.data import DataLoader, DistributedSampler

        sampler = DistributedSampler(dataset, self.dist.world, self.dist.rank, shuffle=shuffle, seed=int(self.cfg["seed"]))
        sampler.set_epoch(epoch)
        workers = int(self.cfg["data"]["workers"])
        # not persistent: each epoch's workers get the dataset with that epoch set (its random chains and poses)
        return DataLoader(
            dataset, batch_size=self.cfg["optim"]["batch_size"], sampler=sampler,
            num_workers=workers, collate_fn=_collate,
            prefetch_factor=int(self.cfg["perf"]["prefetch"]) if workers else None,
        )

    def _to(self, batch: dict) -> dict:
        out = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        out["image"] = out["image"].contiguous(memory_format=self.memory_format)
        return out

    def train_epoch(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        self.model.train()
        self.train_set.set_epoch(self.epoch)
        sums = np.zeros(3)
        n = 0
        loader = self._loader(self.train_set, True, self.epoch)
        clip = self.cfg["optim"]["grad_clip"]
        for batch in tqdm(loader, desc=f"epoch {self.epoch + 1}", leave=False, disable=None if self.progress and self.dist.main else True):
            batch = self._to(batch)
            loss, dl, ml, _ = self._batch_loss(batch)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            self.step += 1
            sums += [loss.item(), dl.item(), ml.item()]
            n += 1
        # plain floats: a NumPy scalar in a checkpoint (the best metric of a run without validation) is refused on load
        return {"train_loss": float(sums[0] / n), "train_depth_loss": float(sums[1] / n), "train_mask_loss": float(sums[2] / n)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        self.model.eval()
        tot = {"loss": 0.0, "abs": 0.0, "sq": 0.0, "px": 0.0, "dice": 0.0, "n": 0}
        for batch in self._loader(self.val_set, False, 0):
            batch = self._to(batch)
            loss, _, _, out = self._batch_loss(batch, training=False)  # one forward pass: the loss and the metrics
            pred = depth_prediction(out, self.single).float()
            tgt, m = depth_targets(batch, self.single)
            if self.casi_offset is not None:
                pm = (torch.sigmoid(out["mask_logits"]) > 0.5).float()
                pm = (pm > 0.5).any(1, keepdim=True).float() if self.single else face_masks(pm, out)
                pred = apply_casi_offset(pred, pm, self.casi_offset)
            v = (m > 0.5) & (tgt > 0)
            err = (pred - tgt)[v]
            tot["loss"] += float(loss) * len(batch["image"])
            tot["abs"] += float((err.abs() / tgt[v]).sum())
            tot["sq"] += float((err**2).sum())
            tot["px"] += int(v.sum())
            pm = (torch.sigmoid(out["mask_logits"]) > 0.5).float()
            inter = (pm * batch["masks"]).sum(dim=(2, 3))
            den = pm.sum(dim=(2, 3)) + batch["masks"].sum(dim=(2, 3))
            tot["dice"] += float(((2 * inter + 1e-6) / (den + 1e-6)).mean(1).sum())
            tot["n"] += len(batch["image"])
        if self.dist.world > 1:
            t = torch.tensor([tot[k] for k in ("loss", "abs", "sq", "px", "dice", "n")], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            tot = dict(zip(("loss", "abs", "sq", "px", "dice", "n"), t.tolist()))
        px = max(tot["px"], 1)
        return {
            "val_loss": tot["loss"] / max(tot["n"], 1),
            "val_absrel": tot["abs"] / px,
            "val_rmse_mm": math.sqrt(tot["sq"] / px),
            "val_dice": tot["dice"] / max(tot["n"], 1),
        }

    def fit(self, budget_s: float | None = None) -> dict[str, float]:
        """Train until ``optim.epochs``, or, with ``budget_s``, until the next epoch would end past that many
        seconds of this invocation (at least one epoch; ``stopped_at_budget`` in the record). Either way
        ``last.pt`` holds the last finished epoch, and ``--resume`` continues it and its log."""
        from torch.utils.tensorboard import SummaryWriter

        epochs = int(self.cfg["optim"]["epochs"])
        writer = SummaryWriter(str(self.out / "tb")) if self.dist.main else None
        last: dict[str, float] = {}
        started = time.perf_counter()
        try:
            while self.epoch < epochs:
                if last and self._out_of_time(started, budget_s, last["seconds"]):
                    last["stopped_at_budget"] = True
                    break
                t0 = time.perf_counter()
                rec = self.train_epoch()
                rec.update(self.validate())
                self.epoch += 1
                rec.update({"epoch": self.epoch, "step": self.step, "lr": self.sched.get_last_lr()[0],
                            "seconds": time.perf_counter() - t0})
                if self.dist.main:
                    self._log(rec, writer)
                    metric = rec.get("val_absrel", rec["train_depth_loss"])
                    if metric < self.best:
                        self.best = metric
                        self._save("best.pt")
                    self._save("last.pt")
                last = rec
        finally:
            if writer is not None:
                writer.close()
        return last

    def _out_of_time(self, started: float, budget_s: float | None, epoch_s: float) -> bool:
        """Would one more epoch (as long as the last) end past the budget? Rank 0 decides for every rank."""
        stop = budget_s is not None and (time.perf_counter() - started) + epoch_s > budget_s
        if self.dist.world > 1:
            flag = torch.tensor([int(stop)], device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def _log(self, rec: dict, writer) -> None:
        path = self.out / "metrics.csv"
        cols = ["epoch", "step", "train_loss", "train_depth_loss", "train_mask_loss", "val_loss", "val_absrel",
                "val_rmse_mm", "val_dice", "lr", "seconds"]
        new = not path.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(cols)
            w.writerow([rec.get(c, "") for c in cols])
        for k, v in rec.items():
            if k not in ("epoch", "step"):
                writer.add_scalar(k, v, self.epoch)
        if self.progress:
            msg = ", ".join(f"{k} {rec[k]:.4g}" for k in ("train_loss", "val_absrel", "val_rmse_mm", "val_dice") if k in rec)
            print(f"epoch {self.epoch}/{self.cfg['optim']['epochs']}: {msg} ({rec['seconds']:.1f} s)")


def _collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    return out


#: What makes a folder a training run (``last.pt`` is written after every epoch).
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "tb")


def prepare_run_folder(out: str | Path, resume: str | Path | None, overwrite: bool = False) -> None:
    """The rules of a run folder, checked before any work (one line and exit 2 when broken).

    * a folder that already holds a run is not trained into again from scratch:
      ``--resume`` continues it, ``--overwrite`` deletes the earlier run's files
      (only :data:`RUN_FILES`) and starts again;
    * ``--resume`` into another folder copies the resumed run's ``best.pt`` (when
      there is one) so that the new folder holds both files, and its log up to the
      resumed epoch so that the new log continues it, once the resumed checkpoint
      is accepted (:func:`carry_resumed_run`);
    * temporaries left by a killed run (``.last.pt.*.tmp.pt``) are removed.
    """
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"out {out} is a file, not a folder")
    used = out.is_dir() and any((out / f).exists() for f in RUN_FILES)
    if used and resume is None:
        if not overwrite:
            raise InputError(f"{out} already holds a training run; --resume {out / 'last.pt'} continues it, "
                             "--overwrite starts again (deleting its checkpoints and logs)")
        for f in RUN_FILES:
            path = out / f
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    if out.is_dir():
        for tmp in out.glob(".*.tmp*"):
            if is_dead_temporary(tmp):  # a killed run's; a live writer's is left alone
                tmp.unlink(missing_ok=True)


def carry_resumed_run(out: str | Path, resume: str | Path, epoch: int) -> None:
    """``--resume`` into another folder: copy the resumed run's ``best.pt`` there (when it has one) and its
    ``metrics.csv`` rows up to the resumed ``epoch`` (so the new folder's log holds the whole run), once the
    resumed checkpoint has been accepted (a refused one leaves nothing that would block a fresh run)."""
    import shutil

    out, src = Path(out), Path(resume).parent
    if src.resolve() == out.resolve():
        return
    if (src / "best.pt").exists() and not (out / "best.pt").exists():
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "best.pt") as tmp:
            shutil.copy2(src / "best.pt", tmp)
    if (src / "metrics.csv").exists() and not (out / "metrics.csv").exists():
        write_log(out / "metrics.csv", log_rows_until(src / "metrics.csv", epoch))


def log_rows_until(path: Path, epoch: int) -> list[list[str]]:
    """A run's ``metrics.csv`` as rows: the header and the epochs up to ``epoch``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= epoch]


#: ``init_match`` options: how a fine-tune takes its starting checkpoint's tensors (:meth:`Trainer._init_weights`).
INIT_MATCH = ("all", "shapes")


def shared_tensors(model: dict[str, torch.Tensor], init: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """The tensors of ``init`` (a state dict; names from before the trunk/head split upgraded) whose name and
    shape ``model`` (a state dict) has, cast to the model's dtype, and the names of the model's tensors left
    without one (sorted)."""
    init = upgrade_state_dict(dict(init))
    taken = {k: v.to(model[k].dtype) for k, v in init.items() if k in model and tuple(v.shape) == tuple(model[k].shape)}
    return taken, sorted(k for k in model if k not in taken)


def write_log(path: Path, rows: list[list[str]]) -> None:
    """Write ``metrics.csv`` rows whole or not at all."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(rows)


def train(cfg: dict, resume: str | Path | None = None, progress: bool = True,
          overwrite: bool = False, budget_s: float | None = None) -> dict[str, float]:
    """Train (or resume) a run into ``cfg["out"]`` (:func:`prepare_run_folder`'s rules).

    Returns the last epoch's record, or ``{"finished": True, "epoch": N}`` when the
    resumed run had already reached ``optim.epochs`` (nothing was trained).
    """
    if int(os.environ.get("RANK", "0")) == 0:
        prepare_run_folder(cfg["out"], resume, overwrite)
    trainer = Trainer(cfg, resume, progress)
    if resume is not None and int(os.environ.get("RANK", "0")) == 0:
        carry_resumed_run(cfg["out"], resume, trainer.epoch)
    if trainer.epoch >= int(cfg["optim"]["epochs"]):
        return {"finished": True, "epoch": trainer.epoch}
    try:
        rec = trainer.fit(budget_s)
        if trainer.dist.world > 1:
            # rank 0 hosts torchrun's rendezvous store: leaving while another rank is
            # still shutting down aborted that rank (SIGABRT, ~1 run in 10 on 2 CPU ranks)
            dist.barrier()
        return rec
    finally:
        if trainer.dist.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
