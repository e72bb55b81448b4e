"""The ``furpe`` command line: ``reconstruct``, ``evaluate`` and ``make-synthetic``.

Exit status: 0 every input (or evaluation sample) succeeded; 1 some failed (one
``furpe: error:`` line each, then a summary line); 2 usage or configuration error (bad option,
SMPL-X without ``--model-path``, model files missing, an incomplete dataset folder); 130
interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import furpe
from furpe.core.errors import DatasetError, FurpeError, SetupError
from furpe.core.registry import names
from furpe.io.console import format_error, internal_error

__all__ = ["build_config", "build_parser", "default_factory", "default_method_factory", "main"]


def default_factory(config: Any) -> Any:
    """Build the real :class:`furpe.pipeline.Reconstructor` (slow: loads the models)."""
    from furpe.pipeline import Reconstructor

    return Reconstructor(config)


def default_method_factory(name: str, config: Any) -> Any:
    """Build the evaluated method ``name`` from the registry (kind ``method``)."""
    from furpe.core.registry import create

    return create("method", name, config)


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~furpe.config.ReconstructConfig` of a command: ``--config FILE`` (or the
    defaults), with the options given on the command line on top."""
    from furpe.config import ReconstructConfig, load_config

    config = load_config(args.config) if getattr(args, "config", None) else ReconstructConfig()
    keys = ["body_model", "model_path", "device", "focal", "max_people", "checkpoint", "onnx",
            "refine", "fit_landmarks", "flip_test"]
    if args.command == "reconstruct":  # evaluate's --method names the evaluated method
        keys.append("method")
    changes = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    if any(changes.get(k) for k in ("refine", "fit_landmarks", "flip_test", "checkpoint",
                                      "onnx")):
        changes.setdefault("method", "network")
    smooth = getattr(args, "smooth", None)
    if smooth is not None:  # 0: off; else a strength relative to the default settings
        from furpe.tracking import SmoothingConfig

        d_cutoff = config.smoothing.d_cutoff
        changes["smoothing"] = (SmoothingConfig(enabled=False, d_cutoff=d_cutoff) if smooth == 0
                                else SmoothingConfig(d_cutoff=d_cutoff).with_strength(smooth))
    return config.replace(**changes) if changes else config


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PIXELS or WIDTHxHEIGHT, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 32:
        raise argparse.ArgumentTypeError(f"expected PIXELS or WIDTHxHEIGHT of at least 32, "
                                         f"got {text!r}")
    return values[0], values[1]


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_non_negative_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return value


