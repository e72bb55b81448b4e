"""Joint sets and regressors shared by the body benchmarks (EHF, 3DPW).

**J14** is the 14-joint LSP-order set that whole-body and body benchmarks report MPJPE on
(:data:`J14_NAMES`). It is never read off a body model's kinematic joints: it comes from a
linear *regressor* on mesh vertices, a (J, V) matrix the user supplies (licence-gated files,
never shipped):

* ``SMPLX_to_J14.pkl`` (14, 10475): J14 directly, for SMPL-X meshes (EHF ground truth and
  SMPL-X predictions);
* ``J_regressor_h36m.npy`` (17, 6890): the 17 Human3.6M joints from SMPL meshes (3DPW ground
  truth); J14 is then its rows :data:`H36M_TO_J14`.

:func:`load_regressor` reads ``.npy``, ``.npz`` (key ``J_regressor`` or a single array) and
``.pkl`` (a pickled NumPy array or SciPy sparse matrix, or a dict holding one under
``J_regressor``; read with ``encoding="latin1"`` like the Python 2 originals). A pickle can run
code when loaded: only pass files you trust.

**limbs12** is the explicit fallback for methods that give no mesh a J14 regressor exists for
(our default Anny method): the first 12 J14 joints (ankles, knees, hips, wrists, elbows,
shoulders; no neck, no head top), taken from the prediction's MediaPipe Pose landmarks
(:data:`MEDIAPIPE_TO_LIMBS12`) and from the ground-truth J14. MediaPipe Pose names its landmarks
by the *subject's* side (``left_shoulder`` is the person's left shoulder, whatever side of the
image it is on), like LSP; furpe's ``mediapipe_pose`` keypoints are read off body-model
correspondences named the same way. MediaPipe's hips and shoulders are not LSP's (MediaPipe's
hips sit higher and wider), so limbs12 numbers carry a definition offset: they are reported
under their own names (``pa_mpjpe_limbs12_mm``, ``mpjpe_limbs12_mm``) and must never be
compared with 14-joint numbers.

Where a prediction's 14 joints come from, first match wins (:meth:`JointProtocol.pred_joints`):

1. the prediction regressor (``ProtocolOptions.pred_regressor``) applied to its vertices;
2. the ground-truth regressor, when the reader says the prediction has the ground-truth
   topology (an SMPL-X prediction on EHF: FuRPE applies ``SMPLX_to_J14`` to both);
3. ``prediction.keypoints["j14"]``, (14, 3) in J14 order;
4. limbs12 from ``prediction.keypoints["mediapipe_pose"]`` (33, 3).

**Alignment** of the non-PA values (``mpjpe14_mm``, ``mpjpe_limbs12_mm``, and a reader's
``pve_mm``): J14 has no pelvis joint; like FuRPE and SPIN, its "pelvis" is the mid-hip point
(J14 indices 2 and 3, the right and left hips). ``ProtocolOptions.alignment``: ``"mid_hip"``,
``"standard"`` / ``None`` (the dataset standard) give mid-hip alignment; ``"none"`` measures
raw camera-frame errors. (The Procrustes-aligned value is always reported as the ``pa_``
metric.)
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from furpe.core.boxes import landmark_box
from furpe.datasets.base import DatasetError, Prediction, require
from furpe import metrics

__all__ = [
    "J14_NAMES", "J14_HIPS", "H36M_TO_J14", "LIMBS12", "MEDIAPIPE_TO_LIMBS12", "J14_KEYPOINTS",
    "MEDIAPIPE_POSE", "load_regressor", "j14_rows", "check_columns", "resolve_alignment",
    "keypoint_box", "JointProtocol",
]

#: The 14 LSP-order joints, as the J14 regressors give them.
J14_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top",
)
#: J14 indices of the right and left hips (their midpoint is the "pelvis").
J14_HIPS: tuple[int, int] = (2, 3)
#: Rows of the 17-joint Human3.6M regressor that make J14 (SPIN's ``H36M_TO_J14``).
H36M_TO_J14: tuple[int, ...] = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
#: J14 indices kept by the limbs12 protocol (all but neck and head top); same order as J14,
#: so the hips are again indices 2 and 3.
LIMBS12: tuple[int, ...] = tuple(range(12))
#: MediaPipe Pose landmark index of each limbs12 joint, in limbs12 order.
MEDIAPIPE_TO_LIMBS12: tuple[int, ...] = (28, 26, 24, 23, 25, 27, 16, 14, 12, 11, 13, 15)
#: ``Prediction.keypoints`` key of a ready 14-joint set (J14 order).
J14_KEYPOINTS = "j14"
#: ``Prediction.keypoints`` key of MediaPipe Pose landmarks (33, MediaPipe order).
MEDIAPIPE_POSE = "mediapipe_pose"

_ALIGNMENTS = ("standard", "mid_hip", "none")


def _to_dense(obj: object, path: Path, dataset: str) -> np.ndarray:
    """A loaded regressor object as a dense float64 array."""
    if isinstance(obj, dict):
        if "J_regressor" in obj:
            obj = obj["J_regressor"]
        elif len(obj) == 1:
            obj = next(iter(obj.values()))
        else:
            raise DatasetError(
                f"{dataset}: regressor file {path} holds a dict with keys {sorted(obj)}; "
                "expected a 'J_regressor' entry or a single array"
            )
    if hasattr(obj, "toarray"):  # scipy sparse matrix / array
        obj = obj.toarray()
    try:
        return np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"{dataset}: regressor file {path} does not hold a numeric array "
            f"(got {type(obj).__name__})"
        ) from exc


def load_regressor(path: str | Path, dataset: str, what: str = "joint regressor") -> np.ndarray:
    """Read a (J, V) joint regressor as a dense float64 array.

    Args:
        path: a ``.npy``, ``.npz`` or ``.pkl`` file (see the module docstring).
        dataset: the reader's name, for error messages.
        what: what the file is for, for error messages.

    Raises:
        DatasetError: the file is missing, unreadable, of an unknown kind or not 2-D.
    """
    path = Path(path).expanduser()
    require(path, dataset, what)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            obj: object = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "J_regressor" in data.files:
                    obj = data["J_regressor"]
                elif len(data.files) == 1:
                    obj = data[data.files[0]]
                else:
                    raise DatasetError(
                        f"{dataset}: regressor file {path} holds arrays {sorted(data.files)}; "
                        "expected 'J_regressor' or a single array"
                    )
        elif suffix in (".pkl", ".pickle"):
            with open(path, "rb") as fh:
                obj = pickle.load(fh, encoding="latin1")
        else:
            raise DatasetError(
                f"{dataset}: regressor file {path} must be .npy, .npz or .pkl ({what})"
            )
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear message
        raise DatasetError(f"{dataset}: cannot read regressor file {path} ({what}): {exc}") from exc
    reg = _to_dense(obj, path, dataset)
    if reg.ndim != 2 or 0 in reg.shape:
        raise DatasetError(
            f"{dataset}: regressor file {path} has shape {reg.shape}; expected a 2-D "
            f"(joints, vertices) matrix ({what})"
        )
    return reg


def j14_rows(reg: np.ndarray, path: str | Path, dataset: str) -> np.ndarray:
    """The (14, V) J14 regressor from a 14-row (J14) or 17-row (Human3.6M) one."""
    if reg.shape[0] == 14:
        return reg
    if reg.shape[0] == 17:
        return reg[list(H36M_TO_J14)]
    raise DatasetError(
        f"{dataset}: regressor file {path} has shape {reg.shape}; expected (14, V) J14 rows "
        "(e.g. SMPLX_to_J14.pkl) or (17, V) Human3.6M rows (e.g. J_regressor_h36m.npy)"
    )


def check_columns(reg: np.ndarray, num_vertices: int, path: str | Path, dataset: str,
                  mesh: str = "the mesh") -> None:
    """Raise a :class:`DatasetError` unless ``reg`` has one column per vertex of ``mesh``."""
    if reg.shape[1] != num_vertices:
        raise DatasetError(
            f"{dataset}: regressor file {path} has {reg.shape[1]} columns (one per vertex), "
            f"but {mesh} has {num_vertices} vertices"
        )


def resolve_alignment(alignment: str | None, dataset: str) -> str:
    """The alignment of the non-PA joint/vertex errors: ``"mid_hip"`` or ``"none"``."""
    a = "standard" if alignment is None else alignment
    if a not in _ALIGNMENTS:
        raise DatasetError(
            f"{dataset}: unknown alignment '{alignment}'; choose from {', '.join(_ALIGNMENTS)}"
        )
    return "none" if a == "none" else "mid_hip"


def keypoint_box(points: np.ndarray, threshold: float = 0.1) -> np.ndarray | None:
    """The tight (x0, y0, x1, y1) box of the (K, 3) ``(x, y, confidence)`` points whose
    confidence exceeds ``threshold``; ``None`` when there are none."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    ok = p[:, 2] > threshold
    box = landmark_box(p[ok, :2]) if ok.any() else None
    return None if box is None else np.array(box)


