"""The training losses: supervision from labels, feature distillation, EMA consistency.

Every term is a scalar named ``<kind>_<part>`` and belongs to one group (``body``,
``hands``, ``face``: :func:`group_of`), which the multi-loss recipe weighs with a learned
uncertainty each. Part masks come from the loader: a part whose label is not selected
contributes nothing, and neither does a block whose flip has no mirror.

* ``param_<part>``: body-model parameters against the label's: rotations by geodesic
  distance (radians, mean over joints), coefficients by squared error; ``transl_body``: the
  translation (x, y in metres and log depth, L1).
* ``kp2d_<part>``: projected keypoints against the label keypoints in the crop, L1 as a
  fraction of the crop side, weighted by the keypoints' confidence (undetected keypoints
  weigh nothing, unlike FuRPE's code, see the method notes).
* ``kp3d_<part>``: the part's keypoints, centred on their mean, against those of the
  label's parameters (metres, L1).
* ``box_<part>``: the attention box head against the box of the label keypoints.
* ``prior_shape`` / ``prior_face``: pull shape and facial coefficients towards neutral.
* ``distill_<part>``: KL divergence between the softmax of the frozen expert network's
  feature and of the student's feature mapped by a trained converter (summed over the
  feature, averaged over the batch; the converter is trained and the student's encoder
  gets the gradient, which FuRPE's code intended but never did).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from furpe.bodymodels.base import BodyModel, KeypointSampler
from furpe.bodymodels.mirror import param_mirror_plan
from furpe.core.rotations import geodesic, mirror_rotmat
from furpe.core.vocab import PARTS
from furpe.networks.params import from_model_params, to_model_params
from furpe.networks.wholebody import CROP_PARTS, WholeBodyNet, sample_crops
from furpe.training.data import PART_CONVENTIONS

GROUPS = ("body", "hands", "face")
#: The group of each block part (ParamBlock.part) and keypoint part.
_GROUP = {"global": "body", "body": "body", "shape": "body", "left_hand": "hands",
          "right_hand": "hands", "hands": "hands", "face": "face"}
#: Box side over the extent of each part's label keypoints.
BOX_SCALE = {"left_hand": 1.8, "right_hand": 1.8, "face": 1.5}


def group_of(term: str) -> str:
    """The group (``body``, ``hands``, ``face``) of a term named ``<kind>_<part>``."""
    part = term.split("_", 1)[1]
    return _GROUP[part]


def _mask(batch: dict[str, torch.Tensor], part: str) -> torch.Tensor:
    if part in ("global", "body", "shape"):
        return batch["mask_body"]
    return batch[f"mask_{part}"]


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def label_boxes(batch: dict[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label keypoints' box of each crop part, (B, 3, 3) (cx, cy, side) in normalised
    crop coordinates, and (B, 3) whether it exists (at least 3 keypoints)."""
    boxes, valid = [], []
    for part in CROP_PARTS:
        kp, conf = batch[f"keypoints_{part}"], batch[f"confidence_{part}"] > 0
        big = torch.where(conf[..., None], kp, torch.full_like(kp, 1e9))
        small = torch.where(conf[..., None], kp, torch.full_like(kp, -1e9))
        lo, hi = big.min(1).values, small.max(1).values
        centre = (lo + hi) / 2
        side = (hi - lo).max(1).values.clamp_min(size * 0.04) * BOX_SCALE[part]
        ok = conf.sum(1) >= 3
        norm = torch.cat([(centre + 0.5) / size * 2 - 1, (side / size * 2)[:, None]], 1)
        boxes.append(torch.where(ok[:, None], norm, torch.zeros_like(norm)))
        valid.append(ok.to(kp.dtype))
    return torch.stack(boxes, 1), torch.stack(valid, 1)