def _smooth_strength(text: str) -> float:
    """``--smooth``: ``off`` (0) or a positive strength."""
    if text.strip().lower() in ("off", "none", "0"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected off or a strength, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be off or a positive strength, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``furpe``."""
    parser = argparse.ArgumentParser(
        prog="furpe",
        description="Whole-body 3D human reconstruction (body, hands, face) from images and "
                    "videos, by fusing part experts (FuRPE).",
        epilog="Run 'furpe COMMAND --help' for the options of a command. Output format: "
               "docs/output-format.md; evaluation: docs/evaluation.md.",
    )
    parser.add_argument("--version", action="version", version=f"furpe {furpe.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rec = sub.add_parser(
        "reconstruct", help="reconstruct the people in images and videos",
        description="Reconstruct every person in the given images, videos and folders. "
                    "Writes per image NAME.json, NAME_overlay.png and NAME_person<k>.ply; "
                    "per video NAME/frame_<i>.json (+ meshes), NAME/video.json and "
                    "NAME_overlay.mp4.",
    )
    rec.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="image or video files, or folders of them")
    rec.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="output folder (created if needed)")
    rec.add_argument("--recursive", action="store_true",
                     help="also search sub-folders of input folders (output keeps the "
                          "sub-folder layout)")
    rec.add_argument("--config", metavar="FILE",
                     help="configuration (JSON or YAML; a result JSON reuses the "
                          "configuration it records); options given here override it")
    _add_body_model(rec)
    rec.add_argument("--method", choices=("experts", "network"),
                     help="experts: part experts and the whole-body fit (default); network: a "
                          "trained network, one forward pass per person (see MODELS.md)")
    _add_network(rec)
    _add_camera_and_people(rec, "reconstruct")
    rec.add_argument("--smooth", type=_smooth_strength, metavar="STRENGTH|off",
                     help="videos: temporal smoothing of each tracked person (One-Euro "
                          "filters): off, or a strength (default 1; 2 = smoother with more "
                          "lag, 0.5 = lighter); config keys smoothing and tracking")
    rec.add_argument("--no-overlay", action="store_true",
                     help="do not render overlay images / videos")
    rec.add_argument("--no-mesh", action="store_true", help="do not write PLY meshes")
    rec.add_argument("--no-side-view", action="store_true",
                     help="videos: the overlay MP4 without the side view of a second "
                          "virtual camera next to it")
    rec.add_argument("--show", action="store_true",
                     help="also write OUT/contact_sheet.png: every input's overlay in a grid")
    rec.add_argument("--export", metavar="FORMATS",
                     help="also export every tracked person as animation files, e.g. glb,bvh "
                          "(as 'furpe export OUT -o OUT'; see docs/export.md)")
    rec.add_argument("--resume", action="store_true",
                     help="skip inputs (and video frames) whose results already exist")
    rec.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bars and no summary line (errors are still printed)")
    _add_device_and_debug(rec)
    _add_evaluate(sub)
    _add_make_synthetic(sub)
    _add_label(sub)
    _add_train(sub)
    _add_export(sub)
    return parser


def _add_network(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--onnx``, ``--refine``, ``--fit-landmarks`` and ``--flip-test``
    (each implies the network method)."""
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="network checkpoint (model.pt or last.pt of 'furpe train'; default: "
                        "the shipped one)")
    p.add_argument("--onnx", metavar="FILE",
                   help="run the network on ONNX Runtime from this file ('furpe export-onnx')")
    p.add_argument("--refine", action="store_true", default=None,
                   help="also run the experts and fit from the network's estimate (short "
                        "warm-start fit)")
    p.add_argument("--fit-landmarks", action="store_true", default=None,
                   help="fit each person's body to the landmarks the network's pose encoder "
                        "saw, from the network's estimate (no experts; about 0.6 s more per "
                        "image)")
    p.add_argument("--flip-test", action="store_true", default=None,
                   help="also run each person crop mirrored and average the two estimates "
                        "(twice the network's time; more accurate)")


def _add_train(sub: Any) -> None:
    tr = sub.add_parser(
        "train", help="train the whole-body network on label shards",
        description="Train the whole-body network (recipes standard, multiloss, ema) on the "
                    "label shards of 'furpe label' and 'furpe make-synthetic --format "
                    "webdataset'. Writes OUT/last.pt (resumable), OUT/model.pt (for "
                    "--checkpoint), OUT/log.jsonl and OUT/tensorboard/. Runs under torchrun "
                    "for several processes or machines. See docs/training.md.")
    tr.add_argument("--config", required=True, metavar="FILE",
                    help="training configuration (YAML or JSON; configs/train-*.yaml)")
    tr.add_argument("--output", "-o", metavar="OUT",
                    help="output folder (overrides the configuration's 'output')")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in the output folder from its last checkpoint")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_device_and_debug(tr)
    ex = sub.add_parser(
        "export-onnx", help="export a trained network to ONNX",
        description="Write a network checkpoint as an ONNX model (inputs: person crops and "
                    "their intrinsics) and check it against PyTorch with ONNX Runtime.")
    ex.add_argument("checkpoint", metavar="CKPT", help="model.pt or last.pt of 'furpe train'")
    ex.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="ONNX file")
    _add_body_model(ex)
    ex.add_argument("--debug", action="store_true",
                    help="show tracebacks of internal errors (for developers)")


def _split_arg(text: str) -> tuple[int, int]:
    from furpe.labels.engine import parse_split

    try:
        return parse_split(text)
    except FurpeError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--shard {text}: ")) from None


def _min_score(text: str) -> tuple[str, float]:
    from furpe.core.vocab import PARTS

    part, sep, value = text.partition("=")
    try:
        score = float(value)
    except ValueError:
        score = -1.0
    if not sep or part not in PARTS or not 0 <= score <= 1:
        raise argparse.ArgumentTypeError(
            f"expected PART=SCORE with PART one of {', '.join(PARTS)} and SCORE in [0, 1], "
            f"got {text!r}")
    return part, score


