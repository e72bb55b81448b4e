"""What a video run gives people to look at and to take elsewhere: the overlay MP4 with a
side view from a second camera, the contact sheet (--show), and animation export of the
tracked people (furpe export / --export)."""
from __future__ import annotations

import json

import numpy as np
from test_tracking import H, W, _observed, _reconstructor, scripted  # noqa: F401 - fixture

from furpe.io.views import VIEW_BACKGROUND
from furpe.tracking import SmoothingConfig


def _clip(tmp_path, n: int = 4):
    from furpe.io.video import VideoWriter

    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 10, (W, H)) as writer:
        for i in range(n):
            writer.write(np.full((H, W, 3), 30 + 20 * i, np.uint8))
    return video


def test_video_overlay_has_a_side_view_contact_sheet_and_tracks_export(
        anny_model, scripted, tmp_path) -> None:  # noqa: F811 - fixture
    from furpe.export.exporter import export_results
    from furpe.io.inputs import collect_inputs, read_image
    from furpe.io.video import open_video
    from furpe.runner import SHEET_NAME, run

    video = _clip(tmp_path)
    a, b = _observed(anny_model, 3, -0.6), _observed(anny_model, 4, 0.6)
    scripted.script = [a, b + a, a + b, []]  # frame 3: nobody
    out = tmp_path / "out"
    rec = _reconstructor(anny_model, smoothing=SmoothingConfig(enabled=False))
    summary = run(lambda: rec, collect_inputs([str(video)], False), out, mesh=False,
                  progress=False, side_view=True, show=True)
    assert summary.exit_code == 0, summary.failures

    with open_video(out / "clip_overlay.mp4") as reader:
        frames = list(reader.frames())
    assert len(frames) == 4 and frames[0].shape == (H, 2 * W, 3)
    bg = np.array(VIEW_BACKGROUND, np.int16)
    for k, frame in enumerate(frames):
        side = frame[:, W:].astype(np.int16)
        covered = (np.abs(side - bg).max(-1) > 40).mean()
        # people in frames 0-2 show in the side view; frame 3 (nobody) is background
        assert (covered > 0.01) if k < 3 else (covered < 0.001), (k, covered)
        # the left half is the overlay: the input's grey plus the people over it
        assert abs(int(np.median(frame[:, :W])) - (30 + 20 * k)) < 6

    sheet = read_image(out / SHEET_NAME)
    assert summary.contact_sheet == out / SHEET_NAME and sheet.shape[1] >= 320

    exported = export_results(out, tmp_path / "anim", formats=("glb",), progress=False)
    names = sorted(p.name for p in exported.files)
    assert names == ["clip_track0.glb", "clip_track1.glb"], names
    video_doc = json.loads((out / "clip" / "video.json").read_text())
    spans = {t["id"]: t["frames"] for t in video_doc["tracks"]}
    assert exported.frames == sum(spans.values()) == 5  # a: frames 0-2, b: frames 1-2


def test_side_view_can_be_turned_off(anny_model, scripted, tmp_path) -> None:  # noqa: F811
    from furpe.io.inputs import collect_inputs
    from furpe.io.video import open_video
    from furpe.runner import SHEET_NAME, run

    video = _clip(tmp_path, 2)
    scripted.script = [_observed(anny_model, 3, 0.0), []]
    out = tmp_path / "out"
    rec = _reconstructor(anny_model, smoothing=SmoothingConfig(enabled=False))
    summary = run(lambda: rec, collect_inputs([str(video)], False), out, mesh=False,
                  progress=False, side_view=False)
    assert summary.exit_code == 0 and summary.contact_sheet is None
    assert not (out / SHEET_NAME).exists()
    with open_video(out / "clip_overlay.mp4") as reader:
        assert next(iter(reader.frames())).shape == (H, W, 3)


def test_reconstruct_export_option_rejects_unknown_formats(tmp_path, capsys) -> None:
    from furpe.cli import main

    code = main(["reconstruct", str(tmp_path / "x.jpg"), "-o", str(tmp_path / "o"),
                 "--export", "glb,fbx"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--export" in err[0] and "fbx" in err[0], err
    assert not (tmp_path / "o").exists()
