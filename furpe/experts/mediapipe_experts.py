"""The built-in part experts, on MediaPipe's bundled legacy solutions (``mp.solutions``).

* :class:`MediaPipeBodyExpert` (BlazePose, 33 landmarks) finds the people;
* :class:`MediaPipeHandExpert` (MediaPipe Hands, 21 landmarks) and
  :class:`MediaPipeFaceExpert` (Face Mesh with iris refinement, 478 landmarks) look at crops
  placed from each person's body landmarks, and fill in that person's hand and face parts.

All models ship inside the ``mediapipe`` wheel: nothing is downloaded. MediaPipe is imported
lazily, when an expert first needs its graph; each expert builds its graphs once and keeps
them until :meth:`close`. Experts are not thread-safe (one graph, one caller at a time).

Coordinate facts (checked against mediapipe 0.10.21, see ``tests/test_experts.py`` and the
module notes below):

* 2D landmarks are MediaPipe's normalised coordinates times the image (or crop) size, mapped
  back to full-image pixels: x right, y down, ``(0, 0)`` the top-left corner of the image.
* ``pose_world_landmarks`` and ``multi_hand_world_landmarks`` are in metres, already x right,
  y down (image-aligned) and z *away* from the camera (the nose of a person facing the camera
  has a negative z relative to the hips). They are returned unchanged: pose ones centred at
  the hip midpoint, hand ones at the hand's centre.
* MediaPipe Hands labels handedness as if the image were mirrored (a selfie): on an ordinary
  photo, ``"Left"`` means the subject's *right* hand. Checked on renders of a right hand
  (``"Left"`` in 13 of 14 views, and ``"Right"`` on the mirrored renders).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from furpe.core import vocab as C
from furpe.core.boxes import (Box, as_rgb_uint8, box_area, box_centre, box_intersection, box_iou,
                              crop_square, crop_to_image, expand_box, face_crop_box,
                              hand_crop_box, landmark_box, points_inside, square_box)
from furpe.core.logs import native_quiet, quiet_environment
from furpe.experts.models import model_path
from furpe.core.vocab import Part
from furpe.experts.base import PartObservation, PersonObservation

# The 13 major pose joints (nose, shoulders, elbows, wrists, hips, knees, ankles) whose
# visibilities make the body detection score.
_MAJOR_JOINTS = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def _body_score(visibility: np.ndarray) -> float:
    """The body detection score: the mean of the 6 highest visibilities of the major joints."""
    return float(np.sort(visibility[list(_MAJOR_JOINTS)])[-6:].mean())


def _mp_solutions() -> Any:
    """``mediapipe.solutions``, imported on first use (its native log lines silenced)."""
    quiet_environment()
    with native_quiet():
        import mediapipe as mp

    return mp.solutions


class _QuietGraph:
    """A MediaPipe solution graph whose ``process`` runs with native logs silenced."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def process(self, image: np.ndarray) -> Any:
        with native_quiet():
            return self.graph.process(image)

    def reset(self) -> None:
        self.graph.reset()

    def close(self) -> None:
        self.graph.close()


