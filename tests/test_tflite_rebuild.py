"""The MediaPipe landmark networks rebuilt in PyTorch (:mod:`furpe.experts.tflite`).

Two references: LiteRT's interpreter on the same ``.tflite`` (op by op: the outputs and the
first tensor of every op kind), and the MediaPipe Tasks landmarkers end to end, whose next
region of interest in video mode follows from the landmarks they return, so the rebuilt
network can be fed the very crop MediaPipe fed its own (hand: to 0.25 px; pose: through
its tracking loop, whose region comes from landmarks it does not return, to about a pixel).
"""
from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
import torch

import furpe.experts.tflite as tflite_module
from furpe.experts.models import model_path
from furpe.experts.boxnets import crop_region, hand_region, refine_from_heatmaps, region_to_image
from furpe.experts.tflite import EXPERT_NETWORKS, TFLiteNet, _resize_bilinear, expert_network

NAMES = list(EXPERT_NETWORKS)


def _member(name: str) -> bytes:
    bundle, member = EXPERT_NETWORKS[name]
    with zipfile.ZipFile(model_path(bundle)) as z:
        return z.read(member)


def _tf(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).numpy()


@pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")
@pytest.mark.parametrize("name", [*NAMES[:-1], pytest.param(NAMES[-1], marks=pytest.mark.slow)])
def test_matches_litert_op_by_op(name: str) -> None:
    """Same random input: the outputs, the feature map and the first tensor each op kind
    writes agree with LiteRT to 1e-4 of each tensor's scale. Measured (max abs, landmark
    output ``Identity`` in crop pixels): hand 1.1e-4, face 6.7e-4, pose_full 1.1e-3,
    pose_heavy 2.6e-3 - float32 rounding: LiteRT itself is as far from a float64 run. The
    segmentation logits (up to ~1500) get 2e-3 of their scale for the same reason."""
    interpreter = pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="LiteRT (the test extra ai-edge-litert) has no wheel for this platform")
    data = _member(name)
    net = TFLiteNet(data, name=name).eval()
    lite = interpreter.Interpreter(model_content=data, num_threads=1,
                                   experimental_preserve_all_tensors=True)
    lite.allocate_tensors()
    x = np.random.default_rng(0).random((1, *net.input_hw, 3), dtype=np.float32)
    lite.set_tensor(lite.get_input_details()[0]["index"], x)
    lite.invoke()
    index = {d["name"]: d["index"] for d in lite.get_tensor_details()}
    firsts: dict[str, str] = {}
    for kind, _, out, _ in net.steps:
        firsts.setdefault(kind, net.names[out])
    taps = [net.feature_map_name, *firsts.values()]
    with torch.no_grad():
        ours = net(torch.from_numpy(x).permute(0, 3, 1, 2), taps=taps)
    assert set(ours) >= {net.names[i] for i in net.output_indices}
    for tensor, value in ours.items():
        ref = lite.get_tensor(index[tensor])
        err, scale = np.abs(_tf(value) - ref).max(), max(np.abs(ref).max(), 1.0)
        tol = 2e-3 if name.startswith("pose") and tensor == "Identity_2" else 1e-4
        assert err <= tol * scale, f"{name} {tensor}: {err:.3g} (scale {scale:.3g})"


