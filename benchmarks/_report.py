"""Shared by the benchmark scripts: each writes its own section of ``docs/results.md``.

A section lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; writing one replaces
only that section (or appends it when the file does not have it yet) and leaves the rest of the
file as it is. Each section opens with a generated header: the command line that produced it,
the date (UTC), the machine and the furpe version. The file is written atomically (a temporary
file in the same folder, then renamed).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "docs" / "results.md"

INTRO = """# furpe: measured results

This page is generated; do not edit it by hand. Each section below is written by the script
named in its header (`make bench`: `benchmarks/bench_reconstruct.py`; `make results`:
`benchmarks/results_page.py`; `make bench-real`: `benchmarks/real_photos.py`), which replaces
only its own section. Errors are in millimetres, times in seconds. The protocols are described
in [evaluation.md](evaluation.md). The public benchmarks (EHF, 3DPW, FreiHAND, NoW) are not
scored here: they need the datasets, which you download from their authors (`furpe evaluate`,
see evaluation.md).
"""


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options shared by the scripts: where to write their section, or not at all."""
    ap.add_argument("--results-file", type=Path, default=RESULTS_FILE,
                    help="the Markdown file holding this script's section "
                         "(default docs/results.md)")
    ap.add_argument("--no-write", action="store_true",
                    help="only print the tables; leave the results file alone")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command line as it was run (``argv`` given: as the script was called from Python),
    with ``PYTHONPATH`` when it is set."""
    if argv is None:
        args = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
        for k, arg in enumerate(args[:2]):  # interpreter and script relative to the repository
            if os.path.isabs(arg) and Path(arg).is_relative_to(REPO):
                args[k] = os.path.relpath(arg, REPO)
    else:
        args = ["python", f"benchmarks/{script}", *argv]
    env = [f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    return shlex.join(env + args)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """CPU model, core count, torch version and the GPU (if any), in one line."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{_cpu_model()}, {cores} cores", f"Python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001 - reported as unknown
        parts.append("torch unknown")
        gpu = "unknown"
    parts.append(f"GPU {gpu}")
    return "; ".join(parts)


def gauge_line(before: float, after: float) -> str:
    """The sentence that reports :func:`speed_reference` before and after a timed run."""
    return (f"Machine speed gauge (`_report.speed_reference`: a fixed loop of small tensor "
            f"operations on one thread, the fit's kind of work): {before:.1f} ms before the "
            f"run, {after:.1f} ms after. This machine is shared and its speed drifts between "
            f"and within runs: compare times within one run, or runs whose gauges agree.")


def speed_reference(repeats: int = 15) -> float:
    """Milliseconds (median of ``repeats``) of a fixed loop of small tensor operations on one
    thread, the fit's kind of work: a gauge of how fast this machine runs at the moment
    (shared machines drift), to compare runs made at different times."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.linspace(0.0, 1.0, 64).reshape(4, 4, 4)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            y = x
            for _ in range(500):
                y = torch.tanh(y @ x + x).sum(0, keepdim=True) * 0.5 + x
            times.append(time.perf_counter() - t)
        return 1000.0 * sorted(times)[len(times) // 2]
    finally:
        torch.set_num_threads(threads)


def header(title: str, command: str, note: str | None = None) -> str:
    """The section's heading and provenance lines."""
    import furpe

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "",
             f"Generated by `{command}` on {now}.  ",
             f"Machine: {machine()}.  ",
             f"furpe {furpe.__version__}."]
    if note:
        lines += ["", f"**Note:** {note}"]
    return "\n".join(lines) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` set to ``body`` (appended when missing)."""
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        return text[:i] + block + text[j + len(end):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(path: Path, name: str, body: str) -> None:
    """Replace section ``name`` of ``path`` by ``body``; the file is created (with a short
    introduction) when missing and written atomically."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else INTRO
    text = replace_section(text, name, body)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote section {name} of {path}", file=sys.stderr)


def quick_note(run: dict, standard: dict, target: str) -> str | None:
    """A warning for the header when ``run`` (option -> value) differs from the standard run
    of ``make TARGET``; None when it is the standard run."""
    if all(run.get(k) == v for k, v in standard.items()):
        return None
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if v is not None)  # noqa: E731
    return (f"a quick run ({fmt(run)}), not the standard `make {target}` run "
            f"({fmt(standard)}); its numbers are not representative. Run `make {target}` "
            "to regenerate this section.")


def with_lookahead(prefetch: Callable[[Any], None], step: Callable[[Any], None],
                   images: Sequence[Any]) -> float:
    """Wall-clock seconds of ``step(image)`` over ``images`` in sequence, each image handed
    to ``prefetch`` one step ahead (its experts run during the previous one's fit), torch on
    one thread: how ``furpe reconstruct`` runs a folder or a video."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = time.perf_counter()
        if images:
            prefetch(images[0])
        for i, image in enumerate(images):
            if i + 1 < len(images):
                prefetch(images[i + 1])
            step(image)
        return time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
