"""The evaluation-dataset interface shared by every reader.

A dataset reader knows an official folder layout (which the user downloads; we never do),
turns it into :class:`Sample` objects with exact ground truth, scores a method's
:class:`Prediction` on one sample with the dataset's protocol, and, for benchmarks with an
evaluation server or an official script, writes the predictions in their layout.

Units: metres in, millimetres out. Every ``score`` value whose name ends in ``_mm`` is in
millimetres; F-scores are fractions in [0, 1].
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from furpe.core.errors import DatasetError

Crop = Literal["full", "hand", "head"]


@dataclass
class Sample:
    """One evaluation sample: an image of one person (or of one hand / one head) and its
    ground truth.

    Attributes:
        id: unique, stable identifier (used as the key of per-sample results and for resume).
        image_path: the image to run the method on.
        crop: what the image shows: ``"full"`` (a person), ``"hand"`` (a hand crop, e.g.
            FreiHAND) or ``"head"`` (a head crop, e.g. NoW).
        intrinsics: (3, 3) camera matrix when the dataset provides one, else ``None``.
        gt: ground-truth arrays, metres, camera frame unless a reader documents otherwise.
            Common keys: ``"vertices"`` (V, 3), ``"joints"`` (J, 3), ``"box"`` (4,) person box
            in pixels (x0, y0, x1, y1) used to pick the right person among detections.
        meta: anything else (sequence name, frame index, hand side, subject, ...).
    """

    id: str
    image_path: Path
    crop: Crop = "full"
    intrinsics: np.ndarray | None = None
    gt: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """A method's estimate for one sample, in the camera frame, metres.

    Attributes:
        topology: the vertex layout of ``vertices``: a body-model name (``"anny"``,
            ``"smplx"``, ``"smpl"``), ``"mano"``/``"flame"`` for part meshes, or ``"none"``.
        vertices: (V, 3) mesh vertices, or ``None`` when the method gives no mesh.
        faces: (F, 3) triangles of ``vertices`` (``None`` without a mesh).
        keypoints: 3D landmarks by convention name, each (K, 3) in metres, e.g.
            ``"coco"``, ``"mediapipe_pose"`` (33), ``"mediapipe_hand_left"`` /
            ``"mediapipe_hand_right"`` (21, FreiHAND/OpenPose hand order), ``"mediapipe_face"``.
        part_vertices: vertex indices of ``vertices`` by part (``"left_hand"``,
            ``"right_hand"``, ``"face"``, ``"body"``).
        accepted: the selection scheme's verdict per part (empty when not applicable).
        seconds: wall time the method spent on this sample.
    """

    topology: str
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)
    part_vertices: dict[str, np.ndarray] = field(default_factory=dict)
    accepted: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ProtocolOptions:
    """Explicit protocol choices; each reader documents which ones it uses.

    Attributes:
        alignment: how the non-PA errors (``mpjpe``-style values) are aligned:
            ``"standard"`` (the dataset's protocol; mid-hip for the body datasets),
            ``"mid_hip"`` or ``"none"`` (raw camera-frame errors). PA-* metrics always use
            Procrustes.
        gt_regressor: file of a (J, V_gt) joint regressor applied to ground-truth meshes (e.g.
            ``J_regressor_h36m.npy`` for 3DPW, ``SMPLX_to_J14.pkl`` for EHF).
        pred_regressor: file of a (J, V_pred) regressor applied to predicted meshes.
        model_path: folder with the licence-gated model files the ground truth needs (SMPL
            for 3DPW); never downloaded.
        part_ids: file mapping parts to ground-truth vertex indices (e.g. SMPL-X hand and
            face vertex ids), for per-part errors.
        extra: reader-specific options as ``key=value`` strings.
    """

    alignment: str = "standard"
    gt_regressor: Path | None = None
    pred_regressor: Path | None = None
    model_path: Path | None = None
    part_ids: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Dataset(ABC):
    """A benchmark: its samples, its protocol and its prediction writer."""

    #: Name used on the command line (``--dataset NAME``).
    name: ClassVar[str]
    #: One-line description of the protocol, printed next to the numbers.
    protocol: ClassVar[str]

    def __init__(self, root: str | Path, options: ProtocolOptions | None = None) -> None:
        self.root = Path(root)
        self.options = options or ProtocolOptions()
        if not self.root.is_dir():
            raise DatasetError(f"{self.name}: data root {self.root} is not a folder")

    @abstractmethod
    def samples(self) -> Sequence[Sample]:
        """All samples, in a fixed order. Raises :class:`DatasetError` naming a missing file."""

    @abstractmethod
    def score(self, sample: Sample, prediction: Prediction) -> dict[str, float]:
        """Metric values for one sample (``*_mm`` in millimetres). A metric the prediction
        cannot support (e.g. a vertex error on another topology) is left out, not faked."""

    def write_prediction(self, out_dir: Path, sample: Sample, prediction: Prediction) -> None:
        """Write one prediction in the benchmark's submission layout (default: nothing)."""

    def finalize(self, out_dir: Path) -> list[Path]:
        """Write whatever is collected across samples (e.g. FreiHAND's ``pred.json``); return
        the files written (default: none)."""
        return []


def require(path: Path, dataset: str, what: str = "") -> Path:
    """``path`` if it exists, else a :class:`DatasetError` that names it."""
    if not path.exists():
        extra = f" ({what})" if what else ""
        raise DatasetError(f"{dataset}: missing {path}{extra}")
    return path
