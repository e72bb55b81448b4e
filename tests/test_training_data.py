"""The training loader: mirroring (parameters, keypoints), crops whose camera the parameters
project into, selection filters, worker splits and source mixing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from furpe.bodymodels.mirror import keypoint_mirror, mate, mirror_params
from furpe.cli import main
from furpe.core.camera import project
from furpe.labels import ShardWriter, iter_samples, list_shards
from furpe.synthetic import VARIED, sample_params
from furpe.training.data import Augment, MirrorPlan, PersonCrops, collate, label_dataset

M = np.diag([-1.0, 1.0, 1.0])


def test_mate_names():
    assert mate("upperarm01.L") == "upperarm01.R" and mate("wrist.R") == "wrist.L"
    assert mate("left_hand_pose") == "right_hand_pose" and mate("right_hand") == "left_hand"
    assert mate("eyeBlinkLeft") == "eyeBlinkRight" and mate("leye_pose") == "reye_pose"
    assert mate("head") == "head" and mate("jawOpen") == "jawOpen"


def test_mirrored_parameters_give_the_mirrored_mesh(anny_model):
    m = anny_model
    with torch.no_grad():
        rest = m(m.neutral_params(1)).vertices[0].numpy()
    _, vmap = cKDTree(rest).query(rest @ M.T)  # vertex i's mirror twin
    for seed in (0, 3):
        p = sample_params(m, np.random.default_rng(seed), distance=3.0, ranges=VARIED)
        p["transl"] = torch.tensor([[0.4, -0.2, 3.0]])
        q, lost = mirror_params(m, p)
        assert not lost
        with torch.no_grad():
            v, vq = m(p).vertices[0].numpy(), m(q).vertices[0].numpy()
        err = np.linalg.norm(vq[vmap] - v @ M.T, axis=1) * 1000
        unflipped = np.linalg.norm(v[vmap] - v @ M.T, axis=1) * 1000
        assert err.mean() < 0.5 and np.percentile(err, 99) < 2.0, (err.mean(), err.max())
        assert unflipped.mean() > 100 * err.mean()
        twice, _ = mirror_params(m, q)
        for k in p:
            assert torch.equal(twice[k], p[k]), k


def test_keypoint_mirror_pairs_left_and_right(anny_model):
    for conv in ("mediapipe_pose", "mediapipe_face", "coco"):
        perm = keypoint_mirror(anny_model, conv)
        assert (perm[perm] == np.arange(len(perm))).all(), conv
        assert (perm != np.arange(len(perm))).sum() > 0.8 * len(perm), conv
    names = anny_model.regressors["mediapipe_pose"].names
    perm = keypoint_mirror(anny_model, "mediapipe_pose")
    swap = lambda n: n.replace("left", "#").replace("right", "left").replace("#", "right")  # noqa: E731
    assert [names[perm[i]] for i in range(len(names))] == [swap(n) for n in names]


@pytest.fixture(scope="module")
def synth_shards(tmp_path_factory, anny_model):
    out = tmp_path_factory.mktemp("synth")
    assert main(["make-synthetic", str(out), "--n", "6", "--size", "224", "--format",
                 "webdataset", "--shard-size", "2", "-q"]) == 0
    return out / "shards"


@pytest.fixture(scope="module")
def plan(anny_model):
    return MirrorPlan.from_model(anny_model)


def _project_body(model, ex) -> np.ndarray:
    params = {k[len("params_"):]: torch.as_tensor(v)[None] for k, v in ex.items()
              if k.startswith("params_")}
    with torch.no_grad():
        out = model(params)
        kp = model.keypoints(out, "mediapipe_pose")
    return project(kp, torch.as_tensor(ex["K"]).float())[0].numpy()


@pytest.mark.parametrize("flip", [False, True])
def test_crop_parameters_project_onto_crop_keypoints(synth_shards, plan, anny_model, flip):
    """Rotated and flipped crops: the augmented parameters, posed and projected with the
    crop's camera, land on the augmented keypoints; without mirroring the parameters they
    do not."""
    aug = Augment(scale=(0.9, 1.1), rotation_deg=25, rotation_p=1.0, shift=0.05,
                  flip_p=float(flip), colour=0, blur_p=0, occlusion_p=0)
    crops = PersonCrops(plan, crop_size=160, augment=aug, seed=1)
    sample = next(iter_samples(list_shards(synth_shards)[0]))
    doc = sample["json"]
    import cv2

    image = cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    for trial in range(3):
        ex = crops.example(image, doc, 0, np.random.default_rng(trial))
        assert ex["flipped"] == float(flip)
        seen = ex["confidence_body"] > 0
        assert seen.sum() >= 10
        err = np.linalg.norm(_project_body(anny_model, ex) - ex["keypoints_body"], axis=1)[seen]
        # exact without a flip; with one, within the asymmetry of the shipped keypoint
        # correspondences (a left landmark's vertices are not the exact mirror of the right's)
        limit = (1.5, 5.0) if flip else (0.05, 0.2)
        assert np.median(err) < limit[0] and err.max() < limit[1], err
        if flip:  # the do-nothing flip: image and keypoints mirrored, parameters not
            bad = dict(ex)
            bad.update({f"params_{k}": np.asarray(v, np.float32) for k, v in
                        plan.mirror({k[7:]: ex[k] for k in ex if k.startswith("params_")})[0]
                        .items()})
            err_bad = np.linalg.norm(_project_body(anny_model, bad) - ex["keypoints_body"],
                                     axis=1)[seen]
            assert np.median(err_bad) > 10 * np.median(err)


def test_flipping_twice_restores_the_example(synth_shards, plan):
    sample = next(iter_samples(list_shards(synth_shards)[0]))
    import cv2

    image = cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    crops = PersonCrops(plan, crop_size=128, augment=Augment.none())
    plain = crops.example(image, sample["json"], 0, np.random.default_rng(0))
    flip = PersonCrops(plan, crop_size=128, augment=Augment(
        scale=(1, 1), rotation_p=0, shift=0, flip_p=1, colour=0, blur_p=0, occlusion_p=0))
    once = flip.example(image, sample["json"], 0, np.random.default_rng(0))
    np.testing.assert_array_equal(once["image"], plain["image"][:, :, ::-1])
    back, _ = plan.mirror({k[7:]: once[k] for k in once if k.startswith("params_")})
    for k, v in back.items():
        np.testing.assert_allclose(v, plain[f"params_{k}"], atol=1e-6)
    for part in ("body", "face"):
        perm = plan.keypoints[part]
        pts = once[f"keypoints_{part}"][perm].copy()
        pts[:, 0] = 127 - pts[:, 0]
        np.testing.assert_allclose(pts, plain[f"keypoints_{part}"], atol=1e-4)
    np.testing.assert_allclose(once["keypoints_left_hand"][:, 0],
                               127 - plain["keypoints_right_hand"][:, 0], atol=1e-4)
    assert once["mask_left_hand"] == plain["mask_right_hand"]


def _relabel(src, dst, edit) -> None:
    """Copy shards with each label document passed through ``edit(doc, index)``."""
    w = ShardWriter(dst, size=2)
    i = 0
    for path in list_shards(src):
        for s in iter_samples(path):
            edit(s["json"], i)
            w.write(s["__key__"], {"json": s["json"], "jpg": s["jpg"]})
            i += 1
    w.close()


def test_loader_filters_splits_and_batches(synth_shards, plan, tmp_path):
    def edit(doc, i):
        doc["people"][0]["parts"]["body"]["accepted"] = i % 3 != 0  # 2 of 6 rejected
        doc["people"][0]["parts"]["left_hand"]["scores"]["score"] = 0.3
    _relabel(synth_shards, tmp_path / "s", edit)
    crops = PersonCrops(plan, crop_size=64, augment=Augment(), min_score={"left_hand": 0.5},
                        seed=0)
    ds = label_dataset(tmp_path / "s", crops)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    keys = []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 64, 64)
        assert batch["keypoints_face"].shape[1:] == (478, 2)
        assert (batch["mask_left_hand"] == 0).all() and (batch["confidence_left_hand"] == 0).all()
        keys += batch["key"]
    assert len(keys) == len(set(keys)) == 4  # each kept person once across the two workers


def test_sources_mix_with_their_weights(synth_shards, plan, tmp_path):
    def as_experts(doc, i):
        doc["provenance"]["truth"] = "experts"
    _relabel(synth_shards, tmp_path / "experts", as_experts)
    crops = PersonCrops(plan, crop_size=32, augment=Augment.none())
    ds = label_dataset([(synth_shards, 3.0), (tmp_path / "experts", 1.0)], crops, repeat=True)
    truth = [float(ex["truth"]) for _, ex in zip(range(400), ds)]
    assert 0.67 < np.mean(truth) < 0.83  # 3:1 -> 0.75


def test_mixed_sources_keep_the_views_of_a_person_together(synth_shards, plan, tmp_path):
    """Two views per person (the ema recipe) from two sources: each pair of consecutive
    examples is one person of one source, so rows 2i and 2i+1 of a batch compare."""
    def as_experts(doc, i):
        doc["provenance"]["truth"] = "experts"
    _relabel(synth_shards, tmp_path / "experts", as_experts)
    crops = PersonCrops(plan, crop_size=32, augment=Augment(), views=2, seed=0)
    ds = label_dataset([(synth_shards, 1.0), (tmp_path / "experts", 1.0)], crops,
                       repeat=True, shuffle=4)
    examples = [ex for _, ex in zip(range(60), ds)]
    firsts, seconds = examples[0::2], examples[1::2]
    assert all(a["key"] == b["key"] and a["truth"] == b["truth"]
               for a, b in zip(firsts, seconds))
    # the sources alternate within the stream, and a pair's views differ
    assert len({float(a["truth"]) for a in firsts}) == 2
    assert sum(a["key"] != b["key"] for a, b in zip(firsts, firsts[1:])) > 10
    assert all(not np.array_equal(a["keypoints_body"], b["keypoints_body"])
               for a, b in zip(firsts, seconds))


def test_every_augmentation_runs(synth_shards, plan):
    crops = PersonCrops(plan, crop_size=128, augment=Augment(blur_p=1, occlusion_p=1), seed=2)
    examples = list(label_dataset(synth_shards, crops))
    assert len(examples) == 6
    assert all(np.isfinite(e["keypoints_body"]).all() for e in examples)
    assert any(e["flipped"] for e in examples) and not all(e["flipped"] for e in examples)


def test_flipped_crop_renders_as_the_mirror_image(synth_shards, plan, anny_model):
    """Render the person from an unflipped and a flipped crop's parameters and cameras: the
    second silhouette is the mirror image of the first."""
    from furpe.render import Mesh, render

    sample = next(iter_samples(list_shards(synth_shards)[0]))
    import cv2

    image = cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    kw = dict(scale=(1, 1), rotation_deg=20, rotation_p=1, shift=0, colour=0, blur_p=0,
              occlusion_p=0)
    masks = []
    for flip in (0.0, 1.0):
        crops = PersonCrops(plan, crop_size=128, augment=Augment(flip_p=flip, **kw))
        ex = crops.example(image, sample["json"], 0, np.random.default_rng(5))
        params = {k[7:]: torch.as_tensor(v)[None] for k, v in ex.items()
                  if k.startswith("params_")}
        with torch.no_grad():
            verts = anny_model(params).vertices[0].numpy()
        masks.append(render([Mesh(verts, anny_model.faces)], ex["K"], 128, 128,
                            backend="software").mask)
    plain, flipped = masks
    iou = (plain[:, ::-1] & flipped).sum() / (plain[:, ::-1] | flipped).sum()
    assert plain.sum() > 500 and iou > 0.97, iou
    unflipped_iou = (plain & flipped).sum() / (plain | flipped).sum()
    assert unflipped_iou < iou - 0.1  # the person is not left-right symmetric in the crop
