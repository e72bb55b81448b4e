"""Image backbones in plain PyTorch whose weights load from torchvision and timm files.

The modules here are written from the published architectures (He et al. 2016 for the
ResNets, in torchvision's "v1.5" form with the stride on the 3x3 convolution; Wang et al.
2019 for HRNet, in the layout of timm's ``HighResolutionNet``) and name their parameters
and buffers exactly as those two libraries do, so that a weight file the user already has

* torchvision ``resnet18`` / ``resnet34`` / ``resnet50`` (``.pth``), or
* timm ``hrnet_w18_small_v2`` / ``hrnet_w18`` / ``hrnet_w32`` / ``hrnet_w48``
  (``.pth``, ``.bin`` or ``.safetensors``)

loads with :func:`load_weights` without renaming. Neither library is imported. The
classifier heads (torchvision's ``fc``; timm's ``incre_modules``, ``downsamp_modules``,
``final_layer`` and ``classifier``) are not built; :func:`load_weights` drops their keys.

Modules:

* :class:`ResNet`: ``forward`` returns the ``layer4`` map (stride 32); a ``width``
  multiplier scales every channel count (0.5: 32-64-128-256 for ``resnet18``), for
  CPU-sized models that keep the same parameter names.
* :class:`HRNet`: the timm trunk (stem ``conv1/bn1/conv2/bn2``, ``layer1``,
  ``transition1..3``, ``stage2..4``); ``forward`` returns the four branch maps (strides
  4, 8, 16, 32).
* :class:`HRNetStride4`: one map, the four branches upsampled (bilinear) to stride 4 and
  concatenated (HRNetV2's representation; ``15 * w`` channels).
* :class:`HRNetConcat`: the FuRPE/ExPose body variant: stages 1-3 and ``transition3``
  only (no ``stage4``); branch 2 through two and branch 3 through one
  conv3x3-stride-2 + BN + ReLU layer, branch 4 as is, concatenated at stride 32 and
  passed through two Bottleneck blocks to a 2048-channel map. The stride-4 branch is not
  used. Its new layers (``furpe_down``, ``furpe_blocks``) are absent from timm files and
  keep their initialisation when a timm file is loaded.

:func:`build_backbone` builds one of these by name (:data:`BACKBONE_NAMES`); every module
it returns has ``out_channels`` and a ``forward`` returning ONE map ``(B, C, h, w)``. For
the HRNet names that is :class:`HRNetConcat` (stride 32, 2048 channels, the paper's body
backbone, so every backbone ends at stride 32) unless ``head="stride4"`` is passed.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from furpe.core.errors import SetupError

__all__ = [
    "BACKBONE_NAMES",
    "BasicBlock",
    "Bottleneck",
    "HRNet",
    "HRNetConcat",
    "HRNetSpec",
    "HRNetStride4",
    "HRNET_SPECS",
    "RESNET_LAYERS",
    "ResNet",
    "backbone_names",
    "build_backbone",
    "load_weights",
]

WeightSource = Union[str, os.PathLike, Mapping[str, Any]]


# --------------------------------------------------------------------------- blocks

def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (``conv1 bn1 conv2 bn2 [downsample]``)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip, inplace=True)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual connection
    (``conv1 bn1 conv2 bn2 conv3 bn3 [downsample]``)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip, inplace=True)


Block = Union[type[BasicBlock], type[Bottleneck]]


def _residual_layer(block: Block, in_channels: int, planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first carries the stride and, when the shape changes,
    a ``downsample`` = ``Sequential(conv1x1, BN)`` on its skip path."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(_conv1x1(in_channels, out_channels, stride),
                                   nn.BatchNorm2d(out_channels))
    layers = [block(in_channels, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _conv_bn(cin: int, cout: int, stride: int, relu: bool = True) -> nn.Sequential:
    """``Sequential(conv3x3, BN[, ReLU])``: the unit of HRNet's transitions and fusions."""
    layers: list[nn.Module] = [_conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    """He (fan-out) initialisation of convolutions; BatchNorm to the identity. Modules built
    on the ``meta`` device (shapes only) are left alone."""
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- ResNet

#: Block type and blocks per stage of each ResNet configuration.
RESNET_LAYERS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResNet(nn.Module):
    """torchvision's ResNet without ``avgpool``/``fc``: ``conv1`` (7x7, stride 2), ``bn1``,
    max pool, ``layer1..layer4``.

    ``width`` scales every channel count (stem and the four stages); names are unchanged,
    so a ``width=1`` module loads torchvision's files. ``forward`` returns the ``layer4``
    map (stride 32, ``out_channels`` channels); :meth:`forward_stages` returns all four.
    """

    #: Keys of classifier weights in torchvision files, dropped by :func:`load_weights`.
    ignored_weight_prefixes: tuple[str, ...] = ("fc.",)

    def __init__(self, name: str = "resnet18", width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if name not in RESNET_LAYERS:
            raise SetupError(f"unknown ResNet {name!r}; known: {', '.join(RESNET_LAYERS)}")
        if not width > 0:
            raise SetupError(f"ResNet width must be positive, got {width}")
        block, blocks = RESNET_LAYERS[name]
        self.name = name
        self.width = float(width)
        stem = _scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = stem
        stage_channels = []
        for i, n in enumerate(blocks):
            planes = _scaled(64 * 2 ** i, width)
            layer = _residual_layer(block, channels, planes, n, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", layer)
            channels = planes * block.expansion
            stage_channels.append(channels)
        #: Channels of the ``layer1..layer4`` maps (strides 4, 8, 16, 32).
        self.stage_channels: tuple[int, ...] = tuple(stage_channels)
        #: Channels of the map :meth:`forward` returns.
        self.out_channels: int = channels
        _init_weights(self)

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The ``layer1..layer4`` maps, at strides 4, 8, 16 and 32."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, ceil(H/32), ceil(W/32))``."""
        return self.forward_stages(x)[-1]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, width={self.width:g}"


# --------------------------------------------------------------------------- HRNet

@dataclass(frozen=True)
class HRNetSpec:
    """One HRNet configuration (timm's ``cfg_cls`` entry, reduced to what varies here)."""

    #: Channels of the stride-4 branch; branch ``b`` has ``width * 2**b``.
    width: int
    #: Bottleneck blocks in ``layer1`` (64 planes, 256 channels out).
    layer1_blocks: int
    #: High-resolution modules in stages 2, 3 and 4.
    modules: tuple[int, int, int]
    #: BasicBlocks per branch in every high-resolution module.
    blocks: int


#: The configurations of timm's models of the same names.
HRNET_SPECS: dict[str, HRNetSpec] = {
    "hrnet_w18_small_v2": HRNetSpec(width=18, layer1_blocks=2, modules=(1, 3, 2), blocks=2),
    "hrnet_w18": HRNetSpec(width=18, layer1_blocks=4, modules=(1, 4, 3), blocks=4),
    "hrnet_w32": HRNetSpec(width=32, layer1_blocks=4, modules=(1, 4, 3), blocks=4),
    "hrnet_w48": HRNetSpec(width=48, layer1_blocks=4, modules=(1, 4, 3), blocks=4),
}

#: Keys of timm's classification head, dropped by :func:`load_weights` (not built here).
_HRNET_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


class HRModule(nn.Module):
    """One high-resolution module: ``branches`` (BasicBlocks at each resolution) then
    ``fuse_layers`` (every output branch sums all branches brought to its resolution).

    ``fuse_layers[i][j]`` is: for ``j > i`` ``Sequential(conv1x1, BN)`` followed by a
    nearest upsampling to branch ``i``'s size; for ``j == i`` the identity; for ``j < i``
    ``i - j`` units ``Sequential(conv3x3 stride 2, BN[, ReLU])``, the last without ReLU
    and with branch ``i``'s channels.
    """

    def __init__(self, channels: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            _residual_layer(BasicBlock, c, c, blocks) for c in channels)
        rows = []
        for i in range(n if n > 1 else 0):
            row: list[nn.Module] = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(_conv1x1(channels[j], channels[i]),
                                             nn.BatchNorm2d(channels[i])))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [_conv_bn(channels[j], channels[j], 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 2, relu=False))
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(self.fuse_layers) == 0:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            total: Tensor | None = None
            for j, fuse in enumerate(row):
                y = fuse(xs[j])
                if j > i:
                    y = F.interpolate(y, size=xs[i].shape[-2:], mode="nearest")
                total = y if total is None else total + y
            assert total is not None
            out.append(F.relu(total))
        return out


def _transition(previous: tuple[int, ...], current: tuple[int, ...]) -> nn.ModuleList:
    """From ``previous`` branches to ``current`` ones: an existing branch whose width changes
    gets ``Sequential(conv3x3, BN, ReLU)`` (else the identity); a new branch comes from the
    last previous one through ``Sequential(Sequential(conv3x3 stride 2, BN, ReLU), ...)``."""
    layers: list[nn.Module] = []
    for i, c in enumerate(current):
        if i < len(previous):
            layers.append(_conv_bn(previous[i], c, 1) if previous[i] != c else nn.Identity())
        else:
            last = previous[-1]
            extra = i + 1 - len(previous)
            steps = [_conv_bn(last, c if k == extra - 1 else last, 2) for k in range(extra)]
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _apply_transition(transition: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
    return [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]


class HRNet(nn.Module):
    """timm's HRNet trunk without its classification head.

    Stem ``conv1 bn1`` (3x3 stride 2, 64 channels), ``conv2 bn2`` (3x3 stride 2), ``layer1``
    (Bottlenecks, 256 channels at stride 4), then ``transition1 stage2 transition2 stage3
    transition3 stage4`` growing to four branches of ``w, 2w, 4w, 8w`` channels at strides
    4, 8, 16, 32. ``forward`` returns those four maps (``branch_channels``).
    """

    #: Keys of timm's classification head, dropped by :func:`load_weights`.
    ignored_weight_prefixes: tuple[str, ...] = _HRNET_HEAD

    def __init__(self, name: str = "hrnet_w18", in_channels: int = 3, *,
                 _with_stage4: bool = True) -> None:
        super().__init__()
        if name not in HRNET_SPECS:
            raise SetupError(f"unknown HRNet {name!r}; known: {', '.join(HRNET_SPECS)}")
        spec = HRNET_SPECS[name]
        self.name = name
        self.spec = spec
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.layer1 = _residual_layer(Bottleneck, 64, 64, spec.layer1_blocks)
        ch = tuple(spec.width * 2 ** b for b in range(4))
        self.transition1 = _transition((64 * Bottleneck.expansion,), ch[:2])
        self.stage2 = self._stage(ch[:2], spec.modules[0], spec.blocks)
        self.transition2 = _transition(ch[:2], ch[:3])
        self.stage3 = self._stage(ch[:3], spec.modules[1], spec.blocks)
        self.transition3 = _transition(ch[:3], ch)
        self.stage4 = self._stage(ch, spec.modules[2], spec.blocks) if _with_stage4 else None
        #: Channels of the four branch maps (strides 4, 8, 16, 32).
        self.branch_channels: tuple[int, ...] = ch
        _init_weights(self)

    @staticmethod
    def _stage(channels: tuple[int, ...], modules: int, blocks: int) -> nn.Sequential:
        return nn.Sequential(*(HRModule(channels, blocks) for _ in range(modules)))

    def forward_branches(self, x: Tensor) -> list[Tensor]:
        """The four branch maps (after ``stage4``, or after ``transition3`` when the module
        has no ``stage4``)."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        xs = [self.layer1(x)]
        stages = [(self.transition1, self.stage2), (self.transition2, self.stage3),
                  (self.transition3, self.stage4)]
        for transition, stage in stages:
            xs = _apply_transition(transition, xs)
            if stage is not None:
                for module in stage:
                    xs = module(xs)
        return xs

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        """``(B, in_channels, H, W)`` -> four maps ``(B, branch_channels[b], H/2**(b+2), ...)``."""
        return self.forward_branches(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class HRNetStride4(HRNet):
    """HRNet returning one map: the four branches upsampled (bilinear) to the stride-4 size
    and concatenated, ``out_channels = 15 * w`` (HRNetV2's representation)."""

    def __init__(self, name: str = "hrnet_w18", in_channels: int = 3) -> None:
        super().__init__(name, in_channels)
        self.out_channels: int = sum(self.branch_channels)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``(B, in_channels, H, W)`` -> ``(B, 15 * w, H/4, W/4)``."""
        xs = self.forward_branches(x)
        size = xs[0].shape[-2:]
        ups = [xs[0]] + [F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                         for y in xs[1:]]
        return torch.cat(ups, dim=1)


class HRNetConcat(HRNet):
    """The FuRPE/ExPose body backbone: HRNet up to ``transition3`` (no ``stage4``), then
    branch 2 (stride 8) through two and branch 3 (stride 16) through one
    ``Sequential(conv3x3 stride 2, BN, ReLU)`` (``furpe_down``), branch 4 as is,
    concatenated at stride 32 (``14 * w`` channels) and passed through ``blocks``
    Bottleneck blocks (``furpe_blocks``) to ``out_channels = 2048``.

    A timm file fills the trunk; ``furpe_down`` and ``furpe_blocks`` are not in it and keep
    their initialisation (:func:`load_weights` accepts their absence, all or nothing).
    """

    ignored_weight_prefixes = _HRNET_HEAD + ("stage4.",)
    #: Layers that timm files lack; they may be missing from a file as a whole.
    optional_weight_prefixes: tuple[str, ...] = ("furpe_down.", "furpe_blocks.")

    def __init__(self, name: str = "hrnet_w48", in_channels: int = 3, blocks: int = 2) -> None:
        super().__init__(name, in_channels, _with_stage4=False)
        ch = self.branch_channels
        self.furpe_down = nn.ModuleList([
            nn.Sequential(_conv_bn(ch[1], ch[1], 2), _conv_bn(ch[1], ch[1], 2)),
            nn.Sequential(_conv_bn(ch[2], ch[2], 2)),
        ])
        planes = 2048 // Bottleneck.expansion
        self.furpe_blocks = _residual_layer(Bottleneck, ch[1] + ch[2] + ch[3], planes, blocks)
        self.out_channels: int = planes * Bottleneck.expansion
        _init_weights(self.furpe_down)
        _init_weights(self.furpe_blocks)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``(B, in_channels, H, W)`` -> ``(B, 2048, ceil(H/32), ceil(W/32))``."""
        xs = self.forward_branches(x)
        y = torch.cat([self.furpe_down[0](xs[1]), self.furpe_down[1](xs[2]), xs[3]], dim=1)
        return self.furpe_blocks(y)


# --------------------------------------------------------------------------- registry

def _hrnet(name: str, head: str = "furpe", **kw: Any) -> nn.Module:
    if head == "furpe":
        return HRNetConcat(name, **kw)
    if head == "stride4":
        return HRNetStride4(name, **kw)
    raise SetupError(f"unknown HRNet head {head!r} for {name}; use 'furpe' or 'stride4'")


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(ResNet, name) for name in RESNET_LAYERS},
    **{name: partial(_hrnet, name) for name in HRNET_SPECS},
}

#: Names :func:`build_backbone` knows.
BACKBONE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def backbone_names() -> tuple[str, ...]:
    """The names :func:`build_backbone` knows (:data:`BACKBONE_NAMES`)."""
    return BACKBONE_NAMES


def build_backbone(name: str, weights: WeightSource | None = None, **kw: Any) -> nn.Module:
    """A backbone by name, returning ONE map ``(B, out_channels, h, w)`` from ``forward``.

    * ``resnet18``, ``resnet34``, ``resnet50``: :class:`ResNet` (options ``width``,
      ``in_channels``), the stride-32 ``layer4`` map.
    * ``hrnet_w18_small_v2``, ``hrnet_w18``, ``hrnet_w32``, ``hrnet_w48``: by default
      (``head="furpe"``) :class:`HRNetConcat`, 2048 channels at stride 32 (option
      ``blocks``); with ``head="stride4"`` :class:`HRNetStride4`, ``15 * w`` channels at
      stride 4. Option ``in_channels`` for both.

    ``weights``, when given, is loaded with :func:`load_weights`.
    """
    if name not in _BUILDERS:
        raise SetupError(f"unknown backbone {name!r}; known: {', '.join(BACKBONE_NAMES)}")
    module = _BUILDERS[name](**kw)
    if weights is not None:
        load_weights(module, weights)
    return module


# --------------------------------------------------------------------------- weights

#: Classifier keys dropped from any file when the module has no such key.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "global_pool.", "head_drop.")
#: Wrappers around a state dict in training checkpoints.
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_state", "net")
#: Prefixes left by DataParallel / DistributedDataParallel or a wrapping module.
_KEY_PREFIXES = ("module.", "model.")


def _read(source: WeightSource, weights_only: bool) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, "the given state dict"
    path = Path(source)
    where = str(path)
    if not path.is_file():
        raise SetupError(f"weight file {where} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise SetupError(f"reading {where} needs the 'safetensors' package "
                             "(pip install safetensors), or a .pth copy of the weights") from None
        try:
            return load_file(str(path), device="cpu"), where
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
            raise SetupError(f"cannot read weight file {where}: {e}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # noqa: BLE001
        hint = (" (it holds more than tensors; pass weights_only=False if you trust the file)"
                if weights_only and "weights_only" in str(e) else "")
        raise SetupError(f"cannot read weight file {where}{hint}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(obj, Mapping):
        raise SetupError(f"weight file {where} holds a {type(obj).__name__}, not a state dict")
    return obj, where


def _unwrap(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict inside a training checkpoint (``{"state_dict": {...}, "epoch": ...}``)."""
    for _ in range(3):
        if any(isinstance(v, Tensor) for v in state.values()):
            break
        inner = next((state[k] for k in _WRAPPER_KEYS
                      if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    return state


def _describe(module: nn.Module) -> str:
    text = type(module).__name__
    if hasattr(module, "name"):
        text += f" {module.name!r}"
    width = getattr(module, "width", 1.0)
    if width != 1.0:
        text += f" (width {width:g})"
    return text


def load_weights(module: nn.Module, source: WeightSource, *, weights_only: bool = True) -> None:
    """Load a torchvision/timm-style state dict into ``module``, requiring every key to fit.

    ``source`` is a path (``.safetensors`` through the ``safetensors`` package; anything
    else, e.g. ``.pth``/``.pt``/``.bin``, through ``torch.load(weights_only=...)``) or a
    mapping. A checkpoint wrapping the state dict under ``state_dict``/``model`` is
    unwrapped; ``module.``/``model.`` key prefixes are stripped; keys of classifier heads
    the module does not build (``fc.``, ``classifier.``, ``head.``, and the module's
    ``ignored_weight_prefixes``, e.g. timm HRNet's ``incre_modules.``) are dropped;
    BatchNorm ``num_batches_tracked`` buffers may be absent (older torchvision files), as
    may, all together, the layers under a module's ``optional_weight_prefixes``.

    Raises :class:`~furpe.core.errors.SetupError` naming the first missing key, the first
    unexpected key and the first tensor of the wrong shape, with their counts; the module
    is left unchanged then.
    """
    raw, where = _read(source, weights_only)
    state = _unwrap(raw)
    own = module.state_dict()
    ignored = _HEAD_PREFIXES + tuple(getattr(module, "ignored_weight_prefixes", ()))

    clean: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        name = key
        while name not in own and name.startswith(_KEY_PREFIXES):
            name = name.split(".", 1)[1]
        if name in own:
            clean[name] = value
        elif not name.startswith(ignored):
            unexpected.append(name)

    missing = [k for k in own if k not in clean and not k.endswith("num_batches_tracked")]
    optional = tuple(getattr(module, "optional_weight_prefixes", ()))
    if optional and not any(k.startswith(optional) for k in clean):  # all absent: keep init
        missing = [k for k in missing if not k.startswith(optional)]
    wrong = [k for k, v in clean.items() if tuple(v.shape) != tuple(own[k].shape)]

    if missing or unexpected or wrong:
        problems = []
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} tensor(s) of the wrong shape, first {k!r}: "
                            f"file {tuple(clean[k].shape)}, model {tuple(own[k].shape)}")
        if missing:
            problems.append(f"{len(missing)} key(s) missing from the weights, first {missing[0]!r}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s) in the weights, "
                            f"first {unexpected[0]!r}")
        raise SetupError(f"weights from {where} do not fit {_describe(module)}: "
                         + "; ".join(problems))

    for k in own:  # absent buffers / optional layers keep the module's current values
        clean.setdefault(k, own[k])
    module.load_state_dict(clean, strict=True)
