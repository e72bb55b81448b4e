"""furpe: whole-body 3D human reconstruction from part experts (FuRPE)."""
from __future__ import annotations

__version__ = "0.1.0"
