"""Keypoint correspondences: where each expert's landmarks sit on a body model.

Correspondences are :class:`~furpe.bodymodels.base.Regressor` objects (sparse weights over the
model's vertices followed by its joints). They ship as ``furpe/data/correspondences/
<model>.npz`` files made by ``scripts/make_correspondences.py``; each convention is stored as
three arrays ``<convention>/names``, ``<convention>/indices``, ``<convention>/weights`` plus
``num_vertices`` and ``num_joints`` to check that the file matches the model it is loaded for.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from furpe.bodymodels.base import Regressor
from furpe.core.errors import FurpeError

if TYPE_CHECKING:
    from furpe.bodymodels.base import BodyModel


def data_path(model_name: str) -> Path:
    """The shipped correspondence file of a body model."""
    return Path(str(resources.files("furpe") / "data" / "correspondences" / f"{model_name}.npz"))


def pack_rows(names: list[str], rows: list[dict[int, float]], width: int | None = None) -> Regressor:
    """Pack per-keypoint ``{point index: weight}`` dicts into a :class:`Regressor`.

    Rows keep their ``width`` largest weights (all when None) and are renormalised to sum to 1.
    """
    width = width or max(len(r) for r in rows)
    idx = np.zeros((len(rows), width), dtype=np.int64)
    w = np.zeros((len(rows), width), dtype=np.float64)
    for k, row in enumerate(rows):
        items = sorted(row.items(), key=lambda kv: -kv[1])[:width]
        total = sum(v for _, v in items)
        for j, (i, wt) in enumerate(items):
            idx[k, j], w[k, j] = i, wt / total
    return Regressor(tuple(names), idx, w)


def identity_regressor(names: list[str], offset: int) -> Regressor:
    """One row per point ``offset + k`` with weight 1 (e.g. the joints themselves)."""
    n = len(names)
    return Regressor(tuple(names), (offset + np.arange(n))[:, None], np.ones((n, 1)))


def save(path: Path, regressors: dict[str, Regressor], num_vertices: int, num_joints: int) -> None:
    """Write regressors to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {
        "num_vertices": np.array(num_vertices), "num_joints": np.array(num_joints)
    }
    for conv, reg in regressors.items():
        arrays[f"{conv}/names"] = np.array(reg.names)
        arrays[f"{conv}/indices"] = reg.indices.astype(np.int32)
        arrays[f"{conv}/weights"] = reg.weights.astype(np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load(path: Path, num_vertices: int, num_joints: int) -> dict[str, Regressor]:
    """Read a correspondence file and check it matches a model's vertex and joint counts."""
    with np.load(path) as data:
        if int(data["num_vertices"]) != num_vertices or int(data["num_joints"]) != num_joints:
            raise FurpeError(
                f"correspondence file {path} is for a model with {int(data['num_vertices'])} "
                f"vertices and {int(data['num_joints'])} joints, not {num_vertices} and "
                f"{num_joints}; regenerate it with scripts/make_correspondences.py"
            )
        convs = sorted({k.split("/")[0] for k in data.files if "/" in k})
        return {
            c: Regressor(
                tuple(str(n) for n in data[f"{c}/names"]),
                data[f"{c}/indices"].astype(np.int64),
                data[f"{c}/weights"].astype(np.float64),
            )
            for c in convs
        }


def load_regressors(model: "BodyModel") -> dict[str, Regressor]:
    """The regressors of ``model``: its joints (``<name>_joints``), what the model itself
    provides (:meth:`BodyModel.own_regressors`) and its shipped correspondence file, if any."""
    nv, nj = model.num_vertices, len(model.joint_names)
    regs = {f"{model.name}_joints": identity_regressor(list(model.joint_names), nv)}
    regs.update(model.own_regressors())
    path = data_path(model.name)
    if path.exists():
        regs.update(load(path, nv, nj))
    return regs


@dataclass(frozen=True)
class BlendshapeReadout:
    """What a face expert's blendshape scores say about a body model's facial actions: a
    linear read-out, fitted on renders of the model with known actions
    (``scripts/make_blendshape_readout.py``), of the actions the expert can see.

    ``matrix`` is (len(outputs), len(inputs) + 1), the intercept last; ``confidence`` is each
    output's held-out R^2 (how much of the action the scores explain).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    matrix: np.ndarray
    confidence: np.ndarray

    def __call__(self, scores: Mapping[str, float]) -> np.ndarray:
        """The actions ``outputs`` (clipped to [0, 1]) that ``scores`` (name -> score, a
        missing name counts as 0) say."""
        x = np.array([float(scores.get(k, 0.0)) for k in self.inputs] + [1.0])
        return np.clip(self.matrix @ x, 0.0, 1.0)


def readout_path(model_name: str) -> Path:
    """The shipped blendshape read-out file of a body model."""
    return data_path(model_name).with_name(f"{model_name}_blendshapes.npz")


def save_readout(path: Path, readout: BlendshapeReadout) -> None:
    """Write a read-out to ``path`` atomically."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, inputs=np.array(readout.inputs), outputs=np.array(readout.outputs),
                        matrix=readout.matrix.astype(np.float32),
                        confidence=readout.confidence.astype(np.float32))
    tmp.replace(path)


def read_readout(path: Path) -> BlendshapeReadout:
    """Read a read-out file written by :func:`save_readout`."""
    with np.load(path) as data:
        return BlendshapeReadout(tuple(str(n) for n in data["inputs"]),
                                 tuple(str(n) for n in data["outputs"]),
                                 data["matrix"].astype(np.float64),
                                 data["confidence"].astype(np.float64))


@lru_cache(maxsize=8)
def load_readout(model_name: str) -> BlendshapeReadout | None:
    """The shipped read-out of ``model_name``, or None when it has none."""
    path = readout_path(model_name)
    return read_readout(path) if path.exists() else None