def _add_label(sub: Any) -> None:
    lb = sub.add_parser(
        "label", help="label images and videos with pseudo labels (WebDataset shards)",
        description="Run the experts, the fit and the selection scheme on every image and "
                    "every K-th video frame, and store one sample per image/frame (the label "
                    "JSON and the image) in WebDataset shards OUT/labels-<i>of<n>-<seq>.tar, "
                    "then OUT/index.json. Run the same command again to resume. Under "
                    "torchrun each rank takes its share. See docs/labels.md.")
    lb.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="image or video files, folders of them, or list files (.txt/.lst: "
                         "one path per line)")
    lb.add_argument("-o", "--output", required=True, metavar="OUT", help="shard folder")
    lb.add_argument("--recursive", action="store_true", help="also search sub-folders")
    lb.add_argument("--config", metavar="FILE", help="configuration (JSON or YAML)")
    _add_body_model(lb)
    _add_camera_and_people(lb, "label")
    lb.add_argument("--every", type=_positive_int, default=1, metavar="K",
                    help="label every K-th frame of videos (default: 1)")
    lb.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                    help="worker processes on this machine, one torch thread each "
                         "(default: 1)")
    lb.add_argument("--shard", type=_split_arg, metavar="I/N",
                    help="label only part I of N of the inputs (0-based), e.g. one per "
                         "machine (default: torchrun's RANK/WORLD_SIZE, else 0/1)")
    lb.add_argument("--shard-size", type=_positive_int, default=1000, metavar="N",
                    help="samples per shard (default: 1000)")
    lb.add_argument("--jpeg-quality", type=_int_at_least(50), default=95, metavar="Q",
                    help="JPEG quality of the stored images (default: 95)")
    lb.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar and no summary line (errors are printed)")
    _add_device_and_debug(lb)
    ls = sub.add_parser(
        "labels", help="inspect label shards",
        description="Inspect a folder of label shards written by 'furpe label'.")
    lsub = ls.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    st = lsub.add_parser(
        "stats", help="samples, people, accepted parts and score histograms",
        description="Count samples, people, observed and accepted parts per part, print "
                    "histograms of the selection score, and what a minimum score keeps.")
    st.add_argument("folder", metavar="SHARDS", help="folder of label shards")
    st.add_argument("--min-score", type=_min_score, action="append", default=[],
                    metavar="PART=SCORE",
                    help="report how many PART labels have a selection score >= SCORE "
                         "(repeatable)")


def _add_body_model(p: argparse.ArgumentParser) -> None:
    """``--body-model`` (choices from the registry) and ``--model-path``."""
    p.add_argument("--body-model", choices=names("body_model"),
                   help="parametric body model (default: anny; smplx needs --model-path)")
    p.add_argument("--model-path", metavar="DIR",
                   help="folder with licensed model files: SMPL-X for --body-model smplx "
                        "(furpe never downloads them), SMPL for the 3DPW ground truth")


def _add_camera_and_people(p: argparse.ArgumentParser, verb: str) -> None:
    """``--focal`` and ``--max-people``."""
    p.add_argument("--focal", type=_positive_float, metavar="PIXELS",
                   help="focal length in pixels (default: estimated from the image size)")
    p.add_argument("--max-people", type=_positive_int, metavar="N",
                   help=f"{verb} at most N people per image (default: 20)")


