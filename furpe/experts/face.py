"""The face expert: MediaPipe FaceLandmarker (478 landmarks and 52 ARKit blendshapes) on a head
crop placed from each person's body landmarks."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from furpe.core import vocab as C
from furpe.core.boxes import (Box, as_rgb_uint8, crop_square, mostly_outside,
                              crop_to_image, face_crop_box, points_inside, square_box)
from furpe.core.vocab import Part
from furpe.experts.base import PartObservation, PersonObservation
from furpe.experts.tasks import FaceModel, TasksExpert

# (pose landmark, face landmark) pairs that should coincide: nose tip, eye centres (iris
# centres), mouth corners.
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
    """:func:`~furpe.core.boxes.face_crop_box` around the head landmarks (0-10) of a
    ``mediapipe_pose`` observation seen with visibility at least ``min_visibility``; None if
    fewer than 3 are."""
    if body.convention != "mediapipe_pose":
        raise ValueError(f"need a mediapipe_pose body observation, got {body.convention!r}")
    idx = np.array(C.POSE_FACE)
    keep = idx[body.confidence[idx] >= min_visibility]
    if len(keep) < 3:
        return None
    return face_crop_box(body.keypoints_2d[keep], scale=scale)


class MediaPipeFaceExpert(TasksExpert):
    """MediaPipe FaceLandmarker on a head crop of each person.

    For every person with a ``mediapipe_pose`` body showing at least three head landmarks
    (visibility >= ``min_head_visibility``), a square crop ``crop_scale`` times the head
    landmarks' extent (:func:`body_face_crop_box`) is resized to ``crop_size`` and given to
    the landmarker (one face).

    Returned part (``"face"``, convention ``mediapipe_face``, 478 landmarks):

    * ``blendshapes``: the 52 ARKit-named blendshape scores in [0, 1] (``jawOpen``,
      ``eyeBlinkLeft``, ...), which the fit uses for a body model's facial actions;
    * ``keypoints_3d`` is None (the landmarker's z has no metric scale);
    * ``score``: ``inside * agreement``: ``inside`` the fraction of landmarks inside the image,
      ``agreement = exp(-d^2 / (2 sigma^2))`` with ``d`` the mean distance between the face's
      nose tip, iris centres and mouth corners and the body's (those visible), ``sigma = 0.3``
      head extents. A face whose nose tip is more than half a head extent from the body's nose
      is rejected (another face in the crop);
    * ``confidence``: ``score`` for every landmark inside the image, 0 outside;
    * ``box``: the crop box used, in full-image pixels.

    An existing ``"face"`` part of a person (from another expert) is left alone.
    """

    name = "mediapipe_face"
    parts: Sequence[Part] = ("face",)

    def __init__(
        self,
        crop_size: int = 256,
        crop_scale: float = 2.2,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_head_visibility: float = 0.3,
    ) -> None:
        self.crop_size = crop_size
        self.crop_scale = crop_scale
        self.min_head_visibility = min_head_visibility
        self._model = FaceModel(min_detection_confidence, min_presence_confidence)

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
        head_extent = (box[2] - box[0]) / self.crop_scale
        vis = body.confidence
        if vis[0] >= self.min_head_visibility:
            if np.linalg.norm(kp2d[C.FACE_NOSE_TIP] - body.keypoints_2d[0]) > 0.5 * head_extent:
                return None
        dists = [float(np.linalg.norm(kp2d[f] - body.keypoints_2d[b]))
                 for b, f in _FACE_BODY_PAIRS if vis[b] >= self.min_head_visibility]
        agreement = 1.0
        if dists:
            agreement = math.exp(-0.5 * (float(np.mean(dists)) / (0.3 * head_extent)) ** 2)
        return self._observation(img, kp2d, used, agreement, blendshapes)

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
        return self._observation(img, found[0], found[1], 1.0, found[2])

    def _detect_in_crop(self, img: np.ndarray, box: Box
                        ) -> tuple[np.ndarray, Box, dict[str, float]] | None:
        """The 478 landmarks (full-image pixels) in a square crop, the crop, the blendshapes."""
        height, width = img.shape[:2]
        if mostly_outside(box, width, height):
            return None
        crop, used = crop_square(img, box, self.crop_size)
        faces = self._model.process(crop)
        if not faces or len(faces[0].uv) != C.FACE_MESH_REFINED_SIZE:
            return None
        return crop_to_image(faces[0].uv, used), used, faces[0].blendshapes

    def _observation(self, img: np.ndarray, kp2d: np.ndarray, used: Box, agreement: float,
                     blendshapes: dict[str, float]) -> PartObservation:
        inside = points_inside(kp2d, img.shape[1], img.shape[0])
        score = float(inside.mean()) * agreement
        return PartObservation(part="face", convention="mediapipe_face", keypoints_2d=kp2d,
                               confidence=np.where(inside, score, 0.0), keypoints_3d=None,
                               box=used, score=score, expert=self.name,
                               blendshapes=blendshapes or None)
