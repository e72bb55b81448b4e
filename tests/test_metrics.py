"""Evaluation metrics (furpe.metrics): metres in, millimetres out."""
from __future__ import annotations

import math

import numpy as np
import pytest

from furpe import metrics as M


def _rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _horn_pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Independent PA-MPJPE (mm): Horn's unit-quaternion rotation (always proper, so no
    reflection), then the least-squares scale given that rotation, then the translation."""
    pc, gc = pred - pred.mean(0), gt - gt.mean(0)
    S = pc.T @ gc  # S[a, b] = sum p_a g_b
    sxx, sxy, sxz = S[0]
    syx, syy, syz = S[1]
    szx, szy, szz = S[2]
    N = np.array([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ])
    w, v = np.linalg.eigh(N)
    q0, qx, qy, qz = v[:, np.argmax(w)]
    R = np.array([
        [q0 * q0 + qx * qx - qy * qy - qz * qz, 2 * (qx * qy - q0 * qz), 2 * (qx * qz + q0 * qy)],
        [2 * (qy * qx + q0 * qz), q0 * q0 - qx * qx + qy * qy - qz * qz, 2 * (qy * qz - q0 * qx)],
        [2 * (qz * qx - q0 * qy), 2 * (qz * qy + q0 * qx), q0 * q0 - qx * qx - qy * qy + qz * qz],
    ])
    rp = pc @ R.T
    s = (rp * gc).sum() / (pc ** 2).sum()
    aligned = s * rp + gt.mean(0)
    return float(np.linalg.norm(aligned - gt, axis=1).mean() * 1000)


# -- similarity transform / Procrustes ------------------------------------------------------

SQUARE = 0.1 * np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]])
RZ90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])


def test_known_similarity_by_hand():
    """pred = 2 Rz(90) gt + (0, 0, 0.3): every point is sqrt(0.1^2 + 0.2^2 + 0.3^2) m off."""
    pred = 2.0 * SQUARE @ RZ90.T + np.array([0.0, 0.0, 0.3])
    assert M.mpjpe(pred, SQUARE) == pytest.approx(1000 * math.sqrt(0.14), rel=1e-12)
    assert M.mpjpe(pred, SQUARE) == pytest.approx(374.1657, abs=1e-4)
    s, R, t = M.similarity_transform(pred, SQUARE)
    assert isinstance(s, float) and s == pytest.approx(0.5)
    np.testing.assert_allclose(R, RZ90.T, atol=1e-12)
    np.testing.assert_allclose(t, [0.0, 0.0, -0.15], atol=1e-12)
    np.testing.assert_allclose(M.procrustes_align(pred, SQUARE), SQUARE, atol=1e-12)
    assert M.pa_mpjpe(pred, SQUARE) == pytest.approx(0.0, abs=1e-9)


def test_random_similarity_is_removed_exactly():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(50, 3))
    R0, s0, t0 = _rotation([1, 2, 3], 0.9), 1.7, np.array([0.3, -2.0, 5.0])
    pred = s0 * gt @ R0.T + t0
    expected = 1000 * np.linalg.norm(pred - gt, axis=1).mean()
    assert M.mpjpe(pred, gt) == pytest.approx(expected)
    assert M.mpjpe(pred, gt) > 1000
    s, R, t = M.similarity_transform(pred, gt)
    assert s == pytest.approx(1 / s0)
    np.testing.assert_allclose(R, R0.T, atol=1e-10)
    np.testing.assert_allclose(M.procrustes_align(pred, gt), gt, atol=1e-9)
    assert M.pa_mpjpe(pred, gt) < 1e-6
    assert M.pa_pve(pred, gt) < 1e-6
    assert M.mpjpe(gt, gt) == 0.0


def test_reflection_is_not_aligned_away():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(60, 3)) * np.array([1.0, 2.0, 3.0])
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    s, R, t = M.similarity_transform(mirrored, gt)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    err = M.pa_mpjpe(mirrored, gt)
    assert err > 300.0  # mm: a reflection cannot be undone by a rotation
    assert err == pytest.approx(_horn_pa_mpjpe(mirrored, gt), rel=1e-9)
    # an unconstrained orthogonal Procrustes (reflection allowed) would give ~0
    U, _, Vt = np.linalg.svd((gt - gt.mean(0)).T @ (mirrored - mirrored.mean(0)))
    assert np.linalg.det(U @ Vt) == pytest.approx(-1.0)


def test_mirrored_planar_set_is_a_rotation():
    """Points in the plane z = 0, mirrored in x: a 180 degree turn about y undoes it."""
    rng = np.random.default_rng(2)
    gt = np.c_[rng.normal(size=(20, 2)), np.zeros(20)]
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    _, R, _ = M.similarity_transform(mirrored, gt)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert M.pa_mpjpe(mirrored, gt) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_pa_mpjpe_matches_independent_horn(seed: int):
    rng = np.random.default_rng(seed)
    gt = rng.normal(size=(17, 3))
    pred = rng.normal(size=(17, 3)) * 0.5 + gt @ _rotation(rng.normal(size=3), 2.0).T
    if seed % 2:
        pred = pred * np.array([1.0, -1.0, 1.0])  # some with a reflection in them
    assert M.pa_mpjpe(pred, gt) == pytest.approx(_horn_pa_mpjpe(pred, gt), rel=1e-9)


def test_batched_equals_looped():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(5, 30, 3))
    pred = gt + 0.2 * rng.normal(size=(5, 30, 3))
    pred[2] *= np.array([1.0, 1.0, -1.0])
    s, R, t = M.similarity_transform(pred, gt)
    assert s.shape == (5,) and R.shape == (5, 3, 3) and t.shape == (5, 3)
    aligned = M.procrustes_align(pred, gt)
    for b in range(5):
        sb, Rb, tb = M.similarity_transform(pred[b], gt[b])
        assert s[b] == pytest.approx(sb)
        np.testing.assert_allclose(R[b], Rb, atol=1e-12)
        np.testing.assert_allclose(t[b], tb, atol=1e-12)
        np.testing.assert_allclose(aligned[b], M.procrustes_align(pred[b], gt[b]), atol=1e-12)
    for fn in (M.pa_mpjpe, M.pa_pve, M.mpjpe, M.pve):
        batched = fn(pred, gt)
        assert isinstance(batched, np.ndarray) and batched.shape == (5,)
        np.testing.assert_allclose(batched, [fn(pred[b], gt[b]) for b in range(5)], rtol=1e-12)
    np.testing.assert_allclose(M.mpjpe(pred, gt, align="mid_hip", hips=(1, 2)),
                               [M.mpjpe(pred[b], gt[b], align="mid_hip", hips=(1, 2))
                                for b in range(5)])
    assert isinstance(M.pa_mpjpe(pred[0], gt[0]), float)


# -- root / mid-hip alignment ---------------------------------------------------------------

GT3 = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
PRED3 = GT3 + np.array([0.0, 0.0, 1.0])
PRED3[2, 0] += 0.003


def test_root_alignment_by_hand():
    # unaligned: 1 m, 1 m, sqrt(1 + 0.003^2) m
    expected = 1000 * (2 + math.sqrt(1 + 0.003 ** 2)) / 3
    assert M.mpjpe(PRED3, GT3) == pytest.approx(expected)
    assert M.mpjpe(PRED3, GT3, align="root") == pytest.approx(1.0)  # 0, 0, 3 mm
    # root = joint 2: joints 0 and 1 are now 3 mm off, joint 2 exact
    assert M.mpjpe(PRED3, GT3, align="root", root=2) == pytest.approx(2.0)
    assert M.mpjpe(PRED3, GT3, align="root", root=-1) == pytest.approx(2.0)


def test_mid_hip_alignment_by_hand():
    # hips = joints 1 and 2: the predicted mid-hip is 1.5 mm further in x, so after centring
    # the errors are 1.5, 1.5 and 1.5 mm
    assert M.mpjpe(PRED3, GT3, align="mid_hip", hips=(1, 2)) == pytest.approx(1.5)
    # hips = joints 0 and 1 (both exact after a shift): only joint 2's 3 mm is left
    assert M.mpjpe(PRED3, GT3, align="mid_hip", hips=(0, 1)) == pytest.approx(1.0)


def test_pve_alignments():
    rng = np.random.default_rng(4)
    gt = rng.normal(size=(40, 3))
    offset = np.array([0.01, -0.02, 0.02])  # 30 mm
    pred = gt + offset
    assert M.pve(pred, gt) == pytest.approx(30.0)
    assert M.pve(pred, gt, align="mean") == pytest.approx(0.0, abs=1e-9)
    assert M.pve(pred, gt, align="root", pred_root=pred[0], gt_root=gt[0]) == pytest.approx(
        0.0, abs=1e-9)
    # wrong root: the prediction's root shifted 4 mm more in z
    shifted = pred[0] + np.array([0.0, 0.0, 0.004])
    assert M.pve(pred, gt, align="root", pred_root=shifted, gt_root=gt[0]) == pytest.approx(4.0)
    assert M.pve(pred, gt, align="procrustes") == pytest.approx(0.0, abs=1e-9)


# -- part PA-PVE ----------------------------------------------------------------------------

def test_part_pa_pve_refits_per_part():
    """Two rigid parts, one turned about its own centre: each part alone is exact (0 mm),
    the whole is not."""
    rng = np.random.default_rng(5)
    body = rng.normal(size=(30, 3)) * 0.3
    hand = rng.normal(size=(20, 3)) * 0.05 + np.array([0.6, 0.0, 0.0])
    gt = np.r_[body, hand]
    c = hand.mean(0)
    turned = (hand - c) @ _rotation([0, 0, 1], 1.2).T + c
    pred = 1.1 * np.r_[body, turned] + np.array([0.0, 0.1, 2.0])
    parts = {"body": np.arange(30), "hand": np.arange(30, 50)}
    per_part = M.part_pa_pve(pred, gt, parts)
    assert set(per_part) == {"body", "hand"}
    assert per_part["body"] == pytest.approx(0.0, abs=1e-9)
    assert per_part["hand"] == pytest.approx(0.0, abs=1e-9)
    whole = M.pa_pve(pred, gt)
    assert whole > 5.0
    # the hand aligned with the whole-body fit is much worse than aligned alone
    aligned = M.procrustes_align(pred, gt)
    assert M.pve(aligned[30:], gt[30:]) > 20.0
    # batched
    batched = M.part_pa_pve(np.stack([pred, gt]), np.stack([gt, gt]), parts)
    assert batched["hand"].shape == (2,)
    np.testing.assert_allclose(batched["hand"], [0.0, 0.0], atol=1e-9)


def test_part_pa_pve_equals_pa_pve_of_subset():
    rng = np.random.default_rng(6)
    gt = rng.normal(size=(25, 3))
    pred = gt + 0.1 * rng.normal(size=(25, 3))
    idx = np.array([1, 4, 7, 9, 20])
    got = M.part_pa_pve(pred, gt, {"p": idx})["p"]
    assert got == pytest.approx(M.pa_pve(pred[idx], gt[idx]))
    assert got == pytest.approx(_horn_pa_mpjpe(pred[idx], gt[idx]))


def test_displacement_error():
    """The same deformation on another shape, turned, scaled and moved, scores 0; no
    deformation scores the mean true displacement; a known error is measured exactly."""
    rng = np.random.default_rng(7)
    gt_ref = rng.normal(size=(40, 3)) * 0.05
    disp = np.zeros((40, 3))
    disp[:10, 1] = 0.004  # a "jaw" of 10 points opens by 4 mm
    gt = gt_ref + disp
    R = _rotation([1, 2, 3], 0.7)
    other = gt_ref + rng.normal(size=(40, 3)) * 0.002  # another identity
    pred_ref = 1.2 * other @ R.T + np.array([0.1, -0.2, 2.0])
    pred = 1.2 * (other + disp) @ R.T + np.array([0.1, -0.2, 2.0])
    assert M.displacement_error(pred, pred_ref, gt, gt_ref) == pytest.approx(0.0, abs=0.05)
    # the identity difference itself costs PA-PVE but not displacement error
    assert M.pa_pve(pred, gt) > 1.0
    # no deformation: the mean true displacement, 10 of 40 points moved 4 mm
    assert M.displacement_error(pred_ref, pred_ref, gt, gt_ref) == pytest.approx(1.0, abs=0.05)
    # the jaw opened the wrong way: 8 mm on a quarter of the points
    wrong = 1.2 * (other - disp) @ R.T + np.array([0.1, -0.2, 2.0])
    assert M.displacement_error(wrong, pred_ref, gt, gt_ref) == pytest.approx(2.0, abs=0.05)
    batched = M.displacement_error(np.stack([pred, pred_ref]), np.stack([pred_ref] * 2),
                                   np.stack([gt] * 2), np.stack([gt_ref] * 2))
    np.testing.assert_allclose(batched, [0.0, 1.0], atol=0.05)
    with pytest.raises(ValueError, match="same shape"):
        M.displacement_error(pred[:5], pred_ref, gt, gt_ref)
    with pytest.raises(ValueError, match="same shape"):
        M.displacement_error(pred[:5], pred_ref[:5], gt, gt_ref)


# -- F-score --------------------------------------------------------------------------------

F_GT = np.array([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0]])
F_PRED = np.array([[0.002, 0, 0], [0.11, 0, 0], [0.5, 0, 0]])


def test_f_score_by_hand():
    # 5 mm: precision 1/3 (pred 0), recall 1/4 (gt 0): F = 2/7
    p, r = M.precision_recall(F_PRED, F_GT, 0.005)
    assert (p, r) == (pytest.approx(1 / 3), pytest.approx(1 / 4))
    assert M.f_score(F_PRED, F_GT, 0.005) == pytest.approx(2 / 7)
    # 15 mm: precision 2/3 (pred 0, 1), recall 2/4 (gt 0, 1): F = 4/7
    p, r = M.precision_recall(F_PRED, F_GT, 0.015)
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(1 / 2))
    assert M.f_score(F_PRED, F_GT, 0.015) == pytest.approx(4 / 7)
    # precision and recall swap with the arguments
    assert M.precision_recall(F_GT, F_PRED, 0.005) == (pytest.approx(1 / 4), pytest.approx(1 / 3))


def test_f_score_extremes():
    assert M.f_score(F_GT, F_GT, 0.005) == 1.0
    assert M.f_score(F_GT + 1.0, F_GT, 0.015) == 0.0  # P + R = 0
    # strict inequality: a point exactly at the threshold does not count
    a, b = np.zeros((1, 3)), np.array([[0.25, 0.0, 0.0]])
    assert M.f_score(a, b, 0.25) == 0.0
    assert M.f_score(a, b, 0.2500001) == 1.0
    batched = M.f_score(np.stack([F_PRED, F_GT[:3]]), np.stack([F_GT, F_GT]), 0.005)
    np.testing.assert_allclose(batched, [2 / 7, 2 * 1 * 0.75 / 1.75])


# -- temporal -------------------------------------------------------------------------------

def test_accel_error_and_jitter():
    rng = np.random.default_rng(7)
    T = 10
    gt = rng.normal(size=(T, 5, 3))
    assert M.accel_error(gt, gt) == 0.0
    a = np.array([0.003, 0.004, 0.0])  # 5 mm / frame^2
    t = np.arange(T, dtype=float)[:, None, None]
    pred = gt + 0.5 * a * t ** 2 + np.array([0.1, 0.0, 0.0]) * t  # + a constant velocity
    assert M.accel_error(pred, gt) == pytest.approx(5.0)
    path = 0.5 * a * t ** 2 + np.zeros((1, 5, 3))
    assert M.jitter(path) == pytest.approx(5.0)
    assert M.jitter(np.array([0.2, 0.0, -0.1]) * t + np.zeros((1, 5, 3))) == pytest.approx(
        0.0, abs=1e-9)
    # one spike of 6 mm at frame 4 in one of 2 points: second differences -6, +12, -6 mm
    # at frames 3, 4, 5 of the T - 2 = 8 inner frames
    seq = np.zeros((T, 2, 3))
    seq[4, 0, 2] = 0.006
    assert M.jitter(seq) == pytest.approx((6 + 12 + 6) / (8 * 2))
    assert M.accel_error(seq, np.zeros_like(seq)) == pytest.approx((6 + 12 + 6) / (8 * 2))


# -- errors ---------------------------------------------------------------------------------

def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"same shape.*\(4, 3\).*\(5, 3\)"):
        M.pa_mpjpe(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="pred is empty"):
        M.mpjpe(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\(N, D\) or \(B, N, D\)"):
        M.mpjpe(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="unknown alignment 'pelvis'"):
        M.mpjpe(GT3, GT3, align="pelvis")
    with pytest.raises(ValueError, match="needs hips"):
        M.mpjpe(GT3, GT3, align="mid_hip")
    with pytest.raises(ValueError, match="out of range"):
        M.mpjpe(GT3, GT3, align="root", root=3)
    with pytest.raises(ValueError, match="needs pred_root and gt_root"):
        M.pve(GT3, GT3, align="root")
    with pytest.raises(ValueError, match="part 'hand' has vertex indices outside"):
        M.part_pa_pve(GT3, GT3, {"hand": [0, 3]})
    with pytest.raises(ValueError, match="part 'face' must be a non-empty"):
        M.part_pa_pve(GT3, GT3, {"face": []})
    with pytest.raises(ValueError, match="threshold"):
        M.f_score(GT3, GT3, -0.001)
    with pytest.raises(ValueError, match="at least 3 frames"):
        M.accel_error(np.zeros((2, 4, 3)), np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="same shape"):
        M.accel_error(np.zeros((5, 4, 3)), np.zeros((5, 3, 3)))
    with pytest.raises(ValueError, match=r"\(T, N, D\)"):
        M.jitter(np.zeros((5, 3)))
