"""The training data loader: label shards in, augmented person crops with targets out.

Reads the shards of ``furpe label`` and ``furpe make-synthetic --format webdataset`` with
``webdataset`` (shards split across nodes under DDP with ``split_by_node`` and across loader
workers with ``split_by_worker``), mixes sources with weights (a seeded draw per worker),
keeps the people whose body passes the selection (accept flag, or a minimum score), and turns
each into a square crop of ``crop_size`` pixels with:

* ``image`` (3, S, S) float in [0, 1]; ``K`` (3, 3) the crop's camera (the fitted parameters
  project into the crop with it);
* per part (``body``, ``left_hand``, ``right_hand``, ``face``): ``keypoints_<part>`` (K, 2) in
  crop pixels, ``confidence_<part>`` (K,) (zero where the part is not selected, or outside the
  crop), ``mask_<part>`` (1 when the part's label is used);
* ``params_<block>``: the body model's parameters (rotations follow the crop's rotation and
  flip), ``lost_<block>`` 1 where a flip has no mirror for the block (SMPL-X expressions);
* ``truth`` (0 experts, 1 synthetic); ``flipped`` (1 when mirrored) and ``roll`` (the
  rotation about the optical axis, radians; the global orientation and translation were
  rotated by it before the flip), which undo the augmentation.

Augmentation (:class:`Augment`): scale, rotation about the optical axis, translation jitter,
horizontal flip (left and right swap: hand parts, mirrored keypoints, mirrored parameters,
:mod:`furpe.bodymodels.mirror`), colour, blur and a random occluding rectangle.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import orjson
import torch

from furpe.bodymodels.base import BodyModel
from furpe.bodymodels.mirror import BlockMirror, keypoint_mirror, mate, param_mirror_plan
from furpe.core.camera import PERSON_CROP_EXPAND, crop_transform
from furpe.core.errors import FurpeError
from furpe.core.rotations import compose_rotvec
from furpe.core.vocab import PARTS
from furpe.labels.shards import list_shards
from furpe.synthetic import EXPERT_LANDMARKS

#: The body model's regressor of each part's keypoints in the labels (the built-in experts').
PART_CONVENTIONS = {part: regressor for part, regressor, _, _ in EXPERT_LANDMARKS}


@dataclass(frozen=True)
class Augment:
    """Augmentation ranges (0 switches one off)."""

    scale: tuple[float, float] = (0.8, 1.25)  # crop side / (expand x person box side)
    rotation_deg: float = 30.0  # uniform in +-rotation_deg, with probability rotation_p
    rotation_p: float = 0.5
    shift: float = 0.1  # centre jitter, fraction of the crop side
    flip_p: float = 0.5
    colour: float = 0.2  # per-channel gain in 1 +- colour, brightness likewise
    blur_p: float = 0.1
    occlusion_p: float = 0.2  # a grey rectangle of 10-40% of the crop side

    @staticmethod
    def none() -> "Augment":
        return Augment(scale=(1.0, 1.0), rotation_deg=0.0, rotation_p=0.0, shift=0.0,
                       flip_p=0.0, colour=0.0, blur_p=0.0, occlusion_p=0.0)


@dataclass
class MirrorPlan:
    """What a flip needs to know of the body model, as plain arrays (cheap to send to loader
    workers): keypoint permutations, per block its source block, rows and signs."""

    keypoints: dict[str, np.ndarray]
    blocks: dict[str, BlockMirror]
    sizes: dict[str, tuple[int, ...]]
    counts: dict[str, int]

    @classmethod
    def from_model(cls, model: BodyModel) -> "MirrorPlan":
        keypoints = {p: keypoint_mirror(model, c) for p, c in PART_CONVENTIONS.items()
                     if p in ("body", "face")}
        counts = {p: len(model.regressors[c].names) for p, c in PART_CONVENTIONS.items()}
        sizes = {name: blk.shape(1)[1:] for name, blk in model.blocks.items()}
        blocks = param_mirror_plan(model)
        return cls(keypoints, blocks, sizes, counts)

    def mirror(self, params: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], set[str]]:
        out, lost = {}, set()
        for name, plan in self.blocks.items():
            if name not in params:
                continue
            if plan is None:
                lost.add(name)
                out[name] = params[name]
                continue
            src, rows, sign = plan
            out[name] = np.asarray(params[src])[rows] * sign
        return out, lost


def shard_urls(folder_or_files: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    """The shards of a folder (``labels-*.tar``), or the given list of paths/URLs."""
    if isinstance(folder_or_files, (str, os.PathLike)) and Path(folder_or_files).is_dir():
        urls = [str(p) for p in list_shards(folder_or_files)]
        if not urls:
            raise FurpeError(f"{folder_or_files}: no label shards (labels-*.tar) in this folder")
        return urls
    if isinstance(folder_or_files, (str, os.PathLike)):
        return [str(folder_or_files)]
    return [str(u) for u in folder_or_files]


@dataclass
class PersonCrops:
    """Turns label samples (``{"json": bytes|dict, "jpg": bytes}``) into training examples."""

    plan: MirrorPlan
    crop_size: int = 256
    expand: float = PERSON_CROP_EXPAND
    augment: Augment = field(default_factory=Augment)
    #: Minimum selection score per part for its label to be used; a part not listed uses the
    #: accept flag of the labels. A person is kept when their body label is used.
    min_score: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    #: Augmented views per person, yielded one after the other (2 for the EMA recipe's
    #: consistency loss: with an even batch size, rows 2i and 2i+1 are the same person).
    views: int = 1

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def used(self, verdict: dict[str, Any], part: str) -> bool:
        if not verdict.get("observed"):
            return False
        if part in self.min_score:
            score = (verdict.get("scores") or {}).get("score")
            return score is not None and score >= self.min_score[part]
        return bool(verdict.get("accepted"))

    def __call__(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if self.seed is not None:  # each loader worker (and DDP rank) its own, reproducibly
            self._rng = np.random.default_rng([self.seed, *_worker_identity()])
        for sample in samples:
            doc = sample["json"]
            if isinstance(doc, (bytes, str)):
                doc = orjson.loads(doc)
            if not doc.get("people") or "jpg" not in sample:
                continue
            image = None
            for k, person in enumerate(doc["people"]):
                if not self.used(person["parts"].get("body", {}), "body"):
                    continue
                if image is None:
                    import cv2

                    bgr = cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR)
                    image = bgr[:, :, ::-1]
                for _ in range(self.views):
                    out = self.example(image, doc, k)
                    out["key"] = f"{doc.get('key', sample.get('__key__', ''))}/{k}"
                    yield out

    def example(self, image: np.ndarray, doc: dict[str, Any], k: int,
                rng: np.random.Generator | None = None) -> dict[str, Any]:
        """One augmented crop of person ``k`` of a label document."""
        import cv2

        rng = rng or self._rng
        aug, S = self.augment, self.crop_size
        person = doc["people"][k]
        K = np.asarray(doc["camera"]["matrix"], dtype=np.float64)
        x0, y0, x1, y1 = person["box"]
        side = max(x1 - x0, y1 - y0, 1.0) * self.expand * rng.uniform(*aug.scale)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + rng.uniform(-1, 1, 2) * aug.shift * side
        theta = (math.radians(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
                 if rng.uniform() < aug.rotation_p else 0.0)
        flip = bool(rng.uniform() < aug.flip_p)
        A, Kc, Rz = crop_transform(centre, side, K, S, theta)
        crop = cv2.warpAffine(np.ascontiguousarray(image), A, (S, S), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

        params = {name: np.asarray(v, dtype=np.float64) for name, v in person["params"].items()}
        if "global_orient" in params:
            g = torch.as_tensor(params["global_orient"].reshape(3))
            params["global_orient"] = compose_rotvec(Rz, g).numpy().reshape(
                params["global_orient"].shape)
        if "transl" in params:
            params["transl"] = Rz @ params["transl"]

        kps, conf, mask = {}, {}, {}
        for part in PARTS:
            n = self.plan.counts[part]
            kd = person["keypoints_2d"].get(part)
            use = self.used(person["parts"].get(part, {}), part) and kd is not None
            pts = np.zeros((n, 2))
            cf = np.zeros(n)
            if kd is not None and len(kd["observed"]) == n:
                obs = _points(kd["observed"])
                cf = np.nan_to_num(np.asarray(kd["confidence"], dtype=np.float64))
                pts = np.nan_to_num(obs @ A[:, :2].T + A[:, 2])
                cf = cf * (~np.isnan(obs).any(1))
            inside = (pts >= 0).all(1) & (pts <= S - 1).all(1)
            kps[part], conf[part] = pts, cf * inside * use
            mask[part] = float(use)
        lost: set[str] = set()
        if flip:
            crop = crop[:, ::-1]
            Kc[0, 2] = S - 1 - Kc[0, 2]
            params, lost = self.plan.mirror(params)
            flipped = {}
            for part in PARTS:
                src = mate(part)
                pts, cf = kps[src].copy(), conf[src].copy()
                pts[:, 0] = S - 1 - pts[:, 0]
                if part in self.plan.keypoints:
                    perm = self.plan.keypoints[part]
                    pts, cf = pts[perm], cf[perm]
                flipped[part] = (pts, cf, mask[src])
            kps = {p: v[0] for p, v in flipped.items()}
            conf = {p: v[1] for p, v in flipped.items()}
            mask = {p: v[2] for p, v in flipped.items()}
        crop = self._photometric(np.ascontiguousarray(crop), rng)

        out: dict[str, Any] = {
            "image": crop.transpose(2, 0, 1).astype(np.float32) / 255.0,
            "K": Kc.astype(np.float32),
            "truth": np.float32(doc.get("provenance", {}).get("truth") == "synthetic"),
            "flipped": np.float32(flip),
            "roll": np.float32(theta),
        }
        for part in PARTS:
            out[f"keypoints_{part}"] = kps[part].astype(np.float32)
            out[f"confidence_{part}"] = conf[part].astype(np.float32)
            out[f"mask_{part}"] = np.float32(mask[part])
        for name, size in self.plan.sizes.items():
            value = params.get(name)
            ok = value is not None and np.asarray(value).size == int(np.prod(size))
            out[f"params_{name}"] = (np.asarray(value, dtype=np.float32).reshape(size) if ok
                                     else np.zeros(size, np.float32))
            out[f"lost_{name}"] = np.float32(name in lost or not ok)
        return out

    def _photometric(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import cv2

        aug = self.augment
        img = crop.astype(np.float32)
        if aug.colour > 0:
            gain = 1 + rng.uniform(-aug.colour, aug.colour, 3)
            img = img * gain * (1 + rng.uniform(-aug.colour, aug.colour))
        if rng.uniform() < aug.blur_p:
            k = int(rng.choice([3, 5, 7]))
            img = cv2.GaussianBlur(img, (k, k), 0)
        if rng.uniform() < aug.occlusion_p:
            S = img.shape[0]
            w, h = (rng.uniform(0.1, 0.4, 2) * S).astype(int)
            x, y = rng.integers(0, S - w), rng.integers(0, S - h)
            img[y:y + h, x:x + w] = rng.uniform(0, 255)
        return np.clip(img, 0, 255).astype(np.uint8)


def _points(rows: list) -> np.ndarray:
    """(N, 2) float array of JSON points; ``null`` points or coordinates become NaN."""
    try:
        return np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return np.array([[np.nan, np.nan] if p is None or None in p else p for p in rows],
                        dtype=np.float64).reshape(-1, 2)


def _worker_identity() -> tuple[int, int]:
    """(DDP rank, loader worker id) of the calling process (0s when not distributed)."""
    info = torch.utils.data.get_worker_info()
    rank = 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
    return rank, 0 if info is None else info.id


class _Mix(torch.utils.data.IterableDataset):
    """Samples drawn from several endless datasets with the given probabilities, with a
    seeded generator per worker (reproducible, unlike a process-global one); ``group``
    consecutive samples at a time from the source drawn (the views of one person)."""

    def __init__(self, datasets: list[Any], probs: list[float], seed: int,
                 group: int = 1) -> None:
        self.datasets, self.probs, self.seed = datasets, np.asarray(probs), seed
        self.group = group

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, *_worker_identity(), 7])
        sources = [iter(d) for d in self.datasets]
        while True:
            source = sources[int(rng.choice(len(sources), p=self.probs))]
            try:
                for _ in range(self.group):
                    yield next(source)
            except StopIteration:
                return


def label_dataset(sources: Sequence[tuple[Any, float]] | Any, crops: PersonCrops, *,
                  shuffle: int = 0, repeat: bool = False, seed: int = 0) -> Any:
    """An iterable dataset of training examples from one or more label sources.

    ``sources``: a shard folder / list of shards, or ``[(shards, weight), ...]`` to mix
    sources with those sampling weights. ``shuffle``: a sample shuffle buffer (0: none, in
    shard order). ``repeat``: draw shards with replacement, endlessly and reproducibly (the
    draws depend on ``seed``, the DDP rank and the loader worker only): for step-based
    training and for mixing, so that no source runs out first. Use with
    ``torch.utils.data.DataLoader(ds, batch_size=..., num_workers=...)``: each loader worker
    (and, under DDP, each rank) reads its own shards.
    """
    import webdataset as wds

    if not (isinstance(sources, list) and sources and isinstance(sources[0], tuple)):
        sources = [(sources, 1.0)]

    def one(urls: list[str], k: int) -> Any:
        if repeat:  # shards drawn with replacement, endlessly (each worker its own draws)
            stages = [wds.ResampledShards(urls, seed=seed + 1000 * k, deterministic=True,
                                          empty_check=False), wds.tarfile_to_samples()]
            if shuffle:
                stages.append(wds.shuffle(shuffle, seed=seed + k))
            return wds.DataPipeline(*stages, crops)
        ds = wds.WebDataset(urls, shardshuffle=len(urls) if shuffle else False,
                            nodesplitter=wds.split_by_node,
                            workersplitter=wds.split_by_worker, empty_check=False,
                            seed=seed if shuffle else None)
        if shuffle:
            ds = ds.shuffle(shuffle, seed=seed)
        return ds.compose(crops)

    sets = [one(shard_urls(src), k) for k, (src, _) in enumerate(sources)]
    if len(sets) == 1:
        return sets[0]
    weights = [float(w) for _, w in sources]
    return _Mix(sets, [w / sum(weights) for w in weights], seed, crops.views)


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack examples into batched tensors."""
    import torch

    return {k: [e[k] for e in examples] if isinstance(examples[0][k], str)
            else torch.as_tensor(np.stack([e[k] for e in examples])) for k in examples[0]}
