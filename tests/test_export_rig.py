"""The export rig (furpe.export.rig): linear blend skinning of the rig and its motion gives
back the body model's own forward pass, for Anny and for the synthetic SMPL-X model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export_helpers import WORLD_FROM_CAMERA, forward, random_frames, same_shape
from furpe.bodymodels import load_body_model
from furpe.core.errors import FurpeError
from furpe.export.rig import make_rig, skin, t_pose_bones, track_rig, track_shape
from synthetic_models import write_synthetic_smplx


@pytest.fixture(scope="module")
def smplx_model(tmp_path_factory):
    """The synthetic SMPL-X model (10 betas, 10 expressions) without pose correctives, which
    no skinning format holds (docs/export.md)."""
    folder = tmp_path_factory.mktemp("smplx")
    write_synthetic_smplx(folder, compact_shape_space=True)
    model = load_body_model("smplx", folder)
    model.posedirs.zero_()
    return model


def _times(n: int) -> np.ndarray:
    return np.arange(n) / 25.0


def test_anny_rig_skinning_matches_forward(anny_model):
    frames = same_shape(anny_model, random_frames(anny_model, 4, seed=0))
    rig, motion = track_rig(anny_model, frames, _times(4))
    verts, joints = forward(anny_model, frames)
    ours = skin(rig, motion) @ WORLD_FROM_CAMERA.T  # world -> camera frame
    err = np.linalg.norm(ours - verts, axis=-1).max()
    assert err < 1e-5, f"rig skinning differs from Anny's forward by {err:.2e} m"
    assert np.abs(motion.joints @ WORLD_FROM_CAMERA.T - joints).max() < 1e-5
    # Anny's joints are its bone heads
    assert np.abs(motion.bones[..., :3, 3] - motion.joints).max() < 1e-5
    # all influences kept (Anny: up to 9 per vertex), weights normalised, by decreasing weight
    dense = anny_model.anny.dense_vertex_bone_weights.numpy()
    assert rig.num_influences == int((dense > 0).sum(1).max())
    assert np.allclose(rig.skin_weights.sum(1), 1.0)
    assert np.all(np.diff(rig.skin_weights, axis=1) <= 0)
    assert rig.morph_names == tuple(anny_model.blocks["facial_actions"].labels)
    assert "jawOpen" in rig.morph_names and rig.morph_targets.shape == (52, len(rig.vertices), 3)


def test_anny_model_frame_is_y_up_facing_z(anny_model):
    rig = make_rig(anny_model, {})
    names = list(rig.bone_names)
    head = rig.rest_bones[names.index("head"), :3, 3]
    foot = rig.rest_bones[names.index("foot.L"), :3, 3]
    assert head[1] - foot[1] > 1.2  # y up
    left, right = (rig.rest_bones[names.index(f"upperarm01.{s}"), :3, 3] for s in "LR")
    assert left[0] > right[0]  # the person's left towards +x
    # the nose (most forward vertex near the head) is towards +z
    near_head = np.linalg.norm(rig.vertices - head, axis=1) < 0.15
    assert rig.vertices[near_head, 2].max() > head[2] + 0.05


def test_four_influences_renormalised_and_worse(anny_model):
    frames = same_shape(anny_model, random_frames(anny_model, 2, seed=1))
    rig, motion = track_rig(anny_model, frames, _times(2))
    rig4 = rig.with_max_influences(4)
    assert rig4.num_influences == 4 and np.allclose(rig4.skin_weights.sum(1), 1.0)
    verts, _ = forward(anny_model, frames)
    full = np.linalg.norm(skin(rig, motion) @ WORLD_FROM_CAMERA.T - verts, axis=-1).max()
    four = np.linalg.norm(skin(rig4, motion) @ WORLD_FROM_CAMERA.T - verts, axis=-1).max()
    print(f"rig skinning max vertex error: all influences {full * 1e3:.4f} mm, "
          f"4 influences {four * 1e3:.2f} mm")
    assert four > full
    with pytest.raises(FurpeError):
        rig.with_max_influences(0)


def test_track_shape_is_the_median(anny_model):
    frames = random_frames(anny_model, 5, seed=2)
    shape = track_shape(anny_model, frames)
    expected = np.median(np.stack([f["phenotype"] for f in frames]), axis=0)
    assert set(shape) == {"phenotype"}
    assert np.allclose(shape["phenotype"], expected)
    rig, motion = track_rig(anny_model, frames, _times(5))
    assert np.allclose(rig.shape["phenotype"], expected)
    # each frame is its pose on the median body
    median_frames = [{**f, "phenotype": expected.astype(np.float32)} for f in frames]
    verts, _ = forward(anny_model, median_frames)
    assert np.abs(skin(rig, motion)[-1] @ WORLD_FROM_CAMERA.T - verts[-1]).max() < 1e-5


def test_bad_frames_are_refused(anny_model):
    frames = random_frames(anny_model, 2, seed=3)
    with pytest.raises(FurpeError, match="increasing"):
        track_rig(anny_model, frames, [0.0, 0.0])
    with pytest.raises(FurpeError, match="shape"):
        track_rig(anny_model, [{"body_pose": np.zeros((2, 3))}], [0.0])
    with pytest.raises(FurpeError):
        track_shape(anny_model, [])


def test_missing_and_nan_params_are_neutral(anny_model):
    frames = [{"transl": np.array([0.0, 0.0, 3.0], np.float32),
               "body_pose": np.full((anny_model.blocks["body_pose"].size, 3), np.nan,
                                    np.float32)}]
    rig, motion = track_rig(anny_model, frames, [0.0])
    neutral = anny_model.neutral_params(1)
    neutral["transl"] = torch.tensor([[0.0, 0.0, 3.0]])
    with torch.no_grad():
        verts = anny_model(neutral).vertices[0].double().numpy()
    assert np.abs(skin(rig, motion)[0] @ WORLD_FROM_CAMERA.T - verts).max() < 1e-5


def test_smplx_rig_skinning_matches_forward(smplx_model):
    frames = same_shape(smplx_model, random_frames(smplx_model, 3, seed=4))
    rig, motion = track_rig(smplx_model, frames, _times(3))
    verts, joints = forward(smplx_model, frames)
    err = np.linalg.norm(skin(rig, motion) @ WORLD_FROM_CAMERA.T - verts, axis=-1).max()
    assert err < 1e-5, f"rig skinning differs from SMPL-X's forward by {err:.2e} m"
    assert np.abs(motion.joints @ WORLD_FROM_CAMERA.T - joints).max() < 1e-5
    assert rig.morph_names == tuple(f"expression{i}" for i in range(10))
    assert rig.bone_names[0] == "pelvis" and np.allclose(rig.rest_bones[0, :3, 3], 0.0)


def test_t_pose_puts_the_arms_out_sideways(anny_model, smplx_model):
    for model, chains in ((anny_model, ("upperarm01", "lowerarm01", "wrist")),
                          (smplx_model, ("shoulder", "elbow", "wrist"))):
        rig = make_rig(model, {})
        bones = t_pose_bones(rig)
        names = list(rig.bone_names)
        for side, sign in (("L", 1.0), ("R", -1.0)):
            label = (lambda b: f"{b}.{side}") if model.name == "anny" else (
                lambda b: f"{'left' if side == 'L' else 'right'}_{b}")
            heads = [bones[names.index(label(b)), :3, 3] for b in chains]
            for a, b in zip(heads[:-1], heads[1:]):
                d = (b - a) / np.linalg.norm(b - a)
                assert d[0] * sign > 0.999, (model.name, side, d)
        # a pose of the same skeleton: every bone's offset in its parent's frame is kept
        for j, p in enumerate(rig.parents):
            if p >= 0:
                rest_local = np.linalg.inv(rig.rest_bones[p]) @ rig.rest_bones[j]
                t_local = np.linalg.inv(bones[p]) @ bones[j]
                assert np.allclose(rest_local[:3, 3], t_local[:3, 3], atol=1e-9)
