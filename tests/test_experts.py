"""Tests of the landmark conventions, the crop geometry and the MediaPipe experts.

The MediaPipe tests run the real bundled models on scikit-image's astronaut photograph
(public domain; Eileen Collins, upper body, face clearly visible, hands mostly hidden) and on
synthetic images. Graphs are built once per module (fixtures) to keep the suite quick.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from furpe.config import DEFAULT_EXPERTS
from furpe.core import vocab as C
from furpe.core.boxes import (
    as_rgb_uint8,
    box_iou,
    crop_square,
    face_crop_box,
    hand_crop_box,
    landmark_box,
    mostly_outside,
    points_inside,
)
from furpe.core.errors import FurpeError
from furpe.core.registry import create, names, register, unregister
from furpe.experts import (
    PartObservation,
    PersonObservation,
    build_experts,
    close_experts,
    run_experts,
)
from furpe.experts.body import MediaPipeBodyExpert
from furpe.experts.face import MediaPipeFaceExpert, body_face_crop_box
from furpe.experts.hands import MediaPipeHandExpert, body_hand_crop_box, drop_shared_hand

# --------------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------------


def test_convention_sizes_and_names() -> None:
    assert len(C.MEDIAPIPE_POSE) == 33
    assert len(C.MEDIAPIPE_HAND) == 21
    assert len(C.MEDIAPIPE_FACE) == 478
    assert C.MEDIAPIPE_POSE[0] == "nose" and C.MEDIAPIPE_POSE[-1] == "right_foot_index"
    assert C.MEDIAPIPE_POSE[15] == "left_wrist" and C.MEDIAPIPE_POSE[16] == "right_wrist"
    assert C.MEDIAPIPE_HAND[0] == "wrist" and C.MEDIAPIPE_HAND[-1] == "pinky_tip"
    assert C.MEDIAPIPE_FACE[0] == "face_000" and C.MEDIAPIPE_FACE[-1] == "face_477"
    for names in C.CONVENTIONS.values():
        assert len(set(names)) == len(names)
    assert set(C.CONVENTIONS) == {"mediapipe_pose", "mediapipe_hand", "mediapipe_face", "ibug68"}
    assert C.IBUG68[0] == "ibug_00" and C.IBUG68[-1] == "ibug_67"
    assert C.part_convention("mediapipe_hand", "left_hand") == "mediapipe_hand_left"
    assert C.part_convention("mediapipe_pose", "body") == "mediapipe_pose"
    assert [C.MEDIAPIPE_FACE[i] for i in C.FACE_TO_NOW7] == [
        "face_033", "face_133", "face_362", "face_263", "face_002", "face_061", "face_291"]
    assert C.landmark_index("mediapipe_hand", "index_finger_tip") == 8
    with pytest.raises(KeyError):
        C.landmark_index("mediapipe_pose", "tail")


def test_names_match_mediapipe_enums() -> None:
    from mediapipe.tasks.python.vision import PoseLandmark
    from mediapipe.tasks.python.vision.hand_landmarker import HandLandmark

    assert C.MEDIAPIPE_POSE == tuple(p.name.lower() for p in PoseLandmark)
    assert C.MEDIAPIPE_HAND == tuple(p.name.lower() for p in HandLandmark)


def test_pose_flip() -> None:
    flip = np.array(C.POSE_FLIP)
    assert sorted(flip) == list(range(33))
    assert np.all(flip[flip] == np.arange(33))
    names = C.MEDIAPIPE_POSE
    assert names[flip[names.index("left_wrist")]] == "right_wrist"
    assert names[flip[names.index("mouth_left")]] == "mouth_right"
    assert names[flip[names.index("right_foot_index")]] == "left_foot_index"
    assert flip[0] == 0


def test_mirror_pose_points_swaps_sides_reflects_x_and_keeps_auxiliary_points() -> None:
    import torch

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 256, (2, 39, 5))
    out = C.mirror_pose_points(pts, 256.0)
    names = C.MEDIAPIPE_POSE
    lw, rw = names.index("left_wrist"), names.index("right_wrist")
    assert np.allclose(out[:, lw, 0], 256 - pts[:, rw, 0])  # the other side, reflected
    assert np.allclose(out[:, lw, 1:], pts[:, rw, 1:])
    assert np.allclose(out[:, 33:, 1:], pts[:, 33:, 1:])  # auxiliary points keep their rows
    assert np.allclose(C.mirror_pose_points(out, 256.0), pts)  # an involution
    metric = C.mirror_pose_points(pts, column=3)  # metric x in column 3: negated
    assert np.allclose(metric[:, lw, 3], -pts[:, rw, 3])
    assert np.allclose(metric[:, lw, :3], pts[:, rw, :3])
    assert np.allclose(C.mirror_pose_points(torch.as_tensor(pts), 256.0).numpy(), out)


class _FaceConnections:
    """MediaPipe's face-landmark connection sets, as sets of (start, end) pairs."""

    def __getattr__(self, name: str) -> set[tuple[int, int]]:
        from mediapipe.tasks.python.vision import FaceLandmarksConnections as F

        key = name.replace("FACEMESH_", "FACE_LANDMARKS_")
        return {(c.start, c.end) for c in getattr(F, key)}


def _group(conns: set) -> set[int]:
    return {i for edge in conns for i in edge}


def test_face_groups_match_mediapipe() -> None:
    fmc = _FaceConnections()

    assert set(C.FACE_OVAL) == _group(fmc.FACEMESH_FACE_OVAL) and len(C.FACE_OVAL) == 36
    # FACE_OVAL is a closed contour: consecutive points are connected.
    oval_edges = {frozenset(e) for e in fmc.FACEMESH_FACE_OVAL}
    for a, b in zip(C.FACE_OVAL, C.FACE_OVAL[1:] + C.FACE_OVAL[:1]):
        assert frozenset((a, b)) in oval_edges
    assert set(C.FACE_LIPS) == _group(fmc.FACEMESH_LIPS)
    assert set(C.FACE_LEFT_EYE) == _group(fmc.FACEMESH_LEFT_EYE)
    assert set(C.FACE_RIGHT_EYE) == _group(fmc.FACEMESH_RIGHT_EYE)
    assert set(C.FACE_LEFT_EYEBROW) == _group(fmc.FACEMESH_LEFT_EYEBROW)
    assert set(C.FACE_RIGHT_EYEBROW) == _group(fmc.FACEMESH_RIGHT_EYEBROW)
    assert set(C.FACE_NOSE) == _group(fmc.FACEMESH_NOSE)
    assert set(C.FACE_LEFT_IRIS[1:]) == _group(fmc.FACEMESH_LEFT_IRIS)
    assert set(C.FACE_RIGHT_IRIS[1:]) == _group(fmc.FACEMESH_RIGHT_IRIS)


