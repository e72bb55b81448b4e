"""Evaluation metrics for 3D reconstructions (NumPy + SciPy).

**Units: metres in, millimetres out.** Every error function returns millimetres (the
F-score is a fraction in [0, 1]; its threshold is in metres, like the points).

**Shapes.** Point sets are ``(N, D)`` (one sample) or ``(B, N, D)`` (a batch of ``B``
samples), ``D`` usually 3. A per-sample result is a ``float`` for one sample and a ``(B,)``
array for a batch. Errors are means over the points of one sample, never over the batch.

* :func:`similarity_transform` / :func:`procrustes_align`: the least-squares similarity
  transform (uniform scale, rotation, translation; **no reflection**, det R = +1), Umeyama's
  closed form.
* :func:`mpjpe` (alignment ``"none"``, ``"root"``, ``"mid_hip"`` or ``"procrustes"``),
  :func:`pa_mpjpe`.
* :func:`pve` (vertex-to-vertex error, alignment ``"none"``, ``"mean"``, ``"root"`` or
  ``"procrustes"``), :func:`pa_pve`, :func:`part_pa_pve` (Procrustes re-fitted per part).
* :func:`displacement_error`: error of a displacement field (e.g. what an expression does to
  a face), compared in the ground truth's frame.
* :func:`precision_recall` / :func:`f_score`: FreiHAND-style point-set F-score.
* :func:`accel_error` / :func:`jitter`: temporal smoothness of sequences.

Invalid input (shape mismatch, empty sets, unknown alignment) raises :class:`ValueError`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

from furpe.core.align import as_point_pair as _pair
from furpe.core.align import as_points as _points
from furpe.core.align import procrustes_align, similarity_transform

__all__ = [
    "MM_PER_M",
    "accel_error",
    "displacement_error",
    "f_score",
    "jitter",
    "mpjpe",
    "pa_mpjpe",
    "pa_pve",
    "part_pa_pve",
    "precision_recall",
    "procrustes_align",
    "pve",
    "similarity_transform",
]

#: Millimetres per metre: the factor every error function applies.
MM_PER_M = 1000.0

MPJPE_ALIGNMENTS = ("none", "root", "mid_hip", "procrustes")
PVE_ALIGNMENTS = ("none", "mean", "root", "procrustes")


# -- input checks ---------------------------------------------------------------------------

def _per_sample(values: np.ndarray) -> float | np.ndarray:
    """A 0-d result as a float, a (B,) result as an array."""
    return float(values) if np.ndim(values) == 0 else values


def _mean_distance_mm(p: np.ndarray, g: np.ndarray) -> float | np.ndarray:
    return _per_sample(np.linalg.norm(p - g, axis=-1).mean(axis=-1) * MM_PER_M)


# -- joint and vertex errors ----------------------------------------------------------------

def mpjpe(pred: np.ndarray, gt: np.ndarray, align: str = "none", root: int = 0,
          hips: Sequence[int] | None = None) -> float | np.ndarray:
    """Mean per-joint position error, millimetres.

    Args:
        pred, gt: (J, 3) or (B, J, 3) joints, metres.
        align: ``"none"`` (raw camera-frame distances); ``"root"``: joint ``root`` is
            subtracted from both sets; ``"mid_hip"``: the mean of the two ``hips`` joints is
            subtracted from both; ``"procrustes"``: similarity alignment (= :func:`pa_mpjpe`).
        root: index of the root joint for ``"root"``.
        hips: the two hip-joint indices for ``"mid_hip"`` (required there).

    Returns:
        float (one sample) or (B,) array.
    """
    p, g = _pair(pred, gt)
    n = p.shape[-2]
    if align == "none":
        pass
    elif align == "root":
        if not -n <= root < n:
            raise ValueError(f"root joint {root} is out of range for {n} joints")
        p = p - p[..., [root], :]
        g = g - g[..., [root], :]
    elif align == "mid_hip":
        if hips is None or len(hips) != 2:
            raise ValueError("align='mid_hip' needs hips=(i, j), the two hip-joint indices")
        idx = [int(h) for h in hips]
        if any(not -n <= h < n for h in idx):
            raise ValueError(f"hip joints {idx} are out of range for {n} joints")
        p = p - p[..., idx, :].mean(axis=-2, keepdims=True)
        g = g - g[..., idx, :].mean(axis=-2, keepdims=True)
    elif align == "procrustes":
        p = procrustes_align(p, g)
    else:
        raise ValueError(f"unknown alignment '{align}'; choose from "
                         f"{', '.join(MPJPE_ALIGNMENTS)}")
    return _mean_distance_mm(p, g)


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float | np.ndarray:
    """MPJPE after Procrustes (similarity) alignment of ``pred`` onto ``gt``, millimetres."""
    return mpjpe(pred, gt, align="procrustes")


def pve(pred_verts: np.ndarray, gt_verts: np.ndarray, align: str = "none",
        pred_root: np.ndarray | None = None,
        gt_root: np.ndarray | None = None) -> float | np.ndarray:
    """Per-vertex error (mean vertex-to-vertex distance, "V2V"), millimetres.

    The two meshes must share one topology (same vertex count and order).

    Args:
        pred_verts, gt_verts: (V, 3) or (B, V, 3) vertices, metres.
        align: ``"none"``; ``"mean"``: each mesh's vertex centroid is subtracted (a
            translation-only alignment); ``"root"``: ``pred_root`` is subtracted from the
            prediction and ``gt_root`` from the ground truth (e.g. each mesh's pelvis joint,
            (3,) or (B, 3)); ``"procrustes"``: similarity alignment (= :func:`pa_pve`).
        pred_root, gt_root: the root points for ``"root"`` (required there).

    Returns:
        float (one sample) or (B,) array.
    """
    p, g = _pair(pred_verts, gt_verts, ("pred_verts", "gt_verts"))
    if align == "none":
        pass
    elif align == "mean":
        p = p - p.mean(axis=-2, keepdims=True)
        g = g - g.mean(axis=-2, keepdims=True)
    elif align == "root":
        if pred_root is None or gt_root is None:
            raise ValueError("align='root' needs pred_root and gt_root, the two root points")
        pr = np.asarray(pred_root, dtype=np.float64)
        gr = np.asarray(gt_root, dtype=np.float64)
        want = p.shape[:-2] + p.shape[-1:]
        if pr.shape != want or gr.shape != want:
            raise ValueError(f"pred_root and gt_root must have shape {want}, "
                             f"got {pr.shape} and {gr.shape}")
        p = p - pr[..., None, :]
        g = g - gr[..., None, :]
    elif align == "procrustes":
        p = procrustes_align(p, g)
    else:
        raise ValueError(f"unknown alignment '{align}'; choose from "
                         f"{', '.join(PVE_ALIGNMENTS)}")
    return _mean_distance_mm(p, g)


def pa_pve(pred_verts: np.ndarray, gt_verts: np.ndarray) -> float | np.ndarray:
    """Per-vertex error after Procrustes alignment ("PA-PVE", "PA-V2V"), millimetres."""
    return pve(pred_verts, gt_verts, align="procrustes")


def part_pa_pve(pred_verts: np.ndarray, gt_verts: np.ndarray,
                parts: Mapping[str, np.ndarray | Sequence[int]]
                ) -> dict[str, float | np.ndarray]:
    """PA-PVE of each part, with Procrustes **re-fitted on that part's vertices alone** (so a
    part's error measures its own shape and articulation, not its placement), millimetres.

    Args:
        pred_verts, gt_verts: (V, 3) or (B, V, 3) vertices of one topology, metres.
        parts: part name -> vertex indices (integer array or sequence, non-empty).

    Returns:
        part name -> float (one sample) or (B,) array.
    """
    p, g = _pair(pred_verts, gt_verts, ("pred_verts", "gt_verts"))
    n = p.shape[-2]
    out: dict[str, float | np.ndarray] = {}
    for name, ids in parts.items():
        idx = np.asarray(ids)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"part '{name}' must be a non-empty 1-D index array, "
                             f"got shape {idx.shape}")
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"part '{name}' indices must be integers, got {idx.dtype}")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"part '{name}' has vertex indices outside [0, {n})")
        out[name] = pa_pve(p[..., idx, :], g[..., idx, :])
    return out


def displacement_error(pred: np.ndarray, pred_ref: np.ndarray, gt: np.ndarray,
                       gt_ref: np.ndarray) -> float | np.ndarray:
    """Mean error of the displacement ``pred - pred_ref`` against ``gt - gt_ref``, millimetres.

    Measures what a deformation does, apart from the shape it acts on: for a face, ``*_ref``
    is the same face with the expression at rest, so identity shape and head placement do not
    count. The predicted displacements are brought into the ground truth's frame by the scale
    and rotation of :func:`similarity_transform` from ``pred_ref`` onto ``gt_ref``. A
    prediction without displacement scores the mean length of the true displacements.

    Args:
        pred, pred_ref, gt, gt_ref: (N, 3) or (B, N, 3) corresponding points, metres.

    Returns:
        float (one sample) or (B,) array.
    """
    p, pr = _pair(pred, pred_ref, ("pred", "pred_ref"))
    g, gr = _pair(gt, gt_ref, ("gt", "gt_ref"))
    _pair(p, g)
    s, R, _ = similarity_transform(pr, gr)
    d = (p - pr) @ np.swapaxes(R, -1, -2) * np.asarray(s)[..., None, None]
    return _mean_distance_mm(d, g - gr)


# -- F-score --------------------------------------------------------------------------------

def precision_recall(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision and recall of two point sets at ``threshold`` (metres), no alignment.

    Precision: the fraction of ``pred`` points whose nearest ``gt`` point is closer than
    ``threshold``; recall: the fraction of ``gt`` points whose nearest ``pred`` point is
    closer than ``threshold`` (strict ``<``, as FreiHAND's ``eval.py``). The sets may have
    different sizes (N, 3) and (M, 3).
    """
    p, g = _points(pred, "pred"), _points(gt, "gt")
    if p.ndim != 2 or g.ndim != 2:
        raise ValueError(f"precision_recall takes (N, D) point sets, got {p.shape} and {g.shape}")
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"pred and gt must have the same dimension, got {p.shape} and {g.shape}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative number of metres, got {threshold}")
    d_pred_to_gt, _ = cKDTree(g).query(p)
    d_gt_to_pred, _ = cKDTree(p).query(g)
    return float((d_pred_to_gt < threshold).mean()), float((d_gt_to_pred < threshold).mean())


