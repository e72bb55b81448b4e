"""Part-only input (a head or a hand crop): experts on a given box, fit from that part alone."""
from __future__ import annotations

import numpy as np
import pytest

from furpe.errors import FurpeError, NoPersonError
from furpe.evaluation.metrics import pa_pve
from furpe.synthetic import crop_part, make_person


@pytest.fixture(scope="module")
def person(anny_model):
    return make_person(anny_model, seed=1, width=640, height=640, distance=1.6)


def test_head_crop_gives_an_accurate_face(anny_model, reconstructor, person):
    idx = anny_model.part_vertices["face"]
    crop, K = crop_part(person, idx)
    frame = reconstructor.reconstruct_part(crop, "face", K=K)
    (p,) = frame.people
    assert p.parts["face"].observed and not p.parts["body"].observed
    assert p.parts["face"].scores["detector"] > 0.5
    err = pa_pve(p.vertices[idx], person.vertices[idx])
    print(f"\nface from a {crop.shape[0]} px head crop: PA-PVE {err:.2f} mm")
    assert err < 4.0  # measured 1.1 mm
    # Placed in the crop's camera frame: the face lands within 15 % of its true depth.
    z, z_gt = p.vertices[idx, 2].mean(), person.vertices[idx, 2].mean()
    assert abs(z - z_gt) < 0.15 * z_gt
    assert set(frame.timings) >= {"experts", "fit", "total"}


def test_hand_crop_fits_the_requested_hand(anny_model, reconstructor, person):
    idx = anny_model.part_vertices["right_hand"]
    crop, K = crop_part(person, idx)
    frame = reconstructor.reconstruct_part(crop, "right_hand", K=K)
    (p,) = frame.people
    assert p.parts["right_hand"].observed
    assert not p.parts["left_hand"].observed and not p.parts["body"].observed
    kps = p.keypoints_2d["right_hand"]
    assert kps.observed.shape == (21, 2)
    # The fitted hand projects onto the observed landmarks (median within 6 % of the crop).
    d = np.linalg.norm(kps.fitted - kps.observed, axis=1)
    assert np.median(d) < 0.06 * crop.shape[0], np.median(d)


def test_part_crop_errors(reconstructor):
    blank = np.full((128, 128, 3), 90, dtype=np.uint8)
    with pytest.raises(NoPersonError, match="no face found"):
        reconstructor.reconstruct_part(blank, "face")
    with pytest.raises(FurpeError, match="part-only reconstruction needs"):
        reconstructor.reconstruct_part(blank, "torso")
