"""Facial blendshapes from the face expert drive the body model's facial actions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from furpe.config import ReconstructConfig
from furpe.experts.base import PartObservation, PersonObservation
from furpe.fitting.fit import FitConfig, blendshape_targets
from furpe.metrics import displacement_error
from furpe.pipeline import Reconstructor
from furpe.synthetic import crop_part, render_person, sample_params

EXPRESSION = {"jawOpen": 0.6, "mouthSmileLeft": 0.7, "mouthSmileRight": 0.7,
              "browInnerUp": 0.6}


def test_blendshape_targets_follow_the_action_names(anny_model) -> None:
    labels = anny_model.blocks["facial_actions"].labels
    face = PartObservation("face", "mediapipe_face", np.zeros((478, 2)), np.ones(478),
                           blendshapes={"jawOpen": 0.7, "notAnAction": 0.9})
    people = [PersonObservation({"face": face}), PersonObservation({})]
    t = blendshape_targets(anny_model, people)
    assert t is not None and t.block == "facial_actions"
    k = labels.index("jawOpen")
    assert t.values[0, k] == pytest.approx(0.7) and t.mask[0].sum() == 1 and t.mask[0, k] == 1
    assert t.mask[1].sum() == 0
    assert blendshape_targets(anny_model, [PersonObservation({})]) is None


BLENDSHAPE_WEIGHT = 1e-2


@pytest.mark.slow
@pytest.mark.mediapipe
@pytest.mark.xfail(strict=True, reason=(
    "known gap: FaceLandmarker's blendshapes on Anny renders include spurious activations "
    "(eye look, squint, brow down, pucker ~0.2-0.4 at rest) and read Anny's open jaw as "
    "mouthLowerDown; measured expression error 1.78 mm with them vs 1.68 mm without (2.34 mm "
    "at rest), so "
    "fit.w_blendshapes is 0 by default until they help"))
def test_blendshapes_bring_the_fitted_expression_closer(anny_model) -> None:
    """A head crop of a render with a known expression: the expression fitted with the
    expert's blendshapes is closer to the truth (what it does to the face, in mm) than
    without them, and than the face at rest."""
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
