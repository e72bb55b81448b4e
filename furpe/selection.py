"""Pseudo ground-truth selection: score every part estimate and accept or reject it.

Each observed part gets three scores after the whole-body fit:

* ``detector``: the expert's own confidence (0..1);
* ``residual``: the median 2D distance between the observed landmarks and the fitted model's
  projected landmarks, as a fraction of the part's observed size (0 = perfect agreement);
* ``plausibility``: 1 when every joint rotation of the part is inside the pose prior's range,
  falling towards 0 beyond it.

A part is accepted when ``detector >= min_detector``, ``residual <= max_residual`` and
``plausibility >= min_plausibility`` (thresholds per part, below). The combined ``score`` is
``detector * plausibility * max(0, 1 - residual / max_residual)``, in [0, 1]. A rejected hand or
face is reset to its neutral pose (open hand; neutral expression, eyes straight) and flagged;
a rejected body flags the whole person as unreliable but keeps its fit, since every other part
hangs on it. The same scheme selects pseudo labels for training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from furpe.bodymodels.base import BodyModel
from furpe.core.vocab import DETAIL_PARTS, PARTS
from furpe.experts.base import PersonObservation
from furpe.fitting.fit import FitOutput
from furpe.results import PartResult


@dataclass(frozen=True)
class Thresholds:
    """Acceptance thresholds of one part."""

    min_detector: float
    max_residual: float
    min_plausibility: float = 0.5


#: The documented default thresholds. Residuals are fractions of the part's observed size
#: (body height in the image, hand or face landmark extent).
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "body": Thresholds(min_detector=0.5, max_residual=0.05),
    "left_hand": Thresholds(min_detector=0.5, max_residual=0.12),
    "right_hand": Thresholds(min_detector=0.5, max_residual=0.12),
    "face": Thresholds(min_detector=0.5, max_residual=0.06),
}


@dataclass
class SelectionScheme:
    """Scores part estimates and decides which are kept."""

    thresholds: dict[str, Thresholds] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def judge(
        self, part: str, observed: bool, detector: float, residual: float, plausibility: float
    ) -> PartResult:
        """The verdict on one part estimate."""
        if not observed:
            return PartResult(part, observed=False, accepted=False, scores={},
                              reason="not observed")
        th = self.thresholds[part]
        if th.max_residual > 0:
            ratio = residual / th.max_residual
        else:
            ratio = 0.0 if residual <= 0 else math.inf
        score = detector * plausibility * max(0.0, 1.0 - ratio)
        scores = {"detector": float(detector), "residual": float(residual),
                  "plausibility": float(plausibility), "score": float(score)}
        reasons = []
        if detector < th.min_detector:
            reasons.append(f"detector confidence {detector:.2f} < {th.min_detector}")
        if not residual <= th.max_residual:
            reasons.append(f"reprojection residual {residual:.3f} > {th.max_residual}")
        if plausibility < th.min_plausibility:
            reasons.append(f"implausible pose ({plausibility:.2f} < {th.min_plausibility})")
        return PartResult(part, observed=True, accepted=not reasons, scores=scores,
                          reason="; ".join(reasons))


@dataclass
class Selection:
    """The selection stage's output for a batch of people.

    Attributes:
        verdicts: per person, the :class:`PartResult` of every part.
        params: the fitted parameters with every rejected or unobserved hand and face put
            back to its neutral pose (a new dict; the fit's own parameters are unchanged).
        changed: whether ``params`` differ from the fit's.
    """

    verdicts: list[dict[str, PartResult]]
    params: dict[str, torch.Tensor]
    changed: bool


def select(scheme: SelectionScheme, model: BodyModel, people: Sequence[PersonObservation],
           fit: FitOutput, reset: bool = True) -> Selection:
    """Judge every part of every person; with ``reset``, the parameters to keep."""
    batch = len(people)
    verdicts = []
    for b, person in enumerate(people):
        per = {}
        for part in PARTS:
            obs = person.get(part)
            observed = obs is not None and part in fit.targets and bool(
                fit.targets[part].present[b])
            per[part] = scheme.judge(
                part, observed,
                detector=float(obs.score) if obs is not None else 0.0,
                residual=float(fit.residual[part][b]) if observed else float("inf"),
                plausibility=float(fit.plausibility.get(part, torch.ones(batch))[b]),
            )
        verdicts.append(per)
    params = dict(fit.params)
    changed = False
    if reset:
        for part in DETAIL_PARTS:
            rejected = torch.tensor([not v[part].accepted for v in verdicts],
                                    device=fit.params["transl"].device)
            if not bool(rejected.any()):
                continue
            params = replace_part(model, params, part, rejected, model.at_rest(params, part))
            changed = True
    return Selection(verdicts, params, changed)


def replace_part(model: BodyModel, params: dict[str, torch.Tensor], part: str,
                 rows: torch.Tensor, values: Mapping[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """``params`` with the blocks of ``part`` taken from ``values`` in the people where
    ``rows`` (B,) is true (a new dict)."""
    out = dict(params)
    for name, blk in model.blocks.items():
        if blk.part == part:
            shape = (-1,) + (1,) * (out[name].dim() - 1)
            out[name] = torch.where(rows.view(shape), values[name].to(out[name]), out[name])
    return out
