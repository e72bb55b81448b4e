"""EHF reader and the shared J14 / limbs12 helpers, on a tiny synthetic EHF folder.

Nothing here is real EHF data: the "ground-truth meshes" are small random meshes, the J14
regressor and the part ids are invented, in the real file layouts.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.sparse
from scipy.spatial.transform import Rotation

from furpe.datasets import DatasetError, Prediction, ProtocolOptions, load_dataset
from furpe.datasets.ehf import EHF, EHF_K, EHF_ROTATION, EHF_RVEC, EHF_T, read_ply_mesh
from furpe.core.vocab import MEDIAPIPE_POSE as MEDIAPIPE_POSE_NAMES
from furpe.datasets.joints import (
    J14_HIPS,
    J14_NAMES,
    MEDIAPIPE_TO_LIMBS12,
    JointProtocol,
    j14_rows,
    load_regressor,
    resolve_alignment,
)
from furpe.io.outputs import write_ply

V = 40
HAND_L, HAND_R, FACE = np.arange(0, 6), np.arange(6, 12), np.arange(12, 22)


def _world_mesh(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    verts = rng.normal([0.0, 0.3, 0.0], [0.2, 0.5, 0.1], (V, 3))
    verts = verts.astype(np.float32).astype(np.float64)  # exact through float32 PLY
    faces = rng.integers(0, V, (30, 3))
    return verts, faces


def _write_ascii_ply(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """ASCII PLY with an extra vertex property, a comment and one quad (split by the reader)."""
    lines = ["ply", "format ascii 1.0", "comment synthetic EHF alignment",
             f"element vertex {len(verts)}", "property float x", "property float y",
             "property float z", "property float confidence",
             f"element face {len(faces) + 1}", "property list uchar int vertex_indices",
             "end_header"]
    lines += [f"{float(x)!r} {float(y)!r} {float(z)!r} 1.0" for x, y, z in verts]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    lines.append("4 0 1 2 3")
    path.write_text("\n".join(lines) + "\n")


def _openpose(with_people: bool = True) -> dict:
    body = np.zeros((25, 3))
    body[:, 0] = np.linspace(600, 900, 25)
    body[:, 1] = np.linspace(200, 1000, 25)
    body[:, 2] = 0.9
    body[3] = (10.0, 10.0, 0.05)  # low confidence: outside the box
    left = np.tile([950.0, 500.0, 0.5], (21, 1))
    left[0] = (1200.0, 50.0, 0.1)  # exactly 0.1: not above the threshold
    right = np.tile([550.0, 480.0, 0.5], (21, 1))
    face = np.tile([760.0, 150.0, 0.8], (70, 1))
    person = {"pose_keypoints_2d": body.ravel().tolist(),
              "hand_left_keypoints_2d": left.ravel().tolist(),
              "hand_right_keypoints_2d": right.ravel().tolist(),
              "face_keypoints_2d": face.ravel().tolist()}
    return {"version": 1.3, "people": [person] if with_people else []}


EXPECTED_BOX = np.array([550.0, 150.0, 950.0, 1000.0])


def _regressor(n_rows: int, n_cols: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    reg = rng.random((n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.3)
    reg[:, 0] += 1e-3
    return reg / reg.sum(1, keepdims=True)


@pytest.fixture()
def ehf(tmp_path) -> dict:
    root = tmp_path / "EHF"
    root.mkdir()
    meshes = {}
    for idx, ext in ((1, "png"), (2, "jpg")):
        stem = f"{idx:02d}"
        verts, faces = _world_mesh(idx)
        meshes[stem] = verts
        cv2.imwrite(str(root / f"{stem}_img.{ext}"), np.zeros((8, 8, 3), np.uint8))
        (root / f"{stem}_2Djnt.json").write_text(json.dumps(_openpose()))
        if idx == 1:
            _write_ascii_ply(root / f"{stem}_align.ply", verts, faces)
        else:
            write_ply(root / f"{stem}_align.ply", verts, faces)
    (root / "01_scan.obj").write_text("# ignored\n")
    models = tmp_path / "models"
    models.mkdir()
    reg = _regressor(14, V)
    with open(models / "SMPLX_to_J14.pkl", "wb") as fh:
        pickle.dump(reg, fh, protocol=2)
    parts = models / "parts"
    parts.mkdir()
    with open(parts / "MANO_SMPLX_vertex_ids.pkl", "wb") as fh:
        pickle.dump({"left_hand": HAND_L, "right_hand": HAND_R}, fh, protocol=2)
    np.save(parts / "SMPL-X__FLAME_vertex_ids.npy", FACE)
    return {"root": root, "meshes": meshes, "reg": reg, "reg_path": models / "SMPLX_to_J14.pkl",
            "parts": parts, "models": models}


def _options(ehf: dict, **kw) -> ProtocolOptions:
    kw.setdefault("gt_regressor", ehf["reg_path"])
    kw.setdefault("part_ids", ehf["parts"])
    return ProtocolOptions(**kw)


def _similarity(points: np.ndarray, scale: float = 1.1) -> np.ndarray:
    rot = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    return scale * points @ rot.T + np.array([0.1, -0.05, 0.3])


# --- samples --------------------------------------------------------------------------------

def test_samples_camera_frame_box_and_meta(ehf):
    ds = load_dataset("ehf", ehf["root"], _options(ehf))
    assert isinstance(ds, EHF)
    samples = ds.samples()
    assert [s.id for s in samples] == ["01", "02"]
    assert [s.image_path.name for s in samples] == ["01_img.png", "02_img.jpg"]
    rot_cv, _ = cv2.Rodrigues(np.array(EHF_RVEC).reshape(3, 1))
    np.testing.assert_allclose(EHF_ROTATION, rot_cv, atol=1e-12)
    for s in samples:
        world = ehf["meshes"][s.id]
        expected = np.array([rot_cv @ v + np.array(EHF_T) for v in world])  # by hand
        np.testing.assert_allclose(s.gt["vertices"], expected, atol=1e-12)
        np.testing.assert_allclose(s.gt["joints"], ehf["reg"] @ expected, atol=1e-12)
        assert s.gt["joints"].shape == (14, 3)
        np.testing.assert_allclose(s.gt["box"], EXPECTED_BOX)
        np.testing.assert_allclose(s.intrinsics, [[1498.22426237, 0, 790.263706],
                                                  [0, 1498.22426237, 578.90334], [0, 0, 1]])
        np.testing.assert_array_equal(s.intrinsics, EHF_K)
        assert s.crop == "full" and s.meta == {"index": int(s.id)}
    # The EHF camera looks at the subject from about 2.4 m: points end up in front of it.
    assert np.all(samples[0].gt["vertices"][:, 2] > 1.0)
    assert ds.samples() is samples  # cached


def test_subfolder_layout_and_no_person_box(ehf, tmp_path):
    flat = ehf["root"]
    root = tmp_path / "EHF_furpe"
    for sub, pattern in (("images", "*_img.*"), ("keypoints", "*_2Djnt.json"),
                         ("alignments", "*_align.ply")):
        (root / sub).mkdir(parents=True)
        for p in flat.glob(pattern):
            shutil.copy(p, root / sub / p.name)
    (root / "keypoints" / "02_2Djnt.json").write_text(json.dumps(_openpose(False)))
    a = EHF(flat, _options(ehf)).samples()
    b = EHF(root, _options(ehf)).samples()
    assert [s.image_path.parent.name for s in b] == ["images", "images"]
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa.gt["vertices"], sb.gt["vertices"])
    assert "box" in b[0].gt and "box" not in b[1].gt


# --- scores ---------------------------------------------------------------------------------

def test_perfect_smplx_prediction_scores_zero(ehf):
    ds = EHF(ehf["root"], _options(ehf))
    s = ds.samples()[0]
    scores = ds.score(s, Prediction("smplx", vertices=s.gt["vertices"].copy()))
    assert set(scores) == {"pa_pve_mm", "pve_mm", "pa_mpjpe14_mm", "mpjpe14_mm",
                           "pa_pve_left_hand_mm", "pa_pve_right_hand_mm", "pa_pve_face_mm",
                           "pa_pve_body_mm"}
    for name, value in scores.items():
        assert value == pytest.approx(0.0, abs=1e-6), name


def test_similarity_transform_is_removed_only_by_procrustes(ehf):
    ds = EHF(ehf["root"], _options(ehf))
    s = ds.samples()[1]
    scores = ds.score(s, Prediction("smplx", vertices=_similarity(s.gt["vertices"])))
    assert scores["pa_pve_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["pa_mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    for part in ("left_hand", "right_hand", "face", "body"):
        assert scores[f"pa_pve_{part}_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["mpjpe14_mm"] > 10.0
    assert scores["pve_mm"] > 10.0


def test_translation_and_alignment_option(ehf):
    shift = np.array([0.03, 0.0, -0.04])  # 50 mm
    s = EHF(ehf["root"], _options(ehf)).samples()[0]
    pred = Prediction("smplx", vertices=s.gt["vertices"] + shift)
    mid = EHF(ehf["root"], _options(ehf)).score(s, pred)  # default: mid-hip
    assert mid["mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    assert mid["pve_mm"] == pytest.approx(0.0, abs=1e-6)
    raw = EHF(ehf["root"], _options(ehf, alignment="none")).score(s, pred)
    assert raw["mpjpe14_mm"] == pytest.approx(50.0, abs=1e-6)
    assert raw["pve_mm"] == pytest.approx(50.0, abs=1e-6)
    assert raw["pa_mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    for alignment in ("mid_hip", "standard", None):
        assert resolve_alignment(alignment, "ehf") == "mid_hip"
    for ambiguous in ("root", "procrustes"):  # J14 has no root; PA is reported anyway
        with pytest.raises(DatasetError, match="unknown alignment"):
            resolve_alignment(ambiguous, "ehf")
    with pytest.raises(DatasetError, match="unknown alignment 'pelvis'"):
        EHF(ehf["root"], _options(ehf, alignment="pelvis"))


def test_part_scores_refit_procrustes_per_part(ehf):
    ds = EHF(ehf["root"], _options(ehf))
    s = ds.samples()[0]
    verts = s.gt["vertices"].copy()
    # Left hand moved rigidly (a placement error), right hand deformed (a shape error).
    verts[HAND_L] = verts[HAND_L] @ Rotation.from_rotvec([0, 0, 0.4]).as_matrix().T + 0.05
    rng = np.random.default_rng(3)
    verts[HAND_R] += rng.normal(0.0, 0.01, (len(HAND_R), 3))
    scores = ds.score(s, Prediction("smplx", vertices=verts))
    assert scores["pa_pve_left_hand_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["pa_pve_right_hand_mm"] > 3.0
    assert scores["pa_pve_face_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["pa_pve_body_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["pa_pve_mm"] > 1.0
    parts = ds.part_ids(V)
    assert sorted(parts) == ["body", "face", "left_hand", "right_hand"]
    np.testing.assert_array_equal(parts["body"], np.arange(22, V))


def test_limbs12_fallback_from_mediapipe_pose(ehf):
    ds = EHF(ehf["root"], _options(ehf))
    s = ds.samples()[0]
    gt = s.gt["joints"]
    mp = np.full((33, 3), 9.0)  # landmarks outside the limbs12 set are ignored
    mp[list(MEDIAPIPE_TO_LIMBS12)] = gt[:12]
    # Each limbs12 joint is the MediaPipe landmark of the same name (subject's sides).
    assert [MEDIAPIPE_POSE_NAMES[i] for i in MEDIAPIPE_TO_LIMBS12] == list(J14_NAMES[:12])
    assert MEDIAPIPE_TO_LIMBS12 == (28, 26, 24, 23, 25, 27, 16, 14, 12, 11, 13, 15)
    scores = ds.score(s, Prediction("anny", vertices=np.zeros((7, 3)),
                                    keypoints={"mediapipe_pose": mp}))
    assert set(scores) == {"pa_mpjpe_limbs12_mm", "mpjpe_limbs12_mm"}
    assert scores["pa_mpjpe_limbs12_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["mpjpe_limbs12_mm"] == pytest.approx(0.0, abs=1e-6)
    off = mp.copy()
    off[28, 0] += 0.012  # right ankle 12 mm off: mean over 12 joints = 1 mm
    scores = ds.score(s, Prediction("anny", keypoints={"mediapipe_pose": off}))
    assert scores["mpjpe_limbs12_mm"] == pytest.approx(1.0, abs=1e-9)
    swapped = mp.copy()  # left/right swapped: a real error
    swapped[[11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]] = \
        mp[[12, 11, 14, 13, 16, 15, 24, 23, 26, 25, 28, 27]]
    assert ds.score(s, Prediction("anny", keypoints={"mediapipe_pose": swapped}))[
        "pa_mpjpe_limbs12_mm"] > 10.0
    with pytest.raises(DatasetError, match=r"must be \(33, 3\)"):
        ds.score(s, Prediction("anny", keypoints={"mediapipe_pose": mp[:17]}))


def test_j14_keypoints_and_pred_regressor(ehf, tmp_path):
    gt_s = EHF(ehf["root"], _options(ehf)).samples()[0]
    j14 = gt_s.gt["joints"].copy()
    j14[0, 1] += 0.014  # right ankle 14 mm off -> 1 mm mean; hips untouched
    ds = EHF(ehf["root"], _options(ehf))
    s = ds.samples()[0]
    both = {"j14": j14, "mediapipe_pose": np.zeros((33, 3))}  # j14 wins
    scores = ds.score(s, Prediction("anny", keypoints=both))
    assert set(scores) == {"pa_mpjpe14_mm", "mpjpe14_mm"}
    assert scores["mpjpe14_mm"] == pytest.approx(1.0, abs=1e-9)
    # A regressor for another topology: 14 joints = the mean of 3 vertices each.
    pred_verts = np.repeat(s.gt["joints"], 3, axis=0) + np.tile([[0.01, 0, 0], [-0.01, 0, 0],
                                                                 [0, 0, 0]], (14, 1))
    pred_reg = np.kron(np.eye(14), np.full((1, 3), 1 / 3))
    np.save(tmp_path / "anny_to_j14.npy", pred_reg)
    ds2 = EHF(ehf["root"], _options(ehf, pred_regressor=tmp_path / "anny_to_j14.npy"))
    s2 = ds2.samples()[0]
    scores = ds2.score(s2, Prediction("anny", vertices=pred_verts))
    assert scores["pa_mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DatasetError, match=r"anny_to_j14\.npy has 42 columns.*'anny' "
                                           r"prediction has 41 vertices"):
        ds2.score(s2, Prediction("anny", vertices=pred_verts[:41]))


def test_without_regressor_only_vertex_metrics(ehf):
    ds = EHF(ehf["root"], ProtocolOptions())
    s = ds.samples()[0]
    assert "joints" not in s.gt
    assert ds.score(s, Prediction("smplx", vertices=s.gt["vertices"])) == {
        "pa_pve_mm": pytest.approx(0.0, abs=1e-6)}
    assert ds.score(s, Prediction("anny", keypoints={"mediapipe_pose": np.zeros((33, 3))})) == {}
    with pytest.raises(DatasetError, match="SMPL-X prediction for sample 01 has 39 vertices, "
                                           "the ground truth 40"):
        ds.score(s, Prediction("smplx", vertices=s.gt["vertices"][:39]))
    # Another topology's mesh: no vertex metric.
    assert ds.score(s, Prediction("smpl", vertices=s.gt["vertices"])) == {}


# --- missing files and malformed inputs -------------------------------------------------------

def test_missing_files_are_named(ehf, tmp_path):
    root = ehf["root"]
    (root / "02_align.ply").unlink()
    with pytest.raises(DatasetError, match=r"missing .*02_align\.ply \(ground-truth mesh of "
                                           r"02_img\.jpg\)"):
        EHF(root, _options(ehf)).samples()
    (root / "02_img.jpg").unlink()
    (root / "01_2Djnt.json").unlink()
    with pytest.raises(DatasetError, match=r"missing .*01_2Djnt\.json"):
        EHF(root, _options(ehf)).samples()
    with pytest.raises(DatasetError, match=r"missing .*nowhere\.pkl"):
        EHF(root, _options(ehf, gt_regressor=tmp_path / "nowhere.pkl"))
    (ehf["parts"] / "SMPL-X__FLAME_vertex_ids.npy").unlink()
    with pytest.raises(DatasetError, match=r"missing .*SMPL-X__FLAME_vertex_ids\.npy"):
        EHF(root, _options(ehf))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"no images \(XX_img\.png or XX_img\.jpg\)"):
        EHF(empty, ProtocolOptions()).samples()
    with pytest.raises(DatasetError, match="is not a folder"):
        EHF(tmp_path / "absent", ProtocolOptions())


def test_regressor_must_match_mesh(ehf, tmp_path):
    np.save(tmp_path / "r.npy", _regressor(14, V + 1))
    with pytest.raises(DatasetError, match=r"r\.npy has 41 columns.*has 40 vertices"):
        EHF(ehf["root"], _options(ehf, gt_regressor=tmp_path / "r.npy")).samples()
    np.save(tmp_path / "r13.npy", _regressor(13, V))
    with pytest.raises(DatasetError, match=r"r13\.npy has shape \(13, 40\); expected \(14, V\)"):
        EHF(ehf["root"], _options(ehf, gt_regressor=tmp_path / "r13.npy"))


def test_part_ids_out_of_range(ehf):
    np.save(ehf["parts"] / "SMPL-X__FLAME_vertex_ids.npy", np.array([3, V + 5]))
    ds = EHF(ehf["root"], _options(ehf))
    s = ds.samples()[0]
    with pytest.raises(DatasetError, match=r"'face' indices must be non-empty and in \[0, 40\)"):
        ds.score(s, Prediction("smplx", vertices=s.gt["vertices"]))


def test_regressor_file_formats(tmp_path):
    reg = _regressor(14, 9)
    np.save(tmp_path / "a.npy", reg)
    np.savez(tmp_path / "b.npz", J_regressor=reg, other=np.zeros(2))
    np.savez(tmp_path / "c.npz", reg)
    for name, obj in (("d.pkl", reg), ("e.pkl", scipy.sparse.csc_matrix(reg)),
                      ("f.pkl", {"J_regressor": scipy.sparse.csr_matrix(reg)})):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    for name in ("a.npy", "b.npz", "c.npz", "d.pkl", "e.pkl", "f.pkl"):
        got = load_regressor(tmp_path / name, "ehf")
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, reg, err_msg=name)
    h36m = _regressor(17, 9)
    np.testing.assert_array_equal(j14_rows(h36m, "h", "3dpw")[6], h36m[16])
    np.savez(tmp_path / "g.npz", a=reg, b=reg)
    with pytest.raises(DatasetError, match=r"g\.npz holds arrays \['a', 'b'\]"):
        load_regressor(tmp_path / "g.npz", "ehf")
    np.save(tmp_path / "h.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DatasetError, match=r"h\.npy has shape \(2, 3, 4\); expected a 2-D"):
        load_regressor(tmp_path / "h.npy", "ehf")
    (tmp_path / "i.txt").write_text("1 2 3")
    with pytest.raises(DatasetError, match=r"must be \.npy, \.npz or \.pkl"):
        load_regressor(tmp_path / "i.txt", "ehf")
    (tmp_path / "j.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"cannot read regressor file .*j\.pkl"):
        load_regressor(tmp_path / "j.pkl", "ehf")
    proto = JointProtocol.from_files("ehf", tmp_path / "a.npy", None, "none")
    assert proto.alignment == "none" and proto.pred is None and J14_HIPS == (2, 3)


def test_ply_reader_formats(tmp_path):
    verts, faces = _world_mesh(7)
    _write_ascii_ply(tmp_path / "a.ply", verts, faces)
    v, f = read_ply_mesh(tmp_path / "a.ply")
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f[:-2], faces)
    np.testing.assert_array_equal(f[-2:], [[0, 1, 2], [0, 2, 3]])  # the quad, fan-split
    # Big-endian binary with a double vertex layout and an extra element after the faces.
    header = ("ply\nformat binary_big_endian 1.0\ncomment x\n"
              f"element vertex {V}\nproperty double x\nproperty double y\nproperty double z\n"
              "property uchar red\n"
              f"element face {len(faces)}\nproperty list uchar uint vertex_indices\n"
              "element extra 1\nproperty int k\nend_header\n").encode()
    vrec = np.zeros(V, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("r", "u1")])
    vrec["x"], vrec["y"], vrec["z"] = verts.T
    frec = np.zeros(len(faces), dtype=[("n", "u1"), ("i", ">u4", (3,))])
    frec["n"], frec["i"] = 3, faces
    (tmp_path / "b.ply").write_bytes(header + vrec.tobytes() + frec.tobytes()
                                     + np.array([7], ">i4").tobytes())
    v, f = read_ply_mesh(tmp_path / "b.ply")
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, faces)
    write_ply(tmp_path / "c.ply", verts, faces)
    data = (tmp_path / "c.ply").read_bytes()
    (tmp_path / "c.ply").write_bytes(data[:-20])
    with pytest.raises(DatasetError, match=r"c\.ply: truncated"):
        read_ply_mesh(tmp_path / "c.ply")
    (tmp_path / "d.ply").write_text("solid stl\n")
    with pytest.raises(DatasetError, match=r"d\.ply is not a PLY file"):
        read_ply_mesh(tmp_path / "d.ply")
