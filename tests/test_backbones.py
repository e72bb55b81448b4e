"""Backbones: parameter names, shapes and counts as in torchvision/timm; weight loading.

The reference numbers come from torchvision's published counts (resnet18 11,689,512 and
resnet50 25,557,032 including ``fc``) and from timm's ``timm/models/hrnet.py`` and
``resnet.py`` (run once, outside this repository, to list their state dicts): the
digests below are sha256 prefixes of the sorted ``"key shape"`` lines of each reference
state dict without its classifier head.
"""
from __future__ import annotations

import functools
import hashlib

import pytest
import torch

from furpe.core.errors import SetupError
from furpe.networks.backbones import (BACKBONE_NAMES, HRNet, HRNetConcat, HRNetStride4, ResNet,
                                      backbone_names, build_backbone, load_weights)

#: name -> (trunk parameters, classifier-head parameters in the reference, digest of
#: the trunk's state-dict keys and shapes). trunk + head = the published totals
#: (torchvision resnet18 11,689,512, resnet34 21,797,672, resnet50 25,557,032; timm
#: hrnet_w18_small_v2 15,597,464, hrnet_w18 21,299,004, hrnet_w32 41,232,680,
#: hrnet_w48 77,469,864).
REFERENCE = {
    "resnet18": (11_176_512, 513_000, "504739f3083bec5e"),
    "resnet34": (21_284_672, 513_000, "44a0fd3c2ef0c9ed"),
    "resnet50": (23_508_032, 2_049_000, "c1f7fd3808aa49e7"),
    "hrnet_w18_small_v2": (3_860_720, 11_736_744, "c0102182dbfa88ca"),
    "hrnet_w18": (9_562_260, 11_736_744, "9545829b6f86d022"),
    "hrnet_w32": (29_305_536, 11_927_144, "20a7b3a43c23ab81"),
    "hrnet_w48": (65_325_120, 12_144_744, "a15582e4b1c873d8"),
}
PUBLISHED_TOTALS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "hrnet_w18_small_v2": 15_597_464, "hrnet_w18": 21_299_004, "hrnet_w32": 41_232_680,
    "hrnet_w48": 77_469_864,
}
#: The timm trunk without stage4 (what HRNetConcat keeps of it).
NO_STAGE4_DIGEST = {
    "hrnet_w18_small_v2": "f2a9cf66fae0c0e7",
    "hrnet_w18": "bc67a9183a8ed7d6",
    "hrnet_w32": "4a1377a12658813f",
    "hrnet_w48": "fbdc9b5eb68bd7df",
}


