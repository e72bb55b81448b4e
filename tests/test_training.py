"""Training: the three recipes learn, their loss parameters and teachers move, segments
resume exactly, two DDP processes stay in step, and the configuration is checked.

The runs are CPU-sized (ResNet-18 at 1/8 width, 128-pixel crops) on a few synthetic people
made here (``furpe make-synthetic --format webdataset``). The label shards and the finished
uninterrupted run are built once per session (``tests/test_network.py`` reuses them).
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

from furpe.cli import main
from furpe.core.errors import SetupError
from furpe.labels import iter_samples, list_shards
from furpe.networks.params import from_model_params
from furpe.training.config import load_train_config, train_config_from_dict
from furpe.training.data import Augment, MirrorPlan, PersonCrops
from furpe.training.losses import Canonical, ema_decay, ema_update, label_boxes, make_teacher
from furpe.training.trainer import Trainer

#: The CPU-sized network of every run here.
TINY_NETWORK = {"body_backbone": "resnet18", "hand_backbone": "resnet18",
                "head_backbone": "resnet18", "width": 0.125, "input_size": 128,
                "body_size": 96, "hand_size": 48, "head_size": 48, "hidden": [64],
                "iterations": 2}
NO_AUGMENT = {"scale": [1, 1], "rotation_deg": 0, "rotation_p": 0, "shift": 0, "flip_p": 0,
              "colour": 0, "blur_p": 0, "occlusion_p": 0}

# Session-wide results, so that a fixture imported by another test module is built once.
_BUILT: dict[str, Any] = {}


def _once(key: str, make: Callable[[], Any]) -> Any:
    if key not in _BUILT:
        _BUILT[key] = make()
    return _BUILT[key]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def tiny_config(output: Path, shards: Path | str, **over: Any) -> dict[str, Any]:
    """The smoke configuration (augmentation on, cosine LR), with ``over`` merged in."""
    cfg = {"recipe": "standard", "steps": 6, "batch_size": 2, "checkpoint_every": 3,
           "log_every": 1, "output": str(output), "threads": 1, "network": TINY_NETWORK,
           "data": {"sources": [{"shards": str(shards)}], "workers": 0, "shuffle": 8},
           "optim": {"lr": 1e-3}}
    return _merge(cfg, over)


def read_log(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def label_shards(tmp_path_factory, anny_model) -> Path:
    """Four synthetic people in two label shards of two."""
    def make() -> Path:
        out = tmp_path_factory.mktemp("train-labels")
        assert main(["make-synthetic", str(out), "--n", "4", "--size", "224", "--format",
                     "webdataset", "--shard-size", "2", "-q"]) == 0
        assert len(list_shards(out / "shards")) == 2
        return out / "shards"
    return _once("label_shards", make)


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory, label_shards) -> Trainer:
    """A finished 6-step standard run (two checkpoint segments), augmentation and dropout
    on: the reference of the resume test, and a trained network for the inference tests."""
    def make() -> Trainer:
        out = tmp_path_factory.mktemp("run-a") / "run"
        trainer = Trainer(train_config_from_dict(tiny_config(out, label_shards)))
        trainer.run()
        return trainer
    return _once("uninterrupted_run", make)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread (as the runs' ``threads: 1``): tiny networks gain nothing from more,
    and on a busy machine competing OpenMP threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the recipes learn ------------------------------------------------------------------------

#: Overfitting runs: one fixed shard (two people), no augmentation, no dropout, constant LR,
#: no shuffling, so every batch holds the same people and the loss curve is smooth.
RECIPE_RUNS = {
    "standard+distill": {"recipe": "standard", "steps": 6, "batch_size": 2,
                         "distill": {"body": True, "hands": True, "face": True}},
    "multiloss": {"recipe": "multiloss", "steps": 8, "batch_size": 2,
                  "multiloss": {"lr": 0.01}},
    "ema": {"recipe": "ema", "steps": 8, "batch_size": 4},  # two views of both people
}


class RecipeRun:
    def __init__(self, trainer: Trainer, before: dict[str, Any]) -> None:
        self.trainer = trainer
        self.before = before
        self.log = read_log(trainer.output)


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory, label_shards) -> Callable[[str], RecipeRun]:
    def run(name: str) -> RecipeRun:
        def make() -> RecipeRun:
            over = RECIPE_RUNS[name]
            cfg = tiny_config(tmp_path_factory.mktemp(name.replace("+", "-")) / "run",
                              list_shards(label_shards)[0], **over)
            cfg = _merge(cfg, {"checkpoint_every": over["steps"],
                               "network": {"dropout": 0.0},
                               "data": {"shuffle": 0, "augment": NO_AUGMENT},
                               "optim": {"schedule": "constant"}})
            trainer = Trainer(train_config_from_dict(cfg))
            sm = trainer.step_module
            before = {"net": _clone(trainer.net.state_dict()),
                      "converters": None if sm.distiller is None
                      else _clone(sm.distiller.converters.state_dict()),
                      "teacher": None if trainer.teacher is None
                      else _clone(trainer.teacher.state_dict())}
            trainer.run()
            return RecipeRun(trainer, before)
        return _once(f"recipe:{name}", make)
    return run


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Euclidean distance over the floating-point entries of two state dicts."""
    return math.sqrt(sum(float((a[k].double() - b[k].double()).pow(2).sum())
                         for k in a if a[k].dtype.is_floating_point))


