"""The whole-body network: a body branch on the person crop, then hand and head sub-networks
on attention crops, merged into one set of body-model parameters.

* **Body branch**: an encoder on the person crop (resized to ``body_size``), and an
  iterative error-feedback regressor (:class:`IterativeRegressor`) from the neutral vector
  of every block (:class:`~furpe.networks.params.ParamCodec`) plus the camera. It is told
  where the crop sits in the image (the crop's intrinsics, as CLIFF does), and its camera is
  a perspective one (:func:`~furpe.networks.params.camera_translation`), so the person lands
  in the camera frame like the expert fit's.
* **Part boxes**: a small head on the body feature predicts a square box per part (left
  hand, right hand, head) in the crop. The paper projects the body estimate's keypoints
  instead; a learned box keeps the network free of the body model's forward pass, so that
  it exports to ONNX (Anny's rest skeleton uses an SVD) and stays cheap.
* **Sub-networks**: the hand and head crops are sampled from the network's input image (at
  ``input_size``, so a larger input gives them more pixels), the left hand mirrored and
  read by the right-hand network, each refining the body branch's estimate of its blocks.
* **Merge**: ``merge: part`` takes the hands' and face's blocks from the sub-networks (the
  paper's design), ``merge: body`` keeps the body branch's.

``forward`` returns plain tensors (what ONNX exports); :meth:`WholeBodyNet.decode` turns
them into body-model parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from furpe.bodymodels.base import BodyModel
from furpe.bodymodels.mirror import mate, param_mirror_plan
from furpe.core.errors import SetupError
from furpe.core.rotations import mirror_rotmat
from furpe.networks.encoders import Encoder
from furpe.networks.params import CAMERA_INIT, CAMERA_SIZE, ParamCodec, camera_translation

#: The attention crops, in the order of the box head's outputs.
CROP_PARTS = ("left_hand", "right_hand", "face")
#: The box head's starting boxes (cx, cy, log side per crop part): hands low, head on top.
BOX_PRIOR = ((0.3, 0.2, float(np.log(0.3))), (-0.3, 0.2, float(np.log(0.3))),
             (0.0, -0.7, float(np.log(0.35))))


@dataclass
class NetworkConfig:
    """The network's architecture (stored in every checkpoint)."""

    body_backbone: str = "mediapipe_pose_full"
    hand_backbone: str = "mediapipe_hand"
    head_backbone: str = "mediapipe_face"
    #: Channel multiplier of ResNet backbones (1.0 = torchvision's).
    width: float = 1.0
    #: What the encoders hand on: ``pooled`` or ``landmarks`` (:mod:`furpe.networks.encoders`).
    features: str = "pooled"
    #: Weight files for resnet/hrnet backbones, by branch (``body``, ``hand``, ``head``).
    weights: dict[str, str] = field(default_factory=dict)
    input_size: int = 256
    body_size: int = 256
    hand_size: int = 224
    head_size: int = 256
    hidden: tuple[int, ...] = (1024, 1024)
    iterations: int = 3
    dropout: float = 0.1
    #: Run the hand and head sub-networks.
    parts: bool = True
    #: ``part``: hands and face from the sub-networks; ``body``: from the body branch.
    merge: str = "part"
    #: Branches (``body``, ``hand``, ``head``) whose encoder is not trained. A frozen
    #: MediaPipe encoder keeps the bundled weights, so checkpoints leave it out.
    freeze: tuple[str, ...] = ()
    #: The body encoder also reads its crop mirrored and hands on the mean of both landmark
    #: outputs (a BlazePose encoder with ``landmarks`` features; :class:`Encoder` ``flip``).
    body_flip: bool = False

    def __post_init__(self) -> None:
        if self.merge not in ("part", "body"):
            raise SetupError(f"network.merge must be 'part' or 'body', not '{self.merge}'")
        for size in ("input_size", "body_size", "hand_size", "head_size"):
            if getattr(self, size) < 16:
                raise SetupError(f"network.{size} must be at least 16 pixels")
        for key, names in (("weights", self.weights), ("freeze", self.freeze)):
            unknown = set(names) - {"body", "hand", "head"}
            if unknown:
                raise SetupError(f"network.{key}: unknown branch '{sorted(unknown)[0]}'; "
                                 "use body, hand or head")
        self.freeze = tuple(self.freeze)


