"""The synthetic evaluation set: generator (determinism, resume, manifest, variety, ground truth
that matches the pixels) and its reader / protocol."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from furpe.bodymodels.base import apply_regressor
from furpe.cli import main
from furpe.datasets import DatasetError, Prediction, ProtocolOptions, load_dataset
from furpe.datasets.synthetic import (GENERATOR_VERSION, PARTS, SyntheticDataset, generate,
                                      read_npz, sample_id)
from furpe.core.errors import FurpeError
from furpe.io.inputs import read_image
from furpe.synthetic import (MIN_PART_PIXELS, MIN_SEEN, STANDING, VARIED, anny_age_from_years,
                             part_visibility, sample_params, years_from_anny_age)

N = 4
W, H = 160, 120  # not square: catches width/height mix-ups


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory, anny_model) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "set"
    summary = generate(out, N, seed=3, width=W, height=H, progress=False, model=anny_model)
    assert (summary.generated, summary.kept, summary.n) == (N, 0, N)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# ----------------------------------------------------------------------------- generator

def test_layout_and_manifest(synthetic_set, anny_model):
    root = synthetic_set
    ids = [sample_id(i) for i in range(N)]
    for sid in ids:
        assert (root / "images" / f"{sid}.png").is_file()
        assert (root / "gt" / f"{sid}.npz").is_file()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format"] == "furpe-synthetic"
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert (manifest["seed"], manifest["n"]) == (3, N)
    assert manifest["body_model"] == "anny"
    assert manifest["image_size"] == {"width": W, "height": H}
    assert manifest["samples"] == ids
    assert manifest["render_backend"] in ("egl", "software")
    assert manifest["keypoints"]["coco"][11:13] == ["left_hip", "right_hip"]
    assert len(manifest["keypoints"]["mediapipe_pose"]) == 33
    assert manifest["joint_names"] == list(anny_model.joint_names)
    assert manifest["visibility"]["min_inside"] == 0.9
    assert manifest["ranges"]["scene"]["fill"] == [0.3, 0.9]
    parts = read_npz(root / "parts.npz")
    assert sorted(parts) == sorted(PARTS)
    for part in PARTS:
        np.testing.assert_array_equal(parts[part], anny_model.part_vertices[part])
    assert read_image(root / "images" / "000000.png").shape == (H, W, 3)


def test_ground_truth_arrays(synthetic_set, anny_model):
    m = anny_model
    gt = read_npz(synthetic_set / "gt" / "000001.npz")
    V, J = m.num_vertices, len(m.joint_names)
    assert gt["vertices"].shape == (V, 3) and gt["joints"].shape == (J, 3)
    assert gt["keypoints_coco"].shape == (23, 3)
    assert gt["keypoints_mediapipe_pose"].shape == (33, 3)
    assert gt["keypoints_mediapipe_hand_left"].shape == (21, 3)
    assert gt["mask"].shape == (H, W) and gt["mask"].dtype == bool
    np.testing.assert_array_equal(gt["image_size"], [W, H])
    assert (int(gt["seed"]), int(gt["index"])) == (3, 1)
    assert list(gt["part_names"]) == list(PARTS)
    # the saved parameters reproduce the saved mesh
    params = {name: torch.as_tensor(gt[f"param_{name}"])[None] for name in m.blocks}
    with torch.no_grad():
        out = m(params)
    np.testing.assert_allclose(out.vertices[0].numpy(), gt["vertices"], atol=2e-5)
    np.testing.assert_allclose(out.joints[0].numpy(), gt["joints"], atol=2e-5)
    # keypoints come from the model's regressors; 2D keypoints are their projections
    pts = torch.cat([torch.as_tensor(gt["vertices"]), torch.as_tensor(gt["joints"])])[None]
    coco = apply_regressor(m.regressors["coco"], pts)[0].numpy()
    np.testing.assert_allclose(gt["keypoints_coco"], coco, atol=1e-5)
    K = gt["K"]
    uv = coco[:, :2] / coco[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    np.testing.assert_allclose(gt["keypoints2d_coco"], uv, atol=1e-3)
    assert gt["vertices"][:, 2].min() > 0.3  # in front of the camera
    # visible flags follow the documented rule
    for i, part in enumerate(PARTS):
        expect = (gt["part_inside"][i] > 0.9 and gt["part_pixels"][i] >= MIN_PART_PIXELS[part]
                  and gt["part_seen"][i] >= MIN_SEEN.get(part, 0.0))
        assert bool(gt["visible"][i]) == bool(expect)


def test_vertices_project_onto_the_rendered_person(synthetic_set):
    for i in range(N):
        sid = sample_id(i)
        gt = read_npz(synthetic_set / "gt" / f"{sid}.npz")
        image = read_image(synthetic_set / "images" / f"{sid}.png").astype(np.float64)
        v, K = gt["vertices"].astype(np.float64), gt["K"]
        uv = v[:, :2] / v[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
        px = np.rint(uv).astype(int)
        inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        assert inside.mean() > 0.5, sid
        px = px[inside]
        mask = gt["mask"]
        # at this small size fingers are thinner than a pixel: allow one pixel of rounding
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert grown[px[:, 1], px[:, 0]].mean() > 0.995, sid
        assert mask[px[:, 1], px[:, 0]].mean() > 0.8, sid
        # shaded skin: every channel is the skin colour times one shading factor
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        px = px[core[px[:, 1], px[:, 0]]]
        assert len(px) > 1000
        ratio = image[px[:, 1], px[:, 0]] / (gt["skin"] * 255.0 + 1e-6)
        spread = ratio.std(1) / (ratio.mean(1) + 1e-6)
        assert (spread < 0.1).mean() > 0.95, (sid, (spread < 0.1).mean())
        # ... which the background is not, mostly
        bg = image[~grown]
        bg_ratio = bg / (gt["skin"] * 255.0 + 1e-6)
        assert (bg_ratio.std(1) / (bg_ratio.mean(1) + 1e-6) < 0.1).mean() < 0.5, sid
        # the box is the mask's box (clipped to the image)
        ys, xs = np.nonzero(gt["mask"])
        np.testing.assert_allclose(gt["box"], [xs.min(), ys.min(), xs.max(), ys.max()], atol=2.0)


def test_same_seed_gives_identical_files_and_resume(synthetic_set, tmp_path, anny_model):
    again = tmp_path / "again"
    generate(again, 2, seed=3, width=W, height=H, progress=False, model=anny_model)
    for sid in ("000000", "000001"):
        for sub, ext in (("gt", "npz"), ("images", "png")):
            assert (again / sub / f"{sid}.{ext}").read_bytes() == \
                (synthetic_set / sub / f"{sid}.{ext}").read_bytes()
    a = read_npz(again / "gt" / "000000.npz")
    b = read_npz(synthetic_set / "gt" / "000000.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])

    # resume: remove the manifest and one sample, run again
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_set, copy)
    before = _files(copy)
    (copy / "manifest.json").unlink()
    (copy / "gt" / "000002.npz").unlink()
    (copy / "images" / "000002.png").unlink()
    summary = generate(copy, N, seed=3, width=W, height=H, progress=False, model=anny_model)
    assert (summary.generated, summary.kept) == (1, N - 1)
    after = _files(copy)
    assert set(after) == set(before)
    for name in before:
        if name != "manifest.json":
            assert after[name] == before[name], name
    assert json.loads(after["manifest.json"]) == json.loads(before["manifest.json"])

    # a complete set is left alone
    summary = generate(copy, N, seed=3, width=W, height=H, progress=False, model=anny_model)
    assert (summary.generated, summary.kept) == (0, N)


def test_other_seed_or_size_is_refused(synthetic_set, tmp_path, anny_model):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_set, copy)
    with pytest.raises(FurpeError, match="seed 3"):
        generate(copy, N, seed=4, width=W, height=H, progress=False, model=anny_model)
    (copy / "manifest.json").unlink()  # the samples themselves say which set they belong to
    with pytest.raises(FurpeError, match="another synthetic set"):
        generate(copy, N, seed=3, width=W + 16, height=H, progress=False, model=anny_model)
    assert (copy / "gt" / "000000.npz").read_bytes() == \
        (synthetic_set / "gt" / "000000.npz").read_bytes()


def test_variety_across_samples(synthetic_set, anny_model):
    gts = [read_npz(synthetic_set / "gt" / f"{sample_id(i)}.npz") for i in range(N)]
    for key, spread in (("distance_m", 0.3), ("yaw_deg", 10.0), ("elevation_deg", 5.0),
                        ("focal", 10.0), ("light_ambient", 0.02)):
        values = [float(g[key]) for g in gts]
        assert max(values) - min(values) > spread, (key, values)
    assert len({tuple(np.round(g["skin"], 3)) for g in gts}) == N
    assert len({tuple(np.round(g["light_dir"], 3)) for g in gts}) == N
    # ages from children to seniors over more draws (the sampler alone, no rendering)
    labels = anny_model.blocks["phenotype"].labels
    ages, curls = [], []
    for i in range(40):
        p = sample_params(anny_model, np.random.default_rng([11, i]), ranges=VARIED)
        ages.append(years_from_anny_age(float(p["phenotype"][0, labels.index("age")])))
        curls.append(float(p["left_hand_pose"].abs().mean()))
    assert min(ages) < 12 and max(ages) > 50, ages
    assert sum(a < 18 for a in ages) >= 5 and sum(18 <= a for a in ages) >= 15
    assert max(curls) > 2 * min(curls)
    # the default ranges still give the standing poses of the tests and the benchmark
    p1 = sample_params(anny_model, np.random.default_rng(1))
    p2 = sample_params(anny_model, np.random.default_rng(1), ranges=STANDING)
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k])
    age = float(p1["phenotype"][0, labels.index("age")])
    assert 0.4 <= age <= 0.9


def test_age_mapping_matches_anny_calibration():
    import anny.paths

    state = torch.load(anny.paths.get_anny_root_dir() / "data" / "shape_calibration" / "boys.pth",
                       weights_only=True, map_location="cpu")["morphological_age_mapping"]
    for a, y in zip(state["anny_age_anchors"].tolist(),
                    state["morphological_age_anchors"].tolist()):
        assert anny_age_from_years(y) == pytest.approx(a)
        assert years_from_anny_age(a) == pytest.approx(y)


def test_part_visibility_rule():
    K = np.array([[100.0, 0, 49.5], [0, 100.0, 49.5], [0, 0, 1]])
    grid = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 10), np.linspace(-0.4, 0.4, 10)), -1)
    big = np.concatenate([grid.reshape(-1, 2), np.ones((100, 1))], 1)  # 80 px wide, centred
    tiny = big * [0.1, 0.1, 1.0]  # 8 px
    shifted = big + [0.35, 0.0, 0.0]  # 3 of its 10 columns leave the image
    verts = np.concatenate([big, tiny, shifted])
    parts = {"body": np.arange(100), "face": np.arange(100, 200),
             "left_hand": np.arange(200, 300)}
    vis = part_visibility(parts, verts, K, 100, 100)
    assert vis.visible == {"body": True, "face": False, "left_hand": False}
    assert vis.inside["body"] == 1.0 and vis.inside["face"] == 1.0
    assert vis.inside["left_hand"] == pytest.approx(0.7)
    assert vis.pixels["body"] == pytest.approx(80.0)
    assert vis.pixels["face"] == pytest.approx(8.0)
    assert np.isnan(vis.seen["body"])
    depth = np.full((100, 100), 0.5)  # something nearer hides everything
    hidden = part_visibility(parts, verts, K, 100, 100, depth=depth)
    assert hidden.seen["body"] == 0.0
    assert hidden.visible["body"]  # the body always counts
    # a hand in plain view is visible; the same hand behind something nearer is not
    hand_only = {"body": np.arange(100), "left_hand": np.arange(100)}
    clear = np.full((100, 100), np.inf)
    assert part_visibility(hand_only, big, K, 100, 100, depth=clear).visible["left_hand"]
    half = clear.copy()
    half[:, :50] = 0.5  # hides the left half of the hand's vertices
    vis = part_visibility(hand_only, big, K, 100, 100, depth=half)
    assert vis.seen["left_hand"] == pytest.approx(0.5)
    assert vis.visible["left_hand"]  # exactly MIN_SEEN
    half[:, :60] = 0.5
    vis = part_visibility(hand_only, big, K, 100, 100, depth=half)
    assert vis.seen["left_hand"] < MIN_SEEN["left_hand"] and not vis.visible["left_hand"]


def test_make_synthetic_cli(tmp_path, capsys, synthetic_set):
    code = main(["make-synthetic", str(tmp_path / "s"), "--n", "1", "--size", "64x48",
                 "--seed", "5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 sample (1 generated, 0 already done)" in err
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["image_size"] == \
        {"width": 64, "height": 48}
    assert main(["make-synthetic", str(tmp_path / "t"), "--size", "16"]) == 2
    assert "at least 32" in capsys.readouterr().err
    code = main(["make-synthetic", str(synthetic_set), "--n", str(N), "--seed", "9",
                 "--size", f"{W}x{H}", "-q"])
    assert code == 2
    assert "seed 3" in capsys.readouterr().err


# ----------------------------------------------------------------------------- reader

def test_reader_samples(synthetic_set):
    ds = load_dataset("synthetic", synthetic_set)
    assert isinstance(ds, SyntheticDataset) and ds.name == "synthetic"
    samples = ds.samples()
    assert [s.id for s in samples] == [sample_id(i) for i in range(N)]
    s = samples[2]
    assert s.crop == "full" and s.image_path == synthetic_set / "images" / "000002.png"
    assert s.intrinsics.shape == (3, 3) and s.intrinsics[0, 0] > 0
    assert s.gt["vertices"].shape[1] == 3 and s.gt["box"].shape == (4,)
    assert set(s.meta["visible"]) == set(PARTS)
    assert s.meta["index"] == 2 and s.meta["distance_m"] > 0.5


def test_reader_errors(synthetic_set, tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        SyntheticDataset(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"manifest\.json.*furpe make-synthetic"):
        SyntheticDataset(empty).samples()
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_set, copy)
    (copy / "gt" / "000001.npz").unlink()
    with pytest.raises(DatasetError, match=r"gt/000001\.npz"):
        SyntheticDataset(copy).samples()
    (copy / "parts.npz").unlink()
    with pytest.raises(DatasetError, match=r"parts\.npz"):
        SyntheticDataset(copy).samples()
    manifest = json.loads((synthetic_set / "manifest.json").read_text())
    manifest["generator_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="generator version 999"):
        SyntheticDataset(copy).samples()
    with pytest.raises(DatasetError, match="unknown alignment"):
        SyntheticDataset(synthetic_set, ProtocolOptions(alignment="sideways"))


def _perfect(sample, topology: str = "anny", offset=(0.0, 0.0, 0.0)) -> Prediction:
    off = np.asarray(offset)
    kps = {k[len("keypoints_"):]: v + off for k, v in sample.gt.items()
           if k.startswith("keypoints_")}
    return Prediction(topology=topology, vertices=sample.gt["vertices"] + off, keypoints=kps)


def test_score_perfect_and_shifted(synthetic_set):
    ds = SyntheticDataset(synthetic_set)
    samples = ds.samples()
    for s in samples:
        scores = ds.score(s, _perfect(s))
        for name in ("pa_pve_mm", "pve_mm", "pa_mpjpe_mm", "mpjpe_mm", "pa_pve_body_mm",
                     "pa_mpjpe_mediapipe_mm", "mpjpe_mediapipe_mm"):
            assert scores[name] == pytest.approx(0.0, abs=1e-2), name
        for part in ("left_hand", "right_hand", "face"):
            assert (f"pa_pve_{part}_mm" in scores) == s.meta["visible"][part]
        for side in ("left", "right"):
            assert (f"pa_mpjpe_{side}_hand_mm" in scores) == s.meta["visible"][f"{side}_hand"]
    s = samples[0]
    shifted = ds.score(s, _perfect(s, offset=(0.0, 0.0, 1.0)))
    assert shifted["pve_mm"] == pytest.approx(0.0, abs=1e-2)  # translation is aligned
    assert shifted["pa_pve_mm"] == pytest.approx(0.0, abs=1e-2)
    raw = SyntheticDataset(synthetic_set, ProtocolOptions(alignment="none"))  # loads lazily
    shifted = raw.score(s, _perfect(s, offset=(0.0, 0.0, 1.0)))
    assert shifted["pve_mm"] == pytest.approx(1000.0, abs=0.1)
    assert shifted["mpjpe_mm"] == pytest.approx(1000.0, abs=0.1)
    # a scaled mesh: PA removes the scale, mid-hip alignment does not
    scaled = _perfect(s)
    centre = s.gt["vertices"].mean(0)
    scaled.vertices = (s.gt["vertices"] - centre) * 1.1 + centre
    scores = ds.score(s, scaled)
    assert scores["pa_pve_mm"] == pytest.approx(0.0, abs=1e-2)
    assert scores["pve_mm"] > 10.0


def test_score_other_topologies_and_bad_shapes(synthetic_set):
    ds = SyntheticDataset(synthetic_set)
    s = ds.samples()[0]
    coco_only = Prediction(topology="smplx", vertices=np.zeros((10475, 3)),
                           keypoints={"coco": s.gt["keypoints_coco"][:17] + 0.5})
    scores = ds.score(s, coco_only)
    assert set(scores) == {"pa_mpjpe_mm", "mpjpe_mm"}
    assert scores["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-2)
    assert ds.score(s, Prediction(topology="none")) == {}
    with pytest.raises(FurpeError, match="vertices"):
        ds.score(s, Prediction(topology="anny", vertices=np.zeros((10, 3))))
    with pytest.raises(FurpeError, match="coco"):
        ds.score(s, Prediction(topology="none", keypoints={"coco": np.zeros((5, 3))}))


def test_training_scenes_vary_shape_framing_and_occlusion(anny_model):
    from dataclasses import replace

    from furpe.synthetic import TRAINING, render_scene, sample_scene, years_from_anny_age

    scenes = [sample_scene(anny_model, np.random.default_rng([7, i]), 160, 160, scene=TRAINING)
              for i in range(40)]
    framings = {int(s.info["framing"]) for s in scenes}
    ages = [s.info["age_years"] for s in scenes]
    assert framings == {0, 1, 2}
    assert min(ages) < 10 and max(ages) > 40
    labels = anny_model.blocks["phenotype"].labels
    young = [float(s.params["phenotype"][0, labels.index("height")]) for s in scenes
             if s.info["age_years"] < 10]
    assert all(0 <= years_from_anny_age(float(s.params["phenotype"][0, labels.index("age")]))
               <= 110 for s in scenes) and young
    assert sum(len(s.occluders) > 0 for s in scenes) > 10
    # a close-up shows the face and cuts the legs
    close = next(s for s in scenes if s.info["framing"] == 2)
    person = render_scene(anny_model, replace(close, occluders=[]), backend="software")
    assert person.inside["body"] < 0.6 and person.visible["face"]
    # occluders are drawn over the person and hide what they cover
    occluded = next(s for s in scenes if len(s.occluders) >= 2 and s.info["framing"] == 0)
    plain = render_scene(anny_model, replace(occluded, occluders=[]), backend="software")
    with_occ = render_scene(anny_model, occluded, backend="software")
    assert (plain.image != with_occ.image).any(axis=2).sum() > 100
    assert with_occ.mask.sum() < plain.mask.sum()
    assert sum(with_occ.seen.values()) < sum(plain.seen.values())


def test_background_photos_are_composited(tmp_path, anny_model):
    bg = tmp_path / "bg"
    bg.mkdir()
    for name, colour in (("red.png", (0, 0, 255)), ("blue.png", (255, 0, 0))):  # BGR
        cv2.imwrite(str(bg / name), np.full((90, 120, 3), colour, np.uint8))
    out = tmp_path / "set"
    generate(out, n=3, seed=1, width=96, height=96, progress=False, model=anny_model,
             preset="training", backgrounds=bg, backend="software")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"] == "training" and manifest["backgrounds"] == ["blue.png", "red.png"]
    for i in range(3):
        img = read_image(out / "images" / f"{i:06d}.png")
        mask = np.load(out / "gt" / f"{i:06d}.npz")["mask"]
        free = img[~mask].astype(int)
        red = (free[:, 0] > 200) & (free[:, 2] < 50)
        blue = (free[:, 2] > 200) & (free[:, 0] < 50)
        assert max(red.mean(), blue.mean()) > 0.6  # the background photo, bar occluders
    with pytest.raises(FurpeError, match="preset"):
        generate(out, n=3, seed=1, width=96, height=96, progress=False, model=anny_model,
                 backend="software")
