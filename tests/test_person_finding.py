"""Tests of how the body expert finds people in hard photos: small people in large images
(tiled person detection), people BlazePose's own detector misses inside a person box (its
landmark network run on the box), and very dark photos (exposure normalisation)."""
from __future__ import annotations

import numpy as np
import pytest

from furpe.core.exposure import is_dark, normalise_exposure
from furpe.core.threads import one_core
from furpe.experts.body import MediaPipeBodyExpert, mask_boxes, taken_share
from furpe.experts.boxnets import PoseBoxLandmarker, refine_from_heatmaps
from furpe.experts.tasks import PersonDetector, tile_origins


def test_tile_origins_cover_with_overlap() -> None:
    for width, height in ((1920, 1080), (641, 3000), (1000, 1000)):
        origins = tile_origins(width, height, 640)
        covered = np.zeros((height, width), bool)
        for x, y in origins:
            assert 0 <= x <= max(width - 640, 0) and 0 <= y <= max(height - 640, 0)
            covered[y:y + 640, x:x + 640] = True
        assert covered.all()
        xs = sorted({x for x, _ in origins})
        assert all(b - a <= 0.75 * 640 for a, b in zip(xs, xs[1:]))  # >= 1/4 overlap
    assert tile_origins(500, 400, 640) == [(0, 0)]
    assert len(tile_origins(1920, 1080, 640)) == 4 * 2


def test_refine_from_heatmaps_moves_to_the_peak() -> None:
    heat = np.full((2, 64, 64), -10.0)
    heat[0, 20, 30] = heat[0, 20, 31] = 10.0  # a peak between columns 30 and 31, row 20
    uv = np.array([[28.0 / 64, 22.0 / 64], [0.5, 0.5]])
    out = refine_from_heatmaps(uv, heat)
    np.testing.assert_allclose(out[0], [30.5 / 64, 20.0 / 64], atol=1e-3)
    np.testing.assert_array_equal(out[1], uv[1])  # no confident cell near it: unchanged


def test_normalise_exposure() -> None:
    rng = np.random.default_rng(0)
    bright = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert not is_dark(bright)
    assert normalise_exposure(bright) is bright
    ramp = np.linspace(0, 6, 160)[None, :, None] * np.ones((120, 1, 3))
    dark = np.clip(ramp + rng.normal(0, 0.7, ramp.shape), 0, 255).round().astype(np.uint8)
    assert is_dark(dark) and dark.max() <= 9
    out = normalise_exposure(dark)
    assert out.dtype == np.uint8 and out.shape == dark.shape
    assert np.percentile(out, 99.5) > 150 and out.mean() > 10 * dark.mean()
    # the smoothing: neighbouring pixels differ far less than the stretched noise would
    stretched = dark.astype(np.float32) * (255 / np.percentile(dark, 99.5))
    assert np.abs(np.diff(out.astype(np.float32), axis=1)).mean() < \
        0.5 * np.abs(np.diff(stretched, axis=1)).mean()


@pytest.fixture(scope="module")
def scene(anny_model):
    """A synthetic person (480 x 640) and the Tasks landmarks found on it."""
    from furpe.synthetic import make_person

    person = make_person(anny_model, 0, 480, 640, distance=2.6)
    with MediaPipeBodyExpert() as body:
        (found,) = body.detect(person.image)
    return person.image, found


@pytest.mark.mediapipe
def test_small_person_in_a_large_image_is_found_on_tiles(anny_model) -> None:
    """A 240 x 240 render pasted into a 1920 x 1080 image: the detector finds nobody (or
    barely) on the whole image, and the person on a 640-pixel tile."""
    from furpe.synthetic import make_person, textured_background

    found = {}
    for seed in (1, 2):
        big = textured_background(np.random.default_rng(seed + 10), 1920, 1080)
        small = make_person(anny_model, seed, 240, 240, distance=2.6).image
        big[400:640, 800:1040] = small
        for tile in (None, 640):
            boxes = PersonDetector(0.3, 8, tile).process(big)
            found[seed, tile] = [b for b, _ in boxes
                                 if b[0] >= 790 and b[2] <= 1050 and b[1] >= 390 and b[3] <= 650]
    assert all(len(found[seed, 640]) == 1 for seed in (1, 2))
    assert sum(len(found[seed, None]) for seed in (1, 2)) == 0


