"""furpe.core.rotations against roma (a reference implementation of the same maps)."""
from __future__ import annotations

import pytest
import roma
import torch

from furpe.core.rotations import rotvec_to_rotmat


@pytest.mark.parametrize("scale", [0.0, 1e-5, 1e-3, 0.5, 3.0])
def test_rodrigues_matches_roma_in_value_and_gradient(scale: float) -> None:
    """Near zero (the Taylor branch), at moderate and at large angles, in float64."""
    g = torch.Generator().manual_seed(0)
    v = (torch.randn(500, 3, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    w = torch.randn(500, 3, 3, generator=g, dtype=torch.float64)
    ours, ref = rotvec_to_rotmat(v), roma.rotvec_to_rotmat(v)
    assert torch.allclose(ours, ref, atol=1e-12)
    g_ours = torch.autograd.grad((ours * w).sum(), v)[0]
    g_ref = torch.autograd.grad((ref * w).sum(), v)[0]
    assert g_ref.abs().max() > 0.1
    assert torch.allclose(g_ours, g_ref, atol=1e-9)
    # rotations: orthonormal with determinant 1
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(ours.transpose(-1, -2) @ ours, eye.expand(500, 3, 3), atol=1e-12)
