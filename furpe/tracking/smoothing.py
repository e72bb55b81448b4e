"""Temporal smoothing of a tracked person's body-model parameters: One-Euro filters.

The One-Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based
Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012) is a first-order low-pass
filter whose cut-off frequency rises with the signal's speed: slow motion is smoothed
strongly (jitter goes), fast motion lightly (little lag). With ``dt`` the time since the
last sample and ``alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))``:

    dx_hat = alpha(d_cutoff) * (x - x_hat_prev) / dt + (1 - alpha(d_cutoff)) * dx_hat_prev
    fc     = min_cutoff + beta * |dx_hat|
    x_hat  = alpha(fc) * x + (1 - alpha(fc)) * x_hat_prev

Per parameter block (:class:`~furpe.bodymodels.base.ParamBlock`):

* rotations (axis-angle) are filtered as unit quaternions made sign-continuous with the last
  filtered one (q and -q are the same rotation), then re-normalised and mapped back: no jump
  where an axis-angle vector wraps at an angle of pi; the speed is per rotation (its
  angular speed, twice the quaternion's);
* bounded coefficients (facial actions, phenotype) are filtered per value and clipped to
  their range;
* the translation is filtered as its image position ``(x / z, y / z)`` and its depth ``z``,
  each by a :class:`TrendFilter` (double exponential smoothing: a level and a velocity): a
  person walking at a steady speed is followed without lag, and the depth, which a
  monocular fit pins down far less well than the image position, is smoothed more strongly
  without moving the person off their place in the image;
* other linear blocks are filtered as one vector.

Times are the frames' timestamps in seconds, so the smoothing does not depend on the frame
rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from furpe.core.errors import SetupError

if TYPE_CHECKING:  # the blocks' kind and bounds only: no torch needed here
    from furpe.bodymodels.base import ParamBlock

#: Shortest time step between two samples (identical timestamps): seconds.
MIN_DT = 1e-6


@dataclass
class SmoothingConfig:
    """Temporal smoothing of each tracked person's parameters in videos (One-Euro filters,
    :mod:`furpe.tracking.smoothing`); single images are never smoothed.

    Attributes:
        enabled: smooth (``false``: every frame's own fit is written).
        min_cutoff: cut-off frequency (Hz) of rotations and coefficients when still:
            lower = smoother, more lag.
        beta: how fast the cut-off rises with speed (Hz per unit of the block's speed:
            radians per second, coefficients per second): higher = less lag on fast
            motion, more jitter left.
        d_cutoff: cut-off frequency (Hz) of the speed estimate.
        image_cutoff: cut-off frequency (Hz) of the root's image position (its
            :class:`TrendFilter`'s level).
        depth_cutoff: the same for the root's depth: lower = less depth jitter, slower to
            follow a change of speed.
        trend_cutoff: cut-off frequency (Hz) of the root's velocity (image and depth).
    """

    enabled: bool = True
    min_cutoff: float = 1.0
    beta: float = 4.0
    d_cutoff: float = 1.0
    image_cutoff: float = 3.0
    depth_cutoff: float = 1.0
    trend_cutoff: float = 2.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "d_cutoff", "image_cutoff", "depth_cutoff", "trend_cutoff"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise SetupError(f"config: smoothing.{name} must be a positive number (Hz)")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise SetupError("config: smoothing.beta must be a number of at least 0")

    def with_strength(self, strength: float) -> "SmoothingConfig":
        """These settings ``strength`` times as strong (cut-offs and beta divided by it)."""
        if not (strength > 0 and math.isfinite(strength)):
            raise SetupError("smoothing strength must be a positive number")
        return SmoothingConfig(True, self.min_cutoff / strength, self.beta / strength,
                               self.d_cutoff, self.image_cutoff / strength,
                               self.depth_cutoff / strength, self.trend_cutoff / strength)


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * np.asarray(cutoff) * dt))


class OneEuroFilter:
    """A One-Euro filter of an array of shape (G, C): G groups of C values, the speed that
    sets the cut-off measured per group (the norm over C, times ``speed_scale``)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0,
                 speed_scale: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.speed_scale = speed_scale
        self.value: np.ndarray | None = None  # the last output
        self.speed: np.ndarray | None = None  # the filtered derivative
        self.time: float | None = None

    def _derivative(self, x: np.ndarray, t: float) -> tuple[np.ndarray, float]:
        assert self.value is not None and self.speed is not None and self.time is not None
        dt = max(t - self.time, MIN_DT)
        a = _alpha(self.d_cutoff, dt)
        return a * (x - self.value) / dt + (1 - a) * self.speed, dt

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """The filtered value of sample ``x`` at time ``t`` (seconds)."""
        x = np.asarray(x, dtype=np.float64)
        if self.value is None or self.value.shape != x.shape:
            return self.reset(x, t)
        dx, dt = self._derivative(x, t)
        cutoff = self.min_cutoff + self.beta * self.speed_scale * np.linalg.norm(
            dx, axis=-1, keepdims=True)
        a = _alpha(cutoff, dt)
        self.value = a * x + (1 - a) * self.value
        self.speed, self.time = dx, t
        return self.value.copy()

    def reset(self, x: np.ndarray, t: float, keep_speed: bool = False) -> np.ndarray:
        """Make ``x`` the output at time ``t`` (the filter goes on from there; with
        ``keep_speed`` the speed estimate is updated as if the filter had output it)."""
        x = np.array(x, dtype=np.float64)
        if keep_speed and self.value is not None and self.value.shape == x.shape:
            self.speed = self._derivative(x, t)[0]
        else:
            self.speed = np.zeros_like(x)
        self.value, self.time = x, t
        return x.copy()


class TrendFilter:
    """Double exponential smoothing (Holt's level and trend) of an array, with time steps
    (cut-offs: scalars, or per value of the last axis):

        predicted = level + velocity * dt
        level     = alpha(cutoff) * x + (1 - alpha(cutoff)) * predicted
        velocity  = alpha(trend_cutoff) * (level - level_prev) / dt
                    + (1 - alpha(trend_cutoff)) * velocity

    A signal moving at a constant velocity comes out without lag; noise around it is
    low-passed at ``cutoff``. A sudden stop overshoots by about the distance covered in
    ``1 / (2 pi trend_cutoff)`` seconds before it settles.
    """

    def __init__(self, cutoff: float | np.ndarray, trend_cutoff: float | np.ndarray) -> None:
        self.cutoff, self.trend_cutoff = np.asarray(cutoff), np.asarray(trend_cutoff)
        self.value: np.ndarray | None = None  # the last output (the level)
        self.speed: np.ndarray | None = None  # the velocity
        self.time: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """The filtered value of sample ``x`` at time ``t`` (seconds)."""
        x = np.asarray(x, dtype=np.float64)
        if self.value is None or self.value.shape != x.shape:
            return self.reset(x, t)
        assert self.speed is not None and self.time is not None
        dt = max(t - self.time, MIN_DT)
        a, b = _alpha(self.cutoff, dt), _alpha(self.trend_cutoff, dt)
        level = a * x + (1 - a) * (self.value + self.speed * dt)
        self.speed = b * (level - self.value) / dt + (1 - b) * self.speed
        self.value, self.time = level, t
        return level.copy()

    def reset(self, x: np.ndarray, t: float, keep_speed: bool = False) -> np.ndarray:
        """Make ``x`` the output at time ``t`` (with ``keep_speed`` the velocity is updated
        as if the filter had output it)."""
        x = np.array(x, dtype=np.float64)
        if keep_speed and self.value is not None and self.value.shape == x.shape \
                and self.speed is not None and self.time is not None:
            dt = max(t - self.time, MIN_DT)
            b = _alpha(self.trend_cutoff, dt)
            self.speed = b * (x - self.value) / dt + (1 - b) * self.speed
        else:
            self.speed = np.zeros_like(x)
        self.value, self.time = x, t
        return x.copy()


# -- rotations as quaternions (w, x, y, z) ---------------------------------------------------

def rotvec_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) to unit quaternions (..., 4), (w, x, y, z)."""
    r = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    small = angle < 1e-6
    k = np.where(small, 0.5 - angle ** 2 / 48.0, np.sin(0.5 * angle) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(0.5 * angle), r * k], axis=-1)


def quat_to_rotvec(quat: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4), (w, x, y, z), normalised here, to axis-angle (..., 3) with an
    angle in [0, pi]."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    small = s < 1e-7
    return v * np.where(small, 2.0 / np.maximum(q[..., :1], 1e-12), angle / np.where(small, 1.0, s))


#: Nearest depth (m) at which the translation is filtered as image position and depth.
MIN_DEPTH = 0.05


def _image_depth(transl: np.ndarray) -> np.ndarray:
    """Camera-frame translations (N, 3) as ``(x / z, y / z, z)``."""
    z = np.maximum(transl[:, 2:], MIN_DEPTH)
    return np.concatenate([transl[:, :2] / z, z], axis=1)


def _camera(uvz: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_image_depth`."""
    return np.concatenate([uvz[:, :2] * uvz[:, 2:], uvz[:, 2:]], axis=1)


