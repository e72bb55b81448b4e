"""FreiHAND reader on a tiny folder in the official v2 layout (3 samples).

Nothing here is FreiHAND data: images, intrinsics, joints and vertices are invented; only the
file names and formats are the real ones.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from furpe.datasets import DatasetError, Prediction, ProtocolOptions, load_dataset
from furpe.datasets.freihand import FREIHAND_JOINT_NAMES, FreiHAND

N = 3
CENTRE = np.array([0.02, -0.01, 0.6])
# sample 0's vertices: 389 pairs c +- r u (so their centroid is exactly c): 10 pairs at 3 mm,
# 40 pairs at 10 mm, the rest 50-90 mm away from c
RADII = np.r_[np.full(10, 0.003), np.full(40, 0.010), np.linspace(0.05, 0.09, 339)]


def _symmetric_verts(rng: np.random.Generator) -> np.ndarray:
    u = rng.normal(size=(389, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    half = u * RADII[:, None]
    return np.r_[CENTRE + half, CENTRE - half]


def _make_root(root: Path, with_xyz: bool = True, with_verts: bool = True) -> dict:
    rng = np.random.default_rng(0)
    (root / "evaluation" / "rgb").mkdir(parents=True)
    Ks, joints, verts = [], [], []
    for i in range(N):
        img = np.full((224, 224, 3), 40 * i, np.uint8)
        assert cv2.imwrite(str(root / "evaluation" / "rgb" / f"{i:08d}.jpg"), img)
        f = 500.0 + 10 * i
        Ks.append([[f, 0.0, 112.0], [0.0, f, 112.0], [0.0, 0.0, 1.0]])
        joints.append(CENTRE + rng.normal(scale=0.04, size=(21, 3)))
        verts.append(_symmetric_verts(rng) if i == 0 else
                     CENTRE + rng.normal(scale=0.04, size=(778, 3)))
    (root / "evaluation_K.json").write_text(json.dumps(Ks))
    (root / "evaluation_scale.json").write_text(json.dumps([0.03, 0.031, 0.032]))
    if with_xyz:
        (root / "evaluation_xyz.json").write_text(json.dumps([j.tolist() for j in joints]))
    if with_verts:
        (root / "evaluation_verts.json").write_text(json.dumps([v.tolist() for v in verts]))
    return {"K": np.array(Ks), "joints": joints, "verts": verts}


@pytest.fixture
def root(tmp_path: Path) -> tuple[Path, dict]:
    r = tmp_path / "FreiHAND_pub_v2"
    return r, _make_root(r)


def _pred(joints=None, verts=None, side="right", topology="mano") -> Prediction:
    kp = {} if joints is None else {f"mediapipe_hand_{side}": np.asarray(joints)}
    return Prediction(topology=topology if verts is not None else "none", vertices=verts,
                      keypoints=kp)


# -- reading -------------------------------------------------------------------------------

def test_samples(root):
    r, data = root
    ds = load_dataset("freihand", r)
    assert isinstance(ds, FreiHAND) and ds.name == "freihand"
    samples = ds.samples()
    assert [s.id for s in samples] == ["00000000", "00000001", "00000002"]
    s = samples[1]
    assert s.crop == "hand"
    assert s.image_path == r / "evaluation" / "rgb" / "00000001.jpg"
    np.testing.assert_array_equal(s.intrinsics, data["K"][1])
    assert s.gt["joints"].shape == (21, 3) and s.gt["vertices"].shape == (778, 3)
    np.testing.assert_allclose(s.gt["joints"], data["joints"][1])
    assert s.meta == {"index": 1, "hand_side": "right", "scale": pytest.approx(0.031)}


def test_joint_names_are_freihand_order():
    assert len(FREIHAND_JOINT_NAMES) == 21
    assert FREIHAND_JOINT_NAMES[:5] == ("wrist", "thumb1", "thumb2", "thumb3", "thumb4")
    assert FREIHAND_JOINT_NAMES[5] == "index1" and FREIHAND_JOINT_NAMES[17] == "pinky1"


def test_missing_intrinsics_names_the_file(root):
    r, _ = root
    (r / "evaluation_K.json").unlink()
    with pytest.raises(DatasetError, match="evaluation_K.json"):
        FreiHAND(r).samples()


@pytest.mark.parametrize("missing", ["evaluation_xyz.json", "evaluation_verts.json"])
def test_missing_annotations_name_the_file(tmp_path, missing):
    _make_root(tmp_path, with_xyz=missing != "evaluation_xyz.json",
               with_verts=missing != "evaluation_verts.json")
    with pytest.raises(DatasetError, match=f"{missing}.*predict_only=1"):
        FreiHAND(tmp_path).samples()


def test_predict_only_needs_images_and_k(tmp_path):
    _make_root(tmp_path, with_xyz=False, with_verts=False)
    ds = FreiHAND(tmp_path, ProtocolOptions(extra={"predict_only": "1"}))
    samples = ds.samples()
    assert len(samples) == 3 and samples[0].gt == {}
    assert ds.score(samples[0], _pred(np.zeros((21, 3)))) == {}


def test_missing_image_and_bad_files(root):
    r, _ = root
    (r / "evaluation" / "rgb" / "00000002.jpg").unlink()
    with pytest.raises(DatasetError, match="00000002.jpg"):
        FreiHAND(r).samples()
    (r / "evaluation_K.json").write_text(json.dumps([[[1, 0], [0, 1]]]))
    with pytest.raises(DatasetError, match=r"evaluation_K.json must hold a list of \(3, 3\)"):
        FreiHAND(r).samples()


def test_annotation_length_mismatch(root):
    r, data = root
    (r / "evaluation_xyz.json").write_text(json.dumps([data["joints"][0].tolist()]))
    with pytest.raises(DatasetError, match="evaluation_xyz.json has 1 entries"):
        FreiHAND(r).samples()


# -- scoring -------------------------------------------------------------------------------

def test_perfect_prediction(root):
    r, data = root
    ds = FreiHAND(r)
    s = ds.samples()[2]
    scores = ds.score(s, _pred(data["joints"][2], data["verts"][2]))
    assert set(scores) == {"pa_mpjpe_mm", "mpjpe_mm", "pa_pve_mm", "pve_mm",
                           "f_score_5mm", "f_score_15mm"}
    for key in ("pa_mpjpe_mm", "mpjpe_mm", "pa_pve_mm", "pve_mm"):
        assert scores[key] == pytest.approx(0.0, abs=1e-6), key
    assert scores["f_score_5mm"] == 1.0 and scores["f_score_15mm"] == 1.0


def test_offset_prediction_by_hand(root):
    """A 5 mm translation: unaligned errors 5 mm, aligned ones 0, F = 1."""
    r, data = root
    ds = FreiHAND(r)
    off = np.array([0.003, 0.0, 0.004])
    scores = ds.score(ds.samples()[1], _pred(data["joints"][1] + off, data["verts"][1] + off))
    assert scores["mpjpe_mm"] == pytest.approx(5.0)
    assert scores["pve_mm"] == pytest.approx(5.0)
    assert scores["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["pa_pve_mm"] == pytest.approx(0.0, abs=1e-6)
    assert scores["f_score_5mm"] == 1.0


def test_zero_predictor_by_hand(root):
    """FreiHAND's own baseline, everything at the origin: alignment moves every point to the
    ground-truth centroid, so the aligned error is the mean distance to the centroid."""
    r, data = root
    ds = FreiHAND(r)
    s = ds.samples()[0]
    scores = ds.score(s, _pred(np.zeros((21, 3)), np.zeros((778, 3))))
    gt_j = data["joints"][0]
    assert scores["mpjpe_mm"] == pytest.approx(1000 * np.linalg.norm(gt_j, axis=1).mean())
    assert scores["pa_mpjpe_mm"] == pytest.approx(
        1000 * np.linalg.norm(gt_j - gt_j.mean(0), axis=1).mean())
    # vertices: pairs c +- r u, so the centroid is c and the distances are the radii
    assert scores["pa_pve_mm"] == pytest.approx(1000 * RADII.mean())
    assert scores["pve_mm"] == pytest.approx(1000 * np.linalg.norm(data["verts"][0], axis=1).mean())
    # every predicted point sits at c: precision 1 at both thresholds; recall 20/778 at 5 mm
    # (the 3 mm pairs) and 100/778 at 15 mm (3 and 10 mm pairs)
    r5, r15 = 20 / 778, 100 / 778
    assert scores["f_score_5mm"] == pytest.approx(2 * r5 / (1 + r5))
    assert scores["f_score_15mm"] == pytest.approx(2 * r15 / (1 + r15))


def test_left_hand_keypoints_are_used_unmirrored(root):
    r, data = root
    ds = FreiHAND(r)
    s = ds.samples()[1]
    joints = data["joints"][1] + np.array([0.0, 0.0, 0.01])
    left = ds.score(s, _pred(joints, side="left"))
    assert left == {"pa_mpjpe_mm": pytest.approx(0.0, abs=1e-6),
                    "mpjpe_mm": pytest.approx(10.0)}
    # right wins when both are there
    both = Prediction(topology="none", keypoints={"mediapipe_hand_left": np.zeros((21, 3)),
                                                   "mediapipe_hand_right": joints})
    assert ds.score(s, both)["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)


def test_other_topologies_get_no_mesh_metrics(root):
    r, data = root
    ds = FreiHAND(r)
    s = ds.samples()[1]
    body = _pred(data["joints"][1], np.zeros((100, 3)), topology="anny")
    assert set(ds.score(s, body)) == {"pa_mpjpe_mm", "mpjpe_mm"}
    assert ds.score(s, Prediction(topology="none")) == {}
    with pytest.raises(DatasetError, match=r"\(778, 3\)"):
        ds.score(s, _pred(None, np.zeros((700, 3))))
    with pytest.raises(DatasetError, match=r"mediapipe_hand_right'\] must be \(21, 3\)"):
        ds.score(s, _pred(np.zeros((20, 3))))


# -- pred.json -----------------------------------------------------------------------------

def _write_all(ds: FreiHAND, out: Path, data: dict, ids=range(N), mesh=True) -> None:
    for i in ids:
        verts = data["verts"][i] if mesh else None
        ds.write_prediction(out, ds.samples()[i], _pred(data["joints"][i], verts))


def test_pred_json_structure(root, tmp_path):
    r, data = root
    ds = FreiHAND(r)
    out = tmp_path / "out"
    _write_all(ds, out, data)
    files = ds.finalize(out)
    assert files == [out / "pred.json"]
    pred = json.loads((out / "pred.json").read_text())
    assert isinstance(pred, list) and len(pred) == 2
    assert len(pred[0]) == N and len(pred[1]) == N
    for i in range(N):
        assert np.asarray(pred[0][i]).shape == (21, 3)
        assert np.asarray(pred[1][i]).shape == (778, 3)
        np.testing.assert_array_equal(pred[0][i], data["joints"][i])
        np.testing.assert_array_equal(pred[1][i], data["verts"][i])
    assert not list(out.glob(".*tmp*"))


def test_pred_json_prefix_and_gap(root, tmp_path):
    r, data = root
    ds = FreiHAND(r)
    assert ds.finalize(tmp_path / "empty") == []
    out = tmp_path / "prefix"
    _write_all(ds, out, data, ids=[0])
    pred = json.loads(ds.finalize(out)[0].read_text())
    assert len(pred[0]) == 1 and len(pred[1]) == 1
    gap = tmp_path / "gap"
    _write_all(ds, gap, data, ids=[0, 2])
    with pytest.raises(DatasetError, match="sample 00000001 has no prediction but 00000002"):
        ds.finalize(gap)
    assert not (gap / "pred.json").exists()


def test_pred_json_without_mesh(root, tmp_path):
    r, data = root
    out = tmp_path / "out"
    ds = FreiHAND(r)
    _write_all(ds, out, data, mesh=False)
    with pytest.raises(DatasetError, match="3 of 3 predictions .* no MANO mesh.*joints_only=1"):
        ds.finalize(out)
    assert not (out / "pred.json").exists()
    joints_only = FreiHAND(r, ProtocolOptions(extra={"joints_only": "1"}))
    pred = json.loads(joints_only.finalize(out)[0].read_text())
    assert pred[1] == [[], [], []]
    np.testing.assert_array_equal(pred[0][2], data["joints"][2])


def test_pred_json_needs_keypoints(root, tmp_path):
    r, data = root
    ds = FreiHAND(r)
    out = tmp_path / "out"
    ds.write_prediction(out, ds.samples()[0], _pred(None, data["verts"][0]))
    with pytest.raises(DatasetError, match="sample 00000000 has no hand keypoints"):
        ds.finalize(out)


def test_protocol_line():
    assert "PA-MPJPE" in FreiHAND.protocol and "F@5/15" in FreiHAND.protocol
