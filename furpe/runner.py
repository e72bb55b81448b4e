"""Batch processing: images and videos in, result files out, one clear line per failure.

Output layout (relative to the output folder; ``NAME`` is the input's ``out_name``, see
:mod:`furpe.io.inputs`; details in ``docs/output-format.md``)::

    NAME.json                  image: the reconstruction (written last: its presence means
                               the image's other files are complete)
    NAME_overlay.png           image: the meshes drawn over the image      (unless --no-overlay)
    NAME_person<k>.ply         image: mesh of person k, k = 0, 1, ...      (unless --no-mesh)
    NAME/frame_<i>.json        video: one per decoded frame i (6 digits, from 0), also for
                               frames with nobody in them (status "no_person")
    NAME/frame_<i>_person<k>.ply   video: per-frame meshes                 (unless --no-mesh)
    NAME/video.json            video: summary (fps, frames, frames with nobody, failures,
                               tracks), written last
    NAME_overlay.mp4           video: the overlay video, same fps           (unless --no-overlay)

Overlay PNGs are not written per video frame (the MP4 holds them).

Resume (``resume=True``): an image whose ``NAME.json`` exists and is valid is skipped. A
video whose ``video.json`` says ``complete`` (and whose overlay MP4 exists when overlays are
on) is skipped; otherwise it is decoded again, frames whose JSON (and meshes, if requested)
exist are loaded instead of reconstructed (the video session takes them in order, so track
ids go on consistently and they still warm-start the next frame), and the overlay MP4 is
rebuilt from all frames.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

import numpy as np

import furpe
from furpe.core.errors import FurpeError, InputError, NoPersonError, SetupError
from furpe.core.lookahead import one_ahead
from furpe.io.inputs import ImagesAhead, InputItem, media_kind, read_image
from furpe.io.outputs import (SCHEMA_VERSION, frame_from_dict, no_person_dict, read_json,
                              read_ply, render_overlay, write_frame_outputs, write_image,
                              write_json)
from furpe.io.video import VideoWriter, open_video
from furpe.io.views import (VIEW_BACKGROUND, SideCamera, contact_sheet, render_side_view,
                            side_by_side)
from furpe.results import FrameResult
from furpe.io.console import format_error, internal_error, progress_bar, say

__all__ = ["RunSummary", "SetupError", "run", "format_error"]

ReconstructorFactory = Callable[[], Any]
#: The contact sheet of ``show`` and the size of its tiles (pixels).
SHEET_NAME = "contact_sheet.png"
SHEET_TILE = 320


@dataclass
class RunSummary:
    """Counts of a batch run.

    ``frames`` counts the video frames processed or already done; ``people`` counts the
    people of each image plus, for each video, the largest number in one frame.
    """

    out_dir: Path
    images_ok: int = 0
    images_failed: int = 0
    images_skipped: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_skipped: int = 0
    frames: int = 0
    people: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    #: The contact sheet written (``show``), else None.
    contact_sheet: Path | None = None

    @property
    def images(self) -> int:
        return self.images_ok + self.images_failed + self.images_skipped

    @property
    def videos(self) -> int:
        return self.videos_ok + self.videos_failed + self.videos_skipped

    @property
    def ok(self) -> int:
        return self.images_ok + self.videos_ok

    @property
    def failed(self) -> int:
        return self.images_failed + self.videos_failed

    @property
    def skipped(self) -> int:
        return self.images_skipped + self.videos_skipped

    @property
    def exit_code(self) -> int:
        """130 if interrupted, 1 if some input failed, else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def line(self) -> str:
        """One-line summary, e.g. ``furpe: 3 images, 1 video (120 frames): 2 ok, 2 failed;
        4 people; results in out``."""
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        what = []
        if self.images or not self.videos:
            what.append(plural(self.images, "image"))
        if self.videos:
            what.append(f"{plural(self.videos, 'video')} ({plural(self.frames, 'frame')})")
        status = [f"{self.ok} ok"]
        if self.skipped:
            status.append(f"{self.skipped} skipped (already done)")
        status.append(f"{self.failed} failed")
        head = "furpe: interrupted; " if self.interrupted else "furpe: "
        return (f"{head}{', '.join(what)}: {', '.join(status)}; "
                f"{plural(self.people, 'person') if self.people == 1 else f'{self.people} people'}; "
                f"results in {self.out_dir}")

    def _count(self, kind: str, outcome: str) -> None:
        attr = f"{kind}s_{outcome}"
        setattr(self, attr, getattr(self, attr) + 1)


