"""The Anny body model behind the BodyModel interface, and the evaluation metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from furpe.errors import FurpeError
from furpe.metrics import mpjpe, pa_error, procrustes_align


# -- metrics ------------------------------------------------------------------------------

def _rotation(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def test_procrustes_removes_similarity_transform():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(50, 3))
    pred = 1.7 * gt @ _rotation([1, 2, 3], 0.9).T + np.array([0.3, -2.0, 5.0])
    assert mpjpe(pred, gt) > 1.0
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-9)
    assert pa_error(pred, gt) < 1e-9
    assert mpjpe(gt, gt) == 0.0


def test_procrustes_does_not_reflect():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(50, 3)) * np.array([1.0, 2.0, 3.0])
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    err = pa_error(mirrored, gt)
    assert err > 0.3  # a reflection cannot be undone by a rotation
    aligned = procrustes_align(mirrored, gt)
    assert aligned.shape == gt.shape


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        pa_error(np.zeros((4, 3)), np.zeros((5, 3)))


# -- the model ----------------------------------------------------------------------------

def test_forward_shapes(anny_model):
    m = anny_model
    out = m(m.neutral_params(2))
    assert out.vertices.shape == (2, m.num_vertices, 3)
    assert out.joints.shape == (2, len(m.joint_names), 3)
    assert len(m.joint_parents) == len(m.joint_names) == 104
    assert m.faces.ndim == 2 and m.faces.shape[1] == 3
    assert m.faces.min() >= 0 and m.faces.max() < m.num_vertices
    for name in ("mediapipe_pose", "coco", "mediapipe_face"):
        kp = m.keypoints(out, name)
        assert kp.shape == (2, len(m.regressors[name].names), 3)
    assert torch.isfinite(out.vertices).all()


def test_neutral_pose_is_upright_and_faces_camera(anny_model):
    m = anny_model
    p = m.neutral_params(1)
    transl = torch.tensor([0.1, -0.2, 3.0])
    p["transl"][0] = transl
    with torch.no_grad():
        out = m(p)
    names = list(m.joint_names)
    joints = out.joints[0]
    assert names[0] == "root"
    torch.testing.assert_close(joints[0], transl, atol=1e-5, rtol=0)
    head, pelvis = joints[names.index("head")], joints[0]
    assert head[1] < pelvis[1] - 0.3  # head above the pelvis (y down)
    nose = m.keypoints(out, "mediapipe_pose")[0, 0]
    assert m.regressors["mediapipe_pose"].names[0] == "nose"
    assert nose[2] < head[2]  # the nose is nearer the camera than the head joint
    lw, rw = joints[names.index("wrist.L")], joints[names.index("wrist.R")]
    assert lw[0] > rw[0]  # facing the camera: the person's left is the image's right
    # the person is about human-sized
    height = out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min()
    assert 1.3 < float(height) < 2.1


def test_gradients_reach_every_block(anny_model):
    m = anny_model
    p = m.neutral_params(1)
    p["transl"][0, 2] = 3.0
    p["facial_actions"][:] = 0.3
    p["body_pose"][:] = 0.05
    p["left_hand_pose"][:] = 0.05
    p["right_hand_pose"][:] = 0.05
    for v in p.values():
        v.requires_grad_(True)
    out = m(p)
    torch.manual_seed(0)
    w = torch.randn_like(out.vertices)
    loss = (out.vertices * w).sum() + (out.joints ** 2).sum()
    loss.backward()
    for name in ("body_pose", "left_hand_pose", "right_hand_pose", "facial_actions",
                 "phenotype", "global_orient", "transl"):
        g = p[name].grad
        assert g is not None, name
        assert torch.isfinite(g).all(), name
        assert float(g.abs().sum()) > 0, name


def test_part_vertices_partition_the_mesh(anny_model):
    m = anny_model
    parts = m.part_vertices
    assert set(parts) == {"left_hand", "right_hand", "face", "body"}
    allv = np.concatenate(list(parts.values()))
    assert len(allv) == m.num_vertices
    assert len(np.unique(allv)) == m.num_vertices
    nv = m.num_vertices
    for side in ("left_hand", "right_hand"):
        assert 0.05 * nv < len(parts[side]) < 0.2 * nv
    assert len(parts["left_hand"]) == len(parts["right_hand"])
    assert 0.05 * nv < len(parts["face"]) < 0.25 * nv
    assert len(parts["body"]) > 0.5 * nv
    # the left hand is on the person's left (image right when facing the camera)
    p = m.neutral_params(1)
    p["transl"][0, 2] = 3.0
    with torch.no_grad():
        v = m(p).vertices[0].numpy()
    assert v[parts["left_hand"], 0].mean() > 0.3 > -0.3 > v[parts["right_hand"], 0].mean()
    assert v[parts["face"], 1].mean() < v[parts["body"], 1].mean()


@pytest.mark.parametrize("name,count", [("mediapipe_pose", 33), ("mediapipe_hand_left", 21),
                                        ("mediapipe_hand_right", 21), ("mediapipe_face", 478),
                                        ("coco", None)])
def test_regressors(anny_model, name, count):
    m = anny_model
    assert name in m.regressors
    reg = m.regressors[name]
    if count is not None:
        assert len(reg.names) == count
    else:
        assert len(reg.names) >= 17
        assert reg.names[0] == "nose"
    np.testing.assert_allclose(reg.weights.sum(1), 1.0, atol=1e-4)
    assert (reg.weights >= -1e-6).all()
    npoints = m.num_vertices + len(m.joint_names)
    assert reg.indices.min() >= 0 and reg.indices.max() < npoints


def test_face_keypoints_lie_on_the_face(anny_model):
    m = anny_model
    with torch.no_grad():
        out = m(m.neutral_params(1))
    kp = m.keypoints(out, "mediapipe_face")[0].numpy()
    face = out.vertices[0].numpy()[m.part_vertices["face"]]
    d = np.linalg.norm(kp[:, None] - face[None], axis=-1).min(1)
    assert d.max() < 0.02, f"face landmark {int(d.argmax())} is {d.max() * 100:.1f} cm off"
    # and the hand landmarks on the hands
    for side in ("left", "right"):
        kp = m.keypoints(out, f"mediapipe_hand_{side}")[0].numpy()
        hand = out.vertices[0].numpy()[m.part_vertices[f"{side}_hand"]]
        d = np.linalg.norm(kp[:, None] - hand[None], axis=-1).min(1)
        assert d.max() < 0.03


def test_jaw_open_moves_face_not_hands(anny_model):
    m = anny_model
    labels = m.blocks["facial_actions"].labels
    assert "jawOpen" in labels
    p = m.neutral_params(1)
    q = m.neutral_params(1)
    q["facial_actions"][0, labels.index("jawOpen")] = 1.0
    with torch.no_grad():
        a, b = m(p).vertices[0].numpy(), m(q).vertices[0].numpy()
    moved = np.linalg.norm(a - b, axis=1)
    assert moved[m.part_vertices["face"]].max() > 0.005  # the chin drops by centimetres
    assert moved[m.part_vertices["left_hand"]].max() < 1e-6
    assert moved[m.part_vertices["right_hand"]].max() < 1e-6


def test_unknown_block_is_an_error(anny_model):
    m = anny_model
    p = m.neutral_params(1)
    p["betas"] = torch.zeros(1, 10)
    with pytest.raises(FurpeError, match="betas"):
        m(p)
    with pytest.raises(FurpeError):
        m({"transl": torch.zeros(1, 4)})
