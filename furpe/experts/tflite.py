"""The bundled MediaPipe landmark networks rebuilt in PyTorch, weights and all.

:class:`TFLiteNet` parses a ``.tflite`` flatbuffer (with the ``tflite`` package) and runs its
graph op by op with ``torch.nn.functional``: its fp16 weights are dequantised once into fp32
parameters named after their op and its index in the graph (``weights["conv_2d_2_weight"]``,
``weights["prelu_4_alpha"]``, ...), so the network is batched, differentiable, moves to CUDA
with ``.to()`` and exports to ONNX (``torch.onnx.export``, either exporter). Activations are
NCHW where TFLite has NHWC: every 4-D tensor (input, outputs, taps) is (B, C, H, W); other
tensors keep their TFLite layout, batch first.

:func:`expert_network` builds one of the bundled networks straight from its ``.task`` bundle.
Each takes RGB in [0, 1] (``uint8 / 255``, no mean or std) on a square crop (checked against
the MediaPipe Tasks landmarkers in ``tests/test_tflite_rebuild.py``); landmarks come in pixels
of that crop (x, y, then z on the x scale), world landmarks in metres. Measured:

* ``hand``: 224 px, 2.72 M parameters. ``Identity`` (B, 63) 21 landmarks, ``Identity_1``
  (B, 1) presence, ``Identity_2`` (B, 1) probability of a right hand (the Tasks landmarker's
  "Right"), ``Identity_3`` (B, 63) world landmarks. Feature 1152, map 1152 x 7 x 7.
* ``face``: 256 px, 1.20 M. ``Identity`` (B, 1434, 1, 1) 478 landmarks, ``Identity_1``
  (B, 1, 1, 1) face-presence logit, ``Identity_2`` (B, 1) a sigmoid score (near 0 on faces
  and background alike). Feature 128, map 128 x 2 x 2.
* ``pose_full`` / ``pose_heavy``: 256 px, 3.17 M / 13.75 M. ``Identity`` (B, 195) 39 x (x, y,
  z, visibility logit, presence logit) - 33 landmarks, then MediaPipe's two auxiliary ones
  (hip centre, scale point) and four unused; ``Identity_1`` (B, 1) presence; ``Identity_2``
  (B, 1, 256, 256) segmentation logits; ``Identity_3`` (B, 39, 64, 64) heatmap logits;
  ``Identity_4`` (B, 117) world landmarks. Feature 288, map 288 x 2 x 2.

The feature (:meth:`TFLiteNet.features`): ``feature_map`` (B, C, h, w) is the map the landmark
head reads, found by walking back from the landmark output to the first tensor with a spatial
extent (hand: the last block, before the global pooling; pose and face: the last 2 x 2 block,
which the landmark convolution reads whole); ``feature`` (B, C) is its global average, for
``hand`` exactly the pooled vector its fully connected heads read.
"""
from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from torch import nn

from furpe.experts.models import model_path

EXPERT_NETWORKS = {
    "hand": ("hand_landmarker.task", "hand_landmarks_detector.tflite"),
    "face": ("face_landmarker.task", "face_landmarks_detector.tflite"),
    "pose_full": ("pose_landmarker_full.task", "pose_landmarks_detector.tflite"),
    "pose_heavy": ("pose_landmarker_heavy.task", "pose_landmarks_detector.tflite"),
}
"""The bundled landmark networks: name -> (bundle in ``furpe/data/models``, member)."""

_OPS = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
           tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64}
_ACTIVATIONS = {tflite.ActivationFunctionType.NONE: "none",
                tflite.ActivationFunctionType.RELU: "relu",
                tflite.ActivationFunctionType.RELU_N1_TO_1: "hardtanh",
                tflite.ActivationFunctionType.RELU6: "relu6",
                tflite.ActivationFunctionType.TANH: "tanh"}
_ACT = {"none": lambda x: x, "relu": F.relu, "hardtanh": F.hardtanh, "relu6": F.relu6,
        "tanh": torch.tanh}
_OPTIONS = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
            "MAX_POOL_2D": tflite.Pool2DOptions, "ADD": tflite.AddOptions,
            "FULLY_CONNECTED": tflite.FullyConnectedOptions, "MEAN": tflite.ReducerOptions,
            "RESIZE_BILINEAR": tflite.ResizeBilinearOptions}


