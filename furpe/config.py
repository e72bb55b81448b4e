"""One configuration of a reconstruction: body model, experts, fit, selection, device.

A :class:`ReconstructConfig` is plain data: :meth:`~ReconstructConfig.to_dict` gives nested
JSON-able dicts (written into every output JSON under ``"config"``) and
:func:`config_from_dict` / :func:`load_config` read them back, refusing unknown keys and
wrong types with one clear message. ``furpe reconstruct --config FILE`` takes a JSON or YAML
file of such a dict (any subset of keys; the rest keep their defaults), or a result JSON,
whose ``"config"`` is then used: a run is reproduced from its own output.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from furpe.core.errors import SetupError
from furpe.core.files import jsonable
from furpe.core.registry import names
from furpe.fitting.fit import FitConfig
from furpe.selection import DEFAULT_THRESHOLDS, SelectionScheme, Thresholds
from furpe.tracking import SmoothingConfig, TrackingConfig

DEFAULT_EXPERTS = ("mediapipe_pose", "mediapipe_hands", "mediapipe_face")


@dataclass
class ReconstructConfig:
    """Everything that decides a reconstruction's result.

    Attributes:
        body_model: a registered body model (``anny``, ``smplx``).
        model_path: folder of the body model's files (SMPL-X), if it needs one.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        focal: focal length in pixels; ``None`` = the longer image side.
        max_people: most people reconstructed per image.
        experts: registered experts, run in this order (body first).
        expert_options: keyword options per expert name (e.g. ``{"mediapipe_pose":
            {"flip_test": false}}``); ``max_people`` and the video mode are passed by the
            pipeline to experts that take them.
        fit: the whole-body fit's settings.
        selection: acceptance thresholds per part.
        method: ``experts`` (part experts and the whole-body fit) or ``network`` (a trained
            network on the person detector's boxes, one forward pass per batch of people).
        checkpoint: the network's checkpoint (``None``: the one shipped with furpe).
        onnx: run the network with ONNX Runtime from this exported file (``furpe
            export-onnx``) instead of PyTorch.
        refine: with ``method: network``, run the experts too and fit from the network's
            estimate (the fit's short warm-start schedule) instead of from the neutral pose.
        fit_landmarks: with ``method: network``, fit each person's body to the landmarks
            that the network's BlazePose encoder saw (2D and metric 3D, as the body expert
            gives them), starting from the network's estimate (``refine``'s short schedule and
            fallback); no expert runs.
        flip_test: with ``method: network``, run each person crop mirrored as well and
            average the two estimates (the mirrored one mirrored back): twice the network's
            time per person.
        tracking: videos: how people are followed from frame to frame (``max_age``: frames
            a lost person keeps their id; ``gate``, ``keypoint_weight``, ``min_confidence``:
            the association), see :class:`~furpe.tracking.TrackingConfig`.
        smoothing: videos: One-Euro smoothing of each tracked person's parameters
            (``enabled``, ``min_cutoff``, ``beta``, ``d_cutoff``), see
            :class:`~furpe.tracking.SmoothingConfig`.
    """

    body_model: str = "anny"
    model_path: str | None = None
    device: str = "auto"
    focal: float | None = None
    max_people: int = 20
    experts: tuple[str, ...] = DEFAULT_EXPERTS
    expert_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    fit: FitConfig = field(default_factory=FitConfig)
    selection: dict[str, Thresholds] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    method: str = "experts"
    checkpoint: str | None = None
    onnx: str | None = None
    refine: bool = False
    fit_landmarks: bool = False
    flip_test: bool = False
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def __post_init__(self) -> None:
        if self.method not in ("experts", "network"):
            raise SetupError(f"config: unknown method '{self.method}'; use experts or network")
        for key in ("refine", "fit_landmarks", "flip_test"):
            if getattr(self, key) and self.method != "network":
                raise SetupError(f"config: {key} applies to method network")
        if self.refine and self.fit_landmarks:
            raise SetupError("config: choose refine (run the experts) or fit_landmarks (the "
                             "network's own landmarks), not both")
        if self.focal is not None and not (self.focal > 0 and math.isfinite(self.focal)):
            raise SetupError("config: focal must be a positive number of pixels")
        if self.max_people < 1:
            raise SetupError("config: max_people must be at least 1")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise SetupError(f"config: unknown device '{self.device}'; use auto, cpu or cuda")
        for kind, chosen in (("body_model", [self.body_model]), ("expert", self.experts),
                             ("expert", list(self.expert_options))):
            unknown = [n for n in chosen if n not in names(kind)]
            if unknown:
                raise SetupError(f"config: unknown {kind.replace('_', ' ')} '{unknown[0]}'; "
                                 f"choose from {', '.join(names(kind))}")
        self.experts = tuple(self.experts)
        missing = [p for p in DEFAULT_THRESHOLDS if p not in self.selection]
        if missing:
            raise SetupError(f"config: selection needs thresholds for {', '.join(missing)}")

    def scheme(self) -> SelectionScheme:
        """The selection scheme of these thresholds."""
        return SelectionScheme(thresholds=dict(self.selection))

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON-able dicts (tuples as lists)."""
        return jsonable(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "ReconstructConfig":
        """A copy with some top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (dataclasses recursively)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return dataclass_from_mapping(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except SetupError as exc:
                errors.append(str(exc))
        raise SetupError(errors[0])
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SetupError(f"config: {where} must be a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SetupError(f"config: {where} must be a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise SetupError(f"config: {where} must have {len(args)} entries")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise SetupError(f"config: {where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SetupError(f"config: {where} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SetupError(f"config: {where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SetupError(f"config: {where} must be a string, got {value!r}")
        return value
    raise SetupError(f"config: {where}: unsupported type {hint}")  # pragma: no cover


def dataclass_from_mapping(cls: Any, data: Any, where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from a mapping, types checked recursively;
    an unknown key is an error that names it (``where`` prefixes the names)."""
    if not isinstance(data, Mapping):
        raise SetupError(f"config: {where or 'the configuration'} must be a mapping, "
                         f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in known]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise SetupError(f"config: unknown key '{key}'; known keys{' of ' + where if where else ''}: "
                         f"{', '.join(known)}")
    if cls is FitConfig and isinstance(data.get("refine_fallback"), (int, float)):
        # a single number (configurations and results written before the per-part
        # limits) is the body's limit
        data = {**data, "refine_fallback": {"body": data["refine_fallback"]}}
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    if cls is FitConfig:  # per-part dicts: a partial dict overrides only its keys
        defaults = FitConfig()
        for k, v in kwargs.items():
            if isinstance(v, dict):
                kwargs[k] = {**getattr(defaults, k), **v}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> ReconstructConfig:
    """A validated :class:`ReconstructConfig` from (a subset of) its :meth:`to_dict` form;
    a result document (with a ``"config"`` key) gives its configuration."""
    if isinstance(data, Mapping) and "config" in data and "schema_version" in data:
        data = data["config"]
    if isinstance(data, Mapping) and isinstance(data.get("selection"), Mapping):
        merged = ReconstructConfig().to_dict()["selection"]
        for part, th in data["selection"].items():
            merged[part] = {**merged.get(part, {}), **th} if isinstance(th, Mapping) else th
        data = {**data, "selection": merged}
    return dataclass_from_mapping(ReconstructConfig, data, "")


def read_mapping(path: str | Path, flag: str = "--config") -> Any:
    """The data of a ``.json`` or ``.yaml`` file, or a :class:`SetupError` naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"{flag} {path}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # noqa: BLE001 - json's ValueError, yaml.YAMLError
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        first = str(getattr(exc, "problem", None) or exc).strip().splitlines()[0]
        raise SetupError(f"{flag} {path}: cannot parse{at}: {first}") from None


def load_config(path: str | Path) -> ReconstructConfig:
    """Read a configuration (or a result JSON's) from a ``.json`` or ``.yaml`` file."""
    data = read_mapping(path)
    try:
        return config_from_dict(data if data is not None else {})
    except SetupError as exc:
        raise SetupError(f"--config {path}: {str(exc).removeprefix('config: ')}") from None
