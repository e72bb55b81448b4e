"""``data.feature_cache``: frozen encoders' features computed once, training from the pool.

The network given precomputed features gives what it gives on the image; a cached run
learns, keeps its chunks on disk, rebuilds a lost chunk identically, resumes exactly without
running the encoders again, and the configuration refuses what cannot be cached.
"""
from __future__ import annotations

import math

import pytest
import torch

from furpe.core.errors import SetupError
from furpe.training import features as feature_cache
from furpe.training.config import train_config_from_dict
from furpe.training.losses import label_boxes
from furpe.training.trainer import Trainer

from test_training import (NO_AUGMENT, TINY_NETWORK, _Interrupted, _merge,  # noqa: F401
                           interrupt_after, label_shards, one_thread, read_log, tiny_config)

FROZEN = {**TINY_NETWORK, "freeze": ["body", "hand", "head"], "dropout": 0.0}


def cached_config(output, shards, **over):
    cfg = tiny_config(output, shards, **{
        "steps": 8, "batch_size": 2, "checkpoint_every": 4, "network": FROZEN,
        "data": {"feature_cache": 10, "augment": NO_AUGMENT, "shuffle": 0},
        "optim": {"schedule": "constant"}})
    return _merge(cfg, over)


def test_forward_on_features_matches_forward_on_the_image(label_shards, tmp_path):
    trainer = Trainer(train_config_from_dict(cached_config(tmp_path / "run", label_shards)))
    net = trainer.net.eval()
    batch = next(iter(trainer._loader(0)))
    boxes, valid = label_boxes(batch, net.config.input_size)
    valid = torch.ones_like(valid)  # the label boxes everywhere: the same crops both ways
    with torch.no_grad():
        direct = net(batch["image"], batch["K"], boxes, valid)
        cached = net(None, batch["K"], boxes, valid, features=net.encode(batch["image"], boxes,
                                                                          valid))
    for key in ("body", "camera", "boxes", "part_left_hand", "part_right_hand", "part_face"):
        diff = float((direct[key] - cached[key]).abs().max())
        print(f"{key}: max abs difference {diff:.2e}")
        assert diff < 1e-5, key
    # and the parts did read their features (not the body's estimate alone)
    other = {k: v.roll(1, 0) for k, v in net.encode(batch["image"], boxes, valid).items()}
    with torch.no_grad():
        swapped = net(None, batch["K"], boxes, valid, features=other)
    assert float((swapped["part_face"] - cached["part_face"]).abs().max()) > 1e-4


