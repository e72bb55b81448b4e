"""The ``furpe`` command line.

Exit status: 0 every input succeeded; 1 some input failed (one ``furpe: error:`` line each,
then a summary line); 2 usage or configuration error (bad option, SMPL-X without
``--model-path``, model files missing); 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import furpe
from furpe.errors import FurpeError

__all__ = ["ReconstructorOptions", "build_parser", "default_factory", "main"]


@dataclass(frozen=True)
class ReconstructorOptions:
    """The options of ``furpe reconstruct`` that configure the :class:`Reconstructor`."""

    body_model: str = "anny"
    model_path: str | None = None
    focal: float | None = None
    device: str = "auto"
    max_people: int = 4
    video: bool = False


def default_factory(options: ReconstructorOptions) -> Any:
    """Build the real :class:`furpe.pipeline.Reconstructor` (slow: loads the models)."""
    from furpe.pipeline import Reconstructor

    return Reconstructor(body_model=options.body_model, model_path=options.model_path,
                         focal=options.focal, device=options.device,
                         max_people=options.max_people, video=options.video)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``furpe``."""
    parser = argparse.ArgumentParser(
        prog="furpe",
        description="Whole-body 3D human reconstruction (body, hands, face) from images and "
                    "videos, by fusing part experts (FuRPE).",
        epilog="Run 'furpe reconstruct --help' for the options. Output format: "
               "docs/output-format.md.",
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
    rec.add_argument("--body-model", choices=("anny", "smplx"), default="anny",
                     help="parametric body model (default: anny; smplx needs --model-path)")
    rec.add_argument("--model-path", metavar="DIR",
                     help="folder with the body model files (required for smplx: the "
                          "licensed SMPL-X files cannot be downloaded automatically)")
    rec.add_argument("--focal", type=_positive_float, metavar="PIXELS",
                     help="focal length in pixels (default: estimated from the image size)")
    rec.add_argument("--max-people", type=_positive_int, default=4, metavar="N",
                     help="reconstruct at most N people per image (default: 4)")
    rec.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="where to run the models (default: auto = cuda if available)")
    rec.add_argument("--no-overlay", action="store_true",
                     help="do not render overlay images / videos")
    rec.add_argument("--no-mesh", action="store_true", help="do not write PLY meshes")
    rec.add_argument("--resume", action="store_true",
                     help="skip inputs (and video frames) whose results already exist")
    rec.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bars and no summary line (errors are still printed)")
    rec.add_argument("--debug", action="store_true",
                     help="show tracebacks of internal errors (for developers)")
    return parser


def _error(message: str) -> None:
    print(f"furpe: error: {message}", file=sys.stderr)


def _check_config(args: argparse.Namespace) -> str | None:
    """A configuration problem (exit status 2), or None."""
    if args.body_model == "smplx" and not args.model_path:
        return ("--body-model smplx needs --model-path DIR: the folder holding the SMPL-X "
                "model files (e.g. SMPLX_NEUTRAL.npz), which must be downloaded from "
                "https://smpl-x.is.tue.mpg.de after accepting its licence")
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
         reconstructor_factory: Callable[[ReconstructorOptions], Any] | None = None) -> int:
    """Run the command line; returns the exit status.

    ``reconstructor_factory(options)`` builds the reconstructor (default:
    :func:`default_factory`); tests inject a fake one.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return _reconstruct(args, reconstructor_factory or default_factory)


def _reconstruct(args: argparse.Namespace,
                 factory: Callable[[ReconstructorOptions], Any]) -> int:
    from furpe.io.inputs import collect_inputs
    from furpe.runner import SetupError, run

    problem = _check_config(args)
    if problem:
        _error(problem)
        return 2
    out_dir = Path(args.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"-o {args.output}: cannot create the output folder ({exc.strerror or exc})")
        return 2

    try:
        errors: list[tuple[str, str]] = []
        items = collect_inputs(args.inputs, args.recursive, errors=errors, exclude=[out_dir])
        options = ReconstructorOptions(
            body_model=args.body_model, model_path=args.model_path, focal=args.focal,
            device=args.device, max_people=args.max_people,
            video=any(item.kind == "video" for item in items))
        summary = run(lambda: factory(options), items, out_dir,
                      overlay=not args.no_overlay, mesh=not args.no_mesh, resume=args.resume,
                      progress=not args.quiet, debug=args.debug, input_errors=errors)
    except SetupError as exc:
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        print("furpe: interrupted", file=sys.stderr)
        return 130
    except FurpeError as exc:  # defensive: every per-input error is handled by run()
        _error(str(exc))
        return 1
    except Exception as exc:
        if args.debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc}")
        return 1
    if not args.quiet or summary.interrupted:
        print(summary.line(), file=sys.stderr)
    return summary.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
