"""EHF (Expressive Hands and Faces, from the SMPL-X paper): whole-body evaluation.

**Layout** under the data root (the official download; furpe never fetches it), for each
index ``XX`` (``01`` ... ``100``):

* ``XX_img.png`` or ``XX_img.jpg``: the image;
* ``XX_2Djnt.json``: OpenPose keypoints (``people[0]``: ``pose_keypoints_2d``,
  ``hand_left_keypoints_2d``, ``hand_right_keypoints_2d``, ``face_keypoints_2d``);
* ``XX_align.ply``: the ground-truth SMPL-X mesh (10,475 vertices in the real data), world frame.

FuRPE's sub-folder layout is accepted too: ``images/XX_img.png``, ``keypoints/XX_2Djnt.json``,
``alignments/XX_align.ply``. Samples are the images found, in index order; each needs its
``_2Djnt.json`` and ``_align.ply`` (a :class:`DatasetError` names the first one missing). The
vertex count is read from the file, not assumed.

**Camera.** One fixed camera for all images: ``v_cam = v R(rvec)^T + t`` with
:data:`EHF_RVEC` (Rodrigues) and :data:`EHF_T`, intrinsics :data:`EHF_K`. Ground-truth
``vertices`` (and ``joints``) are in that camera frame, metres.

**Sample.** ``id`` = ``"XX"``, ``crop="full"``, ``intrinsics`` = :data:`EHF_K`, ``gt``:
``vertices`` (V, 3), ``joints`` (14, 3, J14) when ``options.gt_regressor`` is given, ``box``
(x0, y0, x1, y1) around the OpenPose keypoints with confidence above 0.1 (left out when none
is); ``meta``: ``index`` (int).

**Scores** (:meth:`EHF.score`; metres in, millimetres out):

* ``pa_pve_mm``: when ``prediction.topology == "smplx"``: per-vertex error over all vertices
  after a similarity Procrustes fit of the prediction onto the ground truth (FuRPE's
  "PA-V2V").
* ``pa_pve_left_hand_mm``, ``pa_pve_right_hand_mm``, ``pa_pve_face_mm``, ``pa_pve_body_mm``:
  SMPL-X predictions, when ``options.part_ids`` is the folder holding the user's
  ``MANO_SMPLX_vertex_ids.pkl`` (a dict with ``left_hand`` and ``right_hand`` vertex indices)
  and ``SMPL-X__FLAME_vertex_ids.npy`` (the face); body = every other vertex. Procrustes is
  re-fitted on each part alone (FuRPE's protocol), so a part's number measures its shape and
  articulation, not its placement on the body.
* ``pve_mm``: SMPL-X predictions with a ground-truth regressor: per-vertex error after a
  translation only, the one that puts the predicted J14 mid-hip on the ground truth's (the
  same alignment as ``mpjpe14_mm``; ``options.alignment="none"``: no alignment). Monocular
  depth and placement are ambiguous, so translation is removed, but rotation and scale errors
  count: a complement to ``pa_pve_mm``. FuRPE computes a pelvis-aligned V2V but discards it.
* ``pa_mpjpe14_mm`` and ``mpjpe14_mm`` (mid-hip aligned by default): with
  ``options.gt_regressor`` (``SMPLX_to_J14.pkl``, (14, V)). The predicted J14 come from
  ``options.pred_regressor``, else, for an SMPL-X prediction, from the ground-truth
  regressor (as FuRPE does), else ``keypoints["j14"]``; otherwise the limbs12 fallback gives
  ``pa_mpjpe_limbs12_mm`` and ``mpjpe_limbs12_mm`` (see :mod:`furpe.datasets.joints`).
  Without a ground-truth regressor no joint metric is reported.

Metrics a prediction cannot support (a mesh of another topology) are left out.
"""
from __future__ import annotations

import json
import pickle
import re
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

