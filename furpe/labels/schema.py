"""The label document: one JSON per labelled image or video frame (``docs/labels.md``).

A label is the reconstruction document of ``furpe reconstruct`` (:func:`frame_to_dict`:
body model, fitted parameters, camera, joints, observed and fitted 2D keypoints per part,
per-part selection scores and accept flags) plus, per person, what the experts reported
(``observations``: landmarks, 3D landmarks, blendshapes, crop boxes) and, per document, where
it comes from (``provenance``: furpe version, configuration, expert model files, source file
and frame, and whether the truth is the experts' or a synthetic render's).
"""
from __future__ import annotations

from typing import Any


import furpe
from furpe.experts.base import PartObservation, PersonObservation
from furpe.io.outputs import _list, _num, frame_to_dict, no_person_dict
from furpe.results import FrameResult

LABEL_SCHEMA_VERSION = "1.0"

#: Where a label's truth comes from.
SOURCES = ("experts", "synthetic")


def observation_dict(obs: PartObservation) -> dict[str, Any]:
    """An expert's observation of one part as JSON (pixels, metres, ARKit names)."""
    return {
        "expert": obs.expert,
        "convention": obs.convention,
        "score": _num(obs.score, 5),
        "box": None if obs.box is None else [_num(v, 2) for v in obs.box],
        "keypoints_2d": _list(obs.keypoints_2d, 3),
        "confidence": _list(obs.confidence, 4),
        "keypoints_3d": None if obs.keypoints_3d is None else _list(obs.keypoints_3d, 5),
        "blendshapes": None if obs.blendshapes is None else
        {k: _num(v, 5) for k, v in sorted(obs.blendshapes.items())},
    }


def provenance(source_file: str, frame_index: int | None, config: dict[str, Any],
               truth: str = "experts") -> dict[str, Any]:
    """Where a label comes from: furpe version, configuration, the shipped expert model
    files (name and sha256) and the source image or video frame."""
    from furpe.experts.models import MODEL_FILES

    if truth not in SOURCES:
        raise ValueError(f"truth must be one of {SOURCES}, not {truth!r}")
    return {
        "truth": truth,
        "furpe_version": furpe.__version__,
        "source_file": source_file,
        "frame_index": frame_index,
        "experts": list(config.get("experts", [])),
        "expert_models": {m.name: m.sha256 for m in MODEL_FILES.values()},
        "config": config,
    }


def label_document(key: str, frame: FrameResult | None, source_file: str,
                   frame_index: int | None, config: dict[str, Any], *,
                   image_size: tuple[int, int], image_file: str | None,
                   truth: str = "experts") -> dict[str, Any]:
    """The label of one image or frame (``frame`` None: nobody was found)."""
    if frame is None:
        doc = no_person_dict(source_file, image_size, frame_index, config=config)
    else:
        doc = frame_to_dict(frame, source_file, frame_index)
        for person, out in zip(frame.people, doc["people"]):
            obs: PersonObservation | None = person.observation
            out["observations"] = {} if obs is None else {
                part: observation_dict(o) for part, o in obs.parts.items()}
            del out["mesh"]
    doc.pop("config", None)
    doc["label_schema_version"] = LABEL_SCHEMA_VERSION
    doc["key"] = key
    doc["image_file"] = image_file
    doc["provenance"] = provenance(source_file, frame_index, config, truth)
    return doc