def test_batched_differentiable_features() -> None:
    """A batch gives each sample's own result; gradients reach the input and the weights;
    the hand's feature is the pooled vector its heads read. (At 96 px, to keep it quick: the
    network is fully convolutional up to its global pooling.)"""
    net = expert_network("hand")
    x = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(0), requires_grad=True)
    pooled = "model_1/model/global_average_pooling2d/Mean"
    out = net(x, taps=[pooled])
    with torch.no_grad():
        one = net(x[1:2].detach())
    for k, v in one.items():
        torch.testing.assert_close(out[k][1:2], v, rtol=1e-4, atol=1e-4)
    feats = net.features(x)
    assert feats["feature_map"].shape == (3, 1152, 3, 3)
    torch.testing.assert_close(feats["feature"], out[pooled])
    (feats["feature"].sum() + out["Identity"].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert net.weights["conv_2d_2_weight"].grad.abs().sum() > 0
    assert all(p.dtype == torch.float32 for p in net.parameters())
    with pytest.raises(KeyError, match="no tensor"):
        net(x, taps=["nonexistent"])


@pytest.mark.parametrize("name,size,channels,hw", [
    ("hand", 224, 1152, 7), ("face", 256, 128, 2), ("pose_full", 256, 288, 2),
    ("pose_heavy", 256, 288, 2)])
def test_feature_shapes(name: str, size: int, channels: int, hw: int) -> None:
    """The documented input sizes and feature shapes."""
    net = expert_network(name)
    assert net.input_size == size
    with torch.no_grad():
        f = net.features(torch.rand(2, 3, size, size))
    assert f["feature_map"].shape == (2, channels, hw, hw)
    assert f["feature"].shape == (2, channels)


@pytest.mark.parametrize("name,outputs", [("hand", 21 * 3 * 2 + 2), ("face", 478 * 3 + 2),
                                          ("pose_full", 39 * 5 + 1 + 39 * 3)])
def test_features_with_landmark_outputs(name: str, outputs: int) -> None:
    """``outputs=True`` adds the landmark head's outputs (not the pose's segmentation and
    heatmaps), each sample's own, equal to the graph's outputs flattened in order."""
    net = expert_network(name)
    size = net.input_size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = net.features(x, outputs=True)
        full = net(x)
    assert f["outputs"].shape == (2, outputs)
    want = torch.cat([full[n].flatten(1) for n in net.head_output_names], 1)
    torch.testing.assert_close(f["outputs"], want)
    assert not torch.allclose(f["outputs"][0], f["outputs"][1])
    if name.startswith("pose"):
        assert net.head_output_names == ["Identity", "Identity_1", "Identity_4"]


def test_encoder_landmark_features() -> None:
    """``features: landmarks``: the pose's 2 x 2 map kept whole plus its landmark outputs
    (the pooled feature is the map's mean); a backbone without a landmark head refuses."""
    from furpe.core.errors import SetupError
    from furpe.networks.encoders import Encoder

    pooled, rich = Encoder("mediapipe_pose_full"), Encoder("mediapipe_pose_full",
                                                          features="landmarks")
    assert (pooled.dim, rich.dim) == (288, 288 * 4 + 313)
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p, r = pooled(x), rich(x)
    torch.testing.assert_close(r[:, :288 * 4].reshape(2, 288, 4).mean(-1), p)
    assert Encoder("mediapipe_hand", features="landmarks").dim == 1152 + 128
    # the body landmarks inside the feature are the network's landmark output
    with torch.no_grad():
        direct = rich.net(x)["Identity"].view(2, 39, 5)
    lm = rich.pose_landmarks(r)
    torch.testing.assert_close(lm[..., :2], direct[:, :33, :2] - 0.5)
    torch.testing.assert_close(lm[..., 2], torch.sigmoid(direct[:, :33, 3])
                               * torch.sigmoid(direct[:, :33, 4]))
    assert pooled.pose_landmarks(p) is None
    assert Encoder("mediapipe_face", features="landmarks").pose_landmarks(
        torch.zeros(1, 1948)) is None
    with pytest.raises(SetupError, match="needs a MediaPipe backbone"):
        Encoder("resnet18", width=0.25, features="landmarks")
    with pytest.raises(SetupError, match="network.features must be one of"):
        Encoder("mediapipe_hand", features="heatmaps")


def test_encoder_flip_averages_the_mirrored_landmarks(person: np.ndarray) -> None:
    """``flip``: the landmark outputs are the mean of the crop's and its mirror's, mirrored
    back, so a mirrored crop gives exactly the mirrored landmarks (the plain network is off
    by pixels); the feature map stays the plain crop's."""
    from furpe.core.errors import SetupError
    from furpe.core.vocab import POSE_FLIP
    from furpe.networks.encoders import Encoder

    plain = Encoder("mediapipe_pose_full", features="landmarks").eval()
    flip = Encoder("mediapipe_pose_full", features="landmarks", flip=True).eval()
    assert flip.dim == plain.dim
    h, w = person.shape[:2]
    side = min(h, w)
    crop = np.ascontiguousarray(person[(h - side) // 2:(h + side) // 2,
                                       (w - side) // 2:(w + side) // 2])
    x = torch.nn.functional.interpolate(
        torch.as_tensor(crop).permute(2, 0, 1)[None].float() / 255, size=(256, 256),
        mode="bilinear", align_corners=False)
    x = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        fp, ff = plain(x), flip(x)
    torch.testing.assert_close(ff[:, :288 * 4], fp[:, :288 * 4])

    def mirrored_back(enc: Encoder, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lm, world = enc.pose_landmarks(f)[:, list(POSE_FLIP)], enc.pose_world(f)[:, list(POSE_FLIP)]
        lm = torch.cat([255 - lm[..., :1], lm[..., 1:]], -1)  # pixel centres 0..255
        return lm, torch.cat([-world[..., :1], world[..., 1:]], -1)

    gaps = {}
    for name, enc, f in (("plain", plain, fp), ("flip", flip, ff)):
        lm, world = mirrored_back(enc, f[1:])
        gaps[name] = (float((lm[..., :2] - enc.pose_landmarks(f[:1])[..., :2]).abs().max()),
                      float((world - enc.pose_world(f[:1])).abs().max()))
    print(f"mirrored crop vs crop, max px / m: {gaps}")
    assert gaps["flip"][0] < 1e-3 and gaps["flip"][1] < 1e-4
    assert gaps["plain"][0] > 1.0 and gaps["plain"][1] > 0.01
    with pytest.raises(SetupError, match="body_flip needs a BlazePose body backbone"):
        Encoder("mediapipe_pose_full", flip=True)


def test_unsupported_op_is_named() -> None:
    """The hand model with its LOGISTIC op code rewritten to HARD_SWISH (not implemented)."""
    import tflite

    data = bytearray(_member("hand"))
    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == tflite.BuiltinOperator.LOGISTIC:
            tab = code._tab
            data[tab.Pos + tab.Offset(4)] = tflite.BuiltinOperator.HARD_SWISH  # deprecated code
            if tab.Offset(10):
                data[tab.Pos + tab.Offset(10)] = tflite.BuiltinOperator.HARD_SWISH
    with pytest.raises(NotImplementedError, match="HARD_SWISH"):
        TFLiteNet(bytes(data))


def test_legacy_resize_bilinear() -> None:
    """TF's legacy mapping (neither align_corners nor half_pixel_centers): source = dst / 2."""
    x = torch.tensor([0.0, 1.0, 4.0]).view(1, 1, 1, 3)
    y = _resize_bilinear(x, (1, 6), align_corners=False, half_pixel=False)
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.5, 1.0, 2.5, 4.0, 4.0]))
    y = _resize_bilinear(x, (1, 5), align_corners=True, half_pixel=False)
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.5, 1.0, 2.5, 4.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    net = expert_network("pose_full").eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        cpu = net(x)
        gpu = net.to("cuda")(x.cuda())
    for k, v in cpu.items():
        torch.testing.assert_close(gpu[k].cpu(), v, rtol=1e-3, atol=1e-2 * float(v.abs().max()))


# --------------------------------------------------------------------------------------------
# End to end against the MediaPipe Tasks landmarkers
# --------------------------------------------------------------------------------------------

def _norm_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def _transform(cx: float, cy: float, w: float, h: float, rot: float, scale: float,
               shift_y: float, side: int) -> tuple:
    """MediaPipe's RectTransformation (normalised rect, square image of ``side`` px):
    shift along the rotated y axis, square on the long side, scale."""
    cx, cy = cx - h * shift_y * math.sin(rot), cy + h * shift_y * math.cos(rot)
    long = max(w, h) * scale
    return cx, cy, long, long, rot


def _pose_rect(aux: np.ndarray, side: int) -> tuple:
    """MediaPipe's AlignmentPointsRects on the auxiliary landmarks (hip centre, scale point),
    then scale 1.25."""
    (x0, y0), (x1, y1) = aux * side
    size = 2 * math.hypot(x1 - x0, y1 - y0) / side
    rot = _norm_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
    return _transform(x0 / side, y0 / side, size, size, rot, 1.25, 0.0, side)


def _crop(image: np.ndarray, rect: tuple, size: int) -> torch.Tensor:
    """MediaPipe's ImageToTensor on the CPU (rotated rect corners -> output corners,
    bilinear, zero border) as a (1, 3, size, size) tensor in [0, 1]."""
    import cv2

    side = image.shape[0]
    cx, cy, w, h, rot = rect
    src = cv2.boxPoints(((cx * side, cy * side), (w * side, h * side), math.degrees(rot)))
    dst = np.float32([[0, size], [0, 0], [size, 0], [size, size]])
    crop = cv2.warpPerspective(image, cv2.getPerspectiveTransform(src, dst), (size, size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255


def _project(uv: np.ndarray, rect: tuple) -> np.ndarray:
    """Landmarks normalised in the crop -> normalised in the image."""
    cx, cy, w, h, rot = rect
    c, s = math.cos(rot), math.sin(rot)
    d = uv - 0.5
    return np.stack([(c * d[:, 0] - s * d[:, 1]) * w + cx, (s * d[:, 0] + c * d[:, 1]) * h + cy], 1)


def _pad_before(x: torch.Tensor, kernel, stride, dilation, value: float = 0.0):
    """A broken rebuild: SAME padding's odd extra row and column before, not after."""
    pads = []
    for size, k, s, d in zip(x.shape[2:], kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total - total // 2, total // 2))
    return torch.nn.functional.pad(x, (*pads[1], *pads[0]), value=value), (0, 0)


# The input conventions checked against: the documented one first, then wrong ones.
INPUTS = {"rgb [0, 1]": lambda x: x, "bgr": lambda x: x.flip(1),
          "[-1, 1]": lambda x: 2 * x - 1}


@pytest.fixture(scope="module")
def person(anny_model) -> np.ndarray:
    """A synthetic person, whole body and both hands in view (640 x 640, square: MediaPipe's
    normalised rects are then isotropic)."""
    from furpe.synthetic import make_person

    return make_person(anny_model, 2, 640, 640, distance=2.0).image


@pytest.mark.slow
@pytest.mark.mediapipe
def test_hand_reproduces_tasks_landmarks(person: np.ndarray, monkeypatch) -> None:
    """HandLandmarker in video mode crops frame k + 1 where frame k's landmarks say: the
    rebuilt network on that crop (furpe's own region and crop,
    :func:`~furpe.experts.boxnets.hand_region` and ``crop_region``) gives frame k + 1's
    landmarks (measured: 0.25 px at most; 0.54 px once 23 of the render's 1.2 M channel values
    changed by 1/255, so the bound is 1 px). BGR input, input in [-1, 1] or SAME padding's
    extra row first miss by 10 px or more."""
    from furpe.experts.tasks import HandModel

    model = HandModel(num_hands=1)
    model.video = True
    frames = [model.process(person) for _ in range(3)]
    model.close()
    assert all(len(f) == 1 for f in frames)
    side = person.shape[0]
    # MediaPipe's normalised coordinates put pixel centres at i + 0.5; furpe's at i.
    region = hand_region(frames[1][0].uv * side - 0.5)
    crop = torch.from_numpy(crop_region(person, region, 224)).permute(2, 0, 1)[None].float() / 255
    truth = frames[2][0].uv * side - 0.5
    net = expert_network("hand")

    def error(x: torch.Tensor) -> float:
        with torch.no_grad():
            out = net(x)
        kp = region_to_image(out["Identity"].view(21, 3)[:, :2].numpy(), region, 224)
        return float(np.linalg.norm(kp - truth, axis=1).max())

    errors = {k: error(f(crop)) for k, f in INPUTS.items()}
    monkeypatch.setattr(tflite_module, "_same_padding", _pad_before)
    errors["extra padding first"] = error(crop)
    print("\nhand, max px from the Tasks landmarks:",
          ", ".join(f"{k} {v:.2f}" for k, v in errors.items()))
    good, *broken = errors.values()
    assert good < 1.0
    assert min(broken) > 3.0


@pytest.mark.slow
@pytest.mark.mediapipe
def test_pose_reproduces_tasks_landmarks(person: np.ndarray, monkeypatch) -> None:
    """PoseLandmarker (Full) tracks with a region from the auxiliary landmarks it does not
    return, so both it and the rebuilt network run the same tracking loop on one still image
    for 8 frames (far-apart timestamps: its landmark smoothing passes values through) and the
    last landmarks are compared. Measured (median px): 0.48 (the loop wanders by ~2 px a
    frame, and the region it ends on is not quite MediaPipe's); BGR 1.98, [-1, 1] 1.31 (the
    pose network is robust to both, but agrees best with RGB in [0, 1]); SAME padding's extra
    row first 112. After a 1/255 change of 24 of the render's channel values: 0.63, BGR 2.10,
    [-1, 1] 1.18, so the bound on the two is 1.5x."""
    from furpe.experts.tasks import PoseModel

    model = PoseModel("full", num_poses=1, video=True)
    for _ in range(8):
        model._timestamp_ms += 10**9
        (tasks,) = model.process(person)
    model.close()
    side = person.shape[0]
    net = expert_network("pose_full")

    def error(convert) -> float:
        hips, shoulders = tasks.uv[[23, 24]].mean(0), tasks.uv[[11, 12]].mean(0)
        rect = _pose_rect(np.stack([hips, hips + 1.5 * (shoulders - hips)]), side)
        for _ in range(8):
            with torch.no_grad():
                out = net(convert(_crop(person, rect, 256)))
            uv = _project(refine_from_heatmaps(out["Identity"].view(39, 5)[:, :2].numpy() / 256,
                                  out["Identity_3"][0].numpy()), rect)
            rect = _pose_rect(uv[33:35], side)
        return float(np.median(np.linalg.norm(uv[:33] - tasks.uv, axis=1) * side))

    errors = {k: error(f) for k, f in INPUTS.items()}
    monkeypatch.setattr(tflite_module, "_same_padding", _pad_before)
    errors["extra padding first"] = error(INPUTS["rgb [0, 1]"])
    print("\npose, median px from the Tasks landmarks:",
          ", ".join(f"{k} {v:.2f}" for k, v in errors.items()))
    good, bgr, signed, padding = errors.values()
    assert good < 1.0
    assert min(bgr, signed) > 1.5 * good
    assert padding > 10.0
