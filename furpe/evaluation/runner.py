"""The evaluation harness behind ``furpe evaluate``: a method on a dataset, scored per sample.

Output files in the output folder ``OUT`` (``<dataset>`` is the reader's name)::

    <dataset>_samples.jsonl    one JSON object per line and sample, appended (and flushed) as
                               each sample finishes: {"id", "status": "ok" | "failed",
                               "metrics": {name: value}, "seconds", "accepted": {part: bool},
                               "meta": {...}, "message"}
    <dataset>_results.json     the summary, written last and atomically: protocol, options,
                               method, body model, counts, mean / median / count of every
                               metric, time per image, selection counts, failures
    (reader files)             whatever ``dataset.write_prediction`` / ``finalize`` write

Resume (``resume=True``): the JSONL file is read back, a trailing partial line (a run killed
mid-write) and any unreadable line are dropped, and samples whose last record is ``ok`` are
skipped; failed samples are tried again. Without resume the JSONL file starts empty. The
summary is always computed over the last record of every sample in the (limited) sample list.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import furpe
from furpe.datasets.base import Dataset, Sample
from furpe.core.errors import FurpeError, SetupError
from furpe.evaluation.methods import Method
from furpe.io.console import format_error, internal_error, progress_bar, say

__all__ = ["EvalSummary", "evaluate", "read_records", "latest_records", "summarize",
           "markdown_table",
           "samples_path", "results_path", "METRIC_ORDER"]

#: Metrics listed first in tables, in this order; others follow alphabetically.
METRIC_ORDER = (
    "pa_mpjpe_mm", "mpjpe_mm", "pa_pve_mm", "pve_mm", "pa_pve_body_mm", "pa_pve_face_mm",
    "pa_pve_left_hand_mm", "pa_pve_right_hand_mm", "pa_mpjpe14_mm", "mpjpe14_mm",
    "pa_mpjpe_limbs12_mm", "mpjpe_limbs12_mm", "pa_mpjpe_mediapipe_mm", "mpjpe_mediapipe_mm",
    "pa_mpjpe_left_hand_mm", "pa_mpjpe_right_hand_mm",
)


def samples_path(out_dir: str | Path, dataset: str) -> Path:
    """``OUT/<dataset>_samples.jsonl``."""
    return Path(out_dir) / f"{dataset}_samples.jsonl"


def results_path(out_dir: str | Path, dataset: str) -> Path:
    """``OUT/<dataset>_results.json``."""
    return Path(out_dir) / f"{dataset}_results.json"


@dataclass
class EvalSummary:
    """The outcome of :func:`evaluate`."""

    dataset: str
    out_dir: Path
    samples: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    results_file: Path | None = None
    samples_file: Path | None = None
    finalize_error: str | None = None

    @property
    def exit_code(self) -> int:
        """130 if interrupted, 1 if some sample failed or the dataset's prediction files could
        not be written (``finalize``), else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.finalize_error else 0

    def line(self) -> str:
        """One-line summary, e.g. ``furpe: synthetic: 200 samples: 198 ok, 2 failed; ...``."""
        head = "furpe: interrupted; " if self.interrupted else "furpe: "
        status = [f"{self.ok} ok"]
        if self.skipped:
            status.append(f"{self.skipped} skipped (already done)")
        status.append(f"{self.failed} failed")
        return (f"{head}{self.dataset}: {self.samples} sample{'s' if self.samples != 1 else ''}"
                f": {', '.join(status)}; results in {self.results_file}")


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------

