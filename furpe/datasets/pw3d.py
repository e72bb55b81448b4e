"""3DPW (3D Poses in the Wild): body evaluation, one sample per (frame, person).

**Layout** under the data root (the official download; furpe never fetches it):

* ``sequenceFiles/<split>/*.pkl`` (split ``test`` by default, ``extra["split"]``): Python 2
  pickles (read with ``encoding="latin1"``), one per sequence, with per-person lists
  ``poses`` (N, 72) SMPL pose, ``trans`` (N, 3), ``betas`` (10,) (or more; the first 10 are
  used), ``campose_valid`` (N,), ``poses2d`` (N, 3, 18) and ``genders`` ('m'/'f'), plus
  ``cam_poses`` (N, 4, 4) world-to-camera, ``cam_intrinsics`` (3, 3) and ``sequence``;
* ``imageFiles/<sequence>/image_%05d.jpg``, the frame index being the index into ``poses``.

A sample exists for every person and frame with ``campose_valid`` set (and finite pose and
translation). Its ``id`` is ``<sequence>_<frame:05d>_p<person>``; ``meta`` holds
``sequence``, ``frame``, ``person`` and ``gender``; ``intrinsics`` is ``cam_intrinsics``;
``gt["box"]`` is the box of the 2D keypoints (``poses2d``) with confidence above 0.1.

**Ground truth** needs two licence-gated files the user brings (never downloaded):

* ``options.model_path``: a folder with the SMPL model as the ``smplx`` package expects it,
  ``smpl/SMPL_NEUTRAL.pkl`` or ``SMPL_NEUTRAL.pkl`` (the original file names
  ``basicmodel_neutral_lbs_10_207_0_v1.*.pkl`` are accepted too; the file must be free of
  chumpy objects). ``extra["gender"]``: ``neutral`` (default, common practice and FuRPE's: the
  neutral model with the sequence's betas) or ``gendered`` (``SMPL_MALE.pkl`` /
  ``SMPL_FEMALE.pkl`` by the person's ``genders`` entry).
* ``options.gt_regressor``: ``J_regressor_h36m.npy`` (17, 6890); J14 = its rows
  :data:`~furpe.datasets.joints.H36M_TO_J14` (a (14, 6890) regressor is used as is).

SMPL is posed in the world frame (``lbs(betas, pose) + trans``, as ``smplx.SMPL`` does) and the
result is moved to the camera frame with the frame's ``cam_pose`` (``v R^T + t``), metres.
``gt["joints"]`` holds the camera-frame J14 (14, 3); the GT vertices are recomputed on demand
(:meth:`ThreeDPW.gt_vertices`) to keep memory small. 3DPW's own ``jointPositions`` (the 24
SMPL joints) are not the H36M-regressor protocol and are not used.

**Scores** (millimetres): ``pa_mpjpe14_mm`` and ``mpjpe14_mm`` (mid-hip aligned by default,
``options.alignment``) when the prediction gives 14 joints (``options.pred_regressor`` on its
vertices; for an SMPL prediction the ground-truth regressor; or ``keypoints["j14"]``), else the
limbs12 fallback ``pa_mpjpe_limbs12_mm`` and ``mpjpe_limbs12_mm`` from its MediaPipe Pose
landmarks (see :mod:`furpe.datasets.joints`). For an SMPL prediction (``topology == "smpl"``)
also ``pa_pve_mm`` and ``pve_mm`` (translated so the J14 mid-hips coincide).
"""
from __future__ import annotations

import contextlib
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from furpe.datasets.base import (
    Dataset,
    DatasetError,
    Prediction,
    ProtocolOptions,
    Sample,
    require,
)
from furpe.datasets.joints import JointProtocol, keypoint_box
from furpe import metrics

__all__ = ["ThreeDPW", "SMPLGroundTruth", "find_smpl_file"]

_NAME = "3dpw"
_GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female"}
_REQUIRED_KEYS = ("poses", "trans", "betas", "cam_poses", "campose_valid")
_SMPL_HINT = (
    "SMPL is licence-gated: register at https://smpl.is.tue.mpg.de, download the model "
    "yourself and pass its folder with --model-path; furpe never downloads it."
)
_CHUNK = 256


