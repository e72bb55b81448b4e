"""Small *synthetic* SMPL-X and SMPL model files for the tests (no licence-gated data).

:func:`write_synthetic_smplx` writes ``folder/smplx/SMPLX_<GENDER>.npz`` with the same keys,
array layouts and kinematic tree as the real SMPL-X model file, so that ``smplx.SMPLX`` and
:class:`furpe.bodymodels.smplx_model.SMPLXBodyModel` load it like the real thing. Its content
is invented: a stick figure of the 55 SMPL-X joints in the native SMPL-X frame (metres, y up,
facing +z, the subject's left towards +x, T-pose), a small UV sphere of vertices around each
joint, each vertex skinned mostly to its joint (and a little to the joint's parent), and a
joint regressor that averages each joint's sphere (so the rest joints are the sphere
centres). Shape, expression and pose blend shapes are small and random (seeded); the first
shape component scales the body, the expression components only move the face.

The pelvis is deliberately *not* at the origin (as in the real model), so tests can check that
the global rotation is about the pelvis. 950 vertices and 1,680 triangles.

The 51 static face landmarks and the 17 contour landmarks (iBUG-68 layout) are laid out on the
front of the head sphere; the lower front of the head sphere is skinned to the jaw.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from furpe.bodymodels.smplx_model import SMPLX_JOINT_NAMES, SMPLX_PARENTS

# Offsets of each joint from its parent, native SMPL-X frame (left side; right mirrors x).
_PELVIS = (0.0, -0.35, 0.02)
_LEFT_OFFSETS: dict[str, tuple[float, float, float]] = {
    "hip": (0.09, -0.08, 0.0),
    "knee": (0.01, -0.38, 0.0),
    "ankle": (0.0, -0.40, -0.03),
    "foot": (0.02, -0.05, 0.12),
    "collar": (0.07, 0.12, -0.01),
    "shoulder": (0.11, 0.03, 0.0),
    "elbow": (0.25, 0.0, 0.0),
    "wrist": (0.25, 0.0, 0.0),
    "eye_smplhf": (0.03, 0.06, 0.08),
    # Fingers: palm down, fingers along +x, thumb forward (+z).
    "index1": (0.09, 0.0, 0.025),
    "index2": (0.035, 0.0, 0.0),
    "index3": (0.025, 0.0, 0.0),
    "middle1": (0.095, 0.0, 0.005),
    "middle2": (0.038, 0.0, 0.0),
    "middle3": (0.027, 0.0, 0.0),
    "pinky1": (0.08, -0.005, -0.035),
    "pinky2": (0.025, 0.0, 0.0),
    "pinky3": (0.02, 0.0, 0.0),
    "ring1": (0.09, 0.0, -0.015),
    "ring2": (0.033, 0.0, 0.0),
    "ring3": (0.025, 0.0, 0.0),
    "thumb1": (0.025, -0.01, 0.03),
    "thumb2": (0.025, 0.0, 0.025),
    "thumb3": (0.025, 0.0, 0.015),
}
_CENTRE_OFFSETS: dict[str, tuple[float, float, float]] = {
    "spine1": (0.0, 0.11, -0.01),
    "spine2": (0.0, 0.13, 0.0),
    "spine3": (0.0, 0.06, 0.02),
    "neck": (0.0, 0.22, -0.03),
    "head": (0.0, 0.09, 0.05),
    "jaw": (0.0, -0.02, 0.04),
}
#: (radius, rings, segments) of the vertex sphere around each kind of joint.
_HEAD_SPHERE = (0.1, 10, 20)
_TORSO_SPHERE = (0.09, 4, 8)
_LIMB_SPHERE = (0.05, 4, 8)
_JAW_SPHERE = (0.04, 3, 6)
_EYE_SPHERE = (0.012, 3, 6)
_FINGER_SPHERE = (0.009, 2, 4)

#: iBUG-68 face landmarks as (u, v): u towards the subject's left, v up, in [-1, 1].
_IBUG68_UV = np.array(
    [(-0.95 * np.cos(np.pi * t / 16), -0.1 - 0.8 * np.sin(np.pi * t / 16)) for t in range(17)]
    + [(-0.8 + 0.15 * k, 0.5 + 0.05 * min(k, 4 - k)) for k in range(5)]
    + [(0.2 + 0.15 * k, 0.5 + 0.05 * min(k, 4 - k)) for k in range(5)]
    + [(0.0, 0.35), (0.0, 0.22), (0.0, 0.09), (0.0, -0.04)]
    + [(-0.2, -0.15), (-0.1, -0.17), (0.0, -0.18), (0.1, -0.17), (0.2, -0.15)]
    + [(-0.65, 0.3), (-0.52, 0.36), (-0.38, 0.36), (-0.25, 0.3), (-0.38, 0.24), (-0.52, 0.24)]
    + [(0.25, 0.3), (0.38, 0.36), (0.52, 0.36), (0.65, 0.3), (0.52, 0.24), (0.38, 0.24)]
    + [(-0.35, -0.45), (-0.22, -0.38), (-0.08, -0.35), (0.0, -0.36), (0.08, -0.35),
       (0.22, -0.38), (0.35, -0.45), (0.22, -0.53), (0.08, -0.56), (0.0, -0.57),
       (-0.08, -0.56), (-0.22, -0.53)]
    + [(-0.28, -0.45), (-0.12, -0.42), (0.0, -0.42), (0.12, -0.42), (0.28, -0.45),
       (0.12, -0.48), (0.0, -0.48), (-0.12, -0.48)]
)


def synthetic_joints() -> np.ndarray:
    """The (55, 3) rest joint positions of the synthetic model, native SMPL-X frame."""
    joints = np.zeros((55, 3))
    for j, name in enumerate(SMPLX_JOINT_NAMES):
        parent = SMPLX_PARENTS[j]
        if parent < 0:
            joints[j] = _PELVIS
            continue
        if name in _CENTRE_OFFSETS:
            offset = np.array(_CENTRE_OFFSETS[name])
        else:
            side, base = name.split("_", 1)
            offset = np.array(_LEFT_OFFSETS[base])
            if side == "right":
                offset[0] = -offset[0]
        joints[j] = joints[parent] + offset
    return joints


def _uv_sphere(radius: float, rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (2 + (rings-1)*segments, 3) and triangles of a sphere, poles along y."""
    verts = [(0.0, radius, 0.0)]
    for i in range(1, rings):
        theta = np.pi * i / rings
        for k in range(segments):
            phi = 2 * np.pi * k / segments
            verts.append(
                (radius * np.sin(theta) * np.sin(phi), radius * np.cos(theta),
                 radius * np.sin(theta) * np.cos(phi))
            )
    verts.append((0.0, -radius, 0.0))
    bottom = len(verts) - 1

    def ring(i: int, k: int) -> int:
        return 1 + (i - 1) * segments + (k % segments)

    faces = []
    for k in range(segments):
        faces.append((0, ring(1, k), ring(1, k + 1)))
        faces.append((bottom, ring(rings - 1, k + 1), ring(rings - 1, k)))
    for i in range(1, rings - 1):
        for k in range(segments):
            a, b = ring(i, k), ring(i, k + 1)
            c, d = ring(i + 1, k), ring(i + 1, k + 1)
            faces.append((a, c, b))
            faces.append((b, c, d))
    return np.asarray(verts), np.asarray(faces, dtype=np.int64)


