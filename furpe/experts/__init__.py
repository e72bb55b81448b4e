"""Part experts: the interface and the built-in MediaPipe experts.

Typical use::

    from furpe.experts import build_experts, run_experts

    experts = build_experts(["mediapipe_pose", "mediapipe_hands", "mediapipe_face"])
    people = run_experts(experts, rgb)     # list[PersonObservation]

Another expert (say, a wrapper reading SPIN or DECA output files) plugs in without touching
the fitting code: implement :class:`~furpe.experts.base.Expert` and register it::

    from furpe.core.registry import register

    @register("expert", "deca_files")
    class DecaFileExpert: ...
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from furpe.core.exposure import normalise_exposure
from furpe.core.registry import lookup
from furpe.core.threads import own_thread
from furpe.experts.base import Expert, PartObservation, PersonObservation


def build_experts(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None,
                  *, max_people: int = 20, video: bool = False) -> list[Expert]:
    """The registered experts ``names``, in order, each built with its ``options``; a
    factory that takes ``max_people`` or ``video`` gets them unless its options set them."""
    experts = []
    for name in names:
        factory = lookup("expert", name)
        kwargs = dict((options or {}).get(name, {}))
        try:
            accepted = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            accepted = {}
        for key, value in (("max_people", max_people), ("video", video)):
            if key in accepted:
                kwargs.setdefault(key, value)
        experts.append(factory(**kwargs))
    return experts


def run_experts(experts: Iterable[Expert], image: np.ndarray) -> list[PersonObservation]:
    """Run ``experts`` in order on an (H, W, 3) uint8 RGB image, each one adding to the people
    the earlier ones found (so put the body expert first); return the people. A very dark
    image is brightened for them first (:func:`~furpe.core.exposure.normalise_exposure`)."""
    image = normalise_exposure(image)
    people: list[PersonObservation] = []
    for expert in experts:
        people = expert.observe(image, people)
    return people


Finish = Callable[[], tuple[list[PersonObservation], float]]


def start_experts(experts: Sequence[Expert], image: np.ndarray
                  ) -> tuple[list[PersonObservation], Finish]:
    """:func:`run_experts` in two steps, for a caller with other work to do meanwhile: the
    experts up to the last one that finds bodies (``"body"`` in its ``parts``) run now and
    their people are returned; the others, which fill in parts of those people (hands,
    face), start in a thread of their own on copies of them. ``finish()`` waits for them,
    puts what they found into the people returned (the same objects) and gives the whole
    list (with any people those experts added) and the seconds they ran."""
    image = normalise_exposure(image)
    bodies = max((i + 1 for i, e in enumerate(experts) if "body" in e.parts), default=0)
    people: list[PersonObservation] = []
    for expert in experts[:bodies]:
        people = expert.observe(image, people)
    rest = experts[bodies:]
    if not rest or not people:
        return people, lambda: (people, 0.0)

    def run(copies: list[PersonObservation]) -> tuple[list[PersonObservation], float]:
        t = time.perf_counter()
        for expert in rest:
            copies = expert.observe(image, copies)
        return copies, time.perf_counter() - t

    job = own_thread(run, [PersonObservation(dict(p.parts)) for p in people])

    def finish() -> tuple[list[PersonObservation], float]:
        copies, seconds = job.result()
        for person, copy in zip(people, copies):
            person.parts.clear()
            person.parts.update(copy.parts)
        return people + copies[len(people):], seconds

    return people, finish


def _call_each(experts: Iterable[object], method: str) -> None:
    for expert in experts:
        fn = getattr(expert, method, None)
        if callable(fn):
            fn()


def reset_experts(experts: Iterable[object]) -> None:
    """Call ``reset()`` on every expert that has one (forget tracking state)."""
    _call_each(experts, "reset")


def close_experts(experts: Iterable[object]) -> None:
    """Call ``close()`` on every expert that has one."""
    _call_each(experts, "close")


__all__ = ["Expert", "PartObservation", "PersonObservation", "build_experts", "close_experts",
           "reset_experts", "run_experts", "start_experts"]