@pytest.mark.parametrize("name", [
    pytest.param("standard+distill", marks=pytest.mark.slow),
    "multiloss",
    pytest.param("ema", marks=pytest.mark.slow)])
def test_every_recipe_overfits_a_fixed_set(recipe_run, name):
    run = recipe_run(name)
    losses = [e["loss"] for e in run.log]
    assert [e["step"] for e in run.log] == list(range(1, RECIPE_RUNS[name]["steps"] + 1))
    assert all(math.isfinite(v) for v in losses)
    k = 2 if len(losses) < 8 else 3
    first, last = np.mean(losses[:k]), np.mean(losses[-k:])
    print(f"{name}: loss {first:.3f} -> {last:.3f} ({losses})")
    assert last < 0.85 * first, losses
    # and the network's weights moved (the run trained it)
    assert _distance(run.trainer.net.state_dict(), run.before["net"]) > 0


def test_frozen_mediapipe_encoder_learns_the_orientation(label_shards, tmp_path):
    """A frozen bundled encoder's feature varies by ~0.01 between people: unless the network
    standardises it, the regressor cannot tell people apart and not even one fixed batch is
    learned (the orientation error stayed at its starting value)."""
    zero = {k: 0.0 for k in ("body", "left_hand", "right_hand", "face")}
    cfg = tiny_config(tmp_path / "run", label_shards, **{
        "steps": 40, "batch_size": 4, "log_every": 1, "checkpoint_every": 40,
        "network": {"body_backbone": "mediapipe_pose_full", "input_size": 256,
                    "body_size": 256, "parts": False, "freeze": ["body"], "hidden": [128],
                    "dropout": 0.0},
        "losses": {"params": {"global": 1.0, "body": 1.0, "shape": 0.0, "left_hand": 0.0,
                              "right_hand": 0.0, "face": 0.0},
                   "transl": 0.0, "keypoints_2d": zero, "keypoints_3d": zero, "boxes": 0.0,
                   "prior_shape": 0.0, "prior_face": 0.0},
        "data": {"shuffle": 0, "augment": NO_AUGMENT},
        "optim": {"lr": 3e-3, "schedule": "constant"}})
    trainer = Trainer(train_config_from_dict(cfg))
    # the same four people every step
    batch = next(iter(trainer._loader(0)))
    trainer._loader = lambda seed: iter([batch] * 40)
    trainer.run()
    err = [e["param_global"] for e in read_log(tmp_path / "run")]
    print(f"orientation error {err[0]:.3f} -> {err[-1]:.3f} rad")
    assert err[-1] < 0.3 * err[0], err


