"""Pseudo labels: the expert system as a data engine (``furpe label``).

:mod:`~furpe.labels.schema` (one label document per image or video frame),
:mod:`~furpe.labels.shards` (WebDataset tar shards, written atomically, checked when read),
:mod:`~furpe.labels.engine` (resumable, split and parallel labelling) and
:mod:`~furpe.labels.stats` (``furpe labels stats``). Format: ``docs/labels.md``.
"""
from furpe.labels.engine import LabelSummary, label, unit_key
from furpe.labels.schema import LABEL_SCHEMA_VERSION, label_document
from furpe.labels.shards import ShardError, ShardWriter, check_shard, iter_samples, list_shards

__all__ = ["LABEL_SCHEMA_VERSION", "LabelSummary", "ShardError", "ShardWriter", "check_shard",
           "iter_samples", "label", "label_document", "list_shards", "unit_key"]
