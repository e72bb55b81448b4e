"""FreiHAND (v2) evaluation split: single right hands, hand shape and pose.

**Layout** under the data root (the official ``FreiHAND_pub_v2`` download plus the released
evaluation annotations; furpe never fetches them), as read by FreiHAND's own ``pred.py`` /
``eval.py``:

* ``evaluation/rgb/%08d.jpg``: the 224x224 images (3,960 in the real split);
* ``evaluation_K.json``: a list of 3x3 intrinsics, one per image (this list defines the
  samples);
* ``evaluation_scale.json`` (optional here): the metric length of a reference bone per
  image, copied to ``meta["scale"]``;
* ``evaluation_xyz.json``: a list of 21x3 joints, metres, camera frame;
* ``evaluation_verts.json``: a list of 778x3 MANO (right hand) vertices, metres, camera frame.

The two annotation files are required, since scoring needs them; a missing one is a
:class:`DatasetError` naming it. ``extra["predict_only"]="1"`` needs only the images and
``evaluation_K.json``: samples then carry no ground truth, :meth:`FreiHAND.score` returns
``{}`` and only ``pred.json`` is produced.

**Sample.** ``id`` = ``"%08d"`` (the image number), ``crop="hand"``, ``intrinsics`` = K,
``gt``: ``joints`` (21, 3) and ``vertices`` (778, 3); ``meta``: ``index``, ``hand_side``
(``"right"``: FreiHAND's annotations are all right hands) and ``scale`` when present.

**Joint order.** FreiHAND's 21 joints follow the OpenPose / Panoptic hand order: wrist, then
thumb, index, middle, ring and pinky, four joints each from the palm outwards (the last one
the tip). MediaPipe Hands uses the same order (0 wrist; 1-4 thumb CMC, MCP, IP, tip; 5-8
index MCP, PIP, DIP, tip; 9-12 middle; 13-16 ring; 17-20 pinky), so the prediction's
``keypoints["mediapipe_hand_right"]`` (or ``"mediapipe_hand_left"``) is compared index by
index. The joints are anatomically close but not identical definitions (e.g. MediaPipe's
thumb CMC vs MANO's first thumb joint); that bias stays in the numbers.

**Hand side.** Every FreiHAND image shows a right hand. The prediction's right-hand
keypoints are used when present, otherwise its left-hand ones, **as they are, not
mirrored**: the points are camera-frame positions of the hand seen in the image, whichever
label a detector gave it; mirroring them would put them where no hand is.

**Scores** (metres in, millimetres out; mean over points of one sample):

* ``pa_mpjpe_mm``: 21 joints after a similarity Procrustes fit (FreiHAND's "keypoint error
  aligned", FuRPE's PA-MPJPE); ``mpjpe_mm``: the same without any alignment (FreiHAND's
  "keypoint error", camera frame, so it includes the absolute depth error). Both need hand
  keypoints in the prediction.
* With a MANO mesh (``prediction.topology == "mano"``, 778 vertices): ``pa_pve_mm`` (mesh
  error aligned, PA-MPVPE), ``pve_mm`` (unaligned), and ``f_score_5mm`` / ``f_score_15mm``:
  the F-score at 5 and 15 mm of the Procrustes-aligned vertices against the ground-truth
  vertices (FreiHAND's "F_aligned"). Other topologies get no vertex metric and no F-score
  (an F-score on 21 joints is not the benchmark's and is not reported).

Our Procrustes never reflects (det R = +1); FreiHAND's ``eval.py`` uses
``scipy.linalg.orthogonal_procrustes``, which may. The two agree unless the best fit of a
prediction is a mirror image, i.e. for a grossly wrong prediction.

**Submission** (:meth:`FreiHAND.write_prediction` + :meth:`FreiHAND.finalize`):
``out_dir/pred.json`` = ``[xyz_list, verts_list]``, one 21x3 joint list and one 778x3 vertex
list per sample in sample order, metres, camera frame: the file FreiHAND's ``eval.py`` /
Codalab reads (the official evaluation expects all 3,960 samples). Each prediction is first
kept as ``out_dir/freihand_predictions/<id>.npz`` so that a resumed run still writes a
complete file. ``finalize`` refuses (:class:`DatasetError`) when a prediction lacks hand
keypoints, when a sample in the middle has no prediction (``pred.json`` is indexed by
position), or when a prediction has no MANO mesh. With ``extra["joints_only"]="1"`` it writes
the joints and an **empty** vertex list per sample instead: the official ``eval.py`` cannot
score such a file (it needs vertices), it is meant for joint-only tools; our own
``pa_mpjpe_mm`` is unaffected. Zero or fake vertices are never written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from furpe.core.vocab import part_convention
from furpe.datasets.base import (
    Dataset,
    DatasetError,
    Prediction,
    ProtocolOptions,
    Sample,
    require,
)
from furpe import metrics
from furpe.io.outputs import atomic_write

__all__ = ["FreiHAND", "FREIHAND_JOINT_NAMES", "F_THRESHOLDS", "NUM_JOINTS", "NUM_VERTICES",
           "hand_keypoints", "mano_vertices"]

NUM_JOINTS = 21
NUM_VERTICES = 778
#: F-score thresholds (metres) and their score names.
F_THRESHOLDS = {"f_score_5mm": 0.005, "f_score_15mm": 0.015}
#: FreiHAND's joint order (= MediaPipe Hands' order).
FREIHAND_JOINT_NAMES = ("wrist",) + tuple(
    f"{finger}{k}" for finger in ("thumb", "index", "middle", "ring", "pinky")
    for k in range(1, 5))
#: Keypoint sets of a :class:`Prediction` tried in this order.
HAND_KEYPOINTS = tuple(part_convention("mediapipe_hand", p) for p in ("right_hand", "left_hand"))
PRED_FOLDER = "freihand_predictions"
_NAME = "freihand"
_TRUE = {"1", "true", "yes", "on"}


def _flag(options: ProtocolOptions, key: str) -> bool:
    return str(options.extra.get(key, "")).strip().lower() in _TRUE


def _load_json(path: Path, what: str) -> list:
    require(path, _NAME, what)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{_NAME}: cannot read {path}: {exc}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{_NAME}: {path} must hold a JSON list, got {type(data).__name__}")
    return data


def _array_list(data: list, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{_NAME}: {path} must hold a list of {shape} arrays") from None
    if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
        raise DatasetError(f"{_NAME}: {path} must hold a list of {shape} arrays, "
                           f"got shape {arr.shape}")
    return arr


def hand_keypoints(prediction: Prediction) -> tuple[str, np.ndarray] | None:
    """``(name, (21, 3) joints)`` of the prediction's hand keypoints, right before left, or
    ``None`` without any (a :class:`DatasetError` on a wrong shape)."""
    for name in HAND_KEYPOINTS:
        if name in prediction.keypoints:
            kp = np.asarray(prediction.keypoints[name], dtype=np.float64)
            if kp.shape != (NUM_JOINTS, 3):
                raise DatasetError(f"{_NAME}: keypoints['{name}'] must be (21, 3), "
                                   f"got {kp.shape}")
            return name, kp
    return None


def mano_vertices(prediction: Prediction) -> np.ndarray | None:
    """The (778, 3) vertices of a MANO-topology prediction, else ``None``."""
    if prediction.topology != "mano" or prediction.vertices is None:
        return None
    verts = np.asarray(prediction.vertices, dtype=np.float64)
    if verts.shape != (NUM_VERTICES, 3):
        raise DatasetError(f"{_NAME}: a MANO prediction must have (778, 3) vertices, "
                           f"got {verts.shape}")
    return verts


class FreiHAND(Dataset):
    """The FreiHAND v2 evaluation split (``--dataset freihand``); see the module docstring."""

    name: ClassVar[str] = _NAME
    protocol: ClassVar[str] = (
        "FreiHAND v2 evaluation split: per-sample similarity-Procrustes PA-MPJPE (21 joints) "
        "and, for MANO meshes, PA-PVE and F@5/15 mm of the aligned vertices; mm")

    def __init__(self, root: str | Path, options: ProtocolOptions | None = None) -> None:
        super().__init__(root, options)
        self.predict_only = _flag(self.options, "predict_only")
        self.joints_only = _flag(self.options, "joints_only")
        self._samples: list[Sample] | None = None

    # -- samples ----------------------------------------------------------------------------

    def samples(self) -> Sequence[Sample]:
        """One sample per entry of ``evaluation_K.json`` (cached)."""
        if self._samples is None:
            self._samples = self._load()
        return self._samples

    def _load(self) -> list[Sample]:
        k_path = self.root / "evaluation_K.json"
        Ks = _array_list(_load_json(k_path, "camera intrinsics"), k_path, (3, 3))
        n = len(Ks)
        rgb = require(self.root / "evaluation" / "rgb", _NAME, "evaluation images")
        scale_path = self.root / "evaluation_scale.json"
        scales = None
        if scale_path.exists():
            scales = np.asarray(_load_json(scale_path, "bone scales"), dtype=np.float64)
            if scales.shape != (n,):
                raise DatasetError(f"{_NAME}: {scale_path} has {scales.size} entries, "
                                   f"evaluation_K.json {n}")
        joints = verts = None
        if not self.predict_only:
            hint = "ground truth; pass extra predict_only=1 to only write predictions"
            xyz_path = self.root / "evaluation_xyz.json"
            verts_path = self.root / "evaluation_verts.json"
            joints = _array_list(_load_json(xyz_path, hint), xyz_path, (NUM_JOINTS, 3))
            verts = _array_list(_load_json(verts_path, hint), verts_path, (NUM_VERTICES, 3))
            for path, arr in ((xyz_path, joints), (verts_path, verts)):
                if len(arr) != n:
                    raise DatasetError(f"{_NAME}: {path} has {len(arr)} entries, "
                                       f"evaluation_K.json {n}")
        samples = []
        for i in range(n):
            image = require(rgb / f"{i:08d}.jpg", _NAME, "evaluation image")
            gt = {} if joints is None else {"joints": joints[i], "vertices": verts[i]}
            meta: dict = {"index": i, "hand_side": "right"}
            if scales is not None:
                meta["scale"] = float(scales[i])
            samples.append(Sample(id=f"{i:08d}", image_path=image, crop="hand",
                                  intrinsics=Ks[i], gt=gt, meta=meta))
        return samples

    # -- scoring ----------------------------------------------------------------------------

    def score(self, sample: Sample, prediction: Prediction) -> dict[str, float]:
        """FreiHAND metrics of one prediction (see the module docstring); ``*_mm`` in mm."""
        if "joints" not in sample.gt:
            return {}
        scores: dict[str, float] = {}
        got = hand_keypoints(prediction)
        if got is not None:
            gt_j = sample.gt["joints"]
            scores["pa_mpjpe_mm"] = float(metrics.pa_mpjpe(got[1], gt_j))
            scores["mpjpe_mm"] = float(metrics.mpjpe(got[1], gt_j))
        verts = mano_vertices(prediction)
        if verts is not None:
            gt_v = sample.gt["vertices"]
            aligned = metrics.procrustes_align(verts, gt_v)
            scores["pa_pve_mm"] = float(metrics.pve(aligned, gt_v))
            scores["pve_mm"] = float(metrics.pve(verts, gt_v))
            for key, threshold in F_THRESHOLDS.items():
                scores[key] = float(metrics.f_score(aligned, gt_v, threshold))
        return scores

    # -- submission -------------------------------------------------------------------------

    def write_prediction(self, out_dir: Path, sample: Sample, prediction: Prediction) -> None:
        """Keep this sample's joints (and MANO vertices) as
        ``out_dir/freihand_predictions/<id>.npz`` for :meth:`finalize`."""
        got = hand_keypoints(prediction)
        verts = mano_vertices(prediction)
        arrays: dict[str, np.ndarray] = {}
        if got is not None:
            arrays["xyz"] = got[1]
        if verts is not None:
            arrays["verts"] = verts
        with atomic_write(Path(out_dir) / PRED_FOLDER / f"{sample.id}.npz", "wb") as fh:
            np.savez(fh, **arrays)

    def finalize(self, out_dir: Path) -> list[Path]:
        """Write ``out_dir/pred.json`` from the kept predictions (see the module docstring);
        returns ``[]`` when no prediction was kept."""
        out_dir = Path(out_dir)
        folder = out_dir / PRED_FOLDER
        samples = self.samples()
        have = [(folder / f"{s.id}.npz").exists() for s in samples]
        if not any(have):
            return []
        count = have.index(False) if not all(have) else len(have)
        later = [s.id for s, h in zip(samples[count:], have[count:]) if h]
        if later:
            raise DatasetError(
                f"{_NAME}: sample {samples[count].id} has no prediction but {later[0]} does; "
                "pred.json is indexed by position, so every sample before the last one "
                "predicted needs a prediction")
        xyz_rows: list[str] = []
        vert_rows: list[str] = []
        no_mesh: list[str] = []
        for sample in samples[:count]:
            with np.load(folder / f"{sample.id}.npz") as data:
                if "xyz" not in data:
                    raise DatasetError(
                        f"{_NAME}: the prediction for sample {sample.id} has no hand "
                        "keypoints (keypoints['mediapipe_hand_right'] or '_left'); pred.json "
                        "needs 21 joints for every sample")
                xyz_rows.append(json.dumps(data["xyz"].tolist()))
                if self.joints_only:
                    vert_rows.append("[]")
                elif "verts" in data:
                    vert_rows.append(json.dumps(data["verts"].tolist()))
                else:
                    no_mesh.append(sample.id)
        if no_mesh:
            raise DatasetError(
                f"{_NAME}: {len(no_mesh)} of {count} predictions (first: sample {no_mesh[0]}) "
                "have no MANO mesh (topology 'mano', 778 vertices), which pred.json needs; "
                "pass extra joints_only=1 to write the joints with empty vertex lists "
                "(FreiHAND's eval.py cannot score that file)")
        path = out_dir / "pred.json"
        with atomic_write(path, "w") as fh:
            fh.write("[[" + ", ".join(xyz_rows) + "], [" + ", ".join(vert_rows) + "]]")
        return [path]