__all__ = ["EHF", "EHF_RVEC", "EHF_T", "EHF_K", "EHF_ROTATION", "PART_ID_FILES",
           "read_ply_mesh", "rodrigues", "world_to_camera", "load_part_ids"]

#: World-to-camera rotation of the EHF camera, as a Rodrigues vector.
EHF_RVEC = np.array([-2.9874789618512025, 0.011724572107320893, -0.05704686818955933])
#: World-to-camera translation of the EHF camera, metres.
EHF_T = np.array([-0.03609917, 0.43416458, 2.37101226])
#: Intrinsics of the EHF camera, pixels.
EHF_K = np.array([[1498.22426237, 0.0, 790.263706],
                  [0.0, 1498.22426237, 578.90334],
                  [0.0, 0.0, 1.0]])

#: The part-id files expected in the ``options.part_ids`` folder.
PART_ID_FILES = ("MANO_SMPLX_vertex_ids.pkl", "SMPL-X__FLAME_vertex_ids.npy")
_NAME = "ehf"
_IMAGE_RE = re.compile(r"^(\d+)_img\.(png|jpg|jpeg)$", re.IGNORECASE)
_OPENPOSE_KEYS = ("pose_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
                  "face_keypoints_2d")


def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """The (3, 3) rotation matrix of a Rodrigues (axis-angle) vector."""
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * (kx @ kx)


#: World-to-camera rotation matrix of the EHF camera.
EHF_ROTATION = rodrigues(EHF_RVEC)


def world_to_camera(vertices: np.ndarray) -> np.ndarray:
    """EHF world-frame points (N, 3) in the camera frame: ``v R^T + t``."""
    return np.asarray(vertices, dtype=np.float64) @ EHF_ROTATION.T + EHF_T


