"""MediaPipe's landmark networks run straight on a box, without MediaPipe's own detectors.

The Tasks landmarkers find a person with a face-based detector, and a hand with a palm
detector, before their landmark networks look: people seen from behind, from above, very small
or half hidden, and hands that fill their crop, grip something or hide each other, are not
found even when a person box or the body's wrist says where they are. These classes run the
bundled landmark networks (rebuilt in PyTorch, :func:`~furpe.experts.tflite.expert_network`)
on such boxes, as MediaPipe's own graphs do on a region they track: RGB in [0, 1] on a square
crop, a presence score to reject what is not a person or a hand.

* :class:`PoseBoxLandmarker`: BlazePose on upright square crops (256 px), landmarks refined on
  the network's heatmaps (MediaPipe's RefineLandmarksFromHeatmap).
* :class:`HandBoxLandmarker`: the hand network (224 px) on a box, then twice more on the
  rotated region its own landmarks give (MediaPipe's hand tracking: the hand upright, twice
  the landmarks' extent), since a hand in an upright crop may point anywhere.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from furpe.core.boxes import Box
from furpe.experts.tasks import HandLandmarks, PoseLandmarks

POSE_NETWORKS = {"heavy": "pose_heavy", "full": "pose_full"}
"""The rebuilt landmark network of each BlazePose variant."""

POSE_INPUT_SIZE = 256
"""The landmark network's square input, pixels."""


HAND_INPUT_SIZE = 224
"""The hand landmark network's square input, pixels."""

Region = tuple[float, float, float, float]
"""A rotated square region: centre x, y and side in image pixels, rotation in radians (the
crop's up direction turned clockwise by it in the image)."""


def crop_region(image: np.ndarray, region: Region, size: int) -> np.ndarray:
    """The rotated square ``region`` of ``image`` resampled to ``size`` x ``size`` (bilinear,
    zero outside the image) as MediaPipe's ImageToTensor does: crop pixel (j, i) samples the
    image at :func:`region_to_image` of (j, i), plus half a pixel (measured against the Tasks
    hand landmarker: 0.25 px at most; sampling at pixel centres instead misses by 3 px)."""
    import cv2

    cx, cy, side, rot = region
    c, s = np.cos(rot), np.sin(rot)
    k = side / size
    offset = np.array([cx + 0.5, cy + 0.5]) - side * np.array([[c, -s], [s, c]]) @ [0.5, 0.5]
    M = np.array([[k * c, -k * s, offset[0]], [k * s, k * c, offset[1]]])
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def region_to_image(uv: np.ndarray, region: Region, size: int) -> np.ndarray:
    """Points ``uv`` (N, 2) in crop units (0..``size``, MediaPipe's: pixel j spans j..j+1) of
    a crop of ``region``, in image pixels (pixel centres at integers)."""
    cx, cy, side, rot = region
    c, s = np.cos(rot), np.sin(rot)
    d = (np.asarray(uv, dtype=np.float64) / size - 0.5) * side
    return np.stack([cx + c * d[:, 0] - s * d[:, 1], cy + s * d[:, 0] + c * d[:, 1]], axis=1)


