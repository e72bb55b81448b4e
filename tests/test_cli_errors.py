"""The command line end to end, with a fake reconstructor (no models are loaded)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import furpe
from furpe.cli import main
from furpe.config import ReconstructConfig
from furpe.core.errors import FurpeError, NoPersonError
from furpe.io.video import VideoWriter
from furpe.results import FrameResult, PartResult, PersonResult

REPO = Path(__file__).resolve().parents[1]

TET = np.array([[-0.2, -0.2, 2.0], [0.2, -0.2, 2.0], [0.0, 0.25, 2.0], [0.0, 0.0, 1.7]], np.float32)
TET_FACES = np.array([[0, 1, 2], [0, 1, 3], [1, 2, 3], [0, 2, 3]], np.int32)


class FakeBodyModel:
    name = "anny"
    faces = TET_FACES


class FakeReconstructor:
    """Returns a tetrahedron in front of the camera; nobody in a (nearly) uniform image."""

    def __init__(self, config: ReconstructConfig) -> None:
        self.config = config
        self.body_model = FakeBodyModel()
        self.previous: list[FrameResult | None] = []
        self.modes: list[str] = []  # "image", or "video<k>" for the k-th video session
        self.sessions = 0

    def reconstruct_image(self, image: np.ndarray) -> FrameResult:
        self.modes.append("image")
        return self._reconstruct(image, None)

    def video(self) -> "FakeSession":
        self.sessions += 1
        return FakeSession(self, f"video{self.sessions}")

    def _reconstruct(self, image: np.ndarray, previous: FrameResult | None) -> FrameResult:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.previous.append(previous)
        if image.std() < 2.0:
            raise NoPersonError("no person found")
        if image.shape[1] == 17:
            raise ValueError("odd width\nsecond line")
        h, w = image.shape[:2]
        K = np.array([[w, 0, (w - 1) / 2], [0, w, (h - 1) / 2], [0, 0, 1]], float)
        person = PersonResult(
            params={"global_orient": np.zeros((1, 3), np.float32),
                    "transl": np.array([0, 0, 2.0], np.float32)},
            vertices=TET.copy(), joints=TET[:2].copy(), keypoints_2d={},
            parts={"body": PartResult("body", True, True, {"score": 0.9})},
            box=(0.0, 0.0, float(w), float(h)))
        return FrameResult(image_size=(w, h), intrinsics=K, body_model="anny",
                           joint_names=("a", "b"), faces=TET_FACES, people=[person],
                           timings={"total": 0.01})


class FakeSession:
    """Like :class:`furpe.pipeline.VideoSession`: warm-starts each frame from the last."""

    def __init__(self, rec: FakeReconstructor, mode: str) -> None:
        self.rec, self.mode = rec, mode
        self.previous: FrameResult | None = None

    def reconstruct_frame(self, image: np.ndarray, timestamp: float | None = None) -> FrameResult:
        self.rec.modes.append(self.mode)
        try:
            self.previous = self.rec._reconstruct(image, self.previous)
        except Exception:
            self.previous = None
            raise
        return self.previous

    def load_frame(self, frame: FrameResult | None, timestamp: float | None = None) -> None:
        self.previous = frame


class Factory:
    """Counts how often the reconstructor is built; keeps the instance."""

    def __init__(self) -> None:
        self.built = 0
        self.instance: FakeReconstructor | None = None

    def __call__(self, config: ReconstructConfig) -> FakeReconstructor:
        self.built += 1
        self.instance = FakeReconstructor(config)
        return self.instance


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _video(path: Path, n: int = 5, blank: tuple[int, ...] = (2,)) -> Path:
    with VideoWriter(path, 10, (64, 48)) as writer:
        for i in range(n):
            frame = np.full((48, 64, 3), 128, np.uint8) if i in blank else np.zeros((48, 64, 3), np.uint8)
            if i not in blank:
                frame[:, : 8 + 4 * i] = (220, 180, 40)
            writer.write(frame)
    return path


def _count_frames(path: Path) -> tuple[int, tuple[int, int], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return len(frames), (frames[0].width, frames[0].height), float(stream.average_rate)


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"furpe {furpe.__version__}"
    assert main(["--help"]) == 0
    assert "reconstruct" in capsys.readouterr().out
    assert main(["reconstruct", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ["--recursive", "--body-model", "--model-path", "--focal", "--max-people",
                   "--device", "--no-overlay", "--no-mesh", "--resume", "--quiet"]:
        assert option in help_text


def test_no_command_and_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["reconstruct", "x.jpg"]) == 2  # -o is required
    assert "-o/--output" in capsys.readouterr().err
    assert main(["reconstruct", "x.jpg", "-o", "out", "--max-people", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory = Factory()
    missing = tmp_path / "missing.jpg"
    code = main(["reconstruct", str(missing), "-o", str(tmp_path / "out")], factory)
    err = capsys.readouterr().err
    assert code == 1
    assert f"furpe: error: {missing}: no such file or directory" in err.splitlines()
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"furpe: 1 image: 0 ok, 1 failed; 0 people; results in {tmp_path / 'out'}"
    assert factory.built == 0  # a batch of only bad inputs never loads the model


def test_folder_with_corrupt_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    _save(src / "a.png", _image(seed=1))
    _save(src / "c.jpg", _image(seed=2))
    (src / "b.jpg").write_bytes(b"definitely not a jpeg")
    out = tmp_path / "out"
    factory = Factory()
    code = main(["reconstruct", str(src), "-o", str(out)], factory)
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        f"furpe: error: cannot read image {src / 'b.jpg'}: not a decodable image",
        f"furpe: 3 images: 2 ok, 1 failed; 2 people; results in {out}",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "a.json", "a_overlay.png", "a_person0.ply", "c.json", "c_overlay.png", "c_person0.ply"]
    doc = json.loads((out / "a.json").read_text())
    assert doc["source"] == str(src / "a.png") and doc["people"][0]["mesh"] == "a_person0.ply"
    assert "render" in doc["timings"]
    assert factory.built == 1
    assert factory.instance is not None and factory.instance.modes == ["image", "image"]


def test_options_reach_the_factory(tmp_path: Path) -> None:
    factory = Factory()
    img = _save(tmp_path / "x.png", _image())
    models = tmp_path / "models"
    models.mkdir()
    assert main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "--body-model", "smplx",
                 "--model-path", str(models), "--focal", "800", "--max-people", "2",
                 "--device", "cpu", "--no-overlay", "--no-mesh", "-q"], factory) == 0
    assert factory.instance is not None
    assert factory.instance.config == ReconstructConfig(
        body_model="smplx", model_path=str(models), focal=800.0, device="cpu", max_people=2)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.json"]


def test_blank_image_no_person(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = _save(tmp_path / "blank.png", np.full((40, 40, 3), 90, np.uint8))
    code = main(["reconstruct", str(blank), "-o", str(tmp_path / "out")], Factory())
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[0] == f"furpe: error: {blank}: no person found"
    assert err[-1].startswith("furpe: 1 image: 0 ok, 1 failed; 0 people;")
    assert not (tmp_path / "out" / "blank.json").exists()


def test_smplx_without_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory = Factory()
    img = _save(tmp_path / "x.png", _image())
    code = main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "--body-model", "smplx"], factory)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("furpe: error: --body-model smplx needs --model-path")
    assert len(err.strip().splitlines()) == 1
    assert factory.built == 0
    assert main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "--body-model", "smplx",
                 "--model-path", str(tmp_path / "nowhere")], factory) == 2
    assert "no such folder" in capsys.readouterr().err


def test_setup_error_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(config: ReconstructConfig) -> FakeReconstructor:
        raise FurpeError("SMPL-X model files not found in /models (expected SMPLX_NEUTRAL.npz)")

    img = _save(tmp_path / "x.png", _image())
    assert main(["reconstruct", str(img), "-o", str(tmp_path / "o")], broken) == 2
    err = capsys.readouterr().err
    assert err == "furpe: error: SMPL-X model files not found in /models (expected SMPLX_NEUTRAL.npz)\n"


def test_internal_error_is_one_line_and_batch_goes_on(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # --debug turns native logging on for the process: put it back after this test (else
    # MediaPipe's teardown at the suite's exit prints its tracebacks)
    monkeypatch.setattr("furpe.core.logs._VERBOSE", False)
    odd = _save(tmp_path / "in" / "a_odd.png", _image(w=17))
    _save(tmp_path / "in" / "b_good.png", _image())
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "in"), "-o", str(out)], Factory()) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"furpe: error: {odd}: internal error: ValueError: odd width"
    assert "Traceback" not in "\n".join(err)
    assert (out / "b_good.json").is_file()
    with pytest.raises(ValueError, match="odd width"):
        main(["reconstruct", str(odd), "-o", str(out), "--debug"], Factory())


def test_video_frames_and_overlay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = _video(tmp_path / "clip.mp4", n=5, blank=(2,))
    out = tmp_path / "out"
    factory = Factory()
    code = main(["reconstruct", str(video), "-o", str(out)], factory)
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.splitlines()[-1] == f"furpe: 1 video (5 frames): 1 ok, 0 failed; 1 person; results in {out}"
    frames_dir = out / "clip"
    assert sorted(p.name for p in frames_dir.glob("frame_*.json")) == [
        f"frame_{i:06d}.json" for i in range(5)]
    assert sorted(p.name for p in frames_dir.glob("*.ply")) == [
        f"frame_{i:06d}_person0.ply" for i in (0, 1, 3, 4)]
    no_person = json.loads((frames_dir / "frame_000002.json").read_text())
    assert no_person["status"] == "no_person" and no_person["people"] == []
    assert no_person["frame_index"] == 2
    ok = json.loads((frames_dir / "frame_000003.json").read_text())
    assert ok["status"] == "ok" and ok["frame_index"] == 3 and ok["timestamp"] == pytest.approx(0.3)
    summary = json.loads((frames_dir / "video.json").read_text())
    assert summary["complete"] is True and summary["frame_count"] == 5
    assert summary["no_person_frames"] == [2] and summary["failed_frames"] == []
    assert summary["fps"] == pytest.approx(10) and summary["overlay_video"] == "../clip_overlay.mp4"
    # the overlay with the side view next to it (--no-side-view: the input size)
    assert _count_frames(out / "clip_overlay.mp4") == (5, (128, 48), pytest.approx(10))
    # Warm start: each frame gets the previous result; none after a frame with nobody.
    assert factory.instance is not None and factory.instance.modes == ["video1"] * 5
    prev = factory.instance.previous
    assert [p is None for p in prev] == [True, False, False, True, False]
    assert _no_temp_files(out)


def test_images_next_to_videos_stay_single_images(tmp_path: Path) -> None:
    """A batch with videos: the images are reconstructed as single images (no tracking
    state, no warm start), and each video gets a session of its own (its experts reset)."""
    src = tmp_path / "in"
    _save(src / "a.png", _image(seed=1))
    _video(src / "b.mp4", n=3, blank=())
    _video(src / "c.mp4", n=2, blank=())
    _save(src / "d.png", _image(seed=2))
    factory = Factory()
    assert main(["reconstruct", str(src), "-o", str(tmp_path / "out"), "-q", "--no-overlay",
                 "--no-mesh"], factory) == 0
    rec = factory.instance
    assert rec is not None and rec.sessions == 2
    assert rec.modes == ["image", "video1", "video1", "video1", "video2", "video2", "image"]
    # A video's first frame starts cold, even right after another video or an image.
    assert [p is None for p in rec.previous] == [True, True, False, False, True, False, True]


def test_config_file_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _save(tmp_path / "x.png", _image())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("max_people: 3\nfocal: 500\nfit:\n  iters_body: 7\n  w2d: {face: 2.0}\n")
    factory = Factory()
    assert main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "--config", str(cfg),
                 "--max-people", "2", "-q"], factory) == 0
    config = factory.instance.config
    assert config.max_people == 2 and config.focal == 500.0 and config.fit.iters_body == 7
    assert config.fit.w2d == {"body": 1.0, "left_hand": 1.0, "right_hand": 1.0, "face": 2.0}
    # Unknown keys and wrong types: one line, exit 2, nothing built.
    for text, message in (("fit:\n  iters_bodyy: 3\n", "unknown key 'fit.iters_bodyy'"),
                          ("max_people: many\n", "max_people must be a whole number"),
                          ("experts: [mediapipe_pose, nope]\n", "unknown expert 'nope'"),
                          ("fit: [1, 2\n", "cannot parse")):
        cfg.write_text(text)
        factory = Factory()
        assert main(["reconstruct", str(img), "-o", str(tmp_path / "o"), "--config",
                     str(cfg)], factory) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"furpe: error: --config {cfg}: ") and message in err, err
        assert len(err.strip().splitlines()) == 1 and factory.built == 0


def test_undecodable_video_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    factory = Factory()
    assert main(["reconstruct", str(bad), "-o", str(tmp_path / "out")], factory) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"furpe: error: cannot open video {bad}: not a decodable video")
    assert err[-1].startswith("furpe: 1 video (0 frames): 0 ok, 1 failed")
    assert factory.built == 0


def test_resume_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    _save(src / "a.png", _image(seed=3))
    _save(src / "b.png", _image(seed=4))
    out = tmp_path / "out"
    assert main(["reconstruct", str(src), "-o", str(out)], Factory()) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "b.json").write_text("{ truncated")  # not valid JSON: redone
    factory = Factory()
    assert main(["reconstruct", str(src), "-o", str(out), "--resume"], factory) == 0
    assert factory.instance is not None and len(factory.instance.previous) == 1
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert after["a.json"] == before["a.json"] and after["a_person0.ply"] == before["a_person0.ply"]
    assert json.loads((out / "b.json").read_text())["status"] == "ok"
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "furpe: 2 images: 1 ok, 1 skipped (already done), 0 failed; 2 people;")
    # Everything done: the model is never built.
    factory = Factory()
    assert main(["reconstruct", str(src), "-o", str(out), "--resume", "-q"], factory) == 0
    assert factory.built == 0
    assert capsys.readouterr().err == ""


def test_resume_video(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.mp4", n=5, blank=(2,))
    out = tmp_path / "out"
    assert main(["reconstruct", str(video), "-o", str(out), "-q"], Factory()) == 0
    frames_dir = out / "clip"
    kept = (frames_dir / "frame_000001.json").stat().st_mtime_ns
    # Simulate an interrupted run: the last frame, the summary and the mp4 are missing.
    for name in ["frame_000004.json", "video.json"]:
        (frames_dir / name).unlink()
    (out / "clip_overlay.mp4").unlink()
    factory = Factory()
    assert main(["reconstruct", str(video), "-o", str(out), "--resume", "-q"], factory) == 0
    assert factory.instance is not None
    prev = factory.instance.previous
    assert len(prev) == 1 and prev[0] is not None  # warm-started from frame 3, loaded from disk
    assert prev[0].people[0].vertices.shape == (4, 3)
    assert (frames_dir / "frame_000001.json").stat().st_mtime_ns == kept
    assert json.loads((frames_dir / "video.json").read_text())["complete"] is True
    assert _count_frames(out / "clip_overlay.mp4")[0] == 5
    # Complete now: skipped without building the model.
    factory = Factory()
    assert main(["reconstruct", str(video), "-o", str(out), "--resume", "-q"], factory) == 0
    assert factory.built == 0


def test_ctrl_c_stops_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    for k in range(3):
        _save(src / f"{k}.png", _image(seed=k))

    class Interrupting(FakeReconstructor):
        def reconstruct_image(self, image):
            if len(self.previous) == 1:
                raise KeyboardInterrupt
            return super().reconstruct_image(image)

    out = tmp_path / "out"
    assert main(["reconstruct", str(src), "-o", str(out)], Interrupting) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("furpe: interrupted; ")
    assert sorted(p.name for p in out.iterdir()) == ["0.json", "0_overlay.png", "0_person0.ply"]
    assert _no_temp_files(out)


def test_subprocess_missing_input(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "furpe", "reconstruct", "/nonexistent.jpg",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("furpe: error:")]
    assert errors == ["furpe: error: /nonexistent.jpg: no such file or directory"]
    assert "Traceback" not in proc.stderr
