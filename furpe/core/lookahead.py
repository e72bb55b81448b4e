"""Look-ahead: the experts of the next image run while the current one is fitted.

The fit is a long chain of small tensor operations that keeps one core busy; the experts are
convolutional networks that use the other. :class:`Lookahead` runs the experts in the
background, one call at a time, in the order their images were submitted (the experts are
not thread-safe, and a video's experts track from frame to frame), and hands each result to
the call that asks for the same image. Once a look-ahead has started, every expert run goes
through it, so the experts never run twice at once.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from furpe.core.threads import one_core, own_thread

T = TypeVar("T")


@dataclass
class _Job:
    owner: object
    image: object
    future: Future


class Lookahead:
    """Runs ``fn(*args)`` calls in the background one at a time, first in, first out (a thread
    per call, started after the call before it has finished); each keyed by
    the objects ``(owner, image)``, compared by identity (the image array must be the one
    given later to :meth:`take`)."""

    def __init__(self) -> None:
        self._started = False
        self._last: Future | None = None  # the call submitted last
        self._pending: list[_Job] = []
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether a look-ahead ever ran (then every call goes through the thread)."""
        return self._started

    def submit(self, owner: object, image: object, fn: Callable[..., T], *args: Any) -> None:
        """Start ``fn(*args)`` in the background (after the calls submitted before it)."""
        with self._lock:
            self._started = True
            job = _Job(owner, image, self._after_last(_timed_one_core, fn, *args))
            self._pending.append(job)

    def take(self, owner: object, image: object, fn: Callable[..., T], *args: Any
             ) -> tuple[T, float]:
        """The result of the call submitted for ``(owner, image)`` and the seconds it ran;
        ``fn(*args)`` is run now when none was (in the background once the look-ahead has
        started, so that it waits for the calls before it). Calls submitted before the one
        taken are dropped (their images were skipped); their errors are ignored."""
        with self._lock:
            found = next((i for i, job in enumerate(self._pending)
                          if job.owner is owner and job.image is image), None)
            if found is None:
                if not self._started:
                    job = None
                else:
                    # the caller waits for it: the native calls may take both cores
                    job = _Job(owner, image, self._after_last(_timed, fn, *args))
                del self._pending[:]
            else:
                job = self._pending[found]
                del self._pending[:found + 1]
        if job is None:
            return _timed(fn, *args)
        return job.future.result()

    def _after_last(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` in a thread of its own once the call submitted before it has finished
        (the experts one at a time, in order; a thread that ends with the call:
        :func:`~furpe.core.threads.own_thread`). Called with the lock held."""
        self._last = own_thread(fn, *args, after=self._last, name="furpe-experts")
        return self._last

    def drain(self) -> None:
        """Wait for every call submitted and forget their results (before running an expert
        outside the look-ahead)."""
        with self._lock:
            self._pending, last = [], self._last
        if last is not None:  # each call starts after the one before: the last ends last
            last.exception()  # waits; the errors belonged to images never taken

    def close(self) -> None:
        """Wait for the calls under way; the next call starts the look-ahead again."""
        self.drain()
        self._started = False


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def _timed_one_core(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """:func:`_timed` with the experts' native calls one after the other: in the
    look-ahead's thread they share the cores with the fit."""
    with one_core():
        return _timed(fn, *args)


def one_ahead(items: Iterable[T]) -> Iterator[tuple[T, T | None]]:
    """Each item with the one after it (None for the last), to start work on the next one
    early. An error raised while getting the next item (say, a video that stops decoding)
    is raised after the current one has been taken."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    while True:
        try:
            following = next(it)
        except StopIteration:
            yield current, None
            return
        except Exception:
            yield current, None
            raise
        yield current, following
        current = following
