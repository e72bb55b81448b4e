"""Quiet native libraries: MediaPipe's C++ (glog, absl) and TFLite write to the process's
stderr directly; :func:`native_quiet` sends those lines elsewhere unless verbose output was
asked for (``furpe --debug`` calls :func:`set_verbose`)."""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

_VERBOSE = False


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
    own ``sys.stderr`` is flushed first and works again after)."""
    if _VERBOSE:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


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