def test_face_flip_is_a_mesh_symmetry() -> None:
    fmc = _FaceConnections()

    flip = np.array(C.FACE_FLIP)
    assert sorted(flip) == list(range(478))
    assert sorted(flip[:468]) == list(range(468))
    assert np.all(flip[flip] == np.arange(478))
    for a, b in [
        (C.FACE_LEFT_EYE, C.FACE_RIGHT_EYE),
        (C.FACE_LEFT_EYEBROW, C.FACE_RIGHT_EYEBROW),
        (C.FACE_LIPS, C.FACE_LIPS),
        (C.FACE_NOSE, C.FACE_NOSE),
        (C.FACE_OVAL, C.FACE_OVAL),
    ]:
        assert {int(flip[i]) for i in a} == set(b)
    assert flip[C.FACE_LEFT_IRIS[0]] == C.FACE_RIGHT_IRIS[0]
    assert flip[C.FACE_MOUTH_LEFT] == C.FACE_MOUTH_RIGHT
    assert flip[C.FACE_LEFT_EYE_OUTER] == C.FACE_RIGHT_EYE_OUTER
    for i in (C.FACE_NOSE_TIP, C.FACE_CHIN, C.FACE_FOREHEAD):
        assert flip[i] == i
    edges = {frozenset(e) for e in fmc.FACEMESH_TESSELATION}
    bad = [e for e in edges if frozenset(int(flip[i]) for i in e) not in edges]
    assert len(bad) <= 6  # quads MediaPipe triangulates asymmetrically


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def test_as_rgb_uint8() -> None:
    grey = np.full((20, 30), 7, np.uint8)
    out = as_rgb_uint8(grey)
    assert out is not None and out.shape == (20, 30, 3) and out[0, 0, 2] == 7
    rgba = np.zeros((20, 30, 4), np.uint8)
    assert as_rgb_uint8(rgba).shape == (20, 30, 3)  # type: ignore[union-attr]
    assert as_rgb_uint8(np.zeros((8, 300, 3), np.uint8)) is None
    with pytest.raises(TypeError):
        as_rgb_uint8(np.zeros((20, 30, 3), np.float32))
    with pytest.raises(ValueError):
        as_rgb_uint8(np.zeros((20, 30, 2), np.uint8))


def test_boxes() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    pts = np.array([[10, 20], [30, 5], [500, 500], [-50, 8]], float)
    conf = np.array([0.9, 0.8, 0.1, 0.2])
    assert landmark_box(pts, conf) == (10, 5, 30, 20)
    assert landmark_box(pts, None, image_size=(100, 100)) == (0, 5, 100, 100)
    assert landmark_box(np.zeros((0, 2))) is None
    assert mostly_outside((95, 95, 195, 195), 100, 100)  # 1% inside
    assert mostly_outside((70, 70, 170, 170), 100, 100)  # 9% inside
    assert not mostly_outside((60, 60, 160, 160), 100, 100)  # 16% inside


def test_hand_crop_box_along_forearm() -> None:
    # Forearm pointing up the image (elbow below the wrist), 100 px long: hand length 80 px.
    box = hand_crop_box(np.array([200.0, 300.0]), elbow=np.array([200.0, 400.0]))
    assert box is not None
    x0, y0, x1, y1 = box
    assert x1 - x0 == pytest.approx(160) and y1 - y0 == pytest.approx(160)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((200, 260))  # 40 px beyond the wrist
    # The wrist is inside the box, on its lower half.
    assert x0 < 200 < x1 and (y0 + y1) / 2 < 300 < y1
    big = hand_crop_box(np.array([200.0, 300.0]), elbow=np.array([200.0, 400.0]), scale=1.5)
    assert big is not None and big[2] - big[0] == pytest.approx(240)


def test_hand_crop_box_follows_knuckles_and_largest_cue() -> None:
    wrist, elbow = np.array([100.0, 100.0]), np.array([100.0, 200.0])
    # Hand bent sideways: knuckles to the right of the wrist give the direction.
    box = hand_crop_box(wrist, elbow=elbow, knuckles=np.array([130.0, 100.0]))
    assert box is not None
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert centre == pytest.approx((140, 100))  # L = max(80, 66) = 80, centre at wrist + 40
    # Knuckles far away: their cue (2.2 x 50 = 110) wins over the forearm's (80).
    box = hand_crop_box(wrist, elbow=elbow, knuckles=np.array([100.0, 50.0]))
    assert box is not None and box[2] - box[0] == pytest.approx(220)
    # Foreshortened forearm: the shoulder width keeps the box from collapsing.
    box = hand_crop_box(wrist, elbow=np.array([100.0, 105.0]), shoulder_width=200.0)
    assert box is not None and box[2] - box[0] == pytest.approx(2 * 0.55 * 200)
    assert hand_crop_box(wrist) is None
    assert hand_crop_box(wrist, elbow=wrist.copy()) is None


def test_body_hand_crop_box_uses_the_right_side() -> None:
    kp = np.zeros((33, 2))
    kp[11], kp[12] = (300, 100), (100, 100)  # subject facing the camera
    kp[15], kp[13] = (350, 300), (330, 200)  # left wrist, elbow
    kp[16], kp[14] = (50, 300), (70, 200)  # right wrist, elbow
    kp[[17, 19]] = kp[15] + (0, 20)
    kp[[18, 20]] = kp[16] + (0, 20)
    body = PartObservation("body", "mediapipe_pose", kp, np.ones(33))
    left, right = body_hand_crop_box(body, "left"), body_hand_crop_box(body, "right")
    assert left is not None and right is not None
    assert left[0] < 350 < left[2] and left[1] < 300 < left[3]
    assert right[0] < 50 < right[2] and right[1] < 300 < right[3]
    assert (left[1] + left[3]) / 2 > 300  # the hand hangs below the wrist


def test_face_crop_box() -> None:
    pts = np.array([[100, 100], [140, 100], [120, 130]], float)
    box = face_crop_box(pts, scale=2.0)
    assert box == pytest.approx((80, 75, 160, 155))
    assert face_crop_box(pts[:1]) is None
    kp = np.zeros((33, 2))
    kp[:11] = np.linspace([100, 100], [140, 130], 11)
    conf = np.zeros(33)
    body = PartObservation("body", "mediapipe_pose", kp, conf)
    assert body_face_crop_box(body) is None  # head not visible
    conf[:11] = 1.0
    assert body_face_crop_box(body, scale=2.0) == pytest.approx((80, 75, 160, 155))


