"""Facial blendshapes from the face expert drive the body model's facial actions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from furpe.bodymodels.correspondences import (BlendshapeReadout, load_readout, read_readout,
                                              save_readout)
from furpe.config import ReconstructConfig
from furpe.experts.base import PartObservation, PersonObservation
from furpe.fitting.fit import FitConfig, blendshape_targets
from furpe.metrics import displacement_error
from furpe.pipeline import Reconstructor
from furpe.synthetic import crop_part, render_person, sample_params

EXPRESSION = {"jawOpen": 0.6, "mouthSmileLeft": 0.7, "mouthSmileRight": 0.7,
              "browInnerUp": 0.6}


def test_blendshape_targets_read_the_scores_as_actions(anny_model) -> None:
    """The shipped read-out turns an open-jaw reading into Anny's jawOpen (and a neutral
    reading into a closed jaw), masked by its confidence, for faces that have scores only."""
    labels = anny_model.blocks["facial_actions"].labels
    k = labels.index("jawOpen")

    def face(scores):
        return PersonObservation({"face": PartObservation(
            "face", "mediapipe_face", np.zeros((478, 2)), np.ones(478), blendshapes=scores)})

    people = [face({"jawOpen": 0.9, "notAScore": 0.9}), face({"jawOpen": 0.0}),
              PersonObservation({})]
    t = blendshape_targets(anny_model, people)
    assert t is not None and t.block == "facial_actions"
    assert t.values[0, k] > 0.5 and t.values[1, k] < 0.1
    readout = load_readout("anny")
    kept = [labels.index(n) for n in readout.outputs]
    assert "jawOpen" in readout.outputs and 0 < t.mask[0, k] <= 1
    assert set(torch.nonzero(t.mask[0]).flatten().tolist()) == set(kept)
    assert t.mask[2].sum() == 0
    assert blendshape_targets(anny_model, [PersonObservation({})]) is None


def test_a_readout_file_round_trips(tmp_path) -> None:
    r = BlendshapeReadout(("a", "b"), ("x",), np.array([[2.0, -1.0, 0.1]]), np.array([0.5]))
    save_readout(tmp_path / "m.npz", r)
    back = read_readout(tmp_path / "m.npz")
    assert back.inputs == r.inputs and back.outputs == r.outputs
    assert back({"a": 0.3})[0] == pytest.approx(0.7) and back({"b": 1.0})[0] == 0.0


BLENDSHAPE_WEIGHT = FitConfig().w_blendshapes  # the default


@pytest.mark.slow
@pytest.mark.mediapipe
def test_blendshapes_bring_the_fitted_expression_closer(anny_model) -> None:
    """A head crop of a render with a known expression: the expression fitted with the
    expert's blendshapes is closer to the truth (what it does to the face, in mm) than
    without them, and than the face at rest (measured: 1.24 mm with them, 1.68 without,
    2.34 at rest)."""
    labels = list(anny_model.blocks["facial_actions"].labels)
    params = sample_params(anny_model, np.random.default_rng(8), distance=2.0)
    truth = torch.zeros(1, len(labels))
    for name, value in EXPRESSION.items():
        truth[0, labels.index(name)] = value
    params["facial_actions"] = truth
    person = render_person(anny_model, params, 640, 640)
    crop, K = crop_part(person, anny_model.part_vertices["face"])
    face = anny_model.part_vertices["face"]
    with torch.no_grad():
        gt_rest = anny_model(anny_model.at_rest(params, "face")).vertices[0].numpy()[face]
    errors = {}
    for w in (0.0, BLENDSHAPE_WEIGHT):
        config = ReconstructConfig(
            device="cpu", fit=FitConfig(w_blendshapes=w),
            experts=("mediapipe_pose", "mediapipe_hands", "mediapipe_face"))
        frame = Reconstructor(config, body_model=anny_model).reconstruct_part(crop, "face", K=K)
        fitted = frame.people[0]
        fp = {k: torch.as_tensor(v)[None] for k, v in fitted.params.items()}
        with torch.no_grad():
            rest = anny_model(anny_model.at_rest(fp, "face")).vertices[0].numpy()[face]
        errors[w] = displacement_error(fitted.vertices[face], rest, person.vertices[face], gt_rest)
    at_rest = displacement_error(gt_rest, gt_rest, person.vertices[face], gt_rest)
    print(f"\nexpression error (mm): at rest {at_rest:.2f}, without blendshapes "
          f"{errors[0.0]:.2f}, with {errors[BLENDSHAPE_WEIGHT]:.2f}")
    with_bs = errors[BLENDSHAPE_WEIGHT]
    assert with_bs < 0.8 * errors[0.0]
    assert with_bs < 0.8 * at_rest


def test_the_blendshape_term_initialises_and_pulls_the_named_actions(anny_model) -> None:
    from furpe.core.camera import intrinsics
    from furpe.fitting.fit import Fitter
    from furpe.synthetic import exact_observations

    K = intrinsics(480, 480)
    params = sample_params(anny_model, np.random.default_rng(3), distance=3.0)
    with torch.no_grad():
        (person,) = exact_observations(anny_model, anny_model(params), K)
    person.parts["face"].blendshapes = {"jawOpen": 0.9}
    k = anny_model.blocks["facial_actions"].labels.index("jawOpen")
    jaw = {}
    for w in (0.0, 1.0):
        config = FitConfig(iters_global=5, iters_body=5, iters_parts=10, w_blendshapes=w)
        fit = Fitter(anny_model, config).fit([person], K)
        jaw[w] = float(fit.params["facial_actions"][0, k])
    assert jaw[0.0] < 0.3 < 0.6 < jaw[1.0], jaw  # the true jaw is closed
