"""Frozen encoders' features, computed once and reused (``data.feature_cache``).

When every encoder of the network is frozen (``network.freeze``), their features do not
change during training, yet they cost nearly all of a step's time: the encoders' forward,
not the regressors, sets the training rate of the shipped configuration on a CPU. With
``data.feature_cache: N`` the trainer takes the first N augmented examples of the data
stream once, runs the encoders on them (the attention crops at the labels' part boxes, at
the box head's starting boxes where a label has none: :meth:`WholeBodyNet.encode`) and
keeps the features with the targets; training then draws its batches from that pool,
reshuffled every pass. Each example is seen with one augmentation only, so N should hold
several views of every person (the loader draws one per visit). The ema recipe's loader
draws two views of each person, one after the other: the pool keeps them side by side and
its batches are shuffled by pairs, so the teacher still reads the other view of the same
person (see :mod:`furpe.training.recipes`).

Files: ``<output>/features/rank<r>-<k>.pt``, chunks of :data:`CHUNK` examples, each written
atomically with the settings that made it (:func:`fingerprint`). A run stopped while it
builds the pool keeps its finished chunks and the next run continues from them; chunks
made with other settings are made again.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from furpe.core.files import atomic_write
from furpe.training.losses import label_boxes

if TYPE_CHECKING:
    from furpe.training.trainer import Trainer

#: Examples per chunk file.
CHUNK = 512

#: How the pool reads the example stream (in the fingerprint): 2 keeps the rest of a batch
#: that ends one chunk for the next one.
STREAM_VERSION = 2


#: Network settings of the heads only: the encoders' features do not depend on them.
HEAD_ONLY = ("hidden", "iterations", "dropout", "merge")


def fingerprint(config: Any) -> dict[str, Any]:
    """The settings a cached example depends on (a :class:`TrainConfig`'s). Not the pool's
    size: chunk k holds the same examples whatever it is, so a pool can grow or shrink; nor
    the heads' settings (:data:`HEAD_ONLY`), so runs that differ in them share a pool."""
    d = config.to_dict()
    data = {k: v for k, v in d["data"].items() if k != "feature_cache"}
    network = {k: v for k, v in d["network"].items() if k not in HEAD_ONLY}
    return {k: d[k] for k in ("body_model", "model_path", "seed", "label_boxes",
                              "batch_size")} | {"network": network, "data": data,
                                                "stream": STREAM_VERSION,
                                                "views": views(config)}


def views(config: Any) -> int:
    """Views of each person the loader draws in a row: two for the ema recipe, else one."""
    return 2 if config.recipe == "ema" else 1


def _load_chunk(path: Path, expected: dict[str, Any], size: int
                ) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        chunk = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a file that does not load is made again
        return None
    if chunk.get("fingerprint") != expected or len(chunk["examples"]["K"]) != size:
        return None
    return chunk["examples"]


def build_pool(trainer: "Trainer", progress: bool = False) -> dict[str, torch.Tensor]:
    """The cached examples of ``trainer``'s rank, made (or completed) on disk first: every
    tensor of a training batch but the image, plus ``feature_<branch>``."""
    from furpe.io.console import progress_bar
    from furpe.training.trainer import seed_all

    cfg, net = trainer.config, trainer.net
    total = int(cfg.data.feature_cache)
    folder = trainer.output / "features"
    expected = fingerprint(cfg)
    chunks = math.ceil(total / CHUNK)
    loaded: list[dict[str, torch.Tensor] | None] = [
        _load_chunk(folder / f"rank{trainer.rank}-{k:04d}.pt", expected,
                    min(CHUNK, total - k * CHUNK)) for k in range(chunks)]
    if all(c is not None for c in loaded):
        return _cat(loaded, total)
    was_training = net.training
    net.eval()
    size = cfg.network.input_size
    # the stream must be the same on every run for the kept chunks to stay valid
    loader = trainer._loader(seed_all(cfg.seed, 0, trainer.rank, 1))
    pending: dict[str, list[torch.Tensor]] = {}
    held, k = 0, 0
    bar = progress_bar(progress and trainer.rank == 0, total=total, unit="example",
                       desc="features")
    with bar:
        for batch in loader:
            batch = {n: v for n, v in batch.items() if torch.is_tensor(v)}
            start, n = 0, len(batch["K"])
            while start < n and k < chunks:  # a batch may end one chunk and start the next
                size_k = min(CHUNK, total - k * CHUNK)
                take = min(n - start, size_k - held)
                part = {name: v[start:start + take] for name, v in batch.items()}
                start += take
                if loaded[k] is None:  # run the encoders; kept chunks only consume the stream
                    _encode(trainer, part, size)
                    for name, v in part.items():
                        pending.setdefault(name, []).append(v)
                held += take
                bar.update(take)
                if held == size_k:
                    if loaded[k] is None:
                        loaded[k] = {name: torch.cat(v) for name, v in pending.items()}
                        path = folder / f"rank{trainer.rank}-{k:04d}.pt"
                        with atomic_write(path) as fh:
                            torch.save({"fingerprint": expected, "examples": loaded[k]}, fh)
                    pending, held, k = {}, 0, k + 1
            if k == chunks:
                break
    net.train(was_training)
    return _cat(loaded, total)


def _encode(trainer: "Trainer", batch: dict[str, torch.Tensor], size: int) -> None:
    """Replace ``batch``'s image by the frozen encoders' features (``feature_<branch>``)."""
    cfg = trainer.config
    image = batch.pop("image").to(trainer.device)
    if cfg.label_boxes:
        boxes, valid = label_boxes({n: v.to(image.device) for n, v in batch.items()}, size)
    else:
        boxes = torch.zeros(len(image), 3, 3, device=image.device)
        valid = torch.zeros(len(image), 3, device=image.device)
    for name, f in trainer.net.encode(image, boxes, valid).items():
        batch[f"feature_{name}"] = f.float().cpu()


def _cat(chunks: list[dict[str, torch.Tensor] | None], total: int) -> dict[str, torch.Tensor]:
    out = {n: torch.cat([c[n] for c in chunks]) for n in chunks[0]}
    assert all(len(v) == total for v in out.values())
    return out


def pool_batches(pool: dict[str, torch.Tensor], batch_size: int, seed: int, group: int = 1
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of the pool: a seeded permutation per pass (the last partial batch
    of a pass is dropped). ``group`` consecutive examples (the views of one person) stay
    together, in their order; ``batch_size`` is then a multiple of it."""
    generator = torch.Generator().manual_seed(seed)
    n = len(pool["K"]) // group
    per = batch_size // group
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - per + 1, per):
            rows = (order[i:i + per, None] * group + torch.arange(group)).flatten()
            yield {name: v[rows] for name, v in pool.items()}