def test_cached_run_learns_keeps_chunks_and_rebuilds_them_identically(label_shards, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(feature_cache, "CHUNK", 4)  # 10 examples: chunks of 4, 4 and 2
    cfg = train_config_from_dict(cached_config(tmp_path / "run", label_shards,
                                               steps=30, checkpoint_every=30))
    trainer = Trainer(cfg)
    pool = feature_cache.build_pool(trainer)
    folder = tmp_path / "run" / "features"
    chunks = sorted(p.name for p in folder.glob("*.pt"))
    assert chunks == ["rank0-0000.pt", "rank0-0001.pt", "rank0-0002.pt"]

    def pool_loss() -> float:
        trainer.net.eval()
        with torch.no_grad():
            return float(trainer.step_module(pool)[0])

    before = pool_loss()
    trainer.run()  # reads the chunks just made
    after = pool_loss()
    print(f"cached run: loss on the pool {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before
    for k, v in trainer.pool.items():
        torch.testing.assert_close(v, pool[k])
    assert len(pool["K"]) == 10 and pool["feature_body"].shape[1] == trainer.net.body_encoder.dim
    assert "image" not in pool

    # a lost chunk is made again, identically (the stream is seeded); kept chunks are not
    (folder / "rank0-0001.pt").unlink()
    calls = []
    encode = type(trainer.net).encode

    def counted(self, image, boxes, valid):
        calls.append(len(image))
        return encode(self, image, boxes, valid)

    monkeypatch.setattr(type(trainer.net), "encode", counted)
    again = feature_cache.build_pool(Trainer(cfg))
    assert sum(calls) == 4  # the missing chunk only
    for k, v in pool.items():
        torch.testing.assert_close(again[k], v, msg=lambda m, k=k: f"{k}: {m}")
    # a smaller pool reads the chunks it needs; a larger one makes only the new examples
    calls.clear()
    smaller = train_config_from_dict(cached_config(tmp_path / "run", label_shards,
                                                   data={"feature_cache": 8}))
    few = feature_cache.build_pool(Trainer(smaller))
    assert sum(calls) == 0 and len(few["K"]) == 8
    torch.testing.assert_close(few["feature_body"], pool["feature_body"][:8])
    larger = train_config_from_dict(cached_config(tmp_path / "run", label_shards,
                                                  data={"feature_cache": 13}))
    more = feature_cache.build_pool(Trainer(larger))
    assert sum(calls) == 5  # the last chunk (2 examples) grows to 4, then one more
    torch.testing.assert_close(more["feature_body"][:10], pool["feature_body"])
    # other heads read the same chunks: the features do not depend on them
    calls.clear()
    heads = train_config_from_dict(cached_config(
        tmp_path / "run", label_shards, network={**FROZEN, "hidden": [24], "iterations": 2},
        data={"feature_cache": 13}))
    feature_cache.build_pool(Trainer(heads))
    assert sum(calls) == 0
    # a chunk made with other settings is made again
    calls.clear()
    other = train_config_from_dict(cached_config(tmp_path / "run", label_shards, seed=1))
    feature_cache.build_pool(Trainer(other))
    assert sum(calls) == 10


def test_cached_run_resumes_exactly_without_the_encoders(label_shards, tmp_path, monkeypatch):
    cfg = cached_config(tmp_path / "a", label_shards)
    a = Trainer(train_config_from_dict(cfg))
    a.run()
    log_a = read_log(tmp_path / "a")

    cfg_b = cached_config(tmp_path / "b", label_shards)
    interrupt_after(monkeypatch, 4)
    with pytest.raises(_Interrupted):
        Trainer(train_config_from_dict(cfg_b)).run()
    monkeypatch.undo()

    def refuse(*args, **kwargs):
        raise AssertionError("the encoders ran again on resume")

    monkeypatch.setattr(type(a.net), "encode", refuse)
    b = Trainer(train_config_from_dict(cfg_b))
    b.run(resume=True)
    log_b = read_log(tmp_path / "b")
    assert [e["step"] for e in log_b] == list(range(1, 9))
    for ea, eb in zip(log_a, log_b):
        assert eb["loss"] == pytest.approx(ea["loss"], rel=1e-6), ea["step"]
    assert len({round(e["loss"], 6) for e in log_a}) > 4  # batches differ from step to step
    assert all(math.isfinite(e["loss"]) for e in log_a)


def test_pool_batches_keep_groups_together():
    pool = {"id": torch.arange(12) // 2, "K": torch.zeros(12, 3, 3)}
    batches = feature_cache.pool_batches(pool, 4, seed=0, group=2)
    seen = []
    for _ in range(3):  # one pass: 6 pairs in batches of 2 pairs
        ids = next(batches)["id"]
        assert torch.equal(ids[0::2], ids[1::2])
        seen += ids[0::2].tolist()
    assert sorted(seen) == list(range(6)) and seen != sorted(seen)  # shuffled by pairs


def test_ema_trains_from_the_pool_on_both_views(label_shards, tmp_path):
    """The ema recipe on cached features: the pool holds both views of each person side by
    side, the teacher reads the other view's features, and it moves at the scheduled rate."""
    from furpe.training.trainer import seed_all

    cfg = train_config_from_dict(cached_config(
        tmp_path / "run", label_shards, recipe="ema", steps=8,
        data={"augment": {"scale": [0.9, 1.1], "rotation_deg": 20.0, "rotation_p": 1.0}}))
    trainer = Trainer(cfg)
    start = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    trainer.run()
    keys = [k for batch, _ in zip(trainer._loader(seed_all(cfg.seed, 0, 0, 1)), range(5))
            for k in batch["key"]]
    assert keys[0::2] == keys[1::2]  # the pool's stream: two views per person in a row
    pool = trainer.pool
    assert not torch.equal(pool["feature_body"][0], pool["feature_body"][1])  # other views
    log = read_log(tmp_path / "run")
    assert {"consistency_body", "consistency_hands", "consistency_face"} <= set(log[-1])
    assert all(e["consistency_body"] > 0 for e in log)
    teacher, student = trainer.teacher.state_dict(), trainer.net.state_dict()
    moved = sum(float((teacher[k] - start[k]).abs().sum()) for k in start
                if start[k].dtype.is_floating_point)
    trained = sum(float((student[k] - start[k]).abs().sum()) for k in start
                  if start[k].dtype.is_floating_point)
    print(f"teacher moved {moved:.3g}, student {trained:.3g}")
    assert 0 < moved < 0.2 * trained


@pytest.mark.parametrize("over, match", [
    ({"network": {**TINY_NETWORK, "freeze": ["body", "hand"]}}, "network.freeze lacks head"),
    ({"recipe": "ema", "batch_size": 2, "data": {"feature_cache": 11}}, "even for the ema"),
    ({"distill": {"body": True}}, "distill"),
    ({"data": {"feature_cache": 1}, "batch_size": 2}, "at least one batch"),
])
def test_feature_cache_config_errors(tmp_path, over, match):
    cfg = cached_config(tmp_path / "run", tmp_path, **over)
    with pytest.raises(SetupError, match=match):
        train_config_from_dict(cfg)


def test_pool_keeps_every_example_of_a_batch_that_crosses_a_chunk(label_shards, tmp_path,
                                                                   monkeypatch):
    """Batches of 2 and chunks of 3: the pool is the stream's first examples, in order, none
    skipped where a batch ends one chunk and starts the next."""
    from furpe.training.trainer import seed_all

    monkeypatch.setattr(feature_cache, "CHUNK", 3)
    trainer = Trainer(train_config_from_dict(cached_config(tmp_path / "run", label_shards,
                                                           data={"feature_cache": 7})))
    pool = feature_cache.build_pool(trainer)
    assert len(pool["K"]) == 7
    stream = []
    for batch in trainer._loader(seed_all(trainer.config.seed, 0, 0, 1)):
        stream.append(batch)
        if sum(len(b["K"]) for b in stream) >= 7:
            break
    for key in ("K", "keypoints_body"):
        expected = torch.cat([b[key] for b in stream])[:7]
        torch.testing.assert_close(pool[key], expected, msg=lambda m, key=key: f"{key}: {m}")
    # the examples differ from one another, so a skipped one would show
    assert not torch.equal(pool["keypoints_body"][2], pool["keypoints_body"][3])
