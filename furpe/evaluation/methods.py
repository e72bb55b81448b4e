"""Methods that ``furpe evaluate`` runs on a dataset's samples.

A method turns one :class:`~furpe.datasets.base.Sample` into a
:class:`~furpe.datasets.base.Prediction`. ``--method experts`` (:class:`ExpertMethod`) is
furpe's reconstruction pipeline (part experts, whole-body fit, selection); another method (for
example a network checkpoint) plugs in through the registry and is then selectable by name::

    from furpe.core.registry import register

    @register("method", "mynet")
    class MyNet(Method):
        def __init__(self, config: ReconstructConfig) -> None: ...
        def predict(self, sample: Sample) -> Prediction: ...

A sample the method cannot handle (nobody found, an unsupported crop) raises a
:class:`~furpe.core.errors.FurpeError`; the harness records it as a failed sample.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from furpe.config import ReconstructConfig
from furpe.core.boxes import box_area, box_iou
from furpe.core.errors import FurpeError, NoPersonError
from furpe.datasets.base import Prediction, Sample

__all__ = ["Method", "ExpertMethod", "pick_person", "prediction_from_person"]


class Method(ABC):
    """A reconstruction method under evaluation."""

    #: Name on the command line (``--method NAME``).
    name: ClassVar[str]

    #: Topology of the predicted vertices (a body-model name, or "none").
    topology: str = "none"

    @abstractmethod
    def predict(self, sample: Sample) -> Prediction:
        """The method's estimate for ``sample`` (camera frame, metres); raises
        :class:`~furpe.core.errors.FurpeError` when it has none."""


# ---------------------------------------------------------------------------------------
# Picking the evaluated person
# ---------------------------------------------------------------------------------------

def pick_person(boxes: Sequence[Sequence[float]], gt_box: Sequence[float] | None) -> int:
    """Index of the detection to evaluate: the best IoU with ``gt_box``, else the largest.

    Raises :class:`NoPersonError` when there is no detection, or when a ground-truth box is
    given and no detection overlaps it (the method found somebody else).
    """
    if not boxes:
        raise NoPersonError("no person found")
    if gt_box is None:
        areas = [box_area(b) for b in boxes]
        return int(np.argmax(areas))
    ious = [box_iou(b, gt_box) for b in boxes]
    best = int(np.argmax(ious))
    if ious[best] <= 0.0:
        raise NoPersonError(f"none of the {len(boxes)} people found overlaps the ground-truth "
                            f"person box")
    return best


# ---------------------------------------------------------------------------------------
# furpe's own pipeline
# ---------------------------------------------------------------------------------------

def prediction_from_person(model: Any, vertices: np.ndarray, joints: np.ndarray,
                           accepted: dict[str, bool] | None = None,
                           seconds: float = 0.0) -> Prediction:
    """A :class:`Prediction` of a fitted body-model mesh: vertices, faces, the keypoints of
    every regressor convention of ``model`` (``coco``, ``mediapipe_pose``,
    ``mediapipe_hand_left``/``_right``, ...), computed from ``vertices`` and ``joints``, and the
    model's part vertex sets."""
    import torch

    from furpe.bodymodels.base import apply_regressor

    points = torch.cat([torch.as_tensor(vertices, dtype=torch.float32),
                        torch.as_tensor(joints, dtype=torch.float32)])[None]
    keypoints = {conv: apply_regressor(reg, points)[0].numpy().astype(np.float64)
                 for conv, reg in model.regressors.items()}
    return Prediction(
        topology=model.name,
        vertices=np.asarray(vertices, dtype=np.float64),
        faces=np.asarray(model.faces),
        keypoints=keypoints,
        part_vertices={k: np.asarray(v) for k, v in model.part_vertices.items()},
        accepted=dict(accepted or {}),
        seconds=float(seconds),
    )


class ExpertMethod(Method):
    """furpe's pipeline (:class:`furpe.pipeline.Reconstructor`): MediaPipe part experts, the
    whole-body fit and the selection scheme.

    Per sample: the image is read, the camera is the sample's intrinsics when it has them
    (else furpe's default from the image size), everyone is reconstructed, and the person whose
    box best overlaps ``sample.gt["box"]`` (else the largest) is returned. Hand and head crops
    (``crop="hand"``/``"head"``, e.g. FreiHAND and NoW) go through
    :meth:`~furpe.pipeline.Reconstructor.reconstruct_part`: the hand or face expert looks at the
    crop (or at ``gt["box"]`` when given) and the model is fitted to that part alone. The hand
    side is ``sample.meta["hand_side"]`` when the dataset knows it (FreiHAND: right), else the
    expert's handedness.
    """

    name: ClassVar[str] = "experts"

    def __init__(self, config: ReconstructConfig | None = None, reconstructor: Any = None) -> None:
        self.config = config or ReconstructConfig()
        if reconstructor is None:
            from furpe.pipeline import Reconstructor

            reconstructor = Reconstructor(self.config)
        self.reconstructor = reconstructor
        self.model = reconstructor.body_model
        self.topology = self.model.name

    def predict(self, sample: Sample) -> Prediction:
        """Reconstruct ``sample.image_path`` and return the matching person."""
        from furpe.io.inputs import read_image

        start = time.perf_counter()
        image = read_image(Path(sample.image_path))
        gt_box = sample.gt.get("box")
        if sample.crop in ("hand", "head"):
            side = sample.meta.get("hand_side")
            part = "face" if sample.crop == "head" else f"{side}_hand" if side else "hand"
            box = None if gt_box is None else tuple(float(x) for x in gt_box)
            frame = self.reconstructor.reconstruct_part(image, part, box=box, K=sample.intrinsics)
            person = frame.people[0]
            accepted = {p: bool(res.accepted) for p, res in person.parts.items()}
            return prediction_from_person(self.model, person.vertices, person.joints, accepted,
                                          seconds=time.perf_counter() - start)
        frame = self.reconstructor.reconstruct_image(image, K=sample.intrinsics)
        index = pick_person([p.box for p in frame.people],
                            None if gt_box is None else [float(x) for x in gt_box])
        person = frame.people[index]
        accepted = {part: bool(res.accepted) for part, res in person.parts.items()}
        return prediction_from_person(self.model, person.vertices, person.joints, accepted,
                                      seconds=time.perf_counter() - start)


class NetworkMethod(ExpertMethod):
    """A trained whole-body network (``method: network`` of the configuration: its
    ``checkpoint``, default the shipped one, and ``refine``). Whole images only: hand and
    head crops (FreiHAND, NoW) need the experts."""

    name: ClassVar[str] = "network"

    def __init__(self, config: ReconstructConfig | None = None, reconstructor: Any = None) -> None:
        config = config or ReconstructConfig()
        if config.method != "network":
            config = config.replace(method="network")
        super().__init__(config, reconstructor)

    def predict(self, sample: Sample) -> Prediction:
        if sample.crop in ("hand", "head"):
            raise FurpeError(f"the network reconstructs whole people; {sample.crop} crops "
                              "need --method experts")
        return super().predict(sample)
