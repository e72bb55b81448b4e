"""SMPL-X body model, on a synthetic model file written by the test (no licence-gated data)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from furpe.bodymodels.base import apply_regressor
from furpe.core.vocab import MEDIAPIPE_HAND as MEDIAPIPE_HAND_NAMES
from furpe.core.vocab import MEDIAPIPE_POSE as MEDIAPIPE_POSE_NAMES
from furpe.bodymodels.smplx_model import (
    SMPLX_JOINT_NAMES,
    SMPLX_NUM_VERTICES,
    SMPLXBodyModel,
    _vertex_points,
)
from synthetic_models import synthetic_joints, write_synthetic_smplx
from furpe.core.errors import FurpeError

J = {n: j for j, n in enumerate(SMPLX_JOINT_NAMES)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_synthetic_smplx(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir) -> SMPLXBodyModel:
    return SMPLXBodyModel(model_dir)


def random_params(model: SMPLXBodyModel, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, blk in model.blocks.items():
        scale = 0.3 if blk.kind == "rotation" else 1.0
        params[name] = scale * torch.randn(blk.shape(batch), generator=g)
    return params


def test_synthetic_file_matches_smplx_forward(model_dir, model):
    import smplx

    sm = smplx.create(
        str(model_dir), model_type="smplx", use_pca=False, flat_hand_mean=True,
        use_face_contour=True, num_betas=10, num_expression_coeffs=10,
    )
    assert sm.v_template.shape == (model.num_vertices, 3)
    assert sm.J_regressor.shape == (55, model.num_vertices)
    # smplx appends the real model's vertex ids; point them at vertex 0 for the tiny mesh.
    sm.vertex_joint_selector.extra_joints_idxs = torch.zeros_like(
        sm.vertex_joint_selector.extra_joints_idxs
    )
    p = random_params(model, 1, seed=3)
    with torch.no_grad():
        ref = sm(
            betas=p["betas"], expression=p["expression"], global_orient=torch.zeros(1, 3),
            transl=torch.zeros(1, 3), body_pose=p["body_pose"].reshape(1, -1),
            left_hand_pose=p["left_hand_pose"].reshape(1, -1),
            right_hand_pose=p["right_hand_pose"].reshape(1, -1),
            jaw_pose=p["jaw_pose"].reshape(1, 3),
        )
        verts, joints = model._forward(model.complete(p))
    pelvis = ref.joints[:, :1]
    torch.testing.assert_close(verts, ref.vertices - pelvis, atol=1e-5, rtol=0)
    torch.testing.assert_close(joints, ref.joints[:, :55] - pelvis, atol=1e-5, rtol=0)


def test_blocks_and_output_shapes(model):
    assert model.name == "smplx"
    expected = {
        "global_orient": (2, 1, 3), "transl": (2, 3), "body_pose": (2, 21, 3),
        "left_hand_pose": (2, 15, 3), "right_hand_pose": (2, 15, 3), "jaw_pose": (2, 1, 3),
        "expression": (2, 10), "betas": (2, 10),
    }
    assert {n: b.shape(2) for n, b in model.blocks.items()} == expected
    assert model.blocks["left_hand_pose"].part == "left_hand"
    assert model.blocks["left_hand_pose"].labels[0] == "left_index1"
    assert model.blocks["body_pose"].labels == tuple(SMPLX_JOINT_NAMES[1:22])
    out = model(model.neutral_params(2))
    assert out.vertices.shape == (2, model.num_vertices, 3)
    assert out.joints.shape == (2, 55, 3)
    assert model.faces.shape[1] == 3 and model.faces.max() < model.num_vertices
    assert len(model.joint_names) == len(model.joint_parents) == 55
    assert model.joint_parents[0] == -1
    assert all(0 <= p < j for j, p in enumerate(model.joint_parents) if j)
    assert 300 <= model.num_vertices <= 2000


def test_zero_pose_is_the_flat_template(model):
    """Zero hand pose = the template's flat hand (no mean hand pose added)."""
    out = model(model.neutral_params(1))
    template = model.v_template.double()
    pelvis = (model.J_regressor.double() @ template)[0]
    expected = (template - pelvis) @ torch.as_tensor(model.canonical_rotation).T
    torch.testing.assert_close(out.vertices[0].double(), expected, atol=1e-6, rtol=0)
    assert np.abs(model.hands_mean["left_hand_pose"]).max() > 0.01


def test_pelvis_is_at_transl(model):
    params = random_params(model, 3, seed=1)
    params["global_orient"] = torch.tensor([[[0.3, -1.2, 0.5]]]).expand(3, 1, 3)
    params["transl"] = torch.tensor([[0.1, -0.2, 3.0], [0.0, 0.0, 2.0], [-1.0, 0.5, 5.0]])
    out = model(params)
    torch.testing.assert_close(out.joints[:, 0], params["transl"], atol=1e-5, rtol=0)


