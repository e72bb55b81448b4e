"""Writing results: per-frame JSON, binary PLY meshes and overlay images.

Every file is written atomically: to a temporary file in the destination folder, then moved
over the final name with :func:`os.replace`. An interrupted run therefore never leaves a
truncated file under a final name. The layout and every JSON key are documented in
``docs/output-format.md``.
"""
from __future__ import annotations

import glob
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import furpe
from furpe.core.files import atomic_write, dumps, read_json, write_json
from furpe.results import FrameResult, KeypointSet, PartResult, PersonResult

__all__ = ["SCHEMA_VERSION", "UNITS", "COORDINATE_FRAME", "PERSON_COLORS", "FrameOutputs",
           "atomic_write", "dumps", "frame_to_dict", "frame_from_dict", "no_person_dict", "write_json",
           "read_json", "write_ply", "read_ply", "write_image", "render_overlay",
           "person_meshes", "write_frame_outputs"]

SCHEMA_VERSION = "1.1"

UNITS = {
    "length": "metres",
    "image": "pixels",
    "angle": "radians (rotation blocks are axis-angle vectors)",
    "time": "seconds",
}

COORDINATE_FRAME = {
    "camera": ("camera frame (OpenCV): origin at the camera centre, x right, y down, "
               "z forward (away from the camera); all 3D positions and meshes"),
    "image": ("pixels: origin at the top-left corner of the image, x right, y down; "
              "pixel centres at integer coordinates; all 2D positions and boxes"),
    "projection": "u = fx * x / z + cx, v = fy * y / z + cy",
}

#: Overlay colours per person (RGB in [0, 1]), cycled when there are more people.
PERSON_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.55, 0.70, 0.92),  # blue
    (0.95, 0.62, 0.45),  # orange
    (0.55, 0.85, 0.55),  # green
    (0.88, 0.55, 0.85),  # violet
    (0.95, 0.85, 0.45),  # yellow
    (0.50, 0.85, 0.85),  # cyan
    (0.90, 0.50, 0.55),  # red
    (0.75, 0.75, 0.75),  # grey
)