def f_score(pred: np.ndarray, gt: np.ndarray, threshold: float) -> float | np.ndarray:
    """FreiHAND-style F-score ``2PR / (P + R)`` (0 when ``P + R = 0``) of two point sets at
    ``threshold`` metres (FreiHAND: 0.005 and 0.015), see :func:`precision_recall`.

    No alignment is done here: align first (FreiHAND aligns the predicted vertices with
    :func:`procrustes_align`). ``pred``/``gt`` may be (N, 3) and (M, 3), or batches
    (B, N, 3) and (B, M, 3) (a (B,) array is returned).
    """
    p, g = _points(pred, "pred"), _points(gt, "gt")
    if p.ndim != g.ndim or (p.ndim == 3 and p.shape[0] != g.shape[0]):
        raise ValueError(f"pred and gt must both be one set or batches of one size, "
                         f"got {p.shape} and {g.shape}")
    if p.ndim == 3:
        return np.array([f_score(pb, gb, threshold) for pb, gb in zip(p, g)])
    prec, rec = precision_recall(p, g, threshold)
    return 0.0 if prec + rec == 0 else 2.0 * prec * rec / (prec + rec)


# -- temporal -------------------------------------------------------------------------------

def _sequence(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"{name} must be a non-empty (T, N, D) sequence, got shape {a.shape}")
    if a.shape[0] < 3:
        raise ValueError(f"{name} needs at least 3 frames for a second difference, "
                         f"got {a.shape[0]}")
    return a