def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a sample's meta (scalars, and dicts of scalars)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, (bool, np.bool_)):
            out[str(k)] = bool(v)
        elif isinstance(v, (int, np.integer)):
            out[str(k)] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[str(k)] = _finite(v)
        elif isinstance(v, str):
            out[str(k)] = v
        elif isinstance(v, dict):
            inner = _plain(v)
            if inner:
                out[str(k)] = inner
    return out


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The valid records of a ``_samples.jsonl`` file, in order (a partial or unreadable
    line is skipped; a missing file gives ``[]``)."""
    p = Path(path)
    if not p.is_file():
        return []
    records = []
    with open(p, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a line cut short by a crash
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str) \
                    and rec.get("status") in ("ok", "failed"):
                records.append(rec)
    return records


def latest_records(path: str | Path, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The last record of each sample in a ``_samples.jsonl`` file (a resumed run may have
    several), in the order of ``ids`` when given (samples without a record are left out),
    else in order of first appearance."""
    latest: dict[str, dict[str, Any]] = {}
    for r in read_records(path):
        latest[r["id"]] = r
    order = list(latest) if ids is None else [i for i in ids if i in latest]
    return [latest[i] for i in order]


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------

def _ordered(names: Sequence[str]) -> list[str]:
    first = [m for m in METRIC_ORDER if m in names]
    return first + sorted(set(names) - set(first))


