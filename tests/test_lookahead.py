"""The look-ahead: the experts of the next image run in the background while the current one is
fitted, once per image, in order, never twice at once; the batch runner and video loop use it."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from test_cli_errors import FakeReconstructor, FakeSession, _image, _save, _video

from furpe.config import ReconstructConfig
from furpe.core.camera import intrinsics
from furpe.core.registry import register, unregister
from furpe.fitting.fit import FitConfig
from furpe.core.lookahead import Lookahead, one_ahead
from furpe.experts.base import PersonObservation
from furpe.pipeline import Reconstructor
from furpe.runner import run
from furpe.synthetic import exact_observations, sample_params

W = H = 480
K = intrinsics(W, H)
FAST = FitConfig(iters_global=8, iters_body3d=0, iters_body=8, iters_parts=8)


# -- the queue ----------------------------------------------------------------------------

def test_lookahead_takes_results_by_image_in_order_and_keeps_errors_with_theirs() -> None:
    ahead = Lookahead()
    calls: list[tuple[str, str]] = []

    def work(name: str) -> str:
        calls.append((name, threading.current_thread().name))
        if name == "bad":
            raise ValueError("bad image")
        return name.upper()

    owner = object()
    a, bad, b = np.zeros(1), np.zeros(1), np.zeros(1)
    assert not ahead.started
    assert ahead.take(owner, a, work, "inline")[0] == "INLINE"  # nothing started: runs here
    assert calls[-1][1] == threading.current_thread().name
    ahead.submit(owner, a, work, "a")
    ahead.submit(owner, bad, work, "bad")
    ahead.submit(owner, b, work, "b")
    assert ahead.started
    out, seconds = ahead.take(owner, a, work, "never")
    assert out == "A" and seconds >= 0
    with pytest.raises(ValueError, match="bad image"):
        ahead.take(owner, bad, work, "never")
    assert ahead.take(owner, b, work, "never")[0] == "B"
    # An image never submitted runs in the thread too, after the calls before it.
    assert ahead.take(owner, np.zeros(1), work, "late")[0] == "LATE"
    names = [n for n, _ in calls]
    assert names == ["inline", "a", "bad", "b", "late"]
    assert all(t.startswith("furpe-experts") for _, t in calls[1:])
    # Identity, not equality, finds a result: an equal array is another image.
    ahead.submit(owner, a, work, "a2")
    assert ahead.take(owner, a.copy(), work, "copy")[0] == "COPY"
    ahead.close()
    assert [n for n, _ in calls][-2:] == ["a2", "copy"]


def test_lookahead_calls_run_one_at_a_time_in_threads_that_end_with_them() -> None:
    """No lasting thread: one that ran torch would keep its OpenMP team, which slows the
    caller's multi-threaded torch work (threads.own_thread)."""
    ahead = Lookahead()
    running = threading.Lock()
    ran_in: list[threading.Thread] = []

    def work(name: str) -> str:
        assert running.acquire(blocking=False), "two calls ran at once"
        try:
            time.sleep(0.02)
            ran_in.append(threading.current_thread())
            return name
        finally:
            running.release()

    owner = object()
    images = [np.zeros(1) for _ in range(3)]
    for i, img in enumerate(images):
        ahead.submit(owner, img, work, str(i))
    assert [ahead.take(owner, img, work, "x")[0] for img in images] == ["0", "1", "2"]
    ahead.close()
    assert len(set(ran_in)) == 3
    for thread in ran_in:
        thread.join(5)
        assert not thread.is_alive()


def test_skipped_images_are_dropped_and_drain_waits() -> None:
    ahead = Lookahead()
    done: list[str] = []

    def slow(name: str) -> str:
        time.sleep(0.05)
        done.append(name)
        return name

    owner = object()
    images = [np.zeros(1) for _ in range(3)]
    for i, img in enumerate(images):
        ahead.submit(owner, img, slow, str(i))
    assert ahead.take(owner, images[1], slow, "x")[0] == "1"  # image 0 was skipped
    ahead.drain()
    assert done == ["0", "1", "2"]
    # Image 0's result is gone: taking it runs the experts again.
    assert ahead.take(owner, images[0], slow, "again")[0] == "again"
    ahead.close()