class PersonSmoother:
    """The filters of one person's parameters (one track): :meth:`__call__` takes the
    parameters of the person's next frame and returns them smoothed."""

    def __init__(self, config: SmoothingConfig, blocks: Mapping[str, "ParamBlock"]) -> None:
        self.config = config
        self.blocks = blocks
        self.filters: dict[str, OneEuroFilter | TrendFilter] = {}

    def _filter(self, name: str) -> OneEuroFilter | TrendFilter:
        if name not in self.filters:
            c = self.config
            if name == "transl":
                self.filters[name] = TrendFilter(
                    [c.image_cutoff, c.image_cutoff, c.depth_cutoff], c.trend_cutoff)
            else:
                # A unit quaternion moves at half the rotation's angular speed: rad/s.
                scale = 2.0 if self._kind(name) == "rotation" else 1.0
                self.filters[name] = OneEuroFilter(c.min_cutoff, c.beta, c.d_cutoff, scale)
        return self.filters[name]

    def _kind(self, name: str) -> str:
        block = self.blocks.get(name)
        return "linear" if block is None else block.kind

    def _groups(self, name: str, value: np.ndarray) -> np.ndarray:
        """The value as the filter's (G, C) groups."""
        kind = self._kind(name)
        if kind == "rotation":
            q = rotvec_to_quat(value.reshape(-1, 3))
            last = self._filter(name).value
            if last is not None and last.shape == q.shape:  # sign-continuous
                q = np.where((q * last).sum(-1, keepdims=True) < 0, -q, q)
            return q
        if kind == "bounded":
            return value.reshape(-1, 1)
        if name == "transl":
            return _image_depth(value.reshape(1, -1))
        return value.reshape(1, -1)

    def _value(self, name: str, groups: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        kind = self._kind(name)
        if kind == "rotation":
            groups = groups / np.maximum(np.linalg.norm(groups, axis=-1, keepdims=True), 1e-12)
            self.filters[name].value = groups  # the filter goes on from the unit quaternion
            return quat_to_rotvec(groups).reshape(shape)
        if name == "transl":
            groups = _camera(groups)
        out = groups.reshape(shape)
        if kind == "bounded":
            block = self.blocks[name]
            out = np.clip(out, block.lower, block.upper)
        return out

    def __call__(self, params: Mapping[str, np.ndarray], t: float) -> dict[str, np.ndarray]:
        """The person's parameters at time ``t`` (seconds), smoothed (same shapes; float32)."""
        out = {}
        for name, value in params.items():
            v = np.asarray(value, dtype=np.float64)
            if not np.isfinite(v).all():  # nothing to smooth: pass through, start again
                self.filters.pop(name, None)
                out[name] = np.asarray(value, dtype=np.float32)
                continue
            smoothed = self._filter(name)(self._groups(name, v), t)
            out[name] = self._value(name, smoothed, v.shape).astype(np.float32)
        return out

    def reset(self, params: Mapping[str, np.ndarray], t: float) -> None:
        """Take ``params`` as the person's (already smoothed) state at ``t``, e.g. a frame
        written by an earlier run: the next frames are filtered on from it."""
        for name, value in params.items():
            v = np.asarray(value, dtype=np.float64)
            if np.isfinite(v).all():
                self._filter(name).reset(self._groups(name, v), t, keep_speed=True)


class Smoother:
    """The smoothing state of every track of a video, by track id."""

    def __init__(self, config: SmoothingConfig, blocks: Mapping[str, "ParamBlock"]) -> None:
        self.config = config
        self.blocks = blocks
        self.people: dict[int, PersonSmoother] = {}

    def _person(self, track: int) -> PersonSmoother:
        if track not in self.people:
            self.people[track] = PersonSmoother(self.config, self.blocks)
        return self.people[track]

    def smooth(self, track: int, params: Mapping[str, np.ndarray], t: float) -> dict[str, np.ndarray]:
        """Track ``track``'s parameters at time ``t``, smoothed."""
        return self._person(track)(params, t)

    def reset(self, track: int, params: Mapping[str, np.ndarray], t: float) -> None:
        """Track ``track``'s state at ``t`` (see :meth:`PersonSmoother.reset`)."""
        self._person(track).reset(params, t)

    def keep(self, tracks: Iterable[int]) -> None:
        """Forget the state of every track not in ``tracks`` (tracks that ended)."""
        alive = set(tracks)
        for track in [k for k in self.people if k not in alive]:
            del self.people[track]
