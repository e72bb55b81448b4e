"""Evaluation datasets: readers for the official layouts and the synthetic benchmark.

``load_dataset(name, root, options)`` builds a reader by name. The readers are imported
lazily so that a missing optional dependency of one never breaks the others.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from furpe.datasets.base import (
    Dataset,
    DatasetError,
    Prediction,
    ProtocolOptions,
    Sample,
    require,
)

#: ``--dataset`` name -> "module:Class".
DATASETS: dict[str, str] = {
    "ehf": "furpe.datasets.ehf:EHF",
    "3dpw": "furpe.datasets.pw3d:ThreeDPW",
    "freihand": "furpe.datasets.freihand:FreiHAND",
    "now": "furpe.datasets.now:NoW",
    "synthetic": "furpe.datasets.synthetic:SyntheticDataset",
}


def dataset_class(name: str) -> type[Dataset]:
    """The reader class registered as ``name`` (``DatasetError`` listing the known names)."""
    try:
        module, cls = DATASETS[name].split(":")
    except KeyError:
        raise DatasetError(f"unknown dataset '{name}'; choose from {', '.join(DATASETS)}") from None
    return getattr(importlib.import_module(module), cls)


def load_dataset(name: str, root: str | Path, options: ProtocolOptions | None = None) -> Dataset:
    """Build the ``name`` reader on the folder ``root``."""
    return dataset_class(name)(root, options)


__all__ = ["DATASETS", "Dataset", "DatasetError", "Prediction", "ProtocolOptions", "Sample",
           "dataset_class", "load_dataset", "require"]