def test_multiloss_learns_its_log_variances(recipe_run):
    run = recipe_run("multiloss")
    sm = run.trainer.step_module
    assert sm.log_vars is not None and sm.log_vars.requires_grad
    groups = ("body", "hands", "face")
    last = run.log[-1]
    for g in groups:
        values = [e[f"log_var_{g}"] for e in run.log]
        assert abs(values[-1]) > 0.02, (g, values)  # lr 0.01 for 8 steps: up to 0.08
        assert len(set(values)) > 1, (g, values)
    # the log holds the values each step's loss used; the last step then moved them once
    # more, by about the learning rate (Adam)
    logged = torch.tensor([last[f"log_var_{g}"] for g in groups])
    step = (sm.log_vars.detach() - logged).abs()
    assert (step > 1e-4).all() and (step < 0.011).all(), step
    assert all(run.log[0][f"log_var_{g}"] == 0.0 for g in groups)  # step 1: the initial zeros
    # the log-variances are optimised with their own learning rate and no weight decay
    group = [g for g in run.trainer.optimizer.param_groups
             if any(p is sm.log_vars for p in g["params"])]
    assert len(group) == 1 and group[0]["lr"] == 0.01 and group[0]["weight_decay"] == 0.0


def test_logged_log_variances_are_those_of_the_step(recipe_run):
    run = recipe_run("multiloss")
    first = run.log[0]  # step 1's loss used the initial log-variances: zeros
    assert all(first[f"log_var_{g}"] == 0.0 for g in ("body", "hands", "face")), first


