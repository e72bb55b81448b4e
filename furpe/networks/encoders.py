"""Image encoders: an image crop in, one feature vector per crop out.

Names (``NetworkConfig.body_backbone`` and friends):

* ``mediapipe_pose_full``, ``mediapipe_pose_heavy``, ``mediapipe_hand``, ``mediapipe_face``:
  the bundled MediaPipe landmark networks rebuilt in PyTorch with their weights
  (:mod:`furpe.experts.tflite`), i.e. backbones with human-pose pretraining that ship with
  the package; their feature is the one :meth:`TFLiteNet.features` names.
* ``resnet18``, ``resnet34``, ``resnet50``, ``hrnet_w18_small_v2``, ``hrnet_w18``,
  ``hrnet_w32``, ``hrnet_w48`` (:mod:`furpe.networks.backbones`, torchvision/timm parameter
  names): random initialisation unless a weight file is given; ``width`` scales the ResNets'
  channels (CPU-sized models).

Every encoder takes RGB in [0, 1] and normalises it the way its weights expect.

``features`` (``NetworkConfig.features``) says what a MediaPipe encoder hands on:
``pooled``, the feature map's global average (:meth:`TFLiteNet.features`); ``landmarks``,
the map itself where it is small enough to keep its layout (pose and face: 2 x 2; the hand's
7 x 7 map stays pooled, as its own heads read it) followed by the network's landmark
outputs (:attr:`TFLiteNet.head_output_names`: landmarks in crop pixels, world landmarks,
scores), so the heads see where the expert puts every joint. The other backbones have no
landmark head and take ``pooled`` only.

``flip`` (a BlazePose encoder with ``landmarks`` features; ``NetworkConfig.body_flip``): the
network also reads the crop mirrored, and the landmark outputs handed on are the mean of
both, the mirrored ones mirrored back (sides swapped, x reflected), as the body expert
averages its runs on the image and its mirror; the feature map stays the plain crop's.
"""
from __future__ import annotations

import torch
from torch import nn

from furpe.core.errors import SetupError
from furpe.core.vocab import mirror_pose_points

