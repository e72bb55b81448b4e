"""Rotations: axis-angle vectors and rotation matrices (torch, differentiable; via roma)."""
from __future__ import annotations

import numpy as np
import torch


def rotvec_to_rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) to rotation matrices (..., 3, 3), differentiable at zero."""
    import roma

    return roma.rotvec_to_rotmat(rotvec)


def rotmat_to_rotvec(R: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) to axis-angle (..., 3); NumPy input is read as float64."""
    import roma

    if isinstance(R, np.ndarray):
        R = torch.as_tensor(R, dtype=torch.float64)
    return roma.rotmat_to_rotvec(R)


def compose_rotvec(outer: np.ndarray | torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Axis-angle of ``R_outer @ R(inner)``; ``outer`` is a (3, 3) matrix."""
    R = torch.as_tensor(outer, dtype=torch.float32) @ rotvec_to_rotmat(inner.to(torch.float32))
    return rotmat_to_rotvec(R)