class _GraphOwner:
    """Holds MediaPipe solution graphs, built lazily, and closes them."""

    def __init__(self) -> None:
        self._graphs: dict[Any, Any] = {}

    def _graph(self, key: Any) -> Any:
        g = self._graphs.get(key)
        if g is None:
            with native_quiet():
                g = self._graphs[key] = _QuietGraph(self._make_graph(key))
        return g

    def _make_graph(self, key: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any tracking state (video mode); graphs are kept."""
        for g in self._graphs.values():
            g.reset()

    def close(self) -> None:
        """Release the MediaPipe graphs; the expert rebuilds them if used again."""
        graphs, self._graphs = self._graphs, {}
        for g in graphs.values():
            g.close()

    def __enter__(self) -> "_GraphOwner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Body
# --------------------------------------------------------------------------------------------


class _TasksModel:
    """A MediaPipe Tasks vision model in image mode (its native logs silenced), behind the
    ``process`` / ``reset`` / ``close`` calls of the legacy graphs. Subclasses build
    ``self._task`` in ``_create(vision, base_options)`` and read its result in ``_read``."""

    model_file: str

    def __init__(self) -> None:
        quiet_environment()
        with native_quiet():
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        base = BaseOptions(model_asset_path=str(model_path(self.model_file)))
        self._task = self._create(vision, base)

    def _create(self, vision: Any, base: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _read(self, result: Any) -> Any:
        return result

    def process(self, image: np.ndarray) -> Any:
        data = self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                              data=np.ascontiguousarray(image))
        return self._read(self._task.detect(data))

    def reset(self) -> None:
        """Image mode keeps no state."""

    def close(self) -> None:
        self._task.close()


class _PersonDetector(_TasksModel):
    """MediaPipe Tasks' ObjectDetector (EfficientDet-Lite0, COCO; ``object_detector.tflite``
    shipped in ``furpe/data/models``) keeping the ``person`` class: ``process(image)`` gives
    the person boxes (x0, y0, x1, y1) in pixels, most confident first."""

    model_file = "object_detector.tflite"

    def __init__(self, min_score: float, max_results: int) -> None:
        self.min_score, self.max_results = min_score, max(2 * max_results, 8)
        super().__init__()

    def _create(self, vision: Any, base: Any) -> Any:
        return vision.ObjectDetector.create_from_options(vision.ObjectDetectorOptions(
            base_options=base, running_mode=vision.RunningMode.IMAGE,
            category_allowlist=["person"], score_threshold=self.min_score,
            max_results=self.max_results))

    def _read(self, result: Any) -> list[Box]:
        dets = sorted(result.detections, key=lambda d: -d.categories[0].score)
        return [(float(d.bounding_box.origin_x), float(d.bounding_box.origin_y),
                 float(d.bounding_box.origin_x + d.bounding_box.width),
                 float(d.bounding_box.origin_y + d.bounding_box.height)) for d in dets]


class MediaPipeBodyExpert(_GraphOwner):
    """BlazePose body expert (``mp.solutions.pose``, ``model_complexity=1``, the bundled model).

    Returns one ``"body"`` :class:`PartObservation` per person, convention ``mediapipe_pose``:

    * ``keypoints_2d``: the 33 landmarks in full-image pixels (out-of-image ones included, as
      BlazePose predicts them);
    * ``confidence``: BlazePose's per-landmark *visibility* (likelihood of being in the image
      and not occluded). BlazePose also estimates a *presence* (in the image at all), but the
      legacy ``Pose.process`` clears that field, so it is not used;
    * ``keypoints_3d``: ``pose_world_landmarks`` unchanged (metres, hip-midpoint origin, x
      right, y down, z away from the camera);
    * ``box``: the bounding box of the landmarks with visibility >= 0.5 (all landmarks if
      fewer than two), clipped to the image: the person's visible extent, not a crop;
    * ``score``: the mean of the 6 highest visibilities among the 13 major joints (nose,
      shoulders, elbows, wrists, hips, knees, ankles), i.e. how surely at least half of the
      major joints are seen. Detections below ``min_score`` are dropped.

    **Several people.** The legacy Pose solution finds only the most prominent person. This
    expert runs it repeatedly: after each detection it paints that person's predicted extent
    (the box of all 33 landmarks within the image, grown by ``mask_margin``) with the image's
    mean colour and runs again, up to ``max_people`` times, stopping at the first run that
    finds nobody or finds again someone already found (box IoU above ``dedupe_iou``, or most
    of the new box inside an earlier person's painted box).
    Limits: people overlapping someone found earlier are partly painted over, so they are
    missed or found with fewer landmarks; people too small for BlazePose's detector (roughly
    under a tenth of the image height) are missed; each extra person costs a full Pose run,
    plus one final empty run.

    **Person detector** (``person_detector=True``; off by default). First a person detector
    (:class:`_PersonDetector`, boxes scored at least ``min_person_score``) places a square
    crop per person (the box grown by ``crop_margin``, resized to at most ``crop_size``) for
    Pose; a crop whose seen landmarks lie mostly outside its box (someone else) or that
    repeats a person already found is dropped, and landmarks in the crop's zero padding count
    as unseen (visibility at most 0.1). The painting loop then looks for anyone missed. Video
    mode keeps to the whole image (its tracking needs the same view every frame).

    **Flip test** (``flip_test=True``, the default). Each person found is also looked at in
    the mirrored image: that second Pose run's landmarks are mirrored back (left and right
    swapped through :data:`~furpe.core.vocab.POSE_FLIP`) and averaged with the first
    (2D, 3D and visibilities), when both runs found the same person (box IoU above
    ``dedupe_iou``). BlazePose's depth errors in the two runs are partly independent, so the
    average is more accurate. It costs one more Pose run per person.

    **Video.** With ``video=True`` the graphs run in tracking mode (``static_image_mode=False``,
    landmark smoothing on): feed consecutive frames of one video, and call :meth:`reset`
    between videos. Person slot ``k`` keeps its own Pose graph (and one for its mirrored
    frames), fed the frame with slots ``0..k-1`` painted out, so each slot keeps tracking one
    person; identities are not guaranteed across frames (match people by box downstream).
    """

    name = "mediapipe_pose"
    parts: Sequence[Part] = ("body",)

    def __init__(
        self,
        max_people: int = 4,
        video: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        min_score: float = 0.4,
        dedupe_iou: float = 0.5,
        mask_margin: float = 0.15,
        flip_test: bool = True,
        person_detector: bool = False,
        min_person_score: float = 0.3,
        crop_margin: float = 0.2,
        crop_size: int = 512,
    ) -> None:
        super().__init__()
        if max_people < 1:
            raise ValueError("max_people must be >= 1")
        self.person_detector = person_detector
        self.min_person_score = min_person_score
        self.crop_margin = crop_margin
        self.crop_size = crop_size
        self.max_people = max_people
        self.video = video
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.min_score = min_score
        self.dedupe_iou = dedupe_iou
        self.mask_margin = mask_margin
        self.flip_test = flip_test

    def _make_graph(self, key: Any) -> Any:
        if key == "people":
            return _PersonDetector(self.min_person_score, self.max_people)
        return _mp_solutions().pose.Pose(
            static_image_mode=not self.video,
            model_complexity=1,
            smooth_landmarks=True,
            enable_segmentation=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def observe(
        self, image: np.ndarray, people: list[PersonObservation]
    ) -> list[PersonObservation]:
        """Append one :class:`PersonObservation` (with a ``"body"`` part) per person found."""
        people.extend(PersonObservation(parts={"body": obs}) for obs in self.detect(image))
        return people

    def detect(self, image: np.ndarray) -> list[PartObservation]:
        """The ``"body"`` observations of every person found, most prominent first."""
        img = as_rgb_uint8(image)
        if img is None:
            return []
        found = None
        if self.person_detector and not self.video:
            found = self._detect_in_person_boxes(img)
            if len(found) == self.max_people:
                return found
        return self._detect_by_masking(img, found)

    def _detect_in_person_boxes(self, img: np.ndarray) -> list[PartObservation]:
        """Top-down: the person detector's boxes, then Pose on a square crop of each; a
        crop whose landmarks lie mostly outside its box (someone else) or that repeats a
        person already found is dropped."""
        height, width = img.shape[:2]
        found: list[PartObservation] = []
        for box in self._graph("people").process(img):
            side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * self.crop_margin)
            centre = box_centre(box)
            size = int(min(self.crop_size, max(side, 64)))
            crop, used = crop_square(img, square_box(centre[0], centre[1], side), size)
            obs = self._to_observation(self._graph(0).process(crop), size, size)
            if obs is None:
                continue
            if self.flip_test:
                obs = self._with_mirrored_view(obs, crop, 0)
            obs = self._crop_to_image(obs, used, size, width, height)
            if obs.box is None or box_intersection(obs.box, expand_box(box, 0.1)) < \
                    0.6 * box_area(obs.box):
                continue
            if any(box_iou(obs.box, f.box) > self.dedupe_iou for f in found):  # type: ignore[arg-type]
                continue
            found.append(obs)
            if len(found) == self.max_people:
                break
        return found

    @staticmethod
    def _crop_to_image(obs: PartObservation, used: Box, size: int, width: int,
                       height: int) -> PartObservation:
        """A body observation made on a ``size``-pixel square crop ``used``, in the image."""
        kp2d = crop_to_image((obs.keypoints_2d + 0.5) / size, used)
        # The crop's padding is no image: landmarks placed there are not seen.
        conf = np.where(points_inside(kp2d, width, height), obs.confidence,
                        np.minimum(obs.confidence, 0.1))
        box = landmark_box(kp2d, conf, 0.5, (width, height))
        return replace(obs, keypoints_2d=kp2d, confidence=conf, box=box,
                       score=_body_score(conf))

    def _detect_by_masking(self, img: np.ndarray, found: list[PartObservation] | None = None
                           ) -> list[PartObservation]:
        """Pose on the whole image, again after painting out each person found (starting
        with ``found``, people found already)."""
        height, width = img.shape[:2]
        fill = img.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        work = img.copy() if found else img
        found = list(found or [])
        painted = [self._paint(work, obs, fill) for obs in found]
        for slot in range(len(found), self.max_people):
            graph = self._graph(slot if self.video else 0)
            obs = self._to_observation(graph.process(work), width, height)
            if obs is None or obs.box is None or self._is_duplicate(obs.box, found, painted):
                break
            if self.flip_test:
                obs = self._with_mirrored_view(obs, work, slot)
            found.append(obs)
            if slot + 1 < self.max_people:
                if work is img:
                    work = img.copy()
                painted.append(self._paint(work, obs, fill))
        return found

    def _paint(self, work: np.ndarray, obs: PartObservation, fill: np.ndarray) -> Box:
        """Paint a person's whole predicted extent (all 33 landmarks, in the image, not just
        the confidently seen ones: in a bust shot the unseen torso below would otherwise be
        found again as a "person") with ``fill``; return the painted box."""
        height, width = work.shape[:2]
        extent = landmark_box(obs.keypoints_2d, None, 0.0, (width, height)) or obs.box
        mask_box = expand_box(extent, self.mask_margin)  # type: ignore[arg-type]
        x0, y0 = max(int(math.floor(mask_box[0])), 0), max(int(math.floor(mask_box[1])), 0)
        x1 = min(int(math.ceil(mask_box[2])), width)
        y1 = min(int(math.ceil(mask_box[3])), height)
        work[y0:y1, x0:x1] = fill
        return mask_box

    def _with_mirrored_view(
        self, obs: PartObservation, work: np.ndarray, slot: int
    ) -> PartObservation:
        """``obs`` averaged with the same person's landmarks seen in the mirrored image."""
        height, width = work.shape[:2]
        graph = self._graph(("mirrored", slot) if self.video else 0)
        mirrored = self._to_observation(
            graph.process(np.ascontiguousarray(work[:, ::-1])), width, height)
        if mirrored is None:
            return obs
        perm = list(C.POSE_FLIP)
        kp2d = mirrored.keypoints_2d[perm].copy()
        kp2d[:, 0] = (width - 1) - kp2d[:, 0]
        conf = mirrored.confidence[perm]
        box = landmark_box(kp2d, conf, 0.5, (width, height))
        if box is None or box_iou(box, obs.box) <= self.dedupe_iou:
            return obs
        kp3d = obs.keypoints_3d
        if kp3d is not None and mirrored.keypoints_3d is not None:
            kp3d = (kp3d + mirrored.keypoints_3d[perm] * np.array([-1.0, 1.0, 1.0])) / 2
        kp2d = (obs.keypoints_2d + kp2d) / 2
        conf = (obs.confidence + conf) / 2
        return replace(
            obs, keypoints_2d=kp2d, confidence=conf, keypoints_3d=kp3d,
            box=landmark_box(kp2d, conf, 0.5, (width, height)) or obs.box,
            score=_body_score(conf),
        )

    def _is_duplicate(self, box: Box, found: list[PartObservation], painted: list[Box]) -> bool:
        for obs, mask_box in zip(found, painted):
            if obs.box is not None and box_iou(box, obs.box) > self.dedupe_iou:
                return True
            if box_intersection(box, mask_box) > 0.7 * box_area(box):
                return True
        return False

    def _to_observation(self, result: Any, width: int, height: int) -> PartObservation | None:
        if result.pose_landmarks is None:
            return None
        lms = result.pose_landmarks.landmark
        # MediaPipe's normalised coordinates put pixel centres at i + 0.5; ours at i.
        kp2d = np.array([[lm.x * width - 0.5, lm.y * height - 0.5] for lm in lms], dtype=np.float64)
        vis = np.clip(np.array([lm.visibility for lm in lms], dtype=np.float64), 0.0, 1.0)
        kp3d = None
        if result.pose_world_landmarks is not None:
            kp3d = np.array(
                [[lm.x, lm.y, lm.z] for lm in result.pose_world_landmarks.landmark],
                dtype=np.float64,
            )
        score = _body_score(vis)
        box = landmark_box(kp2d, vis, 0.5, (width, height))
        if score < self.min_score or box is None:
            return None
        return PartObservation(
            part="body",
            convention="mediapipe_pose",
            keypoints_2d=kp2d,
            confidence=vis,
            keypoints_3d=kp3d,
            box=box,
            score=score,
            expert=self.name,
        )