def test_crop_square_pads_and_maps_back() -> None:
    img = np.zeros((50, 60, 3), np.uint8)
    img[10:20, 30:40] = 200
    crop, used = crop_square(img, (20.0, -10.0, 60.0, 30.0), 80)  # 40 px box, 10 px above
    assert used == (20.0, -10.0, 60.0, 30.0) and crop.shape == (80, 80, 3)
    assert crop[5, 40].max() == 0  # padding above the image
    # Image pixel (35, 15) -> crop ((35 - 20) * 2, (15 + 10) * 2) = (30, 50).
    assert crop[50, 30, 0] == 200 and crop[50, 10, 0] == 0
    crop, used = crop_square(img, (500.0, 500.0, 520.0, 520.0), 32)
    assert crop.max() == 0


# --------------------------------------------------------------------------------------------
# MediaPipe experts on real images
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data as skdata  # scikit-image: a test requirement

    return skdata.astronaut()


@pytest.fixture(scope="module")
def experts():
    ex = build_experts(DEFAULT_EXPERTS)
    yield ex
    close_experts(ex)


@pytest.fixture(scope="module")
def astronaut_people(experts, astronaut) -> list[PersonObservation]:
    return run_experts(experts, astronaut)


@pytest.mark.mediapipe
def test_astronaut_body(astronaut_people: list[PersonObservation]) -> None:
    assert len(astronaut_people) == 1
    body = astronaut_people[0].get("body")
    assert body is not None
    assert body.convention == "mediapipe_pose" and body.expert == "mediapipe_pose"
    assert body.keypoints_2d.shape == (33, 2) and body.confidence.shape == (33,)
    kp, conf = body.keypoints_2d, body.confidence
    # Nose on her face (the face spans roughly x 170-280, y 60-180 in the 512 x 512 photo).
    assert 190 < kp[0, 0] < 260 and 100 < kp[0, 1] < 160
    assert conf[0] > 0.9
    # Subject's left is on the image's right for a person facing the camera.
    assert kp[11, 0] > kp[12, 0] + 100 and conf[11] > 0.9 and conf[12] > 0.9
    assert kp[2, 0] > kp[5, 0]
    # Shoulders below the nose; hips and ankles are out of the picture (low visibility).
    assert kp[11, 1] > kp[0, 1] + 50
    assert conf[27] < 0.2 and conf[28] < 0.2
    # Box: the visible landmarks, inside the image.
    x0, y0, x1, y1 = body.box  # type: ignore[misc]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    assert x0 < kp[0, 0] < x1 and y0 <= kp[0, 1] <= y1
    assert 0.5 < body.score <= 1.0
    # World landmarks: metres, hip-centred, x right, y down, z away from the camera.
    w = body.keypoints_3d
    assert w is not None and w.shape == (33, 3)
    hips = (w[23] + w[24]) / 2
    assert np.allclose(hips, 0, atol=0.05)
    assert w[0, 1] < -0.3  # head about half a metre above the (unseen) hips
    assert w[11, 0] > w[12, 0]  # x right: same left/right order as the image
    assert w[0, 2] < -0.1  # the nose is in front of the hips (towards the camera)
    assert 0.2 < np.linalg.norm(w[11] - w[12]) < 0.5  # shoulder width, metres


@pytest.mark.mediapipe
def test_astronaut_face(astronaut_people: list[PersonObservation]) -> None:
    person = astronaut_people[0]
    body, face = person.get("body"), person.get("face")
    assert body is not None and face is not None
    assert face.convention == "mediapipe_face" and face.expert == "mediapipe_face"
    assert face.keypoints_2d.shape == (478, 2)
    assert face.keypoints_3d is None
    nose = face.keypoints_2d[C.FACE_NOSE_TIP]
    assert np.linalg.norm(nose - body.keypoints_2d[0]) < 15
    # Subject's left eye on the image's right; eyes above the nose, mouth below it.
    kp = face.keypoints_2d
    assert kp[C.FACE_LEFT_EYE_OUTER, 0] > kp[C.FACE_RIGHT_EYE_OUTER, 0]
    assert face.keypoints_2d[C.FACE_LEFT_IRIS[0], 1] < nose[1] < face.keypoints_2d[13, 1]
    # Iris centres near BlazePose's eye centres.
    assert np.linalg.norm(face.keypoints_2d[C.FACE_LEFT_IRIS[0]] - body.keypoints_2d[2]) < 15
    assert np.linalg.norm(face.keypoints_2d[C.FACE_RIGHT_IRIS[0]] - body.keypoints_2d[5]) < 15
    # Box: a square crop around the head, containing every landmark.
    x0, y0, x1, y1 = face.box  # type: ignore[misc]
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert 120 < x1 - x0 < 260
    assert (face.keypoints_2d >= (x0, y0)).all() and (face.keypoints_2d <= (x1, y1)).all()
    width = np.ptp(face.keypoints_2d[:, 0])
    assert 60 < width < 130  # her face is about 90 px wide
    assert 0.5 < face.score <= 1.0
    assert np.all(face.confidence == pytest.approx(face.score))


@pytest.mark.mediapipe
def test_astronaut_hands_if_any_sit_at_the_wrists(
    astronaut_people: list[PersonObservation],
) -> None:
    """Her hands are hidden (helmet, bottom edge), so MediaPipe Hands may report none; any hand
    it reports must sit at the body's wrist. That hands are found where they are visible is
    checked by test_synthetic_person_hands_are_found_at_the_wrists."""
    person = astronaut_people[0]
    body = person.get("body")
    assert body is not None
    for side, wrist in (("left", 15), ("right", 16)):
        hand = person.get(f"{side}_hand")
        if hand is None:
            continue
        assert hand.keypoints_2d.shape == (21, 2)
        assert np.linalg.norm(hand.keypoints_2d[0] - body.keypoints_2d[wrist]) < 100


# Seed 2 at 2 m, 640 x 640: both hands in view, hanging at the sides, 53 and 62 px long.
HANDS_SEED, HANDS_DISTANCE = 2, 2.0


@pytest.fixture(scope="module")
def person_with_hands(anny_model):
    """A synthetic render with both hands visible, and its true landmarks (the model's own
    MediaPipe keypoints, projected)."""
    import torch

    from furpe.synthetic import exact_observations, make_person

    sp = make_person(anny_model, HANDS_SEED, 640, 640, distance=HANDS_DISTANCE)
    with torch.no_grad():
        (truth,) = exact_observations(anny_model, anny_model(sp.params), sp.intrinsics)
    return sp, truth


