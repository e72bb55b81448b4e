"""3DPW reader on a tiny synthetic 3DPW folder and a synthetic SMPL model file.

Nothing here is real 3DPW or SMPL data: the sequence pickle, the SMPL model (480 vertices) and
the H36M regressor are invented, in the real file layouts.
"""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from synthetic_models import write_synthetic_smpl
from furpe.datasets import DatasetError, Prediction, ProtocolOptions, load_dataset
from furpe.datasets.joints import H36M_TO_J14, MEDIAPIPE_TO_LIMBS12
from furpe.datasets.pw3d import ThreeDPW, find_smpl_file

SEQ = "courtyard_synthetic_00"
N = 3


def _cam_pose(rotvec, t) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    m[:3, 3] = t
    return m


@pytest.fixture()
def pw3d(tmp_path) -> dict:
    models = tmp_path / "models"
    for g in ("neutral", "male", "female"):
        write_synthetic_smpl(models, g)
    with open(models / "smpl" / "SMPL_NEUTRAL.pkl", "rb") as fh:
        smpl = pickle.load(fh, encoding="latin1")
    n_verts = len(smpl["v_template"])
    rng = np.random.default_rng(0)
    reg = rng.random((17, n_verts)) * (rng.random((17, n_verts)) < 0.2) + 1e-4
    reg /= reg.sum(1, keepdims=True)
    np.save(tmp_path / "J_regressor_h36m.npy", reg)

    poses = [rng.normal(0, 0.2, (N, 72)), rng.normal(0, 0.2, (N, 72))]
    poses[0][0] = 0.0  # person 0, frame 0: rest pose
    poses[0][1] = 0.0
    poses[0][1, :3] = (0.2, 1.0, -0.3)  # person 0, frame 1: global rotation only
    trans = [rng.normal(0, 0.5, (N, 3)), rng.normal(0, 0.5, (N, 3))]
    betas = [np.zeros(10), rng.normal(0, 1.0, 10)]
    cam_poses = np.stack([_cam_pose([0.1, -0.2, 0.05 * k], [0.2, -0.1, 3.0 + k])
                          for k in range(N)])
    poses2d = []
    for _ in range(2):
        p2d = np.zeros((N, 3, 18))
        p2d[:, 0] = rng.uniform(100, 900, (N, 18))
        p2d[:, 1] = rng.uniform(100, 1500, (N, 18))
        p2d[:, 2] = 0.9
        p2d[:, 2, 5] = 0.0  # an undetected keypoint
        poses2d.append(p2d)
    k = np.array([[1961.0, 0.0, 540.0], [0.0, 1969.0, 960.0], [0.0, 0.0, 1.0]])
    seq = {
        "sequence": SEQ, "genders": ["m", "f"], "poses": poses, "trans": trans,
        "betas": betas, "cam_poses": cam_poses, "cam_intrinsics": k,
        "campose_valid": [np.ones(N, dtype=np.int64), np.array([1, 0, 1])],
        "poses2d": poses2d, "img_frame_ids": np.arange(N) * 2,
        "jointPositions": [np.zeros((N, 72)), np.zeros((N, 72))],
    }
    root = tmp_path / "3DPW"
    (root / "sequenceFiles" / "test").mkdir(parents=True)
    with open(root / "sequenceFiles" / "test" / f"{SEQ}.pkl", "wb") as fh:
        pickle.dump(seq, fh, protocol=2)
    (root / "imageFiles" / SEQ).mkdir(parents=True)
    for f in range(N):
        cv2.imwrite(str(root / "imageFiles" / SEQ / f"image_{f:05d}.jpg"),
                    np.zeros((8, 8, 3), np.uint8))
    return {"root": root, "models": models, "reg": reg,
            "reg_path": tmp_path / "J_regressor_h36m.npy", "seq": seq, "smpl": smpl,
            "tmp": tmp_path}


