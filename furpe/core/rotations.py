"""Rotations: axis-angle vectors and rotation matrices (torch, differentiable; via roma)."""
from __future__ import annotations

import numpy as np
import torch


def rotvec_to_rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) to rotation matrices (..., 3, 3) by Rodrigues' formula,
    ``I + sin(t)/t K + (1 - cos(t))/t^2 K^2`` with ``K`` the cross-product matrix; the two
    factors switch to their Taylor series near zero, so values and gradients are exact there.
    (Fewer operations than ``roma.rotvec_to_rotmat``: the fit calls it every iteration.)"""
    t2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]
    small = t2 < 1e-6
    t2s = torch.where(small, torch.ones_like(t2), t2)
    t = t2s.sqrt()
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / t2s)
    x, y, z = rotvec.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).unflatten(-1, (3, 3))
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * K + b * (K @ K)


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


def sixd_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """The continuous 6D form (..., 6) (two matrix columns) to rotation matrices (..., 3, 3),
    by Gram-Schmidt: column 1 normalised, column 2 orthogonalised to it, column 3 their cross
    product."""
    a, b = x[..., 0:3], x[..., 3:6]
    c1 = torch.nn.functional.normalize(a, dim=-1, eps=1e-8)
    c2 = torch.nn.functional.normalize(b - (c1 * b).sum(-1, keepdim=True) * c1, dim=-1, eps=1e-8)
    return torch.stack([c1, c2, torch.cross(c1, c2, dim=-1)], dim=-1)


def rotmat_to_sixd(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) to their 6D form (..., 6): the first two columns."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def geodesic(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """The angle (radians) of ``R1^T R2`` for (..., 3, 3) rotations, as ``atan2(sin, cos)``
    (accurate near 0 and pi, unlike ``acos``); finite gradients everywhere (the sine's norm
    is smoothed by 1e-6 rad at 0)."""
    R = R1.transpose(-1, -2) @ R2
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    v = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                     R[..., 1, 0] - R[..., 0, 1]], -1) / 2
    return torch.atan2(torch.sqrt((v * v).sum(-1) + 1e-12), cos)


def mirror_rotmat(R: torch.Tensor, sign: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mirror rotation matrices whose axis-angle mirrors as ``rotvec * sign`` (``sign`` (3,)
    with two -1 and one +1, e.g. (1, -1, -1) for a reflection across the x axis):
    ``M R M`` with ``M = diag(-sign)``."""
    m = -torch.as_tensor(np.asarray(sign, dtype=np.float32), dtype=R.dtype, device=R.device)
    return m[..., :, None] * R * m[..., None, :]
