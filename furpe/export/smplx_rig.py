"""SMPL-X's rig, from the arrays of the loaded model (the user's own model files).

SMPL-X's forward (:meth:`furpe.bodymodels.smplx_model.SMPLXBodyModel._forward`) is
``smplx.lbs.lbs``: the template plus shape (``betas``) and expression blend shapes, plus
pose-corrective blend shapes, skinned by the rigid transforms of the kinematic tree whose
rest joints the joint regressor takes from the shaped template; the native result is then
shifted so that the pelvis is at the origin.

The rig: the template at the track's betas (pelvis at the origin) as the rest mesh, bones
with identity rest orientations at the regressed joints, the expression directions as morph
targets. The joints also move a little with the expression (the regressor reads face
vertices): the per-frame bone matrices include that, so skinning stays exact. Pose
correctives (``posedirs``) are not exported (see :mod:`furpe.export.rig`).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel
from furpe.export.rig import RigSource, bone_rotations

_ARMS = tuple(((f"{s}_shoulder", f"{s}_elbow", f"{s}_wrist", f"{s}_middle1"), side)
              for s, side in (("left", 1.0), ("right", -1.0)))


def _translation(offsets: np.ndarray) -> np.ndarray:
    """(..., 4, 4) translations by (..., 3) offsets."""
    out = np.broadcast_to(np.eye(4), offsets.shape[:-1] + (4, 4)).copy()
    out[..., :3, 3] = offsets
    return out


class SMPLXRigSource(RigSource):
    """Rig data of a :class:`~furpe.bodymodels.smplx_model.SMPLXBodyModel` at one ``betas``."""

    def __init__(self, model: BodyModel, shape: Mapping[str, np.ndarray]) -> None:
        super().__init__(model, shape)
        m = model
        self._nb = int(m.num_betas)  # type: ignore[attr-defined]
        dirs = m.shapedirs.detach().cpu().double().numpy()  # type: ignore[attr-defined]
        betas = self.shape.get("betas", np.zeros(self._nb, np.float32)).astype(np.float64)
        if self._nb:
            self.shape["betas"] = betas.astype(np.float32)
        template = m.v_template.detach().cpu().double().numpy()  # type: ignore[attr-defined]
        regressor = m.J_regressor  # type: ignore[attr-defined]
        self._regressor = regressor.detach().cpu().double().numpy()
        self._shaped = template + dirs[..., :self._nb] @ betas
        self._expr_dirs = dirs[..., self._nb:]  # (V, 3, E)
        self._joints0 = self._regressor @ self._shaped  # (J, 3) at a neutral face
        # How the joints move with the expression: (J, 3, E).
        self._joint_expr = np.einsum("jv,vde->jde", self._regressor, self._expr_dirs)
        self._pelvis0 = self._joints0[0].copy()

    def native_rest(self) -> dict[str, object]:
        m = self.model
        return {
            "bone_names": m.joint_names,
            "parents": m.joint_parents,
            "rest_bones": _translation(self._joints0 - self._pelvis0),
            "vertices": self._shaped - self._pelvis0,
            "weights": m.lbs_weights.detach().cpu().double().numpy(),  # type: ignore[attr-defined]
            "morph_names": tuple(m.blocks["expression"].labels) if "expression" in m.blocks
            else (),
            "morph_targets": np.transpose(self._expr_dirs, (2, 0, 1)),
            "arms": _ARMS,
        }

    def skinning(self, params: dict[str, torch.Tensor]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from smplx.lbs import batch_rigid_transform

        batch = params["transl"].shape[0]
        expr = (params["expression"].double().numpy() if "expression" in params
                else np.zeros((batch, 0)))
        joints = self._joints0[None] + np.einsum("jde,be->bjd", self._joint_expr, expr)
        rotations = bone_rotations(self.model, params)
        parents = self.model.parents.detach().cpu()  # type: ignore[attr-defined]
        posed, rel = batch_rigid_transform(rotations.cpu(), torch.as_tensor(joints), parents,
                                           dtype=torch.float64)
        posed, rel = posed.numpy(), rel.numpy()
        pelvis = posed[:, 0]  # the root does not rotate: the pelvis stays at its rest place
        # native point = lbs point - pelvis; rig rest point = lbs rest point - rest pelvis.
        transforms = (_translation(-pelvis)[:, None] @ rel
                      @ _translation(self._pelvis0)[None, None])
        return transforms, expr, posed - pelvis[:, None]
