"""``furpe export`` on result folders made here (frame JSONs written with furpe.io.outputs),
and its one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from export_helpers import (WORLD_FROM_CAMERA, assert_valid_gltf, forward, random_frames,
                            same_shape, skin_glb)
from furpe.cli import main
from furpe.core.errors import FurpeError
from furpe.export.bvh import read_bvh
from furpe.export.results import read_tracks
from furpe.io.outputs import frame_to_dict, no_person_dict, write_json
from furpe.results import FrameResult, PersonResult
from synthetic_models import write_synthetic_smplx

K = np.array([[1000.0, 0.0, 320.0], [0.0, 1000.0, 240.0], [0.0, 0.0, 1.0]])


def _frame(model, people: list[tuple[int | None, dict[str, np.ndarray]]]) -> FrameResult:
    persons = []
    for track_id, params in people:
        _, joints = forward(model, [params])
        persons.append(PersonResult(params=params, vertices=np.zeros((0, 3), np.float32),
                                    joints=joints[0], keypoints_2d={}, parts={},
                                    box=(0.0, 0.0, 10.0, 10.0), track_id=track_id))
    return FrameResult(image_size=(640, 480), intrinsics=K, body_model=model.name,
                       joint_names=tuple(model.joint_names), faces=np.zeros((0, 3), np.int32),
                       people=persons, timings={}, config={"body_model": model.name})


def write_video_result(folder, model, fps: float = 25.0):
    """``folder/clip/``: 5 frames; track 0 in frames 0, 1, 3, 4 (frame 2 has nobody), track 7
    in frames 3 and 4. Returns the parameters written, by track."""
    clip = folder / "clip"
    a = same_shape(model, random_frames(model, 5, seed=30))
    b = same_shape(model, random_frames(model, 5, seed=31))
    people = {0: [(0, a[0])], 1: [(0, a[1])], 3: [(7, b[3]), (0, a[3])], 4: [(0, a[4]), (7, b[4])]}
    entries = []
    for index in range(5):
        stem = f"frame_{index:06d}"
        t = round(index / fps + 0.002, 6)
        if index in people:
            doc = frame_to_dict(_frame(model, people[index]), "clip.mp4", index, timestamp=t)
            status = "ok"
        else:
            doc = no_person_dict("clip.mp4", (640, 480), index, timestamp=t)
            status = "no_person"
        write_json(clip / f"{stem}.json", doc)
        entries.append({"index": index, "timestamp": t, "file": f"{stem}.json",
                        "status": status, "people": len(people.get(index, []))})
    write_json(clip / "video.json", {"schema_version": "1.0", "source": "clip.mp4", "fps": fps,
                                     "frame_count": 5, "complete": True, "frames": entries})
    return {0: [a[i] for i in (0, 1, 3, 4)], 7: [b[3], b[4]]}


def write_image_result(folder, model, name: str = "photo"):
    """``folder/<name>.json``: two people without track ids (older results)."""
    frames = random_frames(model, 2, seed=32)
    doc = frame_to_dict(_frame(model, [(None, frames[0]), (None, frames[1])]), f"{name}.jpg")
    write_json(folder / f"{name}.json", doc)
    return frames


def test_read_tracks(anny_model, tmp_path):
    written = write_video_result(tmp_path, anny_model)
    write_image_result(tmp_path / "sub", anny_model)
    tracks = read_tracks(tmp_path)
    by_name = {t.name: t for t in tracks}
    assert sorted(by_name) == ["clip_track0", "clip_track7", "sub/photo_track0",
                               "sub/photo_track1"]
    t0 = by_name["clip_track0"]
    assert t0.frame_indices == [0, 1, 3, 4] and t0.fps == 25.0 and t0.body_model == "anny"
    assert np.allclose(t0.times, [0.002, 0.042, 0.122, 0.162])
    assert np.allclose(t0.params[2]["body_pose"], written[0][2]["body_pose"], atol=1e-6)
    assert by_name["clip_track7"].frame_indices == [3, 4]
    assert by_name["sub/photo_track1"].times == [0.0]
    # one video folder alone, and one without video.json (an interrupted run)
    assert [t.name for t in read_tracks(tmp_path / "clip")] == ["clip_track0", "clip_track7"]
    (tmp_path / "clip" / "video.json").unlink()
    again = {t.name: t for t in read_tracks(tmp_path / "clip")}
    assert again["clip_track0"].frame_indices == [0, 1, 3, 4]
    assert np.allclose(again["clip_track0"].times, t0.times)
    (tmp_path / "sub" / "settings.json").write_text('{"a": 1}')
    with pytest.raises(FurpeError, match="no furpe results"):
        read_tracks(tmp_path / "sub" / "settings.json")
    with pytest.raises(FurpeError, match="no such file"):
        read_tracks(tmp_path / "missing")


def test_cli_export_writes_every_track(anny_model, tmp_path, capsys):
    written = write_video_result(tmp_path / "results", anny_model)
    write_image_result(tmp_path / "results", anny_model)
    out = tmp_path / "out"
    code = main(["export", str(tmp_path / "results"), "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{s}_track{t}.{e}" for s, t in (("clip", 0), ("clip", 7), ("photo", 0),
                                                      ("photo", 1)) for e in ("bvh", "glb")]
    assert capsys.readouterr().err == ""  # -q: nothing but errors

    glb = out / "clip_track0.glb"
    assert_valid_gltf(glb)
    times, world, _ = skin_glb(glb)
    assert np.allclose(times, [0.002, 0.042, 0.122, 0.162], atol=1e-6)
    verts, _ = forward(anny_model, written[0])
    err = np.linalg.norm(world @ WORLD_FROM_CAMERA.T - verts, axis=-1).max()
    assert err < 1e-3, f"{err * 1e3:.3f} mm"
    bvh = read_bvh(out / "clip_track0.bvh")
    assert bvh.num_frames == 5 and abs(bvh.frame_time - 0.04) < 1e-9  # frame 2 repeated

    # options: one format, 4 influences, the summary line without -q
    code = main(["export", str(tmp_path / "results" / "clip"), "-o", str(tmp_path / "o2"),
                 "--format", "glb", "--max-influences", "4", "--tpose"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["clip_track0.glb",
                                                                   "clip_track7.glb"]
    assert "exported 2 tracks (6 frames) to 2 files" in capsys.readouterr().err
    _, _, facts = skin_glb(tmp_path / "o2" / "clip_track7.glb")
    assert facts["influences"] == 4


def test_cli_export_smplx_uses_the_recorded_model_path(tmp_path, capsys):
    from furpe.bodymodels import load_body_model

    models = tmp_path / "models"
    write_synthetic_smplx(models, compact_shape_space=True)
    model = load_body_model("smplx", models)
    frames = random_frames(model, 1, seed=33)
    result = _frame(model, [(None, frames[0])])
    result.config = {"body_model": "smplx", "model_path": str(models)}
    write_json(tmp_path / "res" / "x.json", frame_to_dict(result, "x.jpg"))
    assert main(["export", str(tmp_path / "res"), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert_valid_gltf(tmp_path / "out" / "x_track0.glb")
    # a model folder that does not exist: one error line
    code = main(["export", str(tmp_path / "res"), "-o", str(tmp_path / "out"), "-q",
                 "--model-path", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("furpe: error: --model-path")


@pytest.mark.parametrize("args, code, message", [
    (["MISSING", "-o", "OUT"], 2, "no such file or folder"),
    (["EMPTY", "-o", "OUT"], 1, "no furpe results"),
    (["EMPTY", "-o", "OUT", "--format", "glb,fbx"], 2, "unknown format fbx"),
    (["EMPTY", "-o", "OUT", "--max-influences", "0"], 2, "positive number or 'all'"),
    (["EMPTY", "-o", "FILE"], 2, "exists and is not a folder"),
])
def test_cli_export_bad_input_is_one_error_line(tmp_path, capsys, args, code, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "FILE").write_text("x")
    paths = {"MISSING": tmp_path / "missing", "EMPTY": tmp_path / "EMPTY",
             "OUT": tmp_path / "out", "FILE": tmp_path / "FILE"}
    argv = ["export", *[str(paths.get(a, a)) for a in args]]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("furpe: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
