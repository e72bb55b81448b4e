"""Running a trained network: checkpoints in, body-model parameters per person out.

:func:`load_network` reads an inference checkpoint (``model.pt`` of ``furpe train``, or the
training checkpoint ``last.pt``); :class:`NetworkPredictor` crops each person box the way
the training loader does (square, ``expand`` times the box side, the crop's own camera),
runs the network on all people of a batch of images at once and returns parameters in the
camera frame of each image, ready for the body model. With ``onnx=PATH`` the network runs
on ONNX Runtime instead (:mod:`furpe.networks.export`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel
from furpe.bodymodels.mirror import BlockMirror, param_mirror_plan
from furpe.core.camera import PERSON_CROP_EXPAND, crop_transform
from furpe.core.errors import SetupError
from furpe.core.rotations import mirror_rotmat
from furpe.core.vocab import mirror_pose_points
from furpe.networks.params import to_model_params
from furpe.networks.wholebody import NetworkConfig, WholeBodyNet

CHECKPOINT_FORMAT = "furpe-network"
CHECKPOINT_VERSION = 1
#: The checkpoint shipped with the package (``furpe reconstruct --method network``).
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "networks" / "furpe-small.pt"


def read_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """The inference view of a checkpoint file (``None``: the shipped one)."""
    path = Path(path) if path else SHIPPED
    if not path.is_file():
        raise SetupError(f"checkpoint {path}: no such file" + (
            " (this installation ships no trained network)" if path == SHIPPED else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a damaged file
        raise SetupError(f"checkpoint {path}: cannot read it ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SetupError(f"checkpoint {path}: not a furpe network checkpoint")
    if state.get("kind") == "training":  # last.pt: its network, the same view as model.pt
        state = {**state, "weights": state["network"]}
    state["path"] = str(path)
    return state


def load_network(checkpoint: str | Path | dict[str, Any] | None, body_model: BodyModel,
                 device: torch.device | str = "cpu") -> WholeBodyNet:
    """The network of a checkpoint (a path, ``None`` for the shipped one, or what
    :func:`read_checkpoint` returned), in inference mode, for ``body_model``."""
    state = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    if state["body_model"] != body_model.name:
        raise SetupError(f"checkpoint {state['path']} was trained for the body model "
                         f"'{state['body_model']}', not '{body_model.name}'")
    cfg = dict(state["network_config"])
    cfg["hidden"], cfg["freeze"] = tuple(cfg["hidden"]), tuple(cfg.get("freeze", ()))
    net = WholeBodyNet(body_model, NetworkConfig(**cfg))
    missing, unexpected = net.load_state_dict(state["weights"], strict=False)
    missing = set(missing) - net.bundled_keys()
    if missing or unexpected:
        raise SetupError(f"checkpoint {state['path']} does not fit its network: "
                         f"missing {sorted(missing)[:1]}, unexpected {sorted(unexpected)[:1]}")
    return net.to(device).eval()


@dataclass
class Crops:
    """Person crops ready for the network: images (N, 3, S, S) in [0, 1], intrinsics and
    the (N, 2, 3) image-to-crop affine maps."""

    images: np.ndarray
    K: np.ndarray
    A: np.ndarray

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Crop pixels (N, J, 2) of each crop as image pixels."""
        M, t = self.A[:, :, :2], self.A[:, :, 2]
        return np.einsum("nij,nkj->nki", np.linalg.inv(M), uv - t[:, None])