class IterativeRegressor(nn.Module):
    """``x_{k+1} = x_k + MLP([feature, condition, x_k])`` for ``iterations`` steps, from
    ``start`` (default: the registered neutral vector)."""

    def __init__(self, feature: int, condition: int, init: torch.Tensor,
                 hidden: tuple[int, ...], iterations: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("init", init.clone())
        size = init.numel()
        layers: list[nn.Module] = []
        width = feature + condition + size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        out = nn.Linear(width, size)
        nn.init.xavier_uniform_(out.weight, gain=0.01)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(*layers, out)
        self.iterations = iterations

    def forward(self, feature: torch.Tensor, condition: torch.Tensor | None = None,
                start: torch.Tensor | None = None) -> torch.Tensor:
        x = self.init.expand(feature.shape[0], -1) if start is None else start
        extra = [] if condition is None else [condition]
        for _ in range(self.iterations):
            x = x + self.mlp(torch.cat([feature, *extra, x], 1))
        return x


def crop_condition(K: torch.Tensor, size: int) -> torch.Tensor:
    """Where the crop sits in the image, from its intrinsics: the image centre's offset
    from the crop centre and the crop's side, over the focal length (B, 3)."""
    f = K[:, 0, 0]
    return torch.stack([(size / 2 - K[:, 0, 2]) / f, (size / 2 - K[:, 1, 2]) / f,
                        size / f], 1)


def sample_crops(image: torch.Tensor, boxes: torch.Tensor, size: int,
                 flip: bool = False) -> torch.Tensor:
    """Bilinear square crops (B, 3, size, size) of ``image`` at ``boxes`` (B, 3) = (cx, cy,
    side) in normalised coordinates ([-1, 1] across the image), mirrored when ``flip``.
    The grid is built with plain arithmetic (exports to ONNX with ``grid_sample``)."""
    B = image.shape[0]
    t = (torch.arange(size, dtype=image.dtype, device=image.device) + 0.5) / size * 2 - 1
    gx = t[None, None, :] * (boxes[:, 2:3, None] / 2)
    if flip:
        gx = -gx
    gx = gx + boxes[:, 0:1, None]
    gy = t[None, :, None] * (boxes[:, 2:3, None] / 2) + boxes[:, 1:2, None]
    grid = torch.stack([gx.expand(B, size, size), gy.expand(B, size, size)], -1)
    return nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)


