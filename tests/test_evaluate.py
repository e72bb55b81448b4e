"""``furpe evaluate``: the real pipeline end to end on a small synthetic set, and the harness
(resume, failures, errors, person picking) with stand-in methods."""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from furpe.cli import main
from furpe.datasets import Prediction, Sample
from furpe.datasets.synthetic import generate, read_npz
from furpe.core.errors import FurpeError, NoPersonError
from furpe.core.boxes import box_iou
from furpe.core.registry import create, names, register, unregister
from furpe.evaluation.methods import ExpertMethod, Method, pick_person
from furpe.evaluation.runner import markdown_table, read_records, summarize
from furpe.results import FrameResult, PartResult, PersonResult

N = 3
SIZE = 256


@pytest.fixture(scope="module")
def data(tmp_path_factory, anny_model) -> Path:
    root = tmp_path_factory.mktemp("evaluate") / "synthetic"
    generate(root, N, seed=0, width=SIZE, height=SIZE, progress=False, model=anny_model)
    return root


def _run(argv, **kwargs) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv], **kwargs)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def real_run(data, tmp_path_factory, reconstructor):
    """One real ``furpe evaluate --dataset synthetic`` (MediaPipe experts + Anny fit)."""
    out = tmp_path_factory.mktemp("evaluate") / "out"

    def factory(name, config):
        assert name == "experts" and config.body_model == "anny" and config.device == "cpu"
        return ExpertMethod(config, reconstructor=reconstructor)

    code, stdout, stderr = _run(["evaluate", "--dataset", "synthetic", "--data-root", data,
                                 "-o", out, "--device", "cpu"], method_factory=factory)
    return out, code, stdout, stderr


class GroundTruthMethod(Method):
    """A stand-in that returns the ground truth, shifted; fails on the ids in ``fail``."""

    name = "gt"
    topology = "anny"

    def __init__(self, fail: tuple[str, ...] = (), offset: float = 0.0) -> None:
        self.fail, self.offset, self.calls = fail, offset, []

    def predict(self, sample: Sample) -> Prediction:
        self.calls.append(sample.id)
        if sample.id in self.fail:
            raise NoPersonError("no person found")
        gt = read_npz(sample.image_path.parents[1] / "gt" / f"{sample.id}.npz")
        kps = {k[len("keypoints_"):]: v + self.offset for k, v in gt.items()
               if k.startswith("keypoints_")}
        return Prediction(topology="anny", vertices=gt["vertices"] + self.offset, keypoints=kps,
                          accepted={"body": True, "face": False}, seconds=0.25)


def _fake(method: Method):
    return lambda name, options: method


def _never(name, options):
    raise AssertionError("the method must not be built")


# ----------------------------------------------------------------------------- real run

def test_real_evaluation_end_to_end(real_run, data):
    out, code, stdout, stderr = real_run
    assert code == 0, stderr
    assert "## synthetic:" in stdout and "| metric | median | mean | count |" in stdout
    assert "| pa_pve_mm |" in stdout and "| time per image (s) |" in stdout
    assert "synthetic: 3 samples: 3 ok, 0 failed" in stderr

    results = json.loads((out / "synthetic_results.json").read_text())
    assert results["dataset"] == "synthetic" and results["method"] == "experts"
    assert results["body_model"] == "anny" and results["complete"] is True
    assert "PA-PVE" in results["protocol"]
    assert results["options"]["alignment"] == "standard"
    assert results["counts"] == {"samples": 3, "ok": 3, "failed": 0, "skipped": 0}
    assert results["data_root"] == str(data)
    metrics = results["metrics"]
    # generous bounds: this is a smoke test of the harness, not an accuracy target
    limits = {"pa_mpjpe_mm": 200, "mpjpe_mm": 600, "pa_pve_mm": 200, "pve_mm": 600,
              "pa_pve_body_mm": 200, "pa_pve_face_mm": 30, "pa_mpjpe_mediapipe_mm": 200}
    for name, limit in limits.items():
        st = metrics[name]
        assert st["count"] == 3, name
        assert math.isfinite(st["mean"]) and 0 < st["median"] < limit, (name, st)
    assert 0 < results["seconds_per_image"]["median"] < 120
    assert set(results["accepted"]) == {"body", "left_hand", "right_hand", "face"}

    records = read_records(out / "synthetic_samples.jsonl")
    assert [r["id"] for r in records] == ["000000", "000001", "000002"]
    assert all(r["status"] == "ok" and r["message"] is None for r in records)
    assert all(set(r["meta"]["visible"]) == {"body", "left_hand", "right_hand", "face"}
               for r in records)
    for name in ("pa_pve_mm", "pa_mpjpe_mm"):
        values = [r["metrics"][name] for r in records]
        assert metrics[name]["mean"] == pytest.approx(np.mean(values))
        assert metrics[name]["median"] == pytest.approx(np.median(values))
    for r in records:  # hands are scored only where visible
        for hand in ("left_hand", "right_hand"):
            assert (f"pa_pve_{hand}_mm" in r["metrics"]) == r["meta"]["visible"][hand]