class _Context:
    """Shared state of one run: options, the lazily built reconstructor, the summary."""

    def __init__(self, factory: ReconstructorFactory, out_dir: Path, overlay: bool, mesh: bool,
                 resume: bool, progress: bool, debug: bool, summary: RunSummary,
                 side_view: bool = False, show: bool = False) -> None:
        self.factory = factory
        self.out_dir = out_dir
        self.overlay = overlay
        self.side_view = side_view and overlay
        #: Contact-sheet tiles ``(caption, thumbnail)`` of the overlays (``show``), else None.
        self.tiles: list[tuple[str, np.ndarray]] | None = [] if show and overlay else None
        self.mesh = mesh
        self.resume = resume
        self.progress = progress
        self.debug = debug
        self.summary = summary
        #: The images, read one input ahead for the experts (``Reconstructor.prefetch``).
        self.images = ImagesAhead()
        self._reconstructor: Any = None

    def reconstructor(self) -> Any:
        """Build the reconstructor on first use; a failure raises :class:`SetupError`."""
        if self._reconstructor is None:
            try:
                self._reconstructor = self.factory()
            except SetupError:
                raise
            except FurpeError as exc:
                raise SetupError(str(exc)) from exc
            except Exception as exc:
                if self.debug:
                    raise
                raise SetupError(f"cannot build the reconstructor: {internal_error(exc)}") from exc
        return self._reconstructor

    def tile(self, caption: str, image: np.ndarray) -> None:
        """Keep a thumbnail of ``image`` for the contact sheet."""
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, SHEET_TILE / max(h, w))
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA) if scale < 1 else image
        assert self.tiles is not None
        self.tiles.append((caption, small))

    def fail(self, path: str, message: str) -> None:
        self.summary.failures.append((path, message))
        say(format_error(path, message))


def _split(out_name: str) -> tuple[str, str]:
    p = PurePosixPath(out_name)
    return str(p.parent) if str(p.parent) != "." else "", p.name


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

def _valid_frame_doc(doc: Any) -> bool:
    return (isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION
            and doc.get("status") in ("ok", "no_person") and isinstance(doc.get("people"), list))


def _image_done(item: InputItem, ctx: _Context) -> dict | None:
    """The document of an image finished by an earlier run (``resume``), else None."""
    if not ctx.resume:
        return None
    sub, stem = _split(item.out_name)
    doc = read_json(ctx.out_dir / sub / f"{stem}.json")
    return doc if _valid_frame_doc(doc) and doc["status"] == "ok" else None


def _process_image(item: InputItem, ctx: _Context, upcoming: InputItem | None = None) -> None:
    """Reconstruct one image; the experts start on ``upcoming`` (the next input, when it is
    an image to reconstruct) while this one is fitted (``Reconstructor.prefetch``)."""
    sub, stem = _split(item.out_name)
    out_dir = ctx.out_dir / sub
    doc = _image_done(item, ctx)
    if doc is not None:
        ctx.summary.images_skipped += 1
        ctx.summary.people += len(doc["people"])
        if ctx.tiles is not None and (out_dir / f"{stem}_overlay.png").is_file():
            ctx.tile(item.out_name, read_image(out_dir / f"{stem}_overlay.png"))
        return
    image = ctx.images.take(item)  # before the model loads: an unreadable input never loads it
    rec = ctx.reconstructor()
    ctx.images.look_ahead(image, upcoming, getattr(rec, "prefetch", None),
                          lambda it: _image_done(it, ctx) is None)
    result = rec.reconstruct_image(image)
    outs = write_frame_outputs(result, image, out_dir, stem, overlay=ctx.overlay,
                               mesh=ctx.mesh, source=str(item.path))
    if ctx.tiles is not None and outs.overlay is not None:
        ctx.tile(item.out_name, outs.overlay)
    ctx.summary.images_ok += 1
    ctx.summary.people += len(result.people)


# ---------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------

