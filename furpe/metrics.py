"""Evaluation metrics for 3D reconstructions (NumPy only).

All functions take point sets of shape (N, 3) (or (N, D)) in the same units and return values
in those units (metres in, metres out):

* :func:`mpjpe`: mean per-point Euclidean distance, no alignment.
* :func:`procrustes_align`: the similarity transform (scale, rotation, translation; reflection
  not allowed) that best maps ``pred`` onto ``gt`` in the least-squares sense, applied to
  ``pred``.
* :func:`pa_error`: :func:`mpjpe` after :func:`procrustes_align` ("PA-MPJPE" on joints,
  "PA-PVE" on vertices).
"""
from __future__ import annotations

import numpy as np

__all__ = ["mpjpe", "pa_error", "procrustes_align", "similarity_transform"]


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"pred and gt must be non-empty (N, D) arrays of one shape, "
                         f"got {p.shape} and {g.shape}")
    return p, g


def similarity_transform(pred: np.ndarray, gt: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale ``s``, rotation ``R`` (det +1) and translation ``t`` minimising
    ``sum_i |s R pred_i + t - gt_i|^2`` (Umeyama's method)."""
    p, g = _check(pred, gt)
    mp, mg = p.mean(0), g.mean(0)
    pc, gc = p - mp, g - mg
    var_p = float((pc ** 2).sum())
    cov = gc.T @ pc  # (D, D)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(p.shape[1])
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:  # no reflections
        D[-1, -1] = -1.0
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / var_p) if var_p > 0 else 1.0
    t = mg - s * R @ mp
    return s, R, t


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` mapped onto ``gt`` by the best similarity transform (rotation, uniform
    scale, translation; reflections are not allowed). Returns an (N, D) float64 array."""
    s, R, t = similarity_transform(pred, gt)
    p = np.asarray(pred, dtype=np.float64)
    return s * p @ R.T + t


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-point Euclidean distance between ``pred`` and ``gt`` (no alignment)."""
    p, g = _check(pred, gt)
    return float(np.linalg.norm(p - g, axis=1).mean())


def pa_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-point distance after Procrustes alignment of ``pred`` onto ``gt``."""
    return mpjpe(procrustes_align(pred, gt), gt)
