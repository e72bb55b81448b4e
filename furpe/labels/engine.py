"""``furpe label``: the experts, the fit and the selection scheme as a data engine.

Every input image, and every ``every``-th frame of every input video, becomes one sample
``KEY.json`` (the label, :mod:`furpe.labels.schema`) + ``KEY.jpg`` (the image) in WebDataset
shards (:mod:`furpe.labels.shards`). Each frame is reconstructed on its own (no warm start
from the previous frame), so a label does not depend on where a run was interrupted. Rejected
parts keep their fitted values, flagged: training chooses what to use.

* **Resume**: the keys of the complete shards in the output folder are skipped, so a killed
  run restarted with the same command labels each (input, frame) exactly once. A frame in
  which nobody is found is stored too (``status: no_person``, no image), so it is not redone;
  an input that cannot be read is reported and retried by the next run.
* **Split**: ``part/parts`` (``--shard i/n``, or torchrun's ``RANK``/``WORLD_SIZE``) takes
  every ``parts``-th input from ``part`` on, in the sorted input order; each part writes its
  own shards and ``index-<part>of<parts>.json``; ``index.json`` merges the parts' indexes.
* **Workers**: ``workers`` processes on one machine, one torch thread each; the main process
  writes the shards. With one worker the experts look one frame ahead in a background thread
  (``Reconstructor.prefetch``) while torch fits on one thread.
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing as mp
import os
import queue
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from furpe.core.errors import FurpeError, NoPersonError
from furpe.core.files import read_json, write_json
from furpe.core.lookahead import one_ahead
from furpe.core.vocab import PARTS
from furpe.io.console import format_error, internal_error, progress_bar, say
from furpe.io.inputs import ImagesAhead, InputItem, read_image
from furpe.labels.schema import LABEL_SCHEMA_VERSION, label_document
from furpe.labels.shards import ShardWriter, iter_samples, list_shards, shard_keys

ReconstructorFactory = Callable[[], Any]


def unit_key(out_name: str, frame_index: int | None) -> str:
    """The sample key of an input (and frame): its name made safe (no dots or slashes),
    a hash of the full name so that distinct inputs never share a key, the frame."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", out_name)[-48:].strip("_") or "input"
    digest = hashlib.sha1(out_name.encode()).hexdigest()[:8]
    return f"{safe}_{digest}" + ("" if frame_index is None else f"_f{frame_index:06d}")


