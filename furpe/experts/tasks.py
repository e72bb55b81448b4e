"""The MediaPipe Tasks models the built-in experts run, as small NumPy-in, NumPy-out wrappers.

Each wrapper loads its model file from ``furpe/data/models`` (checked by
:func:`~furpe.experts.models.model_path`), imports MediaPipe on first use with its native log
lines silenced, and returns plain arrays: landmarks in MediaPipe's normalised image
coordinates (x right, y down, pixel centres at ``(i + 0.5) / size``), world landmarks in metres
(x right, y down, z away from the camera), scores in [0, 1]. Open models are closed at
:meth:`close`, or when their wrapper is dropped.

Models run in image mode, except :class:`PoseModel` with ``video=True`` (MediaPipe's tracking
between consecutive frames). None of them is thread-safe.
"""
from __future__ import annotations

import atexit
import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from furpe.core.boxes import Box, box_area, box_intersection, box_iou, expand_box
from furpe.core.logs import native_quiet, quiet_environment, silence_native_stderr
from furpe.experts.models import model_path

# What MediaPipe logs while tearing down tasks still open at exit goes nowhere (unless verbose).
atexit.register(silence_native_stderr)


def _close_task(task: Any) -> None:
    with native_quiet():
        task.close()


def _mediapipe() -> tuple[Any, Any, Any]:
    """``mediapipe``, its Tasks ``BaseOptions`` and ``vision``, imported quietly."""
    quiet_environment()
    with native_quiet():
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    return mp, BaseOptions, vision