# ---------------------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _ply_header(data: bytes, path: Path) -> tuple[str, list[dict], int]:
    """(format, elements, offset of the body) of a PLY file."""
    if not data.startswith(b"ply"):
        raise DatasetError(f"{_NAME}: {path} is not a PLY file")
    match = re.search(rb"end_header[ \t]*\r?\n", data)
    if match is None:
        raise DatasetError(f"{_NAME}: {path}: PLY header has no end_header")
    fmt = ""
    elements: list[dict] = []
    for raw in data[:match.start()].decode("ascii", errors="replace").splitlines():
        tok = raw.split()
        if not tok or tok[0] in ("ply", "comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property" and elements:
            if tok[1] == "list":
                elements[-1]["props"].append((tok[4], "list", _PLY_TYPES[tok[2]],
                                              _PLY_TYPES[tok[3]]))
            else:
                elements[-1]["props"].append((tok[2], "scalar", _PLY_TYPES[tok[1]], None))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DatasetError(f"{_NAME}: {path}: unsupported PLY format '{fmt}'")
    return fmt, elements, match.end()


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Triangles of polygons (fan triangulation)."""
    tris = [(p[0], p[k], p[k + 1]) for p in polys for k in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _read_ascii(body: bytes, elements: list[dict]) -> dict[str, object]:
    lines = iter(body.decode("ascii", errors="replace").splitlines())
    out: dict[str, object] = {}
    for el in elements:
        rows = []
        for _ in range(el["count"]):
            line = next(lines).split()
            while not line:
                line = next(lines).split()
            rows.append(line)
        if all(kind == "scalar" for _, kind, _, _ in el["props"]):
            names = [n for n, _, _, _ in el["props"]]
            arr = np.asarray(rows, dtype=np.float64).reshape(el["count"], len(names))
            out[el["name"]] = {n: arr[:, i] for i, n in enumerate(names)}
        else:  # faces: assume the list is the first property (as written by every exporter)
            out[el["name"]] = [[int(v) for v in r[1:1 + int(r[0])]] for r in rows]
    return out


def _read_binary(body: bytes, elements: list[dict], endian: str, path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    pos = 0
    for el in elements:
        props, n = el["props"], el["count"]
        lists = [i for i, (_, kind, _, _) in enumerate(props) if kind == "list"]
        if not lists:
            dt = np.dtype([(name, endian + t) for name, _, t, _ in props])
            arr = np.frombuffer(body, dtype=dt, count=n, offset=pos)
            pos += n * dt.itemsize
            out[el["name"]] = {name: arr[name].astype(np.float64) for name, _, _, _ in props}
            continue
        if len(lists) == 1 and n > 0:
            # Fast path: every list as long as the first record's (e.g. all triangles).
            li = lists[0]
            before = sum(np.dtype(endian + t).itemsize for _, _, t, _ in props[:li])
            cnt_t = props[li][2]
            first = int(np.frombuffer(body, dtype=endian + cnt_t, count=1, offset=pos + before)[0])
            fields = []
            for name, kind, t, item in props:
                if kind == "list":
                    fields += [("__count", endian + t), ("__items", endian + item, (first,))]
                else:
                    fields.append((name, endian + t))
            dt = np.dtype(fields)
            if pos + n * dt.itemsize <= len(body):
                arr = np.frombuffer(body, dtype=dt, count=n, offset=pos)
                if np.all(arr["__count"] == first):
                    pos += n * dt.itemsize
                    items = arr["__items"].astype(np.int64).reshape(n, first)
                    out[el["name"]] = items if first == 3 else [list(map(int, r)) for r in items]
                    continue
        # Slow path: variable-length lists, record by record.
        polys: list[list[int]] = []
        for _ in range(n):
            poly: list[int] | None = None
            for _, kind, t, item in props:
                if kind == "list":
                    cnt_dt, it_dt = np.dtype(endian + t), np.dtype(endian + item)
                    count = int(np.frombuffer(body, dtype=cnt_dt, count=1, offset=pos)[0])
                    pos += cnt_dt.itemsize
                    vals = np.frombuffer(body, dtype=it_dt, count=count, offset=pos)
                    pos += count * it_dt.itemsize
                    if poly is None:
                        poly = [int(v) for v in vals]
                else:
                    pos += np.dtype(endian + t).itemsize
            polys.append(poly or [])
        out[el["name"]] = polys
    if pos > len(body):
        raise DatasetError(f"{_NAME}: {path}: truncated PLY file")
    return out


def read_ply_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and triangles (F, 3) int64 of an ASCII or binary PLY mesh.

    Any vertex properties besides ``x, y, z`` and any other elements are skipped; polygon
    faces are fan-triangulated; a file without faces gives (0, 3) triangles.

    Raises:
        DatasetError: the file is missing, not a PLY mesh, or truncated.
    """
    path = Path(path)
    require(path, _NAME, "ground-truth mesh")
    data = path.read_bytes()
    fmt, elements, start = _ply_header(data, path)
    body = data[start:]
    try:
        if fmt == "ascii":
            parsed = _read_ascii(body, elements)
        else:
            parsed = _read_binary(body, elements, "<" if fmt == "binary_little_endian" else ">",
                                  path)
    except (StopIteration, ValueError, IndexError, KeyError) as exc:
        raise DatasetError(f"{_NAME}: {path}: truncated or malformed PLY file ({exc})") from exc
    vertex = parsed.get("vertex")
    if not isinstance(vertex, dict) or not {"x", "y", "z"} <= set(vertex):
        raise DatasetError(f"{_NAME}: {path}: PLY file has no vertex x, y, z")
    verts = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64)
    faces = parsed.get("face", [])
    tris = faces if isinstance(faces, np.ndarray) else _fan(faces)  # type: ignore[arg-type]
    if tris.size and (tris.min() < 0 or tris.max() >= len(verts)):
        raise DatasetError(f"{_NAME}: {path}: face indices out of range")
    return verts, tris.reshape(-1, 3).astype(np.int64)


# ---------------------------------------------------------------------------------------
# Part ids
# ---------------------------------------------------------------------------------------

