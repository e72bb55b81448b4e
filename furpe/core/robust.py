"""Robust penalties for fitting and training losses."""
from __future__ import annotations

import torch


def gmof(sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure robust penalty of squared residuals (quadratic near 0, saturates at sigma^2)."""
    s2 = sigma * sigma
    return s2 * sq / (sq + s2)
