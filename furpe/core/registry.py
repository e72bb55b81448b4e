"""The one registry of plug-ins: experts, body models, methods and datasets.

Each entry maps a *kind* and a *name* to a factory (a class or a function). Built-in entries
are declared below as ``"module:attribute"`` strings, imported only when first looked up, so
that listing names (the command line's choices) never imports torch or MediaPipe. Other
code adds entries with the same decorator::

    from furpe.core.registry import register

    @register("body_model", "mymodel")
    def load_mymodel(model_path=None, device="cpu"): ...

and every user of a kind finds them through :func:`lookup` / :func:`names`. What a factory
takes and returns per kind:

* ``expert``: ``factory(**options) -> Expert``;
* ``body_model``: ``factory(model_path=None, device="cpu") -> BodyModel``;
* ``method``: ``factory(config) -> Method`` (``config`` a reconstruction configuration);
* ``dataset``: ``factory(root, options) -> Dataset``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from furpe.core.errors import FurpeError

T = TypeVar("T")

_ENTRIES: dict[str, dict[str, Any]] = {
    "expert": {
        "mediapipe_pose": "furpe.experts.body:MediaPipeBodyExpert",
        "mediapipe_hands": "furpe.experts.hands:MediaPipeHandExpert",
        "mediapipe_face": "furpe.experts.face:MediaPipeFaceExpert",
    },
    "body_model": {
        "anny": "furpe.bodymodels.anny_model:load_anny",
        "smplx": "furpe.bodymodels.smplx_model:load_smplx",
    },
    "method": {
        "experts": "furpe.evaluation.methods:ExpertMethod",
        "network": "furpe.evaluation.methods:NetworkMethod",
    },
    "dataset": {
        "ehf": "furpe.datasets.ehf:EHF",
        "3dpw": "furpe.datasets.pw3d:ThreeDPW",
        "freihand": "furpe.datasets.freihand:FreiHAND",
        "now": "furpe.datasets.now:NoW",
        "synthetic": "furpe.datasets.synthetic:SyntheticDataset",
    },
}
KINDS: tuple[str, ...] = tuple(_ENTRIES)


def _table(kind: str) -> dict[str, Any]:
    try:
        return _ENTRIES[kind]
    except KeyError:
        raise ValueError(f"unknown plug-in kind {kind!r}; kinds: {', '.join(KINDS)}") from None


def register(kind: str, name: str, target: Any = None, *, replace: bool = False) -> Any:
    """Register ``target`` (a factory, or a ``"module:attribute"`` string) as ``name`` of
    ``kind``; without ``target``, a decorator that registers what it decorates.

    Raises ``ValueError`` when the name is taken, unless ``replace``.
    """
    table = _table(kind)

    def add(obj: T) -> T:
        if not replace and name in table:
            raise ValueError(f"a {kind} named {name!r} is already registered")
        table[name] = obj
        return obj

    if target is None:
        return add
    add(target)
    return target


def unregister(kind: str, name: str) -> None:
    """Remove an entry (no error when it is not there)."""
    _table(kind).pop(name, None)


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, in registration order (imports nothing)."""
    return tuple(_table(kind))


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` of ``kind``; a :class:`FurpeError` lists the names."""
    table = _table(kind)
    try:
        target = table[name]
    except KeyError:
        label = kind.replace("_", " ")
        raise FurpeError(f"unknown {label} '{name}'; choose from {', '.join(table)}") from None
    if isinstance(target, str):
        module, attr = target.split(":")
        target = table[name] = getattr(importlib.import_module(module), attr)
    return target


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """``lookup(kind, name)(*args, **kwargs)``."""
    return lookup(kind, name)(*args, **kwargs)
