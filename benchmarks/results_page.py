"""Results page: furpe's pipeline on the synthetic evaluation set, per part, as Markdown.

    python benchmarks/results_page.py [--n 200] [--seed 0] [--size 640] [--data DIR]
                                      [--out DIR] [--device cpu] [--limit N] [--resume]
                                      [--results-file docs/results.md] [--no-write]

Generates the synthetic set (``furpe make-synthetic``; an existing, complete set in ``--data``
is reused, an interrupted one is finished), runs the equivalent of ``furpe evaluate --dataset
synthetic`` through the Python API (per-sample results in ``OUT/synthetic_samples.jsonl``,
summary in ``OUT/synthetic_results.json``), and prints a Markdown page: the protocol, the set,
then median and mean errors per part and the time per image. Hands and the face are scored
where they are visible in the image (in the frame and not tiny); "accepted" rows keep only the
parts the selection scheme accepted. The page, with what its rows mean, also goes into this
script's section of ``docs/results.md`` (``_report``; ``--no-write`` only prints). ``make
results`` runs the standard 200-image set.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import _report
from furpe.cli import _one_thread_for_fits, _torch_threads_kept
from furpe.datasets.base import ProtocolOptions
from furpe.datasets.synthetic import SyntheticDataset, generate
from furpe.config import ReconstructConfig
from furpe.core.registry import create
from furpe.evaluation.runner import evaluate, latest_records

REPO = _report.REPO
TITLE = "furpe results: synthetic set"

#: What the rows mean: written above the page in docs/results.md.
EXPLANATION = """\
`furpe evaluate --dataset synthetic` (method `experts`, furpe's pipeline) on a synthetic set of
seeded Anny renders with exact ground truth; age, body shape, pose, camera distance, height and
angle, lighting, skin tone and background vary (see [evaluation.md](evaluation.md)). Errors in
millimetres: PA-MPJPE and mid-hip aligned MPJPE on the 23 COCO(+feet) keypoints, PA-PVE on all
vertices and per part (Procrustes re-fitted per part). Hands and the face are scored only where
visible: in the frame, not tiny, at least half of their vertices not hidden. "Accepted" rows
keep only the parts the selection scheme accepted. The neutral baselines score the ground-truth
person with only that part reset to rest: a part whose fitted error is no lower than its
baseline gains nothing from its expert. A sample where nobody is found counts as failed (the
script then exits with status 1, as `furpe evaluate` does).
"""

#: (part, what, metric key, subset): the rows of the page.
ROWS = (
    ("whole body", "PA-MPJPE, 23 COCO(+feet) keypoints", "pa_mpjpe_mm", None),
    ("whole body", "MPJPE, mid-hip aligned", "mpjpe_mm", None),
    ("whole body", "PA-PVE, all vertices", "pa_pve_mm", None),
    ("whole body", "PVE, mid-hip translation", "pve_mm", None),
    ("body", "PA-PVE of the body part", "pa_pve_body_mm", None),
    ("face", "PA-PVE, visible", "pa_pve_face_mm", None),
    ("face", "PA-PVE, visible and accepted", "pa_pve_face_mm", "face"),
    ("left hand", "PA-PVE, visible", "pa_pve_left_hand_mm", None),
    ("left hand", "PA-PVE, visible and accepted", "pa_pve_left_hand_mm", "left_hand"),
    ("right hand", "PA-PVE, visible", "pa_pve_right_hand_mm", None),
    ("right hand", "PA-PVE, visible and accepted", "pa_pve_right_hand_mm", "right_hand"),
    ("left hand", "PA-MPJPE, 21 keypoints, visible", "pa_mpjpe_left_hand_mm", None),
    ("right hand", "PA-MPJPE, 21 keypoints, visible", "pa_mpjpe_right_hand_mm", None),
)


def _values(records: list[dict], key: str, accepted_part: str | None) -> list[float]:
    out = []
    for r in records:
        if r.get("status") != "ok":
            continue
        v = (r.get("metrics") or {}).get(key)
        if v is None:
            continue
        if accepted_part is not None and not (r.get("accepted") or {}).get(accepted_part):
            continue
        out.append(float(v))
    return out


def _cell(values: list[float], fn, digits: int = 1) -> str:
    return f"{fn(np.asarray(values)):.{digits}f}" if values else "n/a"


#: Neutral baselines: the ground-truth person with that part's blocks at rest
#: (``BodyModel.at_rest``: the face's expression and gaze, a hand's fingers).
BASELINES = ("face", "left_hand", "right_hand")


def neutral_baselines(data: Path, records: list[dict]) -> dict[str, list[float]]:
    """Per part, the PA-PVE (mm) of the ground-truth person whose expression or fingers are
    reset to rest, on the samples where the method's part error was scored: what "doing
    nothing" for that part scores, for context next to the method's numbers."""
    import torch

    from furpe.bodymodels.anny_model import load_anny
    from furpe.datasets.synthetic import read_npz
    from furpe.metrics import pa_pve

    model = load_anny()
    out: dict[str, list[float]] = {part: [] for part in BASELINES}
    for r in records:
        if r.get("status") != "ok":
            continue
        gt = read_npz(data / "gt" / f"{r['id']}.npz")
        params = {k[len("param_"):]: torch.as_tensor(v, dtype=torch.float32)[None]
                  for k, v in gt.items() if k.startswith("param_")}
        for part in BASELINES:
            if (r.get("metrics") or {}).get(f"pa_pve_{part}_mm") is None:
                continue
            with torch.no_grad():
                verts = model(model.at_rest(params, part)).vertices[0].numpy()
            idx = model.part_vertices[part]
            out[part].append(float(pa_pve(verts[idx], gt["vertices"][idx])))
    return out


def page(results: dict, records: list[dict], manifest: dict, device: str,
         baselines: dict[str, list[float]] | None = None) -> str:
    """The Markdown page of one evaluation, without its title."""
    counts = results["counts"]
    size = manifest.get("image_size", {})
    lines = [
        f"**Protocol** ({results['dataset']}): {results['protocol']}.", "",
        f"**Set**: {manifest.get('n')} images, seed {manifest.get('seed')}, "
        f"{size.get('width')}x{size.get('height')}, generator version "
        f"{manifest.get('generator_version')}, rendered with {manifest.get('render_backend')}. "
        f"**Method**: `{results['method']}`, body model `{results['body_model']}`, device "
        f"{device}. {counts['ok']} of {counts['samples']} samples reconstructed "
        f"({counts['failed']} failed: no person found or another error). "
        f"Made {results['created']}.", "",
        "| part | error (mm) | median | mean | count |",
        "|---|---|---:|---:|---:|",
    ]
    for part, what, key, subset in ROWS:
        vals = _values(records, key, subset)
        lines.append(f"| {part} | {what} | {_cell(vals, np.median)} | {_cell(vals, np.mean)} "
                     f"| {len(vals)} |")
    secs = [float(r["seconds"]) for r in records
            if r.get("status") == "ok" and r.get("seconds") is not None]
    lines.append(f"| all | time per image (s) | {_cell(secs, np.median, 2)} | "
                 f"{_cell(secs, np.mean, 2)} | {len(secs)} |")
    if baselines:
        lines += ["", "Neutral baselines (the ground-truth person with that part at rest, same "
                  "samples and protocol; what doing nothing for the part scores): " + "; ".join(
                      f"{part.replace('_', ' ')} {_cell(v, np.median)} mm median, "
                      f"{_cell(v, np.mean)} mm mean" for part, v in baselines.items()) + "."]
    acc = results.get("accepted") or {}
    if acc:
        lines += ["", "Selection: " + "; ".join(
            f"{part.replace('_', ' ')} accepted in {v['accepted']} of {v['count']}"
            for part, v in acc.items()) + " reconstructed samples."]
    if results.get("failures"):
        lines += ["", "Failures: " + "; ".join(
            f"{f['id']}: {f['message']}" for f in results["failures"][:10])
            + (" ..." if len(results["failures"]) > 10 else "")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="images in the set (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    ap.add_argument("--size", type=int, default=640, help="square image size (default 640)")
    ap.add_argument("--data", type=Path, help="the set's folder (default out/synthetic-n<N>-"
                                              "s<SEED>-<SIZE>; generated if incomplete)")
    ap.add_argument("--out", type=Path, help="evaluation output (default out/results-<set>)")
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    ap.add_argument("--limit", type=int, help="evaluate only the first N samples")
    ap.add_argument("--resume", action="store_true", help="skip samples already scored")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)

    data = args.data or REPO / "out" / f"synthetic-n{args.n}-s{args.seed}-{args.size}"
    out = args.out or REPO / "out" / f"results-{data.name}"
    if not (data / "manifest.json").is_file():
        t = time.perf_counter()
        summary = generate(data, args.n, seed=args.seed, width=args.size, height=args.size)
        print(f"{summary.line()} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    dataset = SyntheticDataset(data, ProtocolOptions())
    config = ReconstructConfig(device=args.device)
    with _torch_threads_kept():  # torch on the threads furpe evaluate gives a fit: one
        summary = evaluate(dataset, lambda: _one_thread_for_fits(
            create("method", "experts", config)), out, limit=args.limit, resume=args.resume)
    print(summary.line(), file=sys.stderr)
    records = latest_records(summary.samples_file, summary.results["sample_ids"])
    text = page(summary.results, records, dataset.manifest, args.device,
                neutral_baselines(data, records))
    print(f"# {TITLE}\n\n{text}")
    if not args.no_write:
        note = _report.quick_note(
            {"n": args.n, "seed": args.seed, "size": args.size, "limit": args.limit},
            {"n": 200, "seed": 0, "size": 640, "limit": None}, "results")
        body = "\n".join([_report.header(TITLE, _report.command_line("results_page.py", argv),
                                          note), EXPLANATION, text])
        _report.write_section(args.results_file, "results_page", body)
    # Samples where nobody is found are part of the result (counted on the page), not a
    # failure of the benchmark; an interrupted run is.
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
