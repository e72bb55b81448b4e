"""What a reconstruction returns: plain NumPy data, independent of how it is written out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PartResult:
    """The selection scheme's verdict on one part of one person.

    Attributes:
        part: ``"body"``, ``"left_hand"``, ``"right_hand"`` or ``"face"``.
        observed: an expert returned an observation of this part.
        accepted: the part estimate passed the selection thresholds and drives the mesh; a
            rejected part is reset to its neutral pose.
        scores: ``detector`` (expert confidence, 0..1), ``residual`` (median 2D reprojection
            error after the fit, as a fraction of the part's box size), ``plausibility``
            (0..1, 1 = pose well inside the prior), and ``score`` (their combination).
        reason: why the part was rejected ("" when accepted).
    """

    part: str
    observed: bool
    accepted: bool
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass
class KeypointSet:
    """Observed and fitted 2D keypoints of one landmark convention, in image pixels."""

    convention: str
    names: tuple[str, ...]
    observed: np.ndarray  # (K, 2)
    confidence: np.ndarray  # (K,)
    fitted: np.ndarray  # (K, 2): the fitted model's keypoints projected


@dataclass
class PersonResult:
    """One reconstructed person, in the camera frame (metres; x right, y down, z forward)."""

    params: dict[str, np.ndarray]  # block name -> (N, 3) rotations or (N,) coefficients
    vertices: np.ndarray  # (V, 3)
    joints: np.ndarray  # (J, 3), named by FrameResult.joint_names
    keypoints_2d: dict[str, KeypointSet]  # by part
    parts: dict[str, PartResult]  # by part
    box: tuple[float, float, float, float]  # person box (x0, y0, x1, y1) in pixels
    #: What the experts reported for this person, a :class:`furpe.experts.base.PersonObservation`
    #: (landmarks, 3D landmarks, blendshapes, crop boxes); None when rebuilt from a result file.
    observation: Any = None
    #: The person's identity across the frames of a video (:mod:`furpe.tracking`); None for
    #: single images.
    track_id: int | None = None


@dataclass
class FrameResult:
    """Everything reconstructed in one image or video frame."""

    image_size: tuple[int, int]  # (width, height)
    intrinsics: np.ndarray  # (3, 3)
    body_model: str
    joint_names: tuple[str, ...]
    faces: np.ndarray  # (F, 3) triangles of the body model
    people: list[PersonResult]
    timings: dict[str, float]  # seconds: "experts", "fit", "render", "total"
    config: dict = field(default_factory=dict)  # the ReconstructConfig that produced it
