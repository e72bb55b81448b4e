"""The BVH export: read back by the parser, forward kinematics gives furpe's joints (camera
frame turned y-up, centimetres) every frame, with the bind-pose rest and with the T-pose."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from export_helpers import WORLD_FROM_CAMERA, forward, random_frames, same_shape
from furpe.bodymodels import load_body_model
from furpe.core.errors import FurpeError
from furpe.export.bvh import (bvh_forward_kinematics, bvh_frames, matrix_to_zxy, read_bvh,
                              write_bvh, zxy_to_matrix)
from furpe.export.rig import track_rig
from synthetic_models import write_synthetic_smplx


def _joint_error_mm(path, rig, joints_camera) -> float:
    bvh = read_bvh(path)
    positions, _ = bvh_forward_kinematics(bvh)  # (N, J, 3) centimetres, world frame
    order = [rig.bone_names.index(n) for n in bvh.names]
    expected = joints_camera[:, order] @ WORLD_FROM_CAMERA.T * 100.0
    return float(np.linalg.norm(positions - expected, axis=-1).max()) * 10.0


def _at_zero(bvh):
    """``bvh`` with one frame of zero channels: its rest skeleton."""
    return dataclasses.replace(bvh, motion=np.zeros((1, bvh.motion.shape[1])))


@pytest.mark.parametrize("tpose", [False, True])
def test_anny_bvh_forward_kinematics_gives_furpe_joints(anny_model, tmp_path, tpose):
    frames = random_frames(anny_model, 8, seed=20, scale=0.4)
    rig, motion = track_rig(anny_model, same_shape(anny_model, frames), np.arange(8) / 30.0)
    _, joints = forward(anny_model, same_shape(anny_model, frames))
    path = write_bvh(tmp_path / "anny.bvh", rig, motion, tpose=tpose)
    err = _joint_error_mm(path, rig, joints)
    print(f"Anny BVH (tpose={tpose}) max joint error {err:.5f} mm")
    assert err < 1.0
    bvh = read_bvh(path)
    assert bvh.num_frames == 8 and abs(bvh.frame_time - 1 / 30) < 1e-8
    assert bvh.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation",
                               "Yrotation")
    assert all(c == ("Zrotation", "Xrotation", "Yrotation") for c in bvh.channels[1:])
    assert set(bvh.names) == set(rig.bone_names) and len(bvh.end_sites) > 0


def test_tpose_rest_has_horizontal_arms(anny_model, tmp_path):
    frames = random_frames(anny_model, 2, seed=21)
    rig, motion = track_rig(anny_model, frames, [0.0, 0.1])
    bvh = read_bvh(write_bvh(tmp_path / "t.bvh", rig, motion, tpose=True))
    rest, _ = bvh_forward_kinematics(_at_zero(bvh))  # the skeleton at zero rotation
    names = list(bvh.names)
    for side, sign in (("L", 1.0), ("R", -1.0)):
        shoulder, elbow, wrist = (rest[0, names.index(f"{b}.{side}")]
                                  for b in ("upperarm01", "lowerarm01", "wrist"))
        for a, b in ((shoulder, elbow), (elbow, wrist)):
            d = (b - a) / np.linalg.norm(b - a)
            assert d[0] * sign > 0.999, d
    # without --tpose the rest is the bind pose: arms hang down
    plain = read_bvh(write_bvh(tmp_path / "a.bvh", rig, motion))
    rest_a, _ = bvh_forward_kinematics(_at_zero(plain))
    d = rest_a[0, names.index("wrist.L")] - rest_a[0, names.index("upperarm01.L")]
    assert d[1] < -0.3 * np.linalg.norm(d)


def test_smplx_bvh_with_expressions(tmp_path):
    """SMPL-X's joints move with the expression: those bones get position channels and the
    joints still come back exactly."""
    write_synthetic_smplx(tmp_path / "models", compact_shape_space=True)
    model = load_body_model("smplx", tmp_path / "models")
    frames = same_shape(model, random_frames(model, 5, seed=22))
    rig, motion = track_rig(model, frames, np.arange(5) / 30.0)
    _, joints = forward(model, frames)
    path = write_bvh(tmp_path / "smplx.bvh", rig, motion)
    err = _joint_error_mm(path, rig, joints)
    print(f"SMPL-X BVH max joint error {err:.5f} mm")
    assert err < 1.0
    assert any(len(c) == 6 for c in read_bvh(path).channels[1:])


def test_euler_angles_are_continuous(anny_model, tmp_path):
    """A person spinning about the vertical, 25 degrees per frame, two and a half turns: no
    channel jumps by a turn, the root's angles run on past 360 degrees."""
    frames = same_shape(anny_model, random_frames(anny_model, 36, seed=23, scale=0.0))
    for i, f in enumerate(frames):
        f["global_orient"] = np.array([[0.0, np.radians(25.0) * i, 0.0]], np.float32)
    rig, motion = track_rig(anny_model, frames, np.arange(36) / 30.0)
    bvh = read_bvh(write_bvh(tmp_path / "spin.bvh", rig, motion))
    angles = bvh.motion[:, 3:]
    jumps = np.abs(np.diff(angles, axis=0)).max()
    assert jumps < 40.0, f"an Euler angle jumps by {jumps:.1f} degrees between frames"
    assert np.ptp(bvh.motion[:, 3:6], axis=0).max() > 720.0


def test_euler_round_trip_and_nearest_solution():
    from scipy.spatial.transform import Rotation

    R = Rotation.random(500, random_state=1).as_matrix()
    assert np.abs(zxy_to_matrix(matrix_to_zxy(R)) - R).max() < 1e-12
    previous = np.random.default_rng(2).uniform(-10, 10, (500, 3))
    near = matrix_to_zxy(R, previous)
    assert np.abs(zxy_to_matrix(near) - R).max() < 1e-12
    # no other solution (the second branch or whole turns) is nearer the previous angles
    a, b, c = near.T
    other = np.stack([a + np.pi, np.pi - b, c + np.pi], -1)
    other -= 2 * np.pi * np.round((other - previous) / (2 * np.pi))
    assert np.all(np.abs(near - previous).sum(1) <= np.abs(other - previous).sum(1) + 1e-9)
    # gimbal lock: x = 90 degrees
    locked = zxy_to_matrix(np.array([[0.3, np.pi / 2, -0.2]]))
    assert np.abs(zxy_to_matrix(matrix_to_zxy(locked, np.zeros((1, 3)))) - locked).max() < 1e-9


def test_gaps_repeat_the_last_frame():
    times = np.array([0.0, 1 / 30, 3 / 30, 4 / 30])
    assert bvh_frames(times, 1 / 30).tolist() == [0, 1, 1, 2, 3]


def test_reader_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT hips\n{\n OFFSET 0 0 0\n CHANNELS 3 Xrotation Yrotation "
                   "Zrotation\n}\nMOTION\nFrames: 2\nFrame Time: 0.1\n0 0 0\n")
    with pytest.raises(FurpeError, match="motion values"):
        read_bvh(bad)
    bad.write_text("HIERARCHY\nROOT hips\n{\n OFFSET 0 zero 0\n")
    with pytest.raises(FurpeError):
        read_bvh(bad)