@pytest.mark.mediapipe
def test_synthetic_person_hands_are_found_at_the_wrists(experts, person_with_hands) -> None:
    """The default experts find both visible hands, each on its own side, landmarks on the
    true hand and its wrist at the body's wrist. Measured (left, right): wrist 1.9 and 2.6 px
    from the truth, median landmark 1.8 and 4.0 px, 0.5 and 5.7 px from BlazePose's wrist,
    scores 0.95 and 0.82."""
    sp, truth = person_with_hands
    assert sp.visible["left_hand"] and sp.visible["right_hand"], "the premise: both hands in view"
    people = run_experts(experts, sp.image)
    assert len(people) == 1
    person = people[0]
    body = person.get("body")
    assert body is not None
    for side, wrist in (("left", 15), ("right", 16)):
        hand = person.get(f"{side}_hand")
        assert hand is not None, f"the visible {side} hand was not found"
        assert hand.part == f"{side}_hand" and hand.convention == "mediapipe_hand"
        assert hand.expert == "mediapipe_hands"
        assert hand.keypoints_2d.shape == (21, 2) and hand.confidence.shape == (21,)
        assert hand.keypoints_3d is not None and hand.keypoints_3d.shape == (21, 3)
        assert 0.5 < hand.score <= 1.0
        true = truth.get(f"{side}_hand").keypoints_2d
        size = float(np.linalg.norm(np.ptp(true, axis=0)))  # diagonal of the true hand's box
        d = np.linalg.norm(hand.keypoints_2d - true, axis=1)
        to_body = float(np.linalg.norm(hand.keypoints_2d[0] - body.keypoints_2d[wrist]))
        print(f"\n{side} hand ({size:.0f} px): wrist {d[0]:.1f} px, median {np.median(d):.1f} px "
              f"from the truth; {to_body:.1f} px from the body's wrist; score {hand.score:.2f}")
        # On this side's true hand (the two hands are 116-125 px apart, so a swapped side or
        # a hand found on the other wrist fails here).
        assert d[0] < 0.15 * size
        assert np.median(d) < 0.15 * size
        assert to_body < 0.3 * size
        x0, y0, x1, y1 = hand.box  # type: ignore[misc]
        assert x0 < true[0, 0] < x1 and y0 < true[0, 1] < y1


@pytest.mark.mediapipe
def test_blank_and_odd_images_give_nobody(experts) -> None:
    rng = np.random.default_rng(0)
    for img in (
        np.full((240, 320, 3), 128, np.uint8),
        np.zeros((5, 7, 3), np.uint8),
        np.full((1, 1, 3), 255, np.uint8),
        rng.integers(0, 256, (97, 613, 3), dtype=np.uint8),
        np.full((64, 64), 128, np.uint8),
    ):
        assert run_experts(experts, img) == []


@pytest.mark.mediapipe
def test_two_people_and_flip_permutations(experts, astronaut) -> None:
    """The photo next to its mirror image: two people, matching through the flip tables."""
    pair = np.ascontiguousarray(np.hstack([astronaut, astronaut[:, ::-1]]))
    width = pair.shape[1]
    people = run_experts(experts, pair)
    assert len(people) == 2
    left, right = sorted(people, key=lambda p: p.parts["body"].box[0])  # type: ignore[index]
    lb, rb = left.parts["body"].box, right.parts["body"].box
    assert lb is not None and rb is not None
    assert lb[2] <= 512 <= rb[0]  # one person per half
    # Head landmarks of the mirrored person, mirrored back through POSE_FLIP.
    ka = left.parts["body"].keypoints_2d
    kb = right.parts["body"].keypoints_2d[list(C.POSE_FLIP)]
    kb[:, 0] = width - kb[:, 0]
    assert np.linalg.norm(ka[:11] - kb[:11], axis=1).mean() < 10
    # The faces: 478 landmarks each, matching through FACE_FLIP to about a pixel.
    fa, fb = left.get("face"), right.get("face")
    assert fa is not None and fb is not None
    mirrored = fb.keypoints_2d[list(C.FACE_FLIP)]
    mirrored[:, 0] = width - mirrored[:, 0]
    assert np.median(np.linalg.norm(fa.keypoints_2d - mirrored, axis=1)) < 3
    unflipped = fb.keypoints_2d.copy()
    unflipped[:, 0] = width - unflipped[:, 0]
    assert np.median(np.linalg.norm(fa.keypoints_2d - unflipped, axis=1)) > 10


@pytest.mark.mediapipe
def test_max_people_limits_detections(astronaut) -> None:
    pair = np.ascontiguousarray(np.hstack([astronaut, astronaut[:, ::-1]]))
    with MediaPipeBodyExpert(max_people=1) as body:
        assert len(body.detect(pair)) == 1


@pytest.mark.mediapipe
def test_person_detector_separates_people_side_by_side(anny_model) -> None:
    """Two different people side by side: two people, each within their own half, with the
    person detector; an upper-body close-up is found too."""
    from furpe.synthetic import make_person

    a = make_person(anny_model, 1, 400, 640, distance=2.6)
    b = make_person(anny_model, 2, 400, 640, distance=2.6)
    pair = np.ascontiguousarray(np.hstack([a.image, b.image]))
    with MediaPipeBodyExpert(person_detector=True) as body:
        boxes = {(b.box[0] >= 400) for b in body.detect(pair)}  # type: ignore[index]
        people = body.detect(pair)
        assert len(people) == 2 and boxes == {False, True}
        left, right = sorted((p.box for p in people), key=lambda box: box[0])  # type: ignore[misc]
        assert left[2] <= 400 + 5 and right[0] >= 400 - 5  # no body takes parts of both
        (person,) = body.detect(_upper_body_close_up(anny_model).image)
        assert person.confidence[[0, 11, 12]].min() > 0.5  # nose and shoulders seen
        assert person.keypoints_2d[0, 1] < person.keypoints_2d[11, 1]  # head above shoulders
        assert person.confidence[[27, 28]].max() <= 0.1  # the ankles are out of the picture


def _upper_body_close_up(anny_model):
    """A person 1.1 m away, the camera aimed at the chest: head and torso in the picture,
    legs below it."""
    from furpe.core.camera import intrinsics
    from furpe.synthetic import render_person, sample_params

    params = sample_params(anny_model, np.random.default_rng(3), distance=1.1)
    K = intrinsics(480, 480)
    K[1, 2] += 130
    close = render_person(anny_model, params, 480, 480, K=K)
    return close


@pytest.mark.mediapipe
def test_flip_test_and_box_landmarks_are_on_for_images_and_off_in_video_mode() -> None:
    for video, expected in ((False, True), (True, False)):
        with MediaPipeBodyExpert(max_people=1, video=video) as body:
            assert body.flip_test is expected and body.box_landmarks is expected
    with MediaPipeBodyExpert(max_people=1, video=True, flip_test=True,
                             box_landmarks=True) as body:
        assert body.flip_test and body.box_landmarks
    for video, expected in ((False, True), (True, False)):
        with MediaPipeHandExpert(video=video) as hands:
            assert hands.box_landmarks is expected