@pytest.mark.slow
def test_distillation_trains_converters_and_student(recipe_run):
    run = recipe_run("standard+distill")
    trainer = run.trainer
    net, sm = trainer.net, trainer.step_module
    assert {"distill_body", "distill_hands", "distill_face"} <= set(run.log[-1])
    # the converters are optimised: their weights moved
    after = sm.distiller.converters.state_dict()
    assert set(after) == set(run.before["converters"])
    for key in after:
        assert not torch.equal(after[key], run.before["converters"][key]), key
    # the frozen experts are neither trained nor stored with the converters
    for teacher in sm.distiller.teachers.values():
        assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("distiller.teachers") for k in sm.state_dict())

    # the student's encoder gets the gradient of the distillation term alone
    cfg = trainer.config
    batch = next(iter(trainer._loader(0)))
    boxes, valid = label_boxes(batch, cfg.network.input_size)
    net.train()
    out = net(batch["image"], batch["K"], boxes, valid)
    terms = sm.distiller(out, batch["image"])
    for p in sm.parameters():
        p.grad = None
    terms["distill_body"].backward()

    def grad(module: nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad(net.body_encoder) > 0
    assert grad(sm.distiller.converters["body"]) > 0
    assert grad(net.hand.encoder) == 0 and grad(net.head.encoder) == 0
    assert grad(net.body) == 0  # the regressor is not on the distillation path
    for p in sm.parameters():
        p.grad = None
    terms["distill_hands"].backward()
    assert grad(net.hand.encoder) > 0 and grad(net.body_encoder) == 0


# -- the EMA recipe ---------------------------------------------------------------------------


def test_ema_decay_follows_the_cosine_schedule():
    base, total = 0.99, 100
    values = [ema_decay(s, total, base) for s in range(total + 1)]
    assert values[0] == pytest.approx(base, abs=1e-12)
    assert values[-1] == pytest.approx(1.0, abs=1e-12)
    assert values[50] == pytest.approx((1 + base) / 2, abs=1e-12)
    assert values[25] == pytest.approx(1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2)
    assert all(b > a for a, b in zip(values, values[1:]))  # strictly rising
    assert ema_decay(total + 10, total, base) == pytest.approx(1.0)


def test_ema_update_moves_the_teacher_towards_the_student():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    teacher = make_teacher(student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():  # the student moves on: new weights and batch-norm statistics
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.train()(torch.randn(16, 3) * 3 + 1)
    student[1].num_batches_tracked.fill_(7)
    t0 = _clone(teacher.state_dict())
    s = _clone(student.state_dict())
    decay = 0.9
    ema_update(teacher, student, decay)
    after = teacher.state_dict()
    for k, v in after.items():
        if v.dtype.is_floating_point:
            assert not torch.equal(s[k], t0[k]), k  # (the test moves every float entry)
            torch.testing.assert_close(v - t0[k], (1 - decay) * (s[k] - t0[k]),
                                       atol=1e-6, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(v, s[k]) and int(v) == 7, k
    assert torch.equal(student.state_dict()["0.weight"], s["0.weight"])  # student untouched


@pytest.mark.slow
def test_ema_run_moves_the_teacher_slowly(recipe_run):
    run = recipe_run("ema")
    trainer = run.trainer
    teacher, student = trainer.teacher.state_dict(), trainer.net.state_dict()
    start = run.before["teacher"]
    moved, trained = _distance(teacher, start), _distance(student, start)
    gap = _distance(teacher, student)
    assert moved > 0 and gap > 0
    # decay >= 0.996: after 8 steps the teacher is far closer to its start than the student
    assert moved < 0.2 * trained and gap > 0.5 * trained, (moved, trained, gap)
    assert {"consistency_body", "consistency_hands", "consistency_face", "ema_decay"} \
        <= set(run.log[-1])
    assert run.log[0]["ema_decay"] == pytest.approx(0.996)
    # model.pt holds the teacher (ema.export: teacher)
    saved = torch.load(trainer.output / "model.pt", weights_only=True)["weights"]
    for k, v in teacher.items():
        assert torch.equal(saved[k], v), k


def _angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """The angle between rotations from the chord, ``|R1 - R2|_F = 2 sqrt(2) sin(a / 2)``:
    exact near 0, where ``furpe.core.rotations.geodesic`` (an arccos clamped to 1 - 1e-6)
    bottoms out at 1.4e-3 rad."""
    chord = (R1 - R2).flatten(-2).norm(dim=-1)
    return 2 * torch.asin((chord / (2 * math.sqrt(2))).clamp(max=1.0))


@pytest.fixture(scope="module")
def label_example(label_shards) -> tuple[np.ndarray, dict[str, Any]]:
    import cv2

    sample = next(iter_samples(list_shards(label_shards)[0]))
    image = cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    return image, sample["json"]


def test_canonical_undoes_flip_and_roll(anny_model, label_example):
    image, doc = label_example
    plan = MirrorPlan.from_model(anny_model)
    names = [n for n in anny_model.blocks if n != "transl"]
    canon = Canonical(anny_model)
    still = dict(scale=(1.0, 1.0), shift=0.0, colour=0.0, blur_p=0.0, occlusion_p=0.0)
    augments = {"plain": Augment.none(),
                "flip": Augment(flip_p=1.0, rotation_p=0.0, **still),
                "roll": Augment(flip_p=0.0, rotation_deg=40.0, rotation_p=1.0, **still),
                "flip+roll": Augment(flip_p=1.0, rotation_deg=40.0, rotation_p=1.0, **still)}
    raw, canonical = {}, {}
    for view, aug in augments.items():
        ex = PersonCrops(plan, crop_size=128, augment=aug).example(
            image, doc, 0, np.random.default_rng(11))
        assert ex["flipped"] == float("flip" in view)
        assert (abs(float(ex["roll"])) > math.radians(3)) == ("roll" in view), ex["roll"]
        params = {n: torch.as_tensor(ex[f"params_{n}"], dtype=torch.float64)[None]
                  for n in names}
        raw[view] = from_model_params(params, names)
        canonical[view] = canon(raw[view], torch.tensor([ex["flipped"]], dtype=torch.float64),
                                torch.tensor([ex["roll"]], dtype=torch.float64))
    kinds = {n: anny_model.blocks[n].kind for n in names}

    def gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
        return {n: float(_angle(a[n], b[n]).max()) if kinds[n] == "rotation"
                else float((a[n] - b[n]).abs().max()) for n in names}

    for view in ("flip", "roll", "flip+roll"):
        after = gap(canonical[view], canonical["plain"])
        assert max(after.values()) < 1e-3, (view, after)
        before = gap(raw[view], raw["plain"])
        assert max(before.values()) > 0.05, (view, before)
    assert gap(raw["roll"], raw["plain"])["global_orient"] > math.radians(3)
    assert gap(raw["flip"], raw["plain"])["left_hand_pose"] > 0.05


# -- exact resume ---------------------------------------------------------------------------


def interrupt_after(monkeypatch, step: int) -> None:
    """Make runs stop right after writing the checkpoint of ``step``."""
    save = Trainer._save

    def interrupt(self, name, state):
        save(self, name, state)
        if name == "last.pt" and self.step == step:
            raise _Interrupted

    monkeypatch.setattr(Trainer, "_save", interrupt)


class _Interrupted(Exception):
    pass


@pytest.mark.slow
def test_resumed_run_continues_exactly(uninterrupted_run, label_shards, tmp_path, monkeypatch):
    """Run B stops right after its first checkpoint (step 3 of 6); resumed, it logs the same
    losses for steps 4-6 as the uninterrupted run A and ends with the same weights."""
    a = uninterrupted_run
    log_a = read_log(a.output)
    assert [e["step"] for e in log_a] == [1, 2, 3, 4, 5, 6]
    cfg = tiny_config(tmp_path / "run", label_shards)
    interrupt_after(monkeypatch, 3)
    with pytest.raises(_Interrupted):
        Trainer(train_config_from_dict(cfg)).run()
    monkeypatch.undo()
    assert not (tmp_path / "run" / "model.pt").exists()
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3

    b = Trainer(train_config_from_dict(cfg))
    b.run(resume=True)
    log_b = read_log(b.output)
    assert [e["step"] for e in log_b] == [1, 2, 3, 4, 5, 6]
    for ea, eb in zip(log_a, log_b):
        for key in ea:
            if key != "samples_per_s":
                assert eb[key] == pytest.approx(ea[key], rel=1e-6, abs=1e-9), (ea["step"], key)
    # the losses do change from segment to segment (the comparison above is not vacuous)
    assert len({round(e["loss"], 6) for e in log_a}) == 6
    assert b.step == a.step == 6
    for k, v in a.net.state_dict().items():
        torch.testing.assert_close(b.net.state_dict()[k], v, rtol=1e-6, atol=1e-7,
                                   msg=lambda m, k=k: f"{k}: {m}")
    model_a = torch.load(a.output / "model.pt", weights_only=True)["weights"]
    model_b = torch.load(b.output / "model.pt", weights_only=True)["weights"]
    for k, v in model_a.items():
        torch.testing.assert_close(model_b[k], v, rtol=1e-6, atol=1e-7)

    # a new run in a folder that holds one is refused; so is resuming another configuration
    with pytest.raises(SetupError, match="already holds a training run"):
        b.run()  # (the check comes first: the same configuration, resume not asked)
    changed = _merge(cfg, {"optim": {"lr": 2e-3}})
    with pytest.raises(SetupError, match=r"differs in: optim\.lr\)"):
        Trainer(train_config_from_dict(changed)).run(resume=True)
    # where and how it runs may change: a resume after moving the folder or the device
    moved = _merge(cfg, {"log_every": 2, "threads": 1})
    Trainer(train_config_from_dict(moved))  # builds; the config check is in run()
    from furpe.training.trainer import _changed
    assert _changed({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ["a.c"]


# -- DDP ------------------------------------------------------------------------------------

_DDP_SCRIPT = """
import os, sys
import torch
from furpe.cli import main
from furpe.training.trainer import Trainer, seed_all

run = Trainer.run


def run_and_save(self, resume=False):  # each rank keeps its weights for the test
    init = {k: v.detach().clone() for k, v in self.net.named_parameters()}
    seed = seed_all(self.config.seed, 0, self.rank)
    first = next(iter(self._loader(seed)))["image"]  # this rank's first batch
    summary = run(self, resume=resume)
    torch.save({"rank": self.rank, "world": self.world, "init": init,
                "params": {k: v.detach() for k, v in self.net.named_parameters()},
                "state": self.net.state_dict(), "first": first},
               os.path.join(sys.argv[2], f"rank{self.rank}.pt"))
    return summary


Trainer.run = run_and_save
sys.exit(main(["train", "--config", sys.argv[1], "-q"]))
"""


@pytest.mark.slow
def test_two_ddp_processes_end_with_equal_weights(label_shards, tmp_path):
    """``torchrun --nproc-per-node 2 ... furpe train --config CFG.yaml`` on the CPU (gloo):
    the ranks draw different batches, yet end with the same weights."""
    import yaml

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.is_file():
        pytest.skip(f"no torchrun next to {sys.executable}")
    cfg = tiny_config(tmp_path / "run", label_shards, steps=2, checkpoint_every=1,
                      device="cpu")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "ddp.py").write_text(textwrap.dedent(_DDP_SCRIPT))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2",
                           str(tmp_path / "ddp.py"), str(tmp_path / "train.yaml"),
                           str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["rank"], r1["rank"], r0["world"], r1["world"]) == (0, 1, 2, 2)
    # each rank trains on its own draws ...
    assert not torch.equal(r0["first"], r1["first"])
    # ... yet the averaged gradients keep the weights identical, bit for bit
    assert set(r0["params"]) == set(r1["params"])
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    moved = [k for k in r0["params"] if not torch.equal(r0["params"][k], r0["init"][k])]
    assert len(moved) > 0.9 * len(r0["params"])
    # buffers: step counts agree; batch-norm running statistics are each rank's own until DDP
    # broadcasts rank 0's at the next forward (rank 0 writes the checkpoints)
    for k, v in r0["state"].items():
        if k not in r0["params"] and "running_" not in k:
            assert torch.equal(v, r1["state"][k]), k
    assert [e["step"] for e in read_log(tmp_path / "run")] == [1, 2]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["weights"]
    for k, v in r0["state"].items():
        assert torch.equal(saved[k], v), k


# -- the configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("data, key", [
    ({"foo": 1}, "foo"),
    ({"network": {"foo": 1}}, "network.foo"),
    ({"optim": {"foo": 1}}, "optim.foo"),
    ({"data": {"augment": {"foo": 1}}}, "data.augment.foo"),
])
def test_unknown_config_keys_are_named(data, key):
    with pytest.raises(SetupError, match=f"unknown key '{key}'"):
        train_config_from_dict(data)


def test_config_errors(tmp_path):
    with pytest.raises(SetupError, match="even for ema"):
        train_config_from_dict({"recipe": "ema", "batch_size": 3})
    assert train_config_from_dict({"recipe": "ema", "batch_size": 4}).batch_size == 4
    with pytest.raises(SetupError, match="recipe must be one of"):
        train_config_from_dict({"recipe": "fancy"})
    with pytest.raises(SetupError, match="exactly one of steps and epochs"):
        train_config_from_dict({"epochs": 2})
    # a partial loss table overrides only its keys
    cfg = train_config_from_dict({"losses": {"params": {"body": 3.0}}})
    assert cfg.losses.params["body"] == 3.0 and cfg.losses.params["face"] == 1.0
    # a file: the error names the file and the key
    path = tmp_path / "train.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.01\n  foo: 2\n")
    with pytest.raises(SetupError, match=r"train\.yaml.*optim\.foo"):
        load_train_config(path)
    path.write_text("steps: 5\noptim:\n  lr: 0.01\n")
    assert load_train_config(path).optim.lr == 0.01
    with pytest.raises(SetupError, match="data.sources"):
        Trainer(train_config_from_dict({"steps": 1}))


def test_encoder_lr_puts_the_trained_encoders_in_their_own_group(anny_model):
    """``optim.encoder_lr``: the encoders that train get their own optimiser group at that
    rate; the heads keep ``lr``; frozen encoders are in no group."""
    from furpe.networks.wholebody import NetworkConfig, WholeBodyNet
    from furpe.training.trainer import parameter_groups

    net = WholeBodyNet(anny_model, NetworkConfig(**{**TINY_NETWORK, "freeze": ("hand",)}))
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    (one,) = parameter_groups(net, None)
    assert {id(p) for p in one["params"]} == trainable and "lr" not in one
    heads, encoders = parameter_groups(net, 1e-5)
    want = {id(p) for b in ("body", "head") for p in net.encoder(b).parameters()}
    assert {id(p) for p in encoders["params"]} == want and encoders["lr"] == 1e-5
    assert {id(p) for p in heads["params"]} == trainable - want and "lr" not in heads
    assert not {id(p) for p in net.encoder("hand").parameters()} & trainable
    frozen = WholeBodyNet(anny_model, NetworkConfig(**{**TINY_NETWORK,
                                                       "freeze": ("body", "hand", "head")}))
    assert len(parameter_groups(frozen, 1e-5)) == 1