def _load_done_frame(frames_dir: Path, stem: str, ctx: _Context) -> tuple[dict, FrameResult | None] | None:
    """A frame finished by an earlier run: its document and result, or None to redo it."""
    doc = read_json(frames_dir / f"{stem}.json")
    if not _valid_frame_doc(doc):
        return None
    if doc["status"] == "no_person":
        return doc, None
    meshes: list[np.ndarray | None] = []
    faces = None
    for person in doc["people"]:
        name = person.get("mesh")
        verts = None
        if name and (frames_dir / name).is_file():
            try:
                verts, faces = read_ply(frames_dir / name)
            except (OSError, ValueError):
                verts = None
        if verts is None and ctx.mesh:
            return None  # a mesh file is missing: redo the frame
        meshes.append(verts)
    try:
        result = frame_from_dict(doc, meshes, faces)
    except (KeyError, TypeError, ValueError):
        return None
    if ctx.overlay and any(m is None for m in meshes):
        model = getattr(ctx.reconstructor(), "body_model", None)
        if model is None:
            return None
        try:
            for person in result.people:
                person.vertices = model.pose(person.params).vertices[0].cpu().numpy()
        except (FurpeError, KeyError, ValueError, RuntimeError):
            return None  # parameters the model cannot pose: the frame is reconstructed again
        result.faces = np.asarray(model.faces)
    return doc, result


