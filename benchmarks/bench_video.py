"""Videos: identities, temporal jitter and throughput, on a generated clip and a real one.

    python benchmarks/bench_video.py [--frames 40] [--seed 0]
                                     [--real ../shared/data/real/opencv/vtest.avi]
                                     [--real-frames 60] [--cold-frames 10] [--threads 2]
                                     [--results-file docs/results.md] [--no-write]

1. **A generated two-person clip with exact truth** (``--frames`` frames, 640x480, 10 fps,
   deterministic by ``--seed``; written to ``out/bench-video-s{seed}-f{frames}/``: ``clip.mp4``
   and ``truth.npz``). Two Anny people (``furpe.synthetic.sample_params`` with two seeds: two
   shapes from the model's phenotype ranges) walk across the image in opposite directions,
   4 m and 6 m from the camera, with a smooth gait (sinusoidal hip, knee and arm swing and a
   small vertical bob), so that their paths cross half-way through the clip: the near person
   passes in front of the far one and their boxes overlap. Rendered with the repository's
   renderer over a textured background, encoded as H.264, and read back from the file as
   any video is. The clip is reconstructed three ways with the default expert configuration
   (``ReconstructConfig(device="cpu")``):

   * (a) per frame, cold: ``Reconstructor.reconstruct_image`` on each frame (no tracking, no
     smoothing, every fit from the neutral body);
   * (b) a video session (``Reconstructor.video()``) with tracking and warm starts but
     smoothing off;
   * (c) a video session with the default smoothing.

   Each frame's reconstructed people are matched to the true people by the Hungarian
   algorithm on the mean 2D distance between their projected joints (divided by the true
   person's box height; pairs above 0.3 stay unmatched). Per way: people found / expected
   (and unmatched extra people), identity switches (frames where a true person's track id
   differs from the id it had when last found; n/a without tracking), track ids used,
   MPJPE (all 104 Anny joints, mm, camera frame and root-aligned; mean over the matched
   person-frames), acceleration error (``furpe.metrics.accel_error``, mm/frame^2, per true
   person over the runs of at least 3 consecutive frames where it was found; median over the
   people) and seconds per frame (median, after a warm-up frame). The jitter target ((c)'s
   acceleration error at least 50% below (a)'s) is judged only when (c) finds at least 90%
   of the people (a) finds.
2. **A real street video** (``--real``, default ``../shared/data/real/opencv/vtest.avi``:
   OpenCV's sample, 768x576, 10 fps, 1-6 walkers; skipped with a note when missing): a video
   session (default configuration, ``max_people`` 6) on its first ``--real-frames`` frames:
   tracks found, their lengths (frames in which each id is seen; median, and the number of
   tracks shorter than 5 frames: fragmentation), people per frame and frames per second;
   then ``reconstruct_image`` on the first ``--cold-frames`` of the same frames: the cold
   per-image rate and the ratio of the two rates (people reconstructed per second too). The
   throughput target (the session at least twice the cold rate) is judged only when, on
   those first frames, the session finds at least 90% as many people as the cold run.

Times are wall-clock seconds on this machine's CPU with ``--threads`` torch threads; the
MediaPipe experts use their own threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import _report
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from furpe.bodymodels import BodyModel, load_body_model
from furpe.config import ReconstructConfig
from furpe.core.camera import intrinsics
from furpe.core.errors import NoPersonError
from furpe.io.video import VideoWriter, open_video
from furpe.metrics import accel_error, mpjpe
from furpe.pipeline import Reconstructor
from furpe.render import Mesh, render
from furpe.results import FrameResult
from furpe.synthetic import SKIN_TONES, sample_params, textured_background, vertex_colors

REPO = _report.REPO
TITLE = "Videos: tracking, smoothing and warm starts"
STANDARD = {"frames": 40, "seed": 0, "real_frames": 60, "cold_frames": 10}
WIDTH, HEIGHT, FPS = 640, 480, 10.0
#: The two walkers: distance from the camera (m), the image column of their pelvis at the
#: start and at the end of the clip (share of the width), the way they face (degrees about the
#: camera's vertical axis: 90 would be a pure profile; 70 turns them a little towards the
#: camera), the gait's phase at the start and skin tone.
WALKERS = (
    {"depth": 4.0, "u": (0.15, 0.85), "yaw_deg": -70.0, "phase": 0.0, "skin": 1},
    {"depth": 6.0, "u": (0.85, 0.15), "yaw_deg": 70.0, "phase": 1.9, "skin": 3},
)
GAIT_PERIOD_S = 1.1  # one stride (two steps)
HIP_SWING, KNEE_BEND, KNEE_SWING, BOB_M = 0.38, 0.25, 0.2, 0.012  # radians, metres
ARM_DOWN, ARM_BACK, ARM_SWING, ELBOW = 0.8, 0.3, 0.3, -0.25
CAMERA_HEIGHT_M = 1.0  # the ground lies this far below the camera's centre
MATCH_GATE = 0.3  # most mean 2D joint distance / true box height for a match
SHORT_TRACK = 5  # tracks seen in fewer frames count as fragments
COMPARABLE = 0.9  # the rates compare when the session finds this share of the cold people


# ---------------------------------------------------------------------------------------
# The generated clip
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Clip:
    path: Path  # the encoded video
    K: np.ndarray  # (3, 3)
    joints: np.ndarray  # (T, P, J, 3) camera frame, metres
    boxes: np.ndarray  # (T, P, 4) x0, y0, x1, y1 of the projected mesh, pixels
    hidden: np.ndarray  # (T, P) share of the person's pixels hidden by the other one
    overlap: np.ndarray  # (T,) IoU of the two people's boxes


def _set_bone(pose: np.ndarray, labels: tuple[str, ...], bone: str, rotvec) -> None:
    pose[:, labels.index(bone)] = rotvec


def walker_params(model: BodyModel, seed: int, walker: dict, n: int) -> dict[str, np.ndarray]:
    """(n, ...) parameters per block of one walker: a sampled person (shape, hands, face,
    small static body-pose noise) walking across the image at a constant depth."""
    base = sample_params(model, np.random.default_rng(seed), distance=walker["depth"])
    seq = {k: np.repeat(v.numpy().astype(np.float64), n, axis=0) for k, v in base.items()}
    labels = model.blocks["body_pose"].labels
    pose = seq["body_pose"]
    phase = 2 * math.pi * np.arange(n) / FPS / GAIT_PERIOD_S + walker["phase"]
    zero = np.zeros(n)
    for side, s in (("L", 1.0), ("R", -1.0)):
        swing = s * np.sin(phase)  # > 0: this side's leg forwards, its arm backwards
        knee = KNEE_BEND + KNEE_SWING * (0.5 + 0.5 * s * np.cos(phase))  # most in the swing
        # Anny: about x a limb swings forwards (negative), a knee or an elbow bends; about y
        # an arm comes down from the rest A-pose (mirrored per side)
        _set_bone(pose, labels, f"upperleg01.{side}", np.stack(
            [-HIP_SWING * swing - 0.05, zero, np.full(n, s * 0.03)], -1))
        _set_bone(pose, labels, f"lowerleg01.{side}", np.stack([knee, zero, zero], -1))
        arm = Rotation.from_rotvec(np.stack([ARM_BACK + ARM_SWING * swing, zero, zero], -1)) \
            * Rotation.from_rotvec([0.0, s * ARM_DOWN, 0.0])  # down, then back and swung
        _set_bone(pose, labels, f"upperarm01.{side}", arm.as_rotvec())
        _set_bone(pose, labels, f"lowerarm01.{side}", np.stack(
            [ELBOW + 0.1 * swing, zero, zero], -1))
    seq["global_orient"][:] = [0.0, math.radians(walker["yaw_deg"]), 0.0]
    # feet on the ground: the lowest vertex of the first frame's pose at the ground's height
    seq["transl"][:] = 0.0
    with torch.no_grad():
        first = model({k: torch.as_tensor(v[:1], dtype=torch.float32) for k, v in seq.items()})
    v0 = first.vertices[0].numpy().astype(np.float64)
    K = intrinsics(WIDTH, HEIGHT)
    z = walker["depth"]
    u = np.linspace(*walker["u"], n) * WIDTH
    pelvis = first.joints[0, 0].numpy().astype(np.float64)
    seq["transl"][:, 0] = (u - K[0, 2]) * z / K[0, 0] - pelvis[0]
    seq["transl"][:, 1] = CAMERA_HEIGHT_M - v0[:, 1].max() + BOB_M * np.cos(2 * phase)
    seq["transl"][:, 2] = z - pelvis[2]
    return seq


def make_clip(model: BodyModel, frames: int, seed: int, folder: Path) -> Clip:
    """Render the two-person clip, write ``clip.mp4`` and ``truth.npz`` into ``folder``."""
    K = intrinsics(WIDTH, HEIGHT)
    rng = np.random.default_rng(seed)
    background = textured_background(rng, WIDTH, HEIGHT, clutter=8)
    people = [walker_params(model, 1000 * seed + 1 + i, w, frames) for i, w in enumerate(WALKERS)]
    colors = [vertex_colors(model, SKIN_TONES[w["skin"]]) for w in WALKERS]
    P = len(WALKERS)
    joints = np.zeros((frames, P, len(model.joint_names), 3))
    boxes = np.zeros((frames, P, 4))
    hidden = np.zeros((frames, P))
    overlap = np.zeros(frames)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip.mp4"
    with VideoWriter(path, FPS, (WIDTH, HEIGHT), crf=18) as writer:
        for t in range(frames):
            params = {k: torch.as_tensor(np.stack([p[k][t] for p in people]), dtype=torch.float32)
                      for k in model.blocks}
            with torch.no_grad():
                out = model(params)
            verts = out.vertices.numpy().astype(np.float64)
            joints[t] = out.joints.numpy()
            meshes = [Mesh(verts[i], model.faces, vertex_colors=colors[i]) for i in range(P)]
            res = render(meshes, K, WIDTH, HEIGHT, background=background)
            writer.write(res.color)
            for i in range(P):
                uv = verts[i, :, :2] / verts[i, :, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
                lo = np.clip(uv.min(0), 0, [WIDTH - 1, HEIGHT - 1])
                hi = np.clip(uv.max(0), 0, [WIDTH - 1, HEIGHT - 1])
                boxes[t, i] = [*lo, *hi]
                alone = render([meshes[i]], K, WIDTH, HEIGHT).mask.sum()
                hidden[t, i] = 1.0 - (res.mesh_id == i).sum() / max(alone, 1)
            overlap[t] = box_iou(boxes[t, 0], boxes[t, 1])
    np.savez_compressed(folder / "truth.npz", K=K, joints=joints, boxes=boxes, hidden=hidden,
                        overlap=overlap, fps=FPS, joint_names=np.array(model.joint_names),
                        **{f"person{i}_{k}": v for i, p in enumerate(people) for k, v in p.items()})
    return Clip(path, K, joints, boxes, hidden, overlap)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ---------------------------------------------------------------------------------------
# Reconstruction and scoring
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One way of reconstructing the clip: per frame, the matched people."""

    name: str
    tracked: bool
    seconds: list[float] = dataclasses.field(default_factory=list)
    # per frame: truth person -> (track id or None, predicted joints (J, 3))
    matches: list[dict[int, tuple[int | None, np.ndarray]]] = dataclasses.field(
        default_factory=list)
    extra: int = 0  # reconstructed people matched to nobody


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    z = np.maximum(points[..., 2:], 1e-6)
    return points[..., :2] / z * [K[0, 0], K[1, 1]] + K[:2, 2]