def test_canonical_orientation(model):
    out = model(model.neutral_params(1))
    joints = out.joints[0]
    assert joints[J["head"], 1] < joints[J["pelvis"], 1] - 0.3  # head above: smaller y
    assert joints[J["left_ankle"], 1] > joints[J["pelvis"], 1] + 0.3
    assert joints[J["left_wrist"], 0] > 0.3 > -0.3 > joints[J["right_wrist"], 0]
    pose = model.keypoints(out, "mediapipe_pose")[0]
    nose = pose[MEDIAPIPE_POSE_NAMES.index("nose")]
    assert nose[2] < joints[J["head"], 2] - 0.05  # the face points at the camera (-z)
    left_eye = pose[MEDIAPIPE_POSE_NAMES.index("left_eye")]
    right_eye = pose[MEDIAPIPE_POSE_NAMES.index("right_eye")]
    assert left_eye[0] > nose[0] > right_eye[0]
    assert left_eye[1] < nose[1]


def test_global_rotation_is_about_the_pelvis(model):
    params = random_params(model, 1, seed=2)
    params["global_orient"] = torch.zeros(1, 1, 3)
    params["transl"] = torch.tensor([[0.2, -0.1, 2.5]])
    base = model(params)
    params["global_orient"] = torch.tensor([[[0.0, math.pi / 2, 0.0]]])
    turned = model(params)
    rot_y = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    t = params["transl"]
    expected = (base.vertices - t[:, None]) @ rot_y.T + t[:, None]
    torch.testing.assert_close(turned.vertices, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(turned.joints[:, 0], t, atol=1e-6, rtol=0)
    # A quarter turn about y: the left wrist (at +x) goes to -z, i.e. towards the camera.
    assert turned.joints[0, J["left_wrist"], 2] < t[0, 2] - 0.5


def test_gradients_reach_every_block(model):
    params = {k: v.requires_grad_(True) for k, v in random_params(model, 2, seed=4).items()}
    out = model(params)
    weights = torch.randn(out.vertices.shape, generator=torch.Generator().manual_seed(0))
    loss = (out.vertices * weights).sum() + out.joints.square().sum()
    for conv in ("mediapipe_pose", "mediapipe_hand_left", "ibug68"):
        loss = loss + model.keypoints(out, conv).square().sum()
    loss.backward()
    for name, value in params.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, name
        assert torch.isfinite(value.grad).all(), name


def test_gradients_at_zero_pose(model):
    params = {k: v.requires_grad_(True) for k, v in model.neutral_params(1).items()}
    out = model(params)
    model.keypoints(out, "mediapipe_hand_right")[..., 1].sum().backward()
    assert params["right_hand_pose"].grad.abs().sum() > 0
    assert params["left_hand_pose"].grad.abs().sum() == 0


def test_batch_matches_single(model):
    params = random_params(model, 3, seed=5)
    out = model(params)
    for i in range(3):
        single = model({k: v[i : i + 1] for k, v in params.items()})
        torch.testing.assert_close(single.vertices, out.vertices[i : i + 1], atol=1e-5, rtol=0)


def test_face_blocks_move_only_the_face(model):
    params = model.neutral_params(1)
    base = model(params).vertices
    params["expression"] = torch.ones(1, 10)
    params["jaw_pose"] = torch.tensor([[[0.3, 0.0, 0.0]]])
    moved = (model(params).vertices - base).norm(dim=-1)[0]
    face = model.part_vertices["face"]
    assert moved[face].max() > 1e-3
    assert moved[model.part_vertices["left_hand"]].max() < 1e-6
    assert moved[model.part_vertices["body"]].max() < 1e-6


def test_part_vertices_partition(model):
    parts = model.part_vertices
    assert set(parts) == {"left_hand", "right_hand", "face", "body"}
    everything = np.concatenate(list(parts.values()))
    assert all(len(v) > 0 for v in parts.values())
    assert len(everything) == model.num_vertices
    assert np.array_equal(np.sort(everything), np.arange(model.num_vertices))
    out = model(model.neutral_params(1))
    v = out.vertices[0]
    assert v[parts["left_hand"], 0].min() > 0.5 > -0.5 > v[parts["right_hand"], 0].max()
    head = out.joints[0, J["head"]]
    assert (v[parts["face"]] - head).norm(dim=-1).max() < 0.15


def test_regressors(model):
    n_points = model.num_vertices + 55
    for name, reg in model.regressors.items():
        assert reg.indices.min() >= 0 and reg.indices.max() < n_points, name
        np.testing.assert_allclose(reg.weights.sum(1), 1.0, atol=1e-5, err_msg=name)
    assert model.regressors["mediapipe_pose"].names == MEDIAPIPE_POSE_NAMES
    assert model.regressors["mediapipe_hand_left"].names == MEDIAPIPE_HAND_NAMES
    assert len(model.regressors["ibug68"].names) == 68
    out = model(random_params(model, 2, seed=6))
    assert model.keypoints(out, "mediapipe_pose").shape == (2, 33, 3)
    left = model.keypoints(out, "mediapipe_hand_left")
    right = model.keypoints(out, "mediapipe_hand_right")
    assert left.shape == right.shape == (2, 21, 3)
    torch.testing.assert_close(model.keypoints(out, "smplx_joints"), out.joints)
    torch.testing.assert_close(left[:, 0], out.joints[:, J["left_wrist"]])
    torch.testing.assert_close(right[:, 6], out.joints[:, J["right_index2"]])
    with pytest.raises(FurpeError, match="mediapipe_face"):
        model.keypoints(out, "mediapipe_face")


def test_fingertips_and_feet_at_rest(model):
    out = model(model.neutral_params(1))
    hand = model.keypoints(out, "mediapipe_hand_left")[0]
    joints = out.joints[0]
    names = MEDIAPIPE_HAND_NAMES
    for finger in ("index_finger", "middle_finger", "ring_finger", "pinky"):
        tip, dip = hand[names.index(f"{finger}_tip")], hand[names.index(f"{finger}_dip")]
        assert tip[0] > dip[0]  # further out along the T-posed left arm (+x)
    pose = model.keypoints(out, "mediapipe_pose")[0]
    heel = pose[MEDIAPIPE_POSE_NAMES.index("left_heel")]
    toe = pose[MEDIAPIPE_POSE_NAMES.index("left_foot_index")]
    assert toe[2] < joints[J["left_ankle"], 2] < heel[2]  # toes towards the camera
    ear = pose[MEDIAPIPE_POSE_NAMES.index("left_ear")]
    assert ear[0] > joints[J["head"], 0] + 0.05


def test_real_vertex_ids_used_for_the_real_mesh():
    from smplx.vertex_ids import vertex_ids

    ids = _vertex_points(np.zeros((SMPLX_NUM_VERTICES, 3)), synthetic_joints(),
                         np.zeros(SMPLX_NUM_VERTICES, dtype=np.int64))
    assert ids["lindex"] == vertex_ids["smplx"]["lindex"]
    assert ids["RHeel"] == vertex_ids["smplx"]["RHeel"]


def test_compact_shape_space(tmp_path):
    write_synthetic_smplx(tmp_path, compact_shape_space=True)
    with pytest.warns(UserWarning, match="10 shape"):
        m = SMPLXBodyModel(tmp_path, num_betas=16, num_expression=4)
    assert m.blocks["betas"].size == 10 and m.blocks["expression"].size == 4
    assert m(m.neutral_params(1)).vertices.shape[1] == m.num_vertices


def test_eye_pose_blocks(model_dir):
    m = SMPLXBodyModel(model_dir, eye_pose=True)
    params = m.neutral_params(1)
    base = m(params).vertices
    params["leye_pose"] = torch.tensor([[[0.0, 0.5, 0.0]]])
    assert (m(params).vertices - base).abs().max() > 1e-4


def test_model_path_forms(model_dir):
    path = model_dir / "smplx" / "SMPLX_NEUTRAL.npz"
    assert SMPLXBodyModel(path).model_file == path
    assert SMPLXBodyModel(model_dir / "smplx").model_file == path


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FurpeError) as err:
        SMPLXBodyModel(missing)
    msg = str(err.value)
    assert str(missing / "smplx" / "SMPLX_NEUTRAL.npz") in msg
    assert "smpl-x.is.tue.mpg.de" in msg and "never downloads" in msg


