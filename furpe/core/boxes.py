"""Boxes and crops: (x0, y0, x1, y1) boxes in pixels, square crops and their transforms.

Pixel coordinates follow the integer-centre convention (pixel (0, 0) covers [-0.5, 0.5]^2).
A square crop of side ``s`` pixels resized to ``n`` maps a crop pixel (u, v) back to
``(x0 + u * s / n, y0 + v * s / n)`` (:func:`crop_to_image`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Box = tuple[float, float, float, float]

MIN_IMAGE_SIDE = 16
"""Images whose width or height is smaller than this give no observation."""


def as_rgb_uint8(image: np.ndarray) -> np.ndarray | None:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 RGB array, or None if it is too small.

    Greyscale (H, W) / (H, W, 1) images are replicated to three channels and an alpha channel
    is dropped. Raises ``TypeError`` for a non-uint8 array and ``ValueError`` for a shape that
    is no image.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if min(image.shape[0], image.shape[1]) < MIN_IMAGE_SIDE:
        return None
    return np.ascontiguousarray(image)


def box_area(box: Box) -> float:
    """Area of a box (x0, y0, x1, y1); 0 for an empty one."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_intersection(a: Box, b: Box) -> float:
    """Area of the intersection of two boxes."""
    return box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = box_intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def mostly_outside(box: Box, width: int, height: int, min_inside: float = 0.1) -> bool:
    """Whether less than ``min_inside`` of ``box``'s area lies in a width x height image."""
    return box_intersection(box, (0.0, 0.0, float(width), float(height))) < min_inside * box_area(box)


def expand_box(box: Box, margin: float) -> Box:
    """Grow a box by ``margin`` times its width/height on each side."""
    w, h = box[2] - box[0], box[3] - box[1]
    return (box[0] - margin * w, box[1] - margin * h, box[2] + margin * w, box[3] + margin * h)


def landmark_box(
    points: np.ndarray,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.5,
    image_size: tuple[int, int] | None = None,
) -> Box | None:
    """Bounding box of the landmarks whose confidence is at least ``min_confidence``.

    Falls back to all landmarks when fewer than two pass. With ``image_size = (W, H)`` the box
    is clipped to the image. Returns None when there is nothing (or an empty box) left.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if confidence is not None:
        keep = np.asarray(confidence).reshape(-1) >= min_confidence
        if keep.sum() >= 2:
            points = points[keep]
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return None
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    if image_size is not None:
        w, h = image_size
        x0, x1 = float(np.clip(x0, 0, w)), float(np.clip(x1, 0, w))
        y0, y1 = float(np.clip(y0, 0, h)), float(np.clip(y1, 0, h))
    if x1 <= x0 or y1 <= y0:
        return None
    return (float(x0), float(y0), float(x1), float(y1))


def square_box(cx: float, cy: float, side: float) -> Box:
    """The square box of side ``side`` centred on (cx, cy)."""
    half = side / 2.0
    return (cx - half, cy - half, cx + half, cy + half)


def hand_crop_box(
    wrist: np.ndarray,
    elbow: np.ndarray | None = None,
    knuckles: np.ndarray | None = None,
    shoulder_width: float | None = None,
    scale: float = 1.0,
    min_side: float = 16.0,
) -> Box | None:
    """Square crop box (x0, y0, x1, y1) for one hand, placed from body landmarks.

    The hand length ``L`` is estimated as the largest of the available cues (the largest,
    because foreshortening only ever shrinks them): 0.8 x forearm length (wrist-elbow),
    2.2 x the wrist-to-knuckles distance (``knuckles``: e.g. the mean of BlazePose's index and
    pinky points), 0.55 x ``shoulder_width``. The box has side ``2 * scale * L`` and is centred
    ``L / 2`` beyond the wrist, towards the knuckles when they are far enough from the wrist
    to give a direction, else along the forearm. The box may extend beyond the image.

    Returns None when no cue gives a positive length.
    """
    wrist = np.asarray(wrist, dtype=np.float64).reshape(2)
    cues: list[float] = []
    forearm_dir: np.ndarray | None = None
    knuckle_dir: np.ndarray | None = None
    if elbow is not None:
        v = wrist - np.asarray(elbow, dtype=np.float64).reshape(2)
        n = float(np.linalg.norm(v))
        if n > 1e-6:
            cues.append(0.8 * n)
            forearm_dir = v / n
    knuckle_len = 0.0
    if knuckles is not None:
        v = np.asarray(knuckles, dtype=np.float64).reshape(2) - wrist
        knuckle_len = float(np.linalg.norm(v))
        if knuckle_len > 1e-6:
            cues.append(2.2 * knuckle_len)
            knuckle_dir = v / knuckle_len
    if shoulder_width is not None and shoulder_width > 0:
        cues.append(0.55 * float(shoulder_width))
    if not cues or not all(math.isfinite(c) for c in cues) or not np.isfinite(wrist).all():
        return None
    length = max(cues)
    if knuckle_dir is not None and knuckle_len >= 0.2 * length:
        direction = knuckle_dir
    elif forearm_dir is not None:
        direction = forearm_dir
    else:
        direction = np.zeros(2)
    centre = wrist + 0.5 * length * direction
    side = max(2.0 * scale * length, min_side)
    return square_box(float(centre[0]), float(centre[1]), side)


def face_crop_box(points: np.ndarray, scale: float = 2.2, min_side: float = 16.0) -> Box | None:
    """Square crop box around head landmarks (e.g. BlazePose's nose, eyes, ears, mouth).

    The box is centred on the landmarks' bounding box, with side ``scale`` times its larger
    dimension (at least ``min_side``). Returns None for fewer than two finite points.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) < 2:
        return None
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 0:
        return None
    centre = (lo + hi) / 2.0
    return square_box(float(centre[0]), float(centre[1]), max(scale * extent, min_side))


