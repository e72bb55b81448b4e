"""Finger hinge axes of both body models, and the fit's hinge prior that uses them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from furpe.bodymodels.smplx_model import SMPLXBodyModel
from synthetic_models import write_synthetic_smplx
from furpe.fitting.fit import FitConfig, Fitter


@pytest.fixture(scope="module")
def smplx_model(tmp_path_factory) -> SMPLXBodyModel:
    folder = tmp_path_factory.mktemp("smplx")
    write_synthetic_smplx(folder)
    return SMPLXBodyModel(folder)


@pytest.fixture(params=["anny", "smplx"])
def model(request, anny_model, smplx_model):
    return anny_model if request.param == "anny" else smplx_model


def _native_joints(model) -> np.ndarray:
    with torch.no_grad():
        joints = model(model.neutral_params(1)).joints[0].numpy().astype(np.float64)
    return joints @ np.asarray(model.canonical_rotation)  # camera frame -> native (rows)


def test_axes_are_unit_and_normal_to_finger_and_palm(model):
    axes = model.finger_hinge_axes()
    assert set(axes) == {"left_hand_pose", "right_hand_pose"}
    names = list(model.joint_names)
    joints = _native_joints(model)
    j = lambda n: joints[names.index(n)]  # noqa: E731
    for block, a in axes.items():
        bones = model.hand_bones(block)
        assert a.shape == (model.blocks[block].size, 3) == (len(bones.rows), 3)
        normal = np.cross(j(bones.index_base) - j(bones.wrist), j(bones.pinky_base) - j(bones.wrist))
        normal /= np.linalg.norm(normal)
        hinges = 0
        for row, axis in zip(bones.rows, a):
            if row is None:
                assert not axis.any()
                continue
            hinges += 1
            assert np.linalg.norm(axis) == pytest.approx(1.0)
            d = j(row[1]) - j(row[0])
            assert abs(axis @ d) / np.linalg.norm(d) < 1e-6
            assert abs(axis @ normal) < 1e-6
        assert hinges >= 15  # every finger bone (Anny: 15 of 19 rows; SMPL-X: all 15)
    assert model.hand_bones("body_pose") is None


def _joint_moved(model, block: str, row: int, rotvec: np.ndarray, joint: str) -> np.ndarray:
    p = model.neutral_params(1)
    p[block][0, row] = torch.as_tensor(rotvec, dtype=torch.float32)
    with torch.no_grad():
        moved = model(p).joints[0, list(model.joint_names).index(joint)].numpy()
        rest = model(model.neutral_params(1)).joints[0, list(model.joint_names).index(joint)]
    return (moved - rest.numpy()).astype(np.float64)


def test_bending_about_the_hinge_keeps_the_finger_in_its_plane(model):
    """Rotating the index finger's middle bone about its hinge moves the next joint within
    the plane normal to the hinge; a twist about another axis moves it out of that plane."""
    block = "left_hand_pose"
    labels = model.blocks[block].labels
    middle = {"anny": "finger2-2.L", "smplx": "left_index2"}[model.name]
    tip = {"anny": "finger2-3.L", "smplx": "left_index3"}[model.name]
    row = labels.index(middle)
    axis = model.finger_hinge_axes()[block][row]
    axis_cam = np.asarray(model.canonical_rotation) @ axis
    flex = _joint_moved(model, block, row, 0.8 * axis, tip)
    assert np.linalg.norm(flex) > 2e-3  # it moved
    assert abs(flex @ axis_cam) < 0.05 * np.linalg.norm(flex)
    other = np.cross(axis, [0.0, 0.0, 1.0]) + np.cross(axis, [1.0, 0.0, 0.0])
    other /= np.linalg.norm(other)
    side = _joint_moved(model, block, row, 0.8 * other, tip)
    assert abs(side @ axis_cam) > 0.3 * np.linalg.norm(side)


def test_hinge_prior_makes_bending_cheaper_than_twisting(anny_model):
    m = anny_model
    block = "right_hand_pose"
    row = m.blocks[block].labels.index("finger3-2.R")
    axis = torch.as_tensor(m.finger_hinge_axes()[block][row], dtype=torch.float32)
    twist = torch.cross(axis, torch.tensor([0.0, 1.0, 0.0]), dim=0)
    twist = twist / twist.norm()

    def prior(cfg: FitConfig, rotvec: torch.Tensor) -> float:
        p = m.neutral_params(1)
        p[block][0, row] = rotvec
        return float(Fitter(m, cfg).prior(p) - Fitter(m, cfg).prior(m.neutral_params(1)))

    cfg = FitConfig()
    n = m.blocks[block].size
    assert prior(cfg, 0.5 * axis) == pytest.approx(cfg.w_finger_flex * 0.25 / n, rel=1e-4)
    assert prior(cfg, 0.5 * twist) == pytest.approx(cfg.w_finger_other * 0.25 / n, rel=1e-4)
    # a metacarpal (no hinge) keeps the isotropic weight
    meta = m.blocks[block].labels.index("metacarpal2.R")
    p = m.neutral_params(1)
    p[block][0, meta] = 0.5 * twist
    base = Fitter(m, cfg).prior(m.neutral_params(1))
    assert float(Fitter(m, cfg).prior(p) - base) == pytest.approx(
        cfg.w_pose[block] * 0.25 / n, rel=1e-4)
    # equal hinge weights give the isotropic prior
    iso = FitConfig(w_finger_flex=0.02, w_finger_other=0.02)
    iso.w_pose[block] = 0.02
    assert prior(iso, 0.5 * axis) == pytest.approx(prior(iso, 0.5 * twist), rel=1e-4)