def test_resume_skips_done_samples(real_run, data, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(real_run[0], out)
    before = (out / "synthetic_samples.jsonl").read_text()
    code, stdout, stderr = _run(["evaluate", "--dataset", "synthetic", "--data-root", data,
                                 "-o", out, "--resume"], method_factory=_never)
    assert code == 0, stderr
    assert "3 skipped (already done)" in stderr
    assert (out / "synthetic_samples.jsonl").read_text() == before
    results = json.loads((out / "synthetic_results.json").read_text())
    assert results["counts"] == {"samples": 3, "ok": 3, "failed": 0, "skipped": 3}
    assert results["metrics"]["pa_pve_mm"]["count"] == 3


# ----------------------------------------------------------------------------- harness

def test_evaluate_fits_on_one_thread_and_restores_it(data, tmp_path):
    import torch

    from furpe.config import ReconstructConfig

    class Counting(GroundTruthMethod):
        def __init__(self, method: str) -> None:
            super().__init__()
            self.config = ReconstructConfig(method=method)
            self.threads: list[int] = []

        def predict(self, sample: Sample) -> Prediction:
            self.threads.append(torch.get_num_threads())
            return super().predict(sample)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for kind, expected in (("experts", 1), ("network", 2)):  # the network keeps them
            method = Counting(kind)
            code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data,
                                 "-o", tmp_path / kind, "-q"], method_factory=_fake(method))
            assert code == 0, err
            assert method.threads == [expected] * N
            assert torch.get_num_threads() == 2  # restored for the caller
    finally:
        torch.set_num_threads(before)


def test_partial_line_is_dropped_and_redone(data, tmp_path):
    out = tmp_path / "out"
    method = GroundTruthMethod()
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o", out,
                         "-q"], method_factory=_fake(method))
    assert code == 0, err
    path = out / "synthetic_samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    method = GroundTruthMethod()
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o", out,
                         "--resume", "-q"], method_factory=_fake(method))
    assert code == 0, err
    assert method.calls == ["000002"]
    text = path.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 3
    records = read_records(path)
    assert [r["id"] for r in records] == ["000000", "000001", "000002"]
    assert records[2]["metrics"]["pa_pve_mm"] == pytest.approx(0.0, abs=0.01)
    # without --resume the file starts over
    method = GroundTruthMethod(offset=0.5)
    code, _, _ = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o", out,
                       "--limit", "2", "-q"], method_factory=_fake(method))
    assert code == 0 and method.calls == ["000000", "000001"]
    records = read_records(path)
    assert [r["id"] for r in records] == ["000000", "000001"]
    results = json.loads((out / "synthetic_results.json").read_text())
    assert results["limit"] == 2 and results["counts"]["samples"] == 2
    assert results["metrics"]["pve_mm"]["mean"] == pytest.approx(0.0, abs=0.01)  # mid-hip
    assert results["seconds_per_image"]["mean"] == pytest.approx(0.25)


