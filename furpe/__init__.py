"""furpe: whole-body 3D human reconstruction from part experts (FuRPE).

Python API::

    import furpe
    frame = furpe.reconstruct(rgb_image)            # or furpe.Reconstructor(config).reconstruct_image
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `furpe --version` and `furpe --help` must not import torch.
    if name in ("Reconstructor", "reconstruct"):
        from furpe import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'furpe' has no attribute {name!r}")


__all__ = ["Reconstructor", "reconstruct", "__version__"]
