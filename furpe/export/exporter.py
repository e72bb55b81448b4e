"""``furpe export``: every track of a result folder as animation files (glTF binary, BVH)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from furpe.bodymodels import BodyModel, load_body_model
from furpe.core.errors import FurpeError, SetupError
from furpe.export.bvh import write_bvh
from furpe.export.gltf import write_glb
from furpe.export.results import Track, read_tracks
from furpe.export.rig import track_rig
from furpe.io.console import progress_bar

#: The formats ``furpe export`` writes, by file extension.
FORMATS: tuple[str, ...] = ("glb", "bvh")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"glb,bvh"`` -> ``("glb", "bvh")``; raises :class:`FurpeError` on an unknown one."""
    names = tuple(dict.fromkeys(t.strip().lower().lstrip(".") for t in text.split(",")
                                if t.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise FurpeError(f"--format {text}: unknown format {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(FORMATS)} (comma-separated)")
    return names


def parse_max_influences(text: str) -> int | None:
    """``"all"`` -> None (every influence), else a positive integer."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise FurpeError(f"--max-influences {text}: expected a positive number or 'all'")
    return value


@dataclass
class ExportSummary:
    """What :func:`export_results` wrote."""

    files: list[Path] = field(default_factory=list)
    tracks: int = 0
    frames: int = 0
    out_dir: Path = Path(".")

    def line(self) -> str:
        return (f"furpe: exported {self.tracks} track{'s' if self.tracks != 1 else ''} "
                f"({self.frames} frames) to {len(self.files)} file"
                f"{'s' if len(self.files) != 1 else ''} in {self.out_dir}")


def _extras(track: Track, shape: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "body_model": track.body_model,
        "result": track.result,
        "track_id": track.track_id,
        "source": track.source,
        "fps": track.fps,
        "frame_indices": list(track.frame_indices),
        "shape": {k: [round(float(x), 6) for x in np.ravel(v)] for k, v in shape.items()},
        "world": "the result's camera frame turned to y up: (x, -y, -z); metres",
    }


def export_track(track: Track, model: BodyModel, out_dir: Path, *,
                 formats: Sequence[str] = FORMATS, max_influences: int | None = None,
                 tpose: bool = False) -> list[Path]:
    """Write ``OUT/<result>_track<id>.<format>`` for each format; returns the paths."""
    rig, motion = track_rig(model, track.params, track.times)
    written = []
    for fmt in formats:
        path = out_dir / f"{track.name}.{fmt}"
        if fmt == "glb":
            write_glb(path, rig, motion, name=track.name.rsplit("/", 1)[-1],
                      max_influences=max_influences, extras=_extras(track, rig.shape))
        elif fmt == "bvh":
            frame_time = 1.0 / track.fps if track.fps else None
            write_bvh(path, rig, motion, tpose=tpose, frame_time=frame_time)
        else:
            raise FurpeError(f"unknown export format '{fmt}'")
        written.append(path)
    return written


def export_results(results: str | Path, out_dir: str | Path, *,
                   formats: Sequence[str] = FORMATS, max_influences: int | None = None,
                   tpose: bool = False, model_path: str | Path | None = None,
                   device: str = "cpu", progress: bool = True) -> ExportSummary:
    """Export every track found in ``results`` (see :func:`read_tracks`) into ``out_dir``.

    The body model is the one each result names; SMPL-X needs its model folder:
    ``model_path``, else the one recorded in the result's configuration.
    """
    tracks = read_tracks(results)
    out = Path(out_dir)
    summary = ExportSummary(out_dir=out)
    models: dict[tuple[str, str | None], BodyModel] = {}
    with progress_bar(progress, total=len(tracks), desc="export", unit="track",
                      leave=False) as bar:
        for track in tracks:
            path = model_path if model_path is not None else track.model_path
            if track.body_model != "anny" and path is None:
                raise SetupError(f"{track.result}: body model '{track.body_model}' needs "
                                 "--model-path DIR, the folder with its model files")
            key = (track.body_model, None if track.body_model == "anny" else str(path))
            if key not in models:
                models[key] = load_body_model(track.body_model, key[1], device)
            summary.files += export_track(track, models[key], out, formats=formats,
                                          max_influences=max_influences, tpose=tpose)
            summary.tracks += 1
            summary.frames += track.num_frames
            bar.update(1)
    return summary
