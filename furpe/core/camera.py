"""Perspective camera: intrinsics and projection (camera frame x right, y down, z forward)."""
from __future__ import annotations

import math

import numpy as np
import torch

#: Default field of view along the longer image side when no focal length is given: a focal
#: length equal to the longer side in pixels, i.e. 2*atan(0.5) = 53.13 degrees, close to a
#: phone's main camera (about 50-65 degrees).
DEFAULT_FOV_DEGREES = math.degrees(2 * math.atan(0.5))


def intrinsics(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """3x3 pinhole intrinsics with the principal point at the image centre.

    Pixel coordinates follow the integer-centre convention: pixel (0, 0) covers
    [-0.5, 0.5]^2, so the centre of a W x H image is ((W - 1) / 2, (H - 1) / 2).
    """
    if focal is None:
        focal = max(width, height) / (2.0 * math.tan(math.radians(DEFAULT_FOV_DEGREES) / 2))
    if focal <= 0:
        raise ValueError("focal length must be positive")
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def project(points: torch.Tensor, K: torch.Tensor, min_depth: float = 1e-3) -> torch.Tensor:
    """Project (..., 3) camera-frame points to (..., 2) pixels with intrinsics K (3, 3)."""
    z = points[..., 2:3].clamp(min=min_depth)
    xy = points[..., :2] / z
    return xy * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])


#: Side of a person crop over the side of the person box (training loader and inference).
PERSON_CROP_EXPAND = 1.2


def crop_transform(centre: np.ndarray, side: float, K: np.ndarray, size: int,
                   theta: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square crop of ``side`` pixels around ``centre``, rolled by ``theta`` radians,
    resampled to ``size``: ``(A, Kc, Rz)``, the (2, 3) image-to-crop affine map, the crop's
    intrinsics (the camera rolled about its axis, then scaled and shifted) and the roll
    (3, 3) that parameters in the camera frame take in the crop's frame."""
    s = size / side
    c, sn = math.cos(theta), math.sin(theta)
    R2 = np.array([[c, -sn], [sn, c]])
    # image -> crop: u' = s R2 (u - centre) + (size - 1) / 2
    A = np.hstack([s * R2, ((size - 1) / 2 - s * R2 @ np.asarray(centre))[:, None]])
    pp = A[:, :2] @ K[:2, 2] + A[:, 2]
    Kc = np.array([[s * K[0, 0], 0, pp[0]], [0, s * K[1, 1], pp[1]], [0, 0, 1.0]])
    return A, Kc, np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1.0]])