class Supervision(nn.Module):
    """The label terms (see the module docstring); ``weights`` name them by kind and part."""

    def __init__(self, model: BodyModel, crop_size: int) -> None:
        super().__init__()
        # a plain attribute, not a submodule: the body model is neither trained, checkpointed
        # nor broadcast by DDP
        object.__setattr__(self, "model", model)
        self.size = crop_size
        self.sampler = KeypointSampler(model, [PART_CONVENTIONS[p] for p in PARTS])
        self.blocks = {n: b for n, b in model.blocks.items() if n != "transl"}

    def keypoints(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kps = self.sampler(params)
        return {p: kps[PART_CONVENTIONS[p]] for p in PARTS}

    def forward(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``out``: the network's forward; ``params``: its decoded, merged parameters."""
        terms: dict[str, torch.Tensor] = {}
        target = from_model_params({n: batch[f"params_{n}"] for n in self.blocks}, self.blocks)
        per_part: dict[str, list[torch.Tensor]] = {}
        for name, blk in self.blocks.items():
            w = _mask(batch, blk.part) * (1 - batch[f"lost_{name}"])
            if blk.kind == "rotation":
                err = geodesic(params[name], target[name]).mean(1)
            else:
                err = (params[name] - target[name]).pow(2).mean(1)
            per_part.setdefault(blk.part, []).append(_weighted_mean(err, w))
        for part, errs in per_part.items():
            terms[f"param_{part}"] = torch.stack(errs).sum()
        t, tt = params["transl"], batch["params_transl"]
        terr = (t[:, :2] - tt[:, :2]).abs().sum(1) + (
            torch.log(t[:, 2].clamp_min(1e-2)) - torch.log(tt[:, 2].clamp_min(1e-2))).abs()
        terms["transl_body"] = _weighted_mean(terr, batch["mask_body"])

        model_params = to_model_params(params)
        pred = self.keypoints(model_params)
        with torch.no_grad():
            label_params = {n: batch[f"params_{n}"] for n in self.model.blocks}
            truth = self.keypoints(label_params)
        K = batch["K"]
        for part in PARTS:
            X = pred[part]
            uv = (X @ K.transpose(1, 2))
            uv = uv[..., :2] / uv[..., 2:].clamp_min(1e-3)
            conf = batch[f"confidence_{part}"].clamp(0, 1)
            err = (uv - batch[f"keypoints_{part}"]).abs().sum(-1) / self.size
            terms[f"kp2d_{part}"] = (err * conf).sum() / conf.sum().clamp_min(1.0)
            a = X - X.mean(1, keepdim=True)
            b = truth[part] - truth[part].mean(1, keepdim=True)
            err3 = (a - b).abs().sum(-1).mean(1)
            terms[f"kp3d_{part}"] = _weighted_mean(err3, batch[f"mask_{part}"])
        if "boxes" in out:
            boxes, valid = label_boxes(batch, self.size)
            err = (out["boxes"] - boxes).abs().sum(-1)
            for k, part in enumerate(CROP_PARTS):
                terms[f"box_{part}"] = _weighted_mean(err[:, k], valid[:, k])
        shape = [n for n, b in self.blocks.items() if b.part == "shape"]
        face = [n for n, b in self.blocks.items() if b.part == "face" and b.kind != "rotation"]
        terms["prior_shape"] = sum(((params[n] - self.blocks[n].neutral(1).to(t))
                                    .pow(2).mean() for n in shape), t.new_zeros(()))
        terms["prior_face"] = sum((params[n].pow(2).mean() for n in face), t.new_zeros(()))
        return terms


#: The expert network each distilled part learns from, and which crop of the forward it sees.
TEACHERS = {"body": ("pose_heavy", None), "hands": ("hand", ("left_hand", "right_hand")),
            "face": ("face", ("face",))}


class Distiller(nn.Module):
    """Per-part feature distillation from the frozen expert networks (see the module
    docstring). ``parts``: which of ``body``, ``hands``, ``face``."""

    def __init__(self, net: WholeBodyNet, parts: list[str], temperature: float = 1.0,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        from furpe.experts.tflite import expert_network

        self.parts = [p for p in parts if p == "body" or net.config.parts]
        self.temperature = temperature
        #: The frozen experts: a plain dict, so they are neither trained nor checkpointed.
        self.teachers: dict[str, nn.Module] = {}
        self.converters = nn.ModuleDict()
        students = {"body": net.body_encoder.dim}
        if net.config.parts:
            students.update(hands=net.hand.encoder.dim, face=net.head.encoder.dim)
        for part in self.parts:
            teacher = expert_network(TEACHERS[part][0]).eval().to(device)
            for p in teacher.parameters():
                p.requires_grad_(False)
            size = teacher.input_size
            with torch.no_grad():
                probe = torch.zeros(1, 3, size, size, device=device)
                dim = int(teacher.features(probe)["feature"].shape[1])
            self.teachers[part] = teacher
            self.converters[part] = nn.Sequential(nn.Linear(students[part], dim), nn.ReLU(),
                                                  nn.Linear(dim, dim))

    def forward(self, out: dict[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {}
        T = self.temperature
        for part in self.parts:
            teacher = self.teachers[part]
            size = teacher.input_size
            crops = TEACHERS[part][1]
            pairs = []
            if crops is None:
                full = torch.tensor([[0.0, 0.0, 2.0]], device=image.device).expand(len(image), 3)
                pairs.append((out["feature_body"], sample_crops(image, full, size)))
            else:
                for c in crops:
                    crop = out[f"crop_{c}"]
                    if crop.shape[-1] != size:
                        crop = nn.functional.interpolate(crop, size=(size, size),
                                                         mode="bilinear", align_corners=False)
                    pairs.append((out[f"feature_{c}"], crop))
            losses = []
            for student, crop in pairs:
                with torch.no_grad():
                    target = teacher.features(crop)["feature"]
                logp = torch.log_softmax(self.converters[part](student) / T, -1)
                q = torch.softmax(target / T, -1)
                losses.append((q * (torch.log(q.clamp_min(1e-12)) - logp)).sum(-1).mean() * T * T)
            terms[f"distill_{part}"] = torch.stack(losses).mean()
        return terms


# -- the EMA recipe ----------------------------------------------------------------------


def ema_decay(step: int, total: int, base: float) -> float:
    """BYOL's cosine schedule: ``base`` at step 0, rising to 1 at ``total``."""
    return 1 - (1 - base) * (np.cos(np.pi * min(step, total) / max(total, 1)) + 1) / 2


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher <- decay teacher + (1 - decay) student`` over the floating-point state only
    (parameters and float buffers such as batch-norm statistics); integer buffers (e.g.
    batch-norm step counts) are copied."""
    s_state = student.state_dict()
    for name, t in teacher.state_dict().items():
        s = s_state[name]
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` in inference mode."""
    teacher = copy.deepcopy(student).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Canonical:
    """Undoes the loader's augmentation on decoded parameters: the flip (mirror again) and
    the roll about the optical axis, so that two views of one person compare."""

    def __init__(self, model: BodyModel) -> None:
        self.plan = {n: v for n, v in param_mirror_plan(model).items() if n != "transl"}
        self.kinds = {n: b.kind for n, b in model.blocks.items()}

    def __call__(self, params: dict[str, torch.Tensor], flipped: torch.Tensor,
                 roll: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, plan in self.plan.items():
            if name not in params:
                continue
            x = params[name]
            if plan is None:
                out[name] = x
                continue
            src, rows, sign = plan
            y = params[src][:, torch.as_tensor(rows, device=x.device)]
            y = mirror_rotmat(y, sign) if self.kinds[name] == "rotation" else y * float(sign)
            f = flipped.view(-1, *([1] * (x.dim() - 1))) > 0.5
            out[name] = torch.where(f, y, x)
        c, s = torch.cos(roll), torch.sin(roll)
        z, o = torch.zeros_like(c), torch.ones_like(c)
        Rz_T = torch.stack([torch.stack([c, s, z], -1), torch.stack([-s, c, z], -1),
                            torch.stack([z, z, o], -1)], -2)
        out["global_orient"] = Rz_T[:, None] @ out["global_orient"]
        return out


def consistency(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                model: BodyModel, lost: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per group, the distance between canonical student and teacher parameters (geodesic
    for rotations, squared error otherwise); ``lost`` (B,) per block masks flips that have
    no mirror."""
    per: dict[str, list[torch.Tensor]] = {g: [] for g in GROUPS}
    for name, blk in model.blocks.items():
        if name == "transl" or name not in student:
            continue
        w = 1 - lost[name]
        if blk.kind == "rotation":
            err = geodesic(student[name], teacher[name]).mean(1)
        else:
            err = (student[name] - teacher[name]).pow(2).mean(1)
        per[_GROUP[blk.part]].append(_weighted_mean(err, w))
    return {f"consistency_{g}": torch.stack(v).sum() for g, v in per.items() if v}