def test_a_tile_box_near_an_inner_edge_is_dropped_only_inside_a_larger_box(monkeypatch) -> None:
    """Tiles of a 2560 x 2560 image (the detector faked; each pixel holds its position): the
    box of a tall person's upper half, ending 12 px short of its tile's lower edge, lies in
    the whole-image box of that person and is dropped; a small person's box ending as near
    an edge, inside no larger box, is kept; a box on an inner edge is dropped."""
    y, x = np.mgrid[0:2560, 0:2560]
    image = np.stack([x // 16, y // 16, np.zeros_like(x)], -1).astype(np.uint8)
    image[..., 2] = (x // 16 >= 256) * 1 + (y // 16 >= 256) * 2  # the 9th bits
    detections = {None: [((1000.0, 500.0, 1600.0, 2200.0), 0.8)],
                  (960, 480): [((100.0, 60.0, 450.0, 628.0), 0.9)],
                  (0, 0): [((100.0, 100.0, 200.0, 630.0), 0.7)],
                  (0, 480): [((100.0, 0.0, 200.0, 150.0), 0.6)]}

    def fake(self, tile):
        if tile.shape[:2] == image.shape[:2]:
            return detections[None]
        b = tile[0, 0].astype(int)
        origin = (16 * (b[0] + 256 * (b[2] & 1)), 16 * (b[1] + 256 * (b[2] >> 1)))
        return detections.get(origin, [])

    monkeypatch.setattr(PersonDetector, "_square", fake)
    boxes = [box for box, _ in PersonDetector(0.3, 8, 640).process(image)]
    assert sorted(boxes) == [(100.0, 100.0, 200.0, 630.0), (1000.0, 500.0, 1600.0, 2200.0)]


@pytest.mark.mediapipe
def test_a_tall_person_in_a_large_image_stays_one_person(anny_model) -> None:
    """A 2560 x 2560 render of one person (1700 px tall): the 640-pixel tiles see parts of
    them, boxes the detector ends a little short of a tile's edge; the body expert finds one
    person, not an upper body and a pair of legs."""
    from furpe.synthetic import make_person

    image = make_person(anny_model, 100, 2560, 2560, distance=2.6).image
    with MediaPipeBodyExpert() as body:
        found = body.detect(image)
    assert len(found) == 1, [f.box for f in found]
    x0, y0, x1, y1 = found[0].box
    assert y1 - y0 > 1400


@pytest.mark.mediapipe
def test_box_landmarks_find_who_blazepose_misses(scene, monkeypatch) -> None:
    """When BlazePose's own detector finds nobody in a person box (forced here), its landmark
    network on the box finds the person, with landmarks where the Tasks landmarker put them;
    with ``box_landmarks=False`` nobody is found."""
    image, truth = scene
    for flip in (False, True):
        with MediaPipeBodyExpert(flip_test=flip) as body:
            for model in (body._crop_pose, body._crop_mirror, body._image_pose):
                monkeypatch.setattr(model, "process", lambda img: [])
            (person,) = body.detect(image)
            seen = truth.confidence > 0.5
            err = np.linalg.norm(person.keypoints_2d[seen] - truth.keypoints_2d[seen], axis=1)
            size = max(np.ptp(truth.keypoints_2d[seen], axis=0))
            assert np.median(err) < 0.03 * size, (flip, np.median(err), size)
            assert person.keypoints_3d is not None and person.keypoints_3d.shape == (33, 3)
            legs = np.linalg.norm(person.keypoints_3d[23] - person.keypoints_3d[27])
            assert 0.6 < legs < 1.1  # hip to ankle in metres
            body.box_landmarks = False
            assert body.detect(image) == []


@pytest.mark.mediapipe
def test_experts_on_one_core_skip_the_runs_they_do_not_need(scene, monkeypatch) -> None:
    """Side by side, the crop's mirrored run starts with the plain one and the whole-image
    pass with the person boxes; under one_core (the look-ahead, beside the fit) the mirrored
    run waits for a plain result that needs it and the whole image runs after the boxes: with
    BlazePose's own detector finding nobody in the crop, the mirrored crop run is skipped, and
    the same person comes out either way."""
    image, truth = scene
    with MediaPipeBodyExpert() as body:
        runs: list[str] = []
        for name in ("_crop_pose", "_crop_mirror"):
            monkeypatch.setattr(getattr(body, name), "process",
                                lambda img, _n=name: runs.append(_n) or [])
        (both,) = body.detect(image)
        assert runs.count("_crop_mirror") == 1
        runs.clear()
        with one_core():
            (one,) = body.detect(image)
        assert runs == ["_crop_pose"]
        np.testing.assert_allclose(one.keypoints_2d, both.keypoints_2d)
        assert np.median(np.linalg.norm(one.keypoints_2d - truth.keypoints_2d, axis=1)) < 10


@pytest.mark.mediapipe
def test_whole_image_flip_runs_only_for_people_not_yet_found(scene, monkeypatch) -> None:
    """The mirrored whole-image run is skipped when the person box found everyone the plain
    run sees (the same landmarks come out), and runs when the box found nobody."""
    image, truth = scene
    with MediaPipeBodyExpert() as body:
        runs = []
        mirror = body._mirror_pose.process
        monkeypatch.setattr(body._mirror_pose, "process",
                            lambda img: runs.append(img.shape) or mirror(img))
        (person,) = body.detect(image)
        assert runs == []
        np.testing.assert_allclose(person.keypoints_2d, truth.keypoints_2d)
        monkeypatch.setattr(body._detector, "process", lambda img: [])
        (alone,) = body.detect(image)
        assert runs == [image.shape]
        seen = truth.confidence > 0.5
        err = np.linalg.norm(alone.keypoints_2d[seen] - truth.keypoints_2d[seen], axis=1)
        assert np.median(err) < 0.03 * max(np.ptp(truth.keypoints_2d[seen], axis=0))


def test_taken_share_and_mask_boxes() -> None:
    box = (0.0, 0.0, 100.0, 100.0)
    assert taken_share(box, []) == 0.0
    assert taken_share(box, [(0.0, 0.0, 49.0, 100.0)]) == pytest.approx(0.5, abs=0.05)
    assert taken_share(box, [(0.0, 0.0, 60.0, 100.0), (40.0, 0.0, 100.0, 100.0)]) == 1.0
    img = np.zeros((50, 80, 3), np.uint8)
    out = mask_boxes(img, [(10.0, 10.0, 30.0, 30.0)], grow=0.0)
    assert img.max() == 0 and (out[10:30, 10:30] == 128).all()
    assert out[:, 31:].max() == 0 and out[31:].max() == 0


@pytest.mark.mediapipe
def test_second_look_finds_the_person_boxed_with_another(anny_model, monkeypatch) -> None:
    """Two people side by side that the detector boxes together (forced here), and nobody
    from the whole-image pass: one person without the second look; with it both, one per
    side, neither taking parts of the other."""
    from furpe.synthetic import make_person

    a = make_person(anny_model, 1, 300, 640, distance=2.6)
    b = make_person(anny_model, 2, 300, 640, distance=2.6)
    pair = np.ascontiguousarray(np.hstack([a.image, b.image]))
    counts = {}
    for second_look in (None, 0.35):
        with MediaPipeBodyExpert(second_look=second_look) as body:
            monkeypatch.setattr(body._detector, "process",
                                lambda img: [((0.0, 0.0, 600.0, 640.0), 0.9)])
            monkeypatch.setattr(body._image_pose, "process", lambda img: [])
            people = body.detect(pair)
        counts[second_look] = len(people)
        if second_look:
            left, right = sorted((p.box for p in people), key=lambda box: box[0])
            assert left[2] <= 300 + 10 and right[0] >= 300 - 10, (left, right)
    assert counts == {None: 1, 0.35: 2}


@pytest.mark.mediapipe
def test_box_landmarker_rejects_what_is_no_person(scene) -> None:
    """Noise and a flat grey crop: no pose; the person's crop: a pose."""
    from furpe.core.boxes import crop_square, square_box

    image, truth = scene
    box = truth.box
    side = 1.25 * max(box[2] - box[0], box[3] - box[1])
    crop, _ = crop_square(image, square_box((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, side),
                          256)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    grey = np.full((256, 256, 3), 128, np.uint8)
    poses = PoseBoxLandmarker("full").process(np.stack([crop, noise, grey]))
    assert poses[0] is not None and poses[1] is None and poses[2] is None


@pytest.mark.mediapipe
def test_dark_photo_is_found_after_normalisation(anny_model) -> None:
    """A render darkened to grey levels 0-3: nobody without the exposure normalisation, the
    person with it (as ``run_experts`` does)."""
    from furpe.experts import build_experts, close_experts, run_experts
    from furpe.synthetic import make_person

    image = make_person(anny_model, 1, 640, 480, distance=2.6).image
    dark = (image.astype(np.float32) * 0.012).round().astype(np.uint8)
    assert dark.max() <= 3
    with MediaPipeBodyExpert() as body:
        assert body.detect(dark) == []
    experts = build_experts(["mediapipe_pose"])
    try:
        assert len(run_experts(experts, dark)) == 1
    finally:
        close_experts(experts)


# --------------------------------------------------------------------------------------------
# Hands the palm detector misses
# --------------------------------------------------------------------------------------------

def test_hand_region_turns_the_hand_upright_and_crops_round_trip() -> None:
    """A hand pointing right (knuckles right of the wrist): the region is turned a quarter
    turn, so the crop's up is the image's right; crop pixels map back to where they came
    from."""
    from furpe.experts.boxnets import crop_region, hand_region, region_to_image

    wrist = np.array([100.0, 200.0])
    fingers = np.array([[40.0, dy] for dy in (-20, -8, 4, 16)])  # knuckle offsets
    kp = np.zeros((21, 2))
    kp[0] = wrist
    for f, base in enumerate(fingers):  # 4 joints per finger along +x
        for j in range(4):
            kp[5 + 4 * f + j] = wrist + base + [12.0 * j, 0.0]
    kp[1:5] = wrist + np.array([[8, 15], [16, 22], [24, 26], [32, 28]])  # thumb
    cx, cy, side, rot = hand_region(kp)
    assert abs(abs(rot) - np.pi / 2) < 0.2
    assert 100 < cx < 160 and abs(cy - 200) < 20 and side > 2 * 40
    image = np.zeros((400, 400, 3), np.uint8)
    image[210, 150] = 255  # one bright pixel
    region = (cx, cy, side, rot)
    crop = crop_region(image, region, 224)
    j, i = np.unravel_index(int(np.argmax(crop[..., 0])), crop.shape[:2])[::-1]
    back = region_to_image(np.array([[j + 0.5, i + 0.5]]), region, 224)[0]
    assert np.linalg.norm(back - [150, 210]) < 1.5
    up = region_to_image(np.array([[112.0, 0.0]]), region, 224)[0] - [cx, cy]
    assert up[0] > 0.9 * np.linalg.norm(up)  # the crop's top is towards the fingers


@pytest.fixture(scope="module")
def hands_scene(anny_model):
    """A render with both hands in view and its true hand landmarks."""
    import torch

    from furpe.synthetic import exact_observations, make_person

    sp = make_person(anny_model, 2, 640, 640, distance=2.0)
    with torch.no_grad():
        (truth,) = exact_observations(anny_model, anny_model(sp.params), sp.intrinsics)
    return sp, truth


@pytest.mark.mediapipe
def test_hand_network_finds_hands_the_palm_detector_misses(hands_scene, monkeypatch) -> None:
    """With the palm detector made to find nothing (in the wrist crops and on the whole
    image), the hand network on the wrist crops finds the left hand on its true landmarks,
    and any hand it accepts is on its true landmarks (the right hand, half turned away: the
    network lands 20 px off, and its presence or the wrist rule rejects it); with
    ``box_landmarks=False``, or with hands shorter than ``min_box_hand_length``, no hand is
    found. A hand box alone (``observe_hand_in_box``) gives the hand too, its world landmarks
    hand-sized."""
    from furpe.experts.hands import MediaPipeHandExpert
    from furpe.experts.base import PersonObservation

    sp, truth = hands_scene
    with MediaPipeBodyExpert() as body_expert:
        (body,) = body_expert.detect(sp.image)
    for box_landmarks in (True, False):
        with MediaPipeHandExpert(box_landmarks=box_landmarks) as hands:
            for model in (hands._crop_model, hands._other_crop_model, hands._image_model):
                monkeypatch.setattr(model, "process", lambda img: [])
            (person,) = hands.observe(sp.image, [PersonObservation(parts={"body": body})])
            found = {p for p in person.parts if p.endswith("_hand")}
            if not box_landmarks:
                assert found == set()
                continue
            assert "left_hand" in found
            for side in sorted(p.split("_")[0] for p in found):
                true = truth.get(f"{side}_hand").keypoints_2d
                size = float(np.linalg.norm(np.ptp(true, axis=0)))
                d = np.linalg.norm(person.parts[f"{side}_hand"].keypoints_2d - true, axis=1)
                assert np.median(d) < 0.15 * size, (side, np.median(d), size)
            true = truth.get("left_hand").keypoints_2d
            lo, hi = true.min(0), true.max(0)
            c, s = (lo + hi) / 2, 2.0 * float(max(hi - lo))
            obs = hands.observe_hand_in_box(sp.image, (c[0] - s / 2, c[1] - s / 2,
                                                       c[0] + s / 2, c[1] + s / 2), "left")
            assert obs is not None
            d = np.linalg.norm(obs.keypoints_2d - true, axis=1)
            assert np.median(d) < 0.15 * float(np.linalg.norm(hi - lo))
            span = np.linalg.norm(obs.keypoints_3d[0] - obs.keypoints_3d[12])  # wrist-middle tip
            assert 0.1 < span < 0.25
            # hands shorter than min_box_hand_length (by the body) are not looked for
            hands.min_box_hand_length = 1000.0
            (person,) = hands.observe(sp.image, [PersonObservation(parts={"body": body})])
            assert not any(p.endswith("_hand") for p in person.parts)
