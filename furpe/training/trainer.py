"""``furpe train``: the training loop, checkpoints, resume, logs and DDP.

* **Reproducible segments.** Training runs in segments of ``checkpoint_every`` steps. Each
  segment restarts the data stream and reseeds every generator from ``(seed, step, rank)``;
  a checkpoint is written at each segment's end. A run resumed from a checkpoint therefore
  continues exactly as the uninterrupted run did (same batches, same dropout, same losses).
* **Files** (in ``output``): ``last.pt`` (everything to resume: weights, optimiser,
  scheduler, EMA teacher, loss parameters, configuration, step), ``model.pt`` at the end
  (the inference checkpoint: network weights and configurations), ``log.jsonl`` (one line of
  mean losses per ``log_every`` steps), ``tensorboard/`` event files and ``summary.json``.
  Every file is written to a temporary name and renamed.
* **DDP.** Under ``torchrun`` each rank trains on its own draws of the shards (seeded by
  rank) and gradients are averaged (``gloo`` on CPU, ``nccl`` on CUDA); rank 0 writes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from furpe.core.errors import DatasetError, SetupError
from furpe.core.files import atomic_write, write_json
from furpe.networks.inference import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from furpe.networks.wholebody import WholeBodyNet
from furpe.training.config import TrainConfig, train_config_from_dict
from furpe.training.data import MirrorPlan, PersonCrops, collate, label_dataset
from furpe.training.features import views
from furpe.training.losses import ema_decay, ema_update, make_teacher

#: Configuration keys a resumed run may change: where and how it runs, not what it learns.
RUN_KEYS = ("output", "device", "threads", "log_every")


def _changed(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b))
                for k in _changed(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def count_people(folder: str | Path) -> int:
    """People in a shard folder, from its ``index.json``."""
    index = Path(folder) / "index.json"
    try:
        data = json.loads(index.read_text())
        return int(sum(s.get("people", 0) for s in data["shards"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise DatasetError(f"{index}: cannot count the people (no readable index.json); "
                           "give `steps` instead of `epochs`") from None


def total_steps(cfg: TrainConfig, world: int) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    people = sum(count_people(s.shards) for s in cfg.data.sources)
    return max(1, math.ceil(cfg.epochs * people / (cfg.batch_size * world)))


def parameter_groups(net: WholeBodyNet, encoder_lr: float | None) -> list[dict[str, Any]]:
    """The network's trainable parameters as optimiser groups: one, or with ``encoder_lr``
    the trained encoders' parameters in a group of their own at that rate."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    if encoder_lr is None:
        return [{"params": trainable}]
    encoders = {id(p) for b in ("body", "hand", "head") if net.encoder(b) is not None
                for p in net.encoder(b).parameters() if p.requires_grad}
    groups = [{"params": [p for p in trainable if id(p) not in encoders]}]
    if encoders:
        groups.append({"params": [p for p in trainable if id(p) in encoders], "lr": encoder_lr})
    return groups


def _lr_factor(cfg: TrainConfig, total: int):
    o = cfg.optim

    def factor(step: int) -> float:
        f = 1.0
        if o.schedule == "cosine":
            f = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        elif o.schedule == "step":
            f = o.gamma ** sum(step >= m for m in o.milestones)
        if o.warmup and step < o.warmup:
            f *= (step + 1) / o.warmup
        return f
    return factor


