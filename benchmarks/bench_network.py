"""The trained network against the expert path: accuracy on the synthetic set and speed.

    python benchmarks/bench_network.py [--checkpoint CKPT] [--n 50] [--data DIR]
                                       [--results-file docs/results.md] [--no-write]

Scores, on the first ``--n`` images of the standard synthetic set (``make results``' set,
generated if missing), the network (``--method network``), with ``--flip-test``, with
``--refine`` and with ``--fit-landmarks``, the expert path (``--method experts``) and the mean
pose (the neutral body, which PA-MPJPE only rotates and scales into place): medians over the
same images.
Then the speed of the network per person crop at batch 1 and batch 32 on PyTorch and ONNX
Runtime (CPU, two torch threads), against the expert path's seconds per image, and of each
path per image (torch on the threads ``furpe reconstruct`` gives it: one where it fits).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _report
import numpy as np
import torch

from furpe.cli import _one_thread_for_fits
from furpe.config import ReconstructConfig
from furpe.core.registry import create
from furpe.datasets.base import Prediction, ProtocolOptions, Sample
from furpe.datasets.synthetic import SyntheticDataset, generate
from furpe.evaluation.methods import Method, prediction_from_person
from furpe.evaluation.runner import evaluate, latest_records

REPO = _report.REPO
TITLE = "The whole-body network against the expert path"
METRICS = (("PA-MPJPE", "pa_mpjpe_mm"), ("MPJPE (mid-hip)", "mpjpe_mm"),
           ("PA-PVE", "pa_pve_mm"), ("left hand PA-PVE", "pa_pve_left_hand_mm"),
           ("right hand PA-PVE", "pa_pve_right_hand_mm"), ("face PA-PVE", "pa_pve_face_mm"))


class MeanPose(Method):
    """The neutral body whatever the image (a baseline a method must beat)."""

    name = "mean-pose"

    def __init__(self, config: ReconstructConfig) -> None:
        from furpe.bodymodels import load_body_model

        self.model = load_body_model(config.body_model, config.model_path)
        with torch.no_grad():
            out = self.model(self.model.neutral_params(1))
        self.vertices, self.joints = out.vertices[0].numpy(), out.joints[0].numpy()

    def predict(self, sample: Sample) -> Prediction:
        return prediction_from_person(self.model, self.vertices, self.joints)


def _median(records: list[dict], key: str) -> str:
    values = [r["metrics"][key] for r in records
              if r.get("metrics") and r["metrics"].get(key) is not None]
    return f"{statistics.median(values):.1f}" if values else "-"


NETWORK_PATH = "furpe reconstruct --method network (detector + network + mesh)"
FLIP_PATH = "furpe reconstruct --method network --flip-test (each crop also mirrored)"
REFINE_PATH = "furpe reconstruct --method network --refine (network, experts, fit from it)"
FIT_PATH = ("furpe reconstruct --method network --fit-landmarks (network, fit to its encoder's "
            "landmarks)")
EXPERT_PATH = "expert path (experts + fit)"


def _speed(checkpoint: str | None, images: list[np.ndarray], config: ReconstructConfig
           ) -> list[tuple[str, float]]:
    from furpe.bodymodels import load_body_model
    from furpe.networks.export import export_onnx
    from furpe.networks.inference import NetworkPredictor, load_network, person_crops
    from furpe.pipeline import Reconstructor

    model = load_body_model("anny")
    net = load_network(checkpoint, model)
    S = net.config.input_size
    K = np.array([[800.0, 0, 320], [0, 800.0, 320], [0, 0, 1]])
    crops = person_crops([images[0]] * 32, [[(200, 100, 440, 600)]] * 32, [K] * 32, S)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "net.onnx"
        export_onnx(net, onnx, check=False)
        for runtime, predictor in (("PyTorch", NetworkPredictor(net)),
                                   ("ONNX Runtime", NetworkPredictor(net, onnx=onnx))):
            for batch in (1, 32):
                sub = type(crops)(crops.images[:batch], crops.K[:batch], crops.A[:batch])
                predictor.raw(sub)  # warm-up
                times = []
                for _ in range(5 if batch > 1 else 20):
                    t = time.perf_counter()
                    predictor.raw(sub)
                    times.append(time.perf_counter() - t)
                rows.append((f"network forward, {runtime}, batch {batch}: s per person",
                             statistics.median(times) / batch))
    for name, cfg in ((NETWORK_PATH, config.replace(method="network", checkpoint=checkpoint)),
                      (FLIP_PATH, config.replace(method="network", checkpoint=checkpoint,
                                                 flip_test=True)),
                      (REFINE_PATH, config.replace(method="network", checkpoint=checkpoint,
                                                   refine=True)),
                      (FIT_PATH, config.replace(method="network", checkpoint=checkpoint,
                                                fit_landmarks=True)),
                      (EXPERT_PATH, config)):
        torch.set_num_threads(2)
        rec = _one_thread_for_fits(Reconstructor(cfg))  # the threads furpe reconstruct sets
        rec.reconstruct_image(images[0])  # warm-up
        times = []
        for img in images:
            t = time.perf_counter()
            rec.reconstruct_image(img)
            times.append(time.perf_counter() - t)
        rows.append((f"{name}: s per image", statistics.median(times)))
    torch.set_num_threads(2)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="network checkpoint (default: the shipped one)")
    ap.add_argument("--n", type=int, default=50, help="images of the set to score (default 50)")
    ap.add_argument("--data", type=Path, default=REPO / "out" / "synthetic-n200-s0-640",
                    help="the synthetic set (default: make results' set; generated if missing)")
    ap.add_argument("--speed-images", type=int, default=5, help="images timed per path")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    if not (args.data / "manifest.json").is_file():
        generate(args.data, 200, seed=0, width=640, height=640)
    dataset = SyntheticDataset(args.data, ProtocolOptions())
    base = ReconstructConfig(device="cpu")
    methods = {
        "mean pose": lambda: MeanPose(base),
        "network": lambda: create("method", "network",
                                  base.replace(method="network", checkpoint=args.checkpoint)),
        "network --flip-test": lambda: create("method", "network", base.replace(
            method="network", checkpoint=args.checkpoint, flip_test=True)),
        "network --refine": lambda: create("method", "network", base.replace(
            method="network", checkpoint=args.checkpoint, refine=True)),
        "network --fit-landmarks": lambda: create("method", "network", base.replace(
            method="network", checkpoint=args.checkpoint, fit_landmarks=True)),
        "experts": lambda: create("method", "experts", base),
    }
    records: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in methods.items():
            t = time.perf_counter()
            summary = evaluate(dataset, factory, Path(tmp) / name.replace(" ", "_"),
                               method_name=name.split()[0].replace("mean", "mean-pose"),
                               limit=args.n, progress=False)
            records[name] = latest_records(summary.samples_file, summary.results["sample_ids"])
            print(f"{name}: {summary.line()} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)

    lines = ["| method | " + " | ".join(m for m, _ in METRICS) + " | failed |",
             "|---|" + "---:|" * (len(METRICS) + 1)]
    for name, recs in records.items():
        failed = sum(1 for r in recs if not r.get("metrics"))
        lines.append(f"| {name} | " + " | ".join(_median(recs, k) for _, k in METRICS)
                     + f" | {failed} |")
    from furpe.io.inputs import read_image

    samples = list(dataset.samples())[:args.speed_images]
    images = [read_image(Path(s.image_path)) for s in samples]
    gauge = _report.speed_reference()
    speed = _speed(args.checkpoint, images, base)
    gauge_end = _report.speed_reference()
    lines += ["", "| speed (CPU; 2 torch threads, 1 for the paths that fit, as `furpe "
                  "reconstruct` sets them) | seconds |", "|---|---:|"]
    lines += [f"| {name} | {secs:.4f} |" for name, secs in speed]
    secs = dict(speed)
    net_person = secs["network forward, PyTorch, batch 1: s per person"]
    expert_image = secs[f"{EXPERT_PATH}: s per image"]
    lines += ["", f"Network forward at batch 1 vs the expert path (one person per image): "
                  f"x{expert_image / net_person:.0f} faster per person; whole `--method "
                  f"network` reconstruction (person detector, network, mesh): "
                  f"x{expert_image / secs[f'{NETWORK_PATH}: s per image']:.1f}; `--flip-test`: "
                  f"x{expert_image / secs[f'{FLIP_PATH}: s per image']:.1f}; `--refine`: "
                  f"x{expert_image / secs[f'{REFINE_PATH}: s per image']:.2f}; "
                  f"`--fit-landmarks`: x{expert_image / secs[f'{FIT_PATH}: s per image']:.1f}.",
              "", _report.gauge_line(gauge, gauge_end)]
    text = "\n".join(lines)
    print(f"\n## {TITLE}\n\n{text}")
    if not args.no_write:
        what = (f"First {args.n} images of the standard synthetic set (seed 0, 640x640), "
                f"checkpoint `{args.checkpoint or 'shipped (furpe/data/networks/furpe-small.pt)'}`; "
                "medians in mm (hands and face where visible). See MODELS.md for how the "
                "network was trained.")
        body = "\n".join([_report.header(TITLE, _report.command_line("bench_network.py", argv)),
                          what, "", text])
        _report.write_section(args.results_file, "bench_network", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