def parse_split(text: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)`` with ``0 <= i < n``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise FurpeError(f"--shard {text}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def launcher_split() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when started by torchrun with more than one process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None


def split_items(items: Sequence[InputItem], part: int, parts: int) -> list[InputItem]:
    """Every ``parts``-th input from ``part`` on, in the order of their output names."""
    ordered = sorted(items, key=lambda it: it.out_name)
    return ordered[part::parts]


@dataclass
class Sample:
    """One labelled image or frame, ready for a shard."""

    key: str
    files: dict[str, Any]
    people: int
    accepted: dict[str, int]


@dataclass
class Failure:
    source: str
    message: str


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise FurpeError("could not encode the image as JPEG")
    return buf.tobytes()


class Labeller:
    """Labels inputs in this process with the reconstructor ``factory()`` builds (once)."""

    def __init__(self, factory: ReconstructorFactory, every: int = 1, quality: int = 95) -> None:
        self.factory = factory
        self.every = every
        self.quality = quality
        self._rec: Any = None
        self._config: dict[str, Any] = {}
        #: The images, read one input ahead for the experts (``Reconstructor.prefetch``).
        self._images = ImagesAhead()

    @property
    def reconstructor(self) -> Any:
        if self._rec is None:
            self._rec = self.factory()
            self._config = self._rec.config.to_dict()
        return self._rec

    def label_frame(self, rgb: np.ndarray, source: str, key: str,
                    frame_index: int | None) -> Sample:
        rec = self.reconstructor
        config = self._config
        try:
            frame = rec.reconstruct_image(rgb, reset_rejected=False)
        except NoPersonError:
            frame = None
        size = (int(rgb.shape[1]), int(rgb.shape[0]))
        doc = label_document(key, frame, source, frame_index, config, image_size=size,
                             image_file=None if frame is None else f"{key}.jpg")
        files: dict[str, Any] = {"json": doc}
        accepted = {p: 0 for p in PARTS}
        if frame is not None:
            files["jpg"] = encode_jpeg(rgb, self.quality)
            for person in frame.people:
                for p, verdict in person.parts.items():
                    accepted[p] += int(verdict.accepted)
        return Sample(key, files, 0 if frame is None else len(frame.people), accepted)

    def label(self, item: InputItem, skip: frozenset[str],
              upcoming: InputItem | None = None) -> Iterator[Sample | Failure]:
        """The samples of one input (its keys in ``skip`` left out). When the reconstructor
        has ``prefetch``, its experts look one frame ahead: at the next frame to label, or
        at ``upcoming`` (the next input) when it is an image."""
        source = str(item.path)
        try:
            if item.kind == "image":
                rgb = self._images.take(item)
                self._images.look_ahead(rgb, upcoming, self._prefetch)
                yield self.label_frame(rgb, source, unit_key(item.out_name, None), None)
                return
            from furpe.io.video import open_video

            with open_video(item.path) as video:
                frames = ((index, rgb) for index, _, rgb in video.timed_frames()
                          if not index % self.every
                          and unit_key(item.out_name, index) not in skip)
                ahead_rgb = None
                for (index, rgb), following in one_ahead(frames):
                    if following is not None and self._prefetch:
                        self._start(rgb, ahead_rgb is rgb, following[1])
                        ahead_rgb = following[1]
                    yield self.label_frame(rgb, source, unit_key(item.out_name, index), index)
        except FurpeError as exc:
            yield Failure(source, str(exc))
        except OSError as exc:
            yield Failure(source, exc.strerror or str(exc))

    @property
    def _prefetch(self) -> Callable[[np.ndarray], None] | None:
        return getattr(self.reconstructor, "prefetch", None)

    def _start(self, rgb: np.ndarray, prefetched: bool, following: np.ndarray) -> None:
        """Hand ``rgb`` (unless already handed over) and then ``following`` to the experts."""
        prefetch = self._prefetch
        assert prefetch is not None
        if not prefetched:
            prefetch(rgb)
        prefetch(following)


def _worker(factory: ReconstructorFactory, every: int, quality: int, jobs: Any,
            results: Any) -> None:
    """A worker process: label the inputs of ``jobs`` until a None, post to ``results``."""
    import torch

    torch.set_num_threads(1)
    labeller = Labeller(factory, every, quality)
    while True:
        job = jobs.get()
        if job is None:
            return
        index, item, skip = job
        try:
            for out in labeller.label(item, skip):
                results.put(out)
        except Exception as exc:  # one line for the user, the run goes on
            results.put(Failure(str(item.path), internal_error(exc)))
        results.put(("done", index))


@dataclass
class LabelSummary:
    """Counts of a labelling run (this part of it)."""

    out_dir: Path
    part: int = 0
    parts: int = 1
    skipped: int = 0
    samples: int = 0
    empty: int = 0
    people: int = 0
    accepted: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PARTS})
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failures else 0)

    def line(self) -> str:
        part = f" (part {self.part}/{self.parts})" if self.parts > 1 else ""
        acc = ", ".join(f"{p} {n}" for p, n in self.accepted.items())
        text = (f"labelled {self.samples} images/frames{part} in {self.seconds:.0f} s: "
                f"{self.people} people ({self.empty} images/frames with nobody); "
                f"accepted parts: {acc}")
        if self.skipped:
            text += f"; {self.skipped} inputs already labelled"
        if self.failures:
            text += f"; {len(self.failures)} failed"
        if self.interrupted:
            text += "; interrupted (run the same command again to finish)"
        return text + f"; shards in {self.out_dir}"


def done_keys(out_dir: Path) -> set[str]:
    """The keys of every complete shard in ``out_dir`` (a damaged shard is an error)."""
    keys: set[str] = set()
    for path in list_shards(out_dir):
        keys.update(shard_keys(path))
    return keys


