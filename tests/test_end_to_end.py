"""Acceptance tests: the real ``furpe reconstruct`` command (MediaPipe experts + Anny fit), in
process, on synthetic renders with exact ground truth and on a real photograph.

Errors are measured after Procrustes alignment (furpe.metrics), each part against the same
reconstruction with that part at rest. Measured values (640x640, 2.6 m) are noted next to
each threshold.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from furpe.bodymodels.base import apply_regressor
from furpe.cli import main
from furpe.metrics import displacement_error, pa_mpjpe, pa_pve
from furpe.io.outputs import read_json, read_ply, write_image
from furpe.synthetic import SyntheticPerson, make_person

# Every test here runs the real ``furpe reconstruct`` (MediaPipe experts + Anny fit).
pytestmark = [pytest.mark.slow, pytest.mark.mediapipe]


def pa_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """PA error in metres (the metrics module returns millimetres)."""
    return pa_mpjpe(pred, gt) / 1000.0


REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"

# Part accuracy is judged against the same reconstruction with that part put back at rest
# (``model.at_rest``: what the fit scores without that part's expert), so a fit that ignores
# a part fails. Measured values (seeds 1 and 2, 640x640, 2.6 m): fitted / at rest.
# body-part PA-PVE, seed 2: 44.9 / 52.1 mm (0.86) with BlazePose Heavy; 33.7 / 52.0 mm (0.65)
# with the legacy Full model, which did better on this seed (not on the 50-render bench).
MAX_BODY_VS_REST = 0.9
MAX_COCO_VS_REST = 0.7  # COCO(+feet) PA-MPJPE: 25.9 / 76.1 mm (0.34), 33.9 / 77.6 mm (0.44)
MAX_BODY_PVE = 0.060  # body-part vertices, measured 24-34 mm
MAX_COCO_PA_MPJPE = 0.060  # 23 COCO(+feet) keypoints, measured 26-34 mm
MAX_JOINTS_PA_MPJPE = 0.100  # all 104 Anny joints (incl. fingers and toes), measured 36-51 mm
MAX_ACCEPTED_HAND_PVE = 0.045  # an absolute guard, measured 11-31 mm; see the at-rest test
# Seeds 1 and 2 carry almost no expression (the true face scores 0.2 and 0.6 mm PA-PVE against
# its own expression at rest), below what the expert resolves at 2.6 m: there the face is
# only checked not to be made much worse than at rest (measured 0.94 / 0.74 mm, 0.73 / 0.74
# mm). The face's accuracy is checked on seed 4, whose expression is clear.
MAX_FACE_NO_HARM = 1.5
FACE_SEED = 4  # jaw open 0.23, brow down 0.36: the true face is 1.3 mm from its rest
MAX_FACE_EXPRESSION_VS_REST = 0.7  # expression error, measured 0.50 / 0.97 mm (0.52)
MAX_FACE_PVE_VS_REST = 0.85  # face PA-PVE, measured 1.24 / 1.74 mm (0.71)
MAX_HAND_VS_REST = 0.8


def _cli(args, capsys) -> tuple[int, str]:
    code = main(["reconstruct", *map(str, args), "-q"])
    return code, capsys.readouterr().err


def _coco(model, vertices, joints) -> np.ndarray:
    pts = torch.cat([torch.as_tensor(vertices, dtype=torch.float32),
                     torch.as_tensor(joints, dtype=torch.float32)])[None]
    return apply_regressor(model.regressors["coco"], pts)[0].numpy()


def _at_rest(model, params: dict, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and joints of a reconstructed person (the JSON's unbatched parameters) with
    only ``part``'s blocks put back to their neutral values."""
    p = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32)[None] for k, v in params.items()}
    with torch.no_grad():
        out = model(model.at_rest(p, part))
    return out.vertices[0].numpy(), out.joints[0].numpy()


@dataclass
class SyntheticRun:
    truth: SyntheticPerson
    person: dict  # the person's record in the output JSON
    vertices: np.ndarray
    faces: np.ndarray
    joints: np.ndarray


