"""Native model calls side by side.

A MediaPipe task runs its graph in its own dispatcher thread and one core, and Python waits
for it without holding the interpreter lock; two tasks (two model instances) called from two
threads therefore run at once on two cores. The experts use :func:`background` to start one
such call (the mirrored image of the flip test, the whole-image pass, the other hand) while
the calling thread runs another. A call started here must not itself wait for another call
started here (the helper threads are few). Where the other core is busy already (the
look-ahead runs the experts beside the fit), :func:`one_core` runs such calls one after the
other in the calling thread instead.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

HELPER_THREADS = 4
"""Threads of the pool shared by every expert of the process, whatever thread calls them (one
helper call per caller suits two cores; more callers, such as two reconstructors in two
threads, queue)."""

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()
_LOCAL = threading.local()


@contextmanager
def one_core() -> Iterator[None]:
    """While inside, :func:`background` calls made by this thread run at once, in it."""
    before = getattr(_LOCAL, "serial", False)
    _LOCAL.serial = True
    try:
        yield
    finally:
        _LOCAL.serial = before


def on_one_core() -> bool:
    """Whether this thread is inside :func:`one_core` (then a call that might be skipped is
    better left until it is known to be needed)."""
    return getattr(_LOCAL, "serial", False)


def background(fn: Callable[..., T], *args: Any) -> Future:
    """``fn(*args)`` started in a shared helper thread (inside :func:`one_core`: run now, in
    this thread); ``.result()`` waits for it (and raises its error)."""
    if on_one_core():
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed over as the future's error
            done.set_exception(exc)
        return done
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(HELPER_THREADS, thread_name_prefix="furpe-native")
    return _POOL.submit(fn, *args)


def own_thread(fn: Callable[..., T], *args: Any, after: Future | None = None,
               name: str = "furpe-job") -> Future:
    """``fn(*args)`` started in a new thread, not a helper, so that it may itself use
    :func:`background` and :func:`side_by_side` (the experts still to run on an image while
    the caller fits what the others found); with ``after``, once that call has finished
    (its error is its own). ``.result()`` waits for it.

    The thread ends with the call: a pooled thread that has run torch operations keeps its
    OpenMP team, and with more OpenMP threads than cores libgomp stops its workers spinning
    between parallel regions, which slows the caller's later multi-threaded torch work."""
    done: Future = Future()

    def run() -> None:
        if after is not None:
            after.exception()  # waits
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed over as the future's error
            done.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


def side_by_side(first: Callable[[], T], second: Callable[[], Any]) -> tuple[T, Any]:
    """``first()`` in this thread while ``second()`` runs in a helper thread; both results.
    An error of either is raised after both have finished."""
    other = background(second)
    try:
        mine = first()
    finally:
        other.exception()  # wait, whatever happened here
    return mine, other.result()
