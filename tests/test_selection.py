"""The pseudo ground-truth selection scheme, alone and inside the pipeline."""
from __future__ import annotations

import math

import numpy as np
import pytest

from furpe.selection import DEFAULT_THRESHOLDS, SelectionScheme, Thresholds
from furpe.synthetic import make_person


def test_accepts_a_good_part():
    v = SelectionScheme().judge("left_hand", True, detector=0.9, residual=0.03, plausibility=1.0)
    assert v.observed and v.accepted and v.reason == ""
    assert v.scores["score"] == pytest.approx(0.9 * 1.0 * (1 - 0.03 / 0.12))
    assert set(v.scores) == {"detector", "residual", "plausibility", "score"}


@pytest.mark.parametrize("kwargs,needle", [
    (dict(detector=0.3, residual=0.01, plausibility=1.0), "detector confidence"),
    (dict(detector=0.9, residual=0.2, plausibility=1.0), "reprojection residual"),
    (dict(detector=0.9, residual=math.inf, plausibility=1.0), "reprojection residual"),
    (dict(detector=0.9, residual=math.nan, plausibility=1.0), "reprojection residual"),
    (dict(detector=0.9, residual=0.01, plausibility=0.2), "implausible pose"),
])
def test_rejects_with_a_reason(kwargs, needle):
    v = SelectionScheme().judge("face", True, **kwargs)
    assert v.observed and not v.accepted
    assert needle in v.reason
    assert 0.0 <= v.scores["score"] <= 1.0 or math.isnan(v.scores["score"])


def test_thresholds_are_inclusive_and_per_part():
    s = SelectionScheme()
    th = DEFAULT_THRESHOLDS["body"]
    assert s.judge("body", True, th.min_detector, th.max_residual, th.min_plausibility).accepted
    assert not s.judge("body", True, th.min_detector - 1e-3, 0.0, 1.0).accepted
    # a residual that passes for a hand fails for the body
    assert s.judge("left_hand", True, 0.9, 0.08, 1.0).accepted
    assert not s.judge("body", True, 0.9, 0.08, 1.0).accepted


def test_several_reasons_are_joined():
    v = SelectionScheme().judge("right_hand", True, detector=0.1, residual=1.0, plausibility=0.0)
    assert not v.accepted and v.reason.count(";") == 2


def test_not_observed():
    v = SelectionScheme().judge("face", False, 0.0, math.inf, 1.0)
    assert not v.observed and not v.accepted and v.reason == "not observed" and v.scores == {}


def test_zero_residual_limit_rejects_everything_observed():
    """A limit of 0 is a valid (strict) threshold, not a division by zero."""
    s = SelectionScheme({**DEFAULT_THRESHOLDS,
                         "left_hand": Thresholds(min_detector=0.0, max_residual=0.0)})
    v = s.judge("left_hand", True, detector=0.9, residual=0.01, plausibility=1.0)
    assert not v.accepted and "reprojection residual" in v.reason
    assert v.scores["score"] == 0.0


def test_rejected_hands_are_reset_to_neutral(reconstructor, anny_model):
    """With a (nearly) zero hand residual limit every observed hand is rejected and reset."""
    strict = dict(DEFAULT_THRESHOLDS)
    strict["left_hand"] = Thresholds(min_detector=0.0, max_residual=1e-9)
    strict["right_hand"] = Thresholds(min_detector=0.0, max_residual=1e-9)
    rec = reconstructor
    old = rec.selection
    rec.selection = SelectionScheme(strict)
    try:
        sp = make_person(anny_model, 1, 640, 640, distance=2.6)
        frame = rec.reconstruct_image(sp.image)
    finally:
        rec.selection = old
    person = frame.people[0]
    observed = [h for h in ("left_hand", "right_hand") if person.parts[h].observed]
    assert observed, "the experts saw no hand of synthetic person 1"
    for hand in ("left_hand", "right_hand"):
        part = person.parts[hand]
        assert not part.accepted
        assert part.reason  # "not observed" or the residual
        assert np.all(person.params[f"{hand}_pose"] == 0.0)
    for hand in observed:
        assert "reprojection residual" in person.parts[hand].reason
    # the face and body are untouched by the hand thresholds
    assert person.parts["body"].accepted
    assert np.abs(person.params["body_pose"]).max() > 0.01
    # the mesh is the one of the reset parameters
    import torch

    with torch.no_grad():
        out = anny_model({k: torch.as_tensor(v)[None] for k, v in person.params.items()})
    np.testing.assert_allclose(out.vertices[0].numpy(), person.vertices, atol=1e-4)
