"""Where the expert path's error comes from: each expert output replaced by the truth in turn.

    python benchmarks/bench_attribution.py [--n 40] [--seed 100] [--config FILE]

On seeded synthetic renders (as ``bench_reconstruct``: ``make_person(model, seed, 640, 640,
distance=2.6)``; seeds 100 on by default, apart from that benchmark's) the experts run once,
then the same fit runs on their observations with one kind of output of one part replaced by
what an exact expert would report (:func:`furpe.synthetic.exact_observations`): the 2D landmark
positions, or the metric 3D landmarks; confidences, the blendshapes and the parts the experts
did not find are kept, so a row measures what that output's errors cost the fit, not
detection. The last row replaces both for every part. Writes its section of docs/results.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

import _report
from bench_reconstruct import HANDS, _at_rest, _coco, expression_errors, pa_error
from furpe.bodymodels.anny_model import load_anny
from furpe.config import ReconstructConfig, load_config
from furpe.experts.base import PersonObservation
from furpe.pipeline import Reconstructor, camera, observe, person_box
from furpe.selection import select
from furpe.synthetic import exact_observations, make_person

TITLE = "Where the error comes from: expert outputs replaced by the truth"

#: (row label, parts, what is replaced: "2d", "3d" or "both")
VARIANTS = (
    ("experts as they are", (), ""),
    ("body: exact 2D landmarks", ("body",), "2d"),
    ("body: exact 3D landmarks", ("body",), "3d"),
    ("hands: exact 2D landmarks", HANDS, "2d"),
    ("hands: exact 3D landmarks", HANDS, "3d"),
    ("face: exact 2D landmarks", ("face",), "2d"),
    ("every part: exact 2D and 3D landmarks", ("body", *HANDS, "face"), "both"),
)


def replaced(person: PersonObservation, exact: PersonObservation, parts: tuple[str, ...],
             what: str) -> PersonObservation:
    """``person`` with the ``what`` landmarks of its observed ``parts`` taken from ``exact``."""
    out = dict(person.parts)
    for part in parts:
        obs, truth = person.get(part), exact.get(part)
        if obs is None or truth is None:
            continue
        change: dict = {}
        if what in ("2d", "both"):
            change["keypoints_2d"] = truth.keypoints_2d
        if what in ("3d", "both") and obs.keypoints_3d is not None \
                and truth.keypoints_3d is not None:
            change.update(keypoints_3d=truth.keypoints_3d,
                          world_convention=truth.world_convention)
        out[part] = dataclasses.replace(obs, **change)
    return PersonObservation(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="number of synthetic renders")
    ap.add_argument("--seed", type=int, default=100, help="first seed")
    ap.add_argument("--config", type=Path, default=None, help="a configuration file")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_anny()
    config = ReconstructConfig() if args.config is None else load_config(args.config)
    rec = Reconstructor(config, body_model=model)
    K = camera(None, 640, 640, config.focal)
    pv = model.part_vertices
    rows: dict[str, dict[str, list[float]]] = {
        label: {"body": [], "hand": [], "seen": [], "expr": []} for label, _, _ in VARIANTS}
    rest_hand: list[float] = []
    rest_seen: list[float] = []
    rest_expr: list[float] = []
    found = 0
    for i in range(args.n):
        sp = make_person(model, args.seed + i, 640, 640, distance=2.6)
        people = observe(rec.experts, sp.image, config.max_people)
        if not people:
            continue
        found += 1
        with torch.no_grad():
            exact = exact_observations(model, model(sp.params), sp.intrinsics)[0]
        # the person nearest the image centre is the synthetic one
        b = int(np.argmin([abs(sum(person_box(p.get("body"))[::2]) / 2 - 320)
                           for p in people]))
        for label, parts, what in VARIANTS:
            batch = list(people)
            batch[b] = replaced(people[b], exact, parts, what)
            fit = rec.fitter.fit(batch, K)
            chosen = select(rec.selection, model, batch, fit)
            with torch.no_grad():
                out = model({k: v[b:b + 1] for k, v in chosen.params.items()})
            v, j = out.vertices[0].numpy(), out.joints[0].numpy()
            params = {k: t[b].numpy() for k, t in chosen.params.items()}
            row = rows[label]
            row["body"].append(pa_error(_coco(model, v, j), _coco(model, sp.vertices, sp.joints)))
            for hand in HANDS:
                if not sp.visible[hand]:
                    continue
                seen = people[b].get(hand) is not None
                e = pa_error(v[pv[hand]], sp.vertices[pv[hand]])
                row["hand"].append(e)
                if seen:
                    row["seen"].append(e)
                if not parts:
                    r = pa_error(_at_rest(model, params, hand)[pv[hand]], sp.vertices[pv[hand]])
                    rest_hand.append(r)
                    if seen:
                        rest_seen.append(r)
            fitted, at_rest = expression_errors(model, sp, v,
                                                _at_rest(model, params, "face")[pv["face"]])
            row["expr"].append(fitted)
            if not parts:
                rest_expr.append(at_rest)
        print(f"seed {args.seed + i}: " + ", ".join(
            f"{label.split(':')[0]} {rows[label]['body'][-1] * 1000:.1f}"
            for label, _, _ in VARIANTS[:3]), file=sys.stderr, flush=True)
    if not found:
        print("the experts found nobody in any render", file=sys.stderr)
        return 1

    def med(values: list[float], scale: float) -> str:
        return f"{np.median(values) * scale:.1f}" if values else "-"

    def med2(values: list[float]) -> str:
        return f"{np.median(values):.2f}" if values else "-"

    table = ["| expert outputs | body PA-MPJPE (COCO 23 kp) | hand PA-PVE (visible) | "
             "hand PA-PVE (visible, observed) | face expression error |",
             "|---|---:|---:|---:|---:|"]
    for label, _, _ in VARIANTS:
        r = rows[label]
        table.append(f"| {label} | {med(r['body'], 1000)} | {med(r['hand'], 1000)} | "
                     f"{med(r['seen'], 1000)} | {med2(r['expr'])} |")
    table.append(f"| (part at rest: the fit's hands / expression put back to rest) | | "
                 f"{med(rest_hand, 1000)} | {med(rest_seen, 1000)} | {med2(rest_expr)} |")
    name = "default" if args.config is None else args.config.stem
    text = "\n".join([
        f"Configuration {name}; {found} of {args.n} renders (seeds {args.seed}.."
        f"{args.seed + args.n - 1}, 640x640, 2.6 m) with someone found; medians in mm, the "
        f"hands over the {len(rows[VARIANTS[0][0]]['hand'])} visible ones (in the frame, "
        "at least 20 px, half their vertices not hidden), of which the experts observed "
        f"{len(rows[VARIANTS[0][0]]['seen'])}. The renders' "
        "people, the fit and the selection scheme are the pipeline's; each row fits again "
        "with one expert output replaced by the truth (positions only: the experts' "
        "confidences and blendshapes are kept, and a part the experts missed stays missing). "
        "Face expression error: `furpe.metrics.displacement_error` (what the expression does "
        "to the face). The gap between a row and the first is what that output's errors "
        "cost.", "", *table])
    print(f"\n## {TITLE}\n\n{text}")
    if not args.no_write:
        body = "\n".join([_report.header(TITLE, _report.command_line("bench_attribution.py",
                                                                        argv)), text])
        _report.write_section(args.results_file, "bench_attribution", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
