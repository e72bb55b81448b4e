"""SMPL-X as a :class:`~furpe.bodymodels.base.BodyModel`, from the user's own model files.

SMPL-X is licence-gated: furpe never downloads or ships it. The user registers at
https://smpl-x.is.tue.mpg.de, downloads the model and passes its folder
(``--body-model smplx --model-path DIR``); the file is ``DIR/smplx/SMPLX_NEUTRAL.npz`` (or
``.pkl``, or another gender). The arrays are loaded with the ``smplx`` package
(:class:`smplx.SMPLX`), copied into this module's buffers, and posed with ``smplx.lbs.lbs``.
``smplx``'s own ``forward`` is not used: it appends vertices at fixed SMPL-X vertex ids (and
dynamic face-contour landmarks) that we express as :class:`Regressor` rows instead.

Decisions:

* **Hand pose is relative to the flat open hand** (what smplx calls ``flat_hand_mean=True``):
  zero hand pose is the template's flat hand, matching Anny where zero is the rest pose. Hand
  poses given relative to SMPL-X's mean (relaxed) hand, as smplx's default
  ``flat_hand_mean=False`` does, convert by adding :attr:`SMPLXBodyModel.hands_mean`.
* **Global rotation is about the pelvis.** :meth:`SMPLXBodyModel._forward` subtracts the pelvis
  joint (which depends on shape) so the native pelvis is at the origin; the base class then
  rotates about it, and ``transl`` is the pelvis position in the camera frame.
* Native SMPL-X frame: y up, facing +z, the subject's left at +x. ``canonical_rotation =
  diag(1, -1, -1)`` turns that into an upright person facing the camera (x right, y down,
  z away from the camera): the subject's left stays at +x (image right).
* Eye rotations are fixed at zero unless ``eye_pose=True`` (weakly observed, free otherwise).

Points that ``smplx`` takes from fixed vertex ids (fingertips, toes, heels, ears) use
``smplx.vertex_ids['smplx']`` when the model has the real 10,475 vertices. For other meshes
(the synthetic test model) each falls back to the extreme vertex, in a fixed direction, among
the vertices whose dominant skinning joint is the corresponding joint (fingertip: furthest
along the last phalanx among finger-3 vertices; toes: most forward of the foot, inner/outer;
heel: most backward-down of ankle+foot; ear: most lateral of the head).

Face landmarks (``"ibug68"``, iBUG-68 order, names ``ibug_00`` ...): the 17
contour points (the frontal entry, index 0, of the dynamic contour table) followed by the 51
static landmarks (iBUG 17-67), each a barycentric row over one triangle. Without a contour
table only the 51 static ones (``ibug_17`` ...) are given.

MediaPipe BlazePose (``"mediapipe_pose"``, 33 points, MediaPipe order) from SMPL-X:

=================  ============================================================
MediaPipe          SMPL-X
=================  ============================================================
nose               face landmark iBUG 30 (nose tip)
left_eye_inner     iBUG 42 (left eye inner corner)
left_eye           mean of iBUG 42-47 (left eyelid contour)
left_eye_outer     iBUG 45
right_eye_inner    iBUG 39
right_eye          mean of iBUG 36-41
right_eye_outer    iBUG 36
left/right_ear     vertex ``lear``/``rear`` (fallback: most lateral head vertex)
mouth_left/right   iBUG 54 / iBUG 48 (mouth corners)
shoulder/elbow/    joints left/right_shoulder, _elbow, _wrist
wrist
left/right_pinky   joint *_pinky1 (knuckle)
left/right_index   joint *_index1 (knuckle)
left/right_thumb   joint *_thumb2
left/right_hip     joints *_hip (SMPL-X hip joints sit deeper and lower than MediaPipe's)
knee/ankle         joints *_knee, *_ankle
left/right_heel    vertex ``LHeel``/``RHeel``
left/right_foot_   vertex ``LBigToe``/``RBigToe``
index
=================  ============================================================

MediaPipe hands (``"mediapipe_hand_left"``/``"mediapipe_hand_right"``, the subject's left and
right hands, 21 points, MediaPipe order): wrist = joint *_wrist; thumb_cmc/mcp/ip = *_thumb1/2/3;
{index_finger, middle_finger, ring_finger, pinky}_mcp/pip/dip = *_{index,middle,ring,pinky}1/2/3;
tips = the fingertip vertices (``lthumb``, ``lindex``, ...).

``"smplx_joints"`` gives the 55 kinematic joints. ``"mediapipe_face"`` is not provided here.

Part vertices (every vertex in exactly one part), by the dominant skinning weight at rest:
``left_hand``/``right_hand`` = dominant joint is that wrist or one of its fingers; ``face`` =
dominant joint is the jaw or an eye, or it is the head and the vertex is in front of the head
joint (native z greater than the head joint's); ``body`` = the rest.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel, HandBones, ParamBlock, Regressor
from furpe.core.errors import FurpeError, SetupError
from furpe.core.rotations import rotvec_to_rotmat
from furpe.core.vocab import IBUG68, MEDIAPIPE_HAND, MEDIAPIPE_POSE, PARTS

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "jaw", "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2",
    "left_middle3", "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2",
    "left_ring3", "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2",
    "right_middle3", "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1",
    "right_ring2", "right_ring3", "right_thumb1", "right_thumb2", "right_thumb3",
)
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)
#: Vertex count of the real SMPL-X mesh (the one ``smplx.vertex_ids['smplx']`` refers to).
SMPLX_NUM_VERTICES = 10475
NUM_JOINTS = 55
_J = {name: j for j, name in enumerate(SMPLX_JOINT_NAMES)}
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")

_GENDERS = ("neutral", "male", "female")
_LICENCE_HINT = (
    "SMPL-X is licence-gated: obtain it yourself from its authors at "
    "https://smpl-x.is.tue.mpg.de (register, accept the licence, download the model) and pass "
    "the folder that contains 'smplx/'. furpe never downloads it."
)

# A row of a regressor: {point index: weight}.
_Row = dict[int, float]


def find_smplx_file(model_path: Path, gender: str = "neutral") -> Path:
    """The SMPL-X model file for ``gender`` under ``model_path`` (or ``model_path`` itself).

    Looks for ``smplx/SMPLX_<GENDER>.npz`` then ``.pkl``, also directly in ``model_path``.
    Raises :class:`FurpeError` naming the expected path when nothing is found.
    """
    model_path = Path(model_path).expanduser()
    if gender not in _GENDERS:
        raise FurpeError(f"unknown SMPL-X gender '{gender}'; expected one of {list(_GENDERS)}")
    stem = f"SMPLX_{gender.upper()}"
    expected = model_path / "smplx" / f"{stem}.npz"
    if model_path.is_file():
        return model_path
    if not model_path.is_dir():
        raise FurpeError(
            f"SMPL-X model folder '{model_path}' does not exist; expected the model file "
            f"'{expected}'. {_LICENCE_HINT}"
        )
    for folder in (model_path / "smplx", model_path):
        for ext in (".npz", ".pkl"):
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    raise FurpeError(
        f"SMPL-X model file not found: expected '{expected}' (or '{stem}.pkl'). "
        f"{_LICENCE_HINT}"
    )


def _load_smplx(path: Path, gender: str, num_betas: int, num_expression: int):
    """Load ``path`` with :class:`smplx.SMPLX`; layout errors become :class:`FurpeError`."""
    import smplx

    kwargs = dict(
        gender=gender, num_betas=num_betas, num_expression_coeffs=num_expression,
        # flat_hand_mean=False only so that smplx keeps the file's hand mean for
        # ``hands_mean``: our forward never adds it (flat-hand convention).
        use_pca=False, flat_hand_mean=False, batch_size=1, dtype=torch.float32,
        ext=path.suffix.lstrip(".") or "npz",
    )
    if kwargs["ext"] not in ("npz", "pkl"):
        raise FurpeError(f"SMPL-X model file '{path}' must be a .npz or .pkl file")
    error: Exception | None = None
    for contour in (True, False):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints layout warnings
                return smplx.SMPLX(str(path), use_face_contour=contour, **kwargs)
        except AttributeError as exc:  # a missing key of the model file
            error = exc
            if "dynamic_lmk" not in str(exc):
                break
        except Exception as exc:  # noqa: BLE001 - unreadable or malformed file
            error = exc
            break
    raise FurpeError(f"'{path}' is not a valid SMPL-X model file: {error}") from error


class SMPLXBodyModel(BodyModel):
    """SMPL-X from the user's model folder; see the module docstring for the conventions.

    Args:
        model_path: the folder holding ``smplx/SMPLX_<GENDER>.npz`` (or the file itself).
        gender: "neutral", "male" or "female".
        num_betas: shape coefficients (at most what the file has: 300 or 10).
        num_expression: expression coefficients (at most what the file has: 100 or 10).
        eye_pose: add ``leye_pose``/``reye_pose`` blocks (otherwise the eyes stay at rest).
    """

    name = "smplx"

    def __init__(
        self,
        model_path: Path,
        gender: str = "neutral",
        num_betas: int = 10,
        num_expression: int = 10,
        eye_pose: bool = False,
    ) -> None:
        super().__init__()
        self.model_file = find_smplx_file(model_path, gender)
        src = _load_smplx(self.model_file, gender, num_betas, num_expression)

        v_template = src.v_template.detach().float()
        n_verts = v_template.shape[0]
        faces = np.asarray(src.faces, dtype=np.int64)
        _check_layout(src, n_verts, faces, self.model_file)
        self.num_betas = int(src.num_betas)
        self.num_expression = int(src.num_expression_coeffs)
        if (self.num_betas, self.num_expression) != (num_betas, num_expression):
            warnings.warn(
                f"{self.model_file} provides {self.num_betas} shape and {self.num_expression} "
                f"expression coefficients (asked for {num_betas} and {num_expression})",
                stacklevel=2,
            )

        self.register_buffer("v_template", v_template)
        # smplx keeps 10 expression directions in the compact (v1.0) layout whatever it was
        # asked for, hence the slice.
        expr_dirs = src.expr_dirs[..., : self.num_expression]
        self.register_buffer(
            "shapedirs", torch.cat([src.shapedirs, expr_dirs], -1).detach().float()
        )
        self.register_buffer("posedirs", src.posedirs.detach().float())
        self.register_buffer("J_regressor", src.J_regressor.detach().float())
        self.register_buffer("lbs_weights", src.lbs_weights.detach().float())
        self.register_buffer("parents", src.parents.detach().clone().long())
        self.faces = faces
        self.joint_names = SMPLX_JOINT_NAMES
        self.joint_parents = SMPLX_PARENTS
        self.canonical_rotation = np.diag([1.0, -1.0, -1.0])
        #: The file's mean (relaxed) hand pose, (15, 3) per hand block. Our hand blocks are
        #: relative to the flat hand; add this to convert from "relative to the mean".
        self.hands_mean = {
            "left_hand_pose": _np(src.left_hand_mean).reshape(15, 3).astype(np.float32),
            "right_hand_pose": _np(src.right_hand_mean).reshape(15, 3).astype(np.float32),
        }
        self.blocks = self._make_blocks(eye_pose)

        verts_np = v_template.numpy().astype(np.float64)
        rest_joints = self.J_regressor.numpy().astype(np.float64) @ verts_np
        dominant = self.lbs_weights.numpy().argmax(1)
        self.part_vertices = _part_vertices(verts_np, rest_joints, dominant)
        landmarks = _face_landmark_rows(src, faces)
        self.regressors = _make_regressors(verts_np, rest_joints, dominant, landmarks)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def hand_bones(self, block: str) -> HandBones | None:
        """SMPL-X's hand joints: ``<side>_<finger><1..3>``; every row is a finger bone."""
        side = {"left_hand_pose": "left", "right_hand_pose": "right"}.get(block)
        if side is None:
            return None
        rows = tuple((f"{lab[:-1]}1", f"{lab[:-1]}2") for lab in self.blocks[block].labels)
        return HandBones(f"{side}_wrist", f"{side}_index1", f"{side}_pinky1", rows)

    def _make_blocks(self, eye_pose: bool) -> dict[str, ParamBlock]:
        names = SMPLX_JOINT_NAMES
        blocks = [
            ParamBlock("global_orient", "rotation", 1, "global", ("pelvis",)),
            ParamBlock("transl", "linear", 3, "global", ("x", "y", "z")),
            ParamBlock("body_pose", "rotation", 21, "body", names[1:22]),
            ParamBlock("left_hand_pose", "rotation", 15, "left_hand", names[25:40]),
            ParamBlock("right_hand_pose", "rotation", 15, "right_hand", names[40:55]),
            ParamBlock("jaw_pose", "rotation", 1, "face", ("jaw",)),
        ]
        if eye_pose:
            blocks += [
                ParamBlock("leye_pose", "rotation", 1, "face", (names[23],)),
                ParamBlock("reye_pose", "rotation", 1, "face", (names[24],)),
            ]
        if self.num_expression:
            blocks.append(ParamBlock(
                "expression", "linear", self.num_expression, "face",
                tuple(f"expression{i}" for i in range(self.num_expression)),
            ))
        if self.num_betas:
            blocks.append(ParamBlock(
                "betas", "linear", self.num_betas, "shape",
                tuple(f"beta{i}" for i in range(self.num_betas)),
            ))
        return {b.name: b for b in blocks}

    def _forward(
        self, params: dict[str, torch.Tensor], vertex_ids: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices and joints in the native SMPL-X frame, pelvis at the origin (all vertices
        are computed; ``vertex_ids`` only selects the ones returned)."""
        from smplx.lbs import lbs

        dtype, device = self.v_template.dtype, self.v_template.device
        batch = params["body_pose"].shape[0]

        def get(name: str, size: int) -> torch.Tensor:
            value = params.get(name)
            if value is None:
                return torch.zeros(batch, size, 3, dtype=dtype, device=device)
            return value.to(dtype)

        root = torch.eye(3, dtype=dtype, device=device).expand(batch, 1, 3, 3)
        local = torch.cat(
            [get("body_pose", 21), get("jaw_pose", 1), get("leye_pose", 1),
             get("reye_pose", 1), get("left_hand_pose", 15), get("right_hand_pose", 15)], 1
        )
        rotmats = torch.cat([root, rotvec_to_rotmat(local)], 1)
        coeffs = [params[n].to(dtype) for n in ("betas", "expression") if n in params]
        coeffs = torch.cat(coeffs, 1) if coeffs else torch.zeros(batch, 0, dtype=dtype,
                                                                 device=device)
        verts, joints = lbs(
            coeffs, rotmats, self.v_template, self.shapedirs, self.posedirs,
            self.J_regressor, self.parents, self.lbs_weights, pose2rot=False,
        )
        pelvis = joints[:, :1]
        if vertex_ids is not None:
            verts = verts[:, torch.as_tensor(vertex_ids, device=verts.device)]
        return verts - pelvis, joints - pelvis


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _check_layout(src, n_verts: int, faces: np.ndarray, path: Path) -> None:
    """Raise :class:`FurpeError` unless the arrays have the SMPL-X layout."""
    problems = []
    if tuple(src.v_template.shape) != (n_verts, 3):
        problems.append(f"v_template {tuple(src.v_template.shape)}")
    if tuple(src.J_regressor.shape) != (NUM_JOINTS, n_verts):
        problems.append(f"J_regressor {tuple(src.J_regressor.shape)} (55 joints expected)")
    if tuple(src.lbs_weights.shape) != (n_verts, NUM_JOINTS):
        problems.append(f"weights {tuple(src.lbs_weights.shape)}")
    if tuple(src.parents.shape) != (NUM_JOINTS,):
        problems.append(f"kintree_table with {src.parents.shape[0]} joints")
    elif tuple(int(p) for p in src.parents) != SMPLX_PARENTS:
        problems.append("kintree_table differs from the SMPL-X kinematic tree")
    if tuple(src.posedirs.shape) != ((NUM_JOINTS - 1) * 9, 3 * n_verts):
        problems.append(f"posedirs {tuple(src.posedirs.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= n_verts:
        problems.append("faces out of range")
    if problems:
        raise FurpeError(
            f"'{path}' does not have the SMPL-X layout: " + "; ".join(problems)
        )


def _part_vertices(
    verts: np.ndarray, joints: np.ndarray, dominant: np.ndarray
) -> dict[str, np.ndarray]:
    """Partition the vertices into hands, face and body (see the module docstring)."""
    part = np.full(len(verts), "body", dtype=object)
    for side in ("left", "right"):
        hand = [_J[f"{side}_wrist"]] + [_J[f"{side}_{f}{k}"] for f in _FINGERS for k in (1, 2, 3)]
        part[np.isin(dominant, hand)] = f"{side}_hand"
    head = _J["head"]
    face = np.isin(dominant, [_J["jaw"], _J["left_eye_smplhf"], _J["right_eye_smplhf"]])
    face |= (dominant == head) & (verts[:, 2] > joints[head, 2])
    part[face] = "face"
    return {
        name: np.nonzero(part == name)[0].astype(np.int64)
        for name in PARTS
    }


def _face_landmark_rows(src, faces: np.ndarray) -> list[_Row]:
    """Barycentric rows of the face landmarks in iBUG-68 order (51 without a contour)."""

    def rows(face_idx, bary) -> list[_Row]:
        out = []
        for fi, b in zip(_np(face_idx).reshape(-1), _np(bary).reshape(-1, 3)):
            row: _Row = {}
            for v, w in zip(faces[int(fi)], b):
                row[int(v)] = row.get(int(v), 0.0) + float(w)
            out.append(row)
        return out

    static = rows(src.lmk_faces_idx, src.lmk_bary_coords)
    if getattr(src, "use_face_contour", False):
        # Entry 0 of the dynamic table is the frontal head (no neck/head yaw).
        contour = rows(src.dynamic_lmk_faces_idx[0], src.dynamic_lmk_bary_coords[0])
        return contour + static
    return static


def _extreme_vertex(
    verts: np.ndarray, dominant: np.ndarray, joint_ids: list[int], anchor: np.ndarray,
    direction: np.ndarray,
) -> int:
    """The vertex furthest along ``direction`` among those dominated by ``joint_ids``."""
    candidates = np.nonzero(np.isin(dominant, joint_ids))[0]
    if len(candidates) == 0:  # no vertex on that joint: nearest vertex to the anchor
        return int(np.argmin(np.linalg.norm(verts - anchor, axis=1)))
    score = (verts[candidates] - anchor) @ (direction / np.linalg.norm(direction))
    return int(candidates[np.argmax(score)])


def _vertex_points(verts: np.ndarray, joints: np.ndarray, dominant: np.ndarray) -> dict[str, int]:
    """Vertex ids of smplx's extra points (tips, toes, heels, ears), real or fallback."""
    if len(verts) == SMPLX_NUM_VERTICES:
        from smplx.vertex_ids import vertex_ids

        return {k: int(v) for k, v in vertex_ids["smplx"].items()}
    out: dict[str, int] = {}
    for side, s, sign in (("left", "l", 1.0), ("right", "r", -1.0)):
        for finger in _FINGERS:
            j3, j2 = _J[f"{side}_{finger}3"], _J[f"{side}_{finger}2"]
            out[f"{s}{finger}"] = _extreme_vertex(
                verts, dominant, [j3], joints[j3], joints[j3] - joints[j2]
            )
        foot, ankle = _J[f"{side}_foot"], _J[f"{side}_ankle"]
        side_key = s.upper()
        out[f"{side_key}BigToe"] = _extreme_vertex(
            verts, dominant, [foot], joints[foot], np.array([-0.3 * sign, 0.0, 1.0])
        )
        out[f"{side_key}SmallToe"] = _extreme_vertex(
            verts, dominant, [foot], joints[foot], np.array([0.3 * sign, 0.0, 1.0])
        )
        out[f"{side_key}Heel"] = _extreme_vertex(
            verts, dominant, [ankle, foot], joints[ankle], np.array([0.0, -0.5, -1.0])
        )
        out[f"{s}ear"] = _extreme_vertex(
            verts, dominant, [_J["head"]], joints[_J["head"]], np.array([sign, 0.0, 0.0])
        )
    return out


def _regressor(names: tuple[str, ...], rows: list[_Row]) -> Regressor:
    """Pack sparse rows into a padded :class:`Regressor` (padding: index 0, weight 0)."""
    width = max(len(r) for r in rows)
    idx = np.zeros((len(rows), width), dtype=np.int64)
    w = np.zeros((len(rows), width), dtype=np.float32)
    for k, row in enumerate(rows):
        idx[k, : len(row)] = list(row)
        w[k, : len(row)] = list(row.values())
    return Regressor(names=tuple(names), indices=idx, weights=w)


def _mean(rows: list[_Row]) -> _Row:
    out: _Row = {}
    for row in rows:
        for i, w in row.items():
            out[i] = out.get(i, 0.0) + w / len(rows)
    return out


def _make_regressors(
    verts: np.ndarray, joints: np.ndarray, dominant: np.ndarray, landmarks: list[_Row]
) -> dict[str, Regressor]:
    """All keypoint regressors over concat(vertices, joints)."""
    n_verts = len(verts)

    def joint(name: str) -> _Row:
        return {n_verts + _J[name]: 1.0}

    vid = _vertex_points(verts, joints, dominant)

    def vertex(key: str) -> _Row:
        return {vid[key]: 1.0}

    regs = {
        "smplx_joints": _regressor(
            SMPLX_JOINT_NAMES, [joint(n) for n in SMPLX_JOINT_NAMES]
        ),
    }
    first = 0 if len(landmarks) == 68 else 17
    regs["ibug68"] = _regressor(
        IBUG68[first:], landmarks
    )

    def ibug(k: int) -> _Row:
        return landmarks[k - first]

    pose: list[_Row] = [
        ibug(30), ibug(42), _mean([ibug(k) for k in range(42, 48)]), ibug(45),
        ibug(39), _mean([ibug(k) for k in range(36, 42)]), ibug(36),
        vertex("lear"), vertex("rear"), ibug(54), ibug(48),
    ]
    for stem in ("shoulder", "elbow", "wrist", "pinky1", "index1", "thumb2", "hip", "knee",
                 "ankle"):
        pose += [joint(f"left_{stem}"), joint(f"right_{stem}")]
    pose += [vertex("LHeel"), vertex("RHeel"), vertex("LBigToe"), vertex("RBigToe")]
    regs["mediapipe_pose"] = _regressor(MEDIAPIPE_POSE, pose)

    for side, s in (("left", "l"), ("right", "r")):
        hand = [joint(f"{side}_wrist")]
        for finger in ("thumb", "index", "middle", "ring", "pinky"):
            hand += [joint(f"{side}_{finger}{k}") for k in (1, 2, 3)] + [vertex(f"{s}{finger}")]
        regs[f"mediapipe_hand_{side}"] = _regressor(MEDIAPIPE_HAND, hand)
    return regs


def load_smplx(model_path: str | Path | None = None, device: str | torch.device = "cpu",
               **options: object) -> SMPLXBodyModel:
    """:class:`SMPLXBodyModel` from the user's model folder, on ``device``."""
    if model_path is None:
        raise SetupError(
            "--body-model smplx needs --model-path DIR, the folder with your SMPL-X model "
            "files (furpe never downloads them; get them from the SMPL-X authors)")
    return SMPLXBodyModel(Path(model_path), **options).to(device)  # type: ignore[arg-type]
