"""Shared fixtures: the Anny body model and a real reconstructor, built once per session.

The first Anny build in a fresh cache takes about a minute (later loads take well under a
second); the reconstructor loads the MediaPipe experts once.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anny_model():
    """The process-wide Anny body model (CPU, float32)."""
    from furpe.bodymodels import load_body_model

    return load_body_model("anny")


@pytest.fixture(scope="session")
def reconstructor(anny_model):
    """A :class:`furpe.pipeline.Reconstructor` on the CPU with the default experts."""
    from furpe.config import ReconstructConfig
    from furpe.pipeline import Reconstructor

    return Reconstructor(ReconstructConfig(device="cpu"), body_model=anny_model)


def pytest_collection_modifyitems(config, items):
    """Every test using the real ``reconstructor`` (directly or through another fixture) runs
    the MediaPipe graphs and the whole-body fit: it is marked ``slow`` and ``mediapipe``."""
    for item in items:
        if "reconstructor" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.mediapipe)


class FitCalls(list):
    """``(init, warm)`` per ``fit`` call; ``shares`` and ``fallbacks``: each call's
    ``warm_iters`` and ``fallback``."""

    def __init__(self) -> None:
        super().__init__()
        self.shares: list = []
        self.fallbacks: list = []


def spy_fit(monkeypatch, fitter) -> FitCalls:
    """Record ``(init, warm)`` of every ``fitter.fit`` call (the fit still runs)."""
    calls = FitCalls()
    fit = fitter.fit

    def spy(people, K, init=None, warm=None, device="cpu", warm_iters=None, fallback=None,
            later=None):
        calls.append((init, warm))
        calls.shares.append(warm_iters)
        calls.fallbacks.append(fallback)
        return fit(people, K, init=init, warm=warm, device=device, warm_iters=warm_iters,
                   fallback=fallback, later=later)

    monkeypatch.setattr(fitter, "fit", spy)
    return calls
