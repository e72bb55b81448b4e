"""The whole-body network: its parameter vector, forward and decoding, ONNX export and the
inference checkpoints."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from furpe.bodymodels.base import ParamBlock
from furpe.core.errors import SetupError
from furpe.networks.inference import NetworkPredictor, load_network, read_checkpoint
from furpe.networks.params import (CAMERA_INIT, ParamCodec, camera_numbers, camera_translation,
                                   from_model_params)
from furpe.networks.wholebody import CROP_PARTS, NetworkConfig, WholeBodyNet
# the shared training fixtures (label shards, a tiny finished run), built once per session
from test_training import (TINY_NETWORK, label_shards, one_thread,  # noqa: F401
                           uninterrupted_run)




@pytest.fixture(scope="module")
def net(anny_model):
    torch.manual_seed(0)
    return WholeBodyNet(anny_model, NetworkConfig(**TINY_NETWORK)).eval()


def _intrinsics(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    K = np.zeros((n, 3, 3))
    f = rng.uniform(0.8, 3.0, n) * size
    K[:, 0, 0], K[:, 1, 1] = f, f * rng.uniform(0.9, 1.1, n)
    K[:, 0, 2], K[:, 1, 2] = rng.uniform(-0.5, 1.5, (2, n)) * size
    K[:, 2, 2] = 1
    return torch.as_tensor(K, dtype=torch.float32)


# -- the parameter vector ---------------------------------------------------------------------


def test_codec_round_trip(anny_model):
    """decode -> encode -> decode is the identity on rotations (as matrices; the 6D form is
    not unique), and encode(decode(x)) = x on bounded logits and linear coefficients."""
    fake = SimpleNamespace(blocks={
        "global_orient": ParamBlock("global_orient", "rotation", 1, "global", ("root",)),
        "betas": ParamBlock("betas", "linear", 4, "shape", tuple("abcd")),
        "mix": ParamBlock("mix", "bounded", 3, "face", tuple("abc"), (0.0, 0.5, 2.0),
                          lower=-1.0, upper=3.0)})
    gen = torch.Generator().manual_seed(0)
    for model in (anny_model, fake):
        codec = ParamCodec(model, [n for n in model.blocks if n != "transl"])
        assert codec.size == sum(s.block.size * (6 if s.block.kind == "rotation" else 1)
                                 for s in codec.slots.values())
        x = codec.neutral()[None] + 2.0 * torch.randn(5, codec.size, generator=gen)
        for s in codec.slots.values():  # logits where float32 sigmoids invert (encode clamps
            if s.block.kind == "bounded":  # the fraction to [1e-4, 1 - 1e-4], |logit| <= 9.2)
                x[:, s.start:s.stop] = x[:, s.start:s.stop].clamp(-6.0, 6.0)
        once = codec.decode(x)
        y = codec.encode(once)
        twice = codec.decode(y)
        assert y.shape == x.shape
        for name, s in codec.slots.items():
            if s.block.kind == "rotation":
                R = once[name]
                assert R.shape == (5, s.block.size, 3, 3)
                eye = torch.eye(3).expand_as(R)
                torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-5, rtol=0)
                torch.testing.assert_close(twice[name], R, atol=1e-5, rtol=0,
                                           msg=lambda m, n=name: f"{n}: {m}")
                # and the raw 6D numbers did change (a non-orthonormal 6D vector is not a fixed
                # point): the round trip really went through the matrices
                assert not torch.allclose(y[:, s.start:s.stop], x[:, s.start:s.stop])
            else:
                torch.testing.assert_close(y[:, s.start:s.stop], x[:, s.start:s.stop],
                                           atol=1e-3, rtol=1e-4)
                if s.block.kind == "bounded":
                    v = once[name]
                    assert (v > s.block.lower).all() and (v < s.block.upper).all()


def test_neutral_vector_decodes_to_the_neutral_parameters(anny_model):
    codec = ParamCodec(anny_model, [n for n in anny_model.blocks if n != "transl"])
    decoded = codec.decode(codec.neutral()[None])
    neutral = from_model_params(anny_model.neutral_params(1), codec.slots)
    for name, s in codec.slots.items():
        b = s.block
        want = neutral[name]
        if b.kind == "bounded":  # documented: kept 2% of the range inside the bounds
            span = b.upper - b.lower
            want = want.clamp(b.lower + 0.02 * span, b.upper - 0.02 * span)
        torch.testing.assert_close(decoded[name], want.float(), atol=1e-5, rtol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")
    # Anny's phenotype default (0.5) is well inside its bounds: decoded exactly
    torch.testing.assert_close(decoded["phenotype"], torch.full((1, 6), 0.5))


def test_camera_numbers_invert_camera_translation():
    rng = np.random.default_rng(0)
    n, S = 64, 256
    K = _intrinsics(n, S, rng)
    transl = torch.as_tensor(np.c_[rng.uniform(-1.5, 1.5, (n, 2)), rng.uniform(1.0, 12.0, n)],
                             dtype=torch.float32)
    cam = camera_numbers(transl, K, S)
    torch.testing.assert_close(camera_translation(cam, K, S), transl, atol=1e-4, rtol=1e-4)
    cam2 = torch.as_tensor(np.c_[rng.normal(0, 1.0, n), rng.uniform(-1, 1, (n, 2))],
                           dtype=torch.float32)
    torch.testing.assert_close(camera_numbers(camera_translation(cam2, K, S), K, S), cam2,
                               atol=1e-4, rtol=1e-4)
    # the initial camera (softplus(s) = 1: a metre spans one half-crop) of a centred crop
    K0 = torch.tensor([[[500.0, 0, S / 2 - 0.5], [0, 500.0, S / 2 - 0.5], [0, 0, 1]]])
    t0 = camera_translation(torch.tensor([CAMERA_INIT]), K0, S)
    torch.testing.assert_close(t0, torch.tensor([[0.0, 0.0, 500.0 / (S / 2)]]))


# -- the network --------------------------------------------------------------------------------


def _inputs(net, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    S = net.config.input_size
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, S, S, generator=gen)
    K = _intrinsics(n, S, np.random.default_rng(seed))
    return image, K


def test_forward_shapes(net):
    cfg = net.config
    image, K = _inputs(net, 3)
    with torch.no_grad():
        out = net(image, K)
    D = net.codec.size
    assert out["body"].shape == (3, D) and out["camera"].shape == (3, 3)
    assert out["boxes"].shape == (3, len(CROP_PARTS), 3) and (out["boxes"][..., 2] > 0).all()
    assert out["feature_body"].shape == (3, net.body_encoder.dim)
    for part in CROP_PARTS:
        side = cfg.hand_size if part != "face" else cfg.head_size
        codec = net.part_codecs["face" if part == "face" else "right_hand"]
        assert out[f"part_{part}"].shape == (3, codec.size)
        assert out[f"crop_{part}"].shape == (3, 3, side, side)
    params = net.decode(out, K)
    assert set(params) == set(net.blocks) | {"transl"}
    for name in net.blocks:
        b = net.codec.slots[name].block
        shape = (3, b.size, 3, 3) if b.kind == "rotation" else (3, b.size)
        assert params[name].shape == shape, name
    assert params["transl"].shape == (3, 3) and (params["transl"][:, 2] > 0).all()
    # the network reads the image: another image gives other outputs
    with torch.no_grad():
        other = net(torch.rand_like(image), K)
    assert not torch.allclose(other["body"], out["body"])


def test_merge_part_and_body_differ_exactly_in_the_part_blocks(net, anny_model):
    image, K = _inputs(net, 2, seed=1)
    with torch.no_grad():
        out = net(image, K)
        part = net.decode(out, K, merge="part")
        body = net.decode(out, K, merge="body")
    part_blocks = {n for c in ("left_hand", "right_hand", "face")
                   for n in net.part_codecs[c].slots}
    assert part_blocks == {"left_hand_pose", "right_hand_pose", "eye_pose", "facial_actions"}
    for name in part:
        if name in part_blocks:
            assert not torch.equal(part[name], body[name]), name
        else:
            assert torch.equal(part[name], body[name]), name
    # merge: part's hands and face are the sub-networks' (left hand mirrored back)
    face = net.part_codecs["face"].decode(out["part_face"])
    for name, v in face.items():
        assert torch.equal(part[name], v)
    right = net.part_codecs["right_hand"].decode(out["part_right_hand"])
    assert torch.equal(part["right_hand_pose"], right["right_hand_pose"])
    left = net.part_codecs["right_hand"].decode(out["part_left_hand"])
    back = net._mirror_hand(net._mirror_hand(left))  # mirroring twice is the identity
    torch.testing.assert_close(back["right_hand_pose"], left["right_hand_pose"])


def test_left_hand_is_read_as_a_mirrored_right_hand(net):
    """The left-hand crop of the mirrored image (mirrored box) is the right-hand crop of the
    image, pixel for pixel, and the hand network sees the same feature."""
    image, K = _inputs(net, 2, seed=2)
    boxes = torch.tensor([[[0.35, 0.2, 0.5], [-0.3, 0.25, 0.6], [0.0, -0.6, 0.7]],
                          [[0.1, 0.4, 0.3], [-0.2, -0.1, 0.45], [0.05, -0.5, 0.5]]])
    valid = torch.ones(2, 3)
    mirrored = boxes[:, [1, 0, 2]] * torch.tensor([-1.0, 1.0, 1.0])
    K_m = K.clone()
    K_m[:, 0, 2] = net.config.input_size - 1 - K[:, 0, 2]
    with torch.no_grad():
        out = net(image, K, boxes, valid)
        out_m = net(image.flip(-1), K_m, mirrored, valid)
    torch.testing.assert_close(out_m["crop_left_hand"], out["crop_right_hand"],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(out_m["crop_right_hand"], out["crop_left_hand"],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(out_m["feature_left_hand"], out["feature_right_hand"],
                               atol=1e-5, rtol=1e-4)
    # (the crops are not trivially equal: left and right differ)
    assert (out["crop_left_hand"] - out["crop_right_hand"]).abs().max() > 0.1


# -- flip test ---------------------------------------------------------------------------------


def _mirrored_image(image: np.ndarray, boxes: list, K: np.ndarray) -> tuple:
    """The image flipped left to right, its boxes and the camera that sees it so."""
    W = image.shape[1]
    K_m = K.copy()
    K_m[0, 2] = W - 1 - K[0, 2]
    boxes_m = [[W - 1 - x1, y0, W - 1 - x0, y1] for x0, y0, x1, y1 in boxes]
    return np.ascontiguousarray(image[:, ::-1]), boxes_m, K_m


def test_average_mirrored_is_the_mean_of_the_estimate_and_the_mirrored_one(net, anny_model):
    """A perfectly mirror-equivariant estimate comes back unchanged; two different estimates
    meet halfway (values: their mean; rotations: equally far from both)."""
    from furpe.bodymodels.mirror import mirror_params, param_mirror_plan
    from furpe.networks.inference import average_mirrored
    from furpe.networks.params import to_model_params

    gen = torch.Generator().manual_seed(5)

    def estimate() -> dict[str, torch.Tensor]:
        values = net.codec.decode(net.codec.neutral()[None].repeat(2, 1)
                                  + 0.5 * torch.randn(2, net.codec.size, generator=gen))
        return {**values, "transl": torch.randn(2, 3, generator=gen)}

    def mirrored(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return from_model_params(mirror_params(anny_model, to_model_params(values))[0],
                                 values)

    P, Q = estimate(), estimate()
    plan = param_mirror_plan(anny_model)
    same = average_mirrored(plan, P, mirrored(P))
    for k in P:
        torch.testing.assert_close(same[k], P[k], atol=1e-5, rtol=0)
    mean = average_mirrored(plan, P, mirrored(Q))
    torch.testing.assert_close(mean["transl"], (P["transl"] + Q["transl"]) / 2)
    for k in ("phenotype", "facial_actions"):
        torch.testing.assert_close(mean[k], (P[k] + Q[k]) / 2)
    from furpe.core.rotations import geodesic

    to_p, to_q = geodesic(mean["body_pose"], P["body_pose"]), geodesic(mean["body_pose"],
                                                                       Q["body_pose"])
    assert float((P["body_pose"] - Q["body_pose"]).abs().max()) > 0.1
    torch.testing.assert_close(to_p, to_q, atol=1e-4, rtol=0)


def test_flip_test_makes_the_predictor_mirror_equivariant(net, anny_model):
    """With the flip test, the people of the mirrored image are the mirror images of the
    people of the image (to float precision); the plain network is not."""
    from furpe.bodymodels.mirror import mirror_params

    rng = np.random.default_rng(7)
    H, W = 200, 260
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    K = np.array([[280.0, 0, 120.0], [0, 280.0, 95.0], [0, 0, 1]])
    boxes = [[30.0, 20.0, 130.0, 190.0], [140.0, 40.0, 230.0, 170.0]]
    image_m, boxes_m, K_m = _mirrored_image(image, boxes, K)
    for flip in (True, False):
        predictor = NetworkPredictor(net, flip_test=flip, body_model=anny_model)
        got = predictor.predict([image], [boxes], [K])[0]
        back = mirror_params(anny_model, predictor.predict([image_m], [boxes_m], [K_m])[0])[0]
        worst = max(float((got[k] - back[k]).abs().max()) for k in back)
        print(f"flip test {flip}: max difference to the mirrored image's people {worst:.3g}")
        if flip:
            assert worst < 1e-3
        else:
            assert worst > 1e-2


def test_flip_test_is_a_network_option():
    """``--flip-test`` selects the network with its flip test; the experts have their own."""
    from furpe.cli import build_config, build_parser
    from furpe.config import ReconstructConfig

    with pytest.raises(SetupError, match="flip_test applies to method network"):
        ReconstructConfig(flip_test=True)
    config = build_config(build_parser().parse_args(
        ["reconstruct", "x.jpg", "-o", "o", "--flip-test"]))
    assert config.method == "network" and config.flip_test


# -- ONNX ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_export_matches_pytorch(net, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is a furpe dependency; "
                        "only a stripped install lacks it")
    pytest.importorskip("onnx", reason="onnx is a furpe dependency; only a stripped "
                        "install lacks it")
    path = tmp_path / "net.onnx"
    from furpe.networks.export import export_onnx

    diff = export_onnx(net, path)
    print(f"ONNX export: max abs difference to PyTorch {diff:.3g}")
    assert diff is not None and diff < 1e-4, f"ONNX vs PyTorch max abs difference {diff}"

    rng = np.random.default_rng(3)
    H, W = 240, 320
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    K = np.array([[300.0, 0, W / 2], [0, 300.0, H / 2], [0, 0, 1]])
    boxes = [[[40.0, 30.0, 150.0, 220.0], [170.0, 20.0, 300.0, 230.0]]]
    want = NetworkPredictor(net).predict([image], boxes, [K])[0]
    onnx = NetworkPredictor(net, onnx=path)
    assert onnx.session is not None  # (it runs ONNX Runtime, not the PyTorch network)
    got = onnx.predict([image], boxes, [K])[0]
    assert set(got) == set(want) and want["body_pose"].shape[0] == 2
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    print(f"ONNX predictor: max abs difference of the parameters {worst:.3g}")
    assert worst < 1e-4, f"ONNX vs PyTorch predictor max abs difference {worst}"


# -- checkpoints -------------------------------------------------------------------------------


def test_read_checkpoint_rejects_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(SetupError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(SetupError, match="not a furpe network checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    with pytest.raises(SetupError, match="cannot read"):
        read_checkpoint(tmp_path / "text.pt")


@pytest.mark.parametrize("name", ["model.pt", "last.pt"])
def test_load_network_gives_the_trained_network(uninterrupted_run, anny_model,  # noqa: F811
                                                name):
    trainer = uninterrupted_run
    trained = copy.deepcopy(trainer.net).eval()  # (the shared run's network stays as it is)
    loaded = load_network(trainer.output / name, anny_model)
    assert not loaded.training and loaded.config == trained.config
    image, K = _inputs(trained, 2, seed=4)
    with torch.no_grad():
        want, got = trained(image, K), loaded(image, K)
        fresh = WholeBodyNet(anny_model, trained.config).eval()(image, K)
    for k in ("body", "camera", "boxes", *(f"part_{p}" for p in CROP_PARTS)):
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(fresh["body"], want["body"], atol=1e-4)  # the weights matter
    assert math.isfinite(float(got["body"].sum()))


@pytest.mark.slow
@pytest.mark.mediapipe
def test_method_network_reconstructs_people_with_their_keypoints(uninterrupted_run,  # noqa: F811
                                                                 anny_model):
    """``method: network`` end to end on the bundled photo: the detector's people, a mesh
    each, and the network's keypoints projected per part (nothing observed)."""
    from pathlib import Path

    import cv2

    from furpe.config import ReconstructConfig
    from furpe.pipeline import Reconstructor

    image = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"))
    config = ReconstructConfig(device="cpu", method="network",
                               checkpoint=str(uninterrupted_run.output / "model.pt"))
    rec = Reconstructor(config, body_model=anny_model)
    assert rec.experts == []  # the network alone runs no expert
    frame = rec.reconstruct_image(np.ascontiguousarray(image[:, :, ::-1]))
    assert frame.people and frame.config["method"] == "network"
    person = frame.people[0]
    assert set(person.keypoints_2d) == {"body", "left_hand", "right_hand", "face"}
    body = person.keypoints_2d["body"]
    assert body.fitted.shape == (33, 2) and np.isfinite(body.fitted).all()
    assert np.isnan(body.observed).all() and not body.confidence.any()
    # the fitted keypoints are the person's mesh projected with the frame's camera
    from furpe.bodymodels.base import BodyOutput
    from furpe.core.camera import project

    out = BodyOutput(torch.as_tensor(person.vertices)[None], torch.as_tensor(person.joints)[None])
    want = project(anny_model.keypoints(out, "mediapipe_pose"),
                   torch.as_tensor(frame.intrinsics, dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(body.fitted, want, atol=1e-2)


def test_align_translation_recovers_a_known_shift():
    """Points moved by a known translation, projected with noise and three gross outliers:
    the translation comes back to within a few per cent; too few confident points: none."""
    from furpe.networks.placement import align_translation

    rng = np.random.default_rng(0)
    K = np.array([[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]])
    X = rng.normal(0, 0.4, (2, 33, 3)) + np.array([0, 0, 3.0])
    true = np.array([[0.2, -0.3, 0.5], [-0.1, 0.4, -1.0]])
    uv = (X + true[:, None]) @ K.T
    uv = uv[..., :2] / uv[..., 2:] + rng.normal(0, 1.0, (2, 33, 2))
    uv[0, :3] += 80.0
    score = np.ones((2, 33))
    got = align_translation(X, uv, score, K)
    print("recovered", got.round(3).tolist(), "true", true.tolist())
    assert np.abs(got - true).max() < 0.05
    score[1, 5:] = 0.1  # 5 confident points: left where it was
    assert np.allclose(align_translation(X, uv, score, K)[1], 0)


def test_fit_landmarks_is_checked(uninterrupted_run):  # noqa: F811
    """``fit_landmarks`` belongs to the network method, not with ``refine``, and needs a
    network whose body encoder hands on BlazePose's landmarks (the tiny ResNet has none)."""
    from furpe.config import ReconstructConfig
    from furpe.pipeline import NetworkRun

    with pytest.raises(SetupError, match="fit_landmarks applies to method network"):
        ReconstructConfig(fit_landmarks=True)
    with pytest.raises(SetupError, match="not both"):
        ReconstructConfig(method="network", refine=True, fit_landmarks=True)
    config = ReconstructConfig(device="cpu", method="network", fit_landmarks=True,
                               checkpoint=str(uninterrupted_run.output / "model.pt"))
    from furpe.bodymodels import load_body_model

    with pytest.raises(SetupError, match="fit_landmarks needs a network"):
        NetworkRun(config, load_body_model("anny"), torch.device("cpu"))
