"""Acceptance tests: the real ``furpe reconstruct`` command (MediaPipe experts + Anny fit), in
process, on synthetic renders with exact ground truth and on a real photograph.

Errors are measured after Procrustes alignment (furpe.evaluation.metrics). Measured values
(seeds 1 and 2, 640x640, 2.6 m) are noted next to each fixed threshold.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from furpe.bodymodels.base import apply_regressor
from furpe.cli import main
from furpe.evaluation.metrics import pa_mpjpe
from furpe.io.outputs import read_json, read_ply, write_image
from furpe.synthetic import make_person


def pa_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """PA error in metres (the metrics module returns millimetres)."""
    return pa_mpjpe(pred, gt) / 1000.0


REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"

MAX_FACE_PVE = 0.004  # measured 0.3-0.6 mm
MAX_BODY_PVE = 0.060  # body-part vertices, measured 23-30 mm
MAX_COCO_PA_MPJPE = 0.060  # 23 COCO(+feet) keypoints, measured 30-39 mm
MAX_JOINTS_PA_MPJPE = 0.100  # all 104 Anny joints (incl. fingers and toes), measured 43-67 mm
MAX_ACCEPTED_HAND_PVE = 0.045  # measured 12-31 mm


def _cli(args, capsys) -> tuple[int, str]:
    code = main(["reconstruct", *map(str, args), "-q"])
    return code, capsys.readouterr().err


def _coco(model, vertices, joints) -> np.ndarray:
    pts = torch.cat([torch.as_tensor(vertices, dtype=torch.float32),
                     torch.as_tensor(joints, dtype=torch.float32)])[None]
    return apply_regressor(model.regressors["coco"], pts)[0].numpy()


@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_person_errors(anny_model, tmp_path, capsys, seed):
    m = anny_model
    sp = make_person(m, seed, 640, 640, distance=2.6)
    assert sp.visible["left_hand"] and sp.visible["right_hand"] and sp.visible["face"]
    png = tmp_path / f"person{seed}.png"
    write_image(png, sp.image)
    out = tmp_path / "out"
    code, err = _cli([png, "-o", out], capsys)
    assert code == 0, err
    doc = read_json(out / f"person{seed}.json")
    assert doc["status"] == "ok" and len(doc["people"]) == 1
    person = doc["people"][0]
    verts, faces = read_ply(out / person["mesh"])
    assert verts.shape == (m.num_vertices, 3)
    np.testing.assert_array_equal(faces, m.faces)
    joints = np.array([person["joints"][n] for n in m.joint_names], dtype=np.float64)

    errors = {part: pa_error(verts[idx], sp.vertices[idx]) for part, idx in m.part_vertices.items()}
    coco = pa_error(_coco(m, verts, joints), _coco(m, sp.vertices, sp.joints))
    all_joints = pa_error(joints, sp.joints)
    print(f"\nseed {seed}: " + ", ".join(f"{k} {v * 1000:.1f} mm" for k, v in errors.items())
          + f", coco PA-MPJPE {coco * 1000:.1f} mm, joints PA-MPJPE {all_joints * 1000:.1f} mm, "
          + "accepted " + str({k: v["accepted"] for k, v in person["parts"].items()}))
    assert person["parts"]["body"]["accepted"]
    assert person["parts"]["face"]["accepted"]
    assert errors["face"] < MAX_FACE_PVE
    assert errors["body"] < MAX_BODY_PVE
    assert coco < MAX_COCO_PA_MPJPE
    assert all_joints < MAX_JOINTS_PA_MPJPE
    accepted = [h for h in ("left_hand", "right_hand") if person["parts"][h]["accepted"]]
    assert accepted, "no hand was accepted"
    for hand in accepted:
        assert errors[hand] < MAX_ACCEPTED_HAND_PVE, (hand, errors[hand])


def test_astronaut_photo(anny_model, tmp_path, capsys):
    import cv2

    out = tmp_path / "out"
    code, err = _cli([ASTRONAUT, "-o", out], capsys)
    assert code == 0, err
    doc = read_json(out / "astronaut.json")
    for key in ("schema_version", "furpe_version", "source", "units", "coordinate_frame",
                "status", "image", "camera", "body_model", "timings", "people"):
        assert key in doc, key
    assert doc["status"] == "ok" and doc["body_model"] == "anny"
    assert doc["image"] == {"width": 512, "height": 512}
    assert "met" in str(doc["units"]).lower()  # lengths in metres
    assert len(doc["people"]) == 1
    person = doc["people"][0]
    assert person["parts"]["face"]["accepted"], person["parts"]["face"]
    assert person["parts"]["body"]["accepted"]
    assert set(person["params"]) == set(anny_model.blocks)
    assert len(person["joints"]) == len(anny_model.joint_names)
    z = person["params"]["transl"][2]
    assert 0.3 < z < 10.0  # in front of the camera, metres
    for t in ("experts", "fit", "render", "total"):
        assert doc["timings"][t] is not None and doc["timings"][t] >= 0
    verts, _ = read_ply(out / person["mesh"])
    assert verts.shape == (anny_model.num_vertices, 3)
    overlay = cv2.imread(str(out / "astronaut_overlay.png"))[:, :, ::-1]
    image = cv2.imread(str(ASTRONAUT))[:, :, ::-1]
    assert overlay.shape == image.shape
    x0, y0, x1, y1 = (int(round(v)) for v in person["box"])
    x0, y0 = max(x0, 0), max(y0, 0)
    diff = np.abs(overlay.astype(int) - image.astype(int)).sum(-1)
    assert (diff[y0:y1, x0:x1] > 30).mean() > 0.1  # the mesh covers part of the person


def test_folder_with_a_corrupt_image(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes(ASTRONAUT.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    out = tmp_path / "out"
    code, err = _cli([folder, "-o", out], capsys)
    assert code == 1
    assert "broken.jpg" in err
    assert "astronaut.jpg" not in err.replace(str(folder), "")  # only the broken one failed
    assert read_json(out / "astronaut.json")["status"] == "ok"
    assert (out / "astronaut_overlay.png").is_file()
    assert (out / "astronaut_person0.ply").is_file()
    assert not (out / "broken.json").exists()


def test_blank_image_has_no_person(tmp_path, capsys):
    png = tmp_path / "grey.png"
    write_image(png, np.full((240, 320, 3), 128, np.uint8))
    code, err = _cli([png, "-o", tmp_path / "out"], capsys)
    assert code == 1
    assert "no person found" in err
    assert "grey.png" in err


def test_short_video(tmp_path, capsys):
    import cv2

    from furpe.io.video import VideoWriter, open_video

    image = cv2.imread(str(ASTRONAUT))[:, :, ::-1]
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 5, (image.shape[1], image.shape[0])) as w:
        for dx in (0, 4, 8):
            w.write(np.ascontiguousarray(np.roll(image, dx, axis=1)))
    out = tmp_path / "out"
    code, err = _cli([video, "-o", out], capsys)
    assert code == 0, err
    summary = read_json(out / "clip" / "video.json")
    assert summary["complete"] is True and summary["frame_count"] == 3
    for i in range(3):
        doc = read_json(out / "clip" / f"frame_{i:06d}.json")
        assert doc["status"] == "ok" and doc["frame_index"] == i and len(doc["people"]) == 1
    with open_video(out / "clip_overlay.mp4") as reader:
        frames = list(reader.frames())
    assert len(frames) == 3
    assert frames[0].shape == image.shape