@pytest.mark.mediapipe
def test_flip_test_averages_the_mirrored_view(astronaut) -> None:
    """With ``flip_test`` the body landmarks are the mean of the plain run and of the run on
    the mirrored photo, mapped back (left and right swapped, x mirrored)."""
    width = astronaut.shape[1]
    # On the whole image (no person crops), so both runs see the same pixels.
    with MediaPipeBodyExpert(max_people=1, flip_test=False, person_detector=False) as plain:
        a = plain.detect(astronaut)[0]
        b = plain.detect(np.ascontiguousarray(astronaut[:, ::-1]))[0]
    with MediaPipeBodyExpert(max_people=1, person_detector=False) as body:
        both = body.detect(astronaut)
    assert len(both) == 1
    obs = both[0]
    perm = list(C.POSE_FLIP)
    b2d = b.keypoints_2d[perm].copy()
    b2d[:, 0] = (width - 1) - b2d[:, 0]
    # The head and shoulders (all surely seen) agree between the two runs.
    assert np.linalg.norm(a.keypoints_2d[:13] - b2d[:13], axis=1).max() < 20
    np.testing.assert_allclose(obs.keypoints_2d, (a.keypoints_2d + b2d) / 2, atol=1e-6)
    # Landmarks outside the photo count as unseen (confidence at most 0.1, in each run).
    height = astronaut.shape[0]
    inside = (points_inside(obs.keypoints_2d, width, height)
              & points_inside(a.keypoints_2d, width, height)
              & points_inside(b2d, width, height))
    assert inside.sum() >= 15
    mean = (a.confidence + b.confidence[perm]) / 2
    np.testing.assert_allclose(obs.confidence[inside], mean[inside], atol=1e-6)
    assert obs.confidence[~points_inside(obs.keypoints_2d, width, height)].max() <= 0.1
    b3d = b.keypoints_3d[perm] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(obs.keypoints_3d, (a.keypoints_3d + b3d) / 2, atol=1e-6)
    # The mirrored run's left shoulder (x mirrored) is the plain run's right one.
    assert a.keypoints_3d[11, 0] * b.keypoints_3d[12, 0] < 0

@pytest.mark.mediapipe
def test_video_mode_tracks(astronaut) -> None:
    body = MediaPipeBodyExpert(video=True, max_people=1)
    try:
        noses = []
        for shift in (0, 4, 8):
            frame = np.ascontiguousarray(np.roll(astronaut, shift, axis=1))
            obs = body.detect(frame)
            assert len(obs) == 1
            noses.append(obs[0].keypoints_2d[0, 0])
        assert noses[0] < noses[2]  # follows the person as she moves right
        body.reset()
        assert len(body.detect(astronaut)) == 1
    finally:
        body.close()


# --------------------------------------------------------------------------------------------
# Hand expert on a synthetic hand
# --------------------------------------------------------------------------------------------


def _draw_hand(img: np.ndarray, wrist: np.ndarray, s: float) -> None:
    """Draw a flat cartoon open hand, fingers up, wrist at ``wrist`` (length about 190 s px)."""
    import cv2

    skin = (220, 175, 140)
    cx, cy = float(wrist[0]), float(wrist[1]) - 45 * s

    def p(x: float, y: float) -> tuple[int, int]:
        return int(round(x)), int(round(y))

    cv2.ellipse(img, p(cx, cy), p(42 * s, 50 * s), 0, 0, 360, skin, -1, cv2.LINE_AA)
    cv2.rectangle(img, p(cx - 30 * s, cy + 20 * s), p(cx + 30 * s, cy + 120 * s), skin, -1)
    for (angle, length), base in zip([(-22, 70), (-7, 80), (8, 76), (22, 62)], [-30, -10, 10, 30]):
        a = math.radians(angle)
        x0, y0 = cx + base * s, cy - 35 * s
        x1, y1 = x0 + math.sin(a) * length * s, y0 - math.cos(a) * length * s
        cv2.line(img, p(x0, y0), p(x1, y1), skin, max(1, int(17 * s)), cv2.LINE_AA)
        cv2.circle(img, p(x1, y1), max(1, int(8.5 * s)), skin, -1, cv2.LINE_AA)
    x0, y0 = cx + 30 * s, cy + 5 * s
    cv2.line(img, p(x0, y0), p(x0 + 45 * s, y0 - 45 * s), skin, max(1, int(20 * s)), cv2.LINE_AA)


def _fake_body(wrist: np.ndarray, side: str, other_wrist: np.ndarray) -> PartObservation:
    """A ``mediapipe_pose`` observation with one forearm pointing up to ``wrist``."""
    kp = np.full((33, 2), -1000.0)
    conf = np.zeros(33)
    w, e, pk, ix = (16, 14, 18, 20) if side == "right" else (15, 13, 17, 19)
    ow, oe, opk, oix = (15, 13, 17, 19) if side == "right" else (16, 14, 18, 20)
    for i, xy in (
        (w, wrist), (e, wrist + (0, 110)), (ix, wrist + (-5, -55)), (pk, wrist + (10, -50)),
        (ow, other_wrist), (oe, other_wrist + (0, 110)),
        (oix, other_wrist + (0, -50)), (opk, other_wrist + (10, -50)),
        (11, (330, 200)), (12, (200, 200)),
    ):
        kp[i], conf[i] = xy, 0.9
    return PartObservation("body", "mediapipe_pose", kp, conf, expert="test")


@pytest.fixture(scope="module")
def hand_expert():
    ex = MediaPipeHandExpert()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def hand_image() -> tuple[np.ndarray, np.ndarray]:
    import cv2

    img = np.full((480, 640, 3), (60, 80, 110), np.uint8)
    wrist = np.array([420.0, 300.0])
    _draw_hand(img, wrist, 0.6)
    return cv2.GaussianBlur(img, (0, 0), 1.5), wrist


@pytest.mark.mediapipe
def test_hand_expert_finds_hand_at_wrist(hand_expert, hand_image) -> None:
    img, wrist = hand_image
    body = _fake_body(wrist, "right", other_wrist=np.array([100.0, 150.0]))
    people = hand_expert.observe(img, [PersonObservation(parts={"body": body})])
    assert len(people) == 1
    hand = people[0].get("right_hand")
    assert hand is not None and people[0].get("left_hand") is None  # nothing at the other wrist
    assert hand.part == "right_hand" and hand.convention == "mediapipe_hand"
    assert hand.expert == "mediapipe_hands"
    assert hand.keypoints_2d.shape == (21, 2)
    # Mapped back to full-image pixels: wrist at the drawn wrist, fingertips above it.
    assert np.linalg.norm(hand.keypoints_2d[0] - wrist) < 20
    assert hand.keypoints_2d[12, 1] < wrist[1] - 50
    x0, y0, x1, y1 = hand.box  # type: ignore[misc]
    assert x0 < wrist[0] < x1 and y0 < wrist[1] < y1
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert 0.25 <= hand.score <= 1.0
    assert np.all(hand.confidence == pytest.approx(hand.score))
    w = hand.keypoints_3d
    assert w is not None and w.shape == (21, 3)
    assert w[12, 1] < w[0, 1]  # y down: the fingertip is above the wrist
    assert 0.05 < np.linalg.norm(w[12] - w[0]) < 0.3  # metres


