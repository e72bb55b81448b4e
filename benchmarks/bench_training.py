"""Learning from pseudo labels, and the recipes' ablation, at one CPU budget.

    python benchmarks/bench_training.py [--steps 300] [--batch-size 16] [--passes 1] [--n 20]
                                        [--runs runs/bench-training]
                                        [--truth out/train-synth/shards]
                                        [--labels out/train-labels] [--only NAME ...]
                                        [--section bench_training]

Trains the network of ``configs/train-small.yaml`` once per variant, on the same training
renders and for the same budget (``--steps`` of ``--batch-size``), and scores every
checkpoint against the exact truth of held-out renders (the first ``--n`` images of the
standard synthetic set), next to the expert fit and the mean pose on the same images. The
variants:

* ``truth``: the renders' exact truth (``furpe make-synthetic --format webdataset``);
* ``expert labels``: the expert system's labels of the same renders (``furpe label``), not
  their truth: standard recipe without distillation;
* ``body flip`` (on the truth and on the labels): the body encoder also reads the crop
  mirrored and hands on the mean of both landmark outputs (``network.body_flip``);
* ``body encoder trained``, ``+ distillation``: the expert labels with the body encoder
  (BlazePose Full from its bundled weights) trained at a tenth of the heads' learning rate
  (``optim.encoder_lr``), without and with feature distillation
  from the body expert's network (BlazePose Heavy, frozen) on the same crops; the hand and
  face encoders stay frozen (distilling a frozen encoder changes only its converter);
* ``hand encoder trained``, ``+ distillation``: the same for the hands: the hand encoder (the
  hand expert's landmark network) trains, without and with distillation from the frozen
  hand expert on the same hand crops; body (BlazePose Heavy) and face encoders stay frozen;
* ``multi-loss`` and ``EMA``: the other two recipes on the expert labels;
* ``no selection``: every observed part used, accepted by the selection scheme or not.

Every variant sees ``steps x batch`` augmented examples. With ``--passes 1`` (default) they
are all fresh: variants whose encoders are frozen compute their features once
(``data.feature_cache``, the same examples in another order; EMA's pool holds two views of
each person side by side), the variants with a trained encoder run the encoders every step;
with ``--passes P`` the frozen-encoder variants draw their batches P times over a pool of
``steps x batch / P`` examples (a longer training for the same encoder time), and the variants
with a trained encoder, which cannot use a pool, are not run (the table says so).

Every network is scored twice: as it is and with its flip test (``flip_test``: each crop
also mirrored, the two estimates averaged), as the expert fit's body expert does by default.

Runs already finished under ``--runs`` are scored again without training (delete a run's
folder to train it again); an interrupted run resumes from its ``last.pt``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _report
import torch
from bench_network import METRICS, MeanPose

from furpe.config import ReconstructConfig, read_mapping
from furpe.core.registry import create
from furpe.datasets.base import ProtocolOptions
from furpe.datasets.synthetic import SyntheticDataset, generate
from furpe.evaluation.runner import evaluate, latest_records
from furpe.training.config import train_config_from_dict
from furpe.training.trainer import train

REPO = _report.REPO
TITLE = "Training from pseudo labels, and the recipes' ablation"
BASE_CONFIG = REPO / "configs" / "train-small.yaml"
#: Name suffix of a network scored with its flip test (``flip_test: true``).
FLIP = ", flip test"


def variants(truth: str, labels: str) -> dict[str, dict[str, Any]]:
    """Overrides of the base config per variant (dotted keys)."""
    on_labels = {"data.sources": [{"shards": labels, "weight": 1.0}]}
    trained_body = {**on_labels, "network.body_backbone": "mediapipe_pose_full",
                    "network.freeze": ["hand", "head"], "optim.encoder_lr": 1e-4}
    trained_hand = {**on_labels, "network.freeze": ["body", "head"], "optim.encoder_lr": 1e-4}
    on_truth = {"data.sources": [{"shards": truth, "weight": 1.0}]}
    flip = {"network.body_flip": True}
    return {
        "truth": on_truth,
        "truth, body flip": {**on_truth, **flip},
        "expert labels": on_labels,
        "expert labels, body flip": {**on_labels, **flip},
        # distillation reaches the network through a trained encoder only: the body's
        # (BlazePose Full, from its bundled weights) trains in both of these
        "expert labels, body encoder trained": trained_body,
        "expert labels, body encoder trained + distillation": {
            **trained_body, "distill": {"body": True, "hands": False, "face": False}},
        "expert labels, hand encoder trained": trained_hand,
        "expert labels, hand encoder trained + distillation": {
            **trained_hand, "distill": {"body": False, "hands": True, "face": False}},
        "expert labels, multi-loss": {**on_labels, "recipe": "multiloss"},
        "expert labels, EMA": {**on_labels, "recipe": "ema"},
        "expert labels, no selection": {**on_labels, "data.selection": False},
    }


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def _override(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def needs_fresh_views(changes: dict[str, Any]) -> bool:
    """Whether a variant runs its encoders every step (one of them trains, or distillation
    reads the crops): it cannot draw from a feature pool."""
    return (any(changes.get("distill", {}).values())
            or set(changes.get("network.freeze", ("body", "hand", "head")))
            != {"body", "hand", "head"})


def _run(name: str, changes: dict[str, Any], args: argparse.Namespace) -> Path:
    """Train one variant (or reuse its finished run); its ``model.pt``."""
    out = args.runs / _slug(name)
    examples = args.steps * args.batch_size
    cache = 0 if needs_fresh_views(changes) else examples // args.passes
    data = _override(read_mapping(BASE_CONFIG), {
        **changes, "steps": args.steps, "batch_size": args.batch_size, "output": str(out),
        "threads": args.threads, "checkpoint_every": max(50, args.steps // 4),
        "data.feature_cache": cache})
    config = train_config_from_dict(data)
    summary = out / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("steps") == args.steps:
        return out / "model.pt"
    if cache:
        _share_pool(config, out, args.runs)
    t = time.perf_counter()
    train(config, resume=(out / "last.pt").is_file(), progress=False)
    print(f"{name}: trained {args.steps} steps in {time.perf_counter() - t:.0f} s",
          file=sys.stderr)
    return out / "model.pt"


def _share_pool(config: Any, out: Path, runs: Path) -> None:
    """Link the feature chunks of another variant made with the same settings (e.g. the
    multi-loss variant reads the plain labels' pool) into ``out``, so they are not made
    twice."""
    from furpe.training.features import fingerprint

    target = out / "features"
    if target.is_dir() and any(target.glob("*.pt")):
        return
    expected = fingerprint(config)
    for folder in sorted(runs.glob("*/features")):
        chunks = sorted(folder.glob("rank*.pt"))
        if chunks and torch.load(chunks[0], map_location="cpu",
                                 weights_only=True).get("fingerprint") == expected:
            target.mkdir(parents=True, exist_ok=True)
            for chunk in chunks:
                os.link(chunk, target / chunk.name)
            print(f"{out.name}: features of {folder.parent.name} reused", file=sys.stderr)
            return


def label_errors(labels: str | Path, renders: str | Path) -> dict[str, float]:
    """Medians (mm) of the expert labels' ``pa_mpjpe_mm`` and ``pa_pve_mm`` against the
    exact truth of the renders they label (``renders``: the ``furpe make-synthetic`` folder),
    scored as the held-out images are: what the label-trained networks learn from. Each
    render's person is picked as the evaluation picks it (:func:`pick_person`)."""
    from furpe.bodymodels import load_body_model
    from furpe.core.errors import FurpeError
    from furpe.evaluation.methods import pick_person, prediction_from_person
    from furpe.labels.shards import iter_samples, list_shards

    dataset = SyntheticDataset(Path(renders), ProtocolOptions())
    samples = {s.id: s for s in dataset.samples()}
    model = load_body_model("anny")
    scores: dict[str, list[float]] = {"pa_mpjpe_mm": [], "pa_pve_mm": []}
    for shard in list_shards(labels):
        for item in iter_samples(shard, only=("json",)):
            doc = item["json"]
            sample = samples.get(Path(doc.get("source", "")).stem)
            if sample is None:
                continue
            people = doc.get("people") or []
            try:
                person = people[pick_person([p["box"] for p in people], sample.gt["box"])]
            except FurpeError:  # nobody labelled there
                continue
            params = {k: torch.as_tensor(v, dtype=torch.float32)[None]
                      for k, v in person["params"].items()}
            with torch.no_grad():
                out = model(params)
            metrics = dataset.score(sample, prediction_from_person(
                model, out.vertices[0].numpy(), out.joints[0].numpy()))
            for key in scores:
                scores[key].append(metrics[key])
    return {k: statistics.median(v) for k, v in scores.items() if v} | {
        "people": len(scores["pa_mpjpe_mm"])}


def _describe(renders: str | Path) -> str:
    """A synthetic set's seed, image size and preset, from its manifest."""
    doc = json.loads((Path(renders) / "manifest.json").read_text())
    size = doc["image_size"]
    return (f"seed {doc['seed']}, {size['width']}x{size['height']}, preset "
            f"{doc.get('preset', 'evaluation')}")


def _median(records: list[dict], key: str) -> float | None:
    values = [r["metrics"][key] for r in records
              if r.get("metrics") and r["metrics"].get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps per variant")
    ap.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    ap.add_argument("--passes", type=int, default=1,
                    help="passes over a pool of steps x batch / P examples for the variants "
                         "with frozen encoders; > 1 leaves out distillation")
    ap.add_argument("--section", default="bench_training",
                    help="results section to write (default bench_training)")
    ap.add_argument("--n", type=int, default=20, help="held-out images scored (default 20)")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "bench-training")
    ap.add_argument("--truth", default="out/train-synth/shards",
                    help="shards of the training renders' exact truth")
    ap.add_argument("--labels", default="out/train-labels",
                    help="shards of the expert labels of the same renders")
    ap.add_argument("--data", type=Path, default=REPO / "out" / "synthetic-n200-s0-640",
                    help="held-out set (default: make results' set; generated if missing)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="train/score only these variants")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if not (args.data / "manifest.json").is_file():
        generate(args.data, 200, seed=0, width=640, height=640)
    dataset = SyntheticDataset(args.data, ProtocolOptions())
    base = ReconstructConfig(device="cpu")
    chosen = variants(args.truth, args.labels)
    if args.only:
        unknown = [n for n in args.only if n not in chosen]
        if unknown:
            ap.error(f"unknown variant(s) {unknown}; choose from {list(chosen)}")
        chosen = {n: chosen[n] for n in args.only}
    if args.steps * args.batch_size // args.passes < args.batch_size:
        ap.error("--passes: the pool must hold at least one batch")
    left_out = [n for n, c in chosen.items() if args.passes > 1 and needs_fresh_views(c)]
    for name in left_out:
        print(f"{name}: not run (needs fresh views; --passes {args.passes})", file=sys.stderr)
        del chosen[name]
    methods: dict[str, Any] = {"mean pose": lambda: MeanPose(base),
                               "expert fit": lambda: create("method", "experts", base)}
    for name, changes in chosen.items():
        ckpt = _run(name, changes, args)
        for flip in (False, True):
            methods[f"network: {name}" + FLIP * flip] = (lambda c=ckpt, f=flip: create(
                "method", "network", base.replace(method="network", checkpoint=str(c),
                                                  flip_test=f)))

    records: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in methods.items():
            summary = evaluate(dataset, factory, Path(tmp) / _slug(name),
                               method_name=_slug(name), limit=args.n, progress=False)
            records[name] = latest_records(summary.samples_file, summary.results["sample_ids"])
            print(f"{name}: {summary.line()}", file=sys.stderr)

    expert = _median(records["expert fit"], "pa_mpjpe_mm")

    def ratio(value: float | None) -> str:
        return f"{value / expert:.2f}" if value is not None and expert else "-"

    def mm(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = ["| method | " + " | ".join(m for m, _ in METRICS) + " | PA-MPJPE / expert fit "
             "| with the flip test: PA-MPJPE | PA-PVE | / expert fit |",
             "|---|" + "---:|" * (len(METRICS) + 4)]
    for name, recs in records.items():
        if name.endswith(FLIP):
            continue
        cells = [_median(recs, k) for _, k in METRICS]
        flipped = records.get(name + FLIP)
        more = (["-"] * 3 if flipped is None else
                [mm(_median(flipped, "pa_mpjpe_mm")), mm(_median(flipped, "pa_pve_mm")),
                 ratio(_median(flipped, "pa_mpjpe_mm"))])
        lines.append(f"| {name} | " + " | ".join(mm(c) for c in cells)
                     + f" | {ratio(cells[0])} | " + " | ".join(more) + " |")
    renders = Path(args.truth).parent
    learned = (label_errors(args.labels, renders)
               if any("data.sources" in c and c["data.sources"][0]["shards"] == args.labels
                      for c in chosen.values()) else {})
    if learned:
        lines.append(f"| (the expert labels themselves, on their {learned['people']} training "
                     f"renders) | {mm(learned['pa_mpjpe_mm'])} | | {mm(learned['pa_pve_mm'])} "
                     "| | | | | | | |")
    text = "\n".join(lines)
    print(f"\n## {TITLE}\n\n{text}")
    if not args.no_write:
        examples = args.steps * args.batch_size
        pool = (f"each sees {examples} fresh augmented examples (frozen-encoder variants: their "
                f"features computed once, `data.feature_cache`)" if args.passes == 1 else
                f"{args.passes} passes over a pool of {examples // args.passes} augmented "
                f"examples whose features are computed once (`data.feature_cache`; EMA's "
                f"pool: both views of each person, so half as many people)"
                + (f"; {' and '.join(repr(n) for n in left_out)} not run: a trained "
                   f"encoder needs new crops every step" if left_out else ""))
        rates = {c["optim.encoder_lr"] for c in chosen.values() if "optim.encoder_lr" in c}
        trained = [n for n in ("body", "hand") if any(f"{n} encoder trained" in c
                                                        for c in chosen)]
        encoders = "; ".join(
            {"body": "'body encoder trained': BlazePose Full as the body encoder, its "
                     "distillation teacher BlazePose Heavy",
             "hand": "'hand encoder trained': the hand landmark network, its distillation "
                     "teacher its frozen original"}[n] for n in trained)
        encoders = (f" ({encoders}; trained at `optim.encoder_lr` "
                    f"{', '.join(f'{r:g}' for r in sorted(rates))}, the heads at the "
                    f"config's `optim.lr`)" if rates else "")
        what = (f"Every network: `configs/train-small.yaml` (frozen MediaPipe encoders; the "
                f"regressors, box head and converters train){encoders}, {args.steps} steps "
                f"of batch {args.batch_size} on CPU, on the same training renders (`--truth "
                f"{args.truth}`, `--labels {args.labels}`: {_describe(renders)}); {pool}. "
                f"Scored on the first {args.n} images of the standard synthetic set "
                f"({_describe(args.data)}; held out); medians in mm. The last three columns: "
                f"the same network with its flip test (`flip_test: true`, as the expert fit's "
                f"body expert runs by default)."
                + (" The last row: the labels scored against the truth of the renders they "
                   "label, as the held-out images are (the person the evaluation would pick)."
                   if learned else ""))
        title = TITLE if args.section == "bench_training" else f"{TITLE}: {args.section}"
        body = "\n".join([_report.header(title, _report.command_line("bench_training.py", argv)),
                          what, "", text])
        _report.write_section(args.results_file, args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