def write_ply(path: str | os.PathLike[str], vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a binary little-endian PLY mesh, atomically.

    Layout: ``element vertex V`` with ``float x, y, z`` (float32, in the order of
    ``vertices``, i.e. the body model's vertex order), then ``element face F`` with
    ``property list uchar int vertex_indices`` (a count byte 3, then three int32 indices).
    """
    v = np.asarray(vertices, dtype="<f4")
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if f.size == 0:
        f = f.reshape(0, 3)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("face indices out of range")
    header = (
        "ply\n"
        "format binary_little_endian 1.0\n"
        f"comment furpe {furpe.__version__}\n"
        f"element vertex {len(v)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\n"
        "property list uchar int vertex_indices\n"
        "end_header\n"
    ).encode("ascii")
    face_rec = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = f
    with atomic_write(path, "wb") as fh:
        fh.write(header)
        fh.write(np.ascontiguousarray(v).tobytes())
        fh.write(face_rec.tobytes())
    return Path(path)


def read_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by :func:`write_ply`: ``(vertices (V, 3) float32, faces (F, 3) int32)``."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in header if ln.startswith("element ")}
    nv, nf = counts.get("vertex", 0), counts.get("face", 0)
    body = data[end + len(b"end_header\n"):]
    vbytes = nv * 12
    face_dt = np.dtype([("n", "u1"), ("idx", "<i4", (3,))])
    if len(body) != vbytes + nf * face_dt.itemsize:
        raise ValueError(f"{path}: truncated or unexpected PLY layout")
    verts = np.frombuffer(body[:vbytes], dtype="<f4").reshape(nv, 3).copy()
    faces = np.frombuffer(body[vbytes:], dtype=face_dt)
    if nf and not np.all(faces["n"] == 3):
        raise ValueError(f"{path}: only triangle faces are supported")
    return verts, faces["idx"].astype(np.int32).copy()


def write_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) RGB uint8 image (format from the extension, e.g. .png), atomically."""
    import cv2

    p = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(p.suffix or ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"cannot encode image as {p.suffix}")
    with atomic_write(p, "wb") as fh:
        fh.write(buf.tobytes())
    return p


# ---------------------------------------------------------------------------------------
# JSON conversion
# ---------------------------------------------------------------------------------------

def _num(x: Any, digits: int) -> float | None:
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _list(a: Any, digits: int = 6) -> Any:
    """Nested lists of rounded floats; NaN/inf become null."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return _num(arr, digits)
    rounded = np.round(arr, digits)
    out = rounded.tolist()
    if np.isfinite(arr).all():
        return out

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v if math.isfinite(v) else None

    return clean(out)


def _keypoints_dict(kp: KeypointSet) -> dict[str, Any]:
    return {
        "convention": kp.convention,
        "names": list(kp.names),
        "observed": _list(kp.observed, 3),
        "confidence": _list(kp.confidence, 4),
        "fitted": _list(kp.fitted, 3),
    }


def _part_dict(part: PartResult) -> dict[str, Any]:
    return {
        "observed": bool(part.observed),
        "accepted": bool(part.accepted),
        "scores": {k: _num(v, 5) for k, v in part.scores.items()},
        "reason": part.reason,
    }


def _header(source: str, frame_index: int | None, timestamp: float | None) -> dict[str, Any]:
    head: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "furpe_version": furpe.__version__,
        "source": source,
        "frame_index": frame_index,
    }
    if frame_index is not None:
        head["timestamp"] = None if timestamp is None else round(float(timestamp), 6)
    head["units"] = UNITS
    head["coordinate_frame"] = COORDINATE_FRAME
    return head


def frame_to_dict(result: FrameResult, source: str, frame_index: int | None = None, *,
                  mesh_files: Sequence[str | None] | None = None,
                  timestamp: float | None = None) -> dict[str, Any]:
    """The JSON document of one image or video frame (see docs/output-format.md).

    ``mesh_files`` gives, per person, the PLY file name (relative to the JSON's folder) or
    None; ``timestamp`` is the video frame's presentation time in seconds.
    """
    K = np.asarray(result.intrinsics, dtype=np.float64)
    width, height = (int(v) for v in result.image_size)
    joint_names = list(result.joint_names)
    people = []
    for k, person in enumerate(result.people):
        joints = np.asarray(person.joints, dtype=np.float64)
        if len(joint_names) != len(joints):
            raise ValueError(f"person {k}: {len(joints)} joints but {len(joint_names)} joint names")
        people.append({
            "id": k,
            "track_id": None if person.track_id is None else int(person.track_id),
            "box": [_num(v, 2) for v in person.box],
            "params": {name: _list(value, 6) for name, value in person.params.items()},
            "joints": {name: _list(joints[j], 6) for j, name in enumerate(joint_names)},
            "keypoints_2d": {part: _keypoints_dict(kp) for part, kp in person.keypoints_2d.items()},
            "parts": {name: _part_dict(p) for name, p in person.parts.items()},
            "mesh": (mesh_files[k] if mesh_files is not None and k < len(mesh_files) else None),
        })
    doc = _header(source, frame_index, timestamp)
    doc.update({
        "status": "ok",
        "image": {"width": width, "height": height},
        "camera": {
            "fx": _num(K[0, 0], 4), "fy": _num(K[1, 1], 4),
            "cx": _num(K[0, 2], 4), "cy": _num(K[1, 2], 4),
            "matrix": _list(K, 6),
        },
        "body_model": result.body_model,
        "timings": {k: _num(v, 4) for k, v in result.timings.items()},
        "people": people,
        "config": result.config,
    })
    return doc


def no_person_dict(source: str, image_size: tuple[int, int], frame_index: int | None = None, *,
                   message: str = "no person found", timestamp: float | None = None,
                   config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document of a video frame in which nobody was found (``status: no_person``)."""
    doc = _header(source, frame_index, timestamp)
    doc.update({
        "status": "no_person",
        "message": message,
        "image": {"width": int(image_size[0]), "height": int(image_size[1])},
        "camera": None,
        "body_model": None,
        "timings": {},
        "people": [],
        "config": config or {},
    })
    return doc


def _array(value: Any, dtype=np.float32) -> np.ndarray:
    if value is None:
        return np.full((), np.nan, dtype=dtype)
    if isinstance(value, list):
        def clean(v: Any) -> Any:
            return [clean(x) for x in v] if isinstance(v, list) else (np.nan if v is None else v)
        value = clean(value)
    return np.asarray(value, dtype=dtype)


def frame_from_dict(doc: dict[str, Any], meshes: Sequence[np.ndarray | None] | None = None,
                    faces: np.ndarray | None = None) -> FrameResult:
    """Rebuild a :class:`FrameResult` from a ``status: ok`` JSON document.

    JSON does not hold the meshes: pass each person's vertices in ``meshes`` (e.g. read from
    the PLY files) and the triangles in ``faces``; missing ones become empty arrays.
    Values are as rounded in the file.
    """
    if doc.get("status") != "ok":
        raise ValueError("only documents with status 'ok' describe a reconstruction")
    joint_names: tuple[str, ...] = ()
    people = []
    for k, pd in enumerate(doc["people"]):
        names = tuple(pd["joints"].keys())
        joint_names = joint_names or names
        joints = _array([pd["joints"][n] for n in joint_names]).reshape(-1, 3)
        verts = meshes[k] if meshes is not None and k < len(meshes) else None
        people.append(PersonResult(
            params={name: _array(v) for name, v in pd["params"].items()},
            vertices=np.zeros((0, 3), np.float32) if verts is None else np.asarray(verts),
            joints=joints,
            keypoints_2d={
                part: KeypointSet(
                    convention=kd["convention"], names=tuple(kd["names"]),
                    observed=_array(kd["observed"]).reshape(-1, 2),
                    confidence=_array(kd["confidence"]).reshape(-1),
                    fitted=_array(kd["fitted"]).reshape(-1, 2),
                ) for part, kd in pd["keypoints_2d"].items()
            },
            parts={
                name: PartResult(part=name, observed=p["observed"], accepted=p["accepted"],
                                 scores={s: (math.nan if v is None else float(v))
                                         for s, v in p["scores"].items()},
                                 reason=p["reason"])
                for name, p in pd["parts"].items()
            },
            box=tuple(math.nan if v is None else float(v) for v in pd["box"]),  # type: ignore[arg-type]
            track_id=None if pd.get("track_id") is None else int(pd["track_id"]),
        ))
    return FrameResult(
        image_size=(int(doc["image"]["width"]), int(doc["image"]["height"])),
        intrinsics=_array(doc["camera"]["matrix"], np.float64).reshape(3, 3),
        body_model=doc["body_model"],
        joint_names=joint_names,
        faces=np.zeros((0, 3), np.int32) if faces is None else np.asarray(faces),
        people=people,
        timings={k: float(v) for k, v in doc.get("timings", {}).items() if v is not None},
        config=doc.get("config") or {},
    )


# ---------------------------------------------------------------------------------------
# Overlays and per-frame outputs
# ---------------------------------------------------------------------------------------

def person_meshes(result: FrameResult) -> list[Any]:
    """One :class:`furpe.render.Mesh` per person, each with its own colour."""
    from furpe.render import Mesh

    return [Mesh(vertices=np.asarray(p.vertices), faces=np.asarray(result.faces),
                 color=PERSON_COLORS[(k if p.track_id is None else p.track_id)
                                     % len(PERSON_COLORS)])
            for k, p in enumerate(result.people) if len(p.vertices)]


def render_overlay(result: FrameResult, image: np.ndarray, backend: str = "auto") -> np.ndarray:
    """All people's meshes over ``image``; records the time in ``result.timings["render"]``."""
    from furpe.render import overlay

    start = time.perf_counter()
    meshes = person_meshes(result)
    out = overlay(image, meshes, result.intrinsics, backend=backend) if meshes else image.copy()
    result.timings["render"] = time.perf_counter() - start
    return out


@dataclass
class FrameOutputs:
    """What :func:`write_frame_outputs` wrote.

    Attributes:
        files: ``"json"``, ``"overlay"`` and ``"mesh<k>"`` -> path of each file written.
        overlay: the rendered overlay image (None when not rendered), for reuse (videos).
        document: the JSON document written.
    """

    files: dict[str, Path] = field(default_factory=dict)
    overlay: np.ndarray | None = None
    document: dict[str, Any] = field(default_factory=dict)


def _remove_stale_meshes(out_dir: Path, stem: str, count: int) -> None:
    """Delete ``<stem>_person<k>.ply`` left by an earlier run that found more people."""
    pattern = re.compile(re.escape(stem) + r"_person(\d+)\.ply")
    for path in out_dir.glob(glob.escape(stem) + "_person*.ply"):
        m = pattern.fullmatch(path.name)
        if m and int(m.group(1)) >= count:
            path.unlink(missing_ok=True)


def write_frame_outputs(result: FrameResult, image: np.ndarray, out_dir: Path, stem: str,
                        overlay: bool = True, mesh: bool = True, *, source: str | None = None,
                        frame_index: int | None = None, timestamp: float | None = None,
                        overlay_png: bool = True, backend: str = "auto") -> FrameOutputs:
    """Write the results of one image or frame into ``out_dir``.

    Files: ``<stem>_person<k>.ply`` per person (``mesh``), ``<stem>_overlay.png``
    (``overlay`` and ``overlay_png``; with ``overlay_png=False`` the overlay is only
    rendered and returned, as for video frames), and ``<stem>.json`` **last**, so an
    existing JSON means the other files of the frame are complete. The render time is
    stored in ``result.timings["render"]`` before the JSON is written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = FrameOutputs()
    mesh_files: list[str | None] = [None] * len(result.people)
    if mesh:
        for k, person in enumerate(result.people):
            name = f"{stem}_person{k}.ply"
            written.files[f"mesh{k}"] = write_ply(out_dir / name, person.vertices, result.faces)
            mesh_files[k] = name
        _remove_stale_meshes(out_dir, stem, len(result.people))
    if overlay:
        written.overlay = render_overlay(result, image, backend=backend)
        if overlay_png:
            written.files["overlay"] = write_image(out_dir / f"{stem}_overlay.png", written.overlay)
    doc = frame_to_dict(result, source if source is not None else stem, frame_index,
                        mesh_files=mesh_files, timestamp=timestamp)
    written.files["json"] = write_json(out_dir / f"{stem}.json", doc)
    written.document = doc
    return written
