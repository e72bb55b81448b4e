"""The Anny body model behind the BodyModel interface (metrics: tests/test_metrics.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from furpe.core.errors import FurpeError


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


def _anny_reference(model, params):
    """Vertices and joints from Anny's own forward pass, placed like ``BodyModel.forward``."""
    import roma

    from furpe.core.rotations import rotvec_to_rotmat

    nb = len(model.joint_names)
    rv = torch.zeros(1, nb, 3)
    for block, idx in model._bone_index.items():
        rv[:, idx] = params[block]
    pose = torch.eye(4).repeat(1, nb, 1, 1)
    pose[:, :, :3, :3] = roma.rotvec_to_rotmat(rv)
    out = model.anny(pose_parameters=pose, phenotype_kwargs=params["phenotype"],
                     facial_actions=params["facial_actions"])
    G = rotvec_to_rotmat(params["global_orient"][:, 0]) @ torch.as_tensor(
        model.canonical_rotation, dtype=torch.float32)
    place = lambda x: x @ G.transpose(1, 2) + params["transl"][:, None]  # noqa: E731
    return place(out["vertices"]), place(out["bone_poses"][:, :, :3, 3])


def test_forward_matches_annys_own_forward_and_subsets(anny_model):
    """Our re-implemented forward (rest cache, vertex subsets) equals Anny's, and a vertex
    subset gives exactly those rows of the full output."""
    from furpe.synthetic import sample_params

    m = anny_model
    params = sample_params(m, np.random.default_rng(3))
    with torch.no_grad():
        ref_v, ref_j = _anny_reference(m, params)
        out = m(params)
        assert torch.allclose(out.vertices, ref_v, atol=1e-5)
        assert torch.allclose(out.joints, ref_j, atol=1e-5)
        ids = np.array([5, 17, 4000, 13000, 9])
        sub = m(params, vertex_ids=ids)
        assert sub.vertices.shape == (1, 5, 3)
        assert torch.allclose(sub.vertices, out.vertices[:, ids], atol=1e-6)
        # The cached rest skeleton follows a phenotype change.
        params["phenotype"][0, 1] = 0.1
        ref_v2, _ = _anny_reference(m, params)
        assert torch.allclose(m(params).vertices, ref_v2, atol=1e-5)
        assert (ref_v2 - ref_v).abs().max() > 0.01


def test_keypoint_sampler_matches_full_regressors_and_has_gradients(anny_model):
    from furpe.bodymodels.base import KeypointSampler
    from furpe.synthetic import sample_params

    m = anny_model
    convs = ["mediapipe_pose", "mediapipe_face", "mediapipe_hand_left", "mediapipe_hand_right"]
    sampler = KeypointSampler(m, convs)
    assert 0 < len(sampler.vertex_ids) < m.num_vertices // 5
    params = sample_params(m, np.random.default_rng(4))
    with torch.no_grad():
        out = m(params)
    kps = sampler(params)
    for c in convs:
        assert torch.allclose(kps[c], m.keypoints(out, c), atol=1e-6), c
    for v in params.values():
        v.requires_grad_(True)
    sum(k.sum() for k in sampler(params).values()).backward()
    for name in ("body_pose", "phenotype", "facial_actions", "left_hand_pose"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    with pytest.raises(FurpeError, match="no correspondences"):
        KeypointSampler(m, ["openpose_body25"])


def test_derived_data_is_cached_and_rebuilt_when_stale(anny_model, tmp_path, monkeypatch):
    from furpe.bodymodels import anny_model as am

    labels = list(anny_model.joint_names)
    path = tmp_path / "derived.npz"
    first = am._derived_data(anny_model, path, labels)
    assert path.exists()
    for part in ("left_hand", "right_hand", "face", "body"):
        assert np.array_equal(first[f"part_{part}"], anny_model.part_vertices[part])

    def boom(*_a, **_k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(anny_model, "_make_part_vertices", boom)
    again = am._derived_data(anny_model, path, labels)
    assert np.array_equal(again["coco_indices"], first["coco_indices"])
    # A stale key (another anny version) or a damaged file triggers a rebuild.
    path.write_bytes(b"not an npz")
    with pytest.raises(AssertionError, match="recomputed"):
        am._derived_data(anny_model, path, labels)


def test_at_rest_resets_only_that_part(anny_model):
    m = anny_model
    g = torch.Generator().manual_seed(3)
    params = {k: v + 0.2 * torch.randn(v.shape, generator=g) if m.blocks[k].kind == "rotation"
              else v for k, v in m.neutral_params(2).items()}
    rest = m.at_rest(params, "left_hand")
    neutral = m.neutral_params(2)
    assert torch.equal(rest["left_hand_pose"], neutral["left_hand_pose"])
    for k in params:
        if k != "left_hand_pose":
            assert rest[k] is params[k]
    assert not torch.equal(params["left_hand_pose"], rest["left_hand_pose"])
    with torch.no_grad():
        a, b = m(params).vertices, m(rest).vertices
    moved = (a - b).norm(dim=-1).amax(0) > 1e-6
    assert moved[m.part_vertices["left_hand"]].any()
    assert not moved[m.part_vertices["right_hand"]].any()
    assert not moved[m.part_vertices["face"]].any()


def test_forward_gradients_match_annys_own_forward(anny_model):
    """Batch of two, every block: the gradients of a loss through our forward pass (pointer-
    jumping chain, Rodrigues, phenotype coefficients) equal those through Anny's."""
    from furpe.synthetic import sample_params

    m = anny_model
    rng = np.random.default_rng(11)
    p1, p2 = sample_params(m, rng), sample_params(m, rng)
    weights = torch.randn(2, m.num_vertices, 3, generator=torch.Generator().manual_seed(0))
    grads = []
    for forward in (lambda p: m(p).vertices,
                    lambda p: torch.cat([_anny_reference(m, {k: v[b:b + 1] for k, v in p.items()})[0]
                                         for b in range(2)])):
        params = {k: torch.cat([p1[k], p2[k]]).clone().requires_grad_(True) for k in p1}
        (forward(params) * weights).sum().backward()
        grads.append({k: v.grad for k, v in params.items()})
    for k in grads[0]:
        scale = grads[1][k].abs().max()
        assert scale > 0, k
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-3 * scale), k


def test_phenotype_coefficients_match_anny_at_anchors_and_outside(anny_model):
    """Values and gradients at interior anchors, range ends and outside the range (where
    Anny clamps), against Anny's own coefficients."""
    a = anny_model.anny
    pc = anny_model._phenotype_coefficients
    ns = anny_model._num_phenotype_shapes
    pheno = torch.rand(32, 6, generator=torch.Generator().manual_seed(1)) * 1.4 - 0.2
    pheno[0] = 0.5
    pheno[1] = 0.0
    pheno[2] = 1.0
    pheno[3, 1] = -1 / 3 + 1e-9  # age: below its first anchor
    pheno.requires_grad_(True)
    ref = a._get_phenotype_blendshape_coefficients(
        pheno, pheno.new_zeros(32, len(a.local_change_labels)),
        pheno.new_zeros(32, len(a.facial_action_labels)))[:, :ns]
    out = pc(pheno)
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * g).sum(), pheno)[0]
    g_out = torch.autograd.grad((out * g).sum(), pheno)[0]
    assert g_ref.abs().max() > 0.1
    assert torch.allclose(g_out, g_ref, atol=1e-5)
