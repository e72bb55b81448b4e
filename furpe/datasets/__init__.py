"""Evaluation datasets: readers for the official layouts and the synthetic benchmark.

``load_dataset(name, root, options)`` builds a reader by name through the registry (kind
``dataset``). The readers are imported lazily so that a missing optional dependency of one
never breaks the others.
"""
from __future__ import annotations

from pathlib import Path

from furpe.core.errors import DatasetError, FurpeError
from furpe.core.registry import lookup
from furpe.datasets.base import Dataset, Prediction, ProtocolOptions, Sample, require


def dataset_class(name: str) -> type[Dataset]:
    """The reader class registered as ``name`` (kind ``dataset``; ``DatasetError`` listing the
    known names)."""
    try:
        return lookup("dataset", name)
    except FurpeError as exc:  # an unknown name
        raise DatasetError(str(exc)) from None


def load_dataset(name: str, root: str | Path, options: ProtocolOptions | None = None) -> Dataset:
    """Build the ``name`` reader on the folder ``root``."""
    return dataset_class(name)(root, options)


__all__ = ["Dataset", "DatasetError", "Prediction", "ProtocolOptions", "Sample", "dataset_class",
           "load_dataset", "require"]
