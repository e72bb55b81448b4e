"""The part-expert interface.

An expert looks at an image (or at a crop placed by another expert) and returns
:class:`PartObservation` objects: named 2D landmarks in full-image pixel coordinates with
confidences, optional 3D landmarks in metres, and the crop box it looked at. The fitting code
only ever sees observations, so any expert (a MediaPipe model, a wrapper around SPIN or DECA
output files, ...) plugs in by returning them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from furpe.core.vocab import Part


@dataclass
class PartObservation:
    """One expert's estimate of one body part of one person.

    Attributes:
        part: which part this observes.
        convention: the landmark convention, a key of the correspondence tables
            (``"mediapipe_pose"``, ``"mediapipe_hand"``, ``"mediapipe_face"``, ...).
        keypoints_2d: (K, 2) pixel coordinates in the full image (x right, y down).
        confidence: (K,) per-landmark confidence in [0, 1]; 0 means "not observed".
        keypoints_3d: optional (K, 3) metric 3D landmarks in the expert's own frame, up to a
            rigid transform (x right, y down, z away from the camera, like the camera frame).
        box: crop box (x0, y0, x1, y1) in full-image pixels that the expert looked at.
        score: the expert's overall detection/presence confidence in [0, 1].
        expert: name of the expert that produced it.
        blendshapes: optional facial blendshape scores in [0, 1] by ARKit name
            (``jawOpen``, ``eyeBlinkLeft``, ...), for a face.
        world_convention: the correspondences of ``keypoints_3d`` when the expert's 3D
            skeleton has its own (``"mediapipe_pose_world"``, BlazePose Heavy's); None: the
            3D landmarks sit where the 2D ones do (``convention``).
    """

    part: Part
    convention: str
    keypoints_2d: np.ndarray
    confidence: np.ndarray
    keypoints_3d: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    score: float = 1.0
    expert: str = ""
    blendshapes: dict[str, float] | None = None
    world_convention: str | None = None

    def __post_init__(self) -> None:
        self.keypoints_2d = np.asarray(self.keypoints_2d, dtype=np.float64).reshape(-1, 2)
        self.confidence = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
        if self.confidence.shape[0] != self.keypoints_2d.shape[0]:
            raise ValueError("confidence and keypoints_2d differ in length")
        if self.keypoints_3d is not None:
            self.keypoints_3d = np.asarray(self.keypoints_3d, dtype=np.float64).reshape(-1, 3)
            if self.keypoints_3d.shape[0] != self.keypoints_2d.shape[0]:
                raise ValueError("keypoints_3d and keypoints_2d differ in length")


@dataclass
class PersonObservation:
    """Everything the experts saw of one person: at most one observation per part."""

    parts: dict[str, PartObservation] = field(default_factory=dict)

    def get(self, part: str) -> PartObservation | None:
        return self.parts.get(part)


class Expert(Protocol):
    """A part expert: ``name`` and ``parts`` describe it; ``observe`` runs it.

    Experts are built through the registry (kind ``expert``, see
    :mod:`furpe.core.registry`). A factory that takes ``max_people`` or ``video`` keywords
    gets them from the pipeline; a video-mode expert may keep tracking state between frames,
    forgotten by an optional ``reset()`` (called before each video), and may hold resources
    released by an optional ``close()``.
    """

    name: str
    parts: Sequence[Part]

    def observe(
        self, image: np.ndarray, people: list[PersonObservation]
    ) -> list[PersonObservation]:
        """Add this expert's observations to ``people`` (a list it may extend) and return it.

        ``image`` is an (H, W, 3) uint8 RGB array. A body expert typically appends one
        :class:`PersonObservation` per detected person; a hand or face expert fills in its
        parts of people already found, using their body landmarks to place its crops.
        """
        ...