@pytest.fixture(scope="module")
def synthetic_run(anny_model, tmp_path_factory):
    """``furpe reconstruct`` on the synthetic render of a seed (640x640, 2.6 m), once per seed."""
    runs: dict[int, SyntheticRun] = {}

    def run(seed: int) -> SyntheticRun:
        if seed not in runs:
            sp = make_person(anny_model, seed, 640, 640, distance=2.6)
            folder = tmp_path_factory.mktemp(f"person{seed}")
            png = folder / f"person{seed}.png"
            write_image(png, sp.image)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(["reconstruct", str(png), "-o", str(folder / "out"), "-q"])
            assert code == 0, err.getvalue()
            doc = read_json(folder / "out" / f"person{seed}.json")
            assert doc["status"] == "ok" and len(doc["people"]) == 1
            person = doc["people"][0]
            verts, faces = read_ply(folder / "out" / person["mesh"])
            joints = np.array([person["joints"][n] for n in anny_model.joint_names],
                              dtype=np.float64)
            runs[seed] = SyntheticRun(sp, person, verts, faces, joints)
        return runs[seed]

    return run


def _face_errors(m, r: SyntheticRun) -> tuple[float, float, float, float]:
    """Face PA-PVE and expression error (mm) of the fit and of the fit with the face at rest."""
    idx = m.part_vertices["face"]
    rest = _at_rest(m, r.person["params"], "face")[0][idx]
    with torch.no_grad():
        gt_rest = m(m.at_rest(r.truth.params, "face")).vertices[0].numpy()[idx]
    fit, gt = r.vertices[idx], r.truth.vertices[idx]
    return (pa_pve(fit, gt), pa_pve(rest, gt), displacement_error(fit, rest, gt, gt_rest),
            displacement_error(rest, rest, gt, gt_rest))


@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_person_errors(anny_model, synthetic_run, seed):
    m = anny_model
    r = synthetic_run(seed)
    sp, person, verts, joints = r.truth, r.person, r.vertices, r.joints
    assert sp.visible["left_hand"] and sp.visible["right_hand"] and sp.visible["face"]
    assert verts.shape == (m.num_vertices, 3)
    np.testing.assert_array_equal(r.faces, m.faces)

    errors = {part: pa_error(verts[idx], sp.vertices[idx]) for part, idx in m.part_vertices.items()}
    coco = pa_error(_coco(m, verts, joints), _coco(m, sp.vertices, sp.joints))
    all_joints = pa_error(joints, sp.joints)
    body_rest_v, body_rest_j = _at_rest(m, person["params"], "body")
    body_rest = pa_error(body_rest_v[m.part_vertices["body"]], sp.vertices[m.part_vertices["body"]])
    coco_rest = pa_error(_coco(m, body_rest_v, body_rest_j), _coco(m, sp.vertices, sp.joints))
    face, face_rest, _, _ = _face_errors(m, r)
    print(f"\nseed {seed}: " + ", ".join(f"{k} {v * 1000:.1f} mm" for k, v in errors.items())
          + f", coco PA-MPJPE {coco * 1000:.1f} mm, joints PA-MPJPE {all_joints * 1000:.1f} mm, "
          + f"at rest: body {body_rest * 1000:.1f} mm, coco {coco_rest * 1000:.1f} mm, "
          + f"face {face_rest:.2f} mm; "
          + "accepted " + str({k: v["accepted"] for k, v in person["parts"].items()}))
    assert person["parts"]["body"]["accepted"]
    assert person["parts"]["face"]["accepted"]
    assert face < MAX_FACE_NO_HARM * face_rest, (face, face_rest)
    assert errors["body"] < MAX_BODY_VS_REST * body_rest, (errors["body"], body_rest)
    assert coco < MAX_COCO_VS_REST * coco_rest, (coco, coco_rest)
    assert errors["body"] < MAX_BODY_PVE
    assert coco < MAX_COCO_PA_MPJPE
    assert all_joints < MAX_JOINTS_PA_MPJPE
    accepted = [h for h in ("left_hand", "right_hand") if person["parts"][h]["accepted"]]
    assert accepted, "no hand was accepted"
    for hand in accepted:
        assert errors[hand] < MAX_ACCEPTED_HAND_PVE, (hand, errors[hand])