@pytest.mark.mediapipe
def test_hands_too_small_by_the_body_are_not_looked_for(hand_expert, hand_image,
                                                        monkeypatch) -> None:
    img, wrist = hand_image
    body = _fake_body(wrist, "right", other_wrist=np.array([100.0, 150.0]))
    box = body_hand_crop_box(body, "right")
    length = (box[2] - box[0]) / 2  # the hand's length by the body, in pixels
    runs: list[str] = []
    for name in ("_crop_model", "_image_model"):
        model = getattr(hand_expert, name)
        monkeypatch.setattr(model, "process", lambda crop, _f=model.process, _n=name:
                            runs.append(_n) or _f(crop))
    monkeypatch.setattr(hand_expert, "min_hand_length", length + 1)
    people = hand_expert.observe(img, [PersonObservation(parts={"body": body})])
    assert people[0].get("right_hand") is None and runs == []  # no landmarker run at all
    monkeypatch.setattr(hand_expert, "min_hand_length", length - 1)
    people = hand_expert.observe(img, [PersonObservation(parts={"body": body})])
    assert people[0].get("right_hand") is not None and "_crop_model" in runs


@pytest.mark.mediapipe
def test_hand_side_comes_from_the_body(hand_expert, hand_image) -> None:
    """The same crop called left or right: same landmarks, and handedness only scales the
    score (by 1/2 for the side MediaPipe disagrees with)."""
    img, wrist = hand_image
    other = np.array([100.0, 150.0])
    right = hand_expert.observe_hand(img, _fake_body(wrist, "right", other), "right")
    left = hand_expert.observe_hand(img, _fake_body(wrist, "left", other), "left")
    assert right is not None and left is not None
    assert right.part == "right_hand" and left.part == "left_hand"
    np.testing.assert_allclose(right.keypoints_2d, left.keypoints_2d)
    hi, lo = max(right.score, left.score), min(right.score, left.score)
    assert lo == pytest.approx(hi / 2)


@pytest.mark.mediapipe
def test_hand_rejected_far_from_wrist(hand_expert, hand_image) -> None:
    img, wrist = hand_image
    # Body wrist 130 px to the left of the drawn one, forearm 40 px: the crop still sees
    # part of the hand, but any hand found is too far from this wrist.
    body = _fake_body(wrist - (130, 0), "right", other_wrist=np.array([100.0, 150.0]))
    body.keypoints_2d[14] = body.keypoints_2d[16] + (0, 40)
    body.keypoints_2d[[18, 20]] = body.keypoints_2d[16] + (0, -10)
    assert hand_expert.observe_hand(img, body, "right") is None


# A 96 x 96 PNG: an orthographic, flat-shaded render of the right-hand mesh of the anny body
# model (``anny.create_hand_model("R")``, Apache-2.0), fingers up, the back of the hand towards
# the camera (thumb on the image's left), colours quantised. Its chirality was checked on the
# mesh (the fingers curl towards the palm side of a right hand).
_RIGHT_HAND_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAGAAAABgCAIAAABt+uBvAAAHZklEQVR42u1cy3XjOBDEzHMAHQKOe+RxjwxBxz0q"
    "BIfgEByCQlAIDIEhIIQOYRtoEj8SICUSkGgT4yfbMqQRSlXVH4D688+//4lzpMffE4IToBOgE6AToBOgE6AToBOg"
    "c8yNjzd/fa3E66UF+gng8tWdDIrH5/UiDDp0c/9sfgVAXxe5nj404PdI7HZtaMFSyvunXvr11i9Aeb0omkcEMr8q"
    "/eOPZhCvVi8XBMhlZvRKCdRzhUEGBPwGiT3AAkcec9up/idL7JutB8Bb/YIBSWm4IwdgM48g/+Y/Xr/7wzLIykqr"
    "Rq/22uamN9JYNDNOY4P3xNobUMP/AHD/ao8KUN8PFsQyI7AIgsx8adC0czIOfW1bUcye6gHE6DhbyesLPCjZtxL4"
    "XBomJhay8IoA+baz5NTSi3EonE/Pa9f5mlBKHTuKNY30AFsb8SDn5ZKn6ZygAIdeVIvBChqhkIymIR5Z2Ky+2MOJ"
    "RG0DpOKuV0cFCCZEAEgaUCMb+yhMi5IsnMSIo8cplYx0h5EYeQQs5kEwk4JPV36pUrrWzINcnMl7hRypBWPsSyRK"
    "wF5uTfrrrn6CBy0Gel6ws/PZ3KcJMwiKX6gOziDENfTRFQasymmkyzMLlrF1JSaW67AJOqCM+0b0sYkSmPmo8Ote"
    "pBnyGom54DSXcE/hw2xKgKpgn+ijvsQWVgxRlMNpkJcmujt7hvks6XilRuRBU+egupyrU74dOhwo/Najie5on8cw"
    "Dmd7k1TZd5uL+3oAcYvDfKGpLecTv6j8gvnkcOBPKoMkp7d9j9u2Vv8rdjUAxrZrnmozgxv+EMT32MK1i19a7jql"
    "apT3jmKPWCqVoL1XoBMgzeg+ll/fXRzjtG3DYGS4rdVfO4pBQIDYgLi9agsxnEsOEXNBUOuraTR6yJEAbtuqs7rF"
    "KuSU1IzeEgU6u0L6K/2j+6XBmMUVNYBcGxc0lGpzn/9vXfoEWSD99H2V6awgyAW4NMWhc+js2ScIoUMog+ft27PH"
    "v3XVlWCTa7wbBOeil1m5F7uQ7QWjN8DHd5fu4msaZl5OBEyirot3mcErMrhFTff4pCJwfHv+bMFo0PFrl+JjK4Mo"
    "7mZkEsSjuXBLpDBNC2Bz9bmjTAZoK3u2XZpMj2GYIvoE/qWw36k5vQkg0oWWBMBKjG7EE0sBtJpAW3NOedZSSDPq"
    "G/7swycC+oyFLnByEMX+lzFo2D4njFac2aDVurfdkiV0I6+JoeebDbSxMcZwjs9w6xw6OgKO4tq3MbQJoB5pwRoj"
    "vWkql7WGOGkH4VBvyXATkQ+BDDxtmiF+ycCD/cjlezTZ1l702YFB3GroTbpBBpHikd0dDowjNBFbqbFbw8jQqfIo"
    "PLnnQctC8+C9Wx+bARqMAHhbSqb7pG3TZNplAHO5EoAcK1IZKpHNm8TVtkEt2ql+R/rskwfxrvnYmRGrDDvEyH8G"
    "tKqb7goZgnABQbKiyoP71rYs0znB3r2zrQDxuw0mrzfHE57qn7lsEMLWIgp/Z3kkbKP3wnDMG0frMejd9t4X25oo"
    "8stDtKpACbkGujnU4jo5EGfADLUT0eA1IOydPFWHtsZrD4AQZfqumxkErj7HUSyRysihnQGtesqBFdZxuTrPhQo9"
    "cF/32bMW601FYKmTJ5EvL8yUbOgsCYQ7eRVNHXyp2NgKEGve1ASDWPjVLp71xVkyQlyqBVqGCMWxNYSiEH12ruZt"
    "MUmvmBJbxih5zg6HL5yDIyrW0ptEwjramzJoIBFA1yvWgq0krdCsAZmTGJgTHqaOakYdELQ65bZZIfrs3O5gdPiW"
    "BhlT/pjmct8o1SPxfiV0TKDA92WQHfeus6mKboamDz5t6CDFSRRA2dPl+wA0HN4ZXyuBAmMJnq5OFujjTcP5aeB1"
    "FN4cIPu+dl3P76p90b4BPSEuyBMKRDlx7Q0QOlNYB8d8sbqETnAfd53v/REAuo9tiX5ryYgr0eF7lDoKg7zFlTmP"
    "AmlLOg5ArvgwwQvmbQXW82gms1yY9sZ5EKZtdZ0l4cpLLtjuuPd864/DoE7Bk6J5lhEVLkH8KOQTOSnB4j24GqDi"
    "CBXxoGn/IWzV49MSxvA5b+UvQdwZoPsOKnvYvQ8ZxaY8ypMI14M5XtujSlYYBQHySaTCrvtujgFPsfV9GORX2Ml+"
    "qE1rXvvBAS8BqFMQ7NWEJ6S3NDvsDkEdfZX1IB+XrfEYvTzafKujr4IAcdLIuMQqww3RDC1cx49iPkY7JnWEDned"
    "Dg/QKn09c3a6nr6KA2SrMxVcmvJYBojooh7WzhPLMyhVwUZLXVfs64fU1JeoeQw4QyJ4hFY19VUJICbR9ApdS6JU"
    "IwnTjPuBDHqoUk9Z0udN/ViAcBLR7EdL5YSGL37nKgHk78w8kRCxvurTR9S8FGG4mCd9GCN/TgNfRKU/lT+y/XZt"
    "Ujte04aRrXgpApb4VIX3YhAP/mjA+DpSHNPAiWH1fS/H63x+BUADTN5Hsd2uTdqc+XCvqpz7vFJihxvnpwGfAJ0A"
    "nQCdAJ0AnQCdAJ0AnWN2/A8Vv8SXWUlKSAAAAABJRU5ErkJggg=="
)


