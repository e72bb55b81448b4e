"""scripts/make_correspondences.py: the experts' 3D-landmark (``_world``) correspondences are
recovered from landmarks known only up to a rigid motion."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from furpe.core.align import kabsch
from furpe.synthetic import sample_params

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_correspondences.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_correspondences", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_fit_world_recovers_a_skeleton_seen_up_to_a_rigid_motion(anny_model, script):
    """Landmarks made from known correspondences (the shipped ``_world`` ones), each render
    turned and moved at random and jittered by 2 mm, are placed back on the model: starting
    from the 2D correspondences, ``fit_world`` ends with the true skeleton's shape."""
    m = anny_model
    rng = np.random.default_rng(0)
    truth, start = m.regressors["mediapipe_pose_world"], m.regressors["mediapipe_pose"]
    samples = []
    for seed in range(12):
        params = m.complete(sample_params(m, np.random.default_rng(seed), distance=2.6))
        with torch.no_grad():
            nv, nj = m._forward(params)
        points = np.concatenate([nv[0].numpy(), nj[0].numpy()]).astype(np.float64)
        true_lm = np.einsum("kn,knd->kd", truth.weights, points[truth.indices])
        R = _random_rotation(rng)
        seen = true_lm @ R.T + rng.normal(0, 0.3, 3) + rng.normal(0, 0.002, true_lm.shape)
        samples.append((seen, np.ones(len(true_lm)), points))

    def error(reg) -> float:
        """Median over renders of the mean landmark distance after a rigid alignment: data
        known up to a rigid motion fix the skeleton's shape, not where it sits as a whole
        (that stays near the start)."""
        errs = []
        for _, _, p in samples:
            a = np.einsum("kn,knd->kd", reg.weights, p[reg.indices])
            b = np.einsum("kn,knd->kd", truth.weights, p[truth.indices])
            a, b = a - a.mean(0), b - b.mean(0)
            errs.append(np.linalg.norm(a @ kabsch(a, b).T - b, axis=1).mean())
        return float(np.median(errs))

    fitted, resid = script.fit_world(start, samples, m.num_vertices)
    print(f"\nstart {error(start) * 1000:.1f} mm from the truth, fitted {error(fitted) * 1000:.1f} "
          f"mm, residual {resid * 1000:.1f} mm")
    assert fitted.names == start.names
    assert error(start) > 0.03
    assert error(fitted) < 0.006