def _options(pw3d: dict, **kw) -> ProtocolOptions:
    kw.setdefault("model_path", pw3d["models"])
    kw.setdefault("gt_regressor", pw3d["reg_path"])
    return ProtocolOptions(**kw)


def _to_cam(points: np.ndarray, cam_pose: np.ndarray) -> np.ndarray:
    return np.array([cam_pose[:3, :3] @ p + cam_pose[:3, 3] for p in points])


def test_samples_ids_meta_box_and_intrinsics(pw3d):
    ds = load_dataset("3dpw", pw3d["root"], _options(pw3d))
    assert isinstance(ds, ThreeDPW)
    samples = ds.samples()
    assert [s.id for s in samples] == [f"{SEQ}_00000_p0", f"{SEQ}_00001_p0", f"{SEQ}_00002_p0",
                                       f"{SEQ}_00000_p1", f"{SEQ}_00002_p1"]
    s = samples[4]
    assert s.image_path == pw3d["root"] / "imageFiles" / SEQ / "image_00002.jpg"
    assert s.meta == {"sequence": SEQ, "frame": 2, "person": 1, "gender": "neutral"}
    np.testing.assert_array_equal(s.intrinsics, pw3d["seq"]["cam_intrinsics"])
    kp = pw3d["seq"]["poses2d"][1][2].T  # (18, 3)
    kp = kp[kp[:, 2] > 0.1]
    np.testing.assert_allclose(s.gt["box"], [*kp[:, :2].min(0), *kp[:, :2].max(0)])
    assert all(x.gt["joints"].shape == (14, 3) for x in samples)
    assert ds.samples() is samples