def test_failed_samples_are_counted(data, tmp_path):
    out = tmp_path / "out"
    method = GroundTruthMethod(fail=("000001",))
    code, stdout, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o",
                              out, "--alignment", "none"], method_factory=_fake(method))
    assert code == 1
    assert "furpe: error: synthetic sample 000001: no person found" in err
    assert "2 ok, 1 failed" in err
    records = read_records(out / "synthetic_samples.jsonl")
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["message"] == "no person found" and "metrics" not in records[1]
    results = json.loads((out / "synthetic_results.json").read_text())
    assert results["counts"]["failed"] == 1 and results["counts"]["ok"] == 2
    assert results["failures"] == [{"id": "000001", "message": "no person found"}]
    assert results["options"]["alignment"] == "none"
    assert results["metrics"]["pa_pve_mm"]["count"] == 2
    assert results["accepted"]["body"] == {"accepted": 2, "count": 2}
    assert "| pa_pve_mm |" in stdout
    # --resume retries only the failed sample
    method = GroundTruthMethod()
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o", out,
                         "--resume", "-q"], method_factory=_fake(method))
    assert code == 0, err
    assert method.calls == ["000001"]
    results = json.loads((out / "synthetic_results.json").read_text())
    assert results["counts"] == {"samples": 3, "ok": 3, "failed": 0, "skipped": 2}


def test_bad_data_root_and_options(data, tmp_path):
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root",
                         tmp_path / "missing", "-o", tmp_path / "out"], method_factory=_never)
    assert code == 2 and "furpe: error:" in err and "missing" in err and "not a folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", empty, "-o",
                         tmp_path / "out"], method_factory=_never)
    assert code == 2
    assert f"{empty / 'manifest.json'}" in err and "furpe make-synthetic" in err
    assert err.count("furpe: error:") == 1
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "images" / "000001.png").unlink()
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", broken, "-o",
                         tmp_path / "out"], method_factory=_never)
    assert code == 2 and str(broken / "images" / "000001.png") in err
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o",
                         tmp_path / "out", "--alignment", "sideways"], method_factory=_never)
    assert code == 2 and "unknown alignment 'sideways'" in err
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o",
                         tmp_path / "out", "--gt-regressor", tmp_path / "nope.npy"],
                        method_factory=_never)
    assert code == 2 and "--gt-regressor" in err
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o",
                         tmp_path / "out", "--body-model", "smplx"], method_factory=_never)
    assert code == 2 and "--model-path" in err
    code, _, err = _run(["evaluate", "--dataset", "nope", "--data-root", data, "-o",
                         tmp_path / "out"])
    assert code == 2 and "invalid choice" in err
    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o",
                         tmp_path / "out", "--option", "novalue"])
    assert code == 2 and "KEY=VALUE" in err


def test_method_setup_failure_is_exit_2(data, tmp_path):
    def broken(name, options):
        raise FurpeError("model files missing")

    code, _, err = _run(["evaluate", "--dataset", "synthetic", "--data-root", data, "-o",
                         tmp_path / "out"], method_factory=broken)
    assert code == 2 and "furpe: error: model files missing" in err


# ----------------------------------------------------------------------------- methods

def test_box_iou_and_pick_person():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    boxes = [(0, 0, 10, 10), (100, 100, 200, 300), (95, 95, 190, 290)]
    assert pick_person(boxes, None) == 1  # the largest
    assert pick_person(boxes, (96, 96, 190, 290)) == 2  # the best overlap
    with pytest.raises(NoPersonError, match="overlaps"):
        pick_person(boxes, (400, 400, 500, 500))
    with pytest.raises(NoPersonError, match="no person"):
        pick_person([], None)


class FakeReconstructor:
    """Returns two people: the ground truth (at the sample's box) and a decoy."""

    def __init__(self, model, gt_vertices, gt_joints, box):
        self.body_model, self.verts, self.joints, self.box = model, gt_vertices, gt_joints, box
        self.K = None

    def reconstruct_image(self, image, K=None):
        self.K = K
        parts = {p: PartResult(p, True, p != "face") for p in ("body", "left_hand",
                                                                "right_hand", "face")}
        decoy = PersonResult({}, self.verts + 1.0, self.joints + 1.0, {}, parts,
                             (0.0, 0.0, 300.0, 300.0))
        person = PersonResult({}, self.verts, self.joints, {}, parts, tuple(self.box))
        return FrameResult((image.shape[1], image.shape[0]), np.eye(3), "anny", (),
                           self.body_model.faces, [decoy, person], {})


