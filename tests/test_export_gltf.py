"""The glTF export: the files pass the Khronos validator, and glTF skinning re-implemented
in NumPy from the file alone gives back furpe's own vertices (camera frame) every frame."""
from __future__ import annotations

import numpy as np
import pytest

from export_helpers import (WORLD_FROM_CAMERA, assert_valid_gltf, forward, random_frames,
                            same_shape, skin_glb)
from furpe.bodymodels import load_body_model
from furpe.export.gltf import continuous_quaternions, write_glb
from furpe.export.rig import track_rig
from synthetic_models import write_synthetic_smplx

N_FRAMES = 6


@pytest.fixture(scope="module")
def anny_track(anny_model, tmp_path_factory):
    """An Anny track of N_FRAMES frames written with all influences and with 4."""
    frames = same_shape(anny_model, random_frames(anny_model, N_FRAMES, seed=10))
    times = 0.5 + np.arange(N_FRAMES) / 30.0
    rig, motion = track_rig(anny_model, frames, times)
    folder = tmp_path_factory.mktemp("glb")
    full = write_glb(folder / "anny_all.glb", rig, motion, extras={"track_id": 3})
    four = write_glb(folder / "anny_4.glb", rig, motion, max_influences=4)
    verts, _ = forward(anny_model, frames)
    return {"rig": rig, "motion": motion, "full": full, "four": four, "verts": verts,
            "times": times}


def test_anny_glb_passes_the_khronos_validator(anny_track):
    influences = {}
    for key in ("full", "four"):
        report = assert_valid_gltf(anny_track[key])
        info = report["info"]
        influences[key] = info["maxInfluences"]
        assert info["hasSkins"] and info["hasMorphTargets"] and info["animationCount"] == 1
        print(f"{anny_track[key].name}: validator {report['issues']['numErrors']} errors, "
              f"{report['issues']['numWarnings']} warnings, {report['issues']['numInfos']} "
              f"infos; {anny_track[key].stat().st_size / 1e6:.2f} MB for {N_FRAMES} frames; "
              f"max influences {info['maxInfluences']}")
    # every influence, in sets of four (JOINTS_0/WEIGHTS_0, JOINTS_1/WEIGHTS_1, ...)
    assert influences == {"full": 4 * -(-anny_track["rig"].num_influences // 4), "four": 4}


def test_anny_glb_skinning_reproduces_furpe_vertices(anny_track):
    times, world, facts = skin_glb(anny_track["full"])
    assert np.allclose(times, anny_track["times"], atol=1e-6)  # the frames' timestamps
    camera = world @ WORLD_FROM_CAMERA.T  # the glb's world is the camera frame turned y-up
    err_full = np.linalg.norm(camera - anny_track["verts"], axis=-1).max(axis=1)
    _, world4, facts4 = skin_glb(anny_track["four"])
    err_four = np.linalg.norm(world4 @ WORLD_FROM_CAMERA.T - anny_track["verts"],
                              axis=-1).max(axis=1)
    print(f"glTF skinning vs furpe (max over vertices, per frame, mm): all influences "
          f"{np.round(err_full * 1e3, 4).tolist()}; 4 influences "
          f"{np.round(err_four * 1e3, 2).tolist()}")
    assert err_full.max() < 1e-3, f"all influences: {err_full.max() * 1e3:.3f} mm"
    assert err_four.max() > err_full.max()
    assert facts["influences"] >= anny_track["rig"].num_influences and facts4["influences"] == 4
    assert facts["target_names"] == list(anny_track["rig"].morph_names)
    assert "jawOpen" in facts["target_names"] and all(facts["sparse_targets"])
    assert facts["scene_extras"] == {"furpe": {"track_id": 3}}


def test_smplx_glb_validates_and_skins_like_furpe(tmp_path):
    write_synthetic_smplx(tmp_path / "models", compact_shape_space=True)
    model = load_body_model("smplx", tmp_path / "models")
    model.posedirs.zero_()  # pose correctives are not exported (docs/export.md)
    frames = same_shape(model, random_frames(model, 4, seed=11))
    rig, motion = track_rig(model, frames, np.arange(4) / 24.0)
    path = write_glb(tmp_path / "smplx.glb", rig, motion)
    assert_valid_gltf(path)
    _, world, facts = skin_glb(path)
    verts, _ = forward(model, frames)
    err = np.linalg.norm(world @ WORLD_FROM_CAMERA.T - verts, axis=-1).max()
    print(f"SMPL-X (synthetic) glTF skinning vs furpe: {err * 1e3:.4f} mm")
    assert err < 1e-3
    assert facts["target_names"] == [f"expression{i}" for i in range(10)]


def test_quaternions_stay_on_one_hemisphere():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 3, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    out = continuous_quaternions(q)
    assert np.all((out[1:] * out[:-1]).sum(-1) >= 0)
    assert np.allclose(np.abs((out * q).sum(-1)), 1.0)  # same rotations


def test_write_replaces_and_leaves_no_temporary_file(anny_track, tmp_path):
    path = tmp_path / "track.glb"
    path.write_bytes(b"old")
    write_glb(path, anny_track["rig"], anny_track["motion"], max_influences=4)
    assert [p.name for p in tmp_path.iterdir()] == ["track.glb"]
    assert path.read_bytes()[:4] == b"glTF"
