"""``furpe train``'s configuration: one YAML file, every key checked.

A file is a (partial) mapping of :class:`TrainConfig`; missing keys keep their defaults and
an unknown key is an error that names it. The shipped recipes are in ``configs/train-*.yaml``
(docs/training.md explains every key).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from furpe.config import dataclass_from_mapping, read_mapping
from furpe.core.errors import SetupError
from furpe.core.files import jsonable
from furpe.networks.wholebody import NetworkConfig
from furpe.training.data import Augment

RECIPES = ("standard", "multiloss", "ema")


@dataclass
class SourceConfig:
    """A folder of label shards and its sampling weight."""

    shards: str
    weight: float = 1.0


@dataclass
class DataConfig:
    sources: tuple[SourceConfig, ...] = ()
    #: Minimum selection score per part (``body``, ``left_hand``, ...); a part not listed
    #: uses the labels' accept flags.
    min_score: dict[str, float] = field(default_factory=dict)
    #: False: every observed part is used, accepted or not (the "no selection" ablation).
    selection: bool = True
    shuffle: int = 256
    #: Loader worker processes (0: in the training process).
    workers: int = 1
    augment: Augment = field(default_factory=Augment)
    #: Examples whose frozen-encoder features are computed once and reused (0: the
    #: encoders run every step); needs every encoder frozen (furpe.training.features).
    feature_cache: int = 0


@dataclass
class LossConfig:
    """Weights by term kind and part (see :mod:`furpe.training.losses`)."""

    params: dict[str, float] = field(default_factory=lambda: {
        "global": 1.0, "body": 1.0, "shape": 1.0, "left_hand": 1.0, "right_hand": 1.0,
        "face": 1.0})
    transl: float = 1.0
    keypoints_2d: dict[str, float] = field(default_factory=lambda: {
        "body": 5.0, "left_hand": 5.0, "right_hand": 5.0, "face": 5.0})
    keypoints_3d: dict[str, float] = field(default_factory=lambda: {
        "body": 25.0, "left_hand": 5.0, "right_hand": 5.0, "face": 2.0})
    boxes: float = 1.0
    prior_shape: float = 0.01
    prior_face: float = 0.01

    def weight(self, term: str) -> float:
        kind, part = term.split("_", 1)
        table = {"param": self.params, "kp2d": self.keypoints_2d, "kp3d": self.keypoints_3d}
        if kind in table:
            return float(table[kind].get(part, 0.0))
        return float({"transl": self.transl, "box": self.boxes}.get(kind, 0.0)) or float(
            getattr(self, term, 0.0))


@dataclass
class DistillConfig:
    """Feature distillation from the frozen expert networks, per part."""

    body: bool = False
    hands: bool = False
    face: bool = False
    weight: float = 1.0
    temperature: float = 1.0


@dataclass
class MultilossConfig:
    """Learned per-group uncertainty weights (``s = log sigma^2``)."""

    lr: float = 1e-3


@dataclass
class EMAConfig:
    """EMA teacher: decay from ``base`` to 1 (cosine), consistency loss weight, which
    weights ``model.pt`` gets (``teacher`` or ``student``)."""

    base: float = 0.996
    consistency: float = 1.0
    export: str = "teacher"


@dataclass
class OptimConfig:
    lr: float = 1e-4
    #: Learning rate of the encoders that train (pretrained backbones are usually tuned
    #: slower than the heads); ``None``: ``lr``.
    encoder_lr: float | None = None
    weight_decay: float = 1e-4
    #: ``constant``, ``cosine`` (to 1% of lr) or ``step`` (x gamma at each milestone).
    schedule: str = "cosine"
    warmup: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    grad_clip: float = 5.0


@dataclass
class TrainConfig:
    recipe: str = "standard"
    body_model: str = "anny"
    model_path: str | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    multiloss: MultilossConfig = field(default_factory=MultilossConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: Training length: ``steps``, or ``epochs`` over the people the shard indexes count.
    steps: int | None = 1000
    epochs: float | None = None
    batch_size: int = 16
    #: Use the labels' part boxes for the attention crops where they exist (else predicted).
    label_boxes: bool = True
    seed: int = 0
    output: str = "runs/train"
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    #: bfloat16 autocast on CUDA (ignored on CPU).
    amp: bool = True
    #: torch threads per process (0: torch's default).
    threads: int = 0

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise SetupError(f"train config: recipe must be one of {', '.join(RECIPES)}, "
                             f"not '{self.recipe}'")
        if (self.steps is None) == (self.epochs is None):
            raise SetupError("train config: give exactly one of steps and epochs")
        if self.batch_size < 1 or (self.recipe == "ema" and self.batch_size % 2):
            raise SetupError("train config: batch_size must be positive (and even for ema: "
                             "two views per person)")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise SetupError("train config: checkpoint_every and log_every must be positive")
        if self.optim.schedule not in ("constant", "cosine", "step"):
            raise SetupError("train config: optim.schedule must be constant, cosine or step")
        if self.ema.export not in ("teacher", "student"):
            raise SetupError("train config: ema.export must be teacher or student")
        if self.data.feature_cache:
            self._check_feature_cache()

    def _check_feature_cache(self) -> None:
        n = self.data.feature_cache
        if n < self.batch_size:
            raise SetupError(f"train config: data.feature_cache ({n}) must hold at least one "
                             f"batch ({self.batch_size})")
        branches = ("body", "hand", "head") if self.network.parts else ("body",)
        moving = [b for b in branches if b not in self.network.freeze]
        if moving:
            raise SetupError("train config: data.feature_cache needs frozen encoders; "
                             f"network.freeze lacks {', '.join(moving)}")
        if self.recipe == "ema" and n % 2:
            raise SetupError(f"train config: data.feature_cache ({n}) must be even for the ema "
                             "recipe (it keeps both views of each person)")
        if self.distill.body or self.distill.hands or self.distill.face:
            raise SetupError("train config: data.feature_cache does not work with distill "
                             "(the experts read the crops, which are not kept)")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def train_config_from_dict(data: Any) -> TrainConfig:
    """A validated :class:`TrainConfig` from a (partial) mapping."""
    if data is None:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("losses"), dict):
        defaults = LossConfig()
        merged = dict(data["losses"])
        for key in ("params", "keypoints_2d", "keypoints_3d"):  # partial tables override
            if isinstance(merged.get(key), dict):
                merged[key] = {**getattr(defaults, key), **merged[key]}
        data = {**data, "losses": merged}
    try:
        return dataclass_from_mapping(TrainConfig, data)
    except TypeError as exc:  # a missing required key of a nested record
        raise SetupError(f"train config: {exc}") from None


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training configuration file (``.yaml`` or ``.json``)."""
    try:
        return train_config_from_dict(read_mapping(path))
    except SetupError as exc:
        message = str(exc).removeprefix("config: ").removeprefix("train config: ")
        raise SetupError(f"--config {path}: {message}") if str(path) not in message else exc
