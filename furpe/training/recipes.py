"""The three training recipes as one module that computes a step's loss.

* ``standard``: the weighted sum of the label terms, plus feature distillation for the
  parts ``distill`` switches on.
* ``multiloss``: the weighted label terms summed per group (body, hands, face), each group
  weighted by a learned uncertainty, ``exp(-s_g) L_g + s_g`` (Kendall et al.); the ``s_g``
  are parameters the optimiser updates (FuRPE's code detached them).
* ``ema``: the standard terms on both views of each person, plus a consistency loss
  between the student on one view and the EMA teacher on the other, once the augmentation
  of each view is undone (the trainer moves the teacher after each step).

:class:`TrainingStep` holds the network and every trainable loss parameter (distillation
converters, log-variances), so that one DDP wrapper synchronises all their gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from furpe.bodymodels.base import BodyModel
from furpe.training.config import TrainConfig
from furpe.training.losses import (GROUPS, Canonical, Distiller, Supervision, consistency,
                                   group_of, label_boxes)
from furpe.networks.wholebody import WholeBodyNet


class TrainingStep(nn.Module):
    """``forward(batch, teacher=None) -> (loss, terms)``; ``terms`` are the unweighted
    values (detached) for logging."""

    def __init__(self, config: TrainConfig, model: BodyModel, net: WholeBodyNet,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.net = net
        object.__setattr__(self, "model", model)  # not a submodule (see Supervision)
        self.supervision = Supervision(model, config.network.input_size)
        parts = [p for p in ("body", "hands", "face") if getattr(config.distill, p)]
        self.distiller = Distiller(net, parts, config.distill.temperature, device) \
            if parts else None
        self.log_vars = nn.Parameter(torch.zeros(len(GROUPS))) \
            if config.recipe == "multiloss" else None
        self.canonical = Canonical(model) if config.recipe == "ema" else None

    def loss_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that are not the network's (converters)."""
        return [] if self.distiller is None else list(self.distiller.converters.parameters())

    def forward(self, batch: dict[str, torch.Tensor], teacher: WholeBodyNet | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        size = cfg.network.input_size
        boxes, valid = label_boxes(batch, size) if cfg.label_boxes else (None, None)
        features = {k.removeprefix("feature_"): v for k, v in batch.items()
                    if k.startswith("feature_")} or None
        out = self.net(batch.get("image"), batch["K"], boxes, valid, features=features)
        params = self.net.decode(out, batch["K"])
        terms = self.supervision(batch, out, params)
        weighted = {t: cfg.losses.weight(t) * v for t, v in terms.items()}
        if self.distiller is not None:
            for t, v in self.distiller(out, batch["image"]).items():
                terms[t] = v
                weighted[t] = cfg.distill.weight * v
        if self.log_vars is not None:
            total = terms["kp2d_body"].new_zeros(())
            for k, g in enumerate(GROUPS):
                group = [v for t, v in weighted.items() if group_of(t) == g]
                if group:
                    total = total + torch.exp(-self.log_vars[k]) * sum(group) + self.log_vars[k]
        else:
            total = sum(weighted.values())
        if teacher is not None:
            with torch.no_grad():
                t_out = teacher(batch.get("image"), batch["K"], boxes, valid,
                                features=features)
                t_params = teacher.decode(t_out, batch["K"])
            swap = torch.arange(len(batch["K"]), device=batch["K"].device) ^ 1
            canon = self.canonical
            s_c = canon(params, batch["flipped"], batch["roll"])
            t_c = canon(t_params, batch["flipped"], batch["roll"])
            t_c = {k: v[swap] for k, v in t_c.items()}
            lost = {n: torch.maximum(batch[f"lost_{n}"], batch[f"lost_{n}"][swap])
                    for n in self.model.blocks}
            for t, v in consistency(s_c, t_c, self.model, lost).items():
                terms[t] = v
                total = total + cfg.ema.consistency * v
        logged = {t: v.detach() for t, v in terms.items()}
        if self.log_vars is not None:
            for k, g in enumerate(GROUPS):
                logged[f"log_var_{g}"] = self.log_vars[k].detach().clone()  # before the step
        return total, logged