def _stats(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "count": int(a.size)}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, metric statistics (mean, median, count over the ok samples that have the
    metric), time per image and selection counts of the given per-sample records."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    values: dict[str, list[float]] = {}
    for r in ok:
        for name, v in (r.get("metrics") or {}).items():
            f = _finite(v)
            if f is not None:
                values.setdefault(name, []).append(f)
    seconds = [s for s in (_finite(r.get("seconds")) for r in ok) if s is not None]
    accepted: dict[str, dict[str, int]] = {}
    for r in ok:
        for part, flag in (r.get("accepted") or {}).items():
            entry = accepted.setdefault(part, {"accepted": 0, "count": 0})
            entry["count"] += 1
            entry["accepted"] += int(bool(flag))
    return {
        "counts": {"samples": len(records), "ok": len(ok), "failed": len(failed)},
        "metrics": {name: _stats(values[name]) for name in _ordered(list(values))},
        "seconds_per_image": _stats(seconds) if seconds else None,
        "accepted": accepted,
        "failures": [{"id": r["id"], "message": r.get("message") or ""} for r in failed],
    }


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as Markdown: a heading naming dataset and protocol, a line with method,
    body model and counts, and a table of median, mean and count per metric (millimetres)
    plus the time per image."""
    counts = results.get("counts", {})
    lines = [f"## {results.get('dataset', '?')}: {results.get('protocol', '')}", ""]
    lines.append(f"Method `{results.get('method')}`, body model `{results.get('body_model')}`; "
                 f"{counts.get('samples', 0)} samples: {counts.get('ok', 0)} ok, "
                 f"{counts.get('failed', 0)} failed.")
    lines += ["", "| metric | median | mean | count |", "|---|---:|---:|---:|"]
    for name, st in results.get("metrics", {}).items():
        lines.append(f"| {name} | {_fmt(st['median'])} | {_fmt(st['mean'])} | {st['count']} |")
    sec = results.get("seconds_per_image")
    if sec:
        lines.append(f"| time per image (s) | {_fmt(sec['median'], 2)} | {_fmt(sec['mean'], 2)} "
                     f"| {sec['count']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------

def _options_dict(dataset: Dataset) -> dict[str, Any]:
    o = dataset.options
    as_str = lambda p: None if p is None else str(p)  # noqa: E731
    return {"alignment": o.alignment, "gt_regressor": as_str(o.gt_regressor),
            "pred_regressor": as_str(o.pred_regressor), "model_path": as_str(o.model_path),
            "part_ids": as_str(o.part_ids), "extra": dict(o.extra)}


def evaluate(dataset: Dataset, method_factory: Callable[[], Method], out_dir: str | Path, *,
             method_name: str = "experts", body_model: str = "anny",
             limit: int | None = None, resume: bool = False, progress: bool = True,
             debug: bool = False) -> EvalSummary:
    """Run a method on a dataset and score it; see the module docstring for the files.

    ``method_factory()`` is called once, when the first sample needs it (a resumed run with
    everything done never builds the method); a failure raises
    :class:`~furpe.runner.SetupError`. ``dataset.samples()`` raising
    :class:`~furpe.datasets.base.DatasetError` propagates. A sample whose prediction or score
    raises :class:`~furpe.core.errors.FurpeError` is recorded as failed (one ``furpe: error:`` line)
    and the run goes on; so is any other exception unless ``debug``. A ``FurpeError`` from
    ``dataset.finalize`` (e.g. a submission file that needs every sample) is printed and kept
    as ``finalize_error`` (exit status 1); the summary is still written. Ctrl-C stops the run
    after writing the summary of what is done (``interrupted``).
    """
    from furpe.io.outputs import atomic_write, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = list(dataset.samples())
    if limit is not None:
        samples = samples[:limit]
    jsonl = samples_path(out, dataset.name)
    summary = EvalSummary(dataset=dataset.name, out_dir=out, samples=len(samples),
                          samples_file=jsonl, results_file=results_path(out, dataset.name))

    records = read_records(jsonl) if resume else []
    with atomic_write(jsonl, "w") as fh:  # keep only whole, valid lines
        fh.writelines(_dump(r) + "\n" for r in records)
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        latest[r["id"]] = r
    done = {sid for sid, r in latest.items() if r["status"] == "ok"}

    method: list[Method] = []

    def get_method() -> Method:
        if not method:
            try:
                method.append(method_factory())
            except SetupError:
                raise
            except FurpeError as exc:
                raise SetupError(str(exc)) from exc
            except Exception as exc:
                if debug:
                    raise
                raise SetupError(f"cannot build the method '{method_name}': {internal_error(exc)}") \
                    from exc
        return method[0]

    bar = progress_bar(progress, total=len(samples), desc=f"evaluate {dataset.name}", unit="image")
    try:
        with open(jsonl, "a", encoding="utf-8") as fh:
            for sample in samples:
                if sample.id in done:
                    summary.skipped += 1
                    bar.update(1)
                    continue
                record: dict[str, Any] = {"id": sample.id}
                try:
                    prediction = get_method().predict(sample)
                    scores = dataset.score(sample, prediction)
                    dataset.write_prediction(out, sample, prediction)
                    record.update(status="ok",
                                  metrics={k: _finite(v) for k, v in scores.items()},
                                  seconds=_finite(prediction.seconds),
                                  accepted={k: bool(v) for k, v in prediction.accepted.items()},
                                  message=None)
                except SetupError:
                    raise
                except FurpeError as exc:
                    record.update(status="failed", message=str(exc) or type(exc).__name__)
                except Exception as exc:
                    if debug:
                        raise
                    record.update(status="failed", message=internal_error(exc))
                record["meta"] = _plain(sample.meta)
                if record["status"] == "failed":
                    say(format_error(f"{dataset.name} sample {sample.id}", record["message"]))
                fh.write(_dump(record) + "\n")
                fh.flush()
                latest[sample.id] = record
                bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()

    files: list[str] = []
    if not summary.interrupted:
        try:
            files = [str(p) for p in dataset.finalize(out)]
        except FurpeError as exc:  # e.g. a submission file that needs every sample
            summary.finalize_error = str(exc) or type(exc).__name__
            say(format_error(f"{dataset.name} predictions", summary.finalize_error))
    final = [latest[s.id] for s in samples if s.id in latest]
    stats = summarize(final)
    summary.ok = stats["counts"]["ok"] - summary.skipped
    summary.failed = stats["counts"]["failed"]
    results = {
        "furpe_version": furpe.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": dataset.name,
        "protocol": dataset.protocol,
        "data_root": str(dataset.root),
        "options": _options_dict(dataset),
        "method": method_name,
        "body_model": body_model,
        "limit": limit,
        "complete": not summary.interrupted and len(final) == len(samples),
        **stats,
        "files": {"samples": jsonl.name, "predictions": files},
        "finalize_error": summary.finalize_error,
        "sample_ids": [s.id for s in samples],
    }
    results["counts"]["samples"] = len(samples)
    results["counts"]["skipped"] = summary.skipped
    write_json(summary.results_file, results)
    summary.results = results
    return summary
