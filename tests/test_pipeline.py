"""The pipeline's stages and sessions: no write-back, per-video expert state, per-person warm
starts, a body model shared per device, and the configuration in every result."""
from __future__ import annotations

import json

import numpy as np
from conftest import spy_fit
import pytest
import torch

from furpe.config import ReconstructConfig, config_from_dict, load_config
from furpe.core.camera import intrinsics
from furpe.core.registry import register, unregister
from furpe.fitting.fit import FitConfig, Fitter
from furpe.pipeline import Reconstructor
from furpe.selection import SelectionScheme, select
from furpe.synthetic import exact_observations, sample_params

W = H = 480
K = intrinsics(W, H)
FAST = FitConfig(iters_global=10, iters_body=10, iters_parts=10)


def _people(model, params):
    """Exact observations of the posed people ``params`` (batched)."""
    with torch.no_grad():
        return exact_observations(model, model(params), K)


def _person(model, seed: int, x: float):
    """One standing person's parameters, ``x`` metres right of the optical axis."""
    p = sample_params(model, np.random.default_rng(seed), distance=4.0)
    p["transl"][0, 0] = x
    return p


class Scripted:
    """A body expert replaying prepared observations, one list of people per call; it
    records its mode and how often its tracking state is reset."""

    instances: list["Scripted"] = []
    script: list[list] = []

    def __init__(self, video: bool = False, max_people: int = 4) -> None:
        self.video, self.max_people = video, max_people
        self.name, self.parts = "test_scripted", ("body", "left_hand", "right_hand", "face")
        self.resets, self.calls = 0, 0
        Scripted.instances.append(self)

    def observe(self, image, people):
        self.calls += 1
        return people + list(Scripted.script.pop(0))

    def reset(self) -> None:
        self.resets += 1


@pytest.fixture()
def scripted():
    Scripted.instances, Scripted.script = [], []
    register("expert", "test_scripted", Scripted)
    yield Scripted
    unregister("expert", "test_scripted")


@pytest.fixture()
def rec(anny_model, scripted):
    config = ReconstructConfig(device="cpu", experts=("test_scripted",), fit=FAST)
    return Reconstructor(config, body_model=anny_model)


def test_images_are_single_and_each_video_resets_the_experts(rec, anny_model, scripted):
    a = _people(anny_model, _person(anny_model, 1, 0.0))
    image = np.zeros((H, W, 3), np.uint8)
    scripted.script = [a, a, a, a]
    rec.reconstruct_image(image)
    with rec.video() as s:
        s.reconstruct_frame(image)
    with rec.video() as s:
        s.reconstruct_frame(image)
    rec.reconstruct_image(image)
    static, tracking = scripted.instances
    assert (static.video, static.calls, static.resets) == (False, 2, 0)
    assert (tracking.video, tracking.calls, tracking.resets) == (True, 2, 2)


def test_a_new_person_does_not_cold_start_the_others(rec, anny_model, scripted, monkeypatch):
    pa, pb = _person(anny_model, 1, -0.6), _person(anny_model, 2, 0.6)
    a, b = _people(anny_model, pa), _people(anny_model, pb)
    image = np.zeros((H, W, 3), np.uint8)
    scripted.script = [a, b + a]  # frame 2: someone new enters, listed first
    calls = spy_fit(monkeypatch, rec.fitter)

    with rec.video() as session:
        first = session.reconstruct_frame(image)
        second = session.reconstruct_frame(image)
    assert calls[0] == (None, None)
    init, warm = calls[1]
    assert warm.tolist() == [False, True]
    prev = first.people[0].params
    for k in prev:  # the person seen before starts from their last parameters
        assert np.allclose(init[k][1].numpy(), prev[k]), k
    assert len(second.people) == 2
    # Both land where they are: the newcomer left of the first person.
    xs = [p.vertices[:, 0].mean() for p in second.people]
    assert xs[0] > 0.3 and xs[1] < -0.3


def test_selection_returns_new_parameters(anny_model):
    (person,) = _people(anny_model, _person(anny_model, 3, 0.0))
    person.parts["face"].score = 0.1  # a face the selection must reject
    fitter = Fitter(anny_model, FAST)
    fit = fitter.fit([person], K)
    before = {k: v.clone() for k, v in fit.params.items()}
    chosen = select(SelectionScheme(), anny_model, [person], fit)
    assert not chosen.verdicts[0]["face"].accepted and chosen.verdicts[0]["body"].accepted
    assert chosen.changed
    neutral = anny_model.neutral_params(1)
    for name, blk in anny_model.blocks.items():
        assert torch.equal(fit.params[name], before[name])  # the fit is left as it was
        if blk.part == "face":
            assert torch.equal(chosen.params[name], neutral[name])
        else:
            assert torch.equal(chosen.params[name], fit.params[name])
    assert not torch.equal(before["facial_actions"], neutral["facial_actions"])


def test_body_model_is_shared_per_device_only(anny_model):
    from furpe.bodymodels import load_body_model

    assert load_body_model("anny") is anny_model
    other = load_body_model("anny", device="meta")
    assert other is not anny_model and other is load_body_model("anny", device="meta")
    assert next(other.buffers()).device.type == "meta"
    assert all(t.device.type == "cpu" for t in anny_model.buffers())


def test_results_carry_their_configuration(rec, anny_model, scripted, tmp_path):
    from furpe.io.outputs import frame_to_dict, write_json

    scripted.script = [_people(anny_model, _person(anny_model, 4, 0.0))]
    frame = rec.reconstruct_image(np.zeros((H, W, 3), np.uint8))
    assert frame.config == rec.config.to_dict()
    path = write_json(tmp_path / "r.json", frame_to_dict(frame, "x.png"))
    assert load_config(path) == rec.config
    assert config_from_dict(json.loads(json.dumps(rec.config.to_dict()))) == rec.config


def test_shipped_configurations_load_and_build() -> None:
    from pathlib import Path

    from furpe.experts import build_experts

    from furpe.training.config import load_train_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    train = [p for p in files if p.name.startswith("train-")]
    assert files and len(train) >= 4  # the three recipes and the small CPU config
    for path in files:
        if path in train:
            recipe = load_train_config(path).recipe
            assert path.stem in (f"train-{recipe}", "train-small"), path
            continue
        config = load_config(path)
        experts = build_experts(config.experts, config.expert_options)
        assert [e.name for e in experts] == list(config.experts), path
