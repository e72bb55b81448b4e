"""``furpe labels stats``: what a folder of label shards holds, and what a threshold keeps.

Per part: people observed, accepted by the selection scheme the labels were made with, a
histogram of the combined selection ``score`` (0..1, :mod:`furpe.selection`), and how many a
minimum score (``--min-score PART=S``) would keep.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from furpe.core.errors import FurpeError
from furpe.core.vocab import PARTS
from furpe.labels.shards import iter_samples, list_shards

BINS = np.linspace(0.0, 1.0, 11)


@dataclass
class LabelStats:
    shards: int = 0
    samples: int = 0
    empty: int = 0
    people: int = 0
    truth: dict[str, int] = field(default_factory=dict)
    observed: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PARTS})
    accepted: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PARTS})
    scores: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PARTS})

    def kept(self, part: str, min_score: float) -> int:
        """People whose ``part`` has a selection score of at least ``min_score``."""
        return int(sum(s >= min_score for s in self.scores[part]))


def collect(folder: str | os.PathLike[str]) -> LabelStats:
    """Read every shard of ``folder`` (a damaged shard raises, naming it)."""
    shards = list_shards(folder)
    if not shards:
        raise FurpeError(f"{folder}: no label shards (labels-*.tar) in this folder")
    st = LabelStats(shards=len(shards))
    for path in shards:
        for sample in iter_samples(path, only=("json",)):
            doc = sample.get("json") or {}
            st.samples += 1
            truth = doc.get("provenance", {}).get("truth", "?")
            st.truth[truth] = st.truth.get(truth, 0) + 1
            people = doc.get("people", [])
            st.empty += int(not people)
            for person in people:
                st.people += 1
                for part, verdict in person.get("parts", {}).items():
                    if not verdict.get("observed"):
                        continue
                    st.observed[part] += 1
                    st.accepted[part] += int(bool(verdict.get("accepted")))
                    score = verdict.get("scores", {}).get("score")
                    st.scores[part].append(0.0 if score is None else float(score))
    return st


def report(st: LabelStats, folder: str | os.PathLike[str],
           min_scores: dict[str, float] | None = None) -> str:
    """The stats as Markdown-like text."""
    min_scores = min_scores or {}
    truth = ", ".join(f"{k} {v}" for k, v in sorted(st.truth.items()))
    lines = [f"{Path(folder)}: {st.shards} shards, {st.samples} images/frames ({truth}), "
             f"{st.people} people, {st.empty} images/frames with nobody", ""]
    head = "| part | observed | accepted |"
    sep = "|---|---:|---:|"
    if min_scores:
        head += " kept at min score |"
        sep += "---:|"
    lines += [head, sep]
    for p in PARTS:
        row = f"| {p} | {st.observed[p]} | {st.accepted[p]} |"
        if min_scores:
            row += (f" {st.kept(p, min_scores[p])} (>= {min_scores[p]:g}) |"
                    if p in min_scores else " |")
        lines.append(row)
    lines += ["", "Selection score histograms (observed parts; bins of 0.1 from 0 to 1):", ""]
    lines.append("| part | " + " | ".join(f"{a:.1f}" for a in BINS[:-1]) + " |")
    lines.append("|---|" + "---:|" * (len(BINS) - 1))
    for p in PARTS:
        hist, _ = np.histogram(np.clip(st.scores[p], 0, 1), bins=BINS)
        lines.append(f"| {p} | " + " | ".join(str(int(h)) for h in hist) + " |")
    return "\n".join(lines)
