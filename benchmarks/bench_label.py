"""Labelling throughput: `furpe label` with 1 and 2 workers, and the cost of storage.

Inputs: ``--n`` seeded synthetic renders (640x640) plus, when ``--real`` is given, the photos
of that folder (default: the body photos of ../shared/data/real/mmpose). Three timed runs over
the same inputs, one after the other (never two at once):

* **reconstruct only**: ``Reconstructor.reconstruct_image`` on each image, nothing written
  (what ``furpe reconstruct`` computes, without its overlay and mesh files), with the
  experts of the next image running during this one's fit (``Reconstructor.prefetch``, one
  torch thread, as ``furpe reconstruct`` and ``furpe label`` with one worker run);
* **label, 1 worker**: :func:`furpe.labels.label` in this process with the same loaded
  reconstructor: the same work plus encoding and writing the shards;
* **label, 2 workers**: two worker processes (one torch thread each), each loading its own
  models; their start-up is included.

The storage overhead is (label 1 worker - reconstruct only) / reconstruct only. Then the
training loader reads the labels written (examples/s, one process, with augmentation).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _report

import cv2
import torch

from furpe.bodymodels import load_body_model
from furpe.config import ReconstructConfig
from furpe.core.errors import NoPersonError
from furpe.io.inputs import collect_inputs, read_image
from furpe.labels import label, list_shards
from furpe.core.lookahead import one_ahead
from furpe.pipeline import Reconstructor
from furpe.synthetic import make_person
from furpe.training.data import Augment, MirrorPlan, PersonCrops, label_dataset

DEFAULT_REAL = _report.REPO.parent / "shared" / "data" / "real" / "mmpose"
REAL_SETS = ("crowdpose", "ochuman", "aic", "mpii", "mhp", "jhmdb")


def _inputs(folder: Path, n: int, seed: int, real: Path | None) -> int:
    model = load_body_model("anny")
    for i in range(n):
        sp = make_person(model, seed + i, 640, 640, distance=2.6)
        cv2.imwrite(str(folder / f"render_{seed + i:04d}.png"), sp.image[:, :, ::-1])
    count = n
    if real is not None:
        for name in REAL_SETS:
            for path in sorted((real / name).glob("*.jpg")):
                shutil.copy(path, folder / f"{name}_{path.name}")
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="number of synthetic renders")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL,
                    help="folder of real photo sets (default ../shared/data/real/mmpose)")
    ap.add_argument("--no-real", action="store_true", help="renders only")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    real = None if args.no_real or not args.real.is_dir() else args.real

    with tempfile.TemporaryDirectory(prefix="furpe-bench-label-") as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        src.mkdir()
        total = _inputs(src, args.n, args.seed, real)
        items = collect_inputs([str(src)])
        config = ReconstructConfig(device="cpu")
        rec = Reconstructor(config)
        rec.reconstruct_image(read_image(items[0].path))  # warm-up

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as furpe reconstruct and furpe label with one worker
        t = time.perf_counter()
        people = 0
        ahead = None  # the next image, handed to the experts ahead of its turn
        for it, following in one_ahead(items):
            image = ahead if ahead is not None else read_image(it.path)
            if following is not None:
                if ahead is None:
                    rec.prefetch(image)
                ahead = read_image(following.path)
                rec.prefetch(ahead)
            else:
                ahead = None
            try:
                people += len(rec.reconstruct_image(image, reset_rejected=False).people)
            except NoPersonError:
                pass
        t_rec = time.perf_counter() - t
        torch.set_num_threads(threads)

        t = time.perf_counter()
        s1 = label(items, tmp / "one", lambda: rec, progress=False, shard_size=8)
        t_one = time.perf_counter() - t
        size = sum(p.stat().st_size for p in list_shards(tmp / "one"))

        t = time.perf_counter()
        s2 = label(items, tmp / "two", config=config, workers=2, progress=False, shard_size=8)
        t_two = time.perf_counter() - t
        same = s1.samples == s2.samples == total and s1.people == s2.people == people

        # the training loader over the labels just written: one process, full augmentation
        plan = MirrorPlan.from_model(rec.body_model)
        crops = PersonCrops(plan, crop_size=256, augment=Augment(), seed=0)
        t = time.perf_counter()
        examples = sum(1 for _ in range(3) for _ in label_dataset(tmp / "one", crops))
        t_load = time.perf_counter() - t

    n_real = total - args.n
    run = (f"{total} images ({args.n} renders 640x640" +
           (f", {n_real} real photos" if n_real else "") + "), in-process runs on 1 torch "
           "thread with the look-ahead")
    rows = [
        ("reconstruct only (in-process, nothing written)", t_rec),
        ("furpe label, 1 worker (in-process)", t_one),
        ("furpe label, 2 workers (start-up included)", t_two),
    ]
    lines = ["| run | wall s | images/s | s/image |", "|---|---:|---:|---:|"]
    for name, secs in rows:
        lines.append(f"| {name} | {secs:.1f} | {total / secs:.3f} | {secs / total:.2f} |")
    lines += [
        "",
        f"Storage overhead (label 1 worker vs reconstruct only): "
        f"{100 * (t_one - t_rec) / t_rec:+.1f}%. 2 workers vs 1: x{t_one / t_two:.2f} images/s. "
        f"People labelled: {s1.people} (1 worker), {s2.people} (2 workers); shards "
        f"{size / 1e6:.1f} MB ({size / max(total, 1) / 1e3:.0f} kB per image). "
        f"Runs agree on the counts: {'yes' if same else 'NO'}.",
        "",
        f"Training loader (`furpe.training.data`, one process, 256x256 crops, default "
        f"augmentation, people whose body was accepted, 3 passes): {examples} examples in "
        f"{t_load:.1f} s, {examples / t_load:.0f} examples/s.",
    ]
    title = f"furpe label throughput: {run}"
    print(f"\n## {title}\n")
    print("\n".join(lines))
    if not args.no_write:
        body = "\n".join([_report.header(title, _report.command_line("bench_label.py", argv)),
                          __doc__.split("\n", 2)[2].strip(), "", *lines])
        _report.write_section(args.results_file, "bench_label", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