def test_ground_truth_camera_frame_by_hand(pw3d):
    ds = ThreeDPW(pw3d["root"], _options(pw3d))
    samples = ds.samples()
    smpl, seq = pw3d["smpl"], pw3d["seq"]
    v_t = np.asarray(smpl["v_template"])
    assert H36M_TO_J14 == (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
    j14 = pw3d["reg"][list(H36M_TO_J14)]
    # Rest pose, zero shape: the template, translated, then the camera pose.
    world0 = v_t + seq["trans"][0][0]
    cam0 = _to_cam(world0, seq["cam_poses"][0])
    # (smplx stores the model arrays as float32: agreement to well under a micrometre.)
    np.testing.assert_allclose(ds.gt_vertices(samples[0]), cam0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(samples[0].gt["joints"], j14 @ cam0, rtol=0, atol=1e-6)
    # Global rotation only: rotation about the root joint, then translation.
    root = np.asarray(smpl["J_regressor"].toarray())[0] @ v_t
    rot = Rotation.from_rotvec(seq["poses"][0][1, :3]).as_matrix()
    world1 = (v_t - root) @ rot.T + root + seq["trans"][0][1]
    cam1 = _to_cam(world1, seq["cam_poses"][1])
    np.testing.assert_allclose(ds.gt_vertices(samples[1]), cam1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(samples[1].gt["joints"], j14 @ cam1, rtol=0, atol=1e-6)
    assert np.abs(cam1 - cam0).max() > 0.1  # the two frames really differ
    # Every sample's joints are the regressor on its (on-demand) vertices.
    for s in samples:
        np.testing.assert_allclose(s.gt["joints"], j14 @ ds.gt_vertices(s), atol=1e-9)


def test_perfect_and_similarity_predictions(pw3d):
    ds = ThreeDPW(pw3d["root"], _options(pw3d))
    for s in ds.samples():
        scores = ds.score(s, Prediction("smpl", vertices=ds.gt_vertices(s)))
        assert set(scores) == {"pa_mpjpe14_mm", "mpjpe14_mm", "pa_pve_mm", "pve_mm"}
        for name, value in scores.items():
            assert value == pytest.approx(0.0, abs=1e-6), (s.id, name)
    s = ds.samples()[3]
    rot = Rotation.from_rotvec([0.0, 0.6, 0.2]).as_matrix()
    moved = 0.9 * ds.gt_vertices(s) @ rot.T + [0.1, 0.2, 0.3]
    scores = ds.score(s, Prediction("smpl", vertices=moved))
    assert scores["pa_mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["pa_pve_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["mpjpe14_mm"] > 10.0 and scores["pve_mm"] > 10.0
    # Translation only: removed by the default mid-hip alignment, not by alignment="none".
    shifted = Prediction("smpl", vertices=ds.gt_vertices(s) + [0.0, 0.03, 0.04])
    assert ds.score(s, shifted)["mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    raw = ThreeDPW(pw3d["root"], _options(pw3d, alignment="none"))
    assert raw.score(raw.samples()[3], shifted)["mpjpe14_mm"] == pytest.approx(50.0, abs=1e-6)


def test_joint_sources_and_limbs12_fallback(pw3d):
    ds = ThreeDPW(pw3d["root"], _options(pw3d))
    s = ds.samples()[2]
    gt = s.gt["joints"]
    j14 = gt.copy()
    j14[13, 2] += 0.028  # head top 28 mm off -> 2 mm mean
    scores = ds.score(s, Prediction("anny", keypoints={"j14": j14}))
    assert set(scores) == {"pa_mpjpe14_mm", "mpjpe14_mm"}
    assert scores["mpjpe14_mm"] == pytest.approx(2.0, abs=1e-9)
    mp = np.zeros((33, 3))
    mp[list(MEDIAPIPE_TO_LIMBS12)] = gt[:12]
    scores = ds.score(s, Prediction("anny", vertices=np.ones((5, 3)),
                                    keypoints={"mediapipe_pose": mp}))
    assert set(scores) == {"pa_mpjpe_limbs12_mm", "mpjpe_limbs12_mm"}
    assert scores["pa_mpjpe_limbs12_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["mpjpe_limbs12_mm"] == pytest.approx(0.0, abs=1e-6)
    assert ds.score(s, Prediction("anny")) == {}
    # A prediction regressor (here the H36M one, 17 rows) on an SMPL-topology mesh.
    with_pred = ThreeDPW(pw3d["root"], _options(pw3d, pred_regressor=pw3d["reg_path"]))
    s2 = with_pred.samples()[2]
    scores = with_pred.score(s2, Prediction("smpl", vertices=with_pred.gt_vertices(s2)))
    assert scores["mpjpe14_mm"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DatasetError, match=r"has 480 columns \(one per vertex\), but the "
                                           r"'anny' prediction has 5 vertices"):
        with_pred.score(s2, Prediction("anny", vertices=np.ones((5, 3))))


def test_gendered_models(pw3d):
    neutral = ThreeDPW(pw3d["root"], _options(pw3d)).samples()
    ds = ThreeDPW(pw3d["root"], _options(pw3d, extra={"gender": "gendered"}))
    gendered = ds.samples()
    assert [s.meta["gender"] for s in gendered] == ["male"] * 3 + ["female"] * 2
    assert ds.model_files["male"].name == "SMPL_MALE.pkl"
    # Person 1 has non-zero shape: the female model's blend shapes differ from the neutral's.
    assert np.abs(gendered[3].gt["joints"] - neutral[3].gt["joints"]).max() > 1e-4
    # Person 0, frame 0 is the rest template in every model.
    np.testing.assert_allclose(gendered[0].gt["joints"], neutral[0].gt["joints"], atol=1e-12)
    (pw3d["models"] / "smpl" / "SMPL_FEMALE.pkl").unlink()
    with pytest.raises(DatasetError, match=r"missing .*SMPL_FEMALE\.pkl \(the female SMPL"):
        ThreeDPW(pw3d["root"], _options(pw3d, extra={"gender": "gendered"}))
    with pytest.raises(DatasetError, match="gender='female' must be 'neutral' or 'gendered'"):
        ThreeDPW(pw3d["root"], _options(pw3d, extra={"gender": "female"}))


def test_model_file_names(pw3d, tmp_path):
    folder = tmp_path / "orig"
    folder.mkdir()
    src = pw3d["models"] / "smpl" / "SMPL_NEUTRAL.pkl"
    (folder / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").write_bytes(src.read_bytes())
    assert find_smpl_file(folder).name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    assert find_smpl_file(pw3d["models"] / "smpl") == src
    assert find_smpl_file(src) == src
    a = ThreeDPW(pw3d["root"], _options(pw3d)).samples()
    b = ThreeDPW(pw3d["root"], _options(pw3d, model_path=folder)).samples()
    np.testing.assert_array_equal(a[4].gt["joints"], b[4].gt["joints"])


def test_missing_inputs_are_explained(pw3d):
    root = pw3d["root"]
    with pytest.raises(DatasetError, match=r"needs --model-path DIR with the SMPL model.*"
                                           r"licence-gated"):
        ThreeDPW(root, ProtocolOptions(gt_regressor=pw3d["reg_path"]))
    with pytest.raises(DatasetError, match=r"needs --gt-regressor J_regressor_h36m\.npy"):
        ThreeDPW(root, ProtocolOptions(model_path=pw3d["models"]))
    with pytest.raises(DatasetError, match=r"missing .*nothing.*SMPL_NEUTRAL\.pkl"):
        ThreeDPW(root, _options(pw3d, model_path=pw3d["tmp"] / "nothing"))
    with pytest.raises(DatasetError, match=r"missing .*absent\.npy"):
        ThreeDPW(root, _options(pw3d, gt_regressor=pw3d["tmp"] / "absent.npy"))
    (root / "imageFiles" / SEQ / "image_00002.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"missing .*image_00002\.jpg \(image of sequence "
                                           rf"{SEQ}, frame 2\)"):
        ThreeDPW(root, _options(pw3d)).samples()
    with pytest.raises(DatasetError, match=r"missing .*sequenceFiles/validation"):
        ThreeDPW(root, _options(pw3d, extra={"split": "validation"})).samples()


def test_malformed_sequence_and_model_files(pw3d):
    root = pw3d["root"]
    seq = dict(pw3d["seq"])
    del seq["cam_poses"]
    path = root / "sequenceFiles" / "test" / f"{SEQ}.pkl"
    with open(path, "wb") as fh:
        pickle.dump(seq, fh, protocol=2)
    with pytest.raises(DatasetError, match=rf"{SEQ}\.pkl lacks the keys \['cam_poses'\]"):
        ThreeDPW(root, _options(pw3d)).samples()
    seq = dict(pw3d["seq"])
    seq["poses"] = [seq["poses"][0][:, :69], seq["poses"][1]]
    with open(path, "wb") as fh:
        pickle.dump(seq, fh, protocol=2)
    with pytest.raises(DatasetError, match=r"person 0 has poses \(3, 69\)"):
        ThreeDPW(root, _options(pw3d)).samples()
    with open(path, "wb") as fh:
        pickle.dump(pw3d["seq"], fh, protocol=2)
    # An original SMPL file still holding chumpy objects (chumpy is not installed).
    model = pw3d["models"] / "smpl" / "SMPL_NEUTRAL.pkl"
    model.write_bytes(b"\x80\x02cchumpy.ch\nCh\nq\x00)\x81q\x01.")
    with pytest.raises(DatasetError, match=r"missing module 'chumpy'.*clean_ch\.py"):
        ThreeDPW(root, _options(pw3d)).samples()
    np.save(pw3d["tmp"] / "wrong.npy", pw3d["reg"][:, :100])
    write_synthetic_smpl(pw3d["models"])
    with pytest.raises(DatasetError, match=r"wrong\.npy has 100 columns.*but the SMPL mesh"):
        ThreeDPW(root, _options(pw3d, gt_regressor=pw3d["tmp"] / "wrong.npy")).samples()
