"""Part experts: the interface, the built-in MediaPipe experts and a registry.

Typical use::

    from furpe.experts import default_experts, run_experts

    experts = default_experts()            # [body, hands, face]
    people = run_experts(experts, rgb)     # list[PersonObservation]

Another expert (say, a wrapper reading SPIN or DECA output files) plugs in without touching
the fitting code: implement :class:`~furpe.experts.base.Expert` and register a factory::

    register_expert("deca_files", lambda **kw: DecaFileExpert(**kw))
    experts = [create_expert("mediapipe_pose"), create_expert("deca_files", root="out/")]
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from furpe.experts.base import PARTS, Expert, Part, PartObservation, PersonObservation
from furpe.experts.conventions import CONVENTIONS
from furpe.experts.mediapipe_experts import (
    MediaPipeBodyExpert,
    MediaPipeFaceExpert,
    MediaPipeHandExpert,
)

ExpertFactory = Callable[..., Expert]

EXPERTS: dict[str, ExpertFactory] = {}
"""Expert factories by name; see :func:`register_expert` and :func:`create_expert`."""


def register_expert(name: str, factory: ExpertFactory, *, replace: bool = False) -> None:
    """Register ``factory`` (called with keyword options, returns an expert) under ``name``.

    Raises ``ValueError`` if the name is taken, unless ``replace`` is true.
    """
    if not replace and name in EXPERTS:
        raise ValueError(f"an expert named {name!r} is already registered")
    EXPERTS[name] = factory


def create_expert(name: str, **options: object) -> Expert:
    """Build the expert registered as ``name`` (``KeyError`` listing the known names)."""
    try:
        factory = EXPERTS[name]
    except KeyError:
        raise KeyError(f"unknown expert {name!r}; registered: {sorted(EXPERTS)}") from None
    return factory(**options)


register_expert(MediaPipeBodyExpert.name, MediaPipeBodyExpert)
register_expert(MediaPipeHandExpert.name, MediaPipeHandExpert)
register_expert(MediaPipeFaceExpert.name, MediaPipeFaceExpert)


def default_experts(video: bool = False, max_people: int = 4) -> list[Expert]:
    """The built-in experts, body first: ``[MediaPipe Pose, Hands, Face Mesh]``.

    ``video=True`` puts the body expert in tracking mode (consecutive frames of one video).
    """
    return [
        MediaPipeBodyExpert(max_people=max_people, video=video),
        MediaPipeHandExpert(),
        MediaPipeFaceExpert(),
    ]


def run_experts(experts: Iterable[Expert], image: np.ndarray) -> list[PersonObservation]:
    """Run ``experts`` in order on an (H, W, 3) uint8 RGB image, each one adding to the people
    the earlier ones found (so put the body expert first); return the people."""
    people: list[PersonObservation] = []
    for expert in experts:
        people = expert.observe(image, people)
    return people


def close_experts(experts: Iterable[object]) -> None:
    """Call ``close()`` on every expert that has one."""
    for expert in experts:
        close = getattr(expert, "close", None)
        if callable(close):
            close()


__all__ = [
    "CONVENTIONS",
    "EXPERTS",
    "PARTS",
    "Expert",
    "ExpertFactory",
    "MediaPipeBodyExpert",
    "MediaPipeFaceExpert",
    "MediaPipeHandExpert",
    "Part",
    "PartObservation",
    "PersonObservation",
    "close_experts",
    "create_expert",
    "default_experts",
    "register_expert",
    "run_experts",
]