# --------------------------------------------------------------------------------------------
# Hands
# --------------------------------------------------------------------------------------------

_HAND_POSE_INDICES = {
    # side: (wrist, elbow, pinky, index, shoulder)
    "left": (15, 13, 17, 19, 11),
    "right": (16, 14, 18, 20, 12),
}


def body_hand_crop_box(body: PartObservation, side: str, scale: float = 1.0) -> Box | None:
    """:func:`hand_crop_box` for the ``side`` ("left"/"right") hand of a ``mediapipe_pose``
    observation."""
    if body.convention != "mediapipe_pose":
        raise ValueError(f"need a mediapipe_pose body observation, got {body.convention!r}")
    wrist, elbow, pinky, index, _ = _HAND_POSE_INDICES[side]
    kp = body.keypoints_2d
    shoulder_width = float(np.linalg.norm(kp[11] - kp[12]))
    return hand_crop_box(
        kp[wrist],
        elbow=kp[elbow],
        knuckles=(kp[pinky] + kp[index]) / 2.0,
        shoulder_width=shoulder_width,
        scale=scale,
    )


class MediaPipeHandExpert(_GraphOwner):
    """MediaPipe Hands expert on crops placed around each person's wrists.

    For every person with a ``mediapipe_pose`` body observation and each wrist whose
    visibility is at least ``min_wrist_visibility``, a square crop is placed with
    :func:`body_hand_crop_box` (zero-padded outside the image), resized to ``crop_size`` and
    given to ``mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2,
    model_complexity=1)``. Of the hands found, the one whose wrist is nearest the body's wrist
    is kept, unless it is further than ``max_wrist_distance`` hand lengths from it; if none is
    kept, the crop is tried once more ``retry_scale`` times larger. When both wrists' crops
    found the same physical hand, it is kept only for the side whose handedness agrees.

    Returned parts (``"left_hand"`` / ``"right_hand"``, convention ``mediapipe_hand``):

    * the side is the body's (which wrist the crop was placed at). MediaPipe's handedness
      label (which is for a mirrored image: ``"Left"`` = the subject's right hand on an
      ordinary photo) is only a consistency check: ``score`` is the handedness score when
      it agrees with the body's side, and half of it when it disagrees;
    * ``confidence``: MediaPipe Hands gives no per-landmark confidence, so every landmark gets
      ``score``, except landmarks outside the image, which get 0;
    * ``keypoints_3d``: ``multi_hand_world_landmarks`` unchanged (metres, origin at the hand's
      centre, x right, y down, z away from the camera);
    * ``box``: the crop box that was used, in full-image pixels (may extend past the image).

    Existing hand parts of a person (from another expert) are left alone.
    """

    name = "mediapipe_hands"
    parts: Sequence[Part] = ("left_hand", "right_hand")

    def __init__(
        self,
        crop_size: int = 256,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        min_wrist_visibility: float = 0.1,
        max_wrist_distance: float = 1.0,
        retry_scale: float = 1.6,
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.min_wrist_visibility = min_wrist_visibility
        self.max_wrist_distance = max_wrist_distance
        self.retry_scale = retry_scale

    def _make_graph(self, key: Any) -> Any:
        return _mp_solutions().hands.Hands(
            static_image_mode=True,
            max_num_hands=2,
            model_complexity=1,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def observe(
        self, image: np.ndarray, people: list[PersonObservation]
    ) -> list[PersonObservation]:
        """Fill in the hands of ``people`` that have a ``mediapipe_pose`` body."""
        img = as_rgb_uint8(image)
        if img is None:
            return people
        for person in people:
            body = person.get("body")
            if body is None or body.convention != "mediapipe_pose":
                continue
            for side in ("left", "right"):
                part = f"{side}_hand"
                if part in person.parts:
                    continue
                obs = self.observe_hand(img, body, side)
                if obs is not None:
                    person.parts[part] = obs
            _drop_shared_hand(person)
        return people

    def observe_hand(
        self, image: np.ndarray, body: PartObservation, side: str
    ) -> PartObservation | None:
        """The ``side`` ("left"/"right") hand of the person seen as ``body``, or None."""
        img = as_rgb_uint8(image)
        if img is None:
            return None
        wrist_idx = _HAND_POSE_INDICES[side][0]
        if body.confidence[wrist_idx] < self.min_wrist_visibility:
            return None
        wrist = body.keypoints_2d[wrist_idx]
        for scale in (1.0, self.retry_scale):
            box = body_hand_crop_box(body, side, scale)
            if box is None:
                return None
            # Hand length the box was built from (side = 2 * scale * L).
            hand_length = (box[2] - box[0]) / (2.0 * scale)
            obs = self._detect_in_crop(img, box, wrist, hand_length, side)
            if obs is not None:
                return obs
        return None

    def observe_hand_in_box(
        self, image: np.ndarray, box: Box | None = None, side: str | None = None
    ) -> PartObservation | None:
        """The most confident hand in ``box`` (default: the whole image), for hand crops such
        as FreiHAND's. ``side`` ("left"/"right") forces the side; by default it comes from
        MediaPipe's handedness (which assumes a mirrored image, handled here)."""
        img = as_rgb_uint8(image)
        if img is None:
            return None
        h, w = img.shape[:2]
        if box is None:
            box = square_box((w - 1) / 2, (h - 1) / 2, float(max(w, h)))
        return self._detect_in_crop(img, box, None, 0.0, side)

    def _detect_in_crop(
        self, img: np.ndarray, box: Box, wrist: np.ndarray | None, hand_length: float,
        side: str | None,
    ) -> PartObservation | None:
        height, width = img.shape[:2]
        # Skip crops that barely touch the image.
        if box_intersection(box, (0.0, 0.0, float(width), float(height))) < 0.1 * box_area(box):
            return None
        result, used, hands = self._run_hands(img, box)
        if not hands:
            return None
        best: tuple[float, int, np.ndarray] | None = None
        for i, kp in enumerate(hands):
            if wrist is not None:  # the hand nearest the body's wrist
                rank = float(np.linalg.norm(kp[0] - wrist))
            else:  # the most confident hand
                rank = -_handedness(result, i)[1]
            if best is None or rank < best[0]:
                best = (rank, i, kp)
        assert best is not None
        dist, i, kp2d = best
        if wrist is not None and dist > self.max_wrist_distance * hand_length:
            return None
        mp_side, mp_score = _handedness(result, i)
        if side is None:
            side = mp_side or "right"
        score = 1.0
        if mp_side:
            score = mp_score if mp_side == side else 0.5 * mp_score
        kp3d = None
        if result.multi_hand_world_landmarks and i < len(result.multi_hand_world_landmarks):
            kp3d = np.array(
                [[lm.x, lm.y, lm.z] for lm in result.multi_hand_world_landmarks[i].landmark]
            )
        conf = np.where(points_inside(kp2d, width, height), score, 0.0)
        return PartObservation(
            part=f"{side}_hand",  # type: ignore[arg-type]
            convention="mediapipe_hand",
            keypoints_2d=kp2d,
            confidence=conf,
            keypoints_3d=kp3d,
            box=used,
            score=score,
            expert=self.name,
        )

    def _run_hands(self, img: np.ndarray, box: Box) -> tuple[Any, Box, list[np.ndarray]]:
        """MediaPipe Hands on a square crop: the raw result, the crop box used and each hand's
        21 landmarks in full-image pixels."""
        crop, used = crop_square(img, box, self.crop_size)
        result = self._graph("hands").process(crop)
        hands = [crop_to_image([[lm.x, lm.y] for lm in lms.landmark], used)
                 for lms in (result.multi_hand_landmarks or [])]
        return result, used, hands


def _drop_shared_hand(person: PersonObservation, overlap: float = 0.3) -> None:
    """When both hand crops found the same physical hand (hands close together, or a wrong
    body wrist), keep it only for the side MediaPipe's handedness agrees with (the higher
    score): the landmarks of the two observations lie within ``overlap`` hand sizes."""
    left, right = person.parts.get("left_hand"), person.parts.get("right_hand")
    if left is None or right is None:
        return
    size = max(float(np.linalg.norm(np.ptp(left.keypoints_2d, axis=0))), 1.0)
    if np.median(np.linalg.norm(left.keypoints_2d - right.keypoints_2d, axis=1)) < overlap * size:
        del person.parts["left_hand" if left.score < right.score else "right_hand"]


def _handedness(result: Any, i: int) -> tuple[str, float]:
    """Side ("left"/"right", "" if unknown) and score of MediaPipe's hand ``i``. MediaPipe
    assumes a mirrored image: its "Left" is the subject's right hand."""
    if result.multi_handedness and i < len(result.multi_handedness):
        cls = result.multi_handedness[i].classification[0]
        return ("right" if cls.label == "Left" else "left"), float(cls.score)
    return "", 1.0


# --------------------------------------------------------------------------------------------
# Face
# --------------------------------------------------------------------------------------------

# (pose landmark, face-mesh landmark) pairs that should coincide: nose tip, eye centres
# (iris centres), mouth corners.
_FACE_BODY_PAIRS = (
    (0, C.FACE_NOSE_TIP),
    (2, C.FACE_LEFT_IRIS[0]),
    (5, C.FACE_RIGHT_IRIS[0]),
    (9, C.FACE_MOUTH_LEFT),
    (10, C.FACE_MOUTH_RIGHT),
)


def body_face_crop_box(
    body: PartObservation, scale: float = 2.2, min_visibility: float = 0.3
) -> Box | None:
    """:func:`face_crop_box` around the head landmarks (0-10) of a ``mediapipe_pose``
    observation whose visibility is at least ``min_visibility``; None if fewer than 3 are."""
    if body.convention != "mediapipe_pose":
        raise ValueError(f"need a mediapipe_pose body observation, got {body.convention!r}")
    idx = np.array(C.POSE_FACE)
    keep = idx[body.confidence[idx] >= min_visibility]
    if len(keep) < 3:
        return None
    return face_crop_box(body.keypoints_2d[keep], scale=scale)


class MediaPipeFaceExpert(_GraphOwner):
    """MediaPipe Face Mesh expert (478 landmarks, iris refinement on) on a head crop.

    For every person with a ``mediapipe_pose`` body observation showing at least three head
    landmarks (visibility >= ``min_head_visibility``), a square crop ``crop_scale`` times the
    head landmarks' extent (:func:`body_face_crop_box`) is resized to ``crop_size`` and given
    to ``mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
    max_num_faces=1)``.

    Returned part (``"face"``, convention ``mediapipe_face``, 478 landmarks):

    * ``keypoints_3d`` is None: Face Mesh's z is a relative depth in crop-pixel units, with no
      metric scale;
    * ``score``: Face Mesh reports no score, so it is ``inside * agreement``: ``inside`` the
      fraction of landmarks inside the image, ``agreement = exp(-d^2 / (2 sigma^2))`` where
      ``d`` is the mean distance between the mesh's nose tip, iris centres and mouth corners
      and BlazePose's nose, eyes and mouth corners (those visible), ``sigma = 0.3 *`` the
      head extent (BlazePose's head points are coarse even where Face Mesh is right). A mesh
      whose nose tip is more than half the head extent from BlazePose's nose is rejected
      (another face in the crop);
    * ``confidence``: ``score`` for every landmark inside the image, 0 outside;
    * ``box``: the crop box used, in full-image pixels.

    An existing ``"face"`` part of a person (from another expert) is left alone.
    """

    name = "mediapipe_face_mesh"
    parts: Sequence[Part] = ("face",)

    def __init__(
        self,
        crop_size: int = 256,
        crop_scale: float = 2.2,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        min_head_visibility: float = 0.3,
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.crop_scale = crop_scale
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.min_head_visibility = min_head_visibility

    def _make_graph(self, key: Any) -> Any:
        return _mp_solutions().face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def observe(
        self, image: np.ndarray, people: list[PersonObservation]
    ) -> list[PersonObservation]:
        """Fill in the face of ``people`` that have a ``mediapipe_pose`` body."""
        img = as_rgb_uint8(image)
        if img is None:
            return people
        for person in people:
            body = person.get("body")
            if body is None or body.convention != "mediapipe_pose" or "face" in person.parts:
                continue
            obs = self.observe_face(img, body)
            if obs is not None:
                person.parts["face"] = obs
        return people

    def observe_face(self, image: np.ndarray, body: PartObservation) -> PartObservation | None:
        """The face of the person seen as ``body``, or None."""
        img = as_rgb_uint8(image)
        if img is None:
            return None
        box = body_face_crop_box(body, self.crop_scale, self.min_head_visibility)
        if box is None:
            return None
        found = self._detect_in_crop(img, box)
        if found is None:
            return None
        kp2d, used, blendshapes = found
        height, width = img.shape[:2]
        head_extent = (box[2] - box[0]) / self.crop_scale
        vis = body.confidence
        if vis[0] >= self.min_head_visibility:
            if np.linalg.norm(kp2d[C.FACE_NOSE_TIP] - body.keypoints_2d[0]) > 0.5 * head_extent:
                return None
        dists = [
            float(np.linalg.norm(kp2d[f] - body.keypoints_2d[b]))
            for b, f in _FACE_BODY_PAIRS
            if vis[b] >= self.min_head_visibility
        ]
        return self._observation(kp2d, used, width, height,
                                 agreement=self._agreement(dists, head_extent),
                                 blendshapes=blendshapes)

    def observe_face_in_box(
        self, image: np.ndarray, box: Box | None = None
    ) -> PartObservation | None:
        """The face in ``box`` (default: the whole image), for head crops such as NoW's."""
        img = as_rgb_uint8(image)
        if img is None:
            return None
        h, w = img.shape[:2]
        if box is None:
            box = square_box((w - 1) / 2, (h - 1) / 2, float(max(w, h)))
        found = self._detect_in_crop(img, box)
        if found is None:
            return None
        return self._observation(found[0], found[1], w, h, agreement=1.0, blendshapes=found[2])

    def _detect_in_crop(self, img: np.ndarray, box: Box
                        ) -> tuple[np.ndarray, Box, dict[str, float] | None] | None:
        """The 478 landmarks (full-image pixels) in a square crop, the crop, and the
        blendshapes (None when the model gives none)."""
        height, width = img.shape[:2]
        if box_intersection(box, (0.0, 0.0, float(width), float(height))) < 0.1 * box_area(box):
            return None
        crop, used = crop_square(img, box, self.crop_size)
        found = self._landmarks(self._graph("face").process(crop))
        if found is None or len(found[0]) != C.FACE_MESH_REFINED_SIZE:
            return None
        return crop_to_image(found[0], used), used, found[1]

    @staticmethod
    def _landmarks(result: Any) -> tuple[list[list[float]], dict[str, float] | None] | None:
        """Normalised crop coordinates of the first face (and its blendshapes), or None."""
        if not result.multi_face_landmarks:
            return None
        return [[lm.x, lm.y] for lm in result.multi_face_landmarks[0].landmark], None

    @staticmethod
    def _agreement(dists: list[float], head_extent: float) -> float:
        """1 when the face landmarks agree with the body's head landmarks, towards 0 when not."""
        agreement = 1.0
        if dists:
            sigma = 0.3 * head_extent
            agreement = math.exp(-0.5 * (float(np.mean(dists)) / sigma) ** 2)
        return agreement

    def _observation(self, kp2d: np.ndarray, used: Box, width: int, height: int,
                     agreement: float, blendshapes: dict[str, float] | None = None
                     ) -> PartObservation:
        inside = points_inside(kp2d, width, height)
        score = float(inside.mean()) * agreement
        return PartObservation(
            part="face",
            convention="mediapipe_face",
            keypoints_2d=kp2d,
            confidence=np.where(inside, score, 0.0),
            keypoints_3d=None,
            box=used,
            score=score,
            expert=self.name,
            blendshapes=blendshapes,
        )


class _TasksFaceLandmarker(_TasksModel):
    """MediaPipe Tasks' FaceLandmarker (``face_landmarker.task``) with blendshapes."""

    model_file = "face_landmarker.task"

    def __init__(self, min_detection_confidence: float, min_presence_confidence: float) -> None:
        self.min_detection, self.min_presence = min_detection_confidence, min_presence_confidence
        super().__init__()

    def _create(self, vision: Any, base: Any) -> Any:
        return vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=base, running_mode=vision.RunningMode.IMAGE, num_faces=1,
            min_face_detection_confidence=self.min_detection,
            min_face_presence_confidence=self.min_presence, output_face_blendshapes=True))


class MediaPipeFaceLandmarkerExpert(MediaPipeFaceExpert):
    """MediaPipe FaceLandmarker (Tasks API, ``face_landmarker.task`` shipped in
    ``furpe/data/models``) on the same head crop as :class:`MediaPipeFaceExpert`.

    It gives the same 478 landmarks (convention ``mediapipe_face``, scored the same way) and,
    in ``blendshapes``, its 52 ARKit-named facial blendshape scores in [0, 1] (``_neutral``
    dropped), which the fit uses for the facial actions of a body model that has them.
    """

    name = "mediapipe_face_landmarker"

    def _make_graph(self, key: Any) -> Any:
        return _TasksFaceLandmarker(self.min_detection_confidence, self.min_tracking_confidence)

    @staticmethod
    def _landmarks(result: Any) -> tuple[list[list[float]], dict[str, float] | None] | None:
        if not result.face_landmarks:
            return None
        shapes = None
        if result.face_blendshapes:
            shapes = {c.category_name: float(c.score) for c in result.face_blendshapes[0]
                      if not c.category_name.startswith("_")}
        return [[lm.x, lm.y] for lm in result.face_landmarks[0]], shapes
