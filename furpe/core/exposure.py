"""Very dark photos made visible to the experts.

MediaPipe's networks were trained on well-exposed photos: in a night shot whose brightest
pixels reach a few grey levels, the person detector scores a plainly visible person 0.06.
:func:`normalise_exposure` stretches such an image so its bright end reaches white and smooths
the sensor noise the stretch amplifies (the same person then scores 0.74); the experts look at
that image, while results are drawn on the original.
"""
from __future__ import annotations

import numpy as np

DARK_LEVEL = 40.0
"""An image is dark when its 99.5th percentile grey level is below this (of 255)."""

NOISE_SIGMA = 2.0
"""The Gaussian smoothing (pixels) after the stretch, against the amplified noise."""


def bright_end(image: np.ndarray) -> float:
    """The 99.5th percentile grey level of ``image`` (of every 4th row and column)."""
    return float(np.percentile(image[::4, ::4], 99.5))


def is_dark(image: np.ndarray, level: float = DARK_LEVEL) -> bool:
    """True when :func:`bright_end` of ``image`` (uint8) is below ``level``."""
    return bright_end(image) < level


def normalise_exposure(image: np.ndarray, level: float = DARK_LEVEL,
                       sigma: float = NOISE_SIGMA) -> np.ndarray:
    """``image`` (H, W, 3) uint8 itself when it is not dark (:func:`is_dark`), else a copy
    stretched so its 99.5th percentile becomes 255, then smoothed with a Gaussian of ``sigma``
    pixels."""
    top = bright_end(image)
    if top >= level:
        return image
    import cv2

    top = max(top, 1.0)
    stretched = image.astype(np.float32) * (255.0 / top)
    smooth = cv2.GaussianBlur(stretched, (0, 0), sigma)
    return np.clip(smooth + 0.5, 0, 255).astype(np.uint8)
