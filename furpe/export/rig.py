"""A body model's rig at one shape, and its motion over a sequence of frames.

A :class:`Rig` is what animation formats are built from, whatever the body model: bones
(names, parents, rest matrices), the rest mesh at the track's shape (neutral face), every
skinning influence of every vertex, and the face's blend shapes as morph targets. A
:class:`Motion` holds, per frame, the world matrix of every bone and the morph weights, so
that linear blend skinning of the rig reproduces the body model's own vertices
(:meth:`furpe.bodymodels.BodyModel.forward`) for that frame::

    world(v) = sum_j w_j bones[f, j] @ inv(rest_bones[j]) @ (v + sum_m weights[f, m] morph[m, v])

Frames (see docs/export.md):

* **Model frame** (the rig's rest data): y up, the person faces +z, their left is +x; metres.
  The body model's native frame turned by ``WORLD_FROM_CAMERA @ model.canonical_rotation``
  (Anny: native z up, facing -y, left +x, so model = (x, z, -y) of native; SMPL-X: native is
  already y up, facing +z).
* **World frame** (the motion): the camera frame of the result turned to y up,
  ``world = WORLD_FROM_CAMERA @ camera = (x, -y, -z)``: the camera at the origin looking
  down -z, as in glTF. With a zero ``global_orient`` the person stands upright, facing the
  camera (+z).

**One shape per track.** Animation formats have one mesh and one skeleton per character, so
a track's shape blocks (Anny ``phenotype``, SMPL-X ``betas``) are the per-coefficient
**median over its frames**; the pose, face and placement blocks change per frame. Where a
frame's shape differed from the median, the exported frame is that pose on the median body.

What is not exported: SMPL-X's pose-corrective blend shapes (``posedirs``: a linear
function of the bone rotations that no skinning format represents; the rig is plain linear
blend skinning, which is all of Anny).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel
from furpe.core.errors import FurpeError
from furpe.core.rotations import rotvec_to_rotmat

#: The camera frame (x right, y down, z forward) turned to a y-up world (x right, y up, the
#: camera looking down -z): ``world = WORLD_FROM_CAMERA @ camera``. Its own inverse.
WORLD_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])

#: Frames posed per batch (bounds memory for long videos).
_BATCH = 256


@dataclass(frozen=True)
class Rig:
    """A skinned, morphable body at one shape, in the model frame (y up, facing +z, metres).

    Attributes:
        model: the body model's name (``"anny"``, ``"smplx"``).
        bone_names: J bone names, parents before children.
        parents: J parent indices (-1 for the root).
        rest_bones: (J, 4, 4) world matrices of the bones in the bind pose (the rest mesh's
            pose): rotation = the bone's axes, translation = its head.
        vertices: (V, 3) rest mesh at the rig's shape, neutral face.
        triangles: (F, 3) vertex indices (counter-clockwise seen from outside).
        skin_joints: (V, K) bone indices of each vertex's influences, by decreasing weight;
            unused slots are 0 with weight 0.
        skin_weights: (V, K) weights, rows summing to 1.
        morph_names: M morph target names (Anny: ARKit facial actions such as ``jawOpen``;
            SMPL-X: ``expression0`` ...).
        morph_targets: (M, V, 3) vertex offsets of each morph target at weight 1.
        shape: the shape blocks the rig was built at (block -> coefficients).
        arms: per arm, the bones from shoulder to hand (upper arm, forearm, wrist, a finger
            base) and the side (+1 the person's left, towards +x; -1 the right), used to put
            the skeleton in a T-pose (:func:`t_pose_bones`).
    """

    model: str
    bone_names: tuple[str, ...]
    parents: tuple[int, ...]
    rest_bones: np.ndarray
    vertices: np.ndarray
    triangles: np.ndarray
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    morph_names: tuple[str, ...]
    morph_targets: np.ndarray
    shape: dict[str, np.ndarray] = field(default_factory=dict)
    arms: tuple[tuple[tuple[int, ...], float], ...] = ()

    @property
    def num_influences(self) -> int:
        """K, the most bones influencing one vertex."""
        return int(self.skin_joints.shape[1])

    def with_max_influences(self, k: int | None) -> Rig:
        """The rig with each vertex's ``k`` largest weights kept and renormalised (``None``,
        or ``k`` at least :attr:`num_influences`: unchanged)."""
        if k is None or k >= self.num_influences:
            return self
        if k < 1:
            raise FurpeError(f"max influences must be at least 1, got {k}")
        w = self.skin_weights[:, :k]
        return replace(self, skin_joints=self.skin_joints[:, :k].copy(),
                       skin_weights=w / w.sum(1, keepdims=True))


@dataclass(frozen=True)
class Motion:
    """A rig's pose per frame, in the world frame (y up, metres; see the module docstring).

    Attributes:
        times: (N,) seconds, increasing.
        bones: (N, J, 4, 4) world matrices of the bones.
        morph_weights: (N, M) weight of each morph target.
        joints: (N, J, 3) the body model's own joints (``BodyModel.joint_names``, which are
            the rig's bones), world frame. Anny's are the bone heads; SMPL-X's joints also
            move with the expression, so they can differ slightly from the bone matrices'
            translations (which are what makes the skinning exact).
    """

    times: np.ndarray
    bones: np.ndarray
    morph_weights: np.ndarray
    joints: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.times.shape[0])


class RigSource:
    """One body model's rig data (native frame); subclasses per model.

    ``native_rest()`` gives the rig's arrays in the model's native frame, shifted so that the
    native forward (:meth:`BodyModel._forward`) is ``skinning(...)`` applied to them;
    ``skinning(params)`` gives per frame the (B, J, 4, 4) native skinning transforms (the
    matrices that take a rest point to its posed place), the morph weights (B, M) and the
    native joints (B, J', 3).
    """

    def __init__(self, model: BodyModel, shape: Mapping[str, np.ndarray]) -> None:
        self.model = model
        self.shape = {k: np.asarray(v, dtype=np.float32) for k, v in shape.items()}

    def native_rest(self) -> dict[str, object]:
        raise NotImplementedError

    def skinning(self, params: dict[str, torch.Tensor]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


def bone_rotations(model: BodyModel, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, J, 3, 3) local rotation of every bone (``BodyModel.joint_names``) from the
    rotation blocks, whose labels name the bones; ``global_orient`` (the placement) and bones
    no block drives stay at the identity."""
    names = {n: j for j, n in enumerate(model.joint_names)}
    batch = next(iter(params.values())).shape[0]
    rotvecs = torch.zeros(batch, len(names), 3, dtype=torch.float64)
    for block_name, blk in model.blocks.items():
        if blk.kind != "rotation" or block_name == "global_orient" or block_name not in params:
            continue
        missing = [lab for lab in blk.labels if lab not in names]
        if missing:
            raise FurpeError(f"block '{block_name}' drives unknown bones {missing}")
        idx = torch.as_tensor([names[lab] for lab in blk.labels])
        rotvecs[:, idx] = params[block_name].to(torch.float64)
    return rotvec_to_rotmat(rotvecs)


def _source(model: BodyModel, shape: Mapping[str, np.ndarray]) -> RigSource:
    from furpe.export.anny_rig import AnnyRigSource
    from furpe.export.smplx_rig import SMPLXRigSource

    sources: dict[str, type[RigSource]] = {"anny": AnnyRigSource, "smplx": SMPLXRigSource}
    if model.name not in sources:
        raise FurpeError(f"animation export does not support body model '{model.name}'; "
                         f"supported: {sorted(sources)}")
    return sources[model.name](model, shape)


def shape_blocks(model: BodyModel) -> list[str]:
    """The blocks that set a person's shape (``part == "shape"``: Anny ``phenotype``,
    SMPL-X ``betas``)."""
    return [name for name, blk in model.blocks.items() if blk.part == "shape"]


def morph_blocks(model: BodyModel) -> list[str]:
    """The coefficient blocks of the face (Anny ``facial_actions``, SMPL-X ``expression``):
    exported as morph targets."""
    return [name for name, blk in model.blocks.items()
            if blk.part == "face" and blk.kind != "rotation"]


def _clean(model: BodyModel, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Known blocks of one saved parameter dict as float arrays of the block's shape
    (non-finite values become 0, missing blocks neutral)."""
    out = {}
    for name, blk in model.blocks.items():
        value = params.get(name)
        if value is None:
            out[name] = blk.neutral(1)[0].numpy()
            continue
        arr = np.nan_to_num(np.asarray(value, dtype=np.float32))
        expected = blk.shape(1)[1:]
        if arr.shape != expected:
            raise FurpeError(f"parameter '{name}' has shape {arr.shape}, expected {expected} "
                             f"for body model '{model.name}'")
        out[name] = arr
    return out


def track_shape(model: BodyModel, frames: Sequence[Mapping[str, np.ndarray]]
                ) -> dict[str, np.ndarray]:
    """A track's shape: the per-coefficient median of its shape blocks over ``frames``."""
    if not frames:
        raise FurpeError("a track needs at least one frame")
    cleaned = [_clean(model, f) for f in frames]
    return {name: np.median(np.stack([c[name] for c in cleaned]), axis=0).astype(np.float32)
            for name in shape_blocks(model)}


def _model_from_native(model: BodyModel) -> np.ndarray:
    """(3, 3) rotation from the model's native frame to the rig's model frame."""
    return WORLD_FROM_CAMERA @ np.asarray(model.canonical_rotation, dtype=np.float64)


def _homogeneous(R: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = R
    return out


def _dominant_influences(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, K) joints and renormalised weights of every non-zero entry of dense (V, J)
    weights, by decreasing weight (K = the most non-zero entries of a vertex)."""
    dense = np.clip(np.asarray(dense, dtype=np.float64), 0.0, None)
    k = max(1, int((dense > 0).sum(1).max()))
    order = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    weights = np.take_along_axis(dense, order, 1)
    joints = np.where(weights > 0, order, 0)
    total = weights.sum(1, keepdims=True)
    if np.any(total <= 0):
        raise FurpeError("a vertex has no skinning weight")
    return joints.astype(np.int64), weights / total


def make_rig(model: BodyModel, shape: Mapping[str, np.ndarray]) -> Rig:
    """The rig of ``model`` at ``shape`` (shape block -> coefficients; missing: default)."""
    source = _source(model, shape)
    native = source.native_rest()
    A = _model_from_native(model)
    Ah = _homogeneous(A)
    joints, weights = _dominant_influences(native["weights"])  # type: ignore[arg-type]
    names = tuple(native["bone_names"])  # type: ignore[arg-type]
    arms = tuple((tuple(names.index(b) for b in chain), float(side))
                 for chain, side in native.get("arms", ()))  # type: ignore[union-attr]
    return Rig(
        model=model.name,
        bone_names=names,
        parents=tuple(int(p) for p in native["parents"]),  # type: ignore[union-attr]
        rest_bones=Ah @ np.asarray(native["rest_bones"], dtype=np.float64),
        vertices=np.asarray(native["vertices"], dtype=np.float64) @ A.T,
        triangles=np.asarray(model.faces, dtype=np.int64),
        skin_joints=joints,
        skin_weights=weights,
        morph_names=tuple(native["morph_names"]),  # type: ignore[arg-type]
        morph_targets=np.asarray(native["morph_targets"], dtype=np.float64) @ A.T,
        shape=dict(source.shape),
        arms=arms,
    )


def _batch(model: BodyModel, frames: Sequence[Mapping[str, np.ndarray]],
           shape: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    cleaned = [_clean(model, f) for f in frames]
    out = {name: torch.as_tensor(np.stack([c[name] for c in cleaned])) for name in model.blocks}
    for name, value in shape.items():
        out[name] = torch.as_tensor(np.asarray(value, dtype=np.float32))[None].expand(
            len(frames), -1).clone()
    return out


def _placement(model: BodyModel, params: dict[str, torch.Tensor]) -> np.ndarray:
    """(B, 4, 4): native frame to world frame, ``[D R_g C | D t]`` (D = WORLD_FROM_CAMERA,
    R_g = global_orient, C = canonical rotation), as in :meth:`BodyModel.forward`."""
    R = rotvec_to_rotmat(params["global_orient"][:, 0].to(torch.float64)).numpy()
    C = np.asarray(model.canonical_rotation, dtype=np.float64)
    out = np.tile(np.eye(4), (R.shape[0], 1, 1))
    out[:, :3, :3] = WORLD_FROM_CAMERA @ R @ C
    out[:, :3, 3] = params["transl"].to(torch.float64).numpy() @ WORLD_FROM_CAMERA.T
    return out


def pose_rig(model: BodyModel, rig: Rig, frames: Sequence[Mapping[str, np.ndarray]],
             times: Sequence[float] | np.ndarray) -> Motion:
    """The :class:`Motion` of ``rig`` over ``frames`` (saved parameter dicts, one per frame;
    their shape blocks are replaced by the rig's) at ``times`` (seconds, increasing)."""
    times = np.asarray(times, dtype=np.float64)
    if len(frames) == 0 or len(times) != len(frames):
        raise FurpeError(f"{len(frames)} frames but {len(times)} times")
    if np.any(np.diff(times) <= 0) or not np.all(np.isfinite(times)):
        raise FurpeError("frame times must be finite and strictly increasing")
    source = _source(model, rig.shape)
    rest = np.asarray(source.native_rest()["rest_bones"], dtype=np.float64)
    bones, morphs, joints = [], [], []
    for start in range(0, len(frames), _BATCH):
        params = _batch(model, frames[start:start + _BATCH], rig.shape)
        with torch.no_grad():
            transforms, weights, native_joints = source.skinning(params)
        place = _placement(model, params)
        bones.append(place[:, None] @ transforms @ rest[None])
        morphs.append(weights)
        joints.append(np.einsum("bij,bkj->bki", place[:, :3, :3], native_joints)
                      + place[:, None, :3, 3])
    return Motion(times=times, bones=np.concatenate(bones), morph_weights=np.concatenate(morphs),
                  joints=np.concatenate(joints))


def track_rig(model: BodyModel, frames: Sequence[Mapping[str, np.ndarray]],
              times: Sequence[float] | np.ndarray) -> tuple[Rig, Motion]:
    """The rig at the track's median shape (:func:`track_shape`) and its motion."""
    rig = make_rig(model, track_shape(model, frames))
    return rig, pose_rig(model, rig, frames, times)


def skin(rig: Rig, motion: Motion) -> np.ndarray:
    """(N, V, 3) world-frame vertices of every frame by linear blend skinning (NumPy): the
    reference the exported files are checked against."""
    inv_rest = np.linalg.inv(rig.rest_bones)
    out = np.empty((motion.num_frames, len(rig.vertices), 3))
    for f in range(motion.num_frames):
        base = rig.vertices + np.einsum("m,mvd->vd", motion.morph_weights[f], rig.morph_targets)
        mats = motion.bones[f] @ inv_rest  # (J, 4, 4)
        blend = np.einsum("vk,vkij->vij", rig.skin_weights, mats[rig.skin_joints])
        out[f] = np.einsum("vij,vj->vi", blend[:, :3, :3], base) + blend[:, :3, 3]
    return out


def _rotation_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``u`` to direction ``v`` (3, 3)."""
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    axis, c = np.cross(u, v), float(np.dot(u, v))
    s = np.linalg.norm(axis)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        other = np.eye(3)[np.argmin(np.abs(u))]
        axis = np.cross(u, other)
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / s
    return np.eye(3) + s * K + (1 - c) * K @ K


def descendants(parents: Sequence[int], bone: int) -> list[int]:
    """``bone`` and every bone below it, in index order."""
    found = {bone}
    grew = True
    while grew:
        below = {j for j, p in enumerate(parents) if p in found}
        grew = not below <= found
        found |= below
    return sorted(found)


def t_pose_bones(rig: Rig) -> np.ndarray:
    """(J, 4, 4) rest bone matrices with the arms straight out sideways (a T-pose).

    For each arm, each segment (shoulder to elbow, elbow to wrist, wrist to finger base) is
    turned, with everything below it, about its upper joint by the smallest rotation that
    points it along the person's side (+x for the left arm, -x for the right): a pose of the
    same skeleton (bone lengths kept).
    """
    bones = rig.rest_bones.copy()
    for chain, side in rig.arms:
        target = np.array([side, 0.0, 0.0])
        for upper, lower in zip(chain[:-1], chain[1:]):
            head = bones[upper, :3, 3].copy()
            R = _rotation_between(bones[lower, :3, 3] - head, target)
            turn = np.eye(4)
            turn[:3, :3] = R
            turn[:3, 3] = head - R @ head
            sub = descendants(rig.parents, upper)
            bones[sub] = turn @ bones[sub]
    return bones
