"""The body expert: BlazePose GHUM (MediaPipe PoseLandmarker, Heavy or Full) finds the people.

People are found top-down: a person detector (EfficientDet-Lite0 COCO) gives boxes, BlazePose
runs on a square crop of each (its landmark network straight on the box where its own
face-based detector finds nobody), and a crop whose landmarks belong to someone else (mostly
outside its box) or repeat a person already found is dropped. BlazePose then runs once on the
whole image, with up to ``max_people`` poses, for people the detector missed (its own detector
is face-based, so it finds upper-body and close-up shots that a person detector may not).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from furpe.core import vocab as C
from furpe.core.boxes import (Box, as_rgb_uint8, box_area, box_centre, box_intersection, box_iou,
                              crop_square, crop_to_image, expand_box, landmark_box,
                              points_inside, square_box)
from furpe.core.threads import background, on_one_core, side_by_side
from furpe.core.vocab import Part
from furpe.experts.base import PartObservation, PersonObservation
from furpe.experts.boxnets import POSE_INPUT_SIZE, PoseBoxLandmarker
from furpe.experts.tasks import PersonDetector, PoseLandmarks, PoseModel, TasksExpert

# The 13 major pose joints (nose, shoulders, elbows, wrists, hips, knees, ankles) whose
# visibilities make the body detection score.
_MAJOR_JOINTS = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


BOX_ROI_SCALE = 1.25
"""The square the landmark network sees around a person box, x the box's longer side
(MediaPipe grows its own pose regions by the same factor)."""

#: The correspondences of each BlazePose variant's 3D (world) landmarks. Only Heavy's are
#: fitted (``scripts/make_correspondences.py --world``); Full's 3D skeleton is another one, so
#: its 3D landmarks go through the 2D correspondences.
WORLD_CONVENTIONS: dict[str, str] = {"heavy": C.world_convention("mediapipe_pose")}


#: Defaults of :class:`MediaPipeBodyExpert`: the lowest body score kept, and the box overlap
#: above which two people are one.
MIN_SCORE, DEDUPE_IOU = 0.4, 0.5


def body_score(visibility: np.ndarray) -> float:
    """The body detection score: the mean of the 6 highest visibilities of the major joints."""
    return float(np.sort(np.asarray(visibility)[list(_MAJOR_JOINTS)])[-6:].mean())


def overlapping(a: Box, b: Box, iou: float) -> bool:
    """Two people's boxes are one person: IoU above ``iou``, or most of the smaller inside the
    larger."""
    return box_iou(a, b) > iou or box_intersection(a, b) > 0.7 * min(box_area(a), box_area(b))


def taken_share(box: Box, taken: Sequence[Box], grid: int = 24) -> float:
    """The share of ``box`` covered by the union of the boxes ``taken`` (on a grid)."""
    xs = np.linspace(box[0], box[2], grid)
    ys = np.linspace(box[1], box[3], grid)
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros(gx.shape, bool)
    for t in taken:
        covered |= (gx >= t[0]) & (gx <= t[2]) & (gy >= t[1]) & (gy <= t[3])
    return float(covered.mean())


def mask_boxes(image: np.ndarray, boxes: Sequence[Box], grow: float = 0.1) -> np.ndarray:
    """A copy of ``image`` with each box (grown by ``grow`` of its size) painted mid-grey."""
    out = image.copy()
    for b in boxes:
        x0, y0, x1, y1 = expand_box(b, grow)
        rows = slice(max(int(y0), 0), max(int(np.ceil(y1)), 0))
        out[rows, max(int(x0), 0):max(int(np.ceil(x1)), 0)] = 128
    return out


class MediaPipeBodyExpert(TasksExpert):
    """BlazePose body expert (``model`` ``"heavy"``, the default, or ``"full"``, faster).

    Returns one ``"body"`` :class:`PartObservation` per person, convention ``mediapipe_pose``:

    * ``keypoints_2d``: the 33 landmarks in full-image pixels (out-of-image ones included, as
      BlazePose predicts them);
    * ``confidence``: BlazePose's per-landmark *visibility*; landmarks outside the image (or in
      a crop's padding) get at most 0.1;
    * ``keypoints_3d``: the world landmarks unchanged (metres, hip-midpoint origin, x right,
      y down, z away from the camera);
    * ``box``: the box of the landmarks with visibility >= 0.5, clipped to the image;
    * ``score``: :func:`body_score`; people below ``min_score`` are dropped.

    **Finding people** (image mode). ``person_detector`` boxes scored at least
    ``min_person_score`` (in an image larger than 1.5 x ``detector_tile`` pixels, also found
    on overlapping tiles of that size, where small people are not shrunk away) each give a
    square crop (the box grown by ``crop_margin``, resized to at most ``crop_size``) for
    BlazePose. Where BlazePose's own detector, which looks for a face, finds nobody new in
    the crop (people from behind, from above, small or half hidden), ``box_landmarks`` runs
    its landmark network on the box itself (:class:`~furpe.experts.boxnets.PoseBoxLandmarker`;
    default: on for images, off in video mode, where BlazePose's tracking keeps the people it
    found, and where a half-hidden walker's box landmarks, warm-started frame after frame,
    made the fit drift: on the generated two-walker clip 6 people off by more than the match
    gate in 40 frames instead of 1).
    Then BlazePose looks at the whole image for up to ``max_people`` people. A person is kept
    when its seen landmarks lie mostly inside the box it was looked for in (one body never
    takes parts of two people), and not kept twice (box IoU above ``dedupe_iou``, or most of
    one box inside the other). Last, a **second look** (``second_look``, None: off) for people
    the detector boxed together with someone found: where someone found stands mostly inside
    a box and a share ``second_look`` of the box is not covered by the people found,
    BlazePose looks at the box again with them painted out (:meth:`_look_again`).

    **Flip test** (``flip_test``; default: on for images, off in video mode, where the
    temporal smoothing averages out the same noise at half the cost): every BlazePose run is
    repeated on the mirrored image (the whole-image run only when it finds someone not yet
    found in a person box); the mirrored landmarks (left and right swapped through
    :data:`~furpe.core.vocab.POSE_FLIP`) are averaged with the plain ones for the same person.
    BlazePose's depth errors in the two runs are partly independent, so the average is more
    accurate.

    **Video** (``video=True``): the person boxes are looked at as for an image, then BlazePose
    runs in tracking mode on the whole frame for up to ``max_people`` more; call :meth:`reset`
    between videos. Identities across frames are the tracker's job (:mod:`furpe.tracking`).
    """

    name = "mediapipe_pose"
    parts: Sequence[Part] = ("body",)

    def __init__(
        self,
        model: str = "heavy",
        max_people: int = 20,
        video: bool = False,
        min_score: float = MIN_SCORE,
        dedupe_iou: float = DEDUPE_IOU,
        flip_test: bool | None = None,
        person_detector: bool = True,
        min_person_score: float = 0.3,
        crop_margin: float = 0.2,
        crop_size: int = 512,
        min_detection_confidence: float = 0.3,
        min_presence_confidence: float = 0.3,
        box_landmarks: bool | None = None,
        detector_tile: int | None = 640,
        second_look: float | None = 0.35,
    ) -> None:
        if max_people < 1:
            raise ValueError("max_people must be >= 1")
        self.model, self.max_people, self.video = model, max_people, video
        self.min_score, self.dedupe_iou = min_score, dedupe_iou
        self.flip_test = (not video) if flip_test is None else flip_test
        self.person_detector, self.min_person_score = person_detector, min_person_score
        self.crop_margin, self.crop_size = crop_margin, crop_size
        self.box_landmarks = (not video) if box_landmarks is None else box_landmarks
        self.second_look = second_look
        self._box_pose = PoseBoxLandmarker(model)
        thresholds = dict(min_detection=min_detection_confidence,
                          min_presence=min_presence_confidence)
        self._crop_pose = PoseModel(model, 1, **thresholds)
        self._crop_mirror = PoseModel(model, 1, **thresholds)
        self._image_pose = PoseModel(model, max_people, video=video, **thresholds)
        self._mirror_pose = PoseModel(model, max_people, video=video, **thresholds)
        self._detector = PersonDetector(min_person_score, max(2 * max_people, 8), detector_tile)

    # -- detection -------------------------------------------------------------------------

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
        height, width = img.shape[:2]
        # BlazePose on the whole image (for people the detector misses) runs beside the
        # person boxes' passes, on the other core (on one core: after them, when needed).
        whole_pass = None if on_one_core() else background(self._image_pose.process, img)
        try:
            boxes = self._detector.process(img) if self.person_detector else []
            found = self._in_boxes(img, boxes)
        finally:
            if whole_pass is not None:
                whole_pass.exception()  # wait: the next call may use the same model
        if len(found) == self.max_people:
            return found

        def known(obs: PartObservation) -> bool:  # already found in a person box
            o = self._to_image(obs, None, 0, width, height)
            return o is not None and any(
                overlapping(o.box, f.box, self.dedupe_iou)  # type: ignore[arg-type]
                for f in found)

        seen = (self._to_image(p, None, 0, width, height)
                for p in self._poses(img, self._image_pose, self._mirror_pose, width, height,
                                     known, whole_pass and whole_pass.result()))
        whole = sorted((o for o in seen if o is not None),
                       key=lambda o: -o.score * box_area(o.box))  # type: ignore[arg-type]
        for obs in whole:
            if len(found) == self.max_people:
                break
            if not any(overlapping(obs.box, f.box, self.dedupe_iou) for f in found):
                found.append(obs)
        if self.second_look:
            self._look_again(img, [b for b, _ in boxes], found)
        return found

    def _in_boxes(self, img: np.ndarray, boxes: list[tuple[Box, float]]
                  ) -> list[PartObservation]:
        """The people found in the person detector's ``boxes`` (:meth:`_in_box`), at most
        ``max_people``."""
        found: list[PartObservation] = []
        for box, _ in boxes:
            if len(found) == self.max_people:
                break
            obs = self._in_box(img, box, found)
            if obs is not None:
                found.append(obs)
        return found

    def _look_again(self, img: np.ndarray, boxes: list[Box],
                    found: list[PartObservation]) -> None:
        """People boxed together with someone found (one detector box around two people):
        where someone found stands mostly inside a box and a share ``second_look`` of the box
        is free of the people found, BlazePose looks at it again with those people painted
        out; a person found there is kept when at most 40% of its box was painted out and it
        is at least 0.4 times as tall as the box."""
        for box in boxes:
            if len(found) == self.max_people:
                return
            taken = [f.box for f in found if f.box is not None
                     and box_intersection(f.box, box) > 0]
            # someone found stands mostly in this box, and enough of it is left
            held = any(box_intersection(t, box) >= 0.5 * box_area(t)  # type: ignore[arg-type]
                       for t in taken)
            free = 1.0 - taken_share(box, taken)  # type: ignore[arg-type]
            if not held or free < self.second_look:
                continue
            obs = self._in_box(mask_boxes(img, taken), box, found)  # type: ignore[arg-type]
            # Not kept: mostly in what was painted out (parts of the people found), or short
            # against the box (stray limbs).
            if obs is not None and taken_share(obs.box, taken) <= 0.4 \
                    and obs.box[3] - obs.box[1] >= 0.4 * (box[3] - box[1]):  # type: ignore[index]
                found.append(obs)

    def _in_box(self, img: np.ndarray, box: Box,
                found: list[PartObservation]) -> PartObservation | None:
        """BlazePose on a square crop around a person box (then, with ``box_landmarks``, its
        landmark network on the box itself); None when neither finds someone new (not one
        of the people ``found``) whose seen landmarks lie mostly inside the box."""
        height, width = img.shape[:2]
        side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * self.crop_margin)
        centre = box_centre(box)
        size = int(min(self.crop_size, max(side, 64)))
        crop, used = crop_square(img, square_box(centre[0], centre[1], side), size)
        poses = self._poses(crop, self._crop_pose, self._crop_mirror, size, size)
        obs = self._to_image(poses[0], used, size, width, height) if poses else None
        if self._new(obs, box, found):
            return obs
        if not self.box_landmarks:
            return None
        side = max(box[2] - box[0], box[3] - box[1]) * BOX_ROI_SCALE
        crop, used = crop_square(img, square_box(centre[0], centre[1], side), POSE_INPUT_SIZE)
        crops = np.stack([crop, crop[:, ::-1]]) if self.flip_test else crop[None]
        seen = [None if p is None
                else self._observation(p, POSE_INPUT_SIZE, POSE_INPUT_SIZE, self.model)
                for p in self._box_pose.process(crops)]
        pose = seen[0]
        if pose is None:
            return None
        if self.flip_test and seen[1] is not None:
            pose = self._average(pose, [self._unmirror(seen[1], POSE_INPUT_SIZE)], POSE_INPUT_SIZE,
                                 POSE_INPUT_SIZE)
        obs = self._to_image(pose, used, POSE_INPUT_SIZE, width, height)
        return obs if self._new(obs, box, found) else None

    def _new(self, obs: PartObservation | None, box: Box, found: list[PartObservation]) -> bool:
        """``obs`` is the person boxed by ``box`` (most of its seen landmarks' box lies in it)
        and none of the people ``found``."""
        if obs is None or obs.box is None:
            return False
        seen = obs.box
        inside = box_intersection(seen, expand_box(box, 0.1)) >= 0.6 * box_area(seen)
        return inside and not any(
            overlapping(seen, f.box, self.dedupe_iou)  # type: ignore[arg-type]
            for f in found)

    def _poses(self, img: np.ndarray, model: PoseModel, mirror_model: PoseModel, width: int,
               height: int, known: Callable[[PartObservation], bool] | None = None,
               plain: list[PoseLandmarks] | None = None) -> list[PartObservation]:
        """The people BlazePose finds in ``img`` (with the flip test if on), in ``img``'s
        pixels; confidences not yet limited to the image. ``plain``: ``model``'s result on
        ``img`` when it ran already. People ``known`` already are left out before the
        mirrored run, which is skipped when nobody is left; with nothing known, the plain
        and mirrored runs go side by side (two models, two cores), except under
        ``threads.one_core``."""
        def mirror() -> list[PoseLandmarks]:
            return mirror_model.process(np.ascontiguousarray(img[:, ::-1]))

        flipped = None
        if plain is None and known is None and self.flip_test and not on_one_core():
            plain, flipped = side_by_side(lambda: model.process(img), mirror)
        elif plain is None:
            plain = model.process(img)
        seen = [self._observation(p, width, height, self.model) for p in plain]
        if known is not None:
            seen = [p for p in seen if not known(p)]
        if not self.flip_test or not seen:
            return seen
        mirrored = [self._unmirror(self._observation(p, width, height, self.model), width)
                    for p in (mirror() if flipped is None else flipped)]
        return [self._average(obs, mirrored, width, height) for obs in seen]

    @staticmethod
    def _observation(p: PoseLandmarks, width: int, height: int, model: str) -> PartObservation:
        # MediaPipe's normalised coordinates put pixel centres at i + 0.5; ours at i.
        kp2d = p.uv * np.array([width, height]) - 0.5
        return PartObservation(part="body", convention="mediapipe_pose", keypoints_2d=kp2d,
                               confidence=p.visibility, keypoints_3d=p.world,
                               box=landmark_box(kp2d, p.visibility, 0.5, (width, height)),
                               score=body_score(p.visibility), expert="mediapipe_pose",
                               world_convention=WORLD_CONVENTIONS.get(model))

    @staticmethod
    def _unmirror(obs: PartObservation, width: int) -> PartObservation:
        """A person seen in the mirrored image, back in the plain image (left/right swapped)."""
        kp2d = C.mirror_pose_points(obs.keypoints_2d, width - 1)
        kp3d = C.mirror_pose_points(obs.keypoints_3d)
        box = None if obs.box is None else (width - 1 - obs.box[2], obs.box[1],
                                            width - 1 - obs.box[0], obs.box[3])
        return replace(obs, keypoints_2d=kp2d, confidence=obs.confidence[list(C.POSE_FLIP)],
                       keypoints_3d=kp3d, box=box)

    def _average(self, obs: PartObservation, mirrored: list[PartObservation], width: int,
                 height: int) -> PartObservation:
        """``obs`` averaged with its match among the ``mirrored`` people (if any)."""
        match = [m for m in mirrored if m.box is not None and obs.box is not None
                 and box_iou(m.box, obs.box) > self.dedupe_iou]
        if not match:
            return obs
        m = max(match, key=lambda m: box_iou(m.box, obs.box))  # type: ignore[arg-type]
        kp2d = (obs.keypoints_2d + m.keypoints_2d) / 2
        conf = (obs.confidence + m.confidence) / 2
        return replace(obs, keypoints_2d=kp2d, confidence=conf,
                       keypoints_3d=(obs.keypoints_3d + m.keypoints_3d) / 2,  # type: ignore[operator]
                       box=landmark_box(kp2d, conf, 0.5, (width, height)) or obs.box,
                       score=body_score(conf))

    def _to_image(self, obs: PartObservation, used: Box | None, size: int, width: int,
                  height: int) -> PartObservation | None:
        """A person seen on a ``size``-pixel square crop ``used`` (None: the image itself),
        in the image, with landmarks outside it unseen; None below ``min_score``."""
        kp2d = obs.keypoints_2d
        if used is not None:
            kp2d = crop_to_image((kp2d + 0.5) / size, used)
        conf = np.where(points_inside(kp2d, width, height), obs.confidence,
                        np.minimum(obs.confidence, 0.1))
        box = landmark_box(kp2d, conf, 0.5, (width, height))
        score = body_score(conf)
        if box is None or score < self.min_score:
            return None
        return replace(obs, keypoints_2d=kp2d, confidence=conf, box=box, score=score)
