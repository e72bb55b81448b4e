"""NoW reader / submission writer on a tiny folder in the official layout.

Nothing here is NoW data: subjects, images and boxes are invented; only the file names and
formats are the real ones.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from furpe.datasets import DatasetError, Prediction, ProtocolOptions, load_dataset
from furpe.datasets.now import MEDIAPIPE_NOW7, NOW7_NAMES, NoW, now_landmarks

VAL = ["FaMoS_A/multiview_neutral/IMG_0001.jpg",
       "FaMoS_A/selfie/IMG_0002.jpg",
       "FaMoS_B/multiview_occlusions/IMG_0003.jpg"]
TEST = ["FaMoS_C/multiview_expressions/IMG_0004.jpg"]


def _make_root(root: Path, lists_in_release: bool = False) -> Path:
    release = root / "final_release_version"
    for entry in VAL + TEST:
        path = release / "iphone_pictures" / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((32, 24, 3), 90, np.uint8))
    box = release / "detected_face" / "FaMoS_A" / "multiview_neutral" / "IMG_0001.npy"
    box.parent.mkdir(parents=True)
    np.save(box, {"left": 3.0, "top": 4.0, "right": 20.0, "bottom": 30.0}, allow_pickle=True)
    lists = release if lists_in_release else root
    (lists / "imagepathsvalidation.txt").write_text("\n".join(VAL) + "\n\n")
    (lists / "imagepathstest.txt").write_text("\n".join(TEST) + "\n")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _make_root(tmp_path / "NoW_Dataset")


def _face_keypoints(n: int = 478) -> np.ndarray:
    """Landmark i at (i mm, -i mm, 0.5 m): each index is recognisable."""
    i = np.arange(n, dtype=np.float64)
    return np.c_[i * 1e-3, -i * 1e-3, np.full(n, 0.5)]


def _mesh() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(12, 3)) * 0.1 + np.array([0.0, 0.0, 0.5])
    faces = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7], [8, 9, 10], [9, 10, 11], [0, 5, 11]])
    return verts, faces


def _prediction(**kw) -> Prediction:
    verts, faces = _mesh()
    args = dict(topology="anny", vertices=verts, faces=faces,
                keypoints={"mediapipe_face": _face_keypoints()})
    args.update(kw)
    return Prediction(**args)


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    v, f = [], []
    for line in path.read_text().splitlines():
        tok = line.split()
        if tok and tok[0] == "v":
            assert len(tok) == 4  # no vertex colours
            v.append([float(t) for t in tok[1:]])
        elif tok and tok[0] == "f":
            f.append([int(t) for t in tok[1:]])
    return np.array(v), np.array(f)


# -- reading -------------------------------------------------------------------------------

def test_validation_samples(root):
    ds = load_dataset("now", root)
    assert isinstance(ds, NoW) and ds.split == "validation"
    samples = ds.samples()
    assert [s.id for s in samples] == ["FaMoS_A/multiview_neutral/IMG_0001",
                                       "FaMoS_A/selfie/IMG_0002",
                                       "FaMoS_B/multiview_occlusions/IMG_0003"]
    s = samples[0]
    assert s.crop == "head" and s.intrinsics is None
    assert s.image_path == root / "final_release_version" / "iphone_pictures" / VAL[0]
    assert s.meta == {"subject": "FaMoS_A", "challenge": "multiview_neutral",
                      "stem": "IMG_0001", "list_entry": VAL[0]}
    np.testing.assert_array_equal(s.gt["box"], [3.0, 4.0, 20.0, 30.0])
    assert "box" not in samples[1].gt
    assert ds.score(s, _prediction()) == {}


def test_test_split_and_lists_in_release_folder(tmp_path):
    root = _make_root(tmp_path / "now", lists_in_release=True)
    ds = NoW(root, ProtocolOptions(extra={"split": "test"}))
    assert [s.id for s in ds.samples()] == ["FaMoS_C/multiview_expressions/IMG_0004"]
    assert ds.image_list() == root / "final_release_version" / "imagepathstest.txt"
    assert len(NoW(root, ProtocolOptions(extra={"split": "val"})).samples()) == 3


@pytest.mark.parametrize("split,name", [("validation", "imagepathsvalidation.txt"),
                                        ("test", "imagepathstest.txt")])
def test_missing_image_list_names_it(root, split, name):
    (root / name).unlink()
    with pytest.raises(DatasetError, match=name):
        NoW(root, ProtocolOptions(extra={"split": split})).samples()


def test_bad_split_line_and_image(root):
    with pytest.raises(DatasetError, match="unknown split 'train'"):
        NoW(root, ProtocolOptions(extra={"split": "train"}))
    (root / "final_release_version" / "iphone_pictures" / VAL[1]).unlink()
    with pytest.raises(DatasetError, match="IMG_0002.jpg"):
        NoW(root).samples()
    (root / "imagepathsvalidation.txt").write_text(VAL[0] + "\nIMG_0009.jpg\n")
    with pytest.raises(DatasetError, match="line 2: expected <subject>/<challenge>/<image>"):
        NoW(root).samples()
    (root / "imagepathsvalidation.txt").write_text(VAL[0] + "\n" + VAL[0] + "\n")
    with pytest.raises(DatasetError, match="twice"):
        NoW(root).samples()


def test_unreadable_box(root):
    box = root / "final_release_version" / "detected_face" / "FaMoS_A" / "multiview_neutral"
    np.save(box / "IMG_0001.npy", {"x": 1}, allow_pickle=True)
    with pytest.raises(DatasetError, match="cannot read the face box"):
        NoW(root).samples()


# -- landmarks -----------------------------------------------------------------------------

def test_landmark_mapping():
    assert MEDIAPIPE_NOW7 == (33, 133, 362, 263, 2, 61, 291)
    assert len(NOW7_NAMES) == 7 and NOW7_NAMES[4] == "nose_bottom"
    lm = now_landmarks(_prediction())
    np.testing.assert_allclose(lm[:, 0], np.array(MEDIAPIPE_NOW7) * 1e-3)
    # 468 points (no iris) work as well
    lm468 = now_landmarks(_prediction(keypoints={"mediapipe_face": _face_keypoints(468)}))
    np.testing.assert_array_equal(lm468, lm)
    direct = np.arange(21, dtype=float).reshape(7, 3)
    both = {"mediapipe_face": _face_keypoints(), "now7": direct}
    np.testing.assert_array_equal(now_landmarks(_prediction(keypoints=both)), direct)
    assert now_landmarks(_prediction(keypoints={})) is None
    with pytest.raises(DatasetError, match=r"now7'\] must be \(7, 3\)"):
        now_landmarks(_prediction(keypoints={"now7": np.zeros((5, 3))}))
    with pytest.raises(DatasetError, match="mediapipe_face"):
        now_landmarks(_prediction(keypoints={"mediapipe_face": np.zeros((68, 3))}))


def test_landmark_semantics_on_anny_face(anny_model):
    """On a real face geometry (Anny's MediaPipe Face Mesh regressor, neutral body), the 7
    points sit where NoW expects them: 0, 1, 5 on the subject's right (the side of MediaPipe
    Pose's right_eye_outer), 0/3 outside 1/2, the nose bottom between eyes and mouth, below
    and behind MediaPipe's nose tip (1)."""
    m = anny_model
    out = m(m.neutral_params(1))
    face = m.keypoints(out, "mediapipe_face")[0].detach().numpy().astype(np.float64)
    pose = m.keypoints(out, "mediapipe_pose")[0].detach().numpy().astype(np.float64)
    lm = now_landmarks(Prediction(topology="anny", keypoints={"mediapipe_face": face}))
    mid = lm[[1, 2]].mean(0)
    right_dir = pose[6] - pose[3]  # left_eye_outer -> right_eye_outer
    right_dir /= np.linalg.norm(right_dir)
    side = (lm - mid) @ right_dir
    assert side[0] > side[1] > 0 > side[2] > side[3]
    assert side[5] > 0 > side[6]
    down = lm[[5, 6]].mean(0) - lm[[0, 3]].mean(0)  # eyes -> mouth
    down /= np.linalg.norm(down)
    h = (lm - lm[[0, 3]].mean(0)) @ down
    assert 0 < h[4] < h[5]
    assert (lm[4] - face[1]) @ down > 0.003  # nose bottom lies below the tip


# -- submission ----------------------------------------------------------------------------

def test_write_prediction_layout(root, tmp_path):
    ds = NoW(root)
    out = tmp_path / "out"
    s = ds.samples()[1]
    pred = _prediction()
    ds.write_prediction(out, s, pred)
    folder = out / "predicted_meshes" / "FaMoS_A" / "selfie"
    assert sorted(p.name for p in folder.iterdir()) == ["IMG_0002.npy", "IMG_0002.obj"]
    v, f = _read_obj(folder / "IMG_0002.obj")
    np.testing.assert_allclose(v, pred.vertices, atol=1e-7)
    np.testing.assert_array_equal(f, pred.faces + 1)
    lm = np.load(folder / "IMG_0002.npy")
    assert lm.shape == (7, 3) and lm.dtype == np.float64
    np.testing.assert_allclose(lm, _face_keypoints()[list(MEDIAPIPE_NOW7)])
    assert ds.prediction_paths(out, s) == (folder / "IMG_0002.obj", folder / "IMG_0002.npy")
    # rewriting replaces the files and leaves no temporary file behind
    moved = _prediction(vertices=pred.vertices + 1.0)
    ds.write_prediction(out, s, moved)
    np.testing.assert_allclose(_read_obj(folder / "IMG_0002.obj")[0], pred.vertices + 1.0,
                               atol=1e-7)
    assert sorted(p.name for p in folder.iterdir()) == ["IMG_0002.npy", "IMG_0002.obj"]
    assert ds.finalize(out) == []


def test_write_prediction_mesh_part(root, tmp_path):
    ds = NoW(root, ProtocolOptions(extra={"mesh_part": "face"}))
    s = ds.samples()[0]
    verts, _ = _mesh()
    pred = _prediction(part_vertices={"face": np.array([8, 9, 10, 11, 0])})
    ds.write_prediction(tmp_path, s, pred)
    v, f = _read_obj(tmp_path / "predicted_meshes" / "FaMoS_A" / "multiview_neutral"
                     / "IMG_0001.obj")
    np.testing.assert_allclose(v, verts[[0, 8, 9, 10, 11]], atol=1e-7)
    # only triangles [8, 9, 10] and [9, 10, 11] are inside the part: new ids 1..4, 1-based
    np.testing.assert_array_equal(f, [[2, 3, 4], [3, 4, 5]])
    with pytest.raises(DatasetError, match="mesh_part 'face' is not a part"):
        ds.write_prediction(tmp_path, s, _prediction())


def test_write_prediction_refuses_incomplete(root, tmp_path):
    ds = NoW(root)
    s = ds.samples()[0]
    with pytest.raises(DatasetError, match="has no mesh"):
        ds.write_prediction(tmp_path, s, _prediction(vertices=None))
    with pytest.raises(DatasetError, match=r"no face landmarks.*mediapipe_face"):
        ds.write_prediction(tmp_path, s, _prediction(keypoints={}))
    with pytest.raises(DatasetError, match="outside"):
        ds.write_prediction(tmp_path, s, _prediction(faces=np.array([[0, 1, 12]])))
    assert not (tmp_path / "predicted_meshes").exists() or not any(
        p.is_file() for p in (tmp_path / "predicted_meshes").rglob("*"))