def match(frame: FrameResult | None, clip: Clip, t: int) -> tuple[dict, int]:
    """Hungarian matching of the frame's people to the true people (mean 2D joint distance
    over the true box height, gated); returns the matches and the number left unmatched."""
    if frame is None or not frame.people:
        return {}, 0
    K = clip.K
    truth = _project(clip.joints[t], K)  # (P, J, 2)
    heights = clip.boxes[t, :, 3] - clip.boxes[t, :, 1]
    cost = np.array([[np.linalg.norm(_project(np.asarray(p.joints), np.asarray(frame.intrinsics))
                                      - truth[j], axis=-1).mean() / max(heights[j], 1.0)
                      for j in range(len(truth))] for p in frame.people])
    rows, cols = linear_sum_assignment(cost)
    found = {int(j): (frame.people[i].track_id, np.asarray(frame.people[i].joints, np.float64))
             for i, j in zip(rows, cols) if cost[i, j] <= MATCH_GATE}
    return found, len(frame.people) - len(found)


def run_clip(name: str, clip: Clip, step, tracked: bool) -> Run:
    """Feed every frame of the clip to ``step(image, timestamp) -> FrameResult``."""
    run = Run(name, tracked)
    with open_video(clip.path) as reader:
        for t, (_, ts, rgb) in enumerate(reader.timed_frames()):
            t0 = time.perf_counter()
            try:
                frame = step(rgb, ts if ts is not None else t / FPS)
            except NoPersonError:
                frame = None
            run.seconds.append(time.perf_counter() - t0)
            found, extra = match(frame, clip, t)
            run.matches.append(found)
            run.extra += extra
            print(f"  {name}: frame {t}: {len(found)} matched, {extra} extra "
                  f"({run.seconds[-1]:.1f} s)", file=sys.stderr)
    return run