def test_missing_file(tmp_path, model_dir):
    with pytest.raises(FurpeError, match="SMPLX_NEUTRAL.npz"):
        SMPLXBodyModel(tmp_path)
    with pytest.raises(FurpeError, match="SMPLX_FEMALE.npz"):
        SMPLXBodyModel(model_dir, gender="female")
    with pytest.raises(FurpeError, match="gender"):
        SMPLXBodyModel(model_dir, gender="robot")


def test_wrong_layout(tmp_path, model_dir):
    data = dict(np.load(model_dir / "smplx" / "SMPLX_NEUTRAL.npz"))
    bad = tmp_path / "smplx"
    bad.mkdir()
    data["J_regressor"] = data["J_regressor"][:24]
    np.savez(bad / "SMPLX_NEUTRAL.npz", **data)
    with pytest.raises(FurpeError, match="J_regressor"):
        SMPLXBodyModel(tmp_path)
    del data["posedirs"]
    np.savez(bad / "SMPLX_NEUTRAL.npz", **data)
    with pytest.raises(FurpeError, match="not a valid SMPL-X model file"):
        SMPLXBodyModel(tmp_path)
    (bad / "SMPLX_NEUTRAL.npz").write_bytes(b"not a zip file")
    with pytest.raises(FurpeError, match="not a valid SMPL-X model file"):
        SMPLXBodyModel(tmp_path)