def label(items: Sequence[InputItem], out_dir: str | os.PathLike[str],
          factory: ReconstructorFactory | None = None, *, config: Any = None,
          part: int = 0, parts: int = 1, workers: int = 1, shard_size: int = 1000,
          every: int = 1, quality: int = 95, progress: bool = True,
          input_errors: Sequence[tuple[str, str]] = ()) -> LabelSummary:
    """Label ``items`` (this part's share of them) into shards in ``out_dir``.

    ``factory()`` builds the reconstructor (default: ``Reconstructor(config)``); with
    ``workers > 1`` it runs in each worker process and must be picklable.
    """
    if factory is None:
        from furpe.pipeline import Reconstructor

        factory = functools.partial(Reconstructor, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = LabelSummary(out, part, parts)
    summary.failures.extend(input_errors)
    t0 = time.perf_counter()
    done = done_keys(out)
    mine = split_items(items, part, parts)
    jobs = []
    for it in mine:
        if it.kind == "image" and unit_key(it.out_name, None) in done:
            summary.skipped += 1
            continue
        frames = unit_key(it.out_name, None) + "_f"  # the keys of its frames start so
        jobs.append((len(jobs), it, frozenset(k for k in done if k.startswith(frames))
                     if it.kind == "video" else frozenset()))
    writer = ShardWriter(out, part, parts, shard_size)

    def take(result: Sample | Failure) -> None:
        if isinstance(result, Failure):
            summary.failures.append((result.source, result.message))
            say(format_error(result.source, result.message))
            return
        writer.write(result.key, result.files, result.people)
        summary.samples += 1
        summary.people += result.people
        summary.empty += int(result.people == 0)
        for p, n in result.accepted.items():
            summary.accepted[p] += n

    bar = progress_bar(progress, total=len(jobs), unit="input", desc="labelling")
    # SIGTERM (kill, a scheduler, torchrun) stops like Ctrl-C: the workers are ended and what
    # is labelled is kept, instead of the process dying with its workers left running.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main else None
    try:
        if workers <= 1 or len(jobs) <= 1:
            labeller = Labeller(factory, every, quality)
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the fit on one core, the experts one frame ahead
            try:
                for k, (_, item, skip) in enumerate(jobs):
                    upcoming = jobs[k + 1][1] if k + 1 < len(jobs) else None
                    for result in labeller.label(item, skip, upcoming):
                        take(result)
                        bar.set_postfix(people=summary.people, refresh=False)
                    bar.update(1)
            finally:
                torch.set_num_threads(threads)
        else:
            _run_workers(jobs, factory, every, quality, min(workers, len(jobs)), take, bar,
                         summary)
        writer.close()
    except KeyboardInterrupt:
        summary.interrupted = True
        writer.close()  # keep what is labelled: a shorter shard, not lost work
    except BaseException:
        writer.abort()
        raise
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
        summary.seconds = time.perf_counter() - t0
        if writer.written or not summary.interrupted:
            write_indexes(out, part, parts, complete=not summary.interrupted
                          and not summary.failures, written=writer.written)
    return summary


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run_workers(jobs: list, factory: ReconstructorFactory, every: int, quality: int,
                 n: int, take: Callable[[Any], None], bar: Any, summary: LabelSummary) -> None:
    ctx = mp.get_context("spawn")
    job_q, result_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(factory, every, quality, job_q, result_q),
                         daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    for job in jobs:
        job_q.put(job)
    for _ in procs:
        job_q.put(None)
    remaining = len(jobs)
    try:
        while remaining:
            try:
                result = result_q.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise FurpeError("the labelling workers stopped unexpectedly") from None
                continue
            if isinstance(result, tuple) and result[0] == "done":
                remaining -= 1
                bar.update(1)
                continue
            take(result)
            bar.set_postfix(people=summary.people, refresh=False)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)


def _shard_counts(path: Path) -> dict[str, Any]:
    samples = people = 0
    for s in iter_samples(path, only=("json",)):
        samples += 1
        people += len(s.get("json", {}).get("people", []))
    return {"name": path.name, "samples": samples, "people": people,
            "bytes": path.stat().st_size}


def write_indexes(out: Path, part: int, parts: int, complete: bool,
                  written: Sequence[dict[str, Any]] = ()) -> Path:
    """Write this part's ``index-<part>of<parts>.json`` (its shards and counts), then
    ``index.json`` merging the indexes of all parts present; returns ``index.json``.

    Counts come from ``written`` (the shards this run wrote) and the part's previous index;
    only a shard known to neither (left by a run killed before its index) is read."""
    own_name = f"index-{part:03d}of{parts:03d}.json"
    previous = read_json(out / own_name) or {}
    known = {s["name"]: s for s in [*previous.get("shards", []), *written]}
    shards = []
    for path in list_shards(out):
        if not path.name.startswith(f"labels-{part:03d}of{parts:03d}-"):
            continue
        entry = known.get(path.name)
        if entry is None or entry.get("bytes") != path.stat().st_size:
            entry = _shard_counts(path)
        shards.append(entry)
    write_json(out / own_name, {
        "label_schema_version": LABEL_SCHEMA_VERSION, "part": part, "parts": parts,
        "complete": complete, "shards": shards,
        "samples": sum(s["samples"] for s in shards),
        "people": sum(s["people"] for s in shards)})
    # Parts finishing together may each merge before the other's index exists: merge again
    # until the parts' indexes did not change while merging.
    seen = None
    while True:
        files = sorted(out.glob(f"index-*of{parts:03d}.json"))
        state = [(p.name, p.stat().st_mtime_ns) for p in files]
        if state == seen:
            return out / "index.json"
        seen = state
        indexes = [i for i in (read_json(p) for p in files) if i]
        merged = [s for i in indexes for s in i["shards"]]
        write_json(out / "index.json", {
            "label_schema_version": LABEL_SCHEMA_VERSION, "parts": parts,
            "complete": len(indexes) == parts and all(i["complete"] for i in indexes),
            "shards": merged,
            "samples": sum(s["samples"] for s in merged),
            "people": sum(s["people"] for s in merged)})

