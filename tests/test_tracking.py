"""Videos: the multi-person tracker (stable ids through crossings, absences and newcomers),
One-Euro smoothing of body-model parameters against exact truth, and the video session and
runner writing track ids."""
from __future__ import annotations

import json

import numpy as np
from conftest import spy_fit
import pytest
import torch

from furpe.config import ReconstructConfig, config_from_dict
from furpe.core.camera import intrinsics, project
from furpe.core.errors import SetupError
from furpe.core.registry import register, unregister
from furpe.fitting.fit import FitConfig
from furpe.metrics import accel_error, mpjpe
from furpe.tracking import (PersonSmoother, SmoothingConfig, Tracker, TrackingConfig,
                            quat_to_rotvec, rotvec_to_quat)

# --------------------------------------------------------------------------- the tracker

T = 40
W_BOX, H_BOX = 80.0, 200.0


def _scene(rng: np.random.Generator) -> list[list[tuple[str, np.ndarray, np.ndarray]]]:
    """Per frame, the people seen as ``(who, box, keypoints)``, listed left to right (as a
    detector might): A walks right and B left along the same line, their boxes overlapping
    where they cross (frames 18-21); C walks out of the image at the left edge (absent in
    frames 6-10) and comes back in; D enters at frame 25."""
    templates = {who: rng.uniform(0.1, 0.9, (33, 2)) for who in "ABCD"}

    def person(who: str, x0: float, y0: float) -> tuple[str, np.ndarray, np.ndarray]:
        box = np.array([x0, y0, x0 + W_BOX, y0 + H_BOX])
        kps = box[:2] + templates[who] * [W_BOX, H_BOX] + rng.normal(0, 2.0, (33, 2))
        kps[rng.random(33) < 0.2] = np.nan  # landmarks the expert missed
        return who, box + rng.normal(0, 1.5, 4), kps

    frames = []
    for t in range(T):
        people = [person("A", 100 + 15 * t, 100), person("B", 685 - 15 * t, 120)]
        if t < 6:
            people.append(person("C", 60 - 12 * t, 400))
        elif t > 10:
            people.append(person("C", 12 * (t - 11), 400))
        if t >= 25:
            people.append(person("D", 600 + 2 * (t - 25), 420))
        frames.append(sorted(people, key=lambda p: p[1][0]))
    return frames


def _run(tracker: Tracker, frames, keypoints: bool = True, known=None) -> dict[str, list[int]]:
    """Each identity's track id per frame it is seen in."""
    ids: dict[str, list[int]] = {}
    for t, people in enumerate(frames):
        got = tracker.update([b for _, b, _ in people],
                             [k for _, _, k in people] if keypoints else None,
                             ids=None if known is None else [known[t][w] for w, _, _ in people])
        for (who, _, _), tid in zip(people, got):
            ids.setdefault(who, []).append(tid)
    return ids


def test_scene_defeats_per_frame_index_order() -> None:
    """The scene is hard: ids by per-frame index (the order people are listed in) switch."""
    frames = _scene(np.random.default_rng(0))
    naive: dict[str, set[int]] = {}
    for people in frames:
        for k, (who, _, _) in enumerate(people):
            naive.setdefault(who, set()).add(k)
    assert all(len(v) > 1 for v in naive.values()), naive
    boxes = {who: b for who, b, _ in frames[19]}  # the crossing: boxes overlap
    a, b = boxes["A"], boxes["B"]
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    assert inter / (2 * W_BOX * H_BOX - inter) > 0.5