def crop_square(image: np.ndarray, box: Box, size: int) -> tuple[np.ndarray, Box]:
    """Cut a square ``box`` out of ``image`` (zero-padded outside it) and resize it to ``size``.

    The box is first rounded to whole pixels (same side in x and y); that rounded box, the one
    actually cut, is returned with the (size, size, 3) crop. A crop point (u, v) in crop pixels
    maps back to ``(x0 + u * side / size, y0 + v * side / size)``.
    """
    import cv2

    h, w = image.shape[:2]
    side = max(1, int(round(box[2] - box[0])))
    x0 = int(round((box[0] + box[2]) / 2.0 - side / 2.0))
    y0 = int(round((box[1] + box[3]) / 2.0 - side / 2.0))
    x1, y1 = x0 + side, y0 + side
    region = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(region, (size, size), interpolation=interp)
    return np.ascontiguousarray(crop), (float(x0), float(y0), float(x1), float(y1))


def box_centre(box: Sequence[float]) -> np.ndarray:
    """The centre (x, y) of a box."""
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def crop_to_image(uv: np.ndarray, box: Box) -> np.ndarray:
    """Normalised crop coordinates (..., 2) in [0, 1] (MediaPipe's: pixel centres at
    i + 0.5) mapped to full-image pixels of the square crop ``box`` (as :func:`crop_square`
    returns it)."""
    side = box[2] - box[0]
    return np.asarray(uv, dtype=np.float64) * side + np.array([box[0] - 0.5, box[1] - 0.5])


def crop_intrinsics(K: np.ndarray, x0: float, y0: float, scale: float = 1.0) -> np.ndarray:
    """The intrinsics of a crop whose top-left pixel is (x0, y0) in the image, resized by
    ``scale`` (crop pixels per image pixel)."""
    Kc = np.array(K, dtype=np.float64)
    Kc[0, 2] -= x0
    Kc[1, 2] -= y0
    Kc[:2] *= scale
    return Kc


def points_inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Which (K, 2) points lie inside a width x height image."""
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
