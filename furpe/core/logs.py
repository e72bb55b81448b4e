"""Quiet native libraries: MediaPipe's C++ (glog, absl) and TFLite write to the process's
stderr directly; :func:`native_quiet` sends those lines elsewhere unless verbose output was
asked for (``furpe --debug`` calls :func:`set_verbose`)."""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

_VERBOSE = False
_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH = 0
_QUIET_SAVED: int | None = None


def set_verbose(verbose: bool) -> None:
    """Let native libraries print their own log lines (for debugging)."""
    global _VERBOSE
    _VERBOSE = verbose


def quiet_environment() -> None:
    """Ask glog and TensorFlow to log errors only; call before importing MediaPipe."""
    if not _VERBOSE:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def native_quiet() -> Iterator[None]:
    """While inside, whatever native code writes to file descriptor 2 is discarded (Python's
    own ``sys.stderr`` is flushed first and works again after). Thread-safe: while any thread
    is inside, descriptor 2 stays redirected; the last one out restores it."""
    if _VERBOSE:
        yield
        return
    global _QUIET_DEPTH, _QUIET_SAVED
    with _QUIET_LOCK:
        if _QUIET_DEPTH == 0:
            sys.stderr.flush()
            _QUIET_SAVED = os.dup(2)
            with tempfile.TemporaryFile() as sink:  # unlinked; descriptor 2 keeps it open
                os.dup2(sink.fileno(), 2)
        _QUIET_DEPTH += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0 and _QUIET_SAVED is not None:
                os.dup2(_QUIET_SAVED, 2)
                os.close(_QUIET_SAVED)
                _QUIET_SAVED = None


def silence_native_stderr() -> None:
    """From now on, whatever writes to file descriptor 2 goes nowhere (unless verbose): for
    interpreter exit, when native libraries log their teardown. Python's ``sys.stderr`` is
    flushed first."""
    if _VERBOSE:
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
