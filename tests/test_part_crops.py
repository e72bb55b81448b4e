"""Part-only input (a head or a hand crop): experts on a given box, fit from that part alone.

A part's accuracy is judged against the same fit with that part put back at rest
(``model.at_rest``: what the fit scores without the part's expert).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from furpe.core.camera import project
from furpe.core.errors import FurpeError, NoPersonError
from furpe.metrics import displacement_error, pa_pve
from furpe.synthetic import crop_part, make_person


@pytest.fixture(scope="module")
def person(anny_model):
    return make_person(anny_model, seed=1, width=640, height=640, distance=1.6)


@pytest.fixture(scope="module")
def face_person(anny_model):
    """Seed 8 at 2 m: a clear expression (jaw open 0.38, left eye closed 0.35; the true face is
    2.1 mm PA-PVE from the same face at rest). Seed 1's expression is too small to tell a
    fitted face from one at rest (0.2 mm)."""
    return make_person(anny_model, seed=8, width=640, height=640, distance=2.0)


def _at_rest(model, params: dict, part: str):
    """The model output of a fitted person (unbatched parameters) with only ``part``'s blocks
    put back to their neutral values."""
    p = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32)[None] for k, v in params.items()}
    with torch.no_grad():
        return model(model.at_rest(p, part))


def test_head_crop_gives_an_accurate_face(anny_model, reconstructor, face_person):
    person = face_person
    idx = anny_model.part_vertices["face"]
    crop, K = crop_part(person, idx)
    frame = reconstructor.reconstruct_part(crop, "face", K=K)
    (p,) = frame.people
    assert p.parts["face"].observed and not p.parts["body"].observed
    assert p.parts["face"].scores["detector"] > 0.5
    fit, gt = p.vertices[idx], person.vertices[idx]
    rest = _at_rest(anny_model, p.params, "face").vertices[0].numpy()[idx]
    with torch.no_grad():
        gt_rest = anny_model(anny_model.at_rest(person.params, "face")).vertices[0].numpy()[idx]
    err, base = pa_pve(fit, gt), pa_pve(rest, gt)
    expr = displacement_error(fit, rest, gt, gt_rest)
    expr_base = displacement_error(rest, rest, gt, gt_rest)  # the true expression's size
    print(f"\nface from a {crop.shape[0]} px head crop: PA-PVE {err:.2f} mm (at rest "
          f"{base:.2f} mm), expression error {expr:.2f} mm (at rest {expr_base:.2f} mm)")
    assert err < 0.6 * base  # measured 0.69 / 2.14 mm (0.32)
    assert expr < 0.5 * expr_base  # measured 0.22 / 1.60 mm (0.14)
    # Placed in the crop's camera frame: the face lands within 15 % of its true depth.
    z, z_gt = p.vertices[idx, 2].mean(), person.vertices[idx, 2].mean()
    assert abs(z - z_gt) < 0.15 * z_gt
    assert set(frame.timings) >= {"experts", "fit", "total"}


@pytest.fixture(scope="module")
def hand_crop(anny_model, reconstructor, person):
    """The right-hand crop of seed 1 at 1.6 m, its intrinsics and the part-only fit."""
    crop, K = crop_part(person, anny_model.part_vertices["right_hand"])
    return crop, K, reconstructor.reconstruct_part(crop, "right_hand", K=K)


def test_hand_crop_fits_the_requested_hand(anny_model, hand_crop):
    crop, K, frame = hand_crop
    (p,) = frame.people
    assert p.parts["right_hand"].observed
    assert not p.parts["left_hand"].observed and not p.parts["body"].observed
    kps = p.keypoints_2d["right_hand"]
    assert kps.observed.shape == (21, 2)
    # The fitted hand projects onto the observed landmarks (median within 6 % of the crop),
    # much closer than the same fit with the fingers at rest does.
    d = np.linalg.norm(kps.fitted - kps.observed, axis=1)
    rest = _at_rest(anny_model, p.params, "right_hand")
    with torch.no_grad():
        uv = project(anny_model.keypoints(rest, "mediapipe_hand_right")[0],
                     torch.as_tensor(K, dtype=torch.float32)).numpy()
    d_rest = np.linalg.norm(uv - kps.observed, axis=1)
    print(f"\nhand crop reprojection, median: fitted {np.median(d):.1f} px, "
          f"at rest {np.median(d_rest):.1f} px")
    assert np.median(d) < 0.06 * crop.shape[0], np.median(d)
    assert np.median(d) < 0.5 * np.median(d_rest)  # measured 1.0 / 4.6 px


@pytest.mark.xfail(strict=True, reason=(
    "known limit (README, Known limits): fitted to MediaPipe Hands landmarks, the fingers "
    "score worse in 3D than the same fit with the hand at rest (measured PA-PVE 19.0 mm "
    "fitted, 15.4 mm at rest). Strict: when the hand beats its rest pose this fails, and the "
    "xfail should go"))
def test_hand_crop_beats_the_hand_at_rest(anny_model, person, hand_crop):
    _, _, frame = hand_crop
    (p,) = frame.people
    idx = anny_model.part_vertices["right_hand"]
    rest = _at_rest(anny_model, p.params, "right_hand").vertices[0].numpy()[idx]
    err, base = pa_pve(p.vertices[idx], person.vertices[idx]), pa_pve(rest, person.vertices[idx])
    print(f"\nhand from a hand crop: PA-PVE {err:.1f} mm (at rest {base:.1f} mm)")
    assert err < 0.8 * base


def test_part_crop_errors(reconstructor):
    blank = np.full((128, 128, 3), 90, dtype=np.uint8)
    with pytest.raises(NoPersonError, match="no face found"):
        reconstructor.reconstruct_part(blank, "face")
    with pytest.raises(FurpeError, match="part-only reconstruction needs"):
        reconstructor.reconstruct_part(blank, "torso")
