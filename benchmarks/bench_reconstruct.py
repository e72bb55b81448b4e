"""Benchmark the reconstruction pipeline on seeded synthetic Anny renders with exact ground truth.

    python benchmarks/bench_reconstruct.py [--n 50] [--seed 0] [--device cpu]
                                           [--results-file docs/results.md] [--no-write]

For each of ``n`` renders (``make_person(model, seed + i, 640, 640, distance=2.6)``) it runs
``Reconstructor.reconstruct_image`` and renders the overlay (``furpe.render.overlay``), and
collects per-stage times and errors (torch on the threads ``furpe reconstruct`` gives a fit:
one), then prints a Markdown table (median and 90th percentile)
and writes it, with what the rows mean, into its section of ``docs/results.md`` (``_report``;
``--no-write`` only prints).

Errors (millimetres, after Procrustes alignment = similarity transform without reflection,
``furpe.metrics.pa_mpjpe``), each on one part, aligned on that part alone:

* body PA-MPJPE: Anny's COCO keypoint regressor (17 COCO body keypoints + 6 feet keypoints =
  23 points) applied to the predicted and to the ground-truth mesh;
* joints PA-MPJPE: all 104 Anny joints (incl. fingers and toes), aligned as one set;
* body-part / face PA-PVE: the vertices of ``model.part_vertices["body"]`` / ``["face"]``;
* hand PA-PVE: the vertices of each hand, over the hands that are visible in the render (in
  the frame, at least 20 px, and at least half of the hand's vertices not hidden:
  ``furpe.synthetic.part_visibility``) and accepted by the selection scheme, and (second row)
  over all visible hands;
* baseline rows, "fit, part at rest": the same error for our fitted person with only that
  hand's finger pose (or the face's expression and gaze) put back to the model's neutral
  values: what the fit would score without that part's expert, so the difference is what the
  expert adds. (The part errors also hold the fitted shape's error: hand proportions and
  face shape come from the phenotype.)
* face expression error: what the expression does, apart from identity shape
  (``furpe.metrics.displacement_error``): the displacement of the face vertices
  from the same face with expression and gaze at rest, predicted against true; its "face at
  rest" row (no displacement) is the mean size of the true expression.
* "fit to exact landmarks" rows: the same fit given what the built-in experts would report if
  they were exact (``furpe.synthetic.exact_observations``: the true landmarks, confidence 1):
  the fit's own error (optimiser, priors, correspondences), so the gap to the rows above is
  what the experts' errors cost.

A render where the experts find nobody counts as a miss (not a crash).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _report
from furpe.cli import _one_thread_for_fits
from furpe.bodymodels.anny_model import AnnyBodyModel, load_anny
from furpe.bodymodels.base import apply_regressor
from furpe.core.errors import NoPersonError
from furpe.metrics import displacement_error, pa_mpjpe
from furpe.io.outputs import person_meshes
from furpe.config import ReconstructConfig, load_config
from furpe.pipeline import Reconstructor
from furpe.render import overlay
from furpe.synthetic import exact_observations, make_person


def pa_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """PA error in metres (the metrics module returns millimetres)."""
    return pa_mpjpe(pred, gt) / 1000.0


HANDS = ("left_hand", "right_hand")


def _at_rest(model, params: dict[str, np.ndarray], part: str) -> np.ndarray:
    """Vertices of a fitted person with only ``part``'s blocks at their neutral value."""
    p = {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in params.items()}
    with torch.no_grad():
        return model(model.at_rest(p, part)).vertices[0].cpu().numpy()


def expression_errors(model, sp, vertices: np.ndarray, rest: np.ndarray) -> tuple[float, float]:
    """(fitted, at rest) face expression errors in mm (``furpe.metrics.displacement_error``)
    of a fitted person's ``vertices`` whose face at rest is ``rest`` (the face's vertices,
    :func:`_at_rest`), against the render ``sp``; at rest it is the true expression's size."""
    face = model.part_vertices["face"]
    with torch.no_grad():
        gt_rest = model(model.at_rest(sp.params, "face")).vertices[0].cpu().numpy()[face]
    gt_face = sp.vertices[face]
    return (displacement_error(vertices[face], rest, gt_face, gt_rest),
            displacement_error(rest, rest, gt_face, gt_rest))


def _height(vertices: np.ndarray) -> float:
    """A standing person's height: the vertical (camera y) extent of the mesh."""
    return float(np.ptp(vertices[:, 1]))