def load_part_ids(folder: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    """``left_hand``, ``right_hand``, ``face`` and ``body`` vertex indices of an SMPL-X mesh.

    Args:
        folder: holds ``MANO_SMPLX_vertex_ids.pkl`` and ``SMPL-X__FLAME_vertex_ids.npy`` (a
            path to one of those files is taken as its folder).
        num_vertices: the mesh's vertex count; every index must be below it.

    Raises:
        DatasetError: a file is missing or malformed, or an index is out of range.
    """
    folder = Path(folder).expanduser()
    if folder.is_file():
        folder = folder.parent
    mano_path = require(folder / PART_ID_FILES[0], _NAME, "hand vertex ids for per-part errors")
    flame_path = require(folder / PART_ID_FILES[1], _NAME, "face vertex ids for per-part errors")
    try:
        with open(mano_path, "rb") as fh:
            mano = pickle.load(fh, encoding="latin1")
        face = np.asarray(np.load(flame_path, allow_pickle=False), dtype=np.int64).reshape(-1)
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{_NAME}: cannot read part-id files in {folder}: {exc}") from exc
    if not isinstance(mano, dict) or not {"left_hand", "right_hand"} <= set(mano):
        raise DatasetError(f"{_NAME}: {mano_path} must hold a dict with 'left_hand' and "
                           "'right_hand' vertex indices")
    parts = {
        "left_hand": np.asarray(mano["left_hand"], dtype=np.int64).reshape(-1),
        "right_hand": np.asarray(mano["right_hand"], dtype=np.int64).reshape(-1),
        "face": face,
    }
    for name, idx in parts.items():
        if idx.size == 0 or idx.min() < 0 or idx.max() >= num_vertices:
            src = flame_path if name == "face" else mano_path
            raise DatasetError(f"{_NAME}: {src}: '{name}' indices must be non-empty and in "
                               f"[0, {num_vertices}), the ground-truth vertex count")
    rest = np.ones(num_vertices, dtype=bool)
    for idx in parts.values():
        rest[idx] = False
    parts["body"] = np.nonzero(rest)[0]
    return parts


# ---------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------

def _openpose_points(path: Path) -> np.ndarray:
    """(K, 3) (x, y, confidence) of the first person of an OpenPose JSON (K may be 0)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{_NAME}: cannot read OpenPose keypoints {path}: {exc}") from exc
    people = doc.get("people") if isinstance(doc, dict) else None
    if not people:
        return np.zeros((0, 3))
    person = people[0]
    chunks = [np.asarray(person.get(k) or [], dtype=np.float64).reshape(-1, 3)
              for k in _OPENPOSE_KEYS]
    return np.concatenate(chunks, 0)


class EHF(Dataset):
    """The EHF reader (``--dataset ehf``); see the module docstring for layout and metrics.

    Options used: ``gt_regressor`` (J14 of the ground truth), ``pred_regressor``,
    ``part_ids`` (folder of the SMPL-X part-id files), ``alignment`` (non-PA values).
    """

    name: ClassVar[str] = "ehf"
    protocol: ClassVar[str] = (
        "EHF: SMPL-X ground truth in the fixed camera frame; PA-PVE (all and per part, "
        "Procrustes re-fitted per part), PVE and MPJPE-14 aligned at the J14 mid-hip, "
        "PA-MPJPE-14 (SMPLX_to_J14); limbs12 (MediaPipe) fallback reported separately"
    )

    def __init__(self, root: str | Path, options: ProtocolOptions | None = None) -> None:
        super().__init__(root, options)
        opts = self.options
        if opts.part_ids is not None:
            folder = Path(opts.part_ids).expanduser()
            folder = folder.parent if folder.is_file() else folder
            for fname in PART_ID_FILES:
                require(folder / fname, self.name, "part vertex ids (--part-ids)")
        self.joints = JointProtocol.from_files(self.name, opts.gt_regressor,
                                               opts.pred_regressor, opts.alignment)
        self._samples: list[Sample] | None = None
        self._parts: dict[int, dict[str, np.ndarray]] = {}

    def _folders(self) -> tuple[Path, Path, Path]:
        """(images, keypoints, alignments) folders of the flat or the sub-folder layout."""
        if (self.root / "images").is_dir():
            return self.root / "images", self.root / "keypoints", self.root / "alignments"
        return self.root, self.root, self.root

    def samples(self) -> Sequence[Sample]:
        """One sample per image, in index order (cached after the first call)."""
        if self._samples is not None:
            return self._samples
        img_dir, kp_dir, al_dir = self._folders()
        found: dict[int, tuple[str, Path]] = {}
        for p in sorted(img_dir.iterdir()):
            m = _IMAGE_RE.match(p.name)
            if m and p.is_file():
                found.setdefault(int(m.group(1)), (m.group(1), p))
        if not found:
            raise DatasetError(
                f"{self.name}: no images (XX_img.png or XX_img.jpg) in {img_dir}; expected the "
                "official EHF folder (XX_img.png, XX_2Djnt.json, XX_align.ply) or its images/, "
                "keypoints/, alignments/ sub-folders"
            )
        samples = []
        for index in sorted(found):
            stem, image = found[index]
            ply = require(al_dir / f"{stem}_align.ply", self.name,
                          f"ground-truth mesh of {image.name}")
            kp_file = require(kp_dir / f"{stem}_2Djnt.json", self.name,
                              f"OpenPose keypoints of {image.name}")
            verts, _ = read_ply_mesh(ply)
            cam = world_to_camera(verts)
            gt: dict[str, np.ndarray] = {"vertices": cam}
            if self.joints.gt is not None:
                gt["joints"] = self.joints.gt_joints(cam, f"{ply}")
            box = keypoint_box(_openpose_points(kp_file), 0.1)
            if box is not None:
                gt["box"] = box
            samples.append(Sample(id=stem, image_path=image, crop="full",
                                  intrinsics=EHF_K.copy(), gt=gt, meta={"index": index}))
        self._samples = samples
        return samples

    def part_ids(self, num_vertices: int) -> dict[str, np.ndarray] | None:
        """The ground-truth part vertex indices (``None`` without ``options.part_ids``)."""
        if self.options.part_ids is None:
            return None
        if num_vertices not in self._parts:
            self._parts[num_vertices] = load_part_ids(self.options.part_ids, num_vertices)
        return self._parts[num_vertices]

    def score(self, sample: Sample, prediction: Prediction) -> dict[str, float]:
        """EHF metrics of one prediction (see the module docstring); ``*_mm`` in mm."""
        gt_v = sample.gt["vertices"]
        scores: dict[str, float] = {}
        smplx_mesh = prediction.topology == "smplx" and prediction.vertices is not None
        if smplx_mesh:
            pred_v = np.asarray(prediction.vertices, dtype=np.float64)
            if pred_v.shape != gt_v.shape:
                raise DatasetError(
                    f"{self.name}: the SMPL-X prediction for sample {sample.id} has "
                    f"{pred_v.shape[0]} vertices, the ground truth {gt_v.shape[0]}"
                )
            scores["pa_pve_mm"] = float(metrics.pa_pve(pred_v, gt_v))
            parts = self.part_ids(len(gt_v))
            if parts is not None:
                for part, value in metrics.part_pa_pve(pred_v, gt_v, parts).items():
                    scores[f"pa_pve_{part}_mm"] = float(value)
        gt_j = sample.gt.get("joints")
        scores.update(self.joints.score(prediction, gt_j, same_topology_as_gt=smplx_mesh))
        if smplx_mesh and gt_j is not None:
            got = self.joints.pred_joints(prediction, same_topology_as_gt=True)
            if got is not None and got[0] == "j14":
                scores["pve_mm"] = self.joints.aligned_pve(pred_v, gt_v, got[1], gt_j)
        return scores