def _add_device_and_debug(p: argparse.ArgumentParser) -> None:
    """The options of the subcommands that run the models: ``--device`` and ``--debug``."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where to run the models (default: auto = cuda if available)")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks of internal errors (for developers)")


def _add_evaluate(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate", help="evaluate a method on a benchmark dataset",
        description="Run a method on every sample of a dataset (the official layout, which "
                    "you download; or furpe's synthetic set) and score it with the dataset's "
                    "protocol. Writes OUT/<dataset>_samples.jsonl (one line per sample), the "
                    "dataset's prediction files, and OUT/<dataset>_results.json (summary); "
                    "prints a Markdown table. See docs/evaluation.md.")
    ev.add_argument("--dataset", required=True, choices=names("dataset"),
                    help="benchmark to evaluate on")
    ev.add_argument("--data-root", required=True, metavar="DIR",
                    help="the dataset's folder (for synthetic: made by 'furpe make-synthetic')")
    ev.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="output folder (created if needed)")
    ev.add_argument("--method", default="experts", choices=names("method"),
                    help="method to evaluate (default: experts = furpe's pipeline)")
    ev.add_argument("--config", metavar="FILE",
                    help="the method's configuration (JSON or YAML), as for reconstruct")
    _add_body_model(ev)
    _add_network(ev)
    ev.add_argument("--alignment", metavar="A",
                    help="alignment of the non-PA errors: standard (the dataset's protocol, "
                         "default), mid_hip or none (PA-* metrics always use Procrustes)")
    ev.add_argument("--gt-regressor", metavar="FILE",
                    help="joint regressor applied to ground-truth meshes (e.g. SMPLX_to_J14.pkl "
                         "for EHF, J_regressor_h36m.npy for 3DPW)")
    ev.add_argument("--pred-regressor", metavar="FILE",
                    help="joint regressor applied to predicted meshes")
    ev.add_argument("--part-ids", metavar="PATH",
                    help="part vertex ids of the ground-truth topology (e.g. the folder with "
                         "MANO_SMPLX_vertex_ids.pkl and SMPL-X__FLAME_vertex_ids.npy for EHF)")
    ev.add_argument("--option", action="append", type=_key_value, default=[],
                    metavar="KEY=VALUE", help="a dataset-specific option (repeatable)")
    ev.add_argument("--limit", type=_positive_int, metavar="N",
                    help="evaluate only the first N samples")
    ev.add_argument("--resume", action="store_true",
                    help="skip samples already scored in OUT/<dataset>_samples.jsonl")
    ev.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar, no table and no summary line (errors are printed)")
    _add_device_and_debug(ev)


def _add_make_synthetic(sub: Any) -> None:
    ms = sub.add_parser(
        "make-synthetic", help="generate the synthetic evaluation set",
        description="Render seeded synthetic people (Anny) with exact ground truth: "
                    "OUT/images/<id>.png, OUT/gt/<id>.npz, OUT/parts.npz and, last, "
                    "OUT/manifest.json. A rerun keeps finished samples and makes the rest "
                    "identically. See docs/evaluation.md.")
    ms.add_argument("output", metavar="OUT", help="output folder (created if needed)")
    ms.add_argument("--n", type=_positive_int, default=200, metavar="N",
                    help="number of samples (default: 200)")
    ms.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                    help="seed of the set (default: 0)")
    ms.add_argument("--size", type=_image_size, default=(640, 640), metavar="PIXELS",
                    help="image size: PIXELS (square) or WIDTHxHEIGHT (default: 640)")
    ms.add_argument("--preset", choices=("evaluation", "training"), default="evaluation",
                    help="evaluation: the evaluation set's scenes (default); training: also "
                         "WHO-calibrated shapes of all ages, upper-body and close-up framings "
                         "and occluders")
    ms.add_argument("--backgrounds", metavar="DIR",
                    help="a folder of photos without people (.jpg/.png) to composite the "
                         "person over (default: generated backgrounds)")
    ms.add_argument("--format", choices=("files", "webdataset"), default="files",
                    help="files: images/ and gt/ (the evaluation set, default); webdataset: "
                         "also OUT/shards/, the exact truth as label shards (docs/labels.md)")
    ms.add_argument("--shard-size", type=_positive_int, default=1000, metavar="N",
                    help="samples per shard with --format webdataset (default: 1000)")
    ms.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar and no summary line")


def _error(message: str) -> None:
    print(f"furpe: error: {message}", file=sys.stderr)


def _guarded(args: argparse.Namespace, action: Callable[[], Any], *, failure_code: int = 1,
             interrupted: str = "furpe: interrupted") -> tuple[int | None, Any]:
    """``(None, action())``, or ``(exit status, None)`` after one line on stderr: 2 for a
    configuration or dataset problem, 130 for Ctrl-C, ``failure_code`` for another furpe or
    file error, 1 for an internal error (re-raised with ``--debug``)."""
    try:
        return None, action()
    except (SetupError, DatasetError) as exc:
        _error(str(exc))
        return 2, None
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130, None
    except FurpeError as exc:
        _error(str(exc))
        return failure_code, None
    except OSError as exc:
        _error(f"{exc.filename or getattr(args, 'output', '')}: {exc.strerror or exc}")
        return failure_code, None
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        _error(internal_error(exc))
        return 1, None


_SMPLX_HINT = ("--body-model smplx needs --model-path DIR: the folder holding the SMPL-X "
               "model files (e.g. SMPLX_NEUTRAL.npz), which must be downloaded from "
               "https://smpl-x.is.tue.mpg.de after accepting its licence")


def _check_config(args: argparse.Namespace) -> str | None:
    """A configuration problem (exit status 2), or None."""
    if args.body_model == "smplx" and not args.model_path:  # before loading anything
        return _SMPLX_HINT
    if args.model_path is not None:
        model_path = Path(args.model_path)
        if not model_path.exists():
            return f"--model-path {args.model_path}: no such folder"
        if not model_path.is_dir():
            return f"--model-path {args.model_path}: not a folder"
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        return f"-o {args.output}: exists and is not a folder"
    return None


def main(argv: Sequence[str] | None = None,
         reconstructor_factory: Callable[[Any], Any] | None = None,
         method_factory: Callable[[str, Any], Any] | None = None) -> int:
    """Run the command line; returns the exit status.

    ``reconstructor_factory(config)`` builds the reconstructor of ``reconstruct`` (default:
    :func:`default_factory`); ``method_factory(name, config)`` the method of ``evaluate``
    (default: :func:`default_method_factory`), with ``config`` the
    :class:`~furpe.config.ReconstructConfig` of the command; tests inject fake ones.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "debug", False):
        from furpe.core.logs import set_verbose

        set_verbose(True)
    if args.command == "evaluate":
        return _evaluate(args, method_factory or default_method_factory)
    if args.command == "make-synthetic":
        return _make_synthetic(args)
    if args.command == "label":
        return _label(args, reconstructor_factory)
    if args.command == "labels":
        return _labels_stats(args)
    if args.command == "train":
        return _train(args)
    if args.command == "export-onnx":
        return _export_onnx(args)
    if args.command == "export":
        return _export(args)
    return _reconstruct(args, reconstructor_factory or default_factory)