def _coco(model, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    pts = torch.cat([torch.as_tensor(vertices, dtype=torch.float32),
                     torch.as_tensor(joints, dtype=torch.float32)])[None]
    return apply_regressor(model.regressors["coco"], pts)[0].numpy()


FRESH_LOAD_RUNS = 5

#: What the rows mean: written above the table in docs/results.md.
EXPLANATION = """\
Seeded synthetic Anny renders (`make_person(model, seed, 640, 640, distance=2.6)`: standing
adults, 640x640, 2.6 m away, exact ground truth). Times per image: the part experts, the fit,
the overlay render, and their total. Errors in millimetres after similarity Procrustes alignment
(no reflection): body on Anny's 23 COCO(+feet) keypoints, joints on all 104 Anny joints, per
part on that part's vertices, re-aligned per part. A hand counts as visible when it is in the
frame, at least 20 px, and at least half of its vertices are not hidden
(`furpe.synthetic.part_visibility`); "accepted" means accepted by the selection scheme. A
render where the experts find nobody counts as a miss.

- **"fit, part at rest"** rows score our own fit with only that part (a hand's fingers, the
  face's expression and gaze) put back to the model's neutral pose: what the fit would score
  without that part's expert, so the difference is what the expert adds.
- **"face expression error"** (`furpe.metrics.displacement_error`) compares what the
  expression does to the face (displacement from the same face with expression and gaze at
  rest), so identity shape does not count; its "face at rest" row is the mean size of the true
  expression.
- **"fit to exact landmarks"** rows give the same fit what the built-in experts would report if
  they were exact (`furpe.synthetic.exact_observations`: the true landmarks, confidence 1,
  centred 3D for body and hands): they measure the fit alone, so the gap to the rows above is
  what the experts' errors cost. They run after the timed loop.
- **camera-frame** rows use no alignment: the 104 joints where the fit put them (MPJPE), and
  the depth error of their centre. In one image a person's size and distance trade off, so
  they follow the fitted height (printed below the table with their correlation).
"""


def _fresh_load_seconds(runs: int = FRESH_LOAD_RUNS) -> float | None:
    """Median model load time over ``runs`` fresh processes (the cache already exists),
    imports included."""
    code = ("import time; t = time.perf_counter(); "
            "from furpe.bodymodels.anny_model import AnnyBodyModel; AnnyBodyModel(); "
            "print(time.perf_counter() - t)")
    times = []
    for _ in range(runs):
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 timeout=600, cwd=Path(__file__).resolve().parents[1])
            times.append(float(out.stdout.strip().splitlines()[-1]))
        except Exception:  # noqa: BLE001 - reported as n/a
            return None
    return float(np.median(times))


def _stats(values: list[float], scale: float = 1.0, digits: int = 1) -> tuple[str, str, str]:
    if not values:
        return "n/a", "n/a", "0"
    a = np.asarray(values) * scale
    return f"{np.median(a):.{digits}f}", f"{np.percentile(a, 90):.{digits}f}", str(len(a))