class TasksModel:
    """A MediaPipe Tasks vision model: subclasses name their ``model_file``, build the task in
    ``_create(vision, base_options)`` and convert its result in ``_read(result)``."""

    model_file: str
    video: bool = False

    def __init__(self) -> None:
        self._task: Any = None
        self._finalizer: weakref.finalize | None = None
        self._timestamp_ms = 0

    def _create(self, vision: Any, base: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _read(self, result: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _mode(self, vision: Any) -> Any:
        return vision.RunningMode.VIDEO if self.video else vision.RunningMode.IMAGE

    def process(self, image: np.ndarray) -> Any:
        """Run on an (H, W, 3) uint8 RGB image (in video mode: the next frame)."""
        mp, base_options, vision = _mediapipe()
        with native_quiet():
            if self._task is None:
                base = base_options(model_asset_path=str(model_path(self.model_file)))
                self._task = self._create(vision, base)
                # Closed when this wrapper goes: a MediaPipe task left to the garbage
                # collector can hang it (its dispatcher thread may be gone first). Not at
                # exit: by then MediaPipe's dispatcher threads are shut down.
                self._finalizer = weakref.finalize(self, _close_task, self._task)
                self._finalizer.atexit = False
            data = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            if self.video:
                self._timestamp_ms += 33
                result = self._task.detect_for_video(data, self._timestamp_ms)
            else:
                result = self._task.detect(data)
        return self._read(result)

    def reset(self) -> None:
        """Forget tracking state (the task is rebuilt on the next call in video mode)."""
        if self.video:
            self.close()

    def close(self) -> None:
        """Release the native task; it is rebuilt if used again."""
        finalizer, self._finalizer, self._task = self._finalizer, None, None
        self._timestamp_ms = 0
        if finalizer is not None:
            finalizer()


class TasksExpert:
    """Base of the experts that run :class:`TasksModel` attributes: :meth:`reset` and
    :meth:`close` reach all of them, and the expert is a context manager that closes them."""

    def _models(self) -> list[TasksModel]:
        return [m for m in vars(self).values() if isinstance(m, TasksModel)]

    def reset(self) -> None:
        """Forget tracking state (video mode)."""
        for m in self._models():
            m.reset()

    def close(self) -> None:
        """Release the MediaPipe tasks (rebuilt if used again)."""
        for m in self._models():
            m.close()

    def __enter__(self) -> "TasksExpert":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tile_origins(width: int, height: int, side: int,
                 overlap: float = 0.25) -> list[tuple[int, int]]:
    """Top-left corners of ``side``-pixel squares covering a ``width`` x ``height`` image,
    neighbours overlapping by at least ``overlap`` x ``side``, evenly spread."""
    def starts(n: int) -> list[int]:
        if n <= side:
            return [0]
        count = int(np.ceil((n - side) / (side * (1 - overlap)))) + 1
        return [int(round(i * (n - side) / (count - 1))) for i in range(count)]

    return [(x, y) for y in starts(height) for x in starts(width)]


def inner_edge_gap(box: Box, origin: tuple[int, int], tile: tuple[int, int],
                   image: tuple[int, int]) -> float:
    """Pixels between ``box`` (in the tile's pixels) and the nearest edge of its tile
    (``origin`` x, y and size ``tile`` w, h in an ``image`` w x h) that lies inside the image;
    inf for a tile that is the whole image."""
    (x0, y0), (tw, th), (w, h) = origin, tile, image
    gaps = [box[0] if x0 > 0 else math.inf, box[1] if y0 > 0 else math.inf,
            tw - box[2] if x0 + tw < w else math.inf, th - box[3] if y0 + th < h else math.inf]
    return min(gaps)


#: A tile's box that ends within this share of the tile's side from an inner edge of the tile
#: may be a person cut by it (the detector ends such a box a little short of the edge): it is
#: dropped when most of it lies in a much larger box found elsewhere, grown by 5% (that
#: person, whole).
TILE_EDGE = 0.03


class PersonDetector(TasksModel):
    """MediaPipe's ObjectDetector (EfficientDet-Lite0, COCO) keeping the ``person`` class:
    ``process(image)`` gives ``[(box, score), ...]``, boxes (x0, y0, x1, y1) in pixels, most
    confident first.

    The detector stretches its input to a square, which costs a wide photo most of its score
    (two people side by side: 0.25 and 0.14 stretched, 0.79 and 0.77 letterboxed), so the
    image is zero-padded to a square first.

    It sees 320 x 320 pixels: in a large photo small people shrink below what it finds
    (a 1920 x 1080 crowd: 0.20-0.34 on the whole image, 0.52-0.82 on tiles). An image
    larger than 1.5 x ``tile`` is therefore also looked at in overlapping ``tile``-pixel
    squares (a quarter overlap); boxes cut by a tile's inner edge are left to the tiles that
    hold them whole (and those that end near it to a box that holds them, ``TILE_EDGE``), and
    boxes of one person (IoU above 0.5) are merged, keeping the most confident. ``tile=None``
    looks at the whole image only."""

    model_file = "object_detector.tflite"

    def __init__(self, min_score: float = 0.3, max_results: int = 8,
                 tile: int | None = 640) -> None:
        super().__init__()
        self.min_score, self.max_results, self.tile = min_score, max_results, tile

    def _create(self, vision: Any, base: Any) -> Any:
        return vision.ObjectDetector.create_from_options(vision.ObjectDetectorOptions(
            base_options=base, running_mode=self._mode(vision),
            category_allowlist=["person"], score_threshold=self.min_score,
            max_results=self.max_results))

    def process(self, image: np.ndarray) -> list[tuple[Box, float]]:
        h, w = image.shape[:2]
        found = self._square(image)
        if self.tile is not None and max(h, w) > 1.5 * self.tile:
            side = self.tile
            near_edge: list[tuple[Box, float]] = []
            for x0, y0 in tile_origins(w, h, side):
                tile = image[y0:y0 + side, x0:x0 + side]
                th, tw = tile.shape[:2]
                for box, score in self._square(tile):
                    gap = inner_edge_gap(box, (x0, y0), (tw, th), (w, h))
                    if gap <= 1.0:
                        continue
                    placed = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0), score
                    (near_edge if gap <= TILE_EDGE * side else found).append(placed)
            found += [(box, score) for box, score in near_edge
                      if not any(box_intersection(box, expand_box(other, 0.05))
                                 >= 0.8 * box_area(box)
                                 and box_area(other) >= 1.5 * box_area(box)
                                 for other, _ in found)]
        kept: list[tuple[Box, float]] = []
        for box, score in sorted(found, key=lambda item: -item[1]):
            if not any(box_iou(box, other) > 0.5 for other, _ in kept):
                kept.append((box, score))
        return kept[:self.max_results]

    def _square(self, image: np.ndarray) -> list[tuple[Box, float]]:
        """The detector on ``image`` zero-padded to a square; boxes clipped to ``image``."""
        h, w = image.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3), np.uint8)
        square[:h, :w] = image
        out = []
        for box, score in super().process(square):
            box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(w)), min(box[3], float(h)))
            if box[2] > box[0] and box[3] > box[1]:
                out.append((box, score))
        return out

    def _read(self, result: Any) -> list[tuple[Box, float]]:
        out = []
        for d in result.detections:
            b = d.bounding_box
            out.append(((float(b.origin_x), float(b.origin_y), float(b.origin_x + b.width),
                         float(b.origin_y + b.height)), float(d.categories[0].score)))
        return sorted(out, key=lambda item: -item[1])


@dataclass
class PoseLandmarks:
    """One BlazePose result: ``uv`` (33, 2) normalised image coordinates, ``visibility`` and
    ``presence`` (33,), ``world`` (33, 3) metres at the hip midpoint."""

    uv: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray
    world: np.ndarray


POSE_MODELS = {"heavy": "pose_landmarker_heavy.task", "full": "pose_landmarker_full.task"}
"""BlazePose GHUM variants by name: Heavy (the default, most accurate) and Full (faster)."""


