"""Is data loading ever the bottleneck? The training loader's rate against the training rate.

    python benchmarks/bench_loader.py [--config configs/train-small.yaml] [--shards DIR]
                                      [--steps 60] [--passes 3] [--cache 512]

The loader (``furpe.training.data``: shard reading, JPEG decoding, the person crop at the
network's input size, full augmentation, one process) over ``--shards``, in examples/s
(median of ``--passes`` passes); then ``furpe train`` with the same config for ``--steps``
steps (its loader in its worker processes, as configured), in samples/s, with the encoders
running every step and, when they are frozen, with ``data.feature_cache``: building a pool
of ``--cache`` examples (examples/s), then training from it (samples/s). Run it with nothing
else busy on the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _report
import torch

from furpe.bodymodels import load_body_model
from furpe.training.config import SourceConfig, load_train_config
from furpe.training.data import MirrorPlan, PersonCrops, label_dataset
from furpe.training.features import build_pool
from furpe.training.trainer import Trainer

REPO = _report.REPO
TITLE = "Training loader against the training rate"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "train-small.yaml")
    ap.add_argument("--shards", default="out/train-synth/shards", help="label shards to read")
    ap.add_argument("--steps", type=int, default=60, help="training steps timed")
    ap.add_argument("--passes", type=int, default=3, help="loader passes over the shards")
    ap.add_argument("--cache", type=int, default=512,
                    help="examples of the feature pool timed (0: skip)")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the loader runs in one process with one thread, as its workers

    config = load_train_config(args.config)
    model = load_body_model(config.body_model, config.model_path)
    crops = PersonCrops(MirrorPlan.from_model(model), crop_size=config.network.input_size,
                        augment=config.data.augment, seed=0)
    rates = []
    for _ in range(args.passes):
        t = time.perf_counter()
        n = sum(1 for _ in label_dataset(args.shards, crops))
        rates.append(n / (time.perf_counter() - t))
    loader = statistics.median(rates)
    print(f"loader: {n} examples per pass, {loader:.1f} examples/s", file=sys.stderr)

    def timed(cache: int, tmp: str) -> tuple[float, float | None]:
        """(training samples/s, pool examples/s or None) of a short run."""
        data = dataclasses.replace(config.data, sources=(SourceConfig(args.shards),),
                                   feature_cache=cache)
        cfg = dataclasses.replace(config, steps=args.steps, output=str(Path(tmp) / f"run{cache}"),
                                  log_every=10, checkpoint_every=args.steps, data=data)
        trainer = Trainer(cfg)
        pool = None
        if cache:
            t = time.perf_counter()
            build_pool(trainer)
            pool = cache / (time.perf_counter() - t)
        return trainer.run()["samples_per_s"], pool

    frozen = set(("body", "hand", "head") if config.network.parts else ("body",))
    cache = args.cache if frozen <= set(config.network.freeze) else 0
    with tempfile.TemporaryDirectory() as tmp:
        training, _ = timed(0, tmp)
        print(f"training: {training:.1f} samples/s", file=sys.stderr)
        cached, pool = timed(cache, tmp) if cache else (None, None)
    what = (f"`{args.config.name}` ({args.steps} steps of batch {config.batch_size}, "
            f"{config.data.workers} loader worker(s), {config.threads} torch threads)")
    rows = [
        "| what | per second |", "|---|---:|",
        f"| loader: examples (crop {config.network.input_size}x{config.network.input_size}, "
        f"augmented, 1 process, 1 thread; median of {args.passes} passes of {n}) | {loader:.1f} |",
        f"| training {what}, encoders every step: samples | {training:.1f} |"]
    notes = [f"Loader / training: x{loader / training:.1f}."]
    if cached is not None:
        rows += [f"| feature pool (`data.feature_cache`): examples encoded, {cache} | {pool:.1f} |",
                 f"| training {what} from the feature pool: samples | {cached:.1f} |"]
        notes.append(f"Training from the pool / with the encoders: x{cached / training:.1f}; "
                     f"each pooled example costs {1 / pool:.3f} s once.")
    text = "\n".join(rows + [""] + notes)
    print(f"\n## {TITLE}\n\n{text}")
    if not args.no_write:
        body = "\n".join([_report.header(TITLE, _report.command_line("bench_loader.py", argv)),
                          f"Shards `{args.shards}`.", "", text])
        _report.write_section(args.results_file, "bench_loader", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
