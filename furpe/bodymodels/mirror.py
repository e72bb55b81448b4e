"""Left-right mirroring of a body model's parameters and keypoints (horizontal flip).

Mirroring the camera frame's x axis maps a person onto their mirror image: each left bone
takes the mirrored rotation of its right counterpart and the other way round (an axis-angle
vector ``(x, y, z)`` becomes ``(x, -y, -z)``), the same for facial actions named ``...Left`` /
``...Right``, and the translation's x changes sign. Names pair up by these swaps: Anny's
``.L``/``.R`` bones, SMPL-X's ``left_``/``right_`` joints and ``leye``/``reye`` blocks, ARKit's
``Left``/``Right`` actions. This holds for models whose rest pose and rest bone frames are
mirror-symmetric (Anny, SMPL-X); a linear expression space (SMPL-X's) has no mirror and is
reported as lost.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel

_SWAPS = ((".L", ".R"), ("left_", "right_"), ("Left", "Right"), ("leye", "reye"))


def mate(name: str) -> str:
    """The name of the mirror counterpart (the name itself for a central part)."""
    for a, b in _SWAPS:
        if a.startswith("."):  # a suffix
            if name.endswith(a):
                return name[: -len(a)] + b
            if name.endswith(b):
                return name[: -len(b)] + a
        elif a in name:
            return name.replace(a, b, 1)
        elif b in name:
            return name.replace(b, a, 1)
    return name


#: How one block is mirrored: (source block, source rows, sign per component), or None when
#: it has no mirror.
BlockMirror = tuple[str, np.ndarray, np.ndarray] | None


def param_mirror_plan(model: BodyModel) -> dict[str, BlockMirror]:
    """Per parameter block, where its mirrored values come from (see :data:`BlockMirror`)."""
    plan: dict[str, BlockMirror] = {}
    for name, blk in model.blocks.items():
        src = model.blocks[mate(name)]
        if name == "transl":
            plan[name] = (name, np.arange(3), np.array([-1.0, 1.0, 1.0]))
        elif blk.kind == "rotation":
            rows = np.array([src.labels.index(mate(lab)) for lab in blk.labels])
            plan[name] = (src.name, rows, np.array([1.0, -1.0, -1.0]))
        elif blk.kind == "bounded" or blk.part == "shape":
            labels = list(src.labels)
            rows = np.array([labels.index(mate(lab)) if mate(lab) in labels else i
                             for i, lab in enumerate(blk.labels)])
            plan[name] = (src.name, rows, np.array(1.0))
        else:
            plan[name] = None
    return plan


def mirror_params(model: BodyModel, params: Mapping[str, torch.Tensor]
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(mirrored params, blocks that have no mirror and were left out)``; batched tensors
    like :meth:`BodyModel.neutral_params`, camera frame."""
    out: dict[str, torch.Tensor] = {}
    lost: list[str] = []
    for name, how in param_mirror_plan(model).items():
        if name not in params:
            continue
        if how is None:
            lost.append(name)
            continue
        src, rows, sign = how
        x = params[src]
        out[name] = x[:, torch.as_tensor(rows)] * x.new_tensor(sign)
    return out, lost


def keypoint_mirror(model: BodyModel, convention: str) -> np.ndarray:
    """The permutation ``perm`` of a keypoint convention such that keypoint ``perm[i]`` of a
    mirrored person is the mirror of keypoint ``i``: keypoints of the model at rest (mirror-
    symmetric about x = 0) matched one-to-one to their mirror images, by a minimum-cost
    assignment on the symmetrised distances (so that mirroring twice is the identity)."""
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        out = model(model.neutral_params(1))
        kp = model.keypoints(out, convention)[0].cpu().numpy().astype(np.float64)
    mirrored = kp * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(kp[None] - mirrored[:, None], axis=-1)
    _, perm = linear_sum_assignment(cost + cost.T)
    return np.asarray(perm, dtype=np.int64)