def _check_path(option: str, value: str | None, kind: str = "any") -> str | None:
    """A problem with a path option (it must exist), or None."""
    if value is None:
        return None
    p = Path(value)
    if not p.exists():
        return f"{option} {value}: no such {'folder' if kind == 'dir' else 'file or folder'}"
    if kind == "dir" and not p.is_dir():
        return f"{option} {value}: not a folder"
    return None


def _evaluate(args: argparse.Namespace, factory: Callable[[str, Any], Any]) -> int:
    from furpe.datasets import ProtocolOptions, load_dataset
    from furpe.evaluation.runner import evaluate, markdown_table

    if args.body_model == "smplx" and not args.model_path:
        _error(_SMPLX_HINT)
        return 2
    for option, value, kind in (("--model-path", args.model_path, "dir"),
                                ("--gt-regressor", args.gt_regressor, "any"),
                                ("--pred-regressor", args.pred_regressor, "any"),
                                ("--part-ids", args.part_ids, "any")):
        problem = _check_path(option, value, kind)
        if problem:
            _error(problem)
            return 2
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        _error(f"-o {args.output}: exists and is not a folder")
        return 2
    as_path = lambda v: None if v is None else Path(v)  # noqa: E731
    options = ProtocolOptions(
        alignment=args.alignment or "standard", gt_regressor=as_path(args.gt_regressor),
        pred_regressor=as_path(args.pred_regressor), model_path=as_path(args.model_path),
        part_ids=as_path(args.part_ids), extra=dict(args.option))
    def action() -> Any:
        config = build_config(args)
        dataset = load_dataset(args.dataset, args.data_root, options)
        with _torch_threads_kept():
            return evaluate(dataset, lambda: _one_thread_for_fits(factory(args.method, config)),
                            out, method_name=args.method, body_model=config.body_model,
                            limit=args.limit, resume=args.resume, progress=not args.quiet,
                            debug=args.debug)

    code, summary = _guarded(args, action)
    if code is not None:
        return code
    if not args.quiet:
        print(markdown_table(summary.results))
    if not args.quiet or summary.interrupted:
        print(summary.line(), file=sys.stderr)
    return summary.exit_code