def _runs(present: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive True values."""
    out, start = [], None
    for t, ok in enumerate([*present, False]):
        if ok and start is None:
            start = t
        elif not ok and start is not None:
            out.append((start, t))
            start = None
    return out


def score(run: Run, clip: Clip) -> dict[str, object]:
    T, P = clip.joints.shape[:2]
    found = sum(len(m) for m in run.matches)
    errs, rel = [], []
    for t, m in enumerate(run.matches):
        for j, (_, pred) in m.items():
            errs.append(mpjpe(pred, clip.joints[t, j]))
            rel.append(mpjpe(pred, clip.joints[t, j], align="root", root=0))
    accel, switches, ids = [], 0, set()
    for j in range(P):
        present = [j in m for m in run.matches]
        total, weight = 0.0, 0
        for a, b in _runs(present):
            if b - a >= 3:
                pred = np.stack([run.matches[t][j][1] for t in range(a, b)])
                total += accel_error(pred, clip.joints[a:b, j]) * (b - a - 2)
                weight += b - a - 2
        if weight:
            accel.append(total / weight)
        last = None
        for m in run.matches:
            if j in m:
                tid = m[j][0]
                ids.add(tid)
                if last is not None and tid != last:
                    switches += 1
                last = tid
    return {
        "found": f"{found} / {T * P}", "found_n": found, "extra": run.extra,
        "switches": switches if run.tracked else "n/a",
        "ids": len(ids) if run.tracked else "n/a",
        "mpjpe": float(np.mean(errs)) if errs else None,
        "mpjpe_root": float(np.mean(rel)) if rel else None,
        "accel": float(statistics.median(accel)) if accel else None,
        "spf": statistics.median(run.seconds) if run.seconds else None,
    }


def _fmt(x: object, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def clip_part(args: argparse.Namespace, model: BodyModel, base: ReconstructConfig) -> list[str]:
    folder = REPO / "out" / f"bench-video-s{args.seed}-f{args.frames}"
    t = time.perf_counter()
    clip = make_clip(model, args.frames, args.seed, folder)
    print(f"clip: {clip.path} ({time.perf_counter() - t:.0f} s to render)", file=sys.stderr)
    with open_video(clip.path) as reader:
        first = next(reader.frames())

    cold = Reconstructor(base, body_model=model)
    cold.reconstruct_image(first)  # warm-up: graphs and caches
    runs = [run_clip("(a) per frame, cold", clip,
                     lambda rgb, ts: cold.reconstruct_image(rgb), tracked=False)]
    for name, cfg in (
            ("(b) video, tracking, no smoothing",
             base.replace(smoothing=dataclasses.replace(base.smoothing, enabled=False))),
            ("(c) video, tracking + smoothing", base)):
        rec = Reconstructor(cfg, body_model=model)
        with rec.video() as warmup:  # warm-up, then a fresh session (experts reset)
            try:
                warmup.reconstruct_frame(first, timestamp=0.0)
            except NoPersonError:
                pass
        with rec.video() as session:
            runs.append(run_clip(name, clip, lambda rgb, ts: session.reconstruct_frame(
                rgb, timestamp=ts), tracked=True))
    scores = [score(r, clip) for r in runs]

    crossing = int(np.argmax(clip.overlap))
    lines = [
        f"Generated clip: {args.frames} frames, {WIDTH}x{HEIGHT}, {FPS:.0f} fps, seed "
        f"{args.seed} (`{folder.relative_to(REPO)}/clip.mp4`, truth in `truth.npz`): two "
        f"walkers at {WALKERS[0]['depth']:.0f} m and {WALKERS[1]['depth']:.0f} m crossing; "
        f"their boxes overlap in {int((clip.overlap > 0).sum())} frames (IoU up to "
        f"{clip.overlap.max():.2f}, frame {crossing}), the far person up to "
        f"{100 * clip.hidden[:, 1].max():.0f}% hidden.",
        "",
        "| way | people found / expected | extra people | identity switches | track ids "
        "| MPJPE camera (mm) | MPJPE root-aligned (mm) | accel error (mm/frame²) "
        "| s per frame |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r, s in zip(runs, scores):
        lines.append(f"| {r.name} | {s['found']} | {s['extra']} | {s['switches']} | "
                     f"{s['ids']} | {_fmt(s['mpjpe'])} | {_fmt(s['mpjpe_root'])} | "
                     f"{_fmt(s['accel'])} | {_fmt(s['spf'], 2)} |")
    a = scores[0]["accel"]
    ratios = []
    for r, s in zip(runs[1:], scores[1:]):
        ratio = s["accel"] / a if a and s["accel"] is not None else None
        ratios.append(f"{r.name.split()[0]}/(a) {_fmt(ratio, 2)}")
    c = scores[2]["accel"]
    if scores[2]["found_n"] < COMPARABLE * scores[0]["found_n"]:
        verdict = (f"not comparable: (c) finds {scores[2]['found']} people, (a) "
                   f"{scores[0]['found']}")
    else:
        verdict = "met" if a and c is not None and c <= 0.5 * a else "not met"
    lines += ["", f"Acceleration error ratios: {', '.join(ratios)} (target: (c) at least 50% "
                  f"below (a): {verdict})."]
    return lines


def real_part(args: argparse.Namespace, model: BodyModel, base: ReconstructConfig) -> list[str]:
    path = args.real if args.real.is_absolute() else REPO / args.real
    if not path.is_file():
        note = f"Real video: skipped, `{args.real}` is missing."
        print(note, file=sys.stderr)
        return [note]
    rec = Reconstructor(base.replace(max_people=6), body_model=model)
    kept: list[np.ndarray] = []
    frames, seconds, people = 0, [], []
    lengths: dict[int, int] = {}
    read: list[tuple[np.ndarray, float]] = []  # the frames and their times, for the look-ahead run
    with open_video(path) as reader:
        size = f"{reader.width}x{reader.height}"
        fps = float(reader.fps)
        for index, ts, rgb in reader.timed_frames():
            if index >= args.real_frames:
                break
            if index == 0:
                with rec.video() as warmup:
                    try:
                        warmup.reconstruct_frame(rgb, timestamp=0.0)
                    except NoPersonError:
                        pass
                session = rec.video()
            if index < args.cold_frames:
                kept.append(rgb)
            read.append((rgb, ts if ts is not None else index / fps))
            t0 = time.perf_counter()
            try:
                frame = session.reconstruct_frame(rgb, timestamp=ts if ts is not None
                                                  else index / fps)
                ids = [p.track_id for p in frame.people]
            except NoPersonError:
                ids = []
            seconds.append(time.perf_counter() - t0)
            people.append(len(ids))
            for tid in ids:
                lengths[tid] = lengths.get(tid, 0) + 1
            frames += 1
            print(f"  real video: frame {index}: {len(ids)} people, ids {ids} "
                  f"({seconds[-1]:.1f} s)", file=sys.stderr)
    ahead_rate, ahead_people = _session_with_lookahead(rec, read)
    rec.reconstruct_image(kept[0])  # warm-up
    cold_seconds, cold_people = [], []
    for k, rgb in enumerate(kept):
        t0 = time.perf_counter()
        try:
            n = len(rec.reconstruct_image(rgb).people)
        except NoPersonError:
            n = 0
        cold_seconds.append(time.perf_counter() - t0)
        cold_people.append(n)
        print(f"  real video, cold: frame {k}: {n} people ({cold_seconds[-1]:.1f} s)",
              file=sys.stderr)
    cold_ahead_rate, cold_ahead_people = _cold_with_lookahead(rec, kept)
    video_rate = frames / sum(seconds)
    cold_rate = len(kept) / sum(cold_seconds)
    ratio = video_rate / cold_rate
    # the same frames in both runs: does the session find as many people as the cold run?
    same_video, same_cold = float(np.mean(people[:len(kept)])), float(np.mean(cold_people))
    if same_video < COMPARABLE * same_cold:
        verdict = (f"not comparable: on those {len(kept)} frames the video session finds "
                   f"{same_video:.2f} people per frame, the cold run {same_cold:.2f}")
    else:
        verdict = "met" if ratio >= 2 else "not met"
    lens = sorted(lengths.values())
    return [
        f"Real video: `{args.real}` ({size}, {fps:g} fps), first {frames} frames, default "
        f"configuration with max_people 6.",
        "",
        "| run | frames | tracks | median track length (frames) "
        f"| tracks shorter than {SHORT_TRACK} frames | people per frame (mean) "
        f"| people per frame, first {len(kept)} frames | frames/s | people/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| video session (tracking, warm starts, smoothing) | {frames} | {len(lengths)} | "
        f"{_fmt(float(statistics.median(lens)) if lens else None)} | "
        f"{sum(1 for n in lens if n < SHORT_TRACK)} | {np.mean(people):.2f} | "
        f"{same_video:.2f} | {video_rate:.3f} | {sum(people) / sum(seconds):.3f} |",
        f"| the same, with the look-ahead (`VideoSession.prefetch`, 1 torch thread: as `furpe "
        f"reconstruct` runs a video) | {frames} | | | | {np.mean(ahead_people):.2f} | "
        f"{np.mean(ahead_people[:len(kept)]):.2f} | {ahead_rate:.3f} | "
        f"{ahead_rate * np.mean(ahead_people):.3f} |",
        f"| per image, cold (`reconstruct_image`, first {len(kept)} frames) | {len(kept)} | "
        f"n/a | n/a | n/a | {same_cold:.2f} | {same_cold:.2f} | {cold_rate:.3f} | "
        f"{sum(cold_people) / sum(cold_seconds):.3f} |",
        f"| the same, with the look-ahead (`Reconstructor.prefetch`, 1 torch thread: as `furpe "
        f"reconstruct` runs a folder) | {len(kept)} | n/a | n/a | n/a | "
        f"{np.mean(cold_ahead_people):.2f} | {np.mean(cold_ahead_people):.2f} | "
        f"{cold_ahead_rate:.3f} | {cold_ahead_rate * np.mean(cold_ahead_people):.3f} |",
        "",
        f"Video throughput / cold per-image rate (frames/s): x{ratio:.2f} (target: at least "
        f"x2 with as many people found: {verdict}); both with the look-ahead: "
        f"x{ahead_rate / cold_ahead_rate:.2f} "
        f"({'met' if ahead_rate >= 2 * cold_ahead_rate else 'not met'}); the video session "
        f"with the look-ahead against cold images one at a time: x{ahead_rate / cold_rate:.2f}.",
    ]


def _cold_with_lookahead(rec: Reconstructor, images: list[np.ndarray]
                         ) -> tuple[float, list[int]]:
    """Images per second of ``reconstruct_image`` over ``images`` in sequence with the
    experts one image ahead and one torch thread, and the people per image."""
    people: list[int] = []

    def step(rgb: np.ndarray) -> None:
        try:
            people.append(len(rec.reconstruct_image(rgb).people))
        except NoPersonError:
            people.append(0)

    return len(images) / _report.with_lookahead(rec.prefetch, step, images), people


def _session_with_lookahead(rec: Reconstructor, frames: list[tuple[np.ndarray, float]]
                            ) -> tuple[float, list[int]]:
    """Frames per second of a video session over ``frames`` with the experts one frame
    ahead (``VideoSession.prefetch``) and one torch thread, and the people per frame."""
    people: list[int] = []
    with rec.video() as warmup:
        try:
            warmup.reconstruct_frame(frames[0][0], timestamp=0.0)
        except NoPersonError:
            pass
    session = rec.video()
    times = {id(rgb): ts for rgb, ts in frames}

    def step(rgb: np.ndarray) -> None:
        try:
            people.append(len(session.reconstruct_frame(rgb, timestamp=times[id(rgb)]).people))
        except NoPersonError:
            people.append(0)

    images = [rgb for rgb, _ in frames]
    return len(frames) / _report.with_lookahead(session.prefetch, step, images), people


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="frames of the generated clip")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated clip")
    ap.add_argument("--real", type=Path, default=Path("../shared/data/real/opencv/vtest.avi"),
                    help="the real video (relative to the repository root)")
    ap.add_argument("--real-frames", type=int, default=60, help="frames of the real video")
    ap.add_argument("--cold-frames", type=int, default=10,
                    help="of those, frames reconstructed one by one (cold)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.frames < 3 or args.real_frames < 1 or not 1 <= args.cold_frames <= args.real_frames:
        ap.error("need --frames >= 3, --real-frames >= 1 and 1 <= --cold-frames <= --real-frames")
    torch.set_num_threads(args.threads)

    model = load_body_model("anny")
    base = ReconstructConfig(device="cpu")
    lines = clip_part(args, model, base)
    lines += ["", *real_part(args, model, base)]
    lines += ["", f"Times: wall-clock seconds, CPU, {args.threads} torch "
                  f"thread{'s' if args.threads != 1 else ''} (the look-ahead rows: 1)."]
    text = "\n".join(lines)
    print(f"\n## {TITLE}\n\n{text}")
    if not args.no_write:
        run = {"frames": args.frames, "seed": args.seed, "real_frames": args.real_frames,
               "cold_frames": args.cold_frames}
        note = _report.quick_note(run, STANDARD, "bench-video")
        what = ("Tracking (identity switches), temporal smoothing (acceleration error against "
                "the exact truth) and warm starts (throughput) of `Reconstructor.video()`, "
                "against reconstructing each frame on its own. See the docstring of "
                "`benchmarks/bench_video.py` for the protocol.")
        body = "\n".join([_report.header(TITLE, _report.command_line("bench_video.py", argv),
                                         note), what, "", text])
        _report.write_section(args.results_file, "bench_video", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
