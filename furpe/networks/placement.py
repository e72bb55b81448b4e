"""Placing the network's people on the body landmarks its own pose encoder saw.

The frozen BlazePose encoder of the network (``network.features: landmarks``) predicts the
33 body landmarks of the crop along with its features. The network's body goes through
its own camera, which it learned on renders; on photos unlike them (an upper body, a
crowd) that camera can put a well-posed body too high or too large. :func:`align_translation`
moves each person (a translation, so the pose and shape stay the network's) so that their
body keypoints project onto the confident landmarks: the weighted least squares of the
projection's linear form, ``fx (X + tx) - (u - cx)(Z + tz) = 0`` per point and axis, with
robust (Cauchy) reweighting in pixels.
"""
from __future__ import annotations

import numpy as np

#: A landmark counts when its visibility x presence score reaches this.
MIN_SCORE = 0.5
#: Fewest confident landmarks to move a person (else they stay where the network put them).
MIN_POINTS = 6
#: The Cauchy scale of the reweighting, as a fraction of the landmarks' extent.
ROBUST_SCALE = 0.05
#: Nearest depth (metres) the points may be moved to.
MIN_DEPTH = 0.2


def align_translation(points: np.ndarray, uv: np.ndarray, score: np.ndarray, K: np.ndarray,
                      iterations: int = 6) -> np.ndarray:
    """The translations (N, 3) that move each person's camera-frame ``points`` (N, J, 3)
    so that they project (intrinsics ``K`` (3, 3)) onto ``uv`` (N, J, 2) pixels, over the
    points whose ``score`` (N, J) is at least :data:`MIN_SCORE`; zero for a person with
    fewer than :data:`MIN_POINTS` such points, or when the solution would bring a point
    nearer than :data:`MIN_DEPTH`."""
    points, uv, score = (np.asarray(a, dtype=np.float64) for a in (points, uv, score))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    out = np.zeros((len(points), 3))
    for n, (X, p, s) in enumerate(zip(points, uv, score)):
        use = (s >= MIN_SCORE) & np.isfinite(p).all(1) & np.isfinite(X).all(1)
        if use.sum() < MIN_POINTS:
            continue
        X, p = X[use], p[use]
        du, dv = p[:, 0] - cx, p[:, 1] - cy
        # rows [fx, 0, -du] t = du Z - fx X and [0, fy, -dv] t = dv Z - fy Y
        A = np.concatenate([np.stack([np.full_like(du, fx), 0 * du, -du], 1),
                            np.stack([0 * dv, np.full_like(dv, fy), -dv], 1)])
        b = np.concatenate([du * X[:, 2] - fx * X[:, 0], dv * X[:, 2] - fy * X[:, 1]])
        scale = ROBUST_SCALE * max(float(np.ptp(p, axis=0).max()), 1.0)
        w, t = np.ones(len(b)), np.zeros(3)
        for _ in range(iterations):
            depth = np.tile(X[:, 2] + t[2], 2)  # each row over its depth: pixels
            if (depth <= MIN_DEPTH).any():
                break
            W = np.sqrt(w) / depth
            t_new = np.linalg.lstsq(A * W[:, None], b * W, rcond=None)[0]
            if (X[:, 2] + t_new[2] <= MIN_DEPTH).any():
                break
            t = t_new
            r = np.abs(A @ t - b) / np.tile(X[:, 2] + t[2], 2)
            w = 1.0 / (1.0 + (r / scale) ** 2)
        out[n] = t
    return out