@dataclass
class JointProtocol:
    """The J14 / limbs12 protocol of a body benchmark, with its regressors loaded once.

    Attributes:
        dataset: the reader's name, for messages.
        gt: (14, V_gt) J14 regressor of the ground-truth meshes, or ``None``.
        pred: (14, V_pred) J14 regressor of the predicted meshes, or ``None``.
        alignment: ``"mid_hip"`` or ``"none"`` for the non-PA values.
        gt_path, pred_path: the files the regressors came from (for messages).
    """

    dataset: str
    gt: np.ndarray | None = None
    pred: np.ndarray | None = None
    alignment: str = "mid_hip"
    gt_path: Path | None = None
    pred_path: Path | None = None

    @classmethod
    def from_files(cls, dataset: str, gt_regressor: str | Path | None,
                   pred_regressor: str | Path | None, alignment: str | None) -> "JointProtocol":
        """Load the regressor files (each optional) and resolve the alignment."""
        gt = pred = None
        if gt_regressor is not None:
            gt = j14_rows(load_regressor(gt_regressor, dataset, "ground-truth J14 regressor"),
                          gt_regressor, dataset)
        if pred_regressor is not None:
            pred = j14_rows(
                load_regressor(pred_regressor, dataset, "prediction J14 regressor"),
                pred_regressor, dataset)
        return cls(dataset, gt, pred, resolve_alignment(alignment, dataset),
                   Path(gt_regressor) if gt_regressor is not None else None,
                   Path(pred_regressor) if pred_regressor is not None else None)

    def gt_joints(self, vertices: np.ndarray, mesh: str = "the ground-truth mesh") -> np.ndarray:
        """(14, 3) ground-truth J14 of (V, 3) ``vertices`` (needs :attr:`gt`)."""
        if self.gt is None:
            raise DatasetError(f"{self.dataset}: no ground-truth J14 regressor was given")
        check_columns(self.gt, len(vertices), self.gt_path, self.dataset, mesh)
        return self.gt @ np.asarray(vertices, dtype=np.float64)

    def pred_joints(self, prediction: Prediction,
                    same_topology_as_gt: bool = False) -> tuple[str, np.ndarray] | None:
        """``("j14", (14, 3))`` or ``("limbs12", (12, 3))`` for ``prediction``, or ``None``
        when it gives neither (see the module docstring for the order of the sources)."""
        verts = prediction.vertices
        if self.pred is not None and verts is not None:
            check_columns(self.pred, len(verts), self.pred_path, self.dataset,
                          f"the '{prediction.topology}' prediction")
            return "j14", self.pred @ np.asarray(verts, dtype=np.float64)
        if same_topology_as_gt and self.gt is not None and verts is not None:
            check_columns(self.gt, len(verts), self.gt_path, self.dataset,
                          f"the '{prediction.topology}' prediction")
            return "j14", self.gt @ np.asarray(verts, dtype=np.float64)
        kp = prediction.keypoints
        if J14_KEYPOINTS in kp:
            j14 = np.asarray(kp[J14_KEYPOINTS], dtype=np.float64)
            if j14.shape != (14, 3):
                raise DatasetError(f"{self.dataset}: keypoints['{J14_KEYPOINTS}'] must be "
                                   f"(14, 3), got {j14.shape}")
            return "j14", j14
        if MEDIAPIPE_POSE in kp:
            mp = np.asarray(kp[MEDIAPIPE_POSE], dtype=np.float64)
            if mp.ndim != 2 or mp.shape[0] != 33 or mp.shape[1] != 3:
                raise DatasetError(f"{self.dataset}: keypoints['{MEDIAPIPE_POSE}'] must be "
                                   f"(33, 3), got {mp.shape}")
            return "limbs12", mp[list(MEDIAPIPE_TO_LIMBS12)]
        return None

    def score(self, prediction: Prediction, gt_j14: np.ndarray | None,
              same_topology_as_gt: bool = False) -> dict[str, float]:
        """``pa_mpjpe14_mm`` + ``mpjpe14_mm``, or ``pa_mpjpe_limbs12_mm`` +
        ``mpjpe_limbs12_mm``; empty without ground-truth J14 or predicted joints."""
        if gt_j14 is None:
            return {}
        got = self.pred_joints(prediction, same_topology_as_gt)
        if got is None:
            return {}
        kind, pred = got
        gt = np.asarray(gt_j14, dtype=np.float64)
        if kind == "limbs12":
            gt = gt[list(LIMBS12)]
        suffix = "14" if kind == "j14" else "_limbs12"
        return {
            f"pa_mpjpe{suffix}_mm": float(metrics.pa_mpjpe(pred, gt)),
            f"mpjpe{suffix}_mm": float(
                metrics.mpjpe(pred, gt, align=self.alignment, hips=J14_HIPS)),
        }

    def aligned_pve(self, pred_vertices: np.ndarray, gt_vertices: np.ndarray,
                    pred_j14: np.ndarray, gt_j14: np.ndarray) -> float:
        """Per-vertex error (mm) of one topology's meshes with the non-PA alignment: each
        mesh's J14 mid-hip point subtracted (``"mid_hip"``), or none (``"none"``)."""
        if self.alignment == "none":
            return float(metrics.pve(pred_vertices, gt_vertices, align="none"))
        i, j = J14_HIPS
        p = np.asarray(pred_j14, dtype=np.float64)
        g = np.asarray(gt_j14, dtype=np.float64)
        return float(metrics.pve(pred_vertices, gt_vertices, align="root",
                                 pred_root=0.5 * (p[i] + p[j]), gt_root=0.5 * (g[i] + g[j])))