def _train(args: argparse.Namespace) -> int:
    from furpe.core.logs import quiet_environment
    from furpe.training.config import load_train_config
    from furpe.training.trainer import train

    quiet_environment()

    def action() -> Any:
        config = load_train_config(args.config)
        changes = {k: v for k, v in (("output", args.output), ("device", args.device)) if v}
        if changes:
            config = dataclasses.replace(config, **changes)
        return train(config, resume=args.resume, progress=not args.quiet)

    code, summary = _guarded(args, action)
    if code is not None:
        return code
    if not args.quiet:
        print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s "
              f"({summary['samples_per_s']:.1f} samples/s)", file=sys.stderr)
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from furpe.bodymodels import load_body_model
    from furpe.networks.export import export_onnx
    from furpe.networks.inference import load_network, read_checkpoint

    def action() -> Any:
        state = read_checkpoint(args.checkpoint)
        model = load_body_model(args.body_model or state["body_model"], args.model_path)
        return export_onnx(load_network(state, model), args.output)

    code, diff = _guarded(args, action)
    if code is not None:
        return code
    print(f"wrote {args.output}; ONNX Runtime vs PyTorch: max abs difference {diff:.2e}",
          file=sys.stderr)
    return 0


def _add_export(sub: Any) -> None:
    exp = sub.add_parser(
        "export", help="export tracked people as animation files (glTF binary, BVH)",
        description="Write each person (track) of a 'furpe reconstruct' result folder as "
                    "an animated, skinned glTF binary (OUT/<result>_track<ID>.glb: mesh, "
                    "skeleton, facial actions as morph targets) and a BVH motion file "
                    "(OUT/<result>_track<ID>.bvh). Y up, metres (BVH: centimetres); the "
                    "world is the camera frame turned to y up. See docs/export.md.")
    exp.add_argument("results", metavar="RESULTS",
                     help="a result folder (or one video's folder, or one image's JSON)")
    exp.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="output folder (created if needed)")
    exp.add_argument("--format", default="glb,bvh", metavar="LIST",
                     help="comma-separated formats to write: glb, bvh (default: glb,bvh)")
    exp.add_argument("--max-influences", default="all", metavar="N|all",
                     help="glb: skinning influences kept per vertex, the largest, "
                          "renormalised (4 for engines that read one JOINTS_0/WEIGHTS_0 "
                          "set, e.g. three.js); default all")
    exp.add_argument("--tpose", action="store_true",
                     help="bvh: rest skeleton in a T-pose (arms straight out) instead of "
                          "the model's bind pose, for retargeting tools")
    exp.add_argument("--model-path", metavar="DIR",
                     help="folder of the SMPL-X model files (default: the one the result "
                          "was made with)")
    exp.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar and no summary line (errors are still printed)")
    exp.add_argument("--debug", action="store_true",
                     help="show tracebacks of internal errors (for developers)")


def _export(args: argparse.Namespace) -> int:
    from furpe.export.exporter import export_results, parse_formats, parse_max_influences

    try:
        formats = parse_formats(args.format)
        max_influences = parse_max_influences(args.max_influences)
    except FurpeError as exc:
        _error(str(exc))
        return 2
    problem = (_check_path("RESULTS", args.results) or _check_path("--model-path",
                                                                   args.model_path, "dir"))
    if problem is None and Path(args.output).exists() and not Path(args.output).is_dir():
        problem = f"-o {args.output}: exists and is not a folder"
    if problem:
        _error(problem.removeprefix("RESULTS "))
        return 2

    def action() -> Any:
        return export_results(args.results, args.output, formats=formats,
                              max_influences=max_influences, tpose=args.tpose,
                              model_path=args.model_path, progress=not args.quiet)

    code, summary = _guarded(args, action)
    if code is not None:
        return code
    if not args.quiet:
        print(summary.line(), file=sys.stderr)
    return 0


def _make_synthetic(args: argparse.Namespace) -> int:
    from furpe.datasets.synthetic import generate

    width, height = args.size

    def action() -> Any:
        summary = generate(args.output, n=args.n, seed=args.seed, width=width, height=height,
                           progress=not args.quiet, preset=args.preset,
                           backgrounds=args.backgrounds)
        if args.format == "webdataset":
            from furpe.labels.synthetic import write_truth_shards

            write_truth_shards(args.output, args.shard_size, progress=not args.quiet)
        return summary

    code, summary = _guarded(
        args, action,
        failure_code=2,
        interrupted="furpe: interrupted (run the same command again to finish the set)")
    if code is not None:
        return code
    if not args.quiet:
        print(summary.line(), file=sys.stderr)
    return 0


