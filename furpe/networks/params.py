"""The network's parameter vector, laid out from a body model's blocks.

A :class:`ParamCodec` turns a body model's parameter blocks (except ``transl``, which the
camera gives) into one flat vector that the iterative regressors refine, and back:

* rotation blocks: 6 numbers per rotation (the continuous 6D form), neutral = identity;
* bounded blocks (Anny's phenotype and facial actions): one logit per coefficient, decoded as
  ``lower + (upper - lower) * sigmoid(x)``, neutral = the block's default (kept 0.02 inside
  the bounds, where the sigmoid still has a gradient);
* linear blocks (SMPL-X betas, expression): the values themselves, neutral 0.

The same code therefore sizes the output head for Anny and for SMPL-X.

The camera is three more numbers ``(s, u, v)`` after the blocks (:func:`camera_translation`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel, ParamBlock
from furpe.core.rotations import rotmat_to_rotvec, rotvec_to_rotmat, rotmat_to_sixd, sixd_to_rotmat

#: The camera's three numbers: softplus(s) is the scale (a metre at the person's depth spans
#: s half-crops), (u, v) where the model's origin lands, in half-crops from the crop centre.
CAMERA_SIZE = 3
CAMERA_INIT = (math.log(math.e - 1.0), 0.0, 0.0)  # softplus(s) = 1


@dataclass(frozen=True)
class Slot:
    """Where one block lives in the vector."""

    block: ParamBlock
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width


def _width(block: ParamBlock) -> int:
    return block.size * (6 if block.kind == "rotation" else 1)


def _neutral(block: ParamBlock) -> np.ndarray:
    if block.kind == "rotation":
        return np.tile(np.array([1.0, 0, 0, 0, 1, 0]), block.size)
    default = np.zeros(block.size) if block.default is None else np.asarray(block.default)
    if block.kind == "bounded":
        span = block.upper - block.lower
        p = np.clip((default - block.lower) / span, 0.02, 0.98)
        return np.log(p / (1 - p))
    return default


class ParamCodec:
    """The layout of ``blocks`` (names, in order) of ``model`` in a flat vector."""

    def __init__(self, model: BodyModel, blocks: Iterable[str]) -> None:
        self.slots: dict[str, Slot] = {}
        start = 0
        for name in blocks:
            block = model.blocks[name]
            self.slots[name] = Slot(block, start, _width(block))
            start += self.slots[name].width
        self.size = start

    @classmethod
    def for_parts(cls, model: BodyModel, parts: Iterable[str]) -> "ParamCodec":
        """The blocks of ``model`` that drive ``parts`` (e.g. ``("face",)``), in model order;
        ``transl`` never (the camera places the person)."""
        parts = set(parts)
        return cls(model, [n for n, b in model.blocks.items()
                           if b.part in parts and n != "transl"])

    def neutral(self) -> torch.Tensor:
        """(size,) the vector of the neutral parameters."""
        return torch.as_tensor(np.concatenate([_neutral(s.block) for s in self.slots.values()]),
                               dtype=torch.float32)

    def decode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, >= size) -> per block: rotations (B, N, 3, 3), others (B, N) values."""
        out = {}
        for name, s in self.slots.items():
            v = x[:, s.start:s.stop]
            if s.block.kind == "rotation":
                out[name] = sixd_to_rotmat(v.reshape(v.shape[0], s.block.size, 6))
            elif s.block.kind == "bounded":
                out[name] = s.block.lower + (s.block.upper - s.block.lower) * torch.sigmoid(v)
            else:
                out[name] = v
        return out

    def encode(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`decode` (rotations given as matrices)."""
        cols = []
        for name, s in self.slots.items():
            v = values[name]
            if s.block.kind == "rotation":
                cols.append(rotmat_to_sixd(v).reshape(v.shape[0], -1))
            elif s.block.kind == "bounded":
                p = ((v - s.block.lower) / (s.block.upper - s.block.lower)).clamp(1e-4, 1 - 1e-4)
                cols.append(torch.log(p / (1 - p)))
            else:
                cols.append(v)
        return torch.cat(cols, 1)


def to_model_params(decoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decoded blocks (rotation matrices) -> the body model's parameters (axis-angle)."""
    return {k: rotmat_to_rotvec(v) if v.dim() == 4 else v for k, v in decoded.items()}


def from_model_params(params: dict[str, torch.Tensor], names: Iterable[str]
                      ) -> dict[str, torch.Tensor]:
    """The body model's parameters (axis-angle) -> decoded form (rotation matrices)."""
    return {k: rotvec_to_rotmat(params[k]) if params[k].dim() == 3 else params[k] for k in names}


def camera_translation(cam: torch.Tensor, K: torch.Tensor, crop_size: int) -> torch.Tensor:
    """The model's translation in the camera frame from the network's camera numbers.

    ``cam`` (B, 3) = (s, u, v); ``K`` (B, 3, 3) the crop's intrinsics (the loader's, or the
    inference crop's). The depth is ``z = f / (softplus(s) * S / 2)``, so a metre spans
    ``softplus(s)`` half-crops; the origin projects to the crop pixel
    ``(S/2 + u S/2, S/2 + v S/2)``, and perspective through ``K`` (its principal point is where
    the image centre falls in the crop) puts the person where the crop sits in the image.
    """
    half = crop_size / 2.0
    scale = torch.nn.functional.softplus(cam[:, 0]).clamp_min(1e-3)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    z = fx / (scale * half)
    px = half - 0.5 + cam[:, 1] * half
    py = half - 0.5 + cam[:, 2] * half
    return torch.stack([(px - cx) * z / fx, (py - cy) * z / fy, z], 1)


def camera_numbers(transl: torch.Tensor, K: torch.Tensor, crop_size: int) -> torch.Tensor:
    """The inverse of :func:`camera_translation` (for targets and initial values)."""
    half = crop_size / 2.0
    z = transl[:, 2].clamp_min(1e-3)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    scale = (fx / (z * half)).clamp_min(1e-3)
    s = scale + torch.log(-torch.expm1(-scale))  # softplus^-1
    u = (fx * transl[:, 0] / z + cx - (half - 0.5)) / half
    v = (fy * transl[:, 1] / z + cy - (half - 0.5)) / half
    return torch.stack([s, u, v], 1)