def find_smpl_file(model_path: str | Path, gender: str = "neutral") -> Path:
    """The SMPL model file of ``gender`` (neutral, male, female) under ``model_path``.

    Looks in ``model_path/smpl`` then ``model_path`` for ``SMPL_<GENDER>.pkl``, then for the
    original name ``basicmodel_<neutral|m|f>_lbs_10_207_0_v1.*.pkl`` (any case); a file path
    is returned as is for the neutral model.

    Raises:
        DatasetError: nothing found; the message names the expected file.
    """
    root = Path(model_path).expanduser()
    if root.is_file() and gender == "neutral":
        return root
    folder = root.parent if root.is_file() else root
    stem = f"SMPL_{gender.upper()}.pkl"
    short = {"neutral": "neutral", "male": "m", "female": "f"}[gender]
    original = re.compile(rf"^basicmodel_{short}_lbs_10_207_0_v1\.\d\.\d\.pkl$", re.IGNORECASE)
    for sub in (folder / "smpl", folder):
        if (sub / stem).is_file():
            return sub / stem
        if sub.is_dir():
            for p in sorted(sub.iterdir()):
                if original.match(p.name):
                    return p
    raise DatasetError(
        f"{_NAME}: missing {folder / 'smpl' / stem} (the {gender} SMPL model for the ground "
        f"truth; '{stem}' directly in that folder works too). {_SMPL_HINT}"
    )