class _PartNet(nn.Module):
    def __init__(self, encoder: Encoder, codec: ParamCodec, config: NetworkConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.norm = nn.BatchNorm1d(encoder.dim)
        self.regressor = IterativeRegressor(encoder.dim, 0, codec.neutral(), config.hidden,
                                            config.iterations, config.dropout)

    def forward(self, feature: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """The refined blocks from the encoder's ``feature`` of the crop."""
        return self.regressor(self.norm(feature), start=start)


class WholeBodyNet(nn.Module):
    """FuRPE's whole-body network for ``model`` (its blocks size every head)."""

    def __init__(self, model: BodyModel, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or NetworkConfig()
        self.body_model_name = model.name
        self.codec = ParamCodec(model, [n for n in model.blocks if n != "transl"])
        self.body_encoder = Encoder(cfg.body_backbone, width=cfg.width,
                                    weights=cfg.weights.get("body"), features=cfg.features,
                                    flip=cfg.body_flip)
        # Encoder features come at their own scale (a frozen MediaPipe network's vary by
        # about 0.01 from person to person): standardised per dimension before the heads.
        self.body_norm = nn.BatchNorm1d(self.body_encoder.dim)
        init = torch.cat([self.codec.neutral(), torch.tensor(CAMERA_INIT)])
        self.body = IterativeRegressor(self.body_encoder.dim, 3, init, cfg.hidden,
                                       cfg.iterations, cfg.dropout)
        self.box_head = nn.Linear(self.body_encoder.dim + 3, 3 * len(CROP_PARTS))
        nn.init.zeros_(self.box_head.weight)
        with torch.no_grad():  # start from plausible boxes
            self.box_head.bias.copy_(torch.tensor(BOX_PRIOR).flatten())
        self.part_codecs = {}
        self.hand = self.head = None
        if cfg.parts:
            self.part_codecs = {"right_hand": ParamCodec.for_parts(model, ["right_hand"]),
                                "left_hand": ParamCodec.for_parts(model, ["left_hand"]),
                                "face": ParamCodec.for_parts(model, ["face"])}
            self.hand = _PartNet(Encoder(cfg.hand_backbone, width=cfg.width,
                                         weights=cfg.weights.get("hand"),
                                         features=cfg.features),
                                 self.part_codecs["right_hand"], cfg)
            self.head = _PartNet(Encoder(cfg.head_backbone, width=cfg.width,
                                         weights=cfg.weights.get("head"),
                                         features=cfg.features),
                                 self.part_codecs["face"], cfg)
        for branch in cfg.freeze:
            encoder = self.encoder(branch)
            for p in () if encoder is None else encoder.parameters():
                p.requires_grad_(False)
        plan = param_mirror_plan(model)
        self._hand_mirror = {name: (plan[name][1], plan[name][2])
                             for name in ("left_hand_pose", "right_hand_pose")
                             if name in model.blocks and plan.get(name)}
        #: Names of the parameter blocks the network outputs (all but ``transl``).
        self.blocks = list(self.codec.slots)

    def encoder(self, branch: str) -> Encoder | None:
        """The encoder of ``body``, ``hand`` or ``head`` (None without sub-networks)."""
        if branch == "body":
            return self.body_encoder
        net = self.hand if branch == "hand" else self.head
        return None if net is None else net.encoder

    def bundled_keys(self) -> set[str]:
        """State-dict keys that the package restores by itself: frozen MediaPipe encoders."""
        prefix = {"body": "body_encoder.", "hand": "hand.encoder.", "head": "head.encoder."}
        return {k for k in self.state_dict() for b in self.config.freeze
                if k.startswith(prefix[b]) and self.encoder(b) is not None
                and self.encoder(b).mediapipe}

    def train(self, mode: bool = True) -> "WholeBodyNet":
        super().train(mode)
        for branch in self.config.freeze:  # frozen encoders stay in inference mode
            if self.encoder(branch) is not None:
                self.encoder(branch).eval()
        return self

    # -- forward: plain tensors ---------------------------------------------------------

    def forward(self, image: torch.Tensor | None, K: torch.Tensor,
                boxes: torch.Tensor | None = None, box_valid: torch.Tensor | None = None,
                features: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``image`` (B, 3, input_size, input_size) RGB in [0, 1]; ``K`` (B, 3, 3) its
        intrinsics; ``boxes`` (B, 3, 3) attention boxes to use instead of the predicted ones
        where ``box_valid`` (B, 3) is 1 (training may give the labels'); ``features``: the
        encoders' features computed beforehand (``body`` and each crop part, as this returns
        them; frozen encoders, :mod:`furpe.training.features`), in which case ``image`` may
        be None. Returns ``body`` (B, D) the body branch's vector, ``camera`` (B, 3),
        ``boxes`` (B, 3, 3) predicted (cx, cy, side), per crop part ``part_<name>`` its
        sub-network's vector (hands in the right hand's convention), ``feature_<branch>``
        the encoders' features and ``crop_<name>`` the crops (when the encoders ran), and
        with a BlazePose encoder handing on ``landmarks``, ``landmarks_body`` (B, 33, 3) its
        body landmarks in the crop's pixels with their scores
        (:meth:`Encoder.pose_landmarks`) and ``world_body`` (B, 33, 3) their metric 3D
        positions (:meth:`Encoder.pose_world`)."""
        cfg = self.config
        cond = crop_condition(K, cfg.input_size if image is None else image.shape[-1])
        feature = self._body_feature(image) if features is None else features["body"]
        normed = self.body_norm(feature)
        vec = self.body(normed, cond)
        raw = self.box_head(torch.cat([normed, cond], 1)).view(-1, len(CROP_PARTS), 3)
        pred_boxes = torch.cat([raw[..., :2], torch.exp(raw[..., 2:].clamp(-4, 2))], -1)
        out = {"body": vec[:, :self.codec.size], "camera": vec[:, self.codec.size:],
               "boxes": pred_boxes, "feature_body": feature}
        landmarks = self.body_encoder.pose_landmarks(feature)
        if landmarks is not None:  # in the crop's pixels (furpe.networks.placement)
            scale = cfg.input_size / cfg.body_size
            xy = (landmarks[..., :2] + 0.5) * scale - 0.5
            out["landmarks_body"] = torch.cat([xy, landmarks[..., 2:]], -1)
            out["world_body"] = self.body_encoder.pose_world(feature)
        if not cfg.parts:
            return out
        use = pred_boxes.detach()
        if boxes is not None:
            use = torch.where(box_valid[..., None] > 0, boxes, use)
        body = self.codec.decode(vec)
        for k, part in enumerate(CROP_PARTS):
            hand = part != "face"
            net = self.hand if hand else self.head
            if features is None:
                crop = self._part_crop(image, use[:, k], part)
                out[f"crop_{part}"] = crop
                out[f"feature_{part}"] = net.encoder(crop)
            else:
                out[f"feature_{part}"] = features[part]
            codec = self.part_codecs["right_hand" if hand else "face"]
            values = {n: body[n].detach() for n in self.part_codecs[part].slots}
            if part == "left_hand":
                values = self._mirror_hand(values)
            out[f"part_{part}"] = net(out[f"feature_{part}"], codec.encode(values))
        return out

    @torch.no_grad()
    def encode(self, image: torch.Tensor, boxes: torch.Tensor, box_valid: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """The encoders' features of a batch (what ``forward(features=...)`` takes): the
        crops at ``boxes`` where ``box_valid``, elsewhere at the box head's starting boxes
        (:data:`BOX_PRIOR`), so that they do not depend on training."""
        features = {"body": self._body_feature(image)}
        if not self.config.parts:
            return features
        prior = torch.tensor(BOX_PRIOR, dtype=image.dtype, device=image.device)
        prior = torch.cat([prior[:, :2], prior[:, 2:].exp()], 1).expand(len(image), -1, -1)
        use = torch.where(box_valid[..., None] > 0, boxes, prior)
        for k, part in enumerate(CROP_PARTS):
            net = self.head if part == "face" else self.hand
            features[part] = net.encoder(self._part_crop(image, use[:, k], part))
        return features

    def _body_feature(self, image: torch.Tensor) -> torch.Tensor:
        S = self.config.body_size
        body_in = image if image.shape[-1] == S else nn.functional.interpolate(
            image, size=(S, S), mode="bilinear", align_corners=False, antialias=False)
        return self.body_encoder(body_in)

    def _part_crop(self, image: torch.Tensor, box: torch.Tensor, part: str) -> torch.Tensor:
        size = self.config.head_size if part == "face" else self.config.hand_size
        return sample_crops(image, box, size, flip=part == "left_hand")

    def _mirror_hand(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One hand's blocks (rotation matrices) as the other hand's: left <-> right."""
        out = {}
        for name, R in values.items():
            other = mate(name)
            rows, sign = self._hand_mirror[other]
            out[other] = mirror_rotmat(R[:, torch.as_tensor(rows)], sign)
        return out

    # -- decoding -----------------------------------------------------------------------

    def decode(self, out: dict[str, torch.Tensor], K: torch.Tensor, crop_size: int | None = None,
               merge: str | None = None) -> dict[str, torch.Tensor]:
        """The merged parameters: rotation blocks as matrices (B, N, 3, 3), the others as
        values, and ``transl`` (B, 3) in the camera frame of ``K``."""
        merge = merge or self.config.merge
        params = self.codec.decode(out["body"])
        if merge == "part" and self.config.parts:
            for part in CROP_PARTS:
                codec = self.part_codecs["face" if part == "face" else "right_hand"]
                values = codec.decode(out[f"part_{part}"])
                if part == "left_hand":
                    values = self._mirror_hand(values)
                params.update(values)
        params["transl"] = camera_translation(out["camera"], K,
                                              crop_size or self.config.input_size)
        return params
