"""NoW ("Not quite in-the-Wild", RingNet) face benchmark: prediction writer only.

**Layout** under the data root (the official ``NoW_Dataset`` download; furpe never fetches
it):

* ``imagepathsvalidation.txt`` / ``imagepathstest.txt``: one image per line,
  ``<subject>/<challenge>/<image>.jpg`` relative to ``iphone_pictures`` (challenge one of
  ``multiview_neutral``, ``multiview_expressions``, ``multiview_occlusions``, ``selfie``);
  looked for in the data root, then in ``final_release_version/``;
* ``final_release_version/iphone_pictures/<subject>/<challenge>/<image>.jpg``;
* ``final_release_version/detected_face/<subject>/<challenge>/<image>.npy`` (optional): the
  organisers' face box, a pickled dict with ``left``, ``top``, ``right``, ``bottom`` pixels.

``extra["split"]``: ``validation`` (default, ``val`` accepted) or ``test``. A missing image
list is a :class:`DatasetError` naming it; so is a listed image that is missing.

**Sample.** ``id`` = the list entry without extension (``<subject>/<challenge>/<stem>``),
``crop="head"``, no intrinsics; ``gt["box"]`` = the detected face box (x0, y0, x1, y1) when
its file exists (a detection shipped with the benchmark, used to pick the face, not ground
truth of the shape); ``meta``: ``subject``, ``challenge``, ``stem``, ``list_entry``.

**Scores.** None: the ground-truth scans are private to the organisers (validation scans on
request), and the NoW error (a rigid alignment of the mesh to the scan initialised from 7
landmarks, refined on the surface, then scan-to-mesh distances; median / mean / std in mm) is
computed by the official ``now_evaluation`` code. :meth:`NoW.score` returns ``{}``.

**Submission** (:meth:`NoW.write_prediction`), the layout ``now_evaluation`` reads:

* ``out_dir/predicted_meshes/<subject>/<challenge>/<stem>.obj``: the predicted mesh
  (``prediction.vertices`` / ``faces``), metres, plain ``v x y z`` / ``f i j k`` lines (the
  official loader cannot read vertex colours). ``extra["mesh_part"]=<part>`` writes only
  that part of ``prediction.part_vertices`` (e.g. ``face``), keeping the triangles whose three
  corners are in it; by default the whole mesh is written (the scan-to-mesh distance only
  looks for the nearest surface, so extra surface does not count as error).
* ``.../<stem>.npy``: the 7 landmarks as a (7, 3) float array in the same frame and units,
  in the NoW order (their ``scan2mesh_computations.compute_mask`` uses 0/3 as outer eye
  corners, 1/2 as inner eye corners, 4 as the nose bottom):

  ====  =================================  =========  ==================
  NoW   point                               iBUG-68    MediaPipe Face Mesh
  ====  =================================  =========  ==================
  0     right eye, outer corner (subject)  36         33
  1     right eye, inner corner            39         133
  2     left eye, inner corner             42         362
  3     left eye, outer corner             45         263
  4     nose bottom (subnasale)            33         2
  5     right mouth corner                 48         61
  6     left mouth corner                  54         291
  ====  =================================  =========  ==================

  They come from ``prediction.keypoints["now7"]`` when a method gives them directly (e.g.
  from a FLAME landmark embedding), else from ``keypoints["mediapipe_face"]`` (468 or 478
  points) at :data:`MEDIAPIPE_NOW7`. MediaPipe's ``noseBottom`` (2) is used rather than its
  ``noseTip`` (1) because NoW's fifth point is the nose bottom (iBUG 33).

A prediction without a mesh or without those landmarks cannot be submitted and raises
:class:`DatasetError`. Files are written atomically (temporary name, then ``os.replace``).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from furpe.core.vocab import FACE_TO_NOW7, NOW7
from furpe.datasets.base import (
    Dataset,
    DatasetError,
    Prediction,
    ProtocolOptions,
    Sample,
    require,
)
from furpe.io.outputs import atomic_write

__all__ = ["NoW", "CHALLENGES", "IMAGE_LISTS", "MEDIAPIPE_NOW7", "NOW7_NAMES",
           "now_landmarks", "write_obj"]

_NAME = "now"
RELEASE = "final_release_version"
#: Image list file per split.
IMAGE_LISTS = {"validation": "imagepathsvalidation.txt", "test": "imagepathstest.txt"}
_SPLIT_ALIASES = {"val": "validation", "validation": "validation", "test": "test"}
CHALLENGES = ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie")
NOW7_NAMES = NOW7
#: MediaPipe Face Mesh indices of the 7 NoW landmarks, in NoW order.
MEDIAPIPE_NOW7 = FACE_TO_NOW7
PRED_FOLDER = "predicted_meshes"


def now_landmarks(prediction: Prediction) -> np.ndarray | None:
    """The (7, 3) NoW landmarks of a prediction (``keypoints["now7"]``, else MediaPipe Face
    Mesh points), or ``None`` without either."""
    if "now7" in prediction.keypoints:
        lm = np.asarray(prediction.keypoints["now7"], dtype=np.float64)
        if lm.shape != (7, 3):
            raise DatasetError(f"{_NAME}: keypoints['now7'] must be (7, 3), got {lm.shape}")
        return lm
    if "mediapipe_face" in prediction.keypoints:
        face = np.asarray(prediction.keypoints["mediapipe_face"], dtype=np.float64)
        if face.ndim != 2 or face.shape[1] != 3 or face.shape[0] < 468:
            raise DatasetError(f"{_NAME}: keypoints['mediapipe_face'] must be (468 or 478, 3), "
                               f"got {face.shape}")
        return face[list(MEDIAPIPE_NOW7)]
    return None


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a plain Wavefront OBJ (``v`` and 1-based ``f`` lines, no colours) atomically."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise DatasetError(f"{_NAME}: mesh vertices must be a non-empty (V, 3) array, "
                           f"got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise DatasetError(f"{_NAME}: mesh faces must be a non-empty (F, 3) array, got {f.shape}")
    if f.min() < 0 or f.max() >= len(v):
        raise DatasetError(f"{_NAME}: mesh faces index vertices outside [0, {len(v)})")
    lines = [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in v]
    lines += [f"f {a} {b} {c}" for a, b, c in f + 1]
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def _submesh(vertices: np.ndarray, faces: np.ndarray,
             ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.unique(np.asarray(ids, dtype=np.int64))
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    new = remap[faces]
    return vertices[keep], new[(new >= 0).all(axis=1)]


class NoW(Dataset):
    """The NoW benchmark (``--dataset now``): samples and submission writer; see the module
    docstring. Scoring is the organisers'."""

    name: ClassVar[str] = _NAME
    protocol: ClassVar[str] = (
        "NoW: predictions written for the official now_evaluation code (7-landmark rigid "
        "alignment, scan-to-mesh distance, median/mean/std mm); not scored here")

    def __init__(self, root: str | Path, options: ProtocolOptions | None = None) -> None:
        super().__init__(root, options)
        split = str(self.options.extra.get("split", "validation")).strip().lower()
        if split not in _SPLIT_ALIASES:
            raise DatasetError(f"{_NAME}: unknown split '{split}'; choose validation or test")
        self.split = _SPLIT_ALIASES[split]
        self.mesh_part = self.options.extra.get("mesh_part") or None
        self._samples: list[Sample] | None = None

    def image_list(self) -> Path:
        """The split's image list (data root first, then ``final_release_version/``)."""
        name = IMAGE_LISTS[self.split]
        for folder in (self.root, self.root / RELEASE):
            if (folder / name).is_file():
                return folder / name
        return require(self.root / name, _NAME, f"{self.split} image list")

    def samples(self) -> Sequence[Sample]:
        """One sample per line of the split's image list, in list order (cached)."""
        if self._samples is None:
            self._samples = self._load()
        return self._samples

    def _load(self) -> list[Sample]:
        list_path = self.image_list()
        pictures = self.root / RELEASE / "iphone_pictures"
        boxes = self.root / RELEASE / "detected_face"
        samples = []
        seen: set[str] = set()
        for number, raw in enumerate(list_path.read_text(encoding="utf-8").splitlines(), 1):
            entry = raw.strip().replace("\\", "/")
            if not entry:
                continue
            parts = [p for p in entry.split("/") if p not in ("", ".")]
            if len(parts) < 3:
                raise DatasetError(f"{_NAME}: {list_path} line {number}: expected "
                                   f"<subject>/<challenge>/<image>, got '{entry}'")
            subject, challenge, filename = parts[-3:]
            stem = Path(filename).stem
            rel = f"{subject}/{challenge}/{filename}"
            sample_id = f"{subject}/{challenge}/{stem}"
            if sample_id in seen:
                raise DatasetError(f"{_NAME}: {list_path} lists {rel} twice")
            seen.add(sample_id)
            image = require(pictures / rel, _NAME, f"listed in {list_path.name}")
            gt = {}
            box_path = boxes / subject / challenge / f"{stem}.npy"
            if box_path.exists():
                gt["box"] = self._read_box(box_path)
            samples.append(Sample(
                id=sample_id, image_path=image, crop="head", gt=gt,
                meta={"subject": subject, "challenge": challenge, "stem": stem,
                      "list_entry": entry}))
        return samples

    @staticmethod
    def _read_box(path: Path) -> np.ndarray:
        """The organisers' face box (x0, y0, x1, y1); their files are pickled dicts."""
        try:
            data = np.load(path, allow_pickle=True, encoding="latin1")
            box = data.item() if data.dtype == object else data
            if isinstance(box, dict):
                return np.array([box["left"], box["top"], box["right"], box["bottom"]],
                                dtype=np.float64)
            arr = np.asarray(box, dtype=np.float64).reshape(-1)
            if arr.shape == (4,):
                return arr
        except (OSError, ValueError, KeyError, pickle.UnpicklingError):
            pass
        raise DatasetError(f"{_NAME}: cannot read the face box {path} "
                           "(expected a dict with left, top, right, bottom)")

    def score(self, sample: Sample, prediction: Prediction) -> dict[str, float]:
        """``{}``: NoW errors come from the organisers' evaluation (see the module docstring)."""
        return {}

    def prediction_paths(self, out_dir: Path, sample: Sample) -> tuple[Path, Path]:
        """``(obj, npy)`` paths of one sample's submission files."""
        folder = (Path(out_dir) / PRED_FOLDER / sample.meta["subject"]
                  / sample.meta["challenge"])
        stem = sample.meta["stem"]
        return folder / f"{stem}.obj", folder / f"{stem}.npy"

    def write_prediction(self, out_dir: Path, sample: Sample, prediction: Prediction) -> None:
        """Write ``<stem>.obj`` (mesh, metres) and ``<stem>.npy`` (7 landmarks) for one
        sample; :class:`DatasetError` when the prediction lacks either."""
        if prediction.vertices is None or prediction.faces is None:
            raise DatasetError(f"{_NAME}: the prediction for {sample.id} has no mesh; NoW "
                               "needs one per image")
        landmarks = now_landmarks(prediction)
        if landmarks is None:
            raise DatasetError(
                f"{_NAME}: the prediction for {sample.id} has no face landmarks "
                "(keypoints['mediapipe_face'] or keypoints['now7']); NoW's alignment needs "
                "the 7 landmarks")
        verts = np.asarray(prediction.vertices, dtype=np.float64)
        faces = np.asarray(prediction.faces, dtype=np.int64)
        if self.mesh_part is not None:
            if self.mesh_part not in prediction.part_vertices:
                raise DatasetError(
                    f"{_NAME}: mesh_part '{self.mesh_part}' is not a part of the prediction "
                    f"for {sample.id} (parts: {', '.join(prediction.part_vertices) or 'none'})")
            verts, faces = _submesh(verts, faces, prediction.part_vertices[self.mesh_part])
        obj_path, npy_path = self.prediction_paths(out_dir, sample)
        write_obj(obj_path, verts, faces)
        with atomic_write(npy_path, "wb") as fh:
            np.save(fh, landmarks.astype(np.float64))