@pytest.mark.xfail(strict=True, reason=(
    "known limit (README, Known limits): the fitted fingers score worse than the same fit "
    "with the hand at rest; measured fitted / at rest PA-PVE: seed 1 left 11.5 / 7.3 mm, "
    "right 23.1 / 15.4 mm; seed 2 left 30.9 / 16.6 mm, right 23.5 / 24.4 mm. Strict: when the "
    "hands get better than at rest this fails, and the xfail should go"))
@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_accepted_hands_beat_hands_at_rest(anny_model, synthetic_run, seed):
    m = anny_model
    r = synthetic_run(seed)
    accepted = [h for h in ("left_hand", "right_hand") if r.person["parts"][h]["accepted"]]
    assert accepted, "no hand was accepted"
    report = {}
    for hand in accepted:
        idx = m.part_vertices[hand]
        rest = _at_rest(m, r.person["params"], hand)[0][idx]
        report[hand] = (pa_pve(r.vertices[idx], r.truth.vertices[idx]),
                        pa_pve(rest, r.truth.vertices[idx]))
    print(f"\nseed {seed} hand PA-PVE fitted / at rest: "
          + ", ".join(f"{h} {e:.1f} / {b:.1f} mm" for h, (e, b) in report.items()))
    for hand, (err, rest) in report.items():
        assert err < MAX_HAND_VS_REST * rest, (hand, err, rest)


@pytest.mark.xfail(strict=True, reason=(
    "known gap since the move to the Tasks FaceLandmarker: its landmarks do not resolve this "
    "subtle expression (measured expression error 0.98 mm fitted vs 0.97 mm at rest; the "
    "legacy Face Mesh gave 0.50 mm); strong expressions are resolved (test_blendshapes: "
    "1.68 vs 2.34 mm). Strict: when the fit beats the rest face again this fails"))
def test_synthetic_face_beats_face_at_rest(anny_model, synthetic_run):
    """On a face with a clear expression the fitted face is closer to the truth than the same
    fit with the expression (and gaze) at rest, both overall and in what the expression does."""
    r = synthetic_run(FACE_SEED)
    assert r.truth.visible["face"]
    assert r.person["parts"]["face"]["accepted"], r.person["parts"]["face"]
    face, face_rest, expr, expr_rest = _face_errors(anny_model, r)
    print(f"\nseed {FACE_SEED} face PA-PVE {face:.2f} mm (at rest {face_rest:.2f} mm), "
          f"expression error {expr:.2f} mm (at rest {expr_rest:.2f} mm)")
    assert expr < MAX_FACE_EXPRESSION_VS_REST * expr_rest, (expr, expr_rest)
    assert face < MAX_FACE_PVE_VS_REST * face_rest, (face, face_rest)


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
    # the overlay, and the side view of a second camera next to it
    h, w = image.shape[:2]
    assert frames[0].shape == (h, 2 * w, 3)
    from furpe.io.views import VIEW_BACKGROUND

    side = frames[0][:, w:].astype(np.int16)
    assert (np.abs(side - np.array(VIEW_BACKGROUND)).max(-1) > 40).mean() > 0.01  # the person


def test_native_logs_stay_off_the_terminal(tmp_path):
    """A normal run of the bundled example prints its summary line and nothing from MediaPipe,
    absl, glog or TFLite; ``--debug`` lets them through."""
    import os
    import subprocess
    import sys

    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "furpe", "reconstruct", str(ASTRONAUT), "-o", str(tmp_path),
             "--no-overlay", "--no-mesh", *extra],
            capture_output=True, text=True, timeout=600, env={**os.environ})

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == [
        f"furpe: 1 image: 1 ok, 0 failed; 1 person; results in {tmp_path}"], quiet.stderr
    loud = run("--debug")
    assert loud.returncode == 0 and len(loud.stderr.splitlines()) > 1  # the native lines