class PoseModel(TasksModel):
    """MediaPipe's PoseLandmarker (BlazePose GHUM ``variant``, up to ``num_poses`` people)."""

    def __init__(self, variant: str = "heavy", num_poses: int = 1, video: bool = False,
                 min_detection: float = 0.3, min_presence: float = 0.3,
                 min_tracking: float = 0.5) -> None:
        super().__init__()
        if variant not in POSE_MODELS:
            raise ValueError(f"unknown pose model '{variant}'; known: {', '.join(POSE_MODELS)}")
        self.model_file = POSE_MODELS[variant]
        self.num_poses, self.video = num_poses, video
        self.thresholds = (min_detection, min_presence, min_tracking)

    def _create(self, vision: Any, base: Any) -> Any:
        det, pres, track = self.thresholds
        return vision.PoseLandmarker.create_from_options(vision.PoseLandmarkerOptions(
            base_options=base, running_mode=self._mode(vision), num_poses=self.num_poses,
            min_pose_detection_confidence=det, min_pose_presence_confidence=pres,
            min_tracking_confidence=track, output_segmentation_masks=False))

    def _read(self, result: Any) -> list[PoseLandmarks]:
        out = []
        for i, lms in enumerate(result.pose_landmarks or []):
            world = result.pose_world_landmarks[i]
            out.append(PoseLandmarks(
                uv=np.array([[lm.x, lm.y] for lm in lms], dtype=np.float64),
                visibility=np.clip([lm.visibility or 0.0 for lm in lms], 0.0, 1.0),
                presence=np.clip([lm.presence or 0.0 for lm in lms], 0.0, 1.0),
                world=np.array([[lm.x, lm.y, lm.z] for lm in world], dtype=np.float64)))
        return out


@dataclass
class HandLandmarks:
    """One hand: ``uv`` (21, 2) normalised, ``world`` (21, 3) metres at the hand's centre,
    ``side`` the subject's side ("left"/"right") and ``side_score`` its score."""

    uv: np.ndarray
    world: np.ndarray
    side: str
    side_score: float


class HandModel(TasksModel):
    """MediaPipe's HandLandmarker (palm detector + 21 landmarks, up to ``num_hands``).

    Unlike the legacy Hands solution (whose labels assumed a mirrored selfie), the Tasks
    landmarker's ``"Right"`` is the subject's right hand on an ordinary photo (checked on a
    render of a right hand and on its mirror image in ``tests/test_experts.py``)."""

    model_file = "hand_landmarker.task"

    def __init__(self, num_hands: int = 2, min_detection: float = 0.5,
                 min_presence: float = 0.5) -> None:
        super().__init__()
        self.num_hands, self.thresholds = num_hands, (min_detection, min_presence)

    def _create(self, vision: Any, base: Any) -> Any:
        det, pres = self.thresholds
        return vision.HandLandmarker.create_from_options(vision.HandLandmarkerOptions(
            base_options=base, running_mode=self._mode(vision), num_hands=self.num_hands,
            min_hand_detection_confidence=det, min_hand_presence_confidence=pres))

    def _read(self, result: Any) -> list[HandLandmarks]:
        out = []
        for i, lms in enumerate(result.hand_landmarks or []):
            side, score = "", 1.0
            if result.handedness and i < len(result.handedness):
                cat = result.handedness[i][0]
                side = cat.category_name.lower()
                score = float(cat.score)
            out.append(HandLandmarks(
                uv=np.array([[lm.x, lm.y] for lm in lms], dtype=np.float64),
                world=np.array([[lm.x, lm.y, lm.z] for lm in result.hand_world_landmarks[i]],
                               dtype=np.float64),
                side=side, side_score=score))
        return out


@dataclass
class FaceLandmarks:
    """One face: ``uv`` (478, 2) normalised and its 52 ARKit-named ``blendshapes`` in [0, 1]."""

    uv: np.ndarray
    blendshapes: dict[str, float]


class FaceModel(TasksModel):
    """MediaPipe's FaceLandmarker (face detector, 478 landmarks, 52 blendshapes), one face."""

    model_file = "face_landmarker.task"

    def __init__(self, min_detection: float = 0.5, min_presence: float = 0.5) -> None:
        super().__init__()
        self.thresholds = (min_detection, min_presence)

    def _create(self, vision: Any, base: Any) -> Any:
        det, pres = self.thresholds
        return vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=base, running_mode=self._mode(vision), num_faces=1,
            min_face_detection_confidence=det, min_face_presence_confidence=pres,
            output_face_blendshapes=True))

    def _read(self, result: Any) -> list[FaceLandmarks]:
        out = []
        for i, lms in enumerate(result.face_landmarks or []):
            shapes = {}
            if result.face_blendshapes and i < len(result.face_blendshapes):
                shapes = {c.category_name: float(c.score) for c in result.face_blendshapes[i]
                          if not c.category_name.startswith("_")}
            out.append(FaceLandmarks(
                uv=np.array([[lm.x, lm.y] for lm in lms], dtype=np.float64), blendshapes=shapes))
        return out
