"""A small *synthetic* SMPL model file, for tests (no licence-gated data involved).

:func:`write_synthetic_smpl` writes ``folder/smpl/SMPL_<GENDER>.pkl``, a Python pickle with the
keys and array layouts of the real SMPL model file (after its chumpy objects are removed, as
the ``smplx`` package expects): ``v_template`` (V, 3), ``shapedirs`` (V, 3, 10), ``posedirs``
(V, 3, 207), ``J_regressor`` (24, V) as a SciPy sparse matrix (like the real file),
``weights`` (V, 24), ``kintree_table`` (2, 24), ``f`` (F, 3), plus ``J``, ``bs_style`` and
``bs_type``. ``smplx.SMPL`` loads it; its ``forward`` cannot run on it (it picks extra joints
at fixed vertex ids of the real 6,890-vertex mesh), but ``smplx.lbs.lbs`` on its buffers can.

Content: the first 22 joints of :func:`furpe.bodymodels.synthetic_smplx.synthetic_joints`
(SMPL and SMPL-X share them), plus a hand joint beyond each wrist, a small sphere of vertices
around each joint skinned to it (and a little to its parent), a joint regressor averaging each
sphere, and small random (seeded) shape and pose blend shapes. 480 vertices.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from furpe.bodymodels.synthetic_smplx import sphere_figure, synthetic_joints

__all__ = ["SMPL_JOINT_NAMES", "SMPL_PARENTS", "synthetic_smpl_joints", "write_synthetic_smpl"]

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
SMPL_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)


def synthetic_smpl_joints() -> np.ndarray:
    """The (24, 3) rest joints of the synthetic SMPL model (native frame: y up, facing +z)."""
    joints = np.zeros((24, 3))
    joints[:22] = synthetic_joints()[:22]
    joints[22] = joints[20] + (0.09, 0.0, 0.0)
    joints[23] = joints[21] + (-0.09, 0.0, 0.0)
    return joints


def write_synthetic_smpl(folder: Path, gender: str = "neutral", seed: int = 0) -> Path:
    """Write a synthetic SMPL model file; return its path.

    Args:
        folder: the model folder; the file goes to ``folder/smpl/SMPL_<GENDER>.pkl``.
        gender: "neutral", "male" or "female" (the file name changes; ``seed`` too, so the
            genders differ).
        seed: seed of the random blend shapes (offset by the gender).
    """
    rng = np.random.default_rng(seed + {"neutral": 0, "male": 1, "female": 2}[gender])
    joints = synthetic_smpl_joints()
    specs = [(0.1 if SMPL_JOINT_NAMES[j] == "head" else 0.05, 4, 6) for j in range(24)]
    v_template, f, owner, j_regressor = sphere_figure(joints, specs)
    n = len(v_template)

    parents = np.asarray(SMPL_PARENTS)
    weights = np.zeros((n, 24))
    weights[np.arange(n), owner] = 0.85
    has_parent = parents[owner] >= 0
    weights[np.arange(n)[has_parent], parents[owner][has_parent]] += 0.15
    weights[~has_parent, 0] = 1.0

    shapedirs = rng.normal(0.0, 0.003, (n, 3, 10))
    shapedirs[:, :, 0] = 0.05 * (v_template - joints[0])  # overall size
    posedirs = np.zeros((n, 3, 207))
    for i, j in enumerate(owner):
        if j > 0:
            posedirs[i, :, 9 * (j - 1): 9 * j] = rng.normal(0.0, 0.005, (3, 9))

    kintree = np.stack([parents, np.arange(24)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # as in the real file; smplx sets the root's parent to -1
    data = {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(j_regressor),
        "J": j_regressor @ v_template,
        "weights": weights,
        "kintree_table": kintree,
        "f": f.astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "furpe_synthetic": True,
    }
    path = Path(folder) / "smpl" / f"SMPL_{gender.upper()}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    return path