class SMPLGroundTruth:
    """SMPL posed with ``smplx.lbs.lbs`` on the buffers of the user's model file.

    Works for any vertex count (``smplx.SMPL.forward`` would pick extra joints at fixed vertex
    ids of the real mesh; they are not needed here).
    """

    def __init__(self, path: Path, num_betas: int = 10) -> None:
        import smplx  # imported here so that a missing smplx only breaks this reader
        import torch

        self.path = Path(path)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a 10-betas warning
                src = smplx.SMPL(str(self.path), num_betas=num_betas, dtype=torch.float64)
        except ModuleNotFoundError as exc:
            raise DatasetError(
                f"{_NAME}: {self.path} holds objects of the missing module '{exc.name}' (the "
                "original SMPL files hold chumpy arrays): remove them, e.g. with the smplx "
                "package's tools/clean_ch.py, or install chumpy"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - malformed or unreadable file
            raise DatasetError(
                f"{_NAME}: {self.path} is not a valid SMPL model file: {exc}") from exc
        self.num_betas = int(src.shapedirs.shape[-1])
        dt = torch.float64
        self._bufs = dict(
            v_template=src.v_template.detach().to(dt),
            shapedirs=src.shapedirs.detach().to(dt),
            posedirs=src.posedirs.detach().to(dt),
            J_regressor=src.J_regressor.detach().to(dt),
            parents=src.parents.detach().clone().long(),
            lbs_weights=src.lbs_weights.detach().to(dt),
        )
        self.num_vertices = int(src.v_template.shape[0])
        self.faces = np.asarray(src.faces, dtype=np.int64)
        if src.J_regressor.shape[0] != 24 or self._bufs["posedirs"].shape[0] != 207:
            raise DatasetError(
                f"{_NAME}: {self.path} is not an SMPL model file (24 joints, 207 pose "
                f"blend-shape columns); got {src.J_regressor.shape[0]} joints"
            )

    def vertices(self, betas: np.ndarray, poses: np.ndarray, trans: np.ndarray) -> np.ndarray:
        """World-frame vertices (B, V, 3) of (B, >=1) ``betas``, (B, 72) ``poses`` (axis-angle)
        and (B, 3) ``trans``: ``lbs(betas, pose) + trans``."""
        import torch
        from smplx.lbs import lbs

        b = np.zeros((len(poses), self.num_betas))
        given = np.asarray(betas, dtype=np.float64).reshape(len(poses), -1)[:, : self.num_betas]
        b[:, : given.shape[1]] = given
        with torch.no_grad():
            verts, _ = lbs(torch.from_numpy(b), torch.as_tensor(poses, dtype=torch.float64),
                           **self._bufs)
        return verts.numpy() + np.asarray(trans, dtype=np.float64)[:, None, :]


@dataclass(frozen=True)
class _Params:
    """What :meth:`ThreeDPW.gt_vertices` needs to rebuild one sample's ground truth."""

    gender: str
    betas: np.ndarray
    pose: np.ndarray
    trans: np.ndarray
    cam_pose: np.ndarray


def _load_sequence(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            seq = pickle.load(fh, encoding="latin1")
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{_NAME}: cannot read sequence file {path}: {exc}") from exc
    if not isinstance(seq, dict):
        raise DatasetError(f"{_NAME}: sequence file {path} does not hold a dict")
    missing = [k for k in _REQUIRED_KEYS if k not in seq]
    if missing:
        raise DatasetError(f"{_NAME}: sequence file {path} lacks the keys {missing}")
    return seq


class ThreeDPW(Dataset):
    """The 3DPW reader (``--dataset 3dpw``); see the module docstring for layout and metrics.

    Options used: ``model_path`` and ``gt_regressor`` (both required), ``pred_regressor``,
    ``alignment``, ``extra["gender"]`` (neutral | gendered), ``extra["split"]`` (test).
    """

    name: ClassVar[str] = "3dpw"
    protocol: ClassVar[str] = (
        "3DPW: SMPL ground truth (neutral model by default) in the camera frame, J14 from "
        "J_regressor_h36m; PA-MPJPE-14 and MPJPE-14 aligned at the J14 mid-hip; limbs12 "
        "(MediaPipe) fallback reported separately"
    )

    def __init__(self, root: str | Path, options: ProtocolOptions | None = None) -> None:
        super().__init__(root, options)
        opts = self.options
        self.gender_mode = opts.extra.get("gender", "neutral")
        if self.gender_mode not in ("neutral", "gendered"):
            raise DatasetError(f"{self.name}: extra option gender='{self.gender_mode}' must be "
                               "'neutral' or 'gendered'")
        self.split = opts.extra.get("split", "test")
        if opts.model_path is None or opts.gt_regressor is None:
            need = [what for what, val in (
                ("--model-path DIR with the SMPL model (smpl/SMPL_NEUTRAL.pkl; SMPL_MALE.pkl and "
                 "SMPL_FEMALE.pkl with gender=gendered)", opts.model_path),
                ("--gt-regressor J_regressor_h36m.npy (17 x 6890, the H36M joint regressor of "
                 "the standard protocol)", opts.gt_regressor)) if val is None]
            raise DatasetError(
                f"{self.name}: the ground truth is SMPL parameters; turning them into 3D joints "
                f"needs {' and '.join(need)}. {_SMPL_HINT}"
            )
        genders = ("neutral",) if self.gender_mode == "neutral" else ("male", "female")
        self.model_files = {g: find_smpl_file(opts.model_path, g) for g in genders}
        self.joints = JointProtocol.from_files(self.name, opts.gt_regressor,
                                               opts.pred_regressor, opts.alignment)
        self._models: dict[str, SMPLGroundTruth] = {}
        self._params: dict[str, _Params] = {}
        self._samples: list[Sample] | None = None

    def model(self, gender: str) -> SMPLGroundTruth:
        """The SMPL model of ``gender`` ("neutral", "male", "female"), loaded once."""
        if gender not in self._models:
            self._models[gender] = SMPLGroundTruth(self.model_files[gender])
        return self._models[gender]

    def _gender(self, seq: dict, person: int, path: Path) -> str:
        if self.gender_mode == "neutral":
            return "neutral"
        genders = seq.get("genders")
        if genders is None or person >= len(genders) or str(genders[person]) not in _GENDERS:
            raise DatasetError(f"{self.name}: {path} has no usable 'genders' entry for person "
                               f"{person}, needed by gender=gendered")
        return _GENDERS[str(genders[person])]

    def samples(self) -> Sequence[Sample]:
        """Every (frame, person) with a valid camera pose, by sequence file, person, frame
        (cached after the first call). Computes the ground-truth J14 (batched SMPL)."""
        if self._samples is not None:
            return self._samples
        seq_dir = require(self.root / "sequenceFiles" / self.split, self.name,
                          "folder of the sequence .pkl files")
        files = sorted(seq_dir.glob("*.pkl"))
        if not files:
            raise DatasetError(f"{self.name}: no sequence files (*.pkl) in {seq_dir}")
        samples: list[Sample] = []
        for path in files:
            samples += self._sequence_samples(path)
        self._samples = samples
        return samples

    def _sequence_samples(self, path: Path) -> list[Sample]:
        seq = _load_sequence(path)
        name = str(seq.get("sequence", path.stem))
        cam_poses = np.asarray(seq["cam_poses"], dtype=np.float64)
        n_frames = len(cam_poses)
        if cam_poses.shape != (n_frames, 4, 4):
            raise DatasetError(f"{self.name}: {path}: cam_poses must be (N, 4, 4), got "
                               f"{cam_poses.shape}")
        k = seq.get("cam_intrinsics")
        intrinsics = None if k is None else np.asarray(k, dtype=np.float64).reshape(3, 3)
        samples = []
        for person in range(len(seq["poses"])):
            poses = np.asarray(seq["poses"][person], dtype=np.float64)
            trans = np.asarray(seq["trans"][person], dtype=np.float64)
            betas = np.asarray(seq["betas"][person], dtype=np.float64).reshape(-1)
            valid = np.asarray(seq["campose_valid"][person]).astype(bool).reshape(-1)
            if poses.shape != (n_frames, 72) or trans.shape != (n_frames, 3) \
                    or valid.shape != (n_frames,):
                raise DatasetError(
                    f"{self.name}: {path}: person {person} has poses {poses.shape}, trans "
                    f"{trans.shape}, campose_valid {valid.shape}; expected ({n_frames}, 72), "
                    f"({n_frames}, 3), ({n_frames},)"
                )
            valid &= np.isfinite(poses).all(1) & np.isfinite(trans).all(1)
            frames = np.nonzero(valid)[0]
            if len(frames) == 0:
                continue
            gender = self._gender(seq, person, path)
            poses2d = None
            if seq.get("poses2d") is not None and person < len(seq["poses2d"]):
                poses2d = np.asarray(seq["poses2d"][person], dtype=np.float64)
            joints = self._gt_joints(gender, betas, poses[frames], trans[frames],
                                     cam_poses[frames])
            for i, frame in enumerate(frames):
                frame = int(frame)
                image = require(self.root / "imageFiles" / name / f"image_{frame:05d}.jpg",
                                self.name, f"image of sequence {name}, frame {frame}")
                sid = f"{name}_{frame:05d}_p{person}"
                gt = {"joints": joints[i]}
                if poses2d is not None and poses2d.shape[0] == n_frames:
                    box = keypoint_box(poses2d[frame].reshape(3, -1).T, 0.1)
                    if box is not None:
                        gt["box"] = box
                samples.append(Sample(
                    id=sid, image_path=image, crop="full",
                    intrinsics=None if intrinsics is None else intrinsics.copy(), gt=gt,
                    meta={"sequence": name, "frame": frame, "person": person, "gender": gender},
                ))
                self._params[sid] = _Params(gender, betas, poses[frame], trans[frame],
                                            cam_poses[frame])
        return samples

    @staticmethod
    def _to_camera(verts: np.ndarray, cam_poses: np.ndarray) -> np.ndarray:
        """(B, V, 3) world points in each frame's camera: ``v R^T + t``."""
        rot, t = cam_poses[:, :3, :3], cam_poses[:, :3, 3]
        return np.einsum("bvk,bjk->bvj", verts, rot) + t[:, None, :]

    def _gt_joints(self, gender: str, betas: np.ndarray, poses: np.ndarray, trans: np.ndarray,
                   cam_poses: np.ndarray) -> np.ndarray:
        """(B, 14, 3) camera-frame J14 of B frames of one person, in chunks."""
        model = self.model(gender)
        out = np.zeros((len(poses), 14, 3))
        for s in range(0, len(poses), _CHUNK):
            sl = slice(s, s + _CHUNK)
            n = len(poses[sl])
            verts = model.vertices(np.broadcast_to(betas, (n, len(betas))), poses[sl], trans[sl])
            cam = self._to_camera(verts, cam_poses[sl])
            if s == 0:
                self.joints.gt_joints(cam[0], f"the SMPL mesh of {model.path}")  # column check
            out[sl] = np.einsum("jv,bvk->bjk", self.joints.gt, cam)
        return out

    def gt_vertices(self, sample: Sample) -> np.ndarray:
        """Camera-frame ground-truth SMPL vertices (V, 3) of a sample of this reader."""
        if sample.id not in self._params:
            raise DatasetError(f"{self.name}: unknown sample '{sample.id}'")
        p = self._params[sample.id]
        verts = self.model(p.gender).vertices(p.betas[None], p.pose[None], p.trans[None])
        return self._to_camera(verts, p.cam_pose[None])[0]

    def score(self, sample: Sample, prediction: Prediction) -> dict[str, float]:
        """3DPW metrics of one prediction (see the module docstring); ``*_mm`` in mm."""
        gt_j = sample.gt.get("joints")
        smpl_mesh = prediction.topology == "smpl" and prediction.vertices is not None
        scores = self.joints.score(prediction, gt_j, same_topology_as_gt=smpl_mesh)
        if smpl_mesh:
            gt_v = self.gt_vertices(sample)
            pred_v = np.asarray(prediction.vertices, dtype=np.float64)
            if pred_v.shape != gt_v.shape:
                raise DatasetError(
                    f"{self.name}: the SMPL prediction for sample {sample.id} has "
                    f"{pred_v.shape[0]} vertices, the ground truth {gt_v.shape[0]}"
                )
            scores["pa_pve_mm"] = float(metrics.pa_pve(pred_v, gt_v))
            got = self.joints.pred_joints(prediction, same_topology_as_gt=True)
            if got is not None and got[0] == "j14" and gt_j is not None:
                scores["pve_mm"] = self.joints.aligned_pve(pred_v, gt_v, got[1], gt_j)
        return scores
