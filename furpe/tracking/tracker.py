"""Multi-person tracking by detection: a stable ``track_id`` for every person of a video.

Each frame's people (their boxes and, when known, 2D keypoints) are matched one-to-one to
the live tracks by the Hungarian method (:func:`scipy.optimize.linear_sum_assignment`) on
the cost of :func:`association_cost`:

``cost = (1 - w) * (1 - IoU) + w * d``

where ``IoU`` is the overlap of the person's box with the track's *predicted* box (its last
box moved at the track's constant velocity), ``d`` the mean distance between the keypoints
both have (the track's also moved by its velocity), divided by the box size (the mean of the
two boxes' longer sides), or the distance of the box centres when fewer than
:data:`MIN_COMMON_KEYPOINTS` keypoints are seen in both, and ``w`` the configured
``keypoint_weight``. A pair costing more than ``gate`` is never matched.

A person matched to no track starts a new one; a track matched by nobody is *lost*: it waits
``max_age`` frames (a short occlusion, a missed detection), during which it can be found
again (also near where it was last seen), and then ends. Ids are never reused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from furpe.core.errors import SetupError

#: Fewer keypoints seen in both a track and a person: the cost compares box centres instead.
MIN_COMMON_KEYPOINTS = 3
#: Weight of the newest displacement in a track's velocity (an exponential average).
VELOCITY_GAIN = 0.5
#: Cost of a pair the gate forbids (finite, so that the assignment stays solvable).
_FORBIDDEN = 1e6


@dataclass
class TrackingConfig:
    """The video tracker's settings (:class:`Tracker`); videos only.

    Attributes:
        max_age: frames a lost track waits (a person hidden or missed by the detector for at
            most this many frames keeps their id and warm-starts from their last state; a
            longer absence gives a new id).
        gate: the largest association cost (see :mod:`furpe.tracking.tracker`; 0 = the same
            box and keypoints, 1 = no overlap and a whole box size away) at which a person
            is matched to a track.
        keypoint_weight: share of the cost (0..1) from the keypoint (or box-centre) distance;
            the rest comes from the box overlap.
        min_confidence: keypoints the expert is less sure of than this count as missing.
    """

    max_age: int = 15
    gate: float = 0.8
    keypoint_weight: float = 0.5
    min_confidence: float = 0.3

    def __post_init__(self) -> None:
        if self.max_age < 0:
            raise SetupError("config: tracking.max_age must be at least 0")
        if not (self.gate > 0 and math.isfinite(self.gate)):
            raise SetupError("config: tracking.gate must be a positive number")
        if not 0.0 <= self.keypoint_weight <= 1.0:
            raise SetupError("config: tracking.keypoint_weight must be in 0..1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise SetupError("config: tracking.min_confidence must be in 0..1")


@dataclass
class Track:
    """One person's track: where they were last seen and how they moved."""

    id: int
    box: np.ndarray  # (4,) x0, y0, x1, y1 when last seen
    keypoints: np.ndarray | None  # (K, 2) when last seen, NaN where not seen
    first_frame: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # pixels per frame
    hits: int = 1  # frames in which the person was seen

    def predicted(self, frame: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The box and keypoints expected at ``frame`` (constant velocity)."""
        shift = self.velocity * (frame - self.last_frame)
        box = self.box + np.concatenate([shift, shift])
        return box, None if self.keypoints is None else self.keypoints + shift


def _boxes(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (T, 4) with every box of ``b`` (D, 4): (T, D)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def association_cost(track_boxes: np.ndarray, track_keypoints: Sequence[np.ndarray | None],
                     boxes: np.ndarray, keypoints: Sequence[np.ndarray | None],
                     keypoint_weight: float = 0.5) -> np.ndarray:
    """The (T, D) cost of matching T tracks (their expected boxes and keypoints) to D people
    (see the module docstring). Keypoints are (K, 2) arrays with NaN where not seen, or None;
    a pair whose keypoint sets differ in length is compared by box centres. A box that is
    not finite gives a cost of infinity (never matched)."""
    tb, db = _boxes(track_boxes), _boxes(boxes)
    iou = _iou(tb, db)
    side = lambda x: np.maximum(x[:, 2] - x[:, 0], x[:, 3] - x[:, 1])  # noqa: E731
    scale = np.maximum(0.5 * (side(tb)[:, None] + side(db)[None]), 1e-6)
    centre = lambda x: 0.5 * (x[:, :2] + x[:, 2:])  # noqa: E731
    dist = np.linalg.norm(centre(tb)[:, None] - centre(db)[None], axis=-1)
    for t, tk in enumerate(track_keypoints):
        for d, dk in enumerate(keypoints):
            if tk is None or dk is None or tk.shape != dk.shape:
                continue
            gap = np.linalg.norm(tk - dk, axis=-1)
            seen = np.isfinite(gap)
            if seen.sum() >= MIN_COMMON_KEYPOINTS:
                dist[t, d] = gap[seen].mean()
    cost = (1.0 - keypoint_weight) * (1.0 - iou) + keypoint_weight * dist / scale
    return np.where(np.isfinite(cost), cost, np.inf)


def assign(cost: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """The one-to-one assignment of least total cost (rows to columns), pairs above
    ``gate`` left out."""
    if cost.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    allowed = np.isfinite(cost) & (cost <= gate)
    rows, cols = linear_sum_assignment(np.where(allowed, cost, _FORBIDDEN))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


class Tracker:
    """Stable ids for the people of consecutive frames (see the module docstring).

    Example::

        tracker = Tracker(TrackingConfig(max_age=10))
        for boxes, keypoints in frames:      # boxes (D, 4); keypoints D x (K, 2) or None
            ids = tracker.update(boxes, keypoints)   # one track id per person
    """

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.config = config or TrackingConfig()
        #: The index of the last frame given (frames are counted from 0).
        self.frame = -1
        #: The live tracks (seen within the last ``max_age`` + 1 frames) by id.
        self.tracks: dict[int, Track] = {}
        #: Tracks that ended (lost for more than ``max_age`` frames), oldest first.
        self.ended: list[Track] = []
        self._next_id = 0

    def _keypoints(self, keypoints: np.ndarray | None,
                   confidence: np.ndarray | None) -> np.ndarray | None:
        if keypoints is None:
            return None
        k = np.array(keypoints, dtype=np.float64).reshape(-1, 2)
        if confidence is not None:
            k[np.asarray(confidence, dtype=np.float64).reshape(-1) < self.config.min_confidence] = np.nan
        k[~np.isfinite(k).all(-1)] = np.nan
        return k if np.isfinite(k).any() else None

    def update(self, boxes: Sequence[Sequence[float]] | np.ndarray,
               keypoints: Sequence[np.ndarray | None] | None = None,
               confidences: Sequence[np.ndarray | None] | None = None,
               ids: Sequence[int | None] | None = None) -> list[int]:
        """Take the next frame's people and return their track ids (one per box).

        Args:
            boxes: (D, 4) person boxes (x0, y0, x1, y1) in pixels; empty for a frame with
                nobody (every track then misses it). A person whose box is not finite is
                never associated (a new track, unless ``ids`` names it).
            keypoints: per person, (K, 2) 2D keypoints (NaN where not seen) or None.
            confidences: per person, (K,) keypoint confidences or None; keypoints below
                ``min_confidence`` count as missing.
            ids: per person, a known track id (e.g. a frame reconstructed earlier and read
                back), adopted as is, or None to associate that person.
        """
        self.frame += 1
        frame = self.frame
        db = _boxes(boxes)
        n = len(db)
        kps = [self._keypoints(None if keypoints is None else keypoints[i],
                               None if confidences is None else confidences[i])
               for i in range(n)]
        out: list[int | None] = [None] * n
        claimed: set[int] = set()
        for i in range(n):  # known ids first
            if ids is not None and ids[i] is not None:
                tid = int(ids[i])
                if tid not in claimed:
                    out[i] = tid
                    claimed.add(tid)
        todo = [i for i in range(n) if out[i] is None]
        live = [t for t in self.tracks.values() if t.id not in claimed]
        if todo and live:
            cost = self._cost(live, db[todo], [kps[i] for i in todo], frame)
            for r, c in assign(cost, self.config.gate):
                out[todo[c]] = live[r].id
        for i in range(n):
            tid = out[i]
            if tid is None:
                tid = out[i] = self._next_id
            self._next_id = max(self._next_id, tid + 1)
            self._see(tid, db[i], kps[i], frame)
        for tid in [t for t, tr in self.tracks.items() if frame - tr.last_frame > self.config.max_age]:
            self.ended.append(self.tracks.pop(tid))
        return [int(i) for i in out]  # type: ignore[arg-type]

    def _cost(self, live: list[Track], boxes: np.ndarray, kps: list[np.ndarray | None],
              frame: int) -> np.ndarray:
        w = self.config.keypoint_weight
        expected = [t.predicted(frame) for t in live]
        cost = association_cost(np.array([b for b, _ in expected]), [k for _, k in expected],
                                boxes, kps, w)
        lost = np.array([frame - t.last_frame > 1 for t in live])
        if lost.any():  # a lost track may also be found where it was last seen
            still = association_cost(np.array([t.box for t in live]),
                                     [t.keypoints for t in live], boxes, kps, w)
            cost = np.where(lost[:, None], np.minimum(cost, still), cost)
        return cost

    def _see(self, tid: int, box: np.ndarray, kps: np.ndarray | None, frame: int) -> None:
        track = self.tracks.get(tid)
        if track is None:
            self.tracks[tid] = Track(tid, box.copy(), kps, frame, frame)
            return
        if not (np.isfinite(box).all() and np.isfinite(track.box).all()):
            track.last_frame, track.hits = frame, track.hits + 1
            if np.isfinite(box).all():
                track.box, track.keypoints = box.copy(), kps
            return
        gap = max(frame - track.last_frame, 1)
        moved = (0.5 * (box[:2] + box[2:]) - 0.5 * (track.box[:2] + track.box[2:])) / gap
        track.velocity = moved if track.hits == 1 else \
            VELOCITY_GAIN * moved + (1 - VELOCITY_GAIN) * track.velocity
        track.box, track.last_frame, track.hits = box.copy(), frame, track.hits + 1
        if kps is None and track.keypoints is not None:  # unseen: the last ones, moved
            kps = track.keypoints + moved * gap
        track.keypoints = kps

    def skip(self) -> None:
        """A frame with nobody in it (or that failed): every track misses it."""
        self.update(np.zeros((0, 4)))
