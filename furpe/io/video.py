"""Reading and writing videos with PyAV (FFmpeg).

Reading applies the container's display rotation (phone videos), so frames come out the way
a player shows them. Writing produces H.264 (``libx264``, ``yuv420p``) MP4 files; since
``yuv420p`` needs even dimensions, odd widths or heights are padded by one row/column that
repeats the edge pixels. The file is written under a temporary name in the destination
folder and renamed on :meth:`VideoWriter.close`, so the final name never holds a
half-written video; on an exception inside ``with VideoWriter(...)`` the temporary file is
removed.
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Iterator

import numpy as np

from furpe.core.errors import InputError

__all__ = ["VideoReader", "VideoWriter", "open_video"]

_DEFAULT_FPS = Fraction(30)
_ENCODERS = ("libx264", "libopenh264", "mpeg4")


def _av():
    import av  # noqa: PLC0415 - imported lazily: PyAV is slow to import

    return av


def _as_fraction(fps: float | Fraction) -> Fraction:
    if isinstance(fps, Fraction):
        return fps
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


class VideoReader:
    """An opened video: its properties and an iterator over RGB frames.

    Attributes:
        path: the file.
        fps: frames per second (average rate; 30 when the container does not say).
        frame_count: number of frames announced by the container, or None if unknown.
        width, height: frame size as displayed (after rotation).
    """

    def __init__(self, path: Path, container, stream) -> None:
        self.path = path
        self._container = container
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps: Fraction = Fraction(rate) if rate else _DEFAULT_FPS
        self.frame_count: int | None = int(stream.frames) if stream.frames else None
        w, h = int(stream.codec_context.width), int(stream.codec_context.height)
        self.width, self.height = w, h
        self._started = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames as read (before rotation is known: coded size)."""
        return self.width, self.height

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def frames(self) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) RGB uint8 frames in display order; once per reader."""
        for _, _, rgb in self.timed_frames():
            yield rgb

    def timed_frames(self) -> Iterator[tuple[int, float | None, np.ndarray]]:
        """Yield ``(index, time_seconds_or_None, rgb)`` for each frame; once per reader.

        A decoding error raises :class:`InputError` naming the file and the frame.
        """
        if self._started:
            raise RuntimeError("a VideoReader can be iterated only once")
        self._started = True
        av = _av()
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                rgb = frame.to_ndarray(format="rgb24")
                turns = int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
                if turns:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k=turns))
                if index == 0:
                    self.height, self.width = rgb.shape[:2]
                time = float(frame.time) if frame.time is not None else None
                yield index, time, rgb
                index += 1
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode video {self.path} at frame {index}: "
                             f"{_ffmpeg_message(exc)}") from None
        if index == 0:
            raise InputError(f"cannot decode video {self.path}: it has no decodable frames")

    def close(self) -> None:
        """Release the file."""
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ffmpeg_message(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).rstrip(".")


def open_video(path: str | os.PathLike[str]) -> VideoReader:
    """Open a video file for reading; raises :class:`InputError` if it cannot be decoded."""
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"cannot open video {p}: no such file")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open video {p}: not a decodable video "
                         f"({_ffmpeg_message(exc)})") from None
    except OSError as exc:
        raise InputError(f"cannot open video {p}: {exc.strerror or exc}") from None
    streams = list(container.streams.video)
    if not streams:
        container.close()
        raise InputError(f"cannot open video {p}: it has no video stream")
    stream = streams[0]
    stream.thread_type = "AUTO"
    if stream.codec_context is None or not stream.codec_context.width:
        container.close()
        raise InputError(f"cannot open video {p}: not a decodable video (unknown frame size)")
    return VideoReader(p, container, stream)


class VideoWriter:
    """Write RGB frames to an H.264 MP4 file, atomically (see the module docstring).

    Args:
        path: destination ``.mp4``.
        fps: frame rate (float or Fraction, e.g. the reader's ``fps``).
        size: (width, height) of the frames that will be written; odd values are padded to
            the next even number in the file.
        crf: x264 quality (lower is better, 18-23 is visually good).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float | Fraction,
                 size: tuple[int, int], crf: int = 20) -> None:
        av = _av()
        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"video size must be positive, got {size}")
        self.fps = _as_fraction(fps)
        self.encoded_size = (self.width + self.width % 2, self.height + self.height % 2)
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._closed = False
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            self._stream = self._add_stream(av, crf)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _add_stream(self, av, crf: int):
        last: Exception | None = None
        for codec in _ENCODERS:
            try:
                stream = self._container.add_stream(codec, rate=self.fps)
            except (av.error.FFmpegError, ValueError) as exc:
                last = exc
                continue
            stream.width, stream.height = self.encoded_size
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            return stream
        raise RuntimeError(f"no H.264/MPEG-4 encoder available in PyAV: {last}")

    def write(self, rgb: np.ndarray) -> None:
        """Append one (height, width, 3) RGB uint8 frame."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        rgb = np.asarray(rgb)
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, "
                             f"got {rgb.dtype} {rgb.shape}")
        pad_w, pad_h = self.encoded_size[0] - self.width, self.encoded_size[1] - self.height
        if pad_w or pad_h:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = _av().VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = Fraction(1) / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and move it to its final name."""
        if self._closed:
            return self.path
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard the video: close and delete the temporary file; the final name is untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