def test_one_ahead_pairs_frames_and_raises_decoding_errors_after_the_last_good_one() -> None:
    from furpe.core.errors import InputError

    assert list(one_ahead([])) == []
    assert list(one_ahead([1, 2, 3])) == [(1, 2), (2, 3), (3, None)]

    def broken():
        yield 1
        yield 2
        raise InputError("stopped decoding")

    got = []
    with pytest.raises(InputError):
        for pair in one_ahead(broken()):
            got.append(pair)
    assert got == [(1, 2), (2, None)]


# -- the reconstructor --------------------------------------------------------------------

class Watched:
    """A body expert replaying prepared people per image (keyed by the image's first pixel),
    recording which thread ran it, and failing if two calls overlap."""

    calls: list[tuple[int, str]] = []
    people: dict[int, list] = {}
    busy = threading.Lock()

    def __init__(self, video: bool = False, max_people: int = 4) -> None:
        self.name, self.parts = "test_watched", ("body", "left_hand", "right_hand", "face")

    def observe(self, image, people):
        assert Watched.busy.acquire(blocking=False), "experts ran twice at once"
        try:
            time.sleep(0.02)
            key = int(image[0, 0, 0]) - 100
            Watched.calls.append((key, threading.current_thread().name))
            return people + list(Watched.people[key])
        finally:
            Watched.busy.release()


@pytest.fixture()
def watched(anny_model):
    Watched.calls = []
    Watched.people = {}
    for key in range(3):
        p = sample_params(anny_model, np.random.default_rng(key), distance=4.0)
        p["transl"][0, 0] = 0.3 * (key - 1)
        with torch.no_grad():
            Watched.people[key] = exact_observations(anny_model, anny_model(p), K)
    register("expert", "test_watched", Watched)
    yield Watched
    unregister("expert", "test_watched")


def _images() -> list[np.ndarray]:
    out = []
    for key in range(3):
        img = np.full((H, W, 3), 128, np.uint8)  # not dark: no exposure change
        img[0, 0, 0] = 100 + key
        out.append(img)
    return out


def test_prefetch_runs_the_next_images_experts_during_this_fit(anny_model, watched,
                                                                 monkeypatch) -> None:
    config = ReconstructConfig(device="cpu", experts=("test_watched",), fit=FAST)
    rec = Reconstructor(config, body_model=anny_model)
    images = _images()
    plain = [rec.reconstruct_image(img) for img in images]
    assert [k for k, _ in watched.calls] == [0, 1, 2]
    watched.calls.clear()

    fit = rec.fitter.fit
    seen_during_fit: list[int] = []

    def fit_waiting_for_the_next(*args, **kwargs):
        # The experts of the next image run while this one is fitted: wait for them here
        # (without the look-ahead they never come, and this times out).
        expected = min(len(seen_during_fit) + 2, 3)
        deadline = time.monotonic() + 10
        while len(watched.calls) < expected and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_during_fit.append(len(watched.calls))
        return fit(*args, **kwargs)

    monkeypatch.setattr(rec.fitter, "fit", fit_waiting_for_the_next)
    ahead = []
    rec.prefetch(images[0])
    for i, img in enumerate(images):
        if i + 1 < len(images):
            rec.prefetch(images[i + 1])
        ahead.append(rec.reconstruct_image(img))
    assert seen_during_fit == [2, 3, 3]
    assert [k for k, _ in watched.calls] == [0, 1, 2]  # once per image, in order
    assert all(t.startswith("furpe-experts") for _, t in watched.calls)
    for a, b in zip(plain, ahead):  # the same results
        assert np.array_equal(a.people[0].vertices, b.people[0].vertices)
        assert b.timings["experts"] > 0.015  # the experts' own time, spent in the background

    # A session drains the look-ahead before resetting its experts, and takes its frames'.
    watched.calls.clear()
    monkeypatch.setattr(rec.fitter, "fit", fit)
    rec.prefetch(images[2])  # never taken: the session waits for it and drops it
    with rec.video() as session:
        session.prefetch(images[0])
        session.prefetch(images[1])
        first = session.reconstruct_frame(images[0])
        session.reconstruct_frame(images[1])
    assert [k for k, _ in watched.calls] == [2, 0, 1]
    assert first.people[0].track_id is not None


