"""``furpe label`` / ``furpe labels stats``: shards, resume after kills, splits, workers.

Most tests use a fake reconstructor (deterministic people from the image content, no models);
one slow test labels synthetic renders with the real experts.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from furpe.cli import main
from furpe.config import ReconstructConfig
from furpe.core.errors import NoPersonError
from furpe.experts.base import PartObservation, PersonObservation
from furpe.io.video import VideoWriter
from furpe.labels import ShardError, check_shard, iter_samples, list_shards, unit_key
from furpe.labels.engine import split_items
from furpe.labels.stats import collect
from furpe.results import FrameResult, PartResult, PersonResult

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class FakeLabelReconstructor:
    """People from the image content: as many as the image's mean brightness says (0 for a
    uniform image), each with a body and a face observation; optional delay per image."""

    def __init__(self, config: ReconstructConfig | None = None, delay: float = 0.0) -> None:
        self.config = config or ReconstructConfig()
        self.delay = delay
        self.resets: list[bool] = []

    def reconstruct_image(self, image: np.ndarray, reset_rejected: bool = True) -> FrameResult:
        self.resets.append(reset_rejected)
        time.sleep(self.delay)
        if image.std() < 2.0:
            raise NoPersonError("no person found")
        h, w = image.shape[:2]
        m = float(image.mean())
        people = []
        for k in range(1 + int(m) % 2):
            body = PartObservation("body", "mediapipe_pose", np.full((3, 2), m + k), np.ones(3),
                                   keypoints_3d=np.full((3, 3), 0.1 * k), box=(0, 0, w, h),
                                   score=0.9, expert="fake_pose")
            face = PartObservation("face", "mediapipe_face", np.full((2, 2), m), [1.0, 0.5],
                                   box=(1, 2, 3, 4), score=0.8, expert="fake_face",
                                   blendshapes={"jawOpen": round(m / 255, 4)})
            people.append(PersonResult(
                params={"transl": np.array([0, 0, 2.0 + k + m / 100], np.float32)},
                vertices=np.zeros((4, 3), np.float32), joints=np.zeros((2, 3), np.float32),
                keypoints_2d={},
                parts={"body": PartResult("body", True, True, {"score": 0.9}),
                       "face": PartResult("face", True, k == 0, {"score": 0.3 + 0.4 * (k == 0)},
                                          "" if k == 0 else "residual")},
                box=(0.0, 0.0, float(w), float(h)),
                observation=PersonObservation({"body": body, "face": face})))
        K = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], float)
        return FrameResult(image_size=(w, h), intrinsics=K, body_model="anny",
                           joint_names=("a", "b"), faces=np.zeros((0, 3), np.int32),
                           people=people, timings={"total": 0.01})


def fake_factory(config: ReconstructConfig) -> FakeLabelReconstructor:
    return FakeLabelReconstructor(config, float(os.environ.get("FAKE_DELAY", "0")))


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    path.write_bytes(buf.tobytes())


def make_inputs(root: Path, n_images: int = 7, video_frames: int = 6) -> Path:
    """``n_images`` random images (one uniform: nobody), a video, one unreadable file."""
    rng = np.random.default_rng(0)
    folder = root / "in"
    for i in range(n_images):
        img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        if i == 3:
            img[:] = 128
        _save(folder / f"img{i}.png", img)
    if video_frames:
        with VideoWriter(folder / "clip.mp4", 10, (48, 48)) as vw:
            for f in range(video_frames):
                vw.write(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    return folder


def run_label(args: list[str]) -> int:
    return main(["label", *args, "-q"], reconstructor_factory=fake_factory)


def read_all(out: Path) -> dict[str, dict]:
    """key -> sample (``json`` decoded; timings dropped), over every shard."""
    samples = {}
    for path in list_shards(out):
        for s in iter_samples(path):
            assert s["__key__"] not in samples, f"duplicate label {s['__key__']}"
            s["json"].pop("timings", None)
            samples[s["__key__"]] = s
    return samples


def test_label_writes_shards_readable_by_tarfile_and_webdataset(tmp_path):
    folder = make_inputs(tmp_path)
    out = tmp_path / "shards"
    assert run_label([str(folder), "-o", str(out), "--shard-size", "3", "--every", "2"]) == 0
    shards = list_shards(out)
    samples = read_all(out)
    # 7 images + frames 0, 2, 4 of the video; one image has nobody (stored, no image)
    assert len(samples) == 10 and len(shards) == 4
    assert [len(list(iter_samples(p))) for p in shards] == [3, 3, 3, 1]
    empty = [s for s in samples.values() if s["json"]["status"] == "no_person"]
    assert len(empty) == 1 and "jpg" not in empty[0]
    key = unit_key("img0", None)
    doc = samples[key]["json"]
    assert doc["key"] == key and doc["image_file"] == f"{key}.jpg"
    assert doc["provenance"]["truth"] == "experts"
    assert doc["provenance"]["source_file"].endswith("img0.png")
    assert len(doc["provenance"]["expert_models"]["hand_landmarker.task"]) == 64
    person = doc["people"][0]
    assert person["observations"]["face"]["blendshapes"]["jawOpen"] > 0
    assert person["observations"]["body"]["box"] == [0, 0, 48, 40]
    assert person["parts"]["face"]["scores"]["score"] == pytest.approx(0.7)
    img = cv2.imdecode(np.frombuffer(samples[key]["jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (40, 48, 3)
    frames = sorted(s["json"]["frame_index"] for s in samples.values()
                    if s["json"]["source"].endswith("clip.mp4"))
    assert frames == [0, 2, 4]
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["samples"] == 10
    assert index["people"] == sum(len(s["json"]["people"]) for s in samples.values())
    # the same content through webdataset
    import webdataset as wds

    urls = [str(p) for p in shards]
    seen = {}
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        seen[s["__key__"]] = s
    assert set(seen) == set(samples)
    for k, s in seen.items():
        doc = json.loads(s["json"])
        doc.pop("timings", None)
        assert doc == samples[k]["json"]
        assert s.get("jpg") == samples[k].get("jpg")


def test_rejected_parts_keep_their_fit_and_are_flagged(tmp_path):
    folder = make_inputs(tmp_path, n_images=2, video_frames=0)
    made = []

    def factory(config):
        made.append(FakeLabelReconstructor(config))
        return made[-1]

    assert main(["label", str(folder), "-o", str(tmp_path / "s"), "-q"],
                reconstructor_factory=factory) == 0
    assert made and set(made[0].resets) == {False}


def test_split_covers_the_inputs_exactly_once(tmp_path):
    folder = make_inputs(tmp_path)
    whole, a, b = tmp_path / "whole", tmp_path / "ab", tmp_path / "b"
    assert run_label([str(folder), "-o", str(whole)]) == 0
    assert run_label([str(folder), "-o", str(a), "--shard", "0/2"]) == 0
    assert run_label([str(folder), "-o", str(b), "--shard", "1/2"]) == 0
    ka, kb = set(read_all(a)), set(read_all(b))
    assert ka and kb and not ka & kb
    assert ka | kb == set(read_all(whole))
    # both parts in one folder: index.json merges them
    for p in list_shards(b):
        p.rename(a / p.name)
    (b / "index-001of002.json").rename(a / "index-001of002.json")
    assert run_label([str(folder), "-o", str(a), "--shard", "1/2"]) == 0  # nothing left
    index = json.loads((a / "index.json").read_text())
    assert index["complete"] and index["samples"] == len(ka | kb)


def test_split_under_torchrun_environment(tmp_path, monkeypatch):
    folder = make_inputs(tmp_path, video_frames=0)
    monkeypatch.setenv("WORLD_SIZE", "3")
    keys = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        out = tmp_path / f"r{rank}"
        assert run_label([str(folder), "-o", str(out)]) == 0
        assert all(p.name.startswith(f"labels-{rank:03d}of003-") for p in list_shards(out))
        keys.append(set(read_all(out)))
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == 7


def test_split_items_is_deterministic():
    from furpe.io.inputs import InputItem

    items = [InputItem(Path(f"/x/{n}.png"), "image") for n in "dbca"]
    assert [i.out_name for i in split_items(items, 0, 2)] == ["a", "c"]
    assert [i.out_name for i in split_items(items[::-1], 1, 2)] == ["b", "d"]


def test_bad_split_and_missing_input_are_clear_errors(tmp_path, capsys):
    assert run_label([str(tmp_path), "-o", str(tmp_path / "o"), "--shard", "2/2"]) == 2
    assert "0 <= i < n" in capsys.readouterr().err
    folder = make_inputs(tmp_path, n_images=1, video_frames=0)
    (folder / "broken.png").write_bytes(b"not a png")
    code = run_label([str(folder), "-o", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code == 1 and "broken.png" in err and "Traceback" not in err
    index = json.loads((tmp_path / "o2" / "index.json").read_text())
    assert not index["complete"] and index["samples"] == 1


def test_truncated_shard_is_reported_with_its_name(tmp_path, capsys):
    folder = make_inputs(tmp_path, video_frames=0)
    out = tmp_path / "s"
    assert run_label([str(folder), "-o", str(out), "--shard-size", "4"]) == 0
    victim = list_shards(out)[0]
    last = check_shard(victim)[-1]
    end = last.offset_data + (last.size + 511) // 512 * 512  # the last member's padded end
    data = victim.read_bytes()
    # cut inside the last member, after it with only one end block, mid-file, in a header
    for cut in (end - 10, end + 512, len(data) // 2, 700):
        victim.write_bytes(data[:cut])
        with pytest.raises(ShardError, match=victim.name):
            check_shard(victim)
        assert run_label([str(folder), "-o", str(out)]) == 2
        assert victim.name in capsys.readouterr().err
        assert main(["labels", "stats", str(out)]) == 2
        assert victim.name in capsys.readouterr().err


def test_stats_counts_and_thresholds(tmp_path, capsys):
    folder = make_inputs(tmp_path)
    out = tmp_path / "s"
    assert run_label([str(folder), "-o", str(out), "--every", "2"]) == 0
    samples = read_all(out)
    people = [p for s in samples.values() for p in s["json"]["people"]]
    st = collect(out)
    assert st.samples == 10 and st.people == len(people) and st.empty == 1
    first = sum(1 for p in people if p["parts"]["face"]["accepted"])
    assert st.accepted["face"] == first and st.observed["face"] == len(people)
    assert st.kept("face", 0.5) == first and st.kept("face", 0.2) == len(people)
    assert main(["labels", "stats", str(out), "--min-score", "face=0.5"]) == 0
    text = capsys.readouterr().out
    assert f"| face | {len(people)} | {first} | {first} (>= 0.5) |" in text
    assert main(["labels", "stats", str(out), "--min-score", "nose=0.5"]) == 2


def _labels_without_timings(out: Path) -> dict[str, dict]:
    return {k: {"json": s["json"], "jpg": s.get("jpg")} for k, s in read_all(out).items()}


KILL_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from test_labels import fake_factory
from furpe.cli import main
sys.exit(main(["label", {folder!r}, "-o", {out!r}, "--shard-size", "2", "-q"],
              reconstructor_factory=fake_factory))
"""