def _output_folder(args: argparse.Namespace) -> Path | None:
    """The checked configuration's output folder, created; None after one error line."""
    problem = _check_config(args)
    if problem:
        _error(problem)
        return None
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"-o {args.output}: cannot create the output folder ({exc.strerror or exc})")
        return None
    return out_dir


def _label(args: argparse.Namespace, factory: Callable[[Any], Any] | None) -> int:
    from furpe.io.inputs import collect_inputs
    from furpe.labels.engine import label, launcher_split

    out_dir = _output_folder(args)
    if out_dir is None:
        return 2
    part, parts = args.shard or launcher_split() or (0, 1)

    def action() -> Any:
        errors: list[tuple[str, str]] = []
        config = build_config(args)
        items = collect_inputs(args.inputs, args.recursive, errors=errors, exclude=[out_dir])
        for path, message in errors:
            print(format_error(path, message), file=sys.stderr)
        return label(items, out_dir,
                     None if factory is None else functools.partial(factory, config),
                     config=config, part=part, parts=parts, workers=args.workers,
                     shard_size=args.shard_size, every=args.every, quality=args.jpeg_quality,
                     progress=not args.quiet, input_errors=errors)

    code, summary = _guarded(args, action, interrupted="furpe: interrupted (run the same "
                             "command again to finish)")
    if code is not None:
        return code
    if not args.quiet or summary.interrupted:
        print(summary.line(), file=sys.stderr)
    return summary.exit_code


def _labels_stats(args: argparse.Namespace) -> int:
    from furpe.labels.stats import collect, report

    if not Path(args.folder).is_dir():
        _error(f"{args.folder}: no such folder")
        return 2
    code, st = _guarded(args, lambda: collect(args.folder), failure_code=2)
    if code is not None:
        return code
    print(report(st, args.folder, dict(args.min_score)))
    return 0


def _one_thread_for_fits(reconstructor: Any) -> Any:
    """Torch on one CPU thread when the reconstructor (or evaluation method) fits: the fit's
    small operations gain nothing from a second one, and experts run on the other core
    meanwhile (the next input's, ``Reconstructor.prefetch``, or on a single image the hand
    and face experts during the fit's first stage; docs/results.md). The network alone
    keeps them. The caller restores the thread count (:func:`_torch_threads_kept`)."""
    config = getattr(reconstructor, "config", None)
    if config is not None and (config.method != "network" or config.refine):
        import torch

        torch.set_num_threads(1)
    return reconstructor


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Torch's thread count as it was, once the block ends."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _reconstruct(args: argparse.Namespace, factory: Callable[[Any], Any]) -> int:
    from furpe.export.exporter import export_results, parse_formats
    from furpe.io.inputs import collect_inputs
    from furpe.runner import run

    formats: tuple[str, ...] = ()
    if args.export:
        try:
            formats = parse_formats(args.export)
        except FurpeError as exc:
            _error(str(exc).replace("--format", "--export", 1))
            return 2
    out_dir = _output_folder(args)
    if out_dir is None:
        return 2

    def action() -> Any:
        errors: list[tuple[str, str]] = []
        config = build_config(args)
        items = collect_inputs(args.inputs, args.recursive, errors=errors, exclude=[out_dir])
        with _torch_threads_kept():
            return run(lambda: _one_thread_for_fits(factory(config)), items, out_dir,
                       overlay=not args.no_overlay, mesh=not args.no_mesh, resume=args.resume,
                       progress=not args.quiet, debug=args.debug, input_errors=errors,
                       side_view=not args.no_side_view, show=args.show)

    code, summary = _guarded(args, action)
    if code is not None:
        return code
    if not args.quiet or summary.interrupted:
        print(summary.line(), file=sys.stderr)
    if formats and summary.ok and not summary.interrupted:
        code, exported = _guarded(args, lambda: export_results(
            out_dir, out_dir, formats=formats, model_path=args.model_path,
            progress=not args.quiet))
        if code is not None:
            return code
        if not args.quiet:
            print(exported.line(), file=sys.stderr)
    return summary.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
