"""Body models behind one interface: ``load_body_model("anny")`` or ``("smplx", model_path)``.

Body models are found through the registry (kind ``body_model``); a new one is registered
there, see :mod:`furpe.core.registry`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from furpe.bodymodels.base import BodyModel, BodyOutput, ParamBlock, Regressor
from furpe.core.registry import lookup


def load_body_model(name: str = "anny", model_path: str | Path | None = None,
                    device: str | torch.device = "cpu") -> BodyModel:
    """The body model registered as ``name``, on ``device``.

    ``anny`` needs nothing (its data ships in its wheel; a cache is built on first use) and
    is shared per process and device. ``smplx`` needs ``model_path``, the folder holding the
    user's own SMPL-X model files.
    """
    return lookup("body_model", name)(model_path=model_path, device=device)


__all__ = ["BodyModel", "BodyOutput", "ParamBlock", "Regressor", "load_body_model"]