def person_crops(images: Sequence[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]],
                 Ks: Sequence[np.ndarray], size: int) -> Crops:
    """One crop per box of each image (boxes (x0, y0, x1, y1) in pixels)."""
    import cv2

    crops, cams, maps = [], [], []
    for image, image_boxes, K in zip(images, boxes, Ks):
        for x0, y0, x1, y1 in image_boxes:
            side = max(x1 - x0, y1 - y0, 1.0) * PERSON_CROP_EXPAND
            A, Kc, _ = crop_transform(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), side,
                                      np.asarray(K, dtype=np.float64), size)
            crop = cv2.warpAffine(np.ascontiguousarray(image), A, (size, size),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            crops.append(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)
            cams.append(Kc.astype(np.float32))
            maps.append(A)
    if not crops:
        return Crops(np.zeros((0, 3, size, size), np.float32), np.zeros((0, 3, 3), np.float32),
                     np.zeros((0, 2, 3)))
    return Crops(np.stack(crops), np.stack(cams), np.stack(maps))


def mirrored_crops(crops: Crops) -> Crops:
    """The crops flipped left to right, with the cameras that see them so (the principal
    point mirrored, as the training loader's flip does)."""
    size = crops.images.shape[-1]
    K = crops.K.copy()
    K[:, 0, 2] = size - 1 - K[:, 0, 2]
    A = crops.A.copy()  # image -> flipped crop: u' = size - 1 - u
    A[:, 0] = -A[:, 0]
    A[:, 0, 2] += size - 1
    return Crops(np.ascontiguousarray(crops.images[..., ::-1]), K, A)


def _mean_rotation(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """The rotation nearest to the mean of two rotation matrices (chordal mean)."""
    U, _, Vh = torch.linalg.svd(R1 + R2)
    d = torch.sign(torch.linalg.det(U @ Vh))
    fix = torch.ones(d.shape + (3,), dtype=R1.dtype, device=R1.device)
    fix[..., 2] = d
    return (U * fix[..., None, :]) @ Vh


def average_mirrored(plan: dict[str, BlockMirror], plain: dict[str, torch.Tensor],
                     mirrored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean of decoded parameters (rotation blocks as matrices) of the plain crops and
    of the mirrored crops, the latter mirrored back by the body model's ``plan``
    (:func:`~furpe.bodymodels.mirror.param_mirror_plan`: left and right swapped); a block
    without a mirror keeps the plain value."""
    out = {}
    for name, how in plan.items():
        if name not in plain:
            continue
        if how is None or how[0] not in mirrored:
            out[name] = plain[name]
            continue
        src, rows, sign = how
        x = mirrored[src][:, torch.as_tensor(rows)]
        if x.dim() == 4:  # rotation matrices
            out[name] = _mean_rotation(plain[name], mirror_rotmat(x, sign))
        else:
            out[name] = (plain[name] + x * x.new_tensor(sign)) / 2
    return out


class NetworkPredictor:
    """Parameters of the people in images from a trained network (PyTorch or ONNX Runtime).

    Example::

        predictor = NetworkPredictor(load_network(None, model))
        params = predictor.predict([rgb], [[box0, box1]], [K])   # one dict per person
    """

    def __init__(self, net: WholeBodyNet, *, onnx: str | Path | None = None,
                 batch_size: int = 32, flip_test: bool = False,
                 body_model: BodyModel | None = None) -> None:
        if flip_test and body_model is None:
            raise ValueError("flip_test needs the body model (to mirror parameters)")
        self.net = net
        self.flip_test = flip_test
        #: How the body model's parameters mirror (for the flip test).
        self.mirror_plan = param_mirror_plan(body_model) if body_model is not None else None
        self.size = net.config.input_size
        self.batch_size = batch_size
        self.session = None
        if onnx is not None:
            from furpe.networks.export import onnx_session

            self.session = onnx_session(onnx)

    def raw(self, crops: Crops) -> dict[str, torch.Tensor]:
        """The network's outputs for a set of crops, batched."""
        device = next(self.net.parameters()).device
        outs: list[dict[str, torch.Tensor]] = []
        for i in range(0, len(crops.images), self.batch_size):
            img, K = crops.images[i:i + self.batch_size], crops.K[i:i + self.batch_size]
            if self.session is not None:
                from furpe.networks.export import run_onnx

                outs.append({k: torch.as_tensor(v) for k, v in
                             run_onnx(self.session, img, K).items()})
                continue
            with torch.no_grad():
                out = self.net(torch.as_tensor(img, device=device),
                               torch.as_tensor(K, device=device))
            outs.append({k: v for k, v in out.items() if not k.startswith(("crop_", "feature_"))})
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]],
                Ks: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Per image, the batched parameters (axis-angle, camera frame) of its people."""
        return [params for params, _ in self.predict_with_landmarks(images, boxes, Ks)]

    def predict_with_landmarks(
        self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]],
        Ks: Sequence[np.ndarray],
    ) -> list[tuple[dict[str, torch.Tensor], np.ndarray | None]]:
        """Per image, :meth:`predict`'s parameters and the body landmarks of the network's
        pose encoder, (people, 33, 6): x, y in image pixels, the score, and the metric 3D
        landmark (NaN where the network does not give it) (None when the network has none:
        ``landmarks_body`` and ``world_body`` of :meth:`WholeBodyNet.forward`)."""
        crops = person_crops(images, boxes, Ks, self.size)
        counts = [len(b) for b in boxes]
        if not len(crops.images):
            return [({}, None) for _ in images]
        device = next(self.net.parameters()).device

        def run(c: Crops) -> tuple[dict[str, torch.Tensor], np.ndarray | None]:
            """Decoded parameters and the pose encoder's landmarks of crops ``c``."""
            out = self.raw(c)
            with torch.no_grad():
                values = self.net.decode({k: v.to(device) for k, v in out.items()},
                                         torch.as_tensor(c.K, device=device))
            if "landmarks_body" not in out:
                return values, None
            lm = out["landmarks_body"].double().cpu().numpy()
            # NaN from an ONNX file exported before the network handed on world landmarks
            world = (out["world_body"].double().cpu().numpy() if "world_body" in out
                     else np.full(lm[..., :3].shape, np.nan))
            return values, np.concatenate([c.to_image(lm[..., :2]), lm[..., 2:3], world], -1)

        values, landmarks = run(crops)
        if self.flip_test:
            assert self.mirror_plan is not None
            values_m, landmarks_m = run(mirrored_crops(crops))
            values = average_mirrored(self.mirror_plan, values, values_m)
            if landmarks is not None and landmarks_m is not None:
                # in image pixels already: only the metric x (column 3) is mirrored
                landmarks = (landmarks + mirror_pose_points(landmarks_m, column=3)) / 2
        params = to_model_params(values)
        result, start = [], 0
        for n in counts:
            result.append(({k: v[start:start + n] for k, v in params.items()} if n else {},
                           None if landmarks is None or not n else landmarks[start:start + n]))
            start += n
        return result