class Bodies:
    """A body expert giving the bodies of :attr:`full` (prepared people)."""

    full: list = []

    def __init__(self) -> None:
        self.name, self.parts = "test_bodies", ("body",)

    def observe(self, image, people):
        return people + [PersonObservation({"body": p.parts["body"]}) for p in Bodies.full]


class Details:
    """A hand and face expert filling in the other parts of :attr:`Bodies.full`; it waits
    (5 s at most) for the fit to start, records whether it did and in which thread it ran,
    and with :attr:`adds` also adds a person of its own."""

    started = threading.Event()
    calls: list[tuple[bool, str]] = []
    adds: list = []

    def __init__(self) -> None:
        self.name, self.parts = "test_details", ("left_hand", "right_hand", "face")

    def observe(self, image, people):
        Details.calls.append((Details.started.wait(5), threading.current_thread().name))
        time.sleep(0.02)
        for person, full in zip(people, Bodies.full):
            person.parts.update({k: v for k, v in full.parts.items() if k != "body"})
        return people + list(Details.adds)


@pytest.fixture()
def split_experts(anny_model):
    rng = np.random.default_rng(3)
    people = []
    for shift in (-0.4, 0.4):
        p = sample_params(anny_model, rng, distance=4.0)
        p["transl"][0, 0] = shift
        with torch.no_grad():
            people += exact_observations(anny_model, anny_model(p), K)
    Bodies.full, Details.adds, Details.calls = people[:1], [], []
    Details.started.clear()
    register("expert", "test_bodies", Bodies)
    register("expert", "test_details", Details)
    yield people
    unregister("expert", "test_bodies")
    unregister("expert", "test_details")


def test_hand_and_face_experts_run_while_the_body_places_the_model(anny_model, split_experts,
                                                                   monkeypatch) -> None:
    config = ReconstructConfig(device="cpu", experts=("test_bodies", "test_details"), fit=FAST)
    rec = Reconstructor(config, body_model=anny_model)
    fit = rec.fitter.fit

    def fit_starts(*args, **kwargs):
        Details.started.set()  # the detail expert waits for this; run before the fit, it
        return fit(*args, **kwargs)  # times out

    monkeypatch.setattr(rec.fitter, "fit", fit_starts)
    image = _images()[0]
    overlapped = rec.reconstruct_image(image)
    assert Details.calls[0][0], "the hand and face expert ran before the fit started"
    assert Details.calls[0][1].startswith("furpe-job")
    assert overlapped.timings["experts"] >= 0.02  # the detail expert's own time counts
    # The same result as the experts one after the other (the look-ahead's way).
    rec.prefetch(image)
    in_turn = rec.reconstruct_image(image)
    assert not Details.calls[1][1].startswith("furpe-job")
    person = overlapped.people[0]
    assert np.array_equal(person.vertices, in_turn.people[0].vertices)
    assert set(person.keypoints_2d) >= {"left_hand", "right_hand", "face"}
    for part in ("left_hand", "right_hand", "face"):  # what the detail expert saw was fitted
        observed = person.keypoints_2d[part].observed
        assert observed is not None
        assert np.allclose(observed, split_experts[0].parts[part].keypoints_2d)