def test_file_without_contour_table(tmp_path, model_dir):
    data = dict(np.load(model_dir / "smplx" / "SMPLX_NEUTRAL.npz"))
    del data["dynamic_lmk_faces_idx"], data["dynamic_lmk_bary_coords"]
    (tmp_path / "smplx").mkdir()
    np.savez(tmp_path / "smplx" / "SMPLX_NEUTRAL.npz", **data)
    m = SMPLXBodyModel(tmp_path)
    names = m.regressors["ibug68"].names
    assert len(names) == 51 and names[0] == "ibug_17"
    out = m(m.neutral_params(1))
    full = SMPLXBodyModel(model_dir)
    torch.testing.assert_close(
        m.keypoints(out, "mediapipe_pose"), full.keypoints(out, "mediapipe_pose")
    )


def test_face_mesh_observations_fit_smplx_through_ibug68(model):
    """A Face Mesh (478) observation drives an SMPL-X fit through the model's iBUG-68 face
    landmarks: the mapped rows are used, the face lands on them, the jaw opening is found."""
    from furpe.experts.base import PartObservation, PersonObservation
    from furpe.core.vocab import FACE_MESH_REFINED_SIZE, FACE_TO_IBUG68
    from furpe.core.camera import intrinsics, project
    from furpe.fitting.fit import Fitter, resolve_convention

    K = intrinsics(640, 640)
    gt = model.neutral_params(1)
    gt["transl"][0] = torch.tensor([0.0, 0.55, 0.6])  # the head in front of the camera
    gt["jaw_pose"][0, 0, 0] = 0.25  # mouth open
    with torch.no_grad():
        out = model(gt)
        ibug = model.keypoints(out, "ibug68")[0]
    uv = project(ibug[None], torch.as_tensor(K, dtype=torch.float32))[0].numpy()
    names = model.regressors["ibug68"].names
    kp = np.zeros((FACE_MESH_REFINED_SIZE, 2))
    conf = np.zeros(FACE_MESH_REFINED_SIZE)
    for i, mp in FACE_TO_IBUG68.items():
        if f"ibug_{i:02d}" in names:
            kp[mp], conf[mp] = uv[names.index(f"ibug_{i:02d}")], 1.0
    fitter = Fitter(model)
    key, rows = resolve_convention(fitter.regressors, "face", "mediapipe_face")
    assert key == "mediapipe_face>ibug68" and len(rows) == int(conf.sum()) >= 45
    # The derived regressor belongs to the fitter: the shared model is left as it was.
    assert key in fitter.regressors and key not in model.regressors
    face = PartObservation("face", "mediapipe_face", kp, conf, score=0.9, expert="test")
    fit = fitter.fit([PersonObservation({"face": face})], K)
    assert float(fit.residual["face"][0]) < 0.02
    jaw = float(fit.params["jaw_pose"][0, 0].norm())
    print(f"\njaw opening fitted {jaw:.3f} rad (true 0.25)")
    assert 0.12 < jaw < 0.4
    with pytest.raises(FurpeError, match="no correspondences"):
        resolve_convention(dict(model.regressors), "face", "dlib_5")


@pytest.mark.slow
@pytest.mark.mediapipe
def test_real_photo_through_the_pipeline_with_smplx(model):
    """The whole pipeline with SMPL-X on a real photo: body, hands and the Face Mesh face all
    reach the fit (the face through iBUG-68), and a person comes out in the camera frame."""
    import cv2

    from furpe.config import ReconstructConfig
    from furpe.pipeline import Reconstructor

    photo = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    rec = Reconstructor(ReconstructConfig(device="cpu"), body_model=model)
    frame = rec.reconstruct_image(rgb)
    (person,) = frame.people
    assert frame.body_model == "smplx"
    assert person.parts["body"].observed and person.parts["face"].observed
    assert "face" in person.keypoints_2d and person.keypoints_2d["face"].observed.shape[1] == 2
    assert person.vertices.shape == (model.num_vertices, 3)
    assert (person.vertices[:, 2] > 0).all()  # in front of the camera
