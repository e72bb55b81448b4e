"""The hand expert: MediaPipe HandLandmarker on crops placed at each person's wrists.

A hand's side comes from the body (which wrist it sits at), never from the landmarker's
handedness alone, which is a consistency check, and decides only where the body is unsure of
that wrist and the landmarker sure of its side. Where the wrist crop finds nothing, the
hands the landmarker finds on the whole image are given to the nearest wrist, and where that
finds nothing either, the hand network looks at the wrist's crop without the palm detector.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from furpe.core.boxes import (Box, as_rgb_uint8, crop_square, mostly_outside,
                              crop_to_image, hand_crop_box, points_inside, square_box)
from furpe.core.threads import side_by_side
from furpe.core.vocab import Part
from furpe.experts.base import PartObservation, PersonObservation
from furpe.experts.boxnets import HandBoxLandmarker
from furpe.experts.tasks import HandLandmarks, HandModel, TasksExpert

_HAND_POSE_INDICES = {
    # side: (wrist, elbow, pinky, index, shoulder)
    "left": (15, 13, 17, 19, 11),
    "right": (16, 14, 18, 20, 12),
}


def body_hand_crop_box(body: PartObservation, side: str, scale: float = 1.0) -> Box | None:
    """:func:`~furpe.core.boxes.hand_crop_box` for the ``side`` ("left"/"right") hand of a
    ``mediapipe_pose`` observation."""
    if body.convention != "mediapipe_pose":
        raise ValueError(f"need a mediapipe_pose body observation, got {body.convention!r}")
    wrist, elbow, pinky, index, _ = _HAND_POSE_INDICES[side]
    kp = body.keypoints_2d
    return hand_crop_box(kp[wrist], elbow=kp[elbow], knuckles=(kp[pinky] + kp[index]) / 2.0,
                         shoulder_width=float(np.linalg.norm(kp[11] - kp[12])), scale=scale)


def drop_shared_hand(person: PersonObservation, overlap: float = 0.3) -> None:
    """When both hand crops found the same physical hand (hands close together, or a wrong
    body wrist), keep it only for the side with the higher score: the landmarks of the two
    observations lie within ``overlap`` hand sizes."""
    left, right = person.parts.get("left_hand"), person.parts.get("right_hand")
    if left is None or right is None:
        return
    size = max(float(np.linalg.norm(np.ptp(left.keypoints_2d, axis=0))), 1.0)
    if np.median(np.linalg.norm(left.keypoints_2d - right.keypoints_2d, axis=1)) < overlap * size:
        del person.parts["left_hand" if left.score < right.score else "right_hand"]


class MediaPipeHandExpert(TasksExpert):
    """MediaPipe HandLandmarker on crops placed around each person's wrists.

    For every person with a ``mediapipe_pose`` body and each wrist with visibility at least
    ``min_wrist_visibility``, a square crop (:func:`body_hand_crop_box`, zero-padded outside
    the image) is resized to ``crop_size``, so small hands are upsampled, and given to the
    landmarker. Of the hands found, the one whose wrist is nearest the body's wrist is kept,
    unless it is further than ``max_wrist_distance`` hand lengths from it; if none is kept
    the crop is tried once more ``retry_scale`` times larger. With ``whole_image`` the hands
    found on the whole image are then given to wrists still without a hand (same distance
    rule). With ``box_landmarks``, a wrist still without a hand has the hand network look at
    its crop itself (:class:`~furpe.experts.boxnets.HandBoxLandmarker`: the palm detector
    misses hands that grip, overlap or fill the crop), its presence and the distance rule
    deciding (default: on for images, off in video mode, where it cost vtest.avi 16% of its
    frame rate for walkers' hands too small to find); not for hands shorter than
    ``min_box_hand_length`` pixels (by the body), where it gave 9-11 px "hands". Hands
    shorter than ``min_hand_length`` pixels (by the body) are not looked for at all: on
    vtest.avi's walkers the landmarker found none of the 132 under 10 px, at two runs
    each. When both wrists got the same physical hand it is kept for one side only.

    Returned parts (``"left_hand"`` / ``"right_hand"``, convention ``mediapipe_hand``):

    * the side is the body's (the wrist whose crop found the hand), except where the body's
      visibility of that wrist is below ``doubt_wrist`` and the landmarker's handedness,
      at least ``trust_handedness``, names the other side: then it is the landmarker's (a
      wrist BlazePose barely sees is often put on the other hand). ``score`` is the
      landmarker's handedness score when its side agrees with the one given, half of it
      when not;
    * ``confidence``: ``score`` per landmark, 0 outside the image;
    * ``keypoints_3d``: the world landmarks (metres, hand-centre origin, x right, y down,
      z away from the camera);
    * ``box``: the crop box used, in full-image pixels (may extend past the image).

    Existing hand parts of a person (from another expert) are left alone.
    """

    name = "mediapipe_hands"
    parts: Sequence[Part] = ("left_hand", "right_hand")

    def __init__(
        self,
        crop_size: int = 256,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_wrist_visibility: float = 0.1,
        max_wrist_distance: float = 1.0,
        retry_scale: float = 1.6,
        whole_image: bool = True,
        max_people: int = 20,
        box_landmarks: bool | None = None,
        video: bool = False,
        min_box_hand_length: float = 24.0,
        min_hand_length: float = 10.0,
        doubt_wrist: float = 0.5,
        trust_handedness: float = 0.8,
    ) -> None:
        self.crop_size = crop_size
        self.min_wrist_visibility = min_wrist_visibility
        self.max_wrist_distance = max_wrist_distance
        self.retry_scale = retry_scale
        self.whole_image = whole_image
        self.box_landmarks = (not video) if box_landmarks is None else box_landmarks
        self.min_box_hand_length = min_box_hand_length
        self.min_hand_length = min_hand_length
        self.doubt_wrist, self.trust_handedness = doubt_wrist, trust_handedness
        self._box_model = HandBoxLandmarker(min_presence_confidence)
        self._crop_model = HandModel(2, min_detection_confidence, min_presence_confidence)
        self._other_crop_model = HandModel(2, min_detection_confidence,
                                           min_presence_confidence)
        self._image_model = HandModel(2 * max_people, min_detection_confidence,
                                      min_presence_confidence)

    def observe(
        self, image: np.ndarray, people: list[PersonObservation]
    ) -> list[PersonObservation]:
        """Fill in the hands of ``people`` that have a ``mediapipe_pose`` body."""
        img = as_rgb_uint8(image)
        if img is None:
            return people
        missing: list[tuple[PersonObservation, str]] = []
        for person in people:
            body = person.get("body")
            if body is None or body.convention != "mediapipe_pose":
                continue
            sides = [side for side in ("left", "right")
                     if f"{side}_hand" not in person.parts and not self._too_small(body, side)]
            for obs in self._hands(img, body, sides):
                self._keep(person, obs)
            missing += [(person, side) for side in sides if f"{side}_hand" not in person.parts
                        and body.confidence[_HAND_POSE_INDICES[side][0]]
                        >= self.min_wrist_visibility]
        if missing and self.whole_image:
            self._assign_whole_image_hands(img, missing)
        if self.box_landmarks:
            for person, side in missing:
                if f"{side}_hand" not in person.parts:
                    self._keep(person, self._hand_at_wrist(img, person.parts["body"], side))
        for person in people:
            drop_shared_hand(person)
        return people

    def _keep(self, person: PersonObservation, obs: PartObservation | None) -> None:
        """Give ``obs`` to ``person`` as its side's hand unless that side has one from
        another expert, or a more confident one of this expert's."""
        if obs is None:
            return
        old = person.parts.get(obs.part)
        if old is None or (old.expert == self.name and obs.score > old.score):
            person.parts[obs.part] = obs

    def _hands(self, img: np.ndarray, body: PartObservation, sides: list[str]
               ) -> list[PartObservation | None]:
        """:meth:`observe_hand` for each of ``sides``; two sides side by side (two models,
        two cores)."""
        if len(sides) == 2:
            return list(side_by_side(
                lambda: self._observe_hand(img, body, sides[0], self._crop_model),
                lambda: self._observe_hand(img, body, sides[1], self._other_crop_model)))
        return [self._observe_hand(img, body, side, self._crop_model) for side in sides]

    def observe_hand(
        self, image: np.ndarray, body: PartObservation, side: str
    ) -> PartObservation | None:
        """The ``side`` ("left"/"right") hand of the person seen as ``body``, or None."""
        img = as_rgb_uint8(image)
        if img is None:
            return None
        return self._observe_hand(img, body, side, self._crop_model)

    def _observe_hand(self, img: np.ndarray, body: PartObservation, side: str,
                      model: HandModel) -> PartObservation | None:
        wrist_idx = _HAND_POSE_INDICES[side][0]
        if body.confidence[wrist_idx] < self.min_wrist_visibility or self._too_small(body, side):
            return None
        wrist = body.keypoints_2d[wrist_idx]
        for scale in (1.0, self.retry_scale):
            box = body_hand_crop_box(body, side, scale)
            if box is None:
                return None
            hand_length = (box[2] - box[0]) / (2.0 * scale)  # the box side is 2 * scale * L
            obs = self._detect_in_crop(img, box, wrist, hand_length, side, model,
                                       float(body.confidence[wrist_idx]))
            if obs is not None:
                return obs
        return None

    def _too_small(self, body: PartObservation, side: str) -> bool:
        """The ``side`` hand is shorter than ``min_hand_length`` pixels by the body."""
        box = body_hand_crop_box(body, side)
        return box is not None and (box[2] - box[0]) / 2.0 < self.min_hand_length

    def _hand_at_wrist(self, img: np.ndarray, body: PartObservation,
                       side: str) -> PartObservation | None:
        """The hand network straight on the ``side`` wrist's crop box (no palm detector)."""
        box = body_hand_crop_box(body, side)
        if box is None or mostly_outside(box, img.shape[1], img.shape[0]) \
                or (box[2] - box[0]) / 2.0 < self.min_box_hand_length:  # the side is 2 x L
            return None
        found = self._box_model.locate(img, box)
        if found is None:
            return None
        hand, kp2d = found
        wrist_idx = _HAND_POSE_INDICES[side][0]
        if not self._at_wrist(kp2d, body.keypoints_2d[wrist_idx], (box[2] - box[0]) / 2.0):
            return None
        return self._observation(hand, kp2d, box, side, img.shape[1], img.shape[0],
                                 float(body.confidence[wrist_idx]))

    def _at_wrist(self, kp2d: np.ndarray, wrist: np.ndarray, hand_length: float) -> bool:
        """The hand's wrist landmark lies within ``max_wrist_distance`` hand lengths of the
        body's ``wrist``."""
        return float(np.linalg.norm(kp2d[0] - wrist)) <= self.max_wrist_distance * hand_length

    def observe_hand_in_box(
        self, image: np.ndarray, box: Box | None = None, side: str | None = None
    ) -> PartObservation | None:
        """The most confident hand in ``box`` (default: the whole image), for hand crops such
        as FreiHAND's; if none, in the box ``retry_scale`` times larger (the palm detector
        misses a hand that fills its whole input). ``side`` ("left"/"right") forces the side;
        by default it is the landmarker's handedness. With ``box_landmarks``, where the palm
        detector finds no hand in either, the hand network looks at ``box`` itself."""
        img = as_rgb_uint8(image)
        if img is None:
            return None
        h, w = img.shape[:2]
        if box is None:
            box = square_box((w - 1) / 2, (h - 1) / 2, float(max(w, h)))
        for scale in (1.0, self.retry_scale):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            side_px = scale * max(box[2] - box[0], box[3] - box[1])
            obs = self._detect_in_crop(img, square_box(cx, cy, side_px), None, 0.0, side,
                                       self._crop_model)
            if obs is not None:
                return obs
        if self.box_landmarks and not mostly_outside(box, w, h):
            found = self._box_model.locate(img, box)
            if found is not None:
                return self._observation(*found, box, side, w, h)
        return None

    def _detect_in_crop(self, img: np.ndarray, box: Box, wrist: np.ndarray | None,
                        hand_length: float, side: str | None, model: HandModel,
                        wrist_visibility: float = 1.0) -> PartObservation | None:
        height, width = img.shape[:2]
        if mostly_outside(box, width, height):
            return None  # the crop barely touches the image
        crop, used = crop_square(img, box, self.crop_size)
        hands = [(h, crop_to_image(h.uv, used)) for h in model.process(crop)]
        if not hands:
            return None
        if wrist is None:
            hand, kp2d = max(hands, key=lambda item: item[0].side_score)
        else:
            hand, kp2d = min(hands, key=lambda item: float(np.linalg.norm(item[1][0] - wrist)))
            if not self._at_wrist(kp2d, wrist, hand_length):
                return None
        return self._observation(hand, kp2d, used, side, width, height, wrist_visibility)

    def _assign_whole_image_hands(self, img: np.ndarray,
                                  missing: list[tuple[PersonObservation, str]]) -> None:
        """Give the hands found on the whole image to the wrists still without one, nearest
        first, each hand once."""
        height, width = img.shape[:2]
        # MediaPipe's normalised coordinates put pixel centres at i + 0.5; ours at i.
        hands = [(h, h.uv * np.array([width, height]) - 0.5)
                 for h in self._image_model.process(img)]
        pairs = []
        for k, (person, side) in enumerate(missing):
            body = person.parts["body"]
            box = body_hand_crop_box(body, side)
            if box is None:
                continue
            wrist = body.keypoints_2d[_HAND_POSE_INDICES[side][0]]
            for j, (_, kp) in enumerate(hands):
                d = float(np.linalg.norm(kp[0] - wrist))
                if d <= self.max_wrist_distance * (box[2] - box[0]) / 2.0:
                    pairs.append((d, k, j))
        used_people, used_hands = set(), set()
        for _, k, j in sorted(pairs):
            if k in used_people or j in used_hands:
                continue
            used_people.add(k)
            used_hands.add(j)
            person, side = missing[k]
            hand, kp2d = hands[j]
            hand_box = (float(kp2d[:, 0].min()), float(kp2d[:, 1].min()),
                        float(kp2d[:, 0].max()), float(kp2d[:, 1].max()))
            visibility = person.parts["body"].confidence[_HAND_POSE_INDICES[side][0]]
            self._keep(person, self._observation(hand, kp2d, hand_box, side, width, height,
                                                 float(visibility)))

    def _observation(self, hand: HandLandmarks, kp2d: np.ndarray, box: Box, side: str | None,
                     width: int, height: int, wrist_visibility: float = 1.0) -> PartObservation:
        """The observation of ``hand`` as the ``side`` hand (None: the landmarker's side),
        whose body wrist has ``wrist_visibility`` (see the class: when the landmarker's side
        replaces it)."""
        if side and hand.side and hand.side != side and wrist_visibility < self.doubt_wrist \
                and hand.side_score >= self.trust_handedness:
            side = hand.side
        side = side or hand.side or "right"
        score = 1.0
        if hand.side:
            score = hand.side_score if hand.side == side else 0.5 * hand.side_score
        return PartObservation(
            part=f"{side}_hand",  # type: ignore[arg-type]
            convention="mediapipe_hand",
            keypoints_2d=kp2d,
            confidence=np.where(points_inside(kp2d, width, height), score, 0.0),
            keypoints_3d=hand.world,
            box=box,
            score=score,
            expert=self.name,
        )