def seed_all(*key: int) -> int:
    """Seed torch, NumPy and ``random`` from ``key`` (a run's seed, step, rank...); returns
    the derived seed."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return seed


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


class Trainer:
    """One training run of a :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, config: TrainConfig, *, progress: bool = False) -> None:
        from furpe.bodymodels import load_body_model
        from furpe.networks.wholebody import WholeBodyNet
        from furpe.pipeline import resolve_device
        from furpe.training.recipes import TrainingStep

        self.config = cfg = config
        if not cfg.data.sources:
            raise SetupError("train config: data.sources names no label shards")
        self.progress = progress
        self.rank, self.world = _distributed()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            torch.distributed.init_process_group(backend)
        self.output = Path(cfg.output)
        self.total = total_steps(cfg, self.world)
        seed_all(cfg.seed)
        self.body_model = load_body_model(cfg.body_model, cfg.model_path, self.device)
        self.net = WholeBodyNet(self.body_model, cfg.network).to(self.device)
        self.step_module = TrainingStep(cfg, self.body_model, self.net, self.device).to(self.device)
        self.teacher = make_teacher(self.net) if cfg.recipe == "ema" else None
        groups = parameter_groups(self.net, cfg.optim.encoder_lr)
        if self.step_module.loss_parameters():
            groups.append({"params": self.step_module.loss_parameters()})
        if self.step_module.log_vars is not None:
            groups.append({"params": [self.step_module.log_vars], "lr": cfg.multiloss.lr,
                           "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _lr_factor(cfg, self.total))
        self.step = 0
        self.plan = MirrorPlan.from_model(self.body_model)
        self.pool: dict[str, torch.Tensor] | None = None  # data.feature_cache's examples
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=True)

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": "training",
                "step": self.step, "config": self.config.to_dict(),
                "body_model": self.config.body_model,
                "network_config": dataclasses.asdict(self.net.config),
                "network": self.net.state_dict(),
                "loss_parameters": {k: v for k, v in self.step_module.state_dict().items()
                                    if not k.startswith(("net.", "supervision."))},
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or state.get("kind") != "training":
            raise SetupError("--resume: not a furpe training checkpoint")
        changed = [k for k in _changed(state["config"], self.config.to_dict())
                   if k not in RUN_KEYS]
        if changed:
            raise SetupError(f"--resume: the checkpoint was trained with another configuration "
                             f"(differs in: {', '.join(changed)})")
        self.net.load_state_dict(state["network"])
        self.step_module.load_state_dict(state["loss_parameters"], strict=False)
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])

    def _save(self, name: str, state: dict[str, Any]) -> None:
        if self.rank == 0:
            with atomic_write(self.output / name) as fh:
                torch.save(state, fh)

    def inference_state(self) -> dict[str, Any]:
        """What ``model.pt`` holds: the network and how it was made."""
        cfg = self.config
        weights = self.net.state_dict()
        if self.teacher is not None and cfg.ema.export == "teacher":
            weights = self.teacher.state_dict()
        bundled = self.net.bundled_keys()  # frozen MediaPipe encoders ship with furpe
        weights = {k: v for k, v in weights.items() if k not in bundled}
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": "inference",
                "body_model": cfg.body_model,
                "network_config": dataclasses.asdict(self.net.config),
                "weights": weights, "train_config": cfg.to_dict(), "step": self.step}

    # -- data -------------------------------------------------------------------------------

    def _loader(self, seed: int) -> Any:
        cfg = self.config
        min_score = dict(cfg.data.min_score)
        if not cfg.data.selection:  # every observed part, whatever its score
            min_score = {p: -math.inf for p in ("body", "left_hand", "right_hand", "face")}
        crops = PersonCrops(self.plan, crop_size=cfg.network.input_size,
                            augment=cfg.data.augment, min_score=min_score, seed=seed,
                            views=views(cfg))
        sources = [(s.shards, s.weight) for s in cfg.data.sources]
        ds = label_dataset(sources, crops, shuffle=cfg.data.shuffle, repeat=True, seed=seed)
        return torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate,
                                           num_workers=cfg.data.workers,
                                           persistent_workers=False)

    def _batches(self, seed: int) -> Any:
        """The training batches of a segment: from the loader, or from the feature pool."""
        if self.pool is None:
            return self._loader(seed)
        from furpe.training.features import pool_batches

        return pool_batches(self.pool, self.config.batch_size, seed, views(self.config))

    # -- the loop ---------------------------------------------------------------------------

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train to the end (from ``last.pt`` when ``resume``); returns the summary."""
        from furpe.io.console import progress_bar

        cfg = self.config
        last = self.output / "last.pt"
        if resume:
            if not last.is_file():
                raise SetupError(f"--resume: no checkpoint {last}")
            self.load_state(torch.load(last, map_location=self.device, weights_only=True))
        elif last.is_file():
            raise SetupError(f"{self.output} already holds a training run (last.pt); use "
                             "--resume to continue it or another output folder")
        if cfg.data.feature_cache:
            from furpe.training.features import build_pool

            self.pool = build_pool(self, self.progress)
        log = self._open_log()
        trained = self.step_module if self.ddp is None else self.ddp
        amp = cfg.amp and self.device.type == "cuda"
        sums: dict[str, float] = {}
        seen = 0
        t0, samples = time.perf_counter(), 0
        bar = progress_bar(self.progress and self.rank == 0, total=self.total,
                           initial=self.step, unit="step", desc="train")
        with bar:
            while self.step < self.total:
                seg_end = min((self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every,
                              self.total)
                seed = seed_all(cfg.seed, self.step, self.rank)
                self.net.train()
                for batch in self._batches(seed):
                    batch = {k: v.to(self.device) if torch.is_tensor(v) else v
                             for k, v in batch.items()}
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        loss, terms = trained(batch, self.teacher)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"the loss is {loss.item()} at step {self.step}")
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.optim.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in self.optimizer.param_groups for p in g["params"]],
                            cfg.optim.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    if self.teacher is not None:
                        decay = ema_decay(self.step, self.total, cfg.ema.base)
                        ema_update(self.teacher, self.net, decay)
                        terms["ema_decay"] = torch.tensor(decay)
                    self.step += 1
                    samples += len(batch["K"])
                    terms = {"loss": loss.detach(), **terms}
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    seen += 1
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == self.total:
                        rate = samples * self.world / (time.perf_counter() - t0)
                        entry = {"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                                 "samples_per_s": rate,
                                 **{k: v / seen for k, v in sums.items()}}
                        self._log(log, entry)
                        bar.set_postfix(loss=f"{entry['loss']:.4f}", rate=f"{rate:.1f}/s")
                        sums, seen = {}, 0
                    if self.step >= seg_end:
                        break
                self._save("last.pt", self.state())
                if self.world > 1:
                    torch.distributed.barrier()
        if log is not None:
            log["writer"].close()
        summary = {"steps": self.step, "seconds": time.perf_counter() - t0,
                   "samples_per_s": samples * self.world / max(time.perf_counter() - t0, 1e-9)}
        self._save("model.pt", self.inference_state())
        if self.rank == 0:
            write_json(self.output / "summary.json", summary)
        return summary

    def _open_log(self) -> dict[str, Any] | None:
        if self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / "log.jsonl"
        kept = []
        if path.is_file():  # a resumed run forgets what was logged after its checkpoint
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):  # a line cut by a crash
                    continue
        with atomic_write(path, "w") as fh:
            fh.write("".join(line + "\n" for line in kept))
        return {"path": path, "writer": SummaryWriter(str(self.output / "tensorboard"),
                                                      purge_step=self.step + 1)}

    def _log(self, log: dict[str, Any] | None, entry: dict[str, Any]) -> None:
        if log is None:
            return
        with open(log["path"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        for k, v in entry.items():
            if k != "step":
                log["writer"].add_scalar(k, v, entry["step"])


def train(config: TrainConfig | dict[str, Any], *, resume: bool = False,
          progress: bool = False) -> dict[str, Any]:
    """Train a network (see :class:`Trainer`); returns the run's summary."""
    cfg = config if isinstance(config, TrainConfig) else train_config_from_dict(config)
    trainer = Trainer(cfg, progress=progress)
    try:
        return trainer.run(resume=resume)
    finally:
        if trainer.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