@pytest.mark.mediapipe
def test_handedness_convention_on_a_rendered_right_hand(hand_expert) -> None:
    """The Tasks landmarker labels a right hand on an ordinary (unmirrored) image "Right" (the
    legacy solution said "Left"): a crop at the body's right wrist keeps the full score, the
    same crop at the left wrist gets half of it, and on the mirror image it is the reverse."""
    import base64

    import cv2

    png = np.frombuffer(base64.b64decode(_RIGHT_HAND_PNG), np.uint8)
    small = cv2.imdecode(png, cv2.IMREAD_COLOR)
    small = np.ascontiguousarray(small[:, :, ::-1])
    canvas = np.empty((360, 480, 3), np.uint8)
    canvas[:] = small[0, 0]
    canvas[60:252, 200:392] = cv2.resize(small, (192, 192), interpolation=cv2.INTER_LINEAR)
    wrist = np.array([291.0, 230.0])  # bottom centre of the hand

    scores = {}
    for side in ("right", "left"):
        kp, conf = np.full((33, 2), -1000.0), np.zeros(33)
        w, e, pinky, index = (16, 14, 18, 20) if side == "right" else (15, 13, 17, 19)
        for i, xy in ((w, wrist), (e, wrist + (0, 180)), (index, wrist + (-5, -60)),
                      (pinky, wrist + (10, -55))):
            kp[i], conf[i] = xy, 0.9
        body = PartObservation("body", "mediapipe_pose", kp, conf)
        hand = hand_expert.observe_hand(canvas, body, side)
        assert hand is not None
        assert np.linalg.norm(hand.keypoints_2d[0] - wrist) < 15
        # Thumb tip on the image's left of the little finger's tip (back of a right hand).
        assert hand.keypoints_2d[4, 0] < hand.keypoints_2d[20, 0]
        scores[side] = hand.score
    assert scores["right"] > 0.7
    assert scores["left"] == pytest.approx(scores["right"] / 2)
    mirrored = np.ascontiguousarray(canvas[:, ::-1])
    box = (480 - 392.0, 60.0, 480 - 200.0, 252.0)
    assert hand_expert.observe_hand_in_box(mirrored, box).part == "left_hand"
    assert hand_expert.observe_hand_in_box(canvas, (200.0, 60.0, 392.0, 252.0)).part == "right_hand"


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry() -> None:
    assert {"mediapipe_pose", "mediapipe_hands", "mediapipe_face"} <= set(names("expert"))
    body = create("expert", "mediapipe_pose", max_people=2)
    assert isinstance(body, MediaPipeBodyExpert) and body.max_people == 2
    assert isinstance(create("expert", "mediapipe_face"), MediaPipeFaceExpert)
    with pytest.raises(FurpeError, match="no_such_expert"):
        create("expert", "no_such_expert")
    with pytest.raises(ValueError):
        register("expert", "mediapipe_pose", MediaPipeBodyExpert)

    class FileFaceExpert:
        """A stand-in for a wrapper reading another method's output files."""

        name = "test_file_faces"
        parts = ("face",)

        def __init__(self, offset: float = 0.0) -> None:
            self.offset = offset

        def observe(self, image, people):
            for person in people:
                person.parts["face"] = PartObservation(
                    "face", "mediapipe_face", np.full((478, 2), self.offset), np.ones(478),
                    expert=self.name,
                )
            return people

    class OnePerson:
        name = "test_one_person"
        parts = ("body",)

        def observe(self, image, people):
            kp = np.zeros((33, 2))
            people.append(PersonObservation({"body": PartObservation(
                "body", "mediapipe_pose", kp, np.ones(33), expert=self.name)}))
            return people

    register("expert", "test_file_faces", FileFaceExpert)
    try:
        chain = [OnePerson(), create("expert", "test_file_faces", offset=3.0)]
        people = run_experts(chain, np.zeros((32, 32, 3), np.uint8))
        assert len(people) == 1
        assert people[0].parts["face"].keypoints_2d[0, 0] == 3.0
        register("expert", "test_file_faces", FileFaceExpert, replace=True)
    finally:
        unregister("expert", "test_file_faces")