def _config_of(reconstructor: Any) -> dict[str, Any]:
    """The configuration a reconstructor records (``{}`` for one without)."""
    config = getattr(reconstructor, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else {}


def _fit_frame(writer_size: tuple[int, int] | None, rgb: np.ndarray) -> np.ndarray:
    if writer_size is None or (rgb.shape[1], rgb.shape[0]) == writer_size:
        return rgb
    import cv2

    return cv2.resize(rgb, writer_size, interpolation=cv2.INTER_AREA)


def _frame_time(index: int, timestamp: float | None, fps: Any) -> float:
    """A frame's time in seconds: its timestamp, else its index at the video's rate."""
    if timestamp is not None:
        return float(timestamp)
    rate = float(fps or 0)
    return index / rate if rate > 0 else index / 30.0


def _without_meshes(result: FrameResult | None) -> FrameResult | None:
    """``result`` without its people's vertices (what a session needs of an older frame)."""
    if result is None:
        return None
    return dataclasses.replace(result, people=[
        dataclasses.replace(p, vertices=np.zeros((0, 3), np.float32)) for p in result.people])


def _note_tracks(tracks: dict[int, dict[str, int]], index: int,
                 result: FrameResult | None) -> None:
    """Count frame ``index``'s people in their tracks' spans (``id``, ``first_frame``,
    ``last_frame``, ``frames``)."""
    for person in [] if result is None else result.people:
        tid = getattr(person, "track_id", None)
        if tid is None:
            continue
        span = tracks.setdefault(int(tid), {"id": int(tid), "first_frame": index,
                                            "last_frame": index, "frames": 0})
        span["last_frame"] = max(span["last_frame"], index)
        span["frames"] += 1


def _side_view(result: FrameResult | None, size: tuple[int, int], camera: SideCamera
               ) -> np.ndarray:
    """The frame's people seen by the video's side camera (the plain background when
    nobody is there)."""
    people = [] if result is None else [p for p in result.people if len(p.vertices)]
    if not people:
        empty = np.empty((size[1], size[0], 3), np.uint8)
        empty[:] = VIEW_BACKGROUND
        return empty
    return render_side_view(result, *size, camera=camera.update([p.vertices for p in people]))


def _process_video(item: InputItem, ctx: _Context) -> None:
    frames_dir = ctx.out_dir / item.out_name
    mp4_name = f"{PurePosixPath(item.out_name).name}_overlay.mp4"
    mp4_path = frames_dir.parent / mp4_name
    summary_path = frames_dir / "video.json"

    if ctx.resume:
        old = read_json(summary_path)
        if (isinstance(old, dict) and old.get("complete") is True
                and old.get("schema_version") == SCHEMA_VERSION
                and (not ctx.overlay or mp4_path.is_file())):
            ctx.summary.videos_skipped += 1
            ctx.summary.frames += int(old.get("frame_count") or 0)
            ctx.summary.people += int(old.get("max_people") or 0)
            return

    start = time.perf_counter()
    reader = open_video(item.path)
    frames: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    writer: VideoWriter | None = None
    error: str | None = None
    max_people = 0
    size: tuple[int, int] | None = None
    session = None  # the reconstructor's video session, opened at the first frame to compute
    # Frames loaded from an earlier run before the session opened, with their times: the
    # session takes them first (track ids, warm starts, smoothing state).
    loaded: list[tuple[FrameResult | None, float]] = []
    tracks: dict[int, dict[str, int]] = {}  # track id -> its span, for video.json
    side: SideCamera | None = None  # the second view's camera (side_view)
    tiled = False  # the contact sheet has this video's first frame with people
    bar = progress_bar(ctx.progress, total=reader.frame_count, desc=item.path.name, unit="frame",
               leave=False)

    def document(complete: bool) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "furpe_version": furpe.__version__,
            "source": str(item.path),
            "fps": float(reader.fps),
            "fps_fraction": f"{reader.fps.numerator}/{reader.fps.denominator}",
            "frame_count": len(frames),
            "size": None if size is None else {"width": size[0], "height": size[1]},
            "complete": complete,
            "error": error,
            "overlay_video": f"../{mp4_name}" if ctx.overlay and complete else None,
            "max_people": max_people,
            "no_person_frames": [f["index"] for f in frames if f["status"] == "no_person"],
            "failed_frames": failed,
            "tracks": [tracks[k] for k in sorted(tracks)],
            "frames": frames,
            "timings": {"total": round(time.perf_counter() - start, 3)},
        }

    try:
        with reader:
            ahead = None  # the next frame's image, handed to the experts ahead of its turn
            for (index, timestamp, rgb), following in one_ahead(reader.timed_frames()):
                if size is None:
                    size = (rgb.shape[1], rgb.shape[0])
                stem = f"frame_{index:06d}"
                entry: dict[str, Any] = {
                    "index": index,
                    "timestamp": None if timestamp is None else round(timestamp, 6),
                    "file": f"{stem}.json",
                }
                shown = rgb
                frame_result: FrameResult | None = None
                t = _frame_time(index, timestamp, reader.fps)
                done = _load_done_frame(frames_dir, stem, ctx) if ctx.resume else None
                if done is not None:
                    doc, result = done
                    frame_result = result
                    entry.update(status=doc["status"], people=len(doc["people"]))
                    if result is not None and ctx.overlay:
                        shown = render_overlay(result, rgb)
                    if session is not None:
                        session.load_frame(result, t)
                    else:
                        if loaded:  # only the last one needs its meshes
                            loaded[-1] = (_without_meshes(loaded[-1][0]), loaded[-1][1])
                        loaded.append((result, t))
                    _note_tracks(tracks, index, result)
                else:
                    if session is None:
                        session = ctx.reconstructor().video()
                        for old, old_t in loaded:
                            session.load_frame(old, old_t)
                        loaded.clear()
                    prefetch = getattr(session, "prefetch", None)
                    if prefetch is not None and following is not None:
                        if ahead is not rgb:
                            prefetch(rgb)
                        ahead = None
                        if not (ctx.resume and (frames_dir / f"frame_{following[0]:06d}.json")
                                .is_file()):
                            ahead = following[2]
                            prefetch(ahead)
                    try:
                        result = session.reconstruct_frame(rgb, timestamp=t)
                    except NoPersonError as exc:
                        write_json(frames_dir / f"{stem}.json",
                                   no_person_dict(str(item.path), size, index,
                                                  message=str(exc) or "no person found",
                                                  timestamp=timestamp,
                                                  config=_config_of(ctx.reconstructor())))
                        entry.update(status="no_person", people=0)
                    except FurpeError as exc:
                        entry.update(status="failed", people=0, file=None, message=str(exc))
                        failed.append({"index": index, "message": str(exc)})
                    else:
                        outs = write_frame_outputs(
                            result, rgb, frames_dir, stem, overlay=ctx.overlay, mesh=ctx.mesh,
                            source=str(item.path), frame_index=index, timestamp=timestamp,
                            overlay_png=False)
                        if outs.overlay is not None:
                            shown = outs.overlay
                        frame_result = result
                        entry.update(status="ok", people=len(result.people))
                        _note_tracks(tracks, index, result)
                max_people = max(max_people, entry["people"])
                frames.append(entry)
                if ctx.overlay:
                    shown = _fit_frame(size, shown)
                    if ctx.side_view:
                        side = side or SideCamera(*size)
                        shown = side_by_side(shown, _side_view(frame_result, size, side))
                    if writer is None:
                        writer = VideoWriter(mp4_path, reader.fps,
                                             (shown.shape[1], shown.shape[0]))
                    writer.write(shown)
                    if ctx.tiles is not None and not tiled and frame_result is not None:
                        ctx.tile(f"{item.out_name} (frame {index})", shown)
                        tiled = True
                bar.update(1)
    except InputError as exc:
        # The file stopped decoding part-way: keep what was decoded, report the video failed.
        error = str(exc)
    except BaseException:
        bar.close()
        if writer is not None:
            writer.abort()
        if frames:
            error = "interrupted"
            try:
                write_json(summary_path, document(complete=False))
            except Exception:  # noqa: BLE001 - the original exception matters more
                pass
        raise
    bar.close()
    if writer is not None:
        writer.close()
    write_json(summary_path, document(complete=error is None))
    ctx.summary.frames += len(frames)
    ctx.summary.people += max_people
    if error is not None:
        raise InputError(error)
    if failed:
        first = failed[0]
        raise FurpeError(f"{len(failed)} of {len(frames)} frames failed (first: frame "
                         f"{first['index']}: {first['message']}); see {summary_path}")
    ctx.summary.videos_ok += 1