def _to_tf(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _from_tf(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def _same_padding(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                  dilation: Sequence[int], value: float = 0.0) -> tuple[torch.Tensor, tuple]:
    """TF's SAME padding (an odd extra row or column goes after): ``x`` padded here when that
    is asymmetric, and the symmetric padding left for the op."""
    pads = []
    for size, k, s, d in zip(x.shape[2:], kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    if all(a == b for a, b in pads):
        return x, tuple(a for a, _ in pads)
    return F.pad(x, (*pads[1], *pads[0]), value=value), (0, 0)


def _resize_bilinear(x: torch.Tensor, size: Sequence[int], align_corners: bool,
                     half_pixel: bool) -> torch.Tensor:
    """TFLite's RESIZE_BILINEAR on an NCHW tensor; its legacy mapping (neither flag:
    source = destination * in / out) has no ``F.interpolate`` mode and is done by hand."""
    if align_corners or half_pixel:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)
    for dim, n in ((2, size[0]), (3, size[1])):
        src = torch.arange(n, device=x.device, dtype=x.dtype) * (x.shape[dim] / n)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=x.shape[dim] - 1)
        w = (src - lo).view([n if d == dim else 1 for d in range(4)])
        x = torch.lerp(x.index_select(dim, lo), x.index_select(dim, hi), w)
    return x


class TFLiteNet(nn.Module):
    """A single-graph float TFLite model (``.tflite`` bytes or path) as a PyTorch module.

    ``forward(x)`` takes the NCHW input (B, C, H, W) and returns the graph outputs by their
    TFLite names, plus the tensors named in ``taps``. An op this module does not implement is
    a ``NotImplementedError`` naming it. ``input_hw`` is the model's input (H, W),
    ``input_size`` its side when square."""

    def __init__(self, model: bytes | str | Path, name: str = "") -> None:
        super().__init__()
        data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
        self.name = name
        m = tflite.Model.GetRootAsModel(data, 0)
        if m.SubgraphsLength() != 1:
            raise NotImplementedError(f"{name or 'model'}: {m.SubgraphsLength()} subgraphs")
        g = m.Subgraphs(0)
        tensors = [g.Tensors(i) for i in range(g.TensorsLength())]
        self.names = [t.Name().decode() for t in tensors]
        self.shapes = [tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
                       for t in tensors]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.input_index = int(g.Inputs(0))
        self.output_indices = [int(i) for i in g.OutputsAsNumpy()]
        self.input_hw = self.shapes[self.input_index][1:3]
        self.input_size: int | None = self.input_hw[0] if self.input_hw[0] == self.input_hw[1] \
            else None
        self.weights = nn.ParameterDict()
        self.steps: list[tuple[str, list, int, dict[str, Any]]] = []
        folded: dict[int, np.ndarray] = {}
        keys: dict[tuple[int, str | int], str] = {}

        def const(i: int) -> np.ndarray | None:
            """Constant tensor ``i`` as stored (None for an activation)."""
            if i in folded:
                return folded[i]
            t, buf = tensors[i], m.Buffers(tensors[i].Buffer())
            if buf.DataLength():
                raw = buf.DataAsNumpy().tobytes()
            elif buf.Offset() > 1:  # stored after the flatbuffer (models over 2 GB)
                raw = data[buf.Offset():buf.Offset() + buf.Size()]
            else:
                return None
            if t.Type() not in _DTYPES:
                raise NotImplementedError(f"constant '{self.names[i]}' of TFLite type {t.Type()}")
            return np.frombuffer(raw, _DTYPES[t.Type()]).reshape(self.shapes[i])

        def param(i: int, op: str, role: str, layout: str | int = "") -> str | None:
            """The key of constant tensor ``i`` as a parameter (registered on first use):
            ``layout`` "conv" or "depthwise" for a kernel, or the rank of the tensor it
            broadcasts against (in our layout)."""
            if i < 0:
                return None
            if (i, layout) not in keys:
                a = const(i).astype(np.float32)
                if layout == "conv":  # (O, kh, kw, I) -> (O, I, kh, kw)
                    a = a.transpose(0, 3, 1, 2)
                elif layout == "depthwise":  # (1, kh, kw, C * M) -> (C * M, 1, kh, kw)
                    a = a.transpose(3, 0, 1, 2)
                elif isinstance(layout, int):
                    a = a.reshape((1,) * (layout - a.ndim) + a.shape)
                    a = a.transpose(0, 3, 1, 2) if a.ndim == 4 else a
                keys[i, layout] = f"{op}_{role}"
                self.weights[keys[i, layout]] = nn.Parameter(torch.from_numpy(a.copy()))
            return keys[i, layout]

        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            code = m.OperatorCodes(op.OpcodeIndex())
            number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            kind = _OPS.get(number, f"builtin {number}")
            if kind == "CUSTOM":
                kind = f"CUSTOM ({code.CustomCode().decode()})"
            ins = [int(i) for i in op.InputsAsNumpy()]
            out = int(op.Outputs(0))
            tag = f"{kind.lower()}_{k}"
            o = None
            if kind in _OPTIONS:
                o = _OPTIONS[kind]()
                o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            act = {}
            if hasattr(o, "FusedActivationFunction"):
                if o.FusedActivationFunction() not in _ACTIVATIONS:
                    raise NotImplementedError(f"{kind} (op {k}): fused activation "
                                              f"{o.FusedActivationFunction()}")
                act = {"act": _ACTIVATIONS[o.FusedActivationFunction()]}
            if kind == "DEQUANTIZE" and const(ins[0]) is not None:
                if const(ins[0]).dtype.kind != "f":
                    raise NotImplementedError(f"DEQUANTIZE (op {k}) of integer weights")
                folded[out] = const(ins[0]).astype(np.float32)
                continue
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                layout = "conv" if kind == "CONV_2D" else "depthwise"
                args = [ins[0], param(ins[1], tag, "weight", layout),
                        param(ins[2] if len(ins) > 2 else -1, tag, "bias")]
                opts = dict(stride=(o.StrideH(), o.StrideW()), same=o.Padding() == 0,
                            dilation=(o.DilationHFactor(), o.DilationWFactor()), **act)
            elif kind == "MAX_POOL_2D":
                args, opts = [ins[0]], dict(kernel=(o.FilterHeight(), o.FilterWidth()),
                                            stride=(o.StrideH(), o.StrideW()),
                                            same=o.Padding() == 0, **act)
            elif kind in ("ADD", "PRELU"):
                rank = len(self.shapes[out])
                args = [i if const(i) is None else param(i, tag, "alpha" if kind == "PRELU"
                                                           else f"const{n}", rank)
                        for n, i in enumerate(ins)]
                opts = act
            elif kind == "FULLY_CONNECTED":
                args = [ins[0], param(ins[1], tag, "weight"),
                        param(ins[2] if len(ins) > 2 else -1, tag, "bias")]
                opts = dict(keep_dims=o.KeepNumDims(), **act)
            elif kind == "MEAN":
                args, opts = [ins[0]], dict(axes=const(ins[1]).reshape(-1).tolist(),
                                            keep_dims=o.KeepDims())
            elif kind == "RESHAPE":
                shape = const(ins[1]).tolist() if len(ins) > 1 else list(self.shapes[out])
                args, opts = [ins[0]], dict(shape=[-1, *shape[1:]])
            elif kind == "PAD":
                args, opts = [ins[0]], dict(pads=const(ins[1]).tolist())
            elif kind == "RESIZE_BILINEAR":
                args, opts = [ins[0]], dict(size=const(ins[1]).tolist(),
                                            align_corners=o.AlignCorners(),
                                            half_pixel=o.HalfPixelCenters())
            elif kind == "LOGISTIC":
                args, opts = [ins[0]], {}
            else:
                raise NotImplementedError(f"TFLite op {kind} (op {k}, output "
                                          f"'{self.names[out]}') is not supported")
            self.steps.append((kind, args, out, opts))

    @cached_property
    def feature_map_name(self) -> str:
        """The feature map's tensor: the first one with a spatial extent up the first output's
        (the landmarks') chain of first inputs."""
        producer = {out: args for _, args, out, _ in self.steps}
        i = self.output_indices[0]
        while len(self.shapes[i]) != 4 or self.shapes[i][1] * self.shapes[i][2] == 1:
            i = next(a for a in producer[i] if isinstance(a, int))
        return self.names[i]

    def _run_op(self, kind: str, x: torch.Tensor, *args: Any, act: str = "none",
                **o: Any) -> torch.Tensor:
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):  # depthwise: one group per input channel
            w, b = args
            x, pad = _same_padding(x, w.shape[2:], o["stride"], o["dilation"]) if o["same"] \
                else (x, 0)
            y = F.conv2d(x, w, b, o["stride"], pad, o["dilation"], x.shape[1] // w.shape[1])
        elif kind == "MAX_POOL_2D":
            x, pad = _same_padding(x, o["kernel"], o["stride"], (1, 1), -math.inf) \
                if o["same"] else (x, 0)
            y = F.max_pool2d(x, o["kernel"], o["stride"], pad)
        elif kind == "ADD":
            y = x + args[0]
        elif kind == "PRELU":
            y = torch.where(x >= 0, x, x * args[0])
        elif kind == "FULLY_CONNECTED":
            w, b = args
            x = _to_tf(x)
            y = F.linear(x.reshape(-1, w.shape[1]), w, b)
            y = y.reshape(*x.shape[:-1], -1) if o["keep_dims"] else y
        elif kind == "MEAN":
            y = _from_tf(_to_tf(x).mean(o["axes"], keepdim=o["keep_dims"]))
        elif kind == "RESHAPE":
            y = _from_tf(_to_tf(x).reshape(o["shape"]))
        elif kind == "PAD":
            y = _from_tf(F.pad(_to_tf(x), [p for pair in reversed(o["pads"]) for p in pair]))
        elif kind == "RESIZE_BILINEAR":
            y = _resize_bilinear(x, o["size"], o["align_corners"], o["half_pixel"])
        else:  # LOGISTIC
            y = torch.sigmoid(x)
        return _ACT[act](y)

    def run(self, x: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names`` (TFLite tensor names) for input ``x``, running only the ops
        they need."""
        names = list(names)
        unknown = [n for n in names if n not in self.index]
        if unknown:
            raise KeyError(f"{self.name or 'model'} has no tensor {', '.join(unknown)}")
        wanted = {self.index[n] for n in names}
        needed, steps = set(wanted), []
        for step in reversed(self.steps):
            if step[2] in needed:
                steps.append(step)
                needed.update(a for a in step[1] if isinstance(a, int))
        last_use = {a: s for s, step in enumerate(reversed(steps)) for a in step[1]
                    if isinstance(a, int)}
        env = {self.input_index: x}
        for s, (kind, args, out, opts) in enumerate(reversed(steps)):
            values = [env[a] if isinstance(a, int) else None if a is None else self.weights[a]
                      for a in args]
            env[out] = self._run_op(kind, *values, **opts)
            for a in args:
                if isinstance(a, int) and last_use[a] == s and a not in wanted:
                    env.pop(a, None)
        return {n: env[self.index[n]] for n in names}

    def forward(self, x: torch.Tensor, taps: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """The graph outputs by TFLite name (4-D ones NCHW), plus the tensors in ``taps``."""
        return self.run(x, [self.names[i] for i in self.output_indices] + list(taps))

    @cached_property
    def head_output_names(self) -> list[str]:
        """The graph outputs that are not image-like maps: landmarks, world landmarks and
        scores (pose: not the segmentation and the heatmaps)."""
        return [self.names[i] for i in self.output_indices
                if len(self.shapes[i]) != 4 or self.shapes[i][1] * self.shapes[i][2] == 1]

    def features(self, x: torch.Tensor, outputs: bool = False) -> dict[str, torch.Tensor]:
        """``feature_map`` (B, C, h, w), the map the landmark head reads, and ``feature``
        (B, C), its global average (see the module docstring); with ``outputs`` also
        ``outputs`` (B, N), the :attr:`head_output_names` flattened and concatenated."""
        names = [self.feature_map_name] + (self.head_output_names if outputs else [])
        got = self.run(x, names)
        fmap = got[self.feature_map_name]
        out = {"feature_map": fmap, "feature": fmap.mean((2, 3))}
        if outputs:
            out["outputs"] = torch.cat([got[n].flatten(1) for n in self.head_output_names], 1)
        return out


def expert_network(name: str, folder: Path | None = None) -> TFLiteNet:
    """The bundled landmark network ``name`` (``hand``, ``face``, ``pose_full``,
    ``pose_heavy``), read from its ``.task`` bundle in ``folder`` (default: the shipped
    models, checked by :func:`~furpe.experts.models.model_path`)."""
    if name not in EXPERT_NETWORKS:
        raise ValueError(f"unknown expert network '{name}'; known: {', '.join(EXPERT_NETWORKS)}")
    bundle, member = EXPERT_NETWORKS[name]
    with zipfile.ZipFile(model_path(bundle, folder)) as z:
        return TFLiteNet(z.read(member), name=name)