def test_a_hand_found_by_both_wrist_crops_is_kept_once():
    """Both crops found one physical hand: it stays only on the side whose handedness agrees
    (the higher score); two distinct hands are both kept."""

    rng = np.random.default_rng(0)
    hand = rng.uniform(100, 140, (21, 2))

    def obs(part, kp, score):
        return PartObservation(part, "mediapipe_hand", kp, np.full(21, score), score=score)

    same = PersonObservation({"left_hand": obs("left_hand", hand + 1.0, 0.45),
                              "right_hand": obs("right_hand", hand, 0.9)})
    drop_shared_hand(same)
    assert set(same.parts) == {"right_hand"}
    apart = PersonObservation({"left_hand": obs("left_hand", hand + 200.0, 0.45),
                               "right_hand": obs("right_hand", hand, 0.9)})
    drop_shared_hand(apart)
    assert set(apart.parts) == {"left_hand", "right_hand"}


@pytest.mark.parametrize("wrist_visibility, side, score", [(0.2, "left", 0.95),
                                                            (0.9, "right", 0.475)])
def test_a_hand_at_a_doubtful_wrist_takes_the_landmarkers_side(monkeypatch, wrist_visibility,
                                                                side, score):
    """The right wrist's crop finds a hand the landmarker is sure is a left hand: where the
    body barely sees that wrist (BlazePose often puts it on the other hand) the hand is the
    left one; where the body sees it well it stays the right one, its score halved."""
    from furpe.experts.tasks import HandLandmarks

    kp = np.zeros((33, 2))
    kp[[11, 12]] = [150, 100], [250, 100]  # shoulders
    kp[[13, 14]] = [120, 150], [280, 150]  # elbows
    kp[[15, 16]] = [100, 200], [300, 200]  # wrists
    kp[[17, 19]] = [95, 215], [105, 215]  # left pinky, index
    kp[[18, 20]] = [295, 215], [305, 215]  # right pinky, index
    conf = np.full(33, 0.9)
    conf[15], conf[16] = 0.0, wrist_visibility  # the left wrist is not looked at
    person = PersonObservation({"body": PartObservation("body", "mediapipe_pose", kp, conf)})
    uv = np.full((21, 2), 0.5) + np.linspace(0, 0.1, 21)[:, None]
    hand = HandLandmarks(uv, np.zeros((21, 3)), "left", 0.95)
    expert = MediaPipeHandExpert(whole_image=False, box_landmarks=False)
    for model in (expert._crop_model, expert._other_crop_model):
        monkeypatch.setattr(model, "process", lambda img: [hand])
    expert.observe(np.zeros((400, 400, 3), np.uint8), [person])
    hands = {p: o for p, o in person.parts.items() if p != "body"}
    assert set(hands) == {f"{side}_hand"}
    found = hands[f"{side}_hand"]
    assert found.score == pytest.approx(score)
    assert np.linalg.norm(found.keypoints_2d[0] - kp[16]) < 30  # at the right wrist


def test_face_mesh_to_ibug68_table_is_anatomical(anny_model):
    """The iBUG-68 table: each point is in the matching Face Mesh group, on the right side of
    the face (Anny's Face Mesh correspondences, facing the camera), brows above eyes above the
    mouth, upper lip above lower lip, and mirror pairs mirrored."""
    import torch

    T = C.FACE_TO_IBUG68
    groups = {range(17, 22): C.FACE_RIGHT_EYEBROW, range(22, 27): C.FACE_LEFT_EYEBROW,
              range(36, 42): C.FACE_RIGHT_EYE, range(42, 48): C.FACE_LEFT_EYE,
              range(48, 68): C.FACE_LIPS}
    for ibug_range, group in groups.items():
        for i in ibug_range:
            assert T[i] in group, (i, T[i])
    with torch.no_grad():
        out = anny_model(anny_model.neutral_params(1))
        face = anny_model.keypoints(out, "mediapipe_face")[0].numpy()
    p = {i: face[mp] for i, mp in T.items()}
    mid = face[C.FACE_NOSE_TIP, 0]
    x = {i: v[0] - mid for i, v in p.items()}
    for right, left in ((17, 26), (21, 22), (36, 45), (39, 42), (48, 54), (49, 53), (59, 55),
                        (60, 64), (37, 44), (41, 46)):
        assert x[right] < -0.005 and x[left] > 0.005, (right, left)  # subject's right: image left
        assert abs(x[right] + x[left]) < 0.01  # mirrored about the midline
    for centre in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66):
        assert abs(x[centre]) < 0.005, centre
    y = {i: v[1] for i, v in p.items()}  # y down
    assert max(y[i] for i in range(17, 27)) < min(y[i] for i in range(36, 48))
    assert max(y[i] for i in range(36, 48)) < y[30] < y[33] < min(y[i] for i in range(48, 68))
    assert y[51] < y[62] < y[66] < y[57] < y[8]
    assert abs(x[36]) > abs(x[39]) and abs(x[45]) > abs(x[42])  # outer corners further out
    assert p[30][2] == min(v[2] for v in p.values())  # the nose tip is closest to the camera


@pytest.mark.mediapipe
def test_a_hand_filling_its_box_is_found_in_a_larger_box() -> None:
    """The palm detector misses a hand cropped tight to its extent (as in FreiHAND's crops);
    ``observe_hand_in_box`` then looks again in a box ``retry_scale`` times larger. Without
    that retry, the hand network run on the box itself (``box_landmarks``) finds it too."""
    import base64

    import cv2

    png = np.frombuffer(base64.b64decode(_RIGHT_HAND_PNG), np.uint8)
    small = cv2.imdecode(png, cv2.IMREAD_COLOR)[:, :, ::-1]
    mask = np.abs(small.astype(int) - small[0, 0].astype(int)).sum(-1) > 30
    ys, xs = np.nonzero(mask)
    tight = np.ascontiguousarray(cv2.resize(
        small[ys.min():ys.max() + 1, xs.min():xs.max() + 1], (224, 224)))
    with MediaPipeHandExpert(retry_scale=1.0, box_landmarks=False) as once:
        assert once.observe_hand_in_box(tight) is None  # the premise
    for options in ({"box_landmarks": False}, {"retry_scale": 1.0}):
        with MediaPipeHandExpert(**options) as hands:
            hand = hands.observe_hand_in_box(tight)
        assert hand is not None and hand.part == "right_hand", options
        # The landmarks span the hand, which fills the image.
        assert np.ptp(hand.keypoints_2d, axis=0).min() > 0.5 * 224, options