@pytest.mark.slow
def test_killed_runs_resume_without_loss_or_duplicates(tmp_path):
    folder = make_inputs(tmp_path, n_images=9, video_frames=5)
    reference = tmp_path / "ref"
    assert run_label([str(folder), "-o", str(reference), "--shard-size", "2"]) == 0
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(here=str(HERE), folder=str(folder), out=str(out))
    env = dict(os.environ, FAKE_DELAY="0.15", PYTHONPATH=str(REPO))
    rng = random.Random(7)
    kills = 0
    for _ in range(2):  # kill -9 at a random point, twice
        proc = subprocess.Popen([sys.executable, "-c", script], env=env)
        deadline = time.time() + 60
        # wait until this run has written at least one new shard, then a random moment more
        before = len(list_shards(out))
        while len(list_shards(out)) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == 2, "the runs finished before they could be killed"
    partial = len(read_all(out))
    assert 0 < partial < len(read_all(reference))
    assert subprocess.run([sys.executable, "-c", script], env=env).returncode == 0
    assert not list(out.glob(".*.tmp"))
    assert _labels_without_timings(out) == _labels_without_timings(reference)
    assert json.loads((out / "index.json").read_text())["complete"]


@pytest.mark.slow
def test_workers_label_the_same_as_one_process(tmp_path):
    folder = make_inputs(tmp_path, n_images=6, video_frames=4)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_label([str(folder), "-o", str(one)]) == 0
    assert run_label([str(folder), "-o", str(two), "--workers", "2", "--shard-size", "3"]) == 0
    assert _labels_without_timings(one) == _labels_without_timings(two)


