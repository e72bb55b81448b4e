"""Anny's rig: its bones, dense skinning weights and facial-action blend shapes.

Anny's forward (:meth:`furpe.bodymodels.anny_model.AnnyBodyModel._forward`) is linear blend
skinning of ``template + blendshapes . coefficients`` by the transforms of
``anny.get_bone_transforms`` (posed bone pose times the inverse rest bone pose). The
coefficients are the phenotype's (fixed per track: baked into the rest mesh) and the 52
facial actions (linear, ARKit names: the morph targets). The rest skeleton depends on the
phenotype only, so one skeleton serves every frame of a track.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel
from furpe.export.rig import RigSource, bone_rotations

#: Per arm: upper arm, forearm, wrist, middle finger base; side +1 = the person's left.
_ARMS = tuple(((f"upperarm01.{s}", f"lowerarm01.{s}", f"wrist.{s}", f"finger3-1.{s}"), side)
              for s, side in (("L", 1.0), ("R", -1.0)))


class AnnyRigSource(RigSource):
    """Rig data of an :class:`~furpe.bodymodels.anny_model.AnnyBodyModel` at one phenotype."""

    def __init__(self, model: BodyModel, shape: Mapping[str, np.ndarray]) -> None:
        super().__init__(model, shape)
        a = model.anny  # type: ignore[attr-defined]
        pheno = self.shape.get("phenotype")
        self._device = a.template_vertices.device
        pheno_t = (model.blocks["phenotype"].neutral(1) if pheno is None
                   else torch.as_tensor(pheno, dtype=torch.float32)[None])
        self.shape["phenotype"] = pheno_t[0].numpy()
        pheno_t = pheno_t.to(self._device)
        with torch.no_grad():
            # Phenotype blend-shape coefficients and rest bone orientations and heads.
            coeffs, orient, heads = model._rest_skeleton(pheno_t)  # type: ignore[attr-defined]
        rest = torch.eye(4, dtype=orient.dtype, device=orient.device).repeat(
            1, orient.shape[1], 1, 1)
        rest[..., :3, :3], rest[..., :3, 3] = orient, heads
        self._rest = rest
        # Anny's coefficient layout: [phenotype shapes, facial actions, local changes]; the
        # facial and local ones are zero at rest.
        nf, nl = len(a.facial_action_labels), 2 * len(a.local_change_labels)
        if coeffs.shape[1] + nf + nl != a.blendshapes.shape[0]:
            raise ValueError("unexpected Anny blend-shape layout")
        self._facial = slice(coeffs.shape[1], coeffs.shape[1] + nf)
        self._coeffs = torch.cat([coeffs[0], coeffs.new_zeros(nf + nl)])

    def native_rest(self) -> dict[str, object]:
        a = self.model.anny  # type: ignore[attr-defined]
        with torch.no_grad():
            verts = a.template_vertices + torch.einsum("cpd,c->pd", a.blendshapes, self._coeffs)
        return {
            "bone_names": self.model.joint_names,
            "parents": self.model.joint_parents,
            "rest_bones": self._rest[0].double().cpu().numpy(),
            "vertices": verts.double().cpu().numpy(),
            "weights": a.dense_vertex_bone_weights.double().cpu().numpy(),
            "morph_names": tuple(a.facial_action_labels),
            "morph_targets": a.blendshapes[self._facial].double().cpu().numpy(),
            "arms": _ARMS,
        }

    def skinning(self, params: dict[str, torch.Tensor]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self.model.anny  # type: ignore[attr-defined]
        batch = params["transl"].shape[0]
        pose = torch.eye(4, dtype=torch.float32).repeat(batch, len(self.model.joint_names), 1, 1)
        pose[:, :, :3, :3] = bone_rotations(self.model, params).to(torch.float32)
        transforms, bone_poses = a.get_bone_transforms(pose.to(self._device), self._rest)
        return (transforms.double().cpu().numpy(), params["facial_actions"].double().numpy(),
                bone_poses[:, :, :3, 3].double().cpu().numpy())
