"""Reading a ``furpe reconstruct`` result folder as per-person frame sequences (tracks).

The layout is that of docs/output-format.md: an image gives ``NAME.json``; a video gives a
folder ``NAME/`` with ``video.json`` (``fps`` and a ``frames`` list of ``index``,
``timestamp``, ``file``, ``status``) and one ``frame_XXXXXX.json`` per frame. Each person of
a frame belongs to the track named by its ``track_id``; where that is ``null`` (images,
results written before tracking) the person's per-frame ``id`` stands for the track.

A frame's time is its ``timestamp``, else its index at the video's frame rate (30 frames/s
when the rate is unknown either). A video folder without ``video.json`` (an interrupted run)
is read from its frame files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np

from furpe.core.errors import FurpeError
from furpe.core.files import read_json
from furpe.io.outputs import frame_from_dict

_FRAME_FILE = re.compile(r"frame_(\d{6,})\.json")
_DEFAULT_FPS = 30.0


@dataclass
class Track:
    """One person over the frames of one result (an image or a video).

    Attributes:
        result: the result's name relative to the result folder (``"clip"``,
            ``"trip/beach"``), POSIX separators.
        track_id: the track's id (the person's ``id`` where the file has no ``track_id``).
        body_model: the body model the parameters are for (``"anny"``, ``"smplx"``).
        model_path: the model folder the result was made with (from its ``config``), if any.
        frame_indices: video frame index of each frame (0 for an image).
        times: (N,) seconds, increasing.
        params: per frame, block name -> array (as saved, unbatched).
        source: the input file the result came from.
        fps: the video's frame rate (None for an image or when unknown).
    """

    result: str
    track_id: int
    body_model: str
    frame_indices: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    params: list[dict[str, np.ndarray]] = field(default_factory=list)
    model_path: str | None = None
    source: str = ""
    fps: float | None = None

    @property
    def num_frames(self) -> int:
        return len(self.params)

    @property
    def name(self) -> str:
        """``<result>_track<id>``: the stem of the exported files."""
        return f"{self.result}_track{self.track_id}"


def _is_frame_doc(doc: Any) -> bool:
    return (isinstance(doc, dict) and "schema_version" in doc and "people" in doc
            and "status" in doc)


def _frame_time(index: int, timestamp: Any, fps: float | None) -> float:
    if timestamp is not None:
        return float(timestamp)
    return index / (fps if fps and fps > 0 else _DEFAULT_FPS)


class _Collector:
    """Frames of one result gathered into its tracks."""

    def __init__(self, result: str) -> None:
        self.result = result
        self.tracks: dict[int, Track] = {}

    def add(self, doc: dict[str, Any], path: Path, index: int, time: float,
            fps: float | None) -> None:
        if doc.get("status") != "ok":
            return
        try:
            frame = frame_from_dict(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise FurpeError(f"{path}: not a furpe result file ({exc})") from exc
        config = doc.get("config") or {}
        seen: set[int] = set()
        for k, person in enumerate(frame.people):
            tid = person.track_id if person.track_id is not None else k
            if tid in seen:  # one pose per track and frame
                continue
            seen.add(tid)
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = Track(
                    result=self.result, track_id=int(tid), body_model=str(frame.body_model),
                    model_path=config.get("model_path"), source=str(doc.get("source", "")),
                    fps=fps)
            elif track.body_model != frame.body_model:
                raise FurpeError(f"{path}: body model '{frame.body_model}' differs from the "
                                 f"earlier frames' ('{track.body_model}')")
            if track.times and time <= track.times[-1]:
                continue  # a repeated frame: keep the first
            track.frame_indices.append(index)
            track.times.append(time)
            track.params.append(dict(person.params))


def _video_tracks(folder: Path, result: str) -> list[Track]:
    """The tracks of a video result folder."""
    summary = read_json(folder / "video.json")
    collector = _Collector(result)
    if isinstance(summary, dict) and isinstance(summary.get("frames"), list):
        fps = float(summary["fps"]) if summary.get("fps") else None
        for entry in summary["frames"]:
            if entry.get("status") != "ok" or not entry.get("file"):
                continue
            path = folder / str(entry["file"])
            doc = read_json(path)
            if not _is_frame_doc(doc):
                raise FurpeError(f"{path}: missing or not a furpe frame file")
            index = int(entry.get("index", 0))
            collector.add(doc, path, index, _frame_time(index, entry.get("timestamp"), fps), fps)
    else:
        frames = sorted((int(m.group(1)), p) for p in folder.glob("frame_*.json")
                        if (m := _FRAME_FILE.fullmatch(p.name)))
        for index, path in frames:
            doc = read_json(path)
            if _is_frame_doc(doc):
                collector.add(doc, path, index, _frame_time(index, doc.get("timestamp"), None),
                              None)
    return [collector.tracks[k] for k in sorted(collector.tracks)]


def _image_tracks(path: Path, result: str) -> list[Track]:
    doc = read_json(path)
    collector = _Collector(result)
    if _is_frame_doc(doc) and doc.get("frame_index") is None:
        collector.add(doc, path, 0, 0.0, None)
    return [collector.tracks[k] for k in sorted(collector.tracks)]


def _is_video_folder(folder: Path) -> bool:
    return (folder / "video.json").is_file() or any(
        _FRAME_FILE.fullmatch(p.name) for p in folder.glob("frame_*.json"))


def _results(root: Path, rel: PurePosixPath) -> Iterator[tuple[Path, str, str]]:
    """``(path, kind, name)`` of every result under ``root`` (kind ``video`` or ``image``),
    sorted by name; sub-folders are searched (as ``--recursive`` writes them)."""
    for child in sorted(root.iterdir()):
        name = str(rel / child.stem) if child.is_file() else str(rel / child.name)
        if child.is_dir():
            if _is_video_folder(child):
                yield child, "video", name
            else:
                yield from _results(child, rel / child.name)
        elif child.suffix == ".json" and child.name != "video.json":
            yield child, "image", name


def read_tracks(path: str | Path) -> list[Track]:
    """Every track of a result folder (or of one video result folder, or one image's JSON).

    Raises :class:`FurpeError` when ``path`` does not exist or holds no result.
    """
    root = Path(path)
    if not root.exists():
        raise FurpeError(f"{path}: no such file or folder")
    if root.is_file():
        tracks = _image_tracks(root, root.stem)
    elif _is_video_folder(root):
        tracks = _video_tracks(root, root.name)
    else:
        tracks = []
        for item, kind, name in _results(root, PurePosixPath()):
            tracks += _video_tracks(item, name) if kind == "video" else _image_tracks(item, name)
    if not tracks:
        raise FurpeError(f"{path}: no furpe results with people found (expected NAME.json "
                         "files or video folders with video.json, as 'furpe reconstruct' "
                         "writes them)")
    return tracks