def _batch_seconds(rec: Reconstructor, images: list[np.ndarray]) -> float | None:
    """Wall-clock seconds per image of reconstructing ``images`` in sequence with the
    look-ahead and one torch thread (what ``furpe reconstruct`` does on a folder), overlays
    included; None for fewer than two images."""
    if len(images) < 2:
        return None

    def step(image: np.ndarray) -> None:
        frame = rec.reconstruct_image(image)
        overlay(image, person_meshes(frame), frame.intrinsics)

    return _report.with_lookahead(rec.prefetch, step, images) / len(images)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="number of synthetic renders")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    ap.add_argument("--no-subprocess-load", action="store_true",
                    help="skip timing model loads in fresh processes")
    ap.add_argument("--config", type=Path, default=None,
                    help="a configuration file (configs/*.yaml); its results get their own "
                         "section, named after the file")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)

    gauge_start = _report.speed_reference()
    t = time.perf_counter()
    model = load_anny()
    first_load = time.perf_counter() - t
    t = time.perf_counter()
    AnnyBodyModel()
    second_load = time.perf_counter() - t
    fresh = None if args.no_subprocess_load else _fresh_load_seconds()
    config = ReconstructConfig() if args.config is None else load_config(args.config)
    # Torch as `furpe reconstruct` sets it for fits (one thread: the fit gains nothing from a
    # second, and the hand and face experts run on the other core during its first stage).
    rec = _one_thread_for_fits(Reconstructor(config.replace(device=args.device),
                                             body_model=model))

    times: dict[str, list[float]] = {"experts": [], "fit": [], "render": [], "total": []}
    errs: dict[str, list[float]] = {k: [] for k in (
        "body PA-MPJPE (COCO 23 kp)", "joints PA-MPJPE (104 Anny joints)", "body-part PA-PVE",
        "face PA-PVE (face accepted)", "face PA-PVE (all)", "face PA-PVE, fit, face at rest (all)",
        "face expression error (all)", "face expression error, face at rest (all)",
        "hand PA-PVE (visible & accepted)", "hand PA-PVE, fit, hand at rest (visible & accepted)",
        "hand PA-PVE (all visible)", "hand PA-PVE, fit, hand at rest (all visible)",
        "joints MPJPE, camera frame (104 Anny joints)", "depth error of the joints' centre",
        "body PA-MPJPE, fit to exact landmarks", "face PA-PVE, fit to exact landmarks",
        "hand PA-PVE, fit to exact landmarks (all visible)")}
    found = misses = hands_visible = hands_accepted = faces_accepted = 0
    failures: list[str] = []
    truths = []  # the renders whose person was found, for the exact-landmark fits
    depths: list[float] = []  # signed depth errors of the joints' centre (m)
    heights: list[float] = []  # fitted height / true height
    pv = model.part_vertices
    for i in range(args.n):
        seed = args.seed + i
        sp = make_person(model, seed, 640, 640, distance=2.6)
        try:
            frame = rec.reconstruct_image(sp.image)
        except NoPersonError:
            misses += 1
            continue
        except Exception as exc:  # noqa: BLE001 - a failure is counted, not fatal
            failures.append(f"seed {seed}: {type(exc).__name__}: {exc}")
            continue
        t = time.perf_counter()
        overlay(sp.image, person_meshes(frame), frame.intrinsics)
        render_s = time.perf_counter() - t
        found += 1
        for k in ("experts", "fit"):
            times[k].append(frame.timings[k])
        times["render"].append(render_s)
        times["total"].append(frame.timings["total"] + render_s)
        # the person nearest the image centre is the synthetic one
        person = min(frame.people, key=lambda p: abs((p.box[0] + p.box[2]) / 2 - 320))
        v, j = person.vertices, person.joints
        truths.append(sp)
        errs["body PA-MPJPE (COCO 23 kp)"].append(
            pa_error(_coco(model, v, j), _coco(model, sp.vertices, sp.joints)))
        errs["joints PA-MPJPE (104 Anny joints)"].append(pa_error(j, sp.joints))
        errs["joints MPJPE, camera frame (104 Anny joints)"].append(
            float(np.linalg.norm(j - sp.joints, axis=1).mean()))
        depth = float(j[:, 2].mean() - sp.joints[:, 2].mean())
        errs["depth error of the joints' centre"].append(abs(depth))
        depths.append(depth)
        heights.append(_height(v) / _height(sp.vertices))
        errs["body-part PA-PVE"].append(pa_error(v[pv["body"]], sp.vertices[pv["body"]]))
        face = pa_error(v[pv["face"]], sp.vertices[pv["face"]])
        errs["face PA-PVE (all)"].append(face)
        rest = _at_rest(model, person.params, "face")[pv["face"]]
        errs["face PA-PVE, fit, face at rest (all)"].append(pa_error(rest, sp.vertices[pv["face"]]))
        fitted, at_rest = expression_errors(model, sp, v, rest)
        errs["face expression error (all)"].append(fitted / 1000.0)
        errs["face expression error, face at rest (all)"].append(at_rest / 1000.0)
        if person.parts["face"].accepted:
            faces_accepted += 1
            errs["face PA-PVE (face accepted)"].append(face)
        for hand in HANDS:
            if not sp.visible[hand]:
                continue
            hands_visible += 1
            e = pa_error(v[pv[hand]], sp.vertices[pv[hand]])
            rest = _at_rest(model, person.params, hand)
            r = pa_error(rest[pv[hand]], sp.vertices[pv[hand]])
            errs["hand PA-PVE (all visible)"].append(e)
            errs["hand PA-PVE, fit, hand at rest (all visible)"].append(r)
            if person.parts[hand].accepted:
                hands_accepted += 1
                errs["hand PA-PVE (visible & accepted)"].append(e)
                errs["hand PA-PVE, fit, hand at rest (visible & accepted)"].append(r)
        print(f"seed {seed}: fit {frame.timings['fit']:.1f} s, body "
              f"{errs['body PA-MPJPE (COCO 23 kp)'][-1] * 1000:.1f} mm", file=sys.stderr,
              flush=True)

    # The same fit given exact landmarks, after the timed loop so as not to disturb its timings.
    for sp in truths:
        truth = model({k: t.to(rec.device) for k, t in sp.params.items()})
        exact = rec.fitter.fit(exact_observations(model, truth, sp.intrinsics), sp.intrinsics,
                               device=rec.device).output
        ev, ej = exact.vertices[0].detach().cpu().numpy(), exact.joints[0].detach().cpu().numpy()
        errs["body PA-MPJPE, fit to exact landmarks"].append(
            pa_error(_coco(model, ev, ej), _coco(model, sp.vertices, sp.joints)))
        errs["face PA-PVE, fit to exact landmarks"].append(
            pa_error(ev[pv["face"]], sp.vertices[pv["face"]]))
        errs["hand PA-PVE, fit to exact landmarks (all visible)"].extend(
            pa_error(ev[pv[h]], sp.vertices[pv[h]]) for h in HANDS if sp.visible[h])

    batch = _batch_seconds(rec, [sp.image for sp in truths])

    label = "" if args.config is None else f", configuration {args.config.stem}"
    run = (f"n={args.n}{label}, seeds {args.seed}..{args.seed + args.n - 1}, 640x640, distance 2.6 m, "
           f"device {rec.device}, torch threads {torch.get_num_threads()}")
    fl = "n/a" if fresh is None else f"{fresh:.2f} s"
    lines = [
        f"Model load: first in this process {first_load:.2f} s, again in-process "
        f"{second_load:.2f} s, in a fresh process {fl} (median of {FRESH_LOAD_RUNS}, imports "
        "included).", "",
        f"People found: {found}/{args.n} (misses {misses}, failures {len(failures)}); "
        f"hands accepted/visible: {hands_accepted}/{hands_visible}; faces accepted: "
        f"{faces_accepted}/{found}.", "",
        "| metric | median | p90 | count |",
        "|---|---:|---:|---:|",
    ]
    for k, vals in times.items():
        med, p90, n = _stats(vals, digits=3)
        lines.append(f"| time {k} (s) | {med} | {p90} | {n} |")
    for k, vals in errs.items():
        med, p90, n = _stats(vals, 1000.0)
        lines.append(f"| {k} (mm) | {med} | {p90} | {n} |")
    if batch is not None:
        mean_total = float(np.mean(times["total"]))
        lines += ["", f"In a batch (the {len(truths)} renders found, in sequence, each with its "
                      f"overlay, the experts of the next one running during this one's fit: "
                      f"`Reconstructor.prefetch` with 1 torch thread, as `furpe reconstruct` "
                      f"on a folder): {batch:.3f} s per image (wall-clock / images), against "
                      f"a mean total of {mean_total:.3f} s one image at a time: "
                      f"x{mean_total / batch:.2f}."]
    if len(heights) > 1:
        h, d = np.array(heights), np.array(depths)
        lines += ["", f"Fitted height / true height: median {np.median(h):.3f} (p10 "
                      f"{np.percentile(h, 10):.3f}, p90 {np.percentile(h, 90):.3f}); signed depth "
                      f"error median {np.median(d) * 1000:+.0f} mm; correlation of the two "
                      f"{np.corrcoef(h, d)[0, 1]:.2f}."]
    lines += ["", _report.gauge_line(gauge_start, _report.speed_reference())]
    for f in failures:
        lines += ["", f"failure: {f}"]
    title = f"furpe reconstruction benchmark: {run}"
    print(f"\n## {title}\n")
    print("\n".join(lines))
    if not args.no_write:
        note = _report.quick_note({"n": args.n, "seed": args.seed}, {"n": 50, "seed": 0}, "bench")
        body = "\n".join([_report.header(title, _report.command_line(
            "bench_reconstruct.py", argv), note), EXPLANATION, *lines])
        section = "bench_reconstruct" + ("" if args.config is None else f"_{args.config.stem}")
        _report.write_section(args.results_file, section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
