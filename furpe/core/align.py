"""Rigid and similarity alignment of corresponding point sets (Kabsch, Umeyama), NumPy.

Reflections are always excluded (det R = +1). Point sets are (N, D) or batched (B, N, D).
"""
from __future__ import annotations

import numpy as np


def as_points(x: np.ndarray, name: str = "points") -> np.ndarray:
    """``x`` as a float64 (N, D) or (B, N, D) array, not empty (``ValueError`` otherwise)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be an (N, D) or (B, N, D) array, got shape {a.shape}")
    if a.shape[-2] == 0 or a.shape[-1] == 0 or (a.ndim == 3 and a.shape[0] == 0):
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return a


def as_point_pair(pred: np.ndarray, gt: np.ndarray, names: tuple[str, str] = ("pred", "gt")
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Two point sets of the same shape (:func:`as_points`)."""
    p, g = as_points(pred, names[0]), as_points(gt, names[1])
    if p.shape != g.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, "
                         f"got {p.shape} and {g.shape}")
    return p, g


def _rotation_from_covariance(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The proper rotation R maximising trace(R^T cov) for (..., D, D) ``cov`` = sum dst src^T,
    with the singular values S and the sign-correction vector d (R = U diag(d) Vt)."""
    U, S, Vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(U) * np.linalg.det(Vt))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones(S.shape)
    d[..., -1] = sign
    return (U * d[..., None, :]) @ Vt, S, d


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The rotation R minimising ``sum_i w_i |R (src_i - c_src) - (dst_i - c_dst)|^2`` for
    (N, 3) point sets, centred at their weighted centroids ``c``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = max(float(w.sum()), 1e-12)
    s = src - (src * w[:, None]).sum(0) / total
    d = dst - (dst * w[:, None]).sum(0) / total
    R, _, _ = _rotation_from_covariance((d * w[:, None]).T @ s)
    return R


def similarity_transform(
    pred: np.ndarray, gt: np.ndarray
) -> tuple[float | np.ndarray, np.ndarray, np.ndarray]:
    """Scale ``s``, rotation ``R`` and translation ``t`` minimising
    ``sum_i |s R pred_i + t - gt_i|^2`` (Umeyama 1991).

    Returns a float, (D, D) and (D,) for one sample; (B,), (B, D, D), (B, D) for a batch. A
    degenerate ``pred`` (all points equal) gets ``s = 1`` and ``t`` moving it to the centroid
    of ``gt``.
    """
    p, g = as_point_pair(pred, gt)
    mp, mg = p.mean(axis=-2, keepdims=True), g.mean(axis=-2, keepdims=True)
    pc, gc = p - mp, g - mg
    var_p = (pc ** 2).sum(axis=(-2, -1))
    R, S, d = _rotation_from_covariance(np.swapaxes(gc, -1, -2) @ pc)
    safe_var = np.where(var_p > 0, var_p, 1.0)
    s = np.where(var_p > 0, (S * d).sum(axis=-1) / safe_var, 1.0)
    t = mg[..., 0, :] - s[..., None] * (R @ mp[..., 0, :, None])[..., 0]
    return (float(s) if np.ndim(s) == 0 else s), R, t


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` mapped onto ``gt`` by :func:`similarity_transform` (same shape, float64)."""
    p, _ = as_point_pair(pred, gt)
    s, R, t = similarity_transform(p, gt)
    s = np.asarray(s)[..., None, None]
    return s * (p @ np.swapaxes(R, -1, -2)) + t[..., None, :]