def _sphere_spec(name: str) -> tuple[float, int, int]:
    if name == "head":
        return _HEAD_SPHERE
    if name == "jaw":
        return _JAW_SPHERE
    if name.endswith("eye_smplhf"):
        return _EYE_SPHERE
    if name in ("pelvis", "spine1", "spine2", "spine3"):
        return _TORSO_SPHERE
    if name[-1].isdigit():
        return _FINGER_SPHERE
    return _LIMB_SPHERE


def sphere_figure(
    joints: np.ndarray, specs: list[tuple[float, int, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stick figure of UV spheres, one per joint (``specs``: radius, rings, segments).

    Returns the vertices, the triangles, each vertex's owning joint, and the joint regressor
    that averages each joint's sphere (so the rest joints are the sphere centres).
    """
    verts, faces, owner = [], [], []
    offset = 0
    for j, spec in enumerate(specs):
        v, f = _uv_sphere(*spec)
        verts.append(v + joints[j])
        faces.append(f + offset)
        owner.append(np.full(len(v), j))
        offset += len(v)
    v_template = np.concatenate(verts)
    owner_all = np.concatenate(owner)
    j_regressor = np.zeros((len(specs), len(v_template)))
    for j in range(len(specs)):
        members = owner_all == j
        j_regressor[j, members] = 1.0 / members.sum()
    return v_template, np.concatenate(faces), owner_all, j_regressor


def _closest_on_triangles(point: np.ndarray, tris: np.ndarray) -> tuple[int, np.ndarray]:
    """Index of the triangle (among (T, 3, 3)) nearest to ``point`` and its barycentrics.

    Approximate: the projection onto each triangle's plane, barycentrics clipped to the
    triangle; good enough for points close to the mesh.
    """
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    m = np.stack([b - a, c - a], -1)  # (T, 3, 2)
    mtm = np.einsum("tki,tkj->tij", m, m)
    rhs = np.einsum("tki,tk->ti", m, point - a)
    uv = np.linalg.solve(mtm, rhs[..., None])[..., 0]
    bary = np.clip(np.stack([1 - uv.sum(1), uv[:, 0], uv[:, 1]], 1), 0.0, None)
    bary /= bary.sum(1, keepdims=True)
    dist = np.linalg.norm(np.einsum("tv,tvk->tk", bary, tris) - point, axis=1)
    best = int(np.argmin(dist))
    return best, bary[best]


def write_synthetic_smplx(
    folder: Path, gender: str = "neutral", seed: int = 0, compact_shape_space: bool = False
) -> Path:
    """Write a synthetic SMPL-X model file; return its path.

    Args:
        folder: the model folder; the file goes to ``folder/smplx/SMPLX_<GENDER>.npz``.
        gender: "neutral", "male" or "female" (only the file name changes).
        seed: seed of the random blend shapes.
        compact_shape_space: write 10 shape + 10 expression components (the SMPL-X v1.0
            layout) instead of 300 + 100 (v1.1).
    """
    rng = np.random.default_rng(seed)
    joints = synthetic_joints()
    names = SMPLX_JOINT_NAMES
    jidx = {n: j for j, n in enumerate(names)}

    v_template, f, owner, j_regressor = sphere_figure(
        joints, [_sphere_spec(name) for name in names])
    n_verts = len(v_template)

    # Skinning: mostly the owning joint, a little its parent; the lower front of the head
    # sphere follows the jaw.
    head, jaw = jidx["head"], jidx["jaw"]
    skin_joint = owner.copy()
    rel = v_template - joints[head]
    lower_face = (owner == head) & (rel[:, 2] > 0.03) & (rel[:, 1] < -0.02)
    skin_joint[lower_face] = jaw
    weights = np.zeros((n_verts, 55))
    weights[np.arange(n_verts), skin_joint] = 0.85
    parents = np.asarray(SMPLX_PARENTS)
    skin_parent = np.where(lower_face, head, parents[skin_joint])
    has_parent = skin_parent >= 0
    weights[np.arange(n_verts)[has_parent], skin_parent[has_parent]] += 0.15
    weights[~has_parent, 0] = 1.0

    # Shape and expression blend shapes.
    n_shape, n_expr = (10, 10) if compact_shape_space else (300, 100)
    shapedirs = rng.normal(0.0, 0.003, (n_verts, 3, n_shape + n_expr))
    shapedirs[:, :, 0] = 0.05 * (v_template - joints[0])  # overall size
    shapedirs[:, 0, 1] += 0.05 * (v_template[:, 0] - joints[0, 0])  # width
    face_verts = (
        ((owner == head) & (rel[:, 2] > 0.02))
        | (owner == jaw)
        | (owner == jidx["left_eye_smplhf"])
        | (owner == jidx["right_eye_smplhf"])
    )
    shapedirs[~face_verts, :, n_shape:] = 0.0
    shapedirs[skin_joint == jaw, 1, n_shape] -= 0.01  # "mouth open"

    # Pose blend shapes: each vertex reacts to the rotation of its own joint only.
    posedirs = np.zeros((n_verts, 3, 54 * 9))
    for i, j in enumerate(skin_joint):
        if j > 0:
            cols = slice(9 * (j - 1), 9 * j)
            posedirs[i, :, cols] = rng.normal(0.0, 0.005, (3, 9))

    # Hand PCA (unused with use_pca=False) and a slightly curled mean hand pose.
    def hand_mean(sign: float) -> np.ndarray:
        mean = np.zeros((15, 3))
        mean[:, 2] = -sign * 0.15
        mean[12:, :] = (0.0, 0.0, -sign * 0.05)  # thumb
        return mean.reshape(-1)

    def components() -> np.ndarray:
        q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
        return q

    # Face landmarks on the front of the head sphere (nearest triangle, barycentric).
    head_faces = np.nonzero(owner[f[:, 0]] == head)[0]
    head_tris = v_template[f[head_faces]]
    radius = _HEAD_SPHERE[0]
    lmk_face, lmk_bary = [], []
    for u, v in _IBUG68_UV:
        az, el = 1.0 * u, 0.8 * v
        target = joints[head] + radius * np.array(
            [np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)]
        )
        t, bary = _closest_on_triangles(target, head_tris)
        lmk_face.append(head_faces[t])
        lmk_bary.append(bary)
    lmk_face = np.asarray(lmk_face, dtype=np.int64)
    lmk_bary = np.asarray(lmk_bary)

    kintree = np.stack([parents, np.arange(55)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # as in the real file; smplx sets the root's parent to -1

    path = Path(folder) / "smplx" / f"SMPLX_{gender.upper()}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        v_template=v_template.astype(np.float32),
        f=f.astype(np.int32),
        J_regressor=j_regressor.astype(np.float32),
        kintree_table=kintree,
        weights=weights.astype(np.float32),
        shapedirs=shapedirs.astype(np.float32),
        posedirs=posedirs.astype(np.float32),
        hands_componentsl=components().astype(np.float32),
        hands_componentsr=components().astype(np.float32),
        hands_meanl=hand_mean(1.0).astype(np.float32),
        hands_meanr=hand_mean(-1.0).astype(np.float32),
        lmk_faces_idx=lmk_face[17:],
        lmk_bary_coords=lmk_bary[17:].astype(np.float32),
        dynamic_lmk_faces_idx=np.tile(lmk_face[None, :17], (79, 1)),
        dynamic_lmk_bary_coords=np.tile(lmk_bary[None, :17], (79, 1, 1)).astype(np.float32),
        furpe_synthetic=np.array(True),
    )
    return path


# ------------------------------------------------------------------------------------------
# SMPL (for the 3DPW ground truth)
# A small *synthetic* SMPL model file, for tests (no licence-gated data involved).
#
# :func:`write_synthetic_smpl` writes ``folder/smpl/SMPL_<GENDER>.pkl``, a Python pickle with the
# keys and array layouts of the real SMPL model file (after its chumpy objects are removed, as
# the ``smplx`` package expects): ``v_template`` (V, 3), ``shapedirs`` (V, 3, 10), ``posedirs``
# (V, 3, 207), ``J_regressor`` (24, V) as a SciPy sparse matrix (like the real file),
# ``weights`` (V, 24), ``kintree_table`` (2, 24), ``f`` (F, 3), plus ``J``, ``bs_style`` and
# ``bs_type``. ``smplx.SMPL`` loads it; its ``forward`` cannot run on it (it picks extra joints
# at fixed vertex ids of the real 6,890-vertex mesh), but ``smplx.lbs.lbs`` on its buffers can.
#
# Content: the first 22 joints of :func:`synthetic_joints`
# (SMPL and SMPL-X share them), plus a hand joint beyond each wrist, a small sphere of vertices
# around each joint skinned to it (and a little to its parent), a joint regressor averaging each
# sphere, and small random (seeded) shape and pose blend shapes. 480 vertices.
# ------------------------------------------------------------------------------------------

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
