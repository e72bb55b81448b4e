"""Input discovery, image reading, PLY/JSON/image writing and video I/O."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import furpe
from furpe.core.errors import InputError
from furpe.io.inputs import collect_inputs, read_image
from furpe.io.outputs import (SCHEMA_VERSION, atomic_write, frame_from_dict, frame_to_dict,
                              read_ply, write_frame_outputs, write_image, write_json, write_ply)
from furpe.io.video import VideoWriter, open_video
from furpe.results import FrameResult, KeypointSet, PartResult, PersonResult


def _png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    """An RGB test image with distinct R, G, B content."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 60)], -1).astype(np.uint8)


# --------------------------------------------------------------------------- collect_inputs

@pytest.fixture
def media_tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for rel in ["a.jpg", "b.PNG", "c.mp4", "notes.txt", ".hidden.jpg", "sub/d.jpeg",
                "sub/deeper/e.webm", "sub/a.jpg"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return root


def test_collect_top_level_only(media_tree: Path) -> None:
    items = collect_inputs([str(media_tree)], recursive=False)
    assert [(i.path.name, i.kind, i.out_name) for i in items] == [
        ("a.jpg", "image", "a"), ("b.PNG", "image", "b"), ("c.mp4", "video", "c")]


def test_collect_recursive_keeps_subfolders(media_tree: Path) -> None:
    items = collect_inputs([str(media_tree)], recursive=True)
    assert [(i.path.relative_to(media_tree).as_posix(), i.kind, i.out_name) for i in items] == [
        ("a.jpg", "image", "a"), ("b.PNG", "image", "b"), ("c.mp4", "video", "c"),
        ("sub/a.jpg", "image", "sub/a"), ("sub/d.jpeg", "image", "sub/d"),
        ("sub/deeper/e.webm", "video", "sub/deeper/e")]


def test_collect_duplicate_stems_get_suffix(tmp_path: Path) -> None:
    for rel in ["x/pic.jpg", "y/pic.jpg", "y/pic.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items = collect_inputs([str(tmp_path / "x/pic.jpg"), str(tmp_path / "y")])
    assert [i.out_name for i in items] == ["pic", "pic_2", "pic_3"]
    # The same file twice is processed once.
    again = collect_inputs([str(tmp_path / "x/pic.jpg"), str(tmp_path / "x" / ".." / "x/pic.jpg")])
    assert len(again) == 1


def test_collect_excludes_output_folder(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_overlay.png").write_bytes(b"x")
    items = collect_inputs([str(tmp_path)], recursive=True, exclude=[tmp_path / "out"])
    assert [i.path.name for i in items] == ["a.jpg"]


def test_collect_missing_path_message(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(InputError) as err:
        collect_inputs([missing])
    assert str(err.value) == f"{missing}: no such file or directory"


def test_collect_errors_list_keeps_going(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(b"x")
    (tmp_path / "doc.md").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("ok.png\nnot-there.png\n")  # a list file
    errors: list[tuple[str, str]] = []
    items = collect_inputs([str(tmp_path / "gone.jpg"), str(tmp_path / "ok.png"),
                            str(tmp_path / "doc.md"), str(tmp_path / "list.txt")],
                           errors=errors)
    assert [i.path.name for i in items] == ["ok.png"]  # named twice, processed once
    assert [e[0] for e in errors] == [str(tmp_path / "gone.jpg"), str(tmp_path / "doc.md"),
                                      str(tmp_path / "not-there.png")]
    assert "no such file" in errors[0][1] and "no such file" in errors[2][1]
    assert "not a supported image or video" in errors[1][1] and ".md" in errors[1][1]


def test_collect_empty_folder_and_hint(tmp_path: Path) -> None:
    (tmp_path / "only_sub" / "deep").mkdir(parents=True)
    (tmp_path / "only_sub" / "deep" / "x.jpg").write_bytes(b"x")
    (tmp_path / "only_sub" / "readme.md").write_bytes(b"x")
    with pytest.raises(InputError, match="folder contains no images or videos.*--recursive"):
        collect_inputs([str(tmp_path / "only_sub")])
    assert len(collect_inputs([str(tmp_path / "only_sub")], recursive=True)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: folder contains no images or videos"):
        collect_inputs([str(tmp_path / "empty")], recursive=True)


# --------------------------------------------------------------------------- read_image

@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff", ".webp"])
def test_read_image_lossless_rgb_order(tmp_path: Path, ext: str) -> None:
    rgb = _gradient()
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []
    ok, buf = cv2.imencode(ext, rgb[:, :, ::-1], params)
    assert ok
    path = tmp_path / f"img{ext}"
    path.write_bytes(buf.tobytes())
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_image_jpeg_unicode_path(tmp_path: Path) -> None:
    rgb = _gradient()
    path = _png(tmp_path / "dossier é" / "phötö.jpg", rgb[:, :, ::-1].copy())
    out = read_image(path)
    assert out.shape == (24, 32, 3)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4  # lossy, but R and B not swapped
    assert out[12, 31, 0] > 200 and out[12, 0, 0] < 40


def test_read_image_grayscale_and_16bit(tmp_path: Path) -> None:
    gray = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    out = read_image(_png(tmp_path / "g.png", gray))
    assert out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)

    deep = np.zeros((10, 12, 3), np.uint16)
    deep[..., 2] = 65535  # red in BGR
    deep[..., 1] = 32896  # = 128 * 257, i.e. 128 in 8 bits
    out16 = read_image(_png(tmp_path / "d16.png", deep))
    assert out16.dtype == np.uint8
    assert out16[0, 0].tolist() == [255, 128, 0]


def test_read_image_alpha_over_white(tmp_path: Path) -> None:
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    bgra[:4, :, 3] = 255  # top half opaque, bottom transparent
    out = read_image(_png(tmp_path / "a.png", bgra))
    assert out[0, 0].tolist() == [0, 0, 255]
    assert out[7, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("content", [b"", b"this is not an image at all", b"\x89PNG\r\n\x1a\n\0\0"])
def test_read_image_corrupt_message(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value).startswith(f"cannot read image {path}: not a decodable image")


def test_read_image_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "none.png")


# --------------------------------------------------------------------------- writers

def _parse_ply(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Independent PLY parser: header lines, vertices, faces."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").strip().split("\n")
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    body = data[end:]
    verts = np.frombuffer(body, dtype="<f4", count=nv * 3).reshape(nv, 3)
    rest = body[nv * 12:]
    assert len(rest) == nf * 13
    faces = []
    for k in range(nf):
        rec = rest[k * 13:(k + 1) * 13]
        assert rec[0] == 3
        faces.append(np.frombuffer(rec[1:], dtype="<i4"))
    return header, verts, np.array(faces).reshape(nf, 3)


def test_ply_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(50, 3)).astype(np.float64)
    faces = rng.integers(0, 50, size=(70, 3))
    path = write_ply(tmp_path / "m.ply", verts, faces)
    header, v, f = _parse_ply(path)
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "property float x" in header and "property list uchar int vertex_indices" in header
    np.testing.assert_array_equal(v, verts.astype(np.float32))
    np.testing.assert_array_equal(f, faces)
    v2, f2 = read_ply(path)
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(f2, f)
    with pytest.raises(ValueError):
        write_ply(tmp_path / "bad.ply", verts, np.array([[0, 1, 50]]))
    assert not (tmp_path / "bad.ply").exists()


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    write_image(tmp_path / "a.png", _gradient())
    write_ply(tmp_path / "a.ply", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    (tmp_path / "keep.json").write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "keep.json", "w") as fh:
            fh.write('{"new": ')
            raise RuntimeError("boom")
    with pytest.raises(ValueError):
        write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.ply", "a.png", "keep.json"]
    assert json.loads((tmp_path / "keep.json").read_text()) == {"old": True}
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), _gradient())


def _frame_result(people: int = 1) -> FrameResult:
    tet = np.array([[0, 0, 2.0], [0.3, 0, 2.2], [0, 0.3, 2.2], [0, 0, 2.5]], np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32)
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    persons = []
    for k in range(people):
        persons.append(PersonResult(
            params={"global_orient": np.zeros((1, 3), np.float32),
                    "transl": np.array([0.1 * k, 0, 2.0], np.float32),
                    "shape": np.array([0.5, -0.25], np.float32)},
            vertices=tet + np.array([0.1 * k, 0, 0], np.float32),
            joints=np.array([[0.0, 0.1, 2.0], [0.0, -0.2, 2.1]], np.float32),
            keypoints_2d={"left_hand": KeypointSet(
                convention="mediapipe_hand", names=("wrist", "thumb_tip"),
                observed=np.array([[1.0, 2.0], [np.nan, np.nan]]),
                confidence=np.array([0.9, 0.0]), fitted=np.array([[1.5, 2.5], [3.0, 4.0]]))},
            parts={"left_hand": PartResult("left_hand", observed=True, accepted=False,
                                           scores={"detector": 0.9, "residual": 0.4},
                                           reason="residual too large")},
            box=(1.0, 2.0, 30.0, 22.0)))
    return FrameResult(image_size=(32, 24), intrinsics=K, body_model="anny",
                       joint_names=("pelvis", "head"), faces=faces, people=persons,
                       timings={"experts": 0.5, "fit": 1.25, "total": 1.8})


def test_frame_to_dict_schema() -> None:
    doc = frame_to_dict(_frame_result(2), "img.jpg", mesh_files=["img_person0.ply", None])
    json.dumps(doc, allow_nan=False)  # strictly serialisable
    assert doc["schema_version"] == SCHEMA_VERSION == "1.1"
    assert doc["furpe_version"] == furpe.__version__
    assert {"source", "frame_index", "units", "coordinate_frame", "image", "camera",
            "body_model", "timings", "people", "status"} <= set(doc)
    assert doc["units"]["length"] == "metres"
    assert "x right, y down, z forward" in doc["coordinate_frame"]["camera"]
    assert doc["image"] == {"width": 32, "height": 24}
    assert doc["camera"]["fx"] == 50.0 and doc["camera"]["cx"] == 15.5 and doc["camera"]["cy"] == 11.5
    assert doc["camera"]["matrix"] == [[50.0, 0.0, 15.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]]
    assert doc["timings"] == {"experts": 0.5, "fit": 1.25, "total": 1.8}
    p0, p1 = doc["people"]
    assert (p0["id"], p1["id"]) == (0, 1)
    assert p0["mesh"] == "img_person0.ply" and p1["mesh"] is None
    assert p1["params"]["transl"] == [0.1, 0.0, 2.0]
    assert p0["params"]["global_orient"] == [[0.0, 0.0, 0.0]]
    assert p0["joints"] == {"pelvis": [0.0, 0.1, 2.0], "head": [0.0, -0.2, 2.1]}
    kp = p0["keypoints_2d"]["left_hand"]
    assert kp["names"] == ["wrist", "thumb_tip"]
    assert kp["observed"] == [[1.0, 2.0], [None, None]]  # NaN -> null
    assert kp["confidence"] == [0.9, 0.0]
    assert p0["parts"]["left_hand"] == {"observed": True, "accepted": False,
                                         "scores": {"detector": 0.9, "residual": 0.4},
                                         "reason": "residual too large"}
    assert p0["box"] == [1.0, 2.0, 30.0, 22.0]


def test_frame_from_dict_round_trip() -> None:
    original = _frame_result(1)
    doc = frame_to_dict(original, "img.jpg")
    back = frame_from_dict(json.loads(json.dumps(doc)), [original.people[0].vertices],
                           original.faces)
    assert back.image_size == (32, 24) and back.joint_names == ("pelvis", "head")
    np.testing.assert_allclose(back.intrinsics, original.intrinsics)
    np.testing.assert_allclose(back.people[0].params["transl"], [0, 0, 2.0])
    np.testing.assert_allclose(back.people[0].joints, original.people[0].joints, atol=1e-6)
    assert np.isnan(back.people[0].keypoints_2d["left_hand"].observed[1]).all()
    assert back.people[0].parts["left_hand"].reason == "residual too large"


def test_write_frame_outputs_files_and_render_timing(tmp_path: Path) -> None:
    result = _frame_result(2)
    image = np.full((24, 32, 3), 40, np.uint8)
    (tmp_path / "pic_person5.ply").write_bytes(b"stale")
    outs = write_frame_outputs(result, image, tmp_path, "pic", source="in/pic.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pic.json", "pic_overlay.png", "pic_person0.ply", "pic_person1.ply"]
    assert set(outs.files) == {"json", "overlay", "mesh0", "mesh1"}
    doc = json.loads((tmp_path / "pic.json").read_text())
    assert doc["source"] == "in/pic.jpg"
    assert doc["timings"]["render"] >= 0 and "render" in result.timings
    assert [p["mesh"] for p in doc["people"]] == ["pic_person0.ply", "pic_person1.ply"]
    assert outs.overlay is not None and outs.overlay.shape == image.shape
    assert (outs.overlay != image).any(axis=2).sum() > 5  # the tetrahedra are drawn
    np.testing.assert_array_equal(read_image(tmp_path / "pic_overlay.png"), outs.overlay)
    v, f = read_ply(tmp_path / "pic_person1.ply")
    np.testing.assert_allclose(v, result.people[1].vertices)


def test_write_frame_outputs_switches(tmp_path: Path) -> None:
    outs = write_frame_outputs(_frame_result(1), np.zeros((24, 32, 3), np.uint8), tmp_path, "f",
                               overlay=False, mesh=False)
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert outs.overlay is None
    assert json.loads((tmp_path / "f.json").read_text())["people"][0]["mesh"] is None


# --------------------------------------------------------------------------- video

def test_video_writer_round_trip_odd_size(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    frames = []
    with VideoWriter(path, 12, (33, 21)) as writer:
        for i in range(9):
            f = np.zeros((21, 33, 3), np.uint8)
            f[:, : 3 * i + 3] = (200, 30, 30)
            frames.append(f)
            writer.write(f)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "libx264", "mpeg4")
        decoded = [fr.to_ndarray(format="rgb24") for fr in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(12)
    assert len(decoded) == 9
    assert decoded[0].shape == (22, 34, 3)  # padded to even
    assert abs(int(decoded[4][10, 2, 0]) - 200) < 20 and decoded[4][10, 30, 0] < 30

    reader = open_video(path)
    assert float(reader.fps) == pytest.approx(12)
    assert reader.frame_count in (9, None)
    got = list(reader.timed_frames())
    reader.close()
    assert [i for i, _, _ in got] == list(range(9))
    assert got[3][1] == pytest.approx(3 / 12, abs=1e-3)


def test_video_writer_abort_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "v.mp4", 10, (16, 16)) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(tmp_path / "w.mp4", 10, (16, 16)) as writer:
        with pytest.raises(ValueError, match="frame must be"):
            writer.write(np.zeros((8, 8, 3), np.uint8))
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["w.mp4"]


def test_undecodable_video(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(InputError) as err:
        reader = open_video(bad)
        list(reader.frames())
    assert str(bad) in str(err.value) and "cannot" in str(err.value)
    with pytest.raises(InputError, match="no such file"):
        open_video(tmp_path / "missing.mp4")


def test_atomic_write_gives_ordinary_permissions(tmp_path: Path) -> None:
    """Not mkstemp's private 0o600: what open() would give under the current umask."""
    import os
    import stat

    from furpe.io.outputs import atomic_write

    with atomic_write(tmp_path / "a.json", "w") as fh:
        fh.write("{}")
    with open(tmp_path / "b.json", "w") as fh:
        fh.write("{}")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode)