def test_people_added_by_a_later_expert_are_fitted_too(anny_model, split_experts) -> None:
    Details.started.set()
    Details.adds = [PersonObservation({"body": split_experts[1].parts["body"]})]
    config = ReconstructConfig(device="cpu", experts=("test_bodies", "test_details"), fit=FAST)
    frame = Reconstructor(config, body_model=anny_model).reconstruct_image(_images()[0])
    assert len(frame.people) == 2
    xs = sorted(float(np.ravel(p.params["transl"])[0]) for p in frame.people)
    assert xs[0] < -0.2 and xs[1] > 0.2


# -- the batch runner ---------------------------------------------------------------------

class Recording(FakeReconstructor):
    """The fake reconstructor with a look-ahead: records prefetch and reconstruct calls."""

    def __init__(self, config: ReconstructConfig) -> None:
        super().__init__(config)
        self.events: list[tuple[str, int]] = []
        self.pending: list[np.ndarray] = []

    def prefetch(self, image: np.ndarray) -> None:
        self.events.append(("prefetch", int(image[0, 0, 0])))
        self.pending.append(image)

    def reconstruct_image(self, image: np.ndarray):
        # Each image reconstructed is the very array prefetched for it.
        assert any(p is image for p in self.pending) or not self.pending
        self.events.append(("image", int(image[0, 0, 0])))
        return super().reconstruct_image(image)

    def video(self):
        self.sessions += 1
        return RecordingSession(self, f"video{self.sessions}")