# ---------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------

def run(reconstructor_factory: ReconstructorFactory, items: Sequence[InputItem],
        out_dir: str | Path, *, overlay: bool = True, mesh: bool = True, resume: bool = False,
        progress: bool = True, debug: bool = False,
        input_errors: Sequence[tuple[str, str]] = (), side_view: bool = True,
        show: bool = False) -> RunSummary:
    """Reconstruct every item and write its results under ``out_dir``.

    ``reconstructor_factory()`` is called once, when the first item actually needs it (an
    input that cannot be read never loads the model). A :class:`FurpeError` on one item is
    printed as one line ``furpe: error: <path>: <message>`` on stderr and the batch goes
    on; so is an unexpected exception (as ``internal error: <Type>: <message>``) unless
    ``debug``, which re-raises it. ``input_errors`` are problems found while collecting the
    inputs, as ``(path, message)``: printed first and counted as failures. Ctrl-C stops the
    batch cleanly (files already written are complete) and sets ``interrupted``. A failure to
    build the reconstructor raises :class:`SetupError`.

    ``side_view``: a video's overlay MP4 shows, to the right of the overlay, the people seen
    by a second virtual camera from the side (:mod:`furpe.io.views`). ``show``: write
    ``contact_sheet.png``, the overlays of every input (a video's first frame with people) in
    a grid, at the end of the batch.
    """
    out = Path(out_dir)
    summary = RunSummary(out_dir=out)
    ctx = _Context(reconstructor_factory, out, overlay, mesh, resume, progress, debug, summary,
                   side_view=side_view, show=show)
    for path, message in input_errors:
        summary._count("video" if media_kind(path) == "video" else "image", "failed")
        ctx.fail(path, message)
    images_bar = progress_bar(progress and len(items) > 1, total=len(items), desc="furpe", unit="input")
    try:
        for i, item in enumerate(items):
            images_bar.set_postfix_str(item.path.name, refresh=False)
            try:
                if item.kind == "video":
                    _process_video(item, ctx)
                else:
                    _process_image(item, ctx, items[i + 1] if i + 1 < len(items) else None)
            except SetupError:
                raise
            except FurpeError as exc:
                summary._count(item.kind, "failed")
                ctx.fail(str(item.path), str(exc) or type(exc).__name__)
            except Exception as exc:
                if debug:
                    raise
                summary._count(item.kind, "failed")
                ctx.fail(str(item.path), internal_error(exc))
            images_bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        images_bar.close()
    if ctx.tiles:
        summary.contact_sheet = write_image(out / SHEET_NAME, contact_sheet(ctx.tiles))
    return summary
