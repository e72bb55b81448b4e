"""Anny (Apache-2.0 code, CC0 assets) behind the :class:`BodyModel` interface.

Anny's native frame is z up, the body faces -y and its left side is +x (metres, the root bone
at the pelvis). Its default rig has 104 bones; the jaw is not a bone but a facial action.

Parameter blocks:

* ``global_orient`` (rotation, 1) and ``transl`` (3): placement in the camera frame; ``transl``
  is the pelvis position.
* ``body_pose`` (rotation): local rotations of the body bones (spine, neck, head, legs, arms,
  wrists). Toe bones are kept at rest: no expert observes them.
* ``left_hand_pose`` / ``right_hand_pose`` (rotation, 19 each): the bones below each wrist
  (metacarpals and finger phalanges).
* ``eye_pose`` (rotation, 2): the eye bones.
* ``facial_actions`` (bounded [0, 1], 52): ARKit-style facial actions (``jawOpen`` etc.).
* ``phenotype`` (bounded [0, 1], 6): gender, age, muscle, weight, height, proportions.

Rotations are in Anny's ``local-ref`` parameterization: zero is the rest pose.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from furpe.bodymodels.anny_phenotype import PhenotypeCoefficients
from furpe.bodymodels.base import BodyModel, HandBones, ParamBlock, Regressor
from furpe.bodymodels.correspondences import load_regressors, pack_rows
from furpe.core.files import atomic_write
from furpe.core.rotations import rotvec_to_rotmat
from furpe.core.vocab import DETAIL_PARTS

#: Native (z up, facing -y) to camera-facing frame (y down, facing -z).
ANNY_CANONICAL_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

_EXCLUDED_PREFIXES = ("toe", "eye.", "root")


def default_cache_dir() -> Path:
    """Where Anny's one-off cache lives: ``$ANNY_CACHE_DIR``, else ``$XDG_CACHE_HOME/furpe/anny``."""
    if os.environ.get("ANNY_CACHE_DIR"):
        return Path(os.environ["ANNY_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "furpe" / "anny"


_LOAD_LOCK = threading.Lock()


def _load_anny(cache_dir: Path):
    import anny
    import anny.paths

    cache_dir.mkdir(parents=True, exist_ok=True)
    with _LOAD_LOCK:
        anny.paths.set_anny_cache_path(cache_dir)
        model = anny.Anny(facial_actions="all", skinning_method="lbs")
    return model.to(torch.float32)


def _descendants(parents: list[int], root: int) -> list[int]:
    out, frontier = [], [root]
    while frontier:
        nxt = [i for i, p in enumerate(parents) if p in frontier]
        out.extend(nxt)
        frontier = nxt
    return sorted(out)


class AnnyBodyModel(BodyModel):
    """The Anny body model (default topology, float32, linear blend skinning)."""

    name = "anny"
    places_in_forward = True

    def __init__(self, cache_dir: Path | None = None) -> None:
        super().__init__()
        self._subset_cache: dict[tuple[bytes, str], tuple[torch.Tensor, ...]] = {}
        self._rest_cache: tuple[tuple[bytes, str], tuple] | None = None
        #: Phenotype part of the rest vertices per vertex set, for the cached phenotype.
        self._rest_vertex_cache: dict[bytes | None, torch.Tensor] = {}
        #: Constants of the forward pass per device (:meth:`_chain_constants`).
        self._chain_cache: dict[str, dict] = {}
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.anny = _load_anny(cache_dir)
        if (self.anny.pose_parameterization != "local-ref"
                or self.anny.reference_bone_orientations is None):
            raise RuntimeError("furpe's Anny forward pass needs the 'local-ref' pose "
                               "parameterization with reference orientations")
        self._phenotype_coefficients = PhenotypeCoefficients(self.anny)
        labels: list[str] = list(self.anny.bone_labels)
        parents: list[int] = [int(p) for p in self.anny.bone_parents]
        self.joint_names = tuple(labels)
        self.joint_parents = tuple(parents)
        self.canonical_rotation = ANNY_CANONICAL_ROTATION

        hands = {
            side: _descendants(parents, labels.index(f"wrist.{s}"))
            for side, s in (("left_hand", "L"), ("right_hand", "R"))
        }
        in_hand = set(hands["left_hand"]) | set(hands["right_hand"])
        body = [
            i for i, n in enumerate(labels)
            if i not in in_hand and not n.startswith(_EXCLUDED_PREFIXES)
        ]
        eyes = [labels.index("eye.L"), labels.index("eye.R")]
        self._bone_index = {
            "body_pose": body, "left_hand_pose": hands["left_hand"],
            "right_hand_pose": hands["right_hand"], "eye_pose": eyes,
        }
        facial = tuple(self.anny.facial_action_labels)
        pheno = tuple(self.anny.phenotype_labels)
        self.blocks = {
            "global_orient": ParamBlock("global_orient", "rotation", 1, "global", ("root",)),
            "transl": ParamBlock("transl", "linear", 3, "global", ("x", "y", "z")),
            "body_pose": ParamBlock("body_pose", "rotation", len(body), "body",
                                    tuple(labels[i] for i in body)),
            "left_hand_pose": ParamBlock("left_hand_pose", "rotation", len(hands["left_hand"]),
                                         "left_hand", tuple(labels[i] for i in hands["left_hand"])),
            "right_hand_pose": ParamBlock("right_hand_pose", "rotation",
                                          len(hands["right_hand"]), "right_hand",
                                          tuple(labels[i] for i in hands["right_hand"])),
            "eye_pose": ParamBlock("eye_pose", "rotation", 2, "face", ("eye.L", "eye.R")),
            "facial_actions": ParamBlock("facial_actions", "bounded", len(facial), "face", facial,
                                         default=tuple(0.0 for _ in facial)),
            "phenotype": ParamBlock("phenotype", "bounded", len(pheno), "shape", pheno,
                                    default=tuple(0.5 for _ in pheno)),
        }
        self.faces = self.anny.get_triangular_faces().cpu().numpy().astype(np.int64)
        self._derived = _derived_data(self, cache_dir / _DERIVED_NAME, labels)
        self.part_vertices = {p: self._derived[f"part_{p}"] for p in _PART_NAMES}
        self.regressors = load_regressors(self)

    def hand_bones(self, block: str) -> HandBones | None:
        """Anny's hand bones: ``finger1`` is the thumb, ``finger2`` the index, ``finger5``
        the little finger; metacarpals are not finger bones."""
        side = {"left_hand_pose": "L", "right_hand_pose": "R"}.get(block)
        if side is None:
            return None
        rows = tuple(
            (f"{lab.split('-')[0]}-1.{side}", f"{lab.split('-')[0]}-2.{side}")
            if lab.startswith("finger") else None
            for lab in self.blocks[block].labels)
        return HandBones(f"wrist.{side}", f"finger2-1.{side}", f"finger5-1.{side}", rows)

    def own_regressors(self) -> dict[str, Regressor]:
        """Anny's own COCO (+ 6 feet keypoints) regressor, made sparse, as ``"coco"``."""
        d = self._derived
        return {"coco": Regressor(tuple(str(n) for n in d["coco_names"]), d["coco_indices"],
                                  d["coco_weights"])}

    @property
    def num_vertices(self) -> int:
        return int(self.anny.template_vertices.shape[0])

    def _forward(
        self, params: dict[str, torch.Tensor], vertex_ids: np.ndarray | None = None,
        placed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anny's forward pass (cached rest bone orientations, dense LBS), restricted to
        ``vertex_ids`` when given: blend shapes and skinning then touch only those vertices.
        With ``placed`` the output is in the camera frame (the global placement is the
        kinematic chain's first transform), else in Anny's native frame.

        This follows ``anny.models.rigged_model.RiggedModel.forward`` step by step (checked
        against it in the tests), so that a keypoint-only pass costs a fraction of a full one.
        """
        f32 = lambda x: x if x.dtype == torch.float32 else x.float()  # noqa: E731
        transl = f32(params["transl"])
        batch, device = transl.shape[0], transl.device
        nbones = len(self.joint_names)
        const = self._chain_constants(device)
        # The pose rotations D of the bones (and the global one, last), in one call.
        blocks = [f32(params[b]) for b in self._bone_index]
        if placed:
            blocks.append(f32(params["global_orient"][:, :1]))
        rotvecs = torch.zeros(batch, nbones + 1, 3, device=device).index_copy(
            1, const["bone_rows" if placed else "bone_rows_unplaced"], torch.cat(blocks, 1))
        rest, (K_offset, P_inv) = self._rest_state(
            f32(params["phenotype"]), f32(params["facial_actions"]), vertex_ids)
        # Anny's 'local-ref' forward kinematics (anny.utils.kinematics.forward_kinematic) in
        # homogeneous 4x4 form: W_c = W_p K_c with K_c = [U_p^T D_c U_c | U_p^T A_p (h_c -
        # h_p)], the root's K_0 = [U_0^T D_0 U_0 | 0] being its world pose; U are the
        # reference orientations, [R | h] the rest poses, A_p = U_p R_p^T (A_0 = I).
        D = rotvec_to_rotmat(rotvecs)
        K = torch.nn.functional.pad(const["Ut_parent"] @ D[:, :nbones] @ const["U"],
                                    (0, 1, 0, 1)) + K_offset
        # Two extra entries: the placement [G | t] (the root's "parent"; G the global
        # rotation then the native-to-camera one), whose own parent is the identity.
        if placed:
            G = torch.cat([D[:, nbones:] @ const["canon"], transl[:, None, :, None]], -1)
            G = torch.nn.functional.pad(G, (0, 0, 0, 1)) + const["e33"]
        else:
            G = const["eye4"].expand(batch, 1, 4, 4)
        # The chain by pointer jumping: after step k every entry holds the product of the
        # 2^k transforms above it, so ceil(log2(depth)) batched steps replace one per level.
        W = torch.cat([K, G, const["eye4"].expand(batch, 1, 4, 4)], 1)
        for anc in const["jumps"]:
            W = W[:, anc] @ W
        W = W[:, :nbones]
        # Skinning transforms T_c = W_c P_c^-1, blended per vertex, applied to the
        # homogeneous rest vertices.
        T = (W @ P_inv)[..., :3, :]
        weights = self._vertex_data(vertex_ids)[2]
        blend = (weights @ T.reshape(batch, nbones, 12)).view(batch, weights.shape[0], 3, 4)
        verts = (blend * rest[:, :, None, :]).sum(-1)
        return verts, W[..., :3, 3]

    def _chain_constants(self, device: torch.device) -> dict:
        """Constants of the forward pass on ``device``: reference orientations ``U``
        (J, 3, 3) and their parents' transposed ``Ut_parent``, the rows of the pose blocks
        in the rotation batch (``bone_rows``, the global rotation last), the native-to-camera
        rotation, homogeneous helpers and the ancestor index of each pointer-jumping step
        (``jumps``, J + 2 entries: J the placement, parent of the root, and J + 1 the
        identity, parent of the placement and of itself)."""
        key = str(device)
        if key not in self._chain_cache:
            J = len(self.joint_parents)
            parent = torch.as_tensor([p if p >= 0 else 0 for p in self.joint_parents])
            U = self.anny.reference_bone_orientations.to(device=device, dtype=torch.float32)
            anc = np.array([p if p >= 0 else J for p in self.joint_parents] + [J + 1, J + 1])
            jumps = []
            while (anc != J + 1).any():
                jumps.append(torch.as_tensor(anc, device=device))
                anc = anc[anc]
            rows = [i for idx in self._bone_index.values() for i in idx] + [J]
            e33 = torch.zeros(4, 4, device=device)
            e33[3, 3] = 1.0
            self._chain_cache[key] = {
                "U": U, "Ut_parent": U[parent.to(device)].transpose(-1, -2),
                "bone_rows": torch.as_tensor(rows, device=device),
                "bone_rows_unplaced": torch.as_tensor(rows[:-1], device=device), "jumps": jumps,
                "canon": torch.as_tensor(self.canonical_rotation, dtype=torch.float32,
                                         device=device),
                "e33": e33, "eye4": torch.eye(4, device=device)}
        return self._chain_cache[key]

    def _rest_state(
        self, pheno: torch.Tensor, facial: torch.Tensor, vertex_ids: np.ndarray | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Homogeneous rest vertices (all, or ``vertex_ids``; (B, P, 4)) and the rest
        skeleton as :meth:`_chain_offsets` gives it.

        The rest skeleton depends on the phenotype only (facial actions move no bone; checked
        in the tests). When the phenotype needs no gradient, the skeleton and the phenotype's
        part of the rest vertices are computed once and reused until the phenotype changes,
        which is what the fit's pose-only stages rely on; the facial actions' blend shapes
        are added on each call.
        """
        frozen = not (pheno.requires_grad and torch.is_grad_enabled())
        key = (pheno.detach().cpu().numpy().tobytes(), str(pheno.device)) if frozen else None
        if frozen and self._rest_cache is not None and self._rest_cache[0] == key:
            shape_coeffs, skeleton = self._rest_cache[1]
        else:
            shape_coeffs, R, h = self._rest_skeleton(pheno)
            skeleton = self._chain_offsets(R, h)
            if frozen:
                self._rest_cache = (key, (shape_coeffs.detach(),
                                          tuple(x.detach() for x in skeleton)))
                self._rest_vertex_cache.clear()
        template, shapes, _ = self._vertex_data(vertex_ids)
        # Anny's coefficient layout: [phenotype shapes, facial actions, local changes]; the
        # local changes are zero here, so their blend shapes are skipped.
        ns, nf = self._num_phenotype_shapes, facial.shape[1]
        P = template.shape[0]
        vkey = None if vertex_ids is None else np.asarray(vertex_ids, dtype=np.int64).tobytes()
        base = self._rest_vertex_cache.get(vkey) if frozen else None
        if base is None:
            base = torch.nn.functional.pad(
                template[None] + (shape_coeffs @ shapes[:ns]).view(-1, P, 3), (0, 1), value=1.0)
            if frozen:
                if len(self._rest_vertex_cache) > 8:
                    self._rest_vertex_cache.clear()
                self._rest_vertex_cache[vkey] = base
        rest = base + torch.nn.functional.pad((facial @ shapes[ns:ns + nf]).view(-1, P, 3),
                                              (0, 1))
        return rest, skeleton

    def _chain_offsets(self, R: torch.Tensor, h: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """From rest orientations R (B, J, 3, 3) and heads h (B, J, 3): the constant part
        of each bone's chain transform, ``[0 | U_p^T A_p (h_c - h_p)]`` with 1 in the corner
        (B, J, 4, 4), and the inverse rest poses ``P^-1 = [R^T | -R^T h]`` (B, J, 4, 4)
        (see :meth:`_forward`)."""
        const = self._chain_constants(R.device)
        parent = [p if p >= 0 else 0 for p in self.joint_parents]
        A = const["U"][1:] @ R[:, 1:].transpose(-1, -2)
        A = torch.cat([torch.eye(3, dtype=R.dtype, device=R.device).expand(R.shape[0], 1, 3, 3),
                       A], 1)
        offsets = const["Ut_parent"] @ (A[:, parent] @ (h - h[:, parent])[..., None])
        pad = torch.nn.functional.pad
        K_offset = pad(offsets, (3, 0, 0, 1)) + const["e33"]
        Rt = R.transpose(-1, -2)
        P_inv = pad(torch.cat([Rt, -(Rt @ h[..., None])], -1), (0, 0, 0, 1)) + const["e33"]
        return K_offset, P_inv

    @property
    def _num_phenotype_shapes(self) -> int:
        a = self.anny
        return (a.blendshapes.shape[0] - len(a.facial_action_labels)
                - 2 * len(a.local_change_labels))

    def _rest_skeleton(self, pheno: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Phenotype blend-shape coefficients (B, C) and the rest orientations (B, J, 3, 3)
        and heads (B, J, 3) of the bones, as Anny's ``get_rest_model`` makes them."""
        import roma

        a = self.anny
        ns = self._num_phenotype_shapes
        coeffs = self._phenotype_coefficients(pheno)
        # Bone heads and orientations are linear in the coefficients; the orientations are
        # projected back onto rotations.
        heads = a.template_bone_heads[None] + torch.einsum(
            "ba,akd->bkd", coeffs, a.bone_heads_blendshapes[:ns])
        M = a.bone_template_orientation_matrices[None] + torch.einsum(
            "ba,akij->bkij", coeffs, a.bone_orientation_blendshapes[:ns])
        orient = roma.special_procrustes(M)
        if a.rest_orientation_refiner is not None:
            orient = a.rest_orientation_refiner(orient, heads)
        if a.root_identity_orientation:
            eye = torch.eye(3, dtype=orient.dtype, device=orient.device)
            orient = torch.cat([eye.expand(orient.shape[0], 1, 3, 3), orient[:, 1:]], 1)
        return coeffs, orient, heads

    def _vertex_data(self, vertex_ids: np.ndarray | None):
        """Template (P, 3), blend shapes flattened (C, P * 3) and dense skinning weights
        (P, J) of all or some vertices (cached per vertex set and device)."""
        a = self.anny
        ids = None if vertex_ids is None else np.asarray(vertex_ids, dtype=np.int64)
        key = (None if ids is None else ids.tobytes(), str(a.template_vertices.device))
        data = self._subset_cache.get(key)
        if data is None:
            if ids is None:
                data = (a.template_vertices, a.blendshapes.flatten(1),
                        a.dense_vertex_bone_weights)
            else:
                t = torch.as_tensor(ids, device=a.template_vertices.device)
                data = (a.template_vertices[t], a.blendshapes[:, t].flatten(1).contiguous(),
                        a.dense_vertex_bone_weights[t])
            if len(self._subset_cache) > 8:
                self._subset_cache.clear()
            self._subset_cache[key] = data
        return data

    def _make_part_vertices(self, labels: list[str]) -> dict[str, np.ndarray]:
        """Hands from Anny's segmentation labels, the face as the front of the head surface.

        The face is the vertices of Anny's ``head`` and ``eye_front`` segments that lie in front
        of the head bone (native -y) and above a plane 6 cm below its head (the chin). Everything else (back
        of the head, inner eyes and mouth, torso, limbs) is ``body``; the four sets partition
        the vertices.
        """
        from anny.face_segmentation import get_face_segmentation_mask

        faces = self.anny.faces.cpu().numpy()
        nv = self.num_vertices

        def verts_of(seg_labels: list[str]) -> np.ndarray:
            mask = get_face_segmentation_mask(self.anny, seg_labels)
            mask = np.asarray(mask)
            sel = np.zeros(nv, dtype=bool)
            sel[np.unique(faces[mask].reshape(-1))] = True
            return sel

        left = verts_of(["hand.L"])
        right = verts_of(["hand.R"]) & ~left
        with torch.no_grad():
            out = self.anny(pose_parameters=None)
        rest = out["vertices"][0].cpu().numpy()
        head_pos = out["bone_poses"][0, labels.index("head"), :3, 3].cpu().numpy()
        head = verts_of(["head", "eye_front.L", "eye_front.R"]) & ~left & ~right
        # The head bone sits at mouth height: reach 6 cm below it to include jaw and chin.
        front = (rest[:, 1] < head_pos[1]) & (rest[:, 2] > head_pos[2] - 0.06)
        face = head & front
        body = ~(left | right | face)
        return {
            "left_hand": np.flatnonzero(left),
            "right_hand": np.flatnonzero(right),
            "face": np.flatnonzero(face),
            "body": np.flatnonzero(body),
        }


_PART_NAMES = (*DETAIL_PARTS, "body")
_DERIVED_NAME = "furpe_derived_v1.npz"


def _derived_data(model: AnnyBodyModel, path: Path, labels: list[str]) -> dict[str, np.ndarray]:
    """Part vertex sets and Anny's COCO regressor (dense -> sparse): computed once (about
    0.5 s) and kept next to Anny's cache, keyed by the anny version and the mesh size."""
    import importlib.metadata

    key = f"{importlib.metadata.version('anny')}:{model.num_vertices}:{len(labels)}"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) == key:
                    return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild
    parts = model._make_part_vertices(labels)
    coco = _anny_coco(model)
    data = {"key": np.array(key), **{f"part_{p}": parts[p] for p in _PART_NAMES},
            "coco_names": np.array(coco.names), "coco_indices": coco.indices,
            "coco_weights": coco.weights}
    try:
        with atomic_write(path) as fh:
            np.savez(fh, **data)
    except OSError:
        pass  # a read-only cache only costs time
    return data


def _anny_coco(model: AnnyBodyModel) -> Regressor:
    """Anny's own COCO(-WholeBody feet) keypoint regressor, made sparse."""
    import anny

    kr = anny.KeypointsRegressor.coco(model.anny)
    dense = kr.regression_weights.detach().cpu().numpy()
    rows = []
    for k in range(dense.shape[0]):
        nz = np.flatnonzero(dense[k] > 1e-6)
        rows.append({int(i): float(dense[k, i]) for i in nz})
    return pack_rows(list(kr.labels), rows)


_CACHE: dict[tuple[str, str], AnnyBodyModel] = {}
_CACHE_LOCK = threading.Lock()


def load_anny(model_path: str | Path | None = None, device: str | torch.device = "cpu",
              cache_dir: Path | None = None) -> AnnyBodyModel:
    """A process-wide shared :class:`AnnyBodyModel` per device (loaded once per process; a
    model on another device is a copy, so moving one never moves another). ``model_path``
    is not used: Anny's data ships in its wheel."""
    import copy

    key = str(cache_dir or default_cache_dir())
    dev = str(torch.device(device))
    with _CACHE_LOCK:
        if (key, "cpu") not in _CACHE:
            _CACHE[(key, "cpu")] = AnnyBodyModel(cache_dir)
        if (key, dev) not in _CACHE:
            _CACHE[(key, dev)] = copy.deepcopy(_CACHE[(key, "cpu")]).to(dev)
        return _CACHE[(key, dev)]
