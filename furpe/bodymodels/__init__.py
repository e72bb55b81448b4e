"""Body models behind one interface: ``load_body_model("anny")`` or ``("smplx", model_path)``."""
from __future__ import annotations

from pathlib import Path

from furpe.bodymodels.base import BodyModel, BodyOutput, ParamBlock, Regressor
from furpe.errors import FurpeError

BODY_MODELS = ("anny", "smplx")


def load_body_model(name: str = "anny", model_path: str | Path | None = None) -> BodyModel:
    """Load a body model by name.

    ``anny`` needs nothing (its data ships in its wheel; a cache is built on first use).
    ``smplx`` needs ``model_path``, the folder holding the user's own SMPL-X model files.
    """
    if name == "anny":
        from furpe.bodymodels.anny_model import load_anny

        return load_anny()
    if name == "smplx":
        if model_path is None:
            raise FurpeError(
                "--body-model smplx needs --model-path DIR, the folder with your SMPL-X model "
                "files (furpe never downloads them; get them from the SMPL-X authors)"
            )
        from furpe.bodymodels.smplx_model import SMPLXBodyModel

        return SMPLXBodyModel(Path(model_path))
    raise FurpeError(f"unknown body model '{name}'; choose one of {', '.join(BODY_MODELS)}")


__all__ = ["BodyModel", "BodyOutput", "ParamBlock", "Regressor", "load_body_model", "BODY_MODELS"]