MEDIAPIPE = {"mediapipe_pose_full": "pose_full", "mediapipe_pose_heavy": "pose_heavy",
             "mediapipe_hand": "hand", "mediapipe_face": "face"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: What an encoder's feature is made of (see the module docstring).
FEATURES = ("pooled", "landmarks")
#: The largest feature map (h * w) that ``landmarks`` keeps whole instead of pooling.
KEEP_MAP = 4
#: Landmarks of BlazePose's landmark output (33 body points and 6 auxiliary ones).
POSE_LANDMARKS = 39


class Encoder(nn.Module):
    """``forward(image (B, 3, H, W) in [0, 1]) -> (B, dim)``."""

    dim: int

    def __init__(self, name: str, *, width: float = 1.0, weights: str | None = None,
                 features: str = "pooled", flip: bool = False) -> None:
        super().__init__()
        self.name = name
        self.flip = False  # (set below, once the plain feature's layout is known)
        if name not in encoder_names():
            raise SetupError(f"unknown backbone '{name}'; choose from "
                             f"{', '.join(encoder_names())}")
        if features not in FEATURES:
            raise SetupError(f"network.features must be one of {', '.join(FEATURES)}, "
                             f"not '{features}'")
        if features != "pooled" and name not in MEDIAPIPE:
            raise SetupError(f"network.features '{features}' needs a MediaPipe backbone "
                             f"(with a landmark head); {name} has none: use 'pooled'")
        self.features = features
        if name in MEDIAPIPE:
            from furpe.experts.tflite import expert_network

            if weights:
                raise SetupError(f"backbone {name}: its weights are the bundled model's; "
                                 "a weights file is for resnet/hrnet backbones")
            self.net = expert_network(MEDIAPIPE[name])
            self.mediapipe = True
            with torch.no_grad():
                size = self.net.input_size
                self.dim = int(self(torch.zeros(1, 3, size, size)).shape[1])
            self._landmarks_at = self._pose_landmarks_offset()
            if flip and self._landmarks_at is None:
                raise SetupError(f"network.body_flip needs a BlazePose body backbone with "
                                 f"features 'landmarks' (not {name}, {features})")
            self.flip = flip
        else:
            from furpe.networks.backbones import build_backbone

            options = {"width": width} if name.startswith("resnet") else {}
            self.net = build_backbone(name, weights or None, **options)
            self.mediapipe = False
            self._landmarks_at = None
            self.dim = int(self.net.out_channels)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                                 persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                                 persistent=False)

    def _pose_landmarks_offset(self) -> int | None:
        """Where BlazePose's landmarks start in a ``landmarks`` feature (None: not there)."""
        if self.features != "landmarks" or not MEDIAPIPE[self.name].startswith("pose"):
            return None
        names = self.net.head_output_names
        sizes = [int(torch.tensor(self.net.shapes[self.net.names.index(n)]).prod())
                 for n in names]
        if sizes[0] != POSE_LANDMARKS * 5:
            return None
        return self.dim - sum(sizes)

    @property
    def has_pose_landmarks(self) -> bool:
        """Whether :meth:`pose_landmarks` finds BlazePose's landmarks in the feature."""
        return self._landmarks_at is not None

    def pose_landmarks(self, feature: torch.Tensor) -> torch.Tensor | None:
        """BlazePose's body landmarks in this encoder's ``feature`` (``landmarks`` features of
        a pose backbone; else None): (B, 33, 3), x and y in pixels of the encoder's input
        (pixel centres at whole numbers) and the score, visibility x presence."""
        if not self.has_pose_landmarks:
            return None
        lm = feature[:, self._landmarks_at:self._landmarks_at + POSE_LANDMARKS * 5]
        lm = lm.reshape(-1, POSE_LANDMARKS, 5)[:, :33]
        score = torch.sigmoid(lm[..., 3]) * torch.sigmoid(lm[..., 4])
        return torch.cat([lm[..., :2] - 0.5, score[..., None]], -1)

    def pose_world(self, feature: torch.Tensor) -> torch.Tensor | None:
        """BlazePose's world landmarks in this encoder's ``feature`` (None like
        :meth:`pose_landmarks`): (B, 33, 3) metres, origin between the hips, x right, y down,
        z away from the camera (the crop is upright, so these are the body expert's)."""
        if not self.has_pose_landmarks:
            return None
        at = self._landmarks_at + POSE_LANDMARKS * 5 + 1  # after the landmarks and presence
        return feature[:, at:at + POSE_LANDMARKS * 3].reshape(-1, POSE_LANDMARKS, 3)[:, :33]

    def _mirrored_back(self, outputs: torch.Tensor, width: int) -> torch.Tensor:
        """BlazePose's outputs (B, 313) for a mirrored crop of ``width`` pixels as those of
        the crop: landmarks and world landmarks mirrored back (:func:`mirror_pose_points`)."""
        n = POSE_LANDMARKS
        lm = mirror_pose_points(outputs[:, :n * 5].reshape(-1, n, 5), width)
        world = mirror_pose_points(outputs[:, n * 5 + 1:n * 8 + 1].reshape(-1, n, 3))
        return torch.cat([lm.flatten(1), outputs[:, n * 5:n * 5 + 1], world.flatten(1),
                          outputs[:, n * 8 + 1:]], 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.mediapipe:
            if self.features == "pooled":
                return self.net.features(image)["feature"]
            B = image.shape[0]
            got = self.net.features(torch.cat([image, image.flip(-1)]) if self.flip else image,
                                    outputs=True)
            fmap = got["feature_map"][:B]
            kept = fmap.flatten(1) if fmap.shape[2] * fmap.shape[3] <= KEEP_MAP \
                else got["feature"][:B]
            outputs = got["outputs"]
            if self.flip:
                outputs = (outputs[:B] + self._mirrored_back(outputs[B:], image.shape[-1])) / 2
            return torch.cat([kept, outputs], 1)
        fmap = self.net((image - self.mean) / self.std)
        return fmap.mean((2, 3))


def encoder_names() -> list[str]:
    """Every backbone name an encoder accepts."""
    from furpe.networks.backbones import backbone_names

    return sorted(MEDIAPIPE) + list(backbone_names())