def test_shard_writer_leaves_no_partial_shard_on_error(tmp_path):
    from furpe.labels import ShardWriter

    w = ShardWriter(tmp_path, size=3)
    w.write("a", {"json": {"x": 1}})
    w.write("b", {"json": {"x": 2}})
    assert list_shards(tmp_path) == [] and len(list(tmp_path.glob(".*.tmp"))) == 1
    w.abort()
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError):
        w.write("a.b", {"json": {}})
    w2 = ShardWriter(tmp_path, size=2)
    for k in "abc":
        w2.write(k, {"json": {"k": k}, "txt": k.encode()})
    w2.close()
    names = [p.name for p in list_shards(tmp_path)]
    assert names == ["labels-000of001-000000.tar", "labels-000of001-000001.tar"]
    with tarfile.open(tmp_path / names[0]) as tar:
        assert tar.getnames() == ["a.json", "a.txt", "b.json", "b.txt"]


@pytest.mark.slow
@pytest.mark.mediapipe
def test_real_experts_label_a_render(tmp_path, anny_model):
    """The real pipeline: a synthetic render gets a label with the experts' outputs."""
    from furpe.labels.engine import label
    from furpe.io.inputs import collect_inputs
    from furpe.pipeline import Reconstructor
    from furpe.synthetic import make_person

    person = make_person(anny_model, seed=1, width=384, height=384, distance=2.2)
    _save(tmp_path / "in" / "render.png", person.image)
    rec = Reconstructor(ReconstructConfig(device="cpu"), body_model=anny_model)
    summary = label(collect_inputs([str(tmp_path / "in")]), tmp_path / "s", lambda: rec,
                    progress=False)
    assert summary.samples == 1 and summary.people == 1 and not summary.failures
    (sample,) = read_all(tmp_path / "s").values()
    p = sample["json"]["people"][0]
    assert set(p["observations"]) >= {"body", "face"}
    assert len(p["observations"]["body"]["keypoints_3d"]) == 33
    assert "jawOpen" in p["observations"]["face"]["blendshapes"]
    assert len(p["params"]["body_pose"]) > 10
    assert sample["json"]["provenance"]["config"]["experts"] == list(rec.config.experts)


