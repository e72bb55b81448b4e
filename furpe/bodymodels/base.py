"""One interface over parametric body models (Anny, SMPL-X).

Every model exposes its parameters as named *blocks* (:class:`ParamBlock`), a batched,
differentiable :meth:`BodyModel.forward` that returns vertices and joints **in the camera
frame** (metres; x right, y down, z forward), named keypoints in the experts' landmark
conventions (:meth:`BodyModel.keypoints`), the vertex sets of each part and the kinematic tree.

Conventions shared by all models:

* ``global_orient`` (B, 1, 3) axis-angle and ``transl`` (B, 3) place the model in the camera
  frame. With ``global_orient = 0`` the person stands upright (head towards -y) and faces the
  camera (their front towards -z), whatever the model's native axes are.
* Rotation blocks are axis-angle, shape (B, N, 3); linear blocks (B, N); bounded blocks (B, N)
  with values in [lower, upper].
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import torch

from furpe.core.errors import FurpeError
from furpe.core.rotations import rotvec_to_rotmat

BlockKind = Literal["rotation", "linear", "bounded"]


@dataclass(frozen=True)
class ParamBlock:
    """Description of one parameter block of a body model.

    Attributes:
        name: key in the parameter dict.
        kind: ``"rotation"`` (N axis-angle rotations), ``"linear"`` (unbounded coefficients,
            prior centred at 0) or ``"bounded"`` (coefficients in [lower, upper]).
        size: N, the number of rotations or coefficients.
        part: the part it drives: ``"global"``, ``"body"``, ``"left_hand"``, ``"right_hand"``,
            ``"face"`` or ``"shape"``.
        labels: a name for each of the N entries (bone or coefficient names).
        default: the neutral value of each entry (bounded and linear blocks).
        lower, upper: the bounds of a bounded block.
    """

    name: str
    kind: BlockKind
    size: int
    part: str
    labels: tuple[str, ...]
    default: tuple[float, ...] | None = None
    lower: float = 0.0
    upper: float = 1.0

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.size, 3) if self.kind == "rotation" else (batch, self.size)

    def neutral(self, batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
        if self.kind == "rotation":
            return torch.zeros(self.shape(batch), dtype=dtype, device=device)
        if self.default is None:
            return torch.zeros(self.shape(batch), dtype=dtype, device=device)
        d = torch.tensor(self.default, dtype=dtype, device=device)
        return d.expand(batch, -1).clone()


@dataclass
class BodyOutput:
    """Result of a forward pass, in the camera frame (metres).

    Attributes:
        vertices: (B, V, 3).
        joints: (B, J, 3), ordered as :attr:`BodyModel.joint_names`.
    """

    vertices: torch.Tensor
    joints: torch.Tensor


@dataclass(frozen=True)
class Regressor:
    """Sparse linear map from the model's points to named keypoints.

    The point set is the vertices followed by the joints: ``torch.cat([vertices, joints], 1)``.
    ``indices`` and ``weights`` are (K, n); keypoint k is ``sum_j weights[k, j] *
    points[indices[k, j]]``. ``names`` has K entries.
    """

    names: tuple[str, ...]
    indices: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.shape != self.weights.shape or self.indices.ndim != 2:
            raise ValueError("indices and weights must both be (K, n)")
        if len(self.names) != self.indices.shape[0]:
            raise ValueError("one name per keypoint row is needed")


@dataclass(frozen=True)
class HandBones:
    """The joints that describe one hand block for finger hinge axes.

    ``wrist``, ``index_base`` and ``pinky_base`` span the palm; ``rows`` gives, per row of the
    block, the (base, next) joints of the finger that row bends (its first phalanx gives the
    finger's direction), or ``None`` for rows that are not finger bones (metacarpals).
    """

    wrist: str
    index_base: str
    pinky_base: str
    rows: tuple[tuple[str, str] | None, ...]


def apply_regressor(reg: Regressor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``reg`` to (B, P, 3) points; returns (B, K, 3)."""
    idx = torch.as_tensor(reg.indices, dtype=torch.long, device=points.device)
    w = torch.as_tensor(reg.weights, dtype=points.dtype, device=points.device)
    gathered = points[:, idx.reshape(-1)].reshape(points.shape[0], *idx.shape, 3)
    return (gathered * w[None, :, :, None]).sum(2)


class BodyModel(torch.nn.Module):
    """Abstract body model. Subclasses fill in the attributes and :meth:`_forward`."""

    name: str = "abstract"
    #: The parameter blocks, in a stable order.
    blocks: dict[str, ParamBlock]
    #: (F, 3) triangle indices.
    faces: np.ndarray
    #: Joint names and parents (-1 for the root): the kinematic tree.
    joint_names: tuple[str, ...]
    joint_parents: tuple[int, ...]
    #: Vertex indices of each part: "left_hand", "right_hand", "face", "body" (the rest).
    part_vertices: dict[str, np.ndarray]
    #: Keypoint regressors by landmark convention ("mediapipe_pose", ...).
    regressors: dict[str, Regressor]
    #: Rotation from the model's native frame to the canonical camera-facing frame.
    canonical_rotation: np.ndarray
    #: Whether :meth:`_forward` applies the global placement itself (``placed=True``).
    places_in_forward: bool = False

    @property
    def num_vertices(self) -> int:
        raise NotImplementedError

    def neutral_params(self, batch: int = 1, device=None) -> dict[str, torch.Tensor]:
        """Neutral parameters: rest pose, default shape and expression, at the origin."""
        return {
            name: blk.neutral(batch, dtype=torch.float32, device=device)
            for name, blk in self.blocks.items()
        }

    def at_rest(self, params: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
        """A copy of ``params`` with the blocks of ``part`` (``"left_hand"``, ``"face"``, ...)
        put back to their neutral values: the same person with that part at rest."""
        batch = self.check_params(params)
        device = next(iter(params.values())).device
        neutral = self.neutral_params(batch, device=device)
        return {k: (neutral[k] if self.blocks[k].part == part else v) for k, v in params.items()}

    def own_regressors(self) -> dict[str, Regressor]:
        """Keypoint regressors the model itself provides (e.g. Anny's COCO regressor), added
        to :attr:`regressors` with the shipped correspondences."""
        return {}

    def pose(self, params: Mapping[str, np.ndarray]) -> BodyOutput:
        """Re-pose one person from saved (unbatched, NumPy) parameters, e.g. a result file's
        ``params``; missing blocks are neutral, non-finite values count as 0."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        device = None if first is None else first.device
        tensors = {k: torch.as_tensor(np.nan_to_num(np.asarray(v, dtype=np.float32)),
                                      device=device)[None] for k, v in params.items()}
        with torch.no_grad():
            return self(tensors)

    def hand_bones(self, block: str) -> HandBones | None:
        """The joints of a hand block for :meth:`finger_hinge_axes` (``None``: no hand block
        or the model does not say; the fit then uses an isotropic finger prior)."""
        return None

    def finger_hinge_axes(self) -> dict[str, np.ndarray]:
        """Per hand block, (N, 3) unit axes in the block's rotation frame (the model's native
        frame at rest) about which each finger bone bends: normal to the finger's first
        phalanx and to the palm, measured on the neutral pose. Zero rows for bones that are
        not finger bones. The sign is the model's (a hinge prior does not need it)."""
        cached = getattr(self, "_hinge_axes", None)
        if cached is not None:
            return cached
        with torch.no_grad():
            joints = self(self.neutral_params(1)).joints[0].cpu().numpy().astype(np.float64)
        names = list(self.joint_names)
        to_native = np.asarray(self.canonical_rotation, dtype=np.float64).T
        j = lambda n: joints[names.index(n)]  # noqa: E731
        axes: dict[str, np.ndarray] = {}
        for block in self.blocks:
            bones = self.hand_bones(block)
            if bones is None:
                continue
            wrist = j(bones.wrist)
            normal = np.cross(j(bones.index_base) - wrist, j(bones.pinky_base) - wrist)
            out = np.zeros((len(bones.rows), 3))
            for i, row in enumerate(bones.rows):
                if row is None:
                    continue
                d = j(row[1]) - j(row[0])
                axis = np.cross(d, normal)
                norm = np.linalg.norm(axis)
                if norm > 1e-9:  # degenerate geometry (coincident joints): no hinge
                    out[i] = to_native @ (axis / norm)
            axes[block] = out
        self._hinge_axes = axes
        return axes

    def check_params(self, params: dict[str, torch.Tensor]) -> int:
        """Validate block names and shapes; return the batch size."""
        unknown = set(params) - set(self.blocks)
        if unknown:
            raise FurpeError(
                f"unknown parameter block(s) {sorted(unknown)} for body model "
                f"'{self.name}'; expected {list(self.blocks)}"
            )
        batch = None
        for name, value in params.items():
            b = value.shape[0]
            batch = b if batch is None else batch
            if tuple(value.shape) != self.blocks[name].shape(batch):
                raise FurpeError(
                    f"parameter '{name}' has shape {tuple(value.shape)}, expected "
                    f"{self.blocks[name].shape(batch)}"
                )
        if batch is None:
            raise FurpeError("no parameters given")
        return batch

    def complete(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fill missing blocks with their neutral values (a new dict)."""
        batch = self.check_params(params)
        if len(params) == len(self.blocks):
            return dict(params)
        device = next(iter(params.values())).device
        full = {name: blk.neutral(batch, dtype=torch.float32, device=device)
                for name, blk in self.blocks.items() if name not in params}
        full.update(params)
        return full

    def forward(  # type: ignore[override]
        self, params: dict[str, torch.Tensor], vertex_ids: np.ndarray | None = None
    ) -> BodyOutput:
        """Posed vertices and joints in the camera frame for a batch of parameters.

        ``vertex_ids`` restricts the output vertices to those indices (in that order); models
        that can skip the other vertices (Anny) are then much faster, which is what the fit's
        keypoint energy uses (see :class:`KeypointSampler`).
        """
        params = self.complete(params)
        if self.places_in_forward:
            verts, joints = self._forward(params, vertex_ids, placed=True)
            return BodyOutput(vertices=verts, joints=joints)
        verts, joints = self._forward(params, vertex_ids)
        rot = rotvec_to_rotmat(params["global_orient"][:, 0].to(verts.dtype))
        canon = torch.as_tensor(self.canonical_rotation, dtype=verts.dtype, device=verts.device)
        full = rot @ canon
        t = params["transl"].to(verts.dtype)[:, None]
        verts = verts @ full.transpose(1, 2) + t
        joints = joints @ full.transpose(1, 2) + t
        return BodyOutput(vertices=verts, joints=joints)

    def _forward(
        self, params: dict[str, torch.Tensor], vertex_ids: np.ndarray | None = None,
        placed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices (all, or ``vertex_ids``) and joints in the model's native frame, before
        global placement; with ``placed`` (models whose :attr:`places_in_forward` is True)
        in the camera frame, like :meth:`forward`."""
        raise NotImplementedError

    def keypoints(self, output: BodyOutput, convention: str) -> torch.Tensor:
        """Named keypoints of ``convention`` (B, K, 3) from a forward output."""
        if convention not in self.regressors:
            raise FurpeError(
                f"body model '{self.name}' has no correspondences for '{convention}'; "
                f"available: {sorted(self.regressors)}"
            )
        points = torch.cat([output.vertices, output.joints], 1)
        return apply_regressor(self.regressors[convention], points)


class KeypointSampler:
    """Keypoints of a few conventions from a forward pass restricted to the vertices their
    regressors use (about 1,100 of Anny's 13,718 for the MediaPipe conventions).

    Example::

        sampler = KeypointSampler(model, ["mediapipe_pose", "mediapipe_face"])  # model.regressors
        kps = sampler(params)          # {"mediapipe_pose": (B, 33, 3), ...}, camera frame
    """

    def __init__(self, model: BodyModel, conventions: Sequence[str],
                 regressors: Mapping[str, Regressor] | None = None) -> None:
        regressors = model.regressors if regressors is None else regressors
        missing = [c for c in conventions if c not in regressors]
        if missing:
            raise FurpeError(f"body model '{model.name}' has no correspondences for {missing}")
        V = model.num_vertices
        used = sorted({int(i) for c in conventions
                       for i in regressors[c].indices.reshape(-1) if i < V})
        self.model = model
        self.vertex_ids = np.asarray(used, dtype=np.int64)
        remap = np.full(V + len(model.joint_names), -1, dtype=np.int64)
        remap[self.vertex_ids] = np.arange(len(used))
        remap[V:] = len(used) + np.arange(len(model.joint_names))
        self.regressors = {
            c: Regressor(regressors[c].names, remap[regressors[c].indices], regressors[c].weights)
            for c in conventions
        }
        # All conventions as one regressor (rows padded to the widest with zero weights), so
        # that a call is one gather and one weighted sum whatever the number of conventions.
        width = max(r.indices.shape[1] for r in self.regressors.values())
        pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))  # noqa: E731
        self._indices = np.concatenate([pad(r.indices) for r in self.regressors.values()])
        self._weights = np.concatenate([pad(r.weights) for r in self.regressors.values()])
        self._sizes = [len(r.names) for r in self.regressors.values()]
        self._tensors: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _packed(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed indices (flat) and weights (K, n, 1) on ``like``'s device and dtype."""
        key = (str(like.device), like.dtype)
        if key not in self._tensors:
            self._tensors[key] = (
                torch.as_tensor(self._indices.reshape(-1), dtype=torch.long, device=like.device),
                torch.as_tensor(self._weights, dtype=like.dtype, device=like.device)[..., None])
        return self._tensors[key]

    def __call__(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(params, vertex_ids=self.vertex_ids)
        points = torch.cat([out.vertices, out.joints], 1)
        idx, w = self._packed(points)
        kps = (points[:, idx].view(points.shape[0], *w.shape[:2], 3) * w).sum(2)
        return dict(zip(self.regressors, kps.split(self._sizes, 1)))