class RecordingSession(FakeSession):
    def prefetch(self, image: np.ndarray) -> None:
        self.rec.events.append(("prefetch_frame", int(image[:, :, 0].sum() // 1000)))

    def reconstruct_frame(self, image, timestamp=None):
        self.rec.events.append(("frame", int(image[:, :, 0].sum() // 1000)))
        return super().reconstruct_frame(image, timestamp)


def _recording_factory() -> tuple[list[Recording], Callable[[], Recording]]:
    """A factory of :class:`Recording` reconstructors and the list of those it built."""
    built: list[Recording] = []

    def factory() -> Recording:
        built.append(Recording(ReconstructConfig()))
        return built[-1]

    return built, factory


def _numbered(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        img = _image(seed=i)
        img[0, 0, 0] = 10 * (i + 1)  # survives PNG
        paths.append(_save(tmp_path / "in" / f"img{i}.png", img))
    return paths


def test_the_runner_reads_and_prefetches_the_next_image(tmp_path: Path) -> None:
    from furpe.io.inputs import collect_inputs

    _numbered(tmp_path, 3)
    items = collect_inputs([str(tmp_path / "in")], False)
    built, factory = _recording_factory()
    summary = run(factory, items, tmp_path / "out", overlay=False, mesh=False, progress=False)
    assert summary.images_ok == 3
    assert built[0].events == [("prefetch", 10), ("prefetch", 20), ("image", 10),
                               ("prefetch", 30), ("image", 20), ("image", 30)]
    # Resumed: finished images are neither read ahead nor reconstructed.
    (tmp_path / "out" / "img1.json").unlink()
    summary = run(factory, items, tmp_path / "out", overlay=False, mesh=False, resume=True,
                  progress=False)
    assert summary.images_ok == 1 and summary.images_skipped == 2
    assert built[1].events == [("image", 20)]


def test_the_video_loop_prefetches_the_next_frame(tmp_path: Path) -> None:
    from furpe.io.inputs import collect_inputs

    _video(tmp_path / "clip.mp4", n=4, blank=())
    items = collect_inputs([str(tmp_path / "clip.mp4")], False)
    built, factory = _recording_factory()
    run(factory, items, tmp_path / "out", overlay=False, mesh=False, progress=False)
    events = built[0].events
    kinds = [k for k, _ in events]
    assert kinds == ["prefetch_frame", "prefetch_frame", "frame", "prefetch_frame", "frame",
                     "prefetch_frame", "frame", "frame"]
    # Each frame is prefetched before it is reconstructed, in the video's order.
    pre = [v for k, v in events if k == "prefetch_frame"]
    done = [v for k, v in events if k == "frame"]
    assert pre == done and pre == sorted(pre) and len(set(pre)) == 4


def test_furpe_reconstruct_fits_on_one_thread_and_restores_it(tmp_path: Path) -> None:
    from furpe.cli import main

    _numbered(tmp_path, 2)
    seen: list[int] = []

    class Counting(Recording):
        def reconstruct_image(self, image):
            seen.append(torch.get_num_threads())
            return super().reconstruct_image(image)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["reconstruct", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--quiet", "--no-overlay", "--no-mesh"], Counting) == 0
        assert seen == [1, 1]  # the fit's ops on one thread, the experts on the other core
        assert torch.get_num_threads() == 2  # restored for the caller
        seen.clear()
        assert main(["reconstruct", str(tmp_path / "in"), "-o", str(tmp_path / "net"),
                     "--quiet", "--no-overlay", "--no-mesh", "--method", "network"],
                    Counting) == 0
        assert seen == [2, 2]  # the network alone keeps its threads
    finally:
        torch.set_num_threads(before)


def test_the_labeller_prefetches_the_next_image_and_frame(tmp_path: Path) -> None:
    from test_labels import FakeLabelReconstructor

    from furpe.io.inputs import collect_inputs
    from furpe.labels.engine import label

    class Prefetching(FakeLabelReconstructor):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[tuple[str, int]] = []
            self.handed: list[np.ndarray] = []

        def prefetch(self, image: np.ndarray) -> None:
            self.events.append(("prefetch", int(image[:, :, 0].sum())))
            self.handed.append(image)

        def reconstruct_image(self, image, reset_rejected=True):
            assert any(h is image for h in self.handed)  # the very array handed over
            self.events.append(("label", int(image[:, :, 0].sum())))
            return super().reconstruct_image(image, reset_rejected)

    _numbered(tmp_path, 2)
    _video(tmp_path / "in" / "z_clip.mp4", n=4, blank=())
    items = collect_inputs([str(tmp_path / "in")], False)
    assert [i.kind for i in items] == ["image", "image", "video"]
    built: list[Prefetching] = []

    def factory():
        built.append(Prefetching())
        return built[-1]

    summary = label(items, tmp_path / "shards", factory, every=2, progress=False)
    assert summary.samples == 4  # 2 images + frames 0 and 2
    kinds = [k for k, _ in built[0].events]
    assert kinds == ["prefetch", "prefetch", "label", "label",  # image 2 handed over ahead
                     "prefetch", "prefetch", "label", "label"]  # frame 2 during frame 0
    pre = [v for k, v in built[0].events if k == "prefetch"]
    done = [v for k, v in built[0].events if k == "label"]
    assert pre == done  # each handed over once, labelled in that order


def test_an_unreadable_image_never_loads_the_model(tmp_path: Path) -> None:
    from furpe.io.inputs import collect_inputs

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    items = collect_inputs([str(tmp_path / "in")], False)
    built, factory = _recording_factory()
    summary = run(factory, items, tmp_path / "out", overlay=False, mesh=False, progress=False)
    assert summary.failed == 1 and built == []
    # An unreadable image after a good one: reported in its own turn, not read ahead.
    _numbered(tmp_path, 1)
    items = collect_inputs([str(tmp_path / "in")], False)
    assert [i.path.name for i in items] == ["broken.png", "img0.png"]
    items = items[::-1]
    summary = run(factory, items, tmp_path / "out2", overlay=False, mesh=False, progress=False)
    assert (summary.images_ok, summary.failed) == (1, 1)
    assert built[0].events == [("image", 10)]