@pytest.mark.parametrize("keypoints", [True, False], ids=["keypoints", "boxes-only"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identities_never_switch(seed: int, keypoints: bool) -> None:
    frames = _scene(np.random.default_rng(seed))
    tracker = Tracker(TrackingConfig(max_age=8))
    ids = _run(tracker, frames, keypoints)
    # One id per person over the whole clip (through the crossing, C's absence, D's
    # arrival), and no two people share one.
    assert {who: sorted(set(v)) for who, v in ids.items()} == {
        "A": [ids["A"][0]], "B": [ids["B"][0]], "C": [ids["C"][0]], "D": [ids["D"][0]]}
    assert len({v[0] for v in ids.values()}) == 4
    assert ids["D"][0] == 3  # the newcomer gets a new id; the others keep theirs
    c = tracker.tracks[ids["C"][0]]
    assert (c.first_frame, c.last_frame, c.hits) == (0, T - 1, T - 5)


def test_long_absence_gives_a_new_id_never_reused() -> None:
    frames = _scene(np.random.default_rng(3))
    tracker = Tracker(TrackingConfig(max_age=3))  # C is away for 5 frames
    ids = _run(tracker, frames)
    # C (back at frame 11) gets the next id, D (frame 25) the one after.
    assert sorted(set(ids["C"])) == [ids["C"][0], 3] and ids["D"] == [4] * (T - 25)
    assert len(set(ids["C"]) | set(ids["A"]) | set(ids["B"]) | set(ids["D"])) == 5
    assert [t.id for t in tracker.ended] == [ids["C"][0]]
    # A frame with nobody: every track misses it; within max_age they are found again.
    tracker.skip()
    again = tracker.update([b for _, b, _ in frames[-1]], [k for _, _, k in frames[-1]])
    assert sorted(again) == sorted(tracker.tracks) == sorted({ids[w][-1] for w in "ABCD"})


def test_known_ids_resume_the_same_tracks() -> None:
    """Frames read back with their ids (a resumed run), then new frames: the ids go on as
    if the run had never stopped."""
    frames = _scene(np.random.default_rng(4))
    full = _run(Tracker(), frames)
    per_frame = [{who: full[who][sum(1 for p in frames[:t] if any(w == who for w, _, _ in p))]
                  for who, _, _ in people} for t, people in enumerate(frames)]
    resumed = Tracker()
    first = _run(resumed, frames[:20], known=per_frame[:20])
    rest = _run(resumed, frames[20:])
    for who in full:
        assert first.get(who, []) + rest.get(who, []) == full[who], who


def test_tracking_config_is_checked() -> None:
    with pytest.raises(SetupError, match="max_age"):
        TrackingConfig(max_age=-1)
    with pytest.raises(SetupError, match="keypoint_weight"):
        TrackingConfig(keypoint_weight=2.0)
    with pytest.raises(SetupError, match="min_cutoff"):
        SmoothingConfig(min_cutoff=0.0)
    cfg = config_from_dict({"tracking": {"max_age": 4}, "smoothing": {"beta": 0.1}})
    assert cfg.tracking.max_age == 4 and cfg.smoothing.beta == 0.1 and cfg.smoothing.enabled
    with pytest.raises(SetupError, match="unknown key 'smoothing.strength'"):
        config_from_dict({"smoothing": {"strength": 2}})


def test_smooth_option(tmp_path, capsys) -> None:
    from furpe.cli import build_config, build_parser, main

    def config(*extra: str) -> ReconstructConfig:
        return build_config(build_parser().parse_args(["reconstruct", "x.mp4", "-o", "o", *extra]))

    default = SmoothingConfig()
    assert config().smoothing == default
    assert config("--smooth", "off").smoothing.enabled is False
    strong = config("--smooth", "2").smoothing
    assert strong.enabled and strong.min_cutoff == default.min_cutoff / 2
    assert strong.beta == default.beta / 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text("smoothing: {enabled: false, d_cutoff: 2.0}\n")
    on = config("--config", str(cfg), "--smooth", "1").smoothing
    assert on.enabled and on.d_cutoff == 2.0 and on.min_cutoff == default.min_cutoff
    assert main(["reconstruct", "x.mp4", "-o", str(tmp_path), "--smooth", "-1"]) == 2
    assert "--smooth" in capsys.readouterr().err
    assert main(["reconstruct", "--help"]) == 0
    assert "--smooth STRENGTH|off" in capsys.readouterr().out


# --------------------------------------------------------------------------- smoothing

FPS = 30.0


def _trajectory(model, n: int = 90) -> dict[str, np.ndarray]:
    """A smooth motion of one person: (n, ...) parameters per block, from one sampled pose to
    another and back, walking 1 m across and 0.5 m away."""
    from furpe.synthetic import sample_params

    a = sample_params(model, np.random.default_rng(11), distance=4.0)
    b = sample_params(model, np.random.default_rng(12), distance=4.0)
    s = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # 0 -> 1 -> 0
    out = {}
    for k in model.blocks:
        pa, pb = a[k][0].numpy().astype(np.float64), b[k][0].numpy().astype(np.float64)
        shape = (n,) + (1,) * pa.ndim
        out[k] = pa[None] + (pb - pa)[None] * s.reshape(shape)
    out["transl"] = out["transl"] + np.stack([np.linspace(-0.5, 0.5, n), np.zeros(n),
                                              0.5 * s], -1)
    return out


def _noisy(model, truth: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame jitter like a per-frame fit's: 1 degree on every rotation, 5 mm across and
    15 mm in depth, 0.015 on coefficients (which may leave their range)."""
    noisy = {}
    for k, v in truth.items():
        kind = model.blocks[k].kind
        sigma = {"rotation": np.radians(1.0), "bounded": 0.015}.get(kind, 0.0)
        noise = rng.normal(0, 1, v.shape) * (sigma if k != "transl" else [0.005, 0.005, 0.015])
        noisy[k] = v + noise
    return noisy


def _joints(model, params: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model({k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}
                     ).joints.numpy().astype(np.float64)


def _smooth_all(model, seq: dict[str, np.ndarray], config: SmoothingConfig) -> dict[str, np.ndarray]:
    smoother = PersonSmoother(config, model.blocks)
    n = len(next(iter(seq.values())))
    frames = [smoother({k: v[i] for k, v in seq.items()}, i / FPS) for i in range(n)]
    return {k: np.stack([f[k] for f in frames]) for k in seq}


def test_smoothing_lowers_acceleration_error_without_raising_mpjpe(anny_model) -> None:
    truth = _trajectory(anny_model)
    noisy = _noisy(anny_model, truth, np.random.default_rng(5))
    smoothed = _smooth_all(anny_model, noisy, SmoothingConfig())
    gt, raw, out = (_joints(anny_model, p) for p in (truth, noisy, smoothed))
    accel = accel_error(raw, gt), accel_error(out, gt)
    err = float(np.mean(mpjpe(raw, gt))), float(np.mean(mpjpe(out, gt)))
    rel = float(np.mean(mpjpe(raw, gt, align="root"))), float(np.mean(mpjpe(out, gt, align="root")))
    print(f"accel error {accel[0]:.2f} -> {accel[1]:.2f} mm/frame^2, "
          f"MPJPE {err[0]:.2f} -> {err[1]:.2f} mm, root-aligned {rel[0]:.2f} -> {rel[1]:.2f} mm")
    assert accel[1] <= 0.5 * accel[0], accel
    assert err[1] <= 1.05 * err[0], err  # camera frame: the translation's lag counts too
    assert rel[1] <= 1.05 * rel[0], rel
    # Bounded coefficients stay in their range although the noisy input leaves it.
    bounded = [k for k, blk in anny_model.blocks.items() if blk.kind == "bounded"]
    assert bounded and any(((noisy[k] < 0) | (noisy[k] > 1)).any() for k in bounded)
    for k in bounded:
        blk = anny_model.blocks[k]
        assert smoothed[k].min() >= blk.lower and smoothed[k].max() <= blk.upper, k
    # Stronger smoothing smooths more.
    strong = _smooth_all(anny_model, noisy, SmoothingConfig().with_strength(3.0))
    assert accel_error(_joints(anny_model, strong), gt) < accel[1]


def _angle_between(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    q1, q2 = rotvec_to_quat(r1), rotvec_to_quat(r2)
    return 2 * np.arccos(np.clip(np.abs((q1 * q2).sum(-1)), 0, 1))


def test_rotations_stay_continuous_through_the_pi_wrap() -> None:
    """A person turning about the vertical through 180 degrees: the axis-angle vector jumps
    from +pi to -pi (the same rotation); the smoothed rotation follows without a jump."""
    n = 60
    yaw = np.linspace(2.6, 3.7, n)
    rng = np.random.default_rng(6)
    truth = quat_to_rotvec(np.stack([np.cos(yaw / 2), 0 * yaw, np.sin(yaw / 2), 0 * yaw], -1))
    noisy = quat_to_rotvec(rotvec_to_quat(truth + rng.normal(0, np.radians(1.5), (n, 3))))
    assert np.abs(np.diff(noisy[:, 1])).max() > 5.0  # the representation wraps
    smoother = PersonSmoother(SmoothingConfig(), {})
    from furpe.bodymodels.base import ParamBlock

    smoother.blocks = {"global_orient": ParamBlock("global_orient", "rotation", 1, "global", ("r",))}
    out = np.stack([smoother({"global_orient": noisy[i:i + 1]}, i / FPS)["global_orient"][0]
                    for i in range(n)])
    step = _angle_between(out[1:], out[:-1])
    assert step.max() < 0.1  # truth moves 0.019 rad per frame
    assert _angle_between(out, truth).max() < 0.08
    assert np.abs(np.linalg.norm(out, axis=-1) - np.pi).min() < 0.05  # it went through pi
    # A per-component filter of the axis-angle vectors would pass near the identity.
    naive = np.copy(noisy)
    for i in range(1, n):
        naive[i] = 0.3 * noisy[i] + 0.7 * naive[i - 1]
    assert _angle_between(naive, truth).max() > 1.0


# --------------------------------------------------------------------------- session + runner

W = H = 480
K = intrinsics(W, H)
FAST = FitConfig(iters_global=10, iters_body=10, iters_parts=10)


class Scripted:
    """A body expert replaying prepared people, one list per call."""

    script: list[list] = []

    def __init__(self, video: bool = False, max_people: int = 4) -> None:
        self.name, self.parts = "test_tracked", ("body", "left_hand", "right_hand", "face")

    def observe(self, image, people):
        return people + list(Scripted.script.pop(0))


@pytest.fixture()
def scripted():
    Scripted.script = []
    register("expert", "test_tracked", Scripted)
    yield Scripted
    unregister("expert", "test_tracked")


def _observed(model, seed: int, x: float):
    """Exact observations of one standing person ``x`` metres right of the optical axis."""
    from furpe.synthetic import exact_observations, sample_params

    p = sample_params(model, np.random.default_rng(seed), distance=4.0)
    p["transl"][0, 0] = x
    with torch.no_grad():
        return exact_observations(model, model(p), K)


def _reconstructor(model, **changes):
    from furpe.pipeline import Reconstructor

    config = ReconstructConfig(device="cpu", experts=("test_tracked",), fit=FAST, **changes)
    return Reconstructor(config, body_model=model)


def test_session_tracks_people_and_warm_starts_each_from_their_own_track(
        anny_model, scripted, monkeypatch) -> None:
    rec = _reconstructor(anny_model)
    a, b = _observed(anny_model, 1, -0.6), _observed(anny_model, 2, 0.6)
    image = np.zeros((H, W, 3), np.uint8)
    # a alone; b enters (listed first); the order flips; b away for a frame; b back.
    scripted.script = [a, b + a, a + b, a, b + a]
    calls = spy_fit(monkeypatch, rec.fitter)

    raw: list[dict[int, dict[str, np.ndarray]]] = []  # per frame, track -> kept parameters

    with rec.video() as session:
        smooth = session.smoother.smooth

        def record(track, params, t):  # what the frame's own fit kept, before smoothing
            if not raw or t != record.t:
                raw.append({})
            record.t = t
            raw[-1][track] = {k: np.array(v) for k, v in params.items()}
            return smooth(track, params, t)

        record.t = None
        session.smoother.smooth = record
        frames = [session.reconstruct_frame(image, timestamp=i / 10) for i in range(5)]
    ids = [[p.track_id for p in f.people] for f in frames]
    assert ids == [[0], [1, 0], [0, 1], [0], [1, 0]]

    def starts(frame: int, row: int, source: dict[str, np.ndarray]) -> bool:
        init = calls[frame][0]
        return all(np.allclose(init[k][row].numpy(), source[k]) for k in source)

    # the video's share of the iterations, no cold fallback
    assert calls[0] == (None, None) and set(calls.shares) == set(calls.fallbacks) == {None}
    # Frame 1: the newcomer (listed first) starts cold, a from their own last fit.
    assert calls[1][1].tolist() == [False, True] and starts(1, 1, raw[0][0])
    # Frame 2: listed the other way round, each starts from their own track.
    assert calls[2][1].tolist() == [True, True]
    assert starts(2, 0, raw[1][0]) and starts(2, 1, raw[1][1])
    # Frame 4: b, away in frame 3, starts from where they were last seen (frame 2).
    assert calls[4][1].tolist() == [True, True]
    assert starts(4, 0, raw[2][1]) and starts(4, 1, raw[3][0])
    assert not starts(4, 0, raw[2][0])  # not from the other person
    # What is written matches the smoothed parameters: posed again, keypoints re-projected.
    last = frames[-1]
    for person in last.people:
        posed = anny_model.pose(person.params)
        assert np.allclose(person.joints, posed.joints[0].numpy(), atol=1e-5)
        assert np.allclose(person.vertices, posed.vertices[0].numpy(), atol=1e-5)
        body = person.keypoints_2d["body"]
        kp = project(anny_model.keypoints(posed, "mediapipe_pose"),
                     torch.as_tensor(K, dtype=torch.float32))[0].numpy()
        assert np.allclose(body.fitted, kp, atol=1e-3)
    smoothed = last.people[1].params["body_pose"]  # a, smoothed against its past
    assert not np.allclose(smoothed, raw[4][0]["body_pose"], atol=1e-4)
    # Single images: no track id, no smoothing.
    scripted.script = [a]
    assert rec.reconstruct_image(image).people[0].track_id is None


def test_runner_writes_track_ids_and_resumes_them(anny_model, scripted, tmp_path) -> None:
    from furpe.io.inputs import collect_inputs
    from furpe.io.video import VideoWriter
    from furpe.runner import run

    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 10, (W, H)) as writer:
        for i in range(5):
            writer.write(np.full((H, W, 3), 40 * i, np.uint8))
    a, b = _observed(anny_model, 3, -0.6), _observed(anny_model, 4, 0.6)
    script = [a, b + a, a + b, [], b + a]  # frame 3: nobody
    out = tmp_path / "out"
    rec = _reconstructor(anny_model, smoothing=SmoothingConfig(enabled=False))

    def go(resume: bool) -> None:
        summary = run(lambda: rec, collect_inputs([str(video)], False), out, overlay=False,
                      mesh=False, resume=resume, progress=False)
        assert summary.exit_code == 0, summary.failures

    scripted.script = list(script)
    go(False)
    frames_dir = out / "clip"

    def written() -> list[list[int]]:
        docs = [json.loads((frames_dir / f"frame_{i:06d}.json").read_text()) for i in range(5)]
        return [[p["track_id"] for p in d["people"]] for d in docs]

    expected = [[0], [1, 0], [0, 1], [], [1, 0]]
    tracks = [{"id": 0, "first_frame": 0, "last_frame": 4, "frames": 4},
              {"id": 1, "first_frame": 1, "last_frame": 4, "frames": 3}]
    assert written() == expected
    summary = json.loads((frames_dir / "video.json").read_text())
    assert summary["tracks"] == tracks and summary["no_person_frames"] == [3]
    # Resume after the last frame was lost: frames 0-3 are read back and set the tracks.
    (frames_dir / "frame_000004.json").unlink()
    (frames_dir / "video.json").unlink()
    scripted.script = [script[4]]
    go(True)
    assert not scripted.script  # only frame 4 was reconstructed
    assert written() == expected
    assert json.loads((frames_dir / "video.json").read_text())["tracks"] == tracks


class FakeNetwork:
    """A :class:`furpe.pipeline.NetworkRun` whose detector and network replay a script: per
    call, the people (by name) it finds, their parameters with a little noise."""

    def __new__(cls, model, people, boxes, script):
        from furpe.pipeline import NetworkRun

        rng = np.random.default_rng(7)
        seen: list[list[str]] = []

        class Detector:
            def process(self, image):
                return [(boxes[w], 0.9) for w in script[len(seen)]]

        class Predictor:
            def predict_with_landmarks(self, images, box_lists, Ks):  # no landmarks
                who = script[len(seen)]
                seen.append(who)
                return [({k: torch.cat([people[w][k] + 0.02 * torch.as_tensor(
                    rng.normal(size=people[w][k].shape), dtype=torch.float32) * (k != "phenotype")
                    for w in who]) for k in model.blocks}, None)]

        net = NetworkRun.__new__(NetworkRun)
        net.model, net.max_people, net.detector, net.predictor = model, 4, Detector(), Predictor()
        return net


def _two_people(model):
    from furpe.synthetic import sample_params

    people = {}
    for who, seed, x in (("a", 5, -0.6), ("b", 6, 0.6)):
        p = sample_params(model, np.random.default_rng(seed), distance=4.0)
        p["transl"][0, 0] = x
        people[who] = p
    return people


def test_network_method_goes_through_the_same_session(anny_model, scripted) -> None:
    """``method: network`` (the network's boxes and parameters, no fit): tracked by its boxes
    and keypoints, smoothed and posed again like the expert path."""
    boxes = {"a": (120.0, 100.0, 220.0, 380.0), "b": (260.0, 100.0, 360.0, 380.0)}
    script = [["a"], ["b", "a"], ["a", "b"], ["b", "a"]]
    rec = _reconstructor(anny_model)
    rec.network = FakeNetwork(anny_model, _two_people(anny_model), boxes, script)
    image = np.zeros((H, W, 3), np.uint8)
    with rec.video() as session:
        frames = [session.reconstruct_frame(image) for _ in script]
    assert [[p.track_id for p in f.people] for f in frames] == [[0], [1, 0], [0, 1], [1, 0]]
    for person in frames[-1].people:
        posed = anny_model.pose(person.params)
        assert np.allclose(person.joints, posed.joints[0].numpy(), atol=1e-5)
        kp = project(anny_model.keypoints(posed, "mediapipe_pose"),
                     torch.as_tensor(K, dtype=torch.float32))[0].numpy()
        assert np.allclose(person.keypoints_2d["body"].fitted, kp, atol=1e-3)


def test_refine_starts_each_person_from_the_network_person_matched_to_them(
        anny_model, scripted, monkeypatch) -> None:
    """``refine``: the experts' people (listed in another order than the network's) are
    matched to the network's people by the tracker's association and fitted from them."""
    import dataclasses

    from furpe.pipeline import person_box

    people = _two_people(anny_model)
    with torch.no_grad():
        obs = {w: exact_observations_of(anny_model, p) for w, p in people.items()}
    boxes = {w: person_box(o[0].get("body")) for w, o in obs.items()}
    rec = _reconstructor(anny_model)
    rec.config = dataclasses.replace(rec.config, method="network", refine=True)
    rec.network = FakeNetwork(anny_model, people, boxes, [["a", "b"]])
    scripted.script = [obs["b"] + obs["a"]]
    calls = spy_fit(monkeypatch, rec.fitter)

    rec.reconstruct_image(np.zeros((H, W, 3), np.uint8))
    init, warm = calls[0]
    assert warm.tolist() == [True, True]
    # the network's estimate is further off than a previous frame: the longer share
    assert calls.shares == [rec.config.fit.refine_iters] and rec.config.fit.refine_iters > \
        rec.config.fit.warm_iters
    assert calls.fallbacks == [rec.config.fit.refine_fallback] is not None
    for row, who in enumerate("ba"):  # each row near its own person, not the other
        near = (init["transl"][row] - people[who]["transl"][0]).norm()
        far = (init["transl"][row] - people["ab"[row]]["transl"][0]).norm()
        assert near < 0.2 < far


def exact_observations_of(model, params):
    from furpe.synthetic import exact_observations

    return exact_observations(model, model(params), K)


def test_trend_filter_follows_a_steady_motion_without_lag_and_removes_noise() -> None:
    from furpe.tracking.smoothing import TrendFilter

    t = np.arange(200) / 10.0  # 10 fps
    truth = np.stack([0.7 * t, 4.0 + 0.0 * t], -1)  # walking 0.7 m/s at 4 m
    noisy = truth + np.random.default_rng(0).normal(0, 0.05, truth.shape)
    f = TrendFilter(1.0, 2.0)
    out = np.stack([f(x, ti) for x, ti in zip(noisy, t)])
    settled = slice(50, None)
    lag = (out[settled] - truth[settled]).mean(0)
    print(f"mean error after settling {lag}, rms {np.sqrt(((out - truth)[settled] ** 2).mean()):.4f}"
          f" vs noise {np.sqrt(((noisy - truth)[settled] ** 2).mean()):.4f}")
    assert np.abs(lag).max() < 0.01  # a one-pole low-pass would lag 0.7 / (2 pi) = 0.11 m
    assert np.sqrt(((out - truth)[settled] ** 2).mean()) < 0.75 * np.sqrt(  # measured 0.64
        ((noisy - truth)[settled] ** 2).mean())


def test_depth_jitter_is_smoothed_without_moving_the_person_in_the_image(anny_model) -> None:
    """Noise along the camera ray (the depth a monocular fit pins down poorly) leaves the
    translation's image position x/z, y/z exactly as fitted, and its depth is smoothed."""
    n = 60
    ray = np.array([0.3, -0.1, 1.0])
    depth = 4.0 + np.random.default_rng(1).normal(0, 0.1, n)
    seq = {"transl": depth[:, None] * ray[None]}
    out = _smooth_all(anny_model, seq, SmoothingConfig())["transl"].astype(np.float64)
    np.testing.assert_allclose(out[:, :2] / out[:, 2:], np.tile(ray[:2], (n, 1)), atol=1e-6)
    assert np.std(out[10:, 2]) < 0.5 * np.std(depth[10:])