def test_expert_method_prediction(data, anny_model):
    from furpe.datasets.synthetic import SyntheticDataset

    ds = SyntheticDataset(data)
    sample = ds.samples()[0]
    gt = read_npz(data / "gt" / "000000.npz")
    fake = FakeReconstructor(anny_model, gt["vertices"], gt["joints"], sample.gt["box"])
    method = ExpertMethod(reconstructor=fake)
    pred = method.predict(sample)
    np.testing.assert_array_equal(fake.K, sample.intrinsics)  # the dataset's camera is used
    assert pred.topology == "anny" and method.topology == "anny"
    np.testing.assert_allclose(pred.vertices, gt["vertices"])  # not the decoy
    assert set(pred.keypoints) == set(anny_model.regressors)
    assert pred.keypoints["coco"].shape == (23, 3)
    assert pred.keypoints["mediapipe_hand_left"].shape == (21, 3)
    np.testing.assert_allclose(pred.keypoints["coco"], gt["keypoints_coco"], atol=1e-5)
    assert pred.accepted == {"body": True, "left_hand": True, "right_hand": True, "face": False}
    assert set(pred.part_vertices) == {"body", "left_hand", "right_hand", "face"}
    assert pred.faces.shape[1] == 3 and pred.seconds > 0
    scores = ds.score(sample, pred)
    assert scores["pa_pve_mm"] == pytest.approx(0.0, abs=0.01)

    missing = Sample(id="m", image_path=data / "images" / "nope.png")
    with pytest.raises(FurpeError, match="nope.png"):
        method.predict(missing)


def test_method_registry():
    assert "experts" in names("method")
    with pytest.raises(FurpeError, match="unknown method 'nope'; choose from experts"):
        create("method", "nope", None)

    class Echo(Method):
        name = "echo"

        def __init__(self, config):
            self.config = config

        def predict(self, sample):
            return Prediction(topology="none")

    register("method", "echo", Echo)
    try:
        assert isinstance(create("method", "echo", None), Echo)
        with pytest.raises(ValueError, match="already registered"):
            register("method", "echo", Echo)
        # The command line offers what the registry holds.
        from furpe.cli import build_parser

        ev = build_parser()._subparsers._group_actions[0].choices["evaluate"]
        method = next(a for a in ev._actions if a.dest == "method")
        assert "echo" in method.choices
    finally:
        unregister("method", "echo")


def test_summary_and_table():
    records = [
        {"id": "a", "status": "ok", "metrics": {"pa_pve_mm": 10.0, "zeta_mm": 1.0,
                                                "pa_mpjpe_mm": 30.0}, "seconds": 2.0},
        {"id": "b", "status": "ok", "metrics": {"pa_pve_mm": 20.0, "pa_mpjpe_mm": None},
         "seconds": 4.0},
        {"id": "c", "status": "failed", "message": "boom"},
    ]
    stats = summarize(records)
    assert stats["counts"] == {"samples": 3, "ok": 2, "failed": 1}
    assert list(stats["metrics"]) == ["pa_mpjpe_mm", "pa_pve_mm", "zeta_mm"]
    assert stats["metrics"]["pa_pve_mm"] == {"mean": 15.0, "median": 15.0, "count": 2}
    assert stats["metrics"]["pa_mpjpe_mm"]["count"] == 1
    assert stats["seconds_per_image"]["median"] == 3.0
    table = markdown_table({"dataset": "x", "protocol": "P", "method": "m", "body_model": "b",
                            **stats})
    assert table.startswith("## x: P\n")
    assert "| pa_pve_mm | 15.0 | 15.0 | 2 |" in table
    assert "| time per image (s) | 3.00 | 3.00 | 2 |" in table


def test_finalize_error_is_reported(data, tmp_path, capsys):
    from furpe.datasets import DatasetError
    from furpe.datasets.synthetic import SyntheticDataset
    from furpe.evaluation.runner import evaluate

    class NeedsAll(SyntheticDataset):
        def finalize(self, out_dir):
            raise DatasetError("pred.json needs a prediction for every sample")

    summary = evaluate(NeedsAll(data), lambda: GroundTruthMethod(), tmp_path / "out",
                       progress=False)
    assert summary.exit_code == 1 and summary.failed == 0
    assert "pred.json needs a prediction" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "synthetic_results.json").read_text())
    assert results["finalize_error"] == "pred.json needs a prediction for every sample"
    assert results["counts"]["ok"] == 3