def _second_difference(a: np.ndarray) -> np.ndarray:
    return a[2:] - 2.0 * a[1:-1] + a[:-2]


def accel_error(pred_seq: np.ndarray, gt_seq: np.ndarray) -> float:
    """Acceleration error, millimetres per frame squared.

    With the second difference ``a_t = x_{t+1} - 2 x_t + x_{t-1}`` (per point), the mean
    over the ``T - 2`` inner frames and the ``N`` points of ``|a_t(pred) - a_t(gt)|``
    (the usual HMMR / VIBE definition, per frame rather than per second squared).

    Args:
        pred_seq, gt_seq: (T, N, 3) sequences, metres, ``T >= 3``.
    """
    p, g = _sequence(pred_seq, "pred_seq"), _sequence(gt_seq, "gt_seq")
    if p.shape != g.shape:
        raise ValueError(f"pred_seq and gt_seq must have the same shape, "
                         f"got {p.shape} and {g.shape}")
    diff = _second_difference(p) - _second_difference(g)
    return float(np.linalg.norm(diff, axis=-1).mean() * MM_PER_M)


def jitter(pred_seq: np.ndarray) -> float:
    """Jitter, millimetres per frame squared: the mean over inner frames and points of the
    magnitude of the second difference ``|x_{t+1} - 2 x_t + x_{t-1}|`` (acceleration, not the
    third-difference "jerk" some papers use; multiply by fps^2 for mm/s^2). A sequence moving
    at constant velocity has zero jitter.

    Args:
        pred_seq: (T, N, 3) sequence, metres, ``T >= 3``.
    """
    p = _sequence(pred_seq, "pred_seq")
    return float(np.linalg.norm(_second_difference(p), axis=-1).mean() * MM_PER_M)