@pytest.mark.slow
def test_synthetic_truth_shards_join_the_expert_labels_by_key(tmp_path, anny_model):
    from furpe.datasets.synthetic import read_npz, sample_id

    out = tmp_path / "synth"
    assert main(["make-synthetic", str(out), "--n", "3", "--size", "160", "--format",
                 "webdataset", "--shard-size", "2", "-q"]) == 0
    truth = read_all(out / "shards")
    ids = [sample_id(i) for i in range(3)]
    assert sorted(truth) == sorted(unit_key(s, None) for s in ids)
    for sid in ids:
        gt = read_npz(out / "gt" / f"{sid}.npz")
        doc = truth[unit_key(sid, None)]["json"]
        assert doc["provenance"]["truth"] == "synthetic"
        person = doc["people"][0]
        np.testing.assert_allclose(person["params"]["body_pose"], gt["param_body_pose"],
                                   atol=1e-6)
        np.testing.assert_allclose(person["keypoints_2d"]["body"]["observed"],
                                   gt["keypoints2d_mediapipe_pose"], atol=1e-3)
        np.testing.assert_allclose(person["observations"]["left_hand"]["keypoints_3d"],
                                   gt["keypoints_mediapipe_hand_left"], atol=1e-5)
        for i, part in enumerate(gt["part_names"]):
            assert person["parts"][str(part)]["accepted"] == bool(gt["visible"][i])
    # pseudo labels of the same images (here from the fake experts) share the keys
    assert run_label([str(out / "images"), "-o", str(tmp_path / "experts")]) == 0
    assert set(read_all(tmp_path / "experts")) == set(truth)
    # a lost shard is made again, identically
    first = list_shards(out / "shards")[0]
    before = first.read_bytes()
    first.unlink()
    assert main(["make-synthetic", str(out), "--n", "3", "--size", "160", "--format",
                 "webdataset", "--shard-size", "2", "-q"]) == 0
    assert sorted(read_all(out / "shards")) == sorted(truth)
    assert sum(p.read_bytes() == before for p in list_shards(out / "shards")) == 1


def test_label_an_image_list(tmp_path, capsys):
    folder = make_inputs(tmp_path, n_images=3, video_frames=0)
    sub = folder / "sub"
    sub.mkdir()
    (folder / "img2.png").rename(sub / "img2.png")
    lst = folder / "train.txt"
    lst.write_text("# three images, one missing\nimg0.png\n\nsub/img2.png\n"
                   f"{folder / 'img1.png'}\nmissing.png\n")
    code = run_label([str(lst), "-o", str(tmp_path / "s")])
    assert code == 1 and "missing.png" in capsys.readouterr().err
    docs = [s["json"] for s in read_all(tmp_path / "s").values()]
    assert sorted(d["key"] for d in docs) == sorted(
        unit_key(n, None) for n in ("img0", "sub/img2", "img1"))