def _digest(state: dict) -> str:
    lines = [f"{k} {tuple(v.shape)}" for k, v in sorted(state.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


@functools.cache
def _trunk(name: str, width: float = 1.0):
    """The trunk on the meta device (names, shapes and counts without values), built once."""
    with torch.device("meta"):
        return ResNet(name, width=width) if name.startswith("resnet") else HRNet(name)


@functools.cache
def _concat(name: str) -> HRNetConcat:
    with torch.device("meta"):
        return HRNetConcat(name)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_parameter_counts_and_names_match_reference(name: str) -> None:
    trunk, head, digest = REFERENCE[name]
    module = _trunk(name)
    assert _count(module) == trunk
    assert trunk + head == PUBLISHED_TOTALS[name]
    assert _digest(module.state_dict()) == digest


@pytest.mark.parametrize("name", list(NO_STAGE4_DIGEST))
def test_furpe_variant_keeps_the_timm_trunk_without_stage4(name: str) -> None:
    module = _concat(name)
    state = module.state_dict()
    trunk = {k: v for k, v in state.items() if not k.startswith("furpe_")}
    assert _digest(trunk) == NO_STAGE4_DIGEST[name]
    assert not any(k.startswith("stage4.") for k in state)
    assert module.out_channels == 2048


def test_key_names_and_shapes() -> None:
    r18 = _trunk("resnet18").state_dict()
    assert r18["conv1.weight"].shape == (64, 3, 7, 7)
    assert r18["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
    assert r18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert r18["layer2.0.downsample.1.running_var"].shape == (128,)
    assert r18["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert "layer1.0.downsample.0.weight" not in r18
    r50 = _trunk("resnet50").state_dict()
    assert r50["layer1.0.conv1.weight"].shape == (64, 64, 1, 1)
    assert r50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert r50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3 (v1.5)
    assert r50["layer4.2.bn3.running_var"].shape == (2048,)
    hr = _trunk("hrnet_w18_small_v2").state_dict()
    assert hr["conv1.weight"].shape == (64, 3, 3, 3)
    assert hr["conv2.weight"].shape == (64, 64, 3, 3)
    assert hr["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert hr["layer1.1.conv3.weight"].shape == (256, 64, 1, 1)
    assert hr["transition1.0.0.weight"].shape == (18, 256, 3, 3)
    assert hr["transition1.1.0.0.weight"].shape == (36, 256, 3, 3)
    assert hr["transition2.2.0.0.weight"].shape == (72, 36, 3, 3)
    assert hr["transition3.3.0.0.weight"].shape == (144, 72, 3, 3)
    assert hr["stage2.0.branches.1.0.conv1.weight"].shape == (36, 36, 3, 3)
    assert hr["stage2.0.fuse_layers.0.1.0.weight"].shape == (18, 36, 1, 1)
    assert hr["stage2.0.fuse_layers.1.0.0.0.weight"].shape == (36, 18, 3, 3)
    assert hr["stage4.1.fuse_layers.3.0.1.0.weight"].shape == (18, 18, 3, 3)
    assert hr["stage4.1.fuse_layers.3.0.2.0.weight"].shape == (144, 18, 3, 3)
    assert "stage3.2.fuse_layers.0.0.weight" not in hr  # the identity has no parameters


def test_width_multiplier() -> None:
    module = _trunk("resnet18", width=0.5)
    state = module.state_dict()
    assert state["conv1.weight"].shape == (32, 3, 7, 7)
    assert [state[f"layer{i}.0.conv1.weight"].shape[0] for i in range(1, 5)] == [32, 64, 128, 256]
    assert module.out_channels == 256
    assert set(state) == set(_trunk("resnet18").state_dict())
    assert _trunk("resnet50", width=0.5).out_channels == 1024


def _torchvision_like_file(module) -> dict:
    """A state dict as a DataParallel-wrapped torchvision model saves it, with its ``fc``."""
    state = {f"module.{k}": v.clone() for k, v in module.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(10, module.out_channels)
    state["module.fc.bias"] = torch.zeros(10)
    return state


def test_round_trip_pth_with_prefix_and_classifier(tmp_path) -> None:
    torch.manual_seed(0)
    source = ResNet("resnet18", width=0.5)
    path = tmp_path / "r18.pth"
    torch.save(_torchvision_like_file(source), path)
    target = ResNet("resnet18", width=0.5)
    load_weights(target, path)
    assert _same(target.state_dict(), source.state_dict())
    # a training checkpoint wrapping the state dict, without num_batches_tracked buffers
    wrapped = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()
                                          if not k.endswith("num_batches_tracked")}}
    target = ResNet("resnet18", width=0.5)
    load_weights(target, wrapped)
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)


def test_round_trip_safetensors(tmp_path) -> None:
    safetensors = pytest.importorskip(
        "safetensors.torch", reason="safetensors (optional: timm-style .safetensors weight files) "
        "is not installed")
    source = _net("hrnet_w18_small_v2", head="stride4")
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    state["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 18, 1, 1)  # timm's head
    state["classifier.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "hr.safetensors"
    safetensors.save_file(state, str(path))
    target = HRNetStride4("hrnet_w18_small_v2")
    load_weights(target, path)
    assert _same(target.state_dict(), source.state_dict())


def test_mismatches_raise_setup_error_naming_the_key() -> None:
    source = ResNet("resnet18", width=0.5).state_dict()
    target = ResNet("resnet18", width=0.5)
    before = {k: v.clone() for k, v in target.state_dict().items()}

    missing = dict(source)
    del missing["layer2.0.downsample.0.weight"]
    with pytest.raises(SetupError, match=r"missing.*'layer2\.0\.downsample\.0\.weight'"):
        load_weights(target, missing)

    wrong = dict(source)
    wrong["layer1.0.conv1.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(SetupError, match=r"shape.*'layer1\.0\.conv1\.weight'.*\(32, 32, 1, 1\)"):
        load_weights(target, wrong)

    extra = dict(source)
    extra["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(SetupError, match=r"unexpected.*'layer5\.0\.conv1\.weight'"):
        load_weights(target, extra)

    full_width = ResNet("resnet18")  # a width-1 file into a width-0.5 module
    with pytest.raises(SetupError, match=r"width 0\.5"):
        load_weights(target, full_width.state_dict())
    assert _same(target.state_dict(), before)  # nothing was loaded


def test_file_errors(tmp_path) -> None:
    with pytest.raises(SetupError, match="does not exist"):
        load_weights(ResNet("resnet18", width=0.25), tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SetupError, match="cannot read"):
        load_weights(ResNet("resnet18", width=0.25), bad)


def test_furpe_variant_loads_a_trunk_file_but_not_half_a_head() -> None:
    trunk = _net("hrnet_w18_small_v2", head="stride4").state_dict()  # timm-like, with stage4
    module = HRNetConcat("hrnet_w18_small_v2", blocks=1)
    head_before = module.furpe_blocks[0].conv1.weight.clone()
    load_weights(module, trunk)
    assert torch.equal(module.transition3[3][0][0].weight, trunk["transition3.3.0.0.weight"])
    assert torch.equal(module.furpe_blocks[0].conv1.weight, head_before)

    full = module.state_dict()
    load_weights(HRNetConcat("hrnet_w18_small_v2", blocks=1), full)
    partial = {k: v for k, v in full.items() if not k.startswith("furpe_blocks.")}
    with pytest.raises(SetupError, match=r"missing.*'furpe_blocks\.0\.conv1\.weight'"):
        load_weights(HRNetConcat("hrnet_w18_small_v2", blocks=1), partial)


@functools.cache
def _net(name: str, **kw):
    """A real (CPU, eval-mode) backbone from :func:`build_backbone`, built once."""
    return build_backbone(name, **kw).eval()


@pytest.mark.parametrize("size", [128, 256])
def test_output_shapes(size: int) -> None:
    x = torch.randn(1, 3, size, size)
    s = size // 32
    with torch.inference_mode():
        r = _net("resnet18", width=0.5)
        assert r(x).shape == (1, 256, s, s) and r.out_channels == 256
        c = _net("hrnet_w18_small_v2", blocks=1)
        assert c(x).shape == (1, 2048, s, s) and c.out_channels == 2048
        v2 = _net("hrnet_w18_small_v2", head="stride4")
        assert v2(x).shape == (1, 270, size // 4, size // 4) and v2.out_channels == 270
        assert [tuple(y.shape) for y in HRNet.forward(v2, x)] == [  # the four branches
            (1, 18 * 2 ** b, size // 2 ** (b + 2), size // 2 ** (b + 2)) for b in range(4)]
        if size == 128:
            r50 = _net("resnet50", width=0.25)
            assert r50(x).shape == (1, 512, s, s) and r50.out_channels == 512


def test_odd_input_sizes() -> None:
    x = torch.randn(1, 3, 100, 76)
    with torch.inference_mode():
        assert _net("hrnet_w18_small_v2", head="stride4")(x).shape == (1, 270, 25, 19)
        assert _net("hrnet_w18_small_v2", blocks=1)(x).shape == (1, 2048, 4, 3)
        assert _net("resnet18", width=0.5)(x).shape == (1, 256, 4, 3)


def test_build_backbone_registry(tmp_path) -> None:
    assert set(BACKBONE_NAMES) == set(backbone_names()) == set(REFERENCE)
    with pytest.raises(SetupError, match="unknown backbone 'resnet101'"):
        build_backbone("resnet101")
    with pytest.raises(SetupError, match="head"):
        build_backbone("hrnet_w18", head="nope")
    source = build_backbone("resnet18", width=0.25)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("resnet18", weights=path, width=0.25)
    assert _same(loaded.state_dict(), source.state_dict())
    assert build_backbone("resnet34", width=0.25).out_channels == 128
