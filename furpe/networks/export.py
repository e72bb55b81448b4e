"""ONNX export of the network, checked against PyTorch, and running it on ONNX Runtime.

The exported graph takes ``image`` (N, 3, S, S) float RGB in [0, 1] and ``K`` (N, 3, 3) the
crops' intrinsics (N is dynamic) and returns the tensors of :meth:`WholeBodyNet.forward`
without the features and crops: ``body``, ``camera``, ``boxes``, ``part_<name>`` and
``landmarks_body`` and ``world_body`` where the network has them.
Decoding them into body-model parameters (6D to rotations, the camera to a translation) is
the same PyTorch code for both runtimes (:meth:`WholeBodyNet.decode`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from furpe.core.errors import SetupError
from furpe.networks.wholebody import CROP_PARTS, WholeBodyNet

OPSET = 17


def output_names(net: WholeBodyNet) -> list[str]:
    names = ["body", "camera", "boxes"]
    if net.config.parts:
        names += [f"part_{p}" for p in CROP_PARTS]
    if net.body_encoder.has_pose_landmarks:
        names += ["landmarks_body", "world_body"]
    return names


class _Exported(nn.Module):
    def __init__(self, net: WholeBodyNet) -> None:
        super().__init__()
        self.net = net
        self.names = output_names(net)

    def forward(self, image: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(image, K)
        return tuple(out[n] for n in self.names)


def export_onnx(net: WholeBodyNet, path: str | Path, *, check: bool = True,
                batch: int = 2) -> float | None:
    """Write ``net`` (inference mode, on the CPU) to ``path``; with ``check``, run both
    runtimes on random crops and return the largest absolute difference of the outputs."""
    from furpe.core.files import atomic_write

    net = net.cpu().eval()
    S = net.config.input_size
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, S, S, generator=gen)
    K = torch.tensor([[S * 1.5, 0, S / 2], [0, S * 1.5, S / 2], [0, 0, 1]]).expand(batch, 3, 3)
    wrapper = _Exported(net).eval()
    names = wrapper.names
    dynamic = {n: {0: "n"} for n in ["image", "K", *names]}
    with atomic_write(path) as fh, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants and deprecations
        torch.onnx.export(wrapper, (image, K.contiguous()), fh, input_names=["image", "K"],
                          output_names=names, dynamic_axes=dynamic, opset_version=OPSET,
                          dynamo=False)
    if not check:
        return None
    session = onnx_session(path)
    got = run_onnx(session, image.numpy(), K.contiguous().numpy())
    with torch.no_grad():
        want = net(image, K.contiguous())
    return max(float(np.abs(got[n] - want[n].numpy()).max()) for n in names)


def onnx_session(path: str | Path) -> Any:
    """An ONNX Runtime CPU session for an exported network."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SetupError("running a network with ONNX Runtime needs the onnxruntime package "
                         "(pip install onnxruntime)") from None
    if not Path(path).is_file():
        raise SetupError(f"--onnx {path}: no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, image: np.ndarray, K: np.ndarray) -> dict[str, np.ndarray]:
    """The exported network's outputs by name."""
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"image": np.ascontiguousarray(image, dtype=np.float32),
                                 "K": np.ascontiguousarray(K, dtype=np.float32)})
    return dict(zip(names, values))