def box_region(box: Box) -> Region:
    """The upright square region of the square hull of ``box``."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0,
            float(max(box[2] - box[0], box[3] - box[1])), 0.0)


_HAND_ROI_POINTS = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]


def hand_region(kp2d: np.ndarray, scale: float = 2.0, shift: float = -0.1) -> Region:
    """MediaPipe's hand tracking region from 21 hand landmarks (image pixels): rotated so the
    wrist-to-knuckles direction points up, around the box of 12 palm and lower-finger
    landmarks in that frame, moved ``shift`` of its height along it, its longer side
    x ``scale``."""
    sub = np.asarray(kp2d, dtype=np.float64)[_HAND_ROI_POINTS]
    end = ((sub[4] + sub[8]) / 2 + sub[6]) / 2  # index and ring knuckles, and the middle one
    angle = np.pi / 2 - np.arctan2(-(end[1] - sub[0, 1]), end[0] - sub[0, 0])
    rot = angle - 2 * np.pi * np.floor((angle + np.pi) / (2 * np.pi))
    c, s = np.cos(rot), np.sin(rot)
    R = np.array([[c, -s], [s, c]])
    centre = (sub.max(0) + sub.min(0)) / 2
    local = (sub - centre) @ R  # rotated by -rot
    lo, hi = local.min(0), local.max(0)
    mid = R @ ((lo + hi) / 2) + centre
    w, h = hi - lo
    cx, cy = mid[0] - h * shift * s, mid[1] + h * shift * c
    return float(cx), float(cy), float(max(w, h) * scale), float(rot)


def refine_from_heatmaps(uv: np.ndarray, heatmaps: np.ndarray, window: int = 7,
                         min_confidence: float = 0.5) -> np.ndarray:
    """MediaPipe's heatmap refinement: each landmark ``uv`` (N, 2, normalised to the crop) moves
    to the confidence-weighted centre of a ``window``-cell neighbourhood of its heatmap
    ``heatmaps`` (N, n, n logits) when the neighbourhood's best confidence reaches
    ``min_confidence``."""
    out, n, half = uv.copy(), heatmaps.shape[1], window // 2
    for i, (x, y) in enumerate(uv):
        c, r = int(x * n), int(y * n)
        if not (0 <= c < n and 0 <= r < n):
            continue
        rows, cols = np.mgrid[max(0, r - half):min(n, r + half + 1),
                              max(0, c - half):min(n, c + half + 1)]
        conf = 1.0 / (1.0 + np.exp(-heatmaps[i][rows, cols].astype(np.float64)))
        if conf.max() >= min_confidence:
            out[i] = [(cols * conf).sum() / n / conf.sum(), (rows * conf).sum() / n / conf.sum()]
    return out


class PoseBoxLandmarker:
    """The BlazePose ``variant`` (``"heavy"`` or ``"full"``) landmark network on given crops.

    ``process(crops)`` takes (B, 256, 256, 3) uint8 RGB crops and gives one
    :class:`PoseLandmarks` per crop, ``uv`` normalised to its crop, or None where the network's
    pose presence is below ``min_presence`` (no person: on 100 random crops of real photos,
    79% scored below 0.5, on crops of people 0.58-1.0). The network is built on first use
    (about a second) and runs in PyTorch on the CPU, batched.
    """

    def __init__(self, variant: str = "heavy", min_presence: float = 0.5) -> None:
        if variant not in POSE_NETWORKS:
            raise ValueError(f"unknown pose model '{variant}'; known: {', '.join(POSE_NETWORKS)}")
        self.variant, self.min_presence = variant, min_presence
        self._net: Any = None

    def process(self, crops: np.ndarray) -> list[PoseLandmarks | None]:
        import torch

        from furpe.experts.tflite import expert_network

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (POSE_INPUT_SIZE, POSE_INPUT_SIZE, 3):
            raise ValueError(f"crops must be (B, {POSE_INPUT_SIZE}, {POSE_INPUT_SIZE}, 3), "
                             f"got {crops.shape}")
        if self._net is None:
            self._net = expert_network(POSE_NETWORKS[self.variant]).eval()
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            out = self._net(x)
        landmarks = out["Identity"].view(-1, 39, 5).double().numpy()
        heatmaps = out["Identity_3"].numpy()
        world = out["Identity_4"].view(-1, 39, 3).double().numpy()
        presence = out["Identity_1"].view(-1).numpy()
        result: list[PoseLandmarks | None] = []
        for lm, hm, w, p in zip(landmarks, heatmaps, world, presence):
            if p < self.min_presence:
                result.append(None)
                continue
            uv = refine_from_heatmaps(lm[:33, :2] / POSE_INPUT_SIZE, hm[:33])
            result.append(PoseLandmarks(uv=uv, visibility=1.0 / (1.0 + np.exp(-lm[:33, 3])),
                                        presence=1.0 / (1.0 + np.exp(-lm[:33, 4])),
                                        world=w[:33].copy()))
        return result


class HandBoxLandmarker:
    """The hand landmark network on a box: ``locate(image, box)`` gives
    ``(HandLandmarks, keypoints_2d)`` (landmarks in image pixels) for the hand there, or None
    when its presence in either of the last two passes is below ``min_presence``: on a hand
    half turned away the passes can wander onto something hand-like, and the last one alone
    swung from 0.13 to 0.68 when 7 of the render's 1.2 M channel values changed by 1/255 (the
    pass before stayed under 0.05); a real hand holds above it from the second pass on.

    The first pass looks at the upright square hull of ``box``; each of the ``passes - 1``
    others at :func:`hand_region` of the landmarks before. On the InterHand2.6M and FreiHAND
    photos the palm detector missed, the second and third passes raised PCK@0.2 from
    0.05-0.71 to 0.81-1.0 where a hand was found. World landmarks are turned by the region's
    rotation into the image's axes, as MediaPipe does; ``side`` is the network's handedness
    (the subject's side on an ordinary photo).
    """

    def __init__(self, min_presence: float = 0.5, passes: int = 3) -> None:
        if passes < 1:
            raise ValueError("passes must be >= 1")
        self.min_presence, self.passes = min_presence, passes
        self._net: Any = None

    def locate(self, image: np.ndarray, box: Box) -> tuple[HandLandmarks, np.ndarray] | None:
        import torch

        from furpe.experts.tflite import expert_network

        if self._net is None:
            self._net = expert_network("hand").eval()
        region = box_region(box)
        presences = []
        for k in range(self.passes):
            crop = crop_region(image, region, HAND_INPUT_SIZE)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
            with torch.no_grad():
                out = self._net(x)
            uv = out["Identity"].view(21, 3)[:, :2].double().numpy()
            kp2d = region_to_image(uv, region, HAND_INPUT_SIZE)
            presences.append(float(out["Identity_1"].view(-1)[0]))
            if k < self.passes - 1:
                region = hand_region(kp2d)
        if min(presences[-2:]) < self.min_presence:
            return None
        right = float(out["Identity_2"].view(-1)[0])
        world = out["Identity_3"].view(21, 3).double().numpy().copy()
        c, s = np.cos(region[3]), np.sin(region[3])
        world[:, :2] = world[:, :2] @ np.array([[c, s], [-s, c]])  # rotate by +rot
        side = "right" if right >= 0.5 else "left"
        height, width = image.shape[:2]
        uv_image = (kp2d + 0.5) / np.array([width, height])  # MediaPipe's normalised coordinates
        hand = HandLandmarks(uv=uv_image, world=world, side=side,
                             side_score=max(right, 1.0 - right))
        return hand, kp2d
