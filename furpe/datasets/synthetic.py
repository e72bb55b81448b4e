"""The synthetic evaluation set: seeded Anny renders with exact whole-body ground truth.

Made by :func:`generate` (``furpe make-synthetic OUT --n 200 --seed 0``), read by
:class:`SyntheticDataset` (``furpe evaluate --dataset synthetic --data-root OUT``).

**Layout** of a set folder::

    images/000000.png      the render (RGB), one person
    gt/000000.npz          its ground truth (keys below)
    parts.npz              Anny's part vertex index sets: left_hand, right_hand, face, body
    manifest.json          written last: generator version, seed, n, body model, image size,
                           render backend, sampler ranges, keypoint names, the sample ids

The manifest is written last (atomically), so a folder without one is a set whose generation
did not finish. Every file is written atomically. Each sample is seeded by ``(seed, index)``
alone (``numpy.random.default_rng([seed, index])``), so a rerun keeps the finished samples and
makes the missing ones identical to what an uninterrupted run would have made (the ``.npz``
files are written byte-for-byte reproducibly; the images too on the same render backend).

**Scenes** (:func:`furpe.synthetic.sample_scene`, ranges :data:`furpe.synthetic.VARIED` and
:class:`furpe.synthetic.SceneRanges`): body poses with raised, forward and bent arms, bent legs,
torso bends and twists; curled fingers; gaze and 2 to 6 of Anny's 52 facial actions; bodies
from 5 to 85 years (25% children, 10% teenagers, 50% adults, 15% seniors) and random gender,
muscle, weight, height and proportions; the person turned up to 70 degrees from facing the
camera; a camera 10 degrees below to 30 degrees above, a focal length of 0.9 to 1.5 times the
longer image side; the person filling 30% to 90% of the image height (hence 1 to about 8 m
away), off-centre, cut by the image border in 10% of the scenes; a random light direction and
intensity; a skin tone between two of six tones; a gradient background with up to 12 random
shapes.

**Ground truth** (``gt/<id>.npz``; metres, camera frame x right, y down, z forward; pixels with
centres at integer coordinates):

* ``vertices`` (V, 3), ``joints`` (J, 3) (names in the manifest's ``joint_names``);
* ``keypoints_<convention>`` (K, 3) for every keypoint regressor of the body model
  (``coco`` 23: 17 COCO + 6 feet, ``mediapipe_pose`` 33, ``mediapipe_hand_left`` /
  ``mediapipe_hand_right`` 21, ``mediapipe_face`` 478, ``anny_joints`` 104; names in the
  manifest) and ``keypoints2d_<convention>`` (K, 2) their projections;
* ``param_<block>``: every parameter block of the model (``global_orient``, ``transl``,
  ``body_pose``, ``left_hand_pose``, ``right_hand_pose``, ``eye_pose``, ``facial_actions``,
  ``phenotype``), without the batch dimension;
* ``K`` (3, 3), ``image_size`` (width, height), ``box`` (x0, y0, x1, y1): the projected mesh's
  box clipped to the image, ``mask`` (H, W) bool: the person's pixels;
* ``part_names`` (left_hand, right_hand, face, body) and per part ``visible`` (bool),
  ``part_inside`` (share of its vertices inside the image), ``part_pixels`` (projected size:
  the longer side of its box), ``part_seen`` (share of its vertices not hidden by the body or
  itself). **Visible** means *in the image, not tiny and not hidden*: more than 90% of the
  part's vertices project inside the image, its projected size is at least
  :data:`furpe.synthetic.MIN_PART_PIXELS` (hands and face 20 px, body 60 px), and at least
  :data:`furpe.synthetic.MIN_SEEN` of its vertices are seen (hands and face 0.5: a hand behind
  the back is not visible; the body always counts);
* the scene: ``skin`` (RGB), ``light_dir``, ``light_ambient``, ``light_diffuse``,
  ``age_years``, ``height_m`` (rest-pose height), ``yaw_deg``, ``elevation_deg``, ``focal``,
  ``fill``, ``distance_m``, ``truncated``, ``clutter``; and ``seed``, ``index``,
  ``generator_version``.

**Scores** (:meth:`SyntheticDataset.score`; millimetres):

* predictions of the set's topology (``anny``, with ``vertices``): ``pa_pve_mm`` (all vertices,
  similarity Procrustes); ``pa_pve_body_mm`` always and ``pa_pve_left_hand_mm``,
  ``pa_pve_right_hand_mm``, ``pa_pve_face_mm`` where that part is visible, each with
  Procrustes re-fitted on the part alone (its shape and articulation, not its placement);
  ``pve_mm``: all vertices after the translation that puts the prediction's COCO mid-hip
  (mean of the two hip keypoints) on the ground truth's, so rotation and scale errors count
  (needs ``keypoints["coco"]``; ``--alignment none``: no alignment at all);
* any prediction with ``keypoints["coco"]`` (23, or the 17 COCO body keypoints):
  ``pa_mpjpe_mm`` (Procrustes) and ``mpjpe_mm`` (mid-hip aligned, or raw with
  ``--alignment none``);
* with ``keypoints["mediapipe_pose"]`` (33): ``pa_mpjpe_mediapipe_mm`` and
  ``mpjpe_mediapipe_mm`` (MediaPipe's mid-hip);
* with ``keypoints["mediapipe_hand_left"]`` / ``["mediapipe_hand_right"]`` (21) and the hand
  visible: ``pa_mpjpe_left_hand_mm`` / ``pa_mpjpe_right_hand_mm``.

Options: ``alignment`` (``standard`` = ``mid_hip``, the default; ``none``). Regressor and part-id options are not used (the set carries its own).
"""
from __future__ import annotations

import io
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

import furpe
from furpe.datasets.base import Dataset, DatasetError, Prediction, ProtocolOptions, Sample, require
from furpe.core.errors import FurpeError
from furpe.core.files import jsonable
from furpe.core.vocab import DETAIL_PARTS
from furpe.io.console import progress_bar

__all__ = ["GENERATOR_VERSION", "DEFAULT_N", "PARTS", "GenerateSummary", "SyntheticDataset",
           "generate", "sample_id", "read_npz", "write_npz"]

#: Bumped whenever the same (seed, index) would give a different sample.
GENERATOR_VERSION = 2  # 2: occlusion counts in the visible flags
#: The size of the standard set (``furpe make-synthetic OUT`` without ``--n``).
DEFAULT_N = 200
#: The parts whose vertex sets are in ``parts.npz`` and whose flags are in each ``gt`` file.
PARTS = (*DETAIL_PARTS, "body")  # the order of the arrays in the files
FORMAT = "furpe-synthetic"
_NAME = "synthetic"
_MAKE_HINT = "run 'furpe make-synthetic {root} --n 200 --seed 0' to generate the set"


def sample_id(index: int) -> str:
    """The id (and file stem) of sample ``index``: six digits."""
    return f"{index:06d}"


# ---------------------------------------------------------------------------------------
# Reproducible .npz files
# ---------------------------------------------------------------------------------------

def write_npz(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` as a compressed ``.npz`` (readable by :func:`numpy.load`),
    atomically and byte-for-byte reproducibly (fixed zip timestamps, no pickles)."""
    from furpe.io.outputs import atomic_write

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


def read_npz(path: str | Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """All arrays (or ``keys``) of an ``.npz`` file, loaded (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in (data.files if keys is None else keys)}


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------

@dataclass
class GenerateSummary:
    """What :func:`generate` did."""

    out_dir: Path
    n: int
    generated: int
    kept: int
    seconds: float
    manifest: Path

    def line(self) -> str:
        """``furpe: synthetic set: 200 samples (150 generated, 50 already done) in OUT ...``"""
        return (f"furpe: synthetic set: {self.n} sample{'s' if self.n != 1 else ''} "
                f"({self.generated} generated, {self.kept} already done) in {self.out_dir}, "
                f"{self.seconds:.1f} s; manifest {self.manifest}")


def _gt_arrays(model, person, scene, seed: int, index: int) -> dict[str, np.ndarray]:
    """The ground-truth arrays of one rendered scene."""
    import torch

    from furpe.bodymodels.base import BodyOutput

    K = scene.K
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    out = BodyOutput(torch.as_tensor(person.vertices)[None], torch.as_tensor(person.joints)[None])
    arrays: dict[str, Any] = {"vertices": f32(person.vertices), "joints": f32(person.joints)}
    for conv in sorted(model.regressors):
        kp = model.keypoints(out, conv)[0].numpy().astype(np.float64)
        z = np.maximum(kp[:, 2:3], 1e-6)
        uv = kp[:, :2] / z * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
        arrays[f"keypoints_{conv}"] = f32(kp)
        arrays[f"keypoints2d_{conv}"] = f32(uv)
    for name, value in scene.params.items():
        arrays[f"param_{name}"] = f32(value[0].detach().cpu().numpy())
    arrays.update({
        "K": np.asarray(K, dtype=np.float64),
        "image_size": np.array([scene.width, scene.height], dtype=np.int64),
        "box": f32(person.box),
        "mask": np.asarray(person.mask, dtype=bool),
        "part_names": np.array(PARTS),
        "visible": np.array([person.visible[p] for p in PARTS], dtype=bool),
        "part_inside": f32([person.inside[p] for p in PARTS]),
        "part_pixels": f32([person.pixels[p] for p in PARTS]),
        "part_seen": f32([person.seen[p] for p in PARTS]),
        "skin": f32(scene.skin),
        "light_dir": f32(scene.light_dir),
        "light_ambient": np.float64(scene.ambient),
        "light_diffuse": np.float64(scene.diffuse),
    })
    for key, value in scene.info.items():
        arrays[key] = np.float64(value)
    arrays.update({"seed": np.int64(seed), "index": np.int64(index),
                   "generator_version": np.int64(GENERATOR_VERSION)})
    return arrays


def _done(gt_path: Path, png_path: Path, seed: int, index: int, size: tuple[int, int]) -> bool:
    """Whether sample ``index`` is finished; a sample of another set raises FurpeError."""
    if not (gt_path.is_file() and png_path.is_file()):
        return False
    try:
        meta = read_npz(gt_path, ["seed", "index", "generator_version", "image_size"])
    except Exception:  # noqa: BLE001 - a damaged file is made again
        return False
    found = (int(meta["seed"]), int(meta["index"]), int(meta["generator_version"]),
             tuple(int(x) for x in meta["image_size"]))
    if found != (seed, index, GENERATOR_VERSION, size):
        raise FurpeError(
            f"{gt_path} belongs to another synthetic set (seed {found[0]}, index {found[1]}, "
            f"generator {found[2]}, {found[3][0]}x{found[3][1]}) than the one asked for "
            f"(seed {seed}, generator {GENERATOR_VERSION}, {size[0]}x{size[1]}); use another "
            f"folder or the same --seed and --size")
    return True


def _manifest(model, seed: int, n: int, width: int, height: int, backend: str) -> dict[str, Any]:
    from furpe.io.outputs import COORDINATE_FRAME, UNITS
    from furpe.synthetic import MIN_INSIDE, MIN_PART_PIXELS, MIN_SEEN, VARIED, SceneRanges

    return {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "furpe_version": furpe.__version__,
        "seed": seed,
        "n": n,
        "body_model": model.name,
        "image_size": {"width": width, "height": height},
        "render_backend": backend,
        "num_vertices": int(model.num_vertices),
        "parts": list(PARTS),
        "visibility": {"min_inside": MIN_INSIDE, "min_pixels": dict(MIN_PART_PIXELS),
                       "min_seen": dict(MIN_SEEN)},
        "ranges": {"pose": jsonable(asdict(VARIED)), "scene": jsonable(asdict(SceneRanges()))},
        "keypoints": {c: list(r.names) for c, r in sorted(model.regressors.items())},
        "joint_names": list(model.joint_names),
        "units": UNITS,
        "coordinate_frame": COORDINATE_FRAME,
        "files": {"images": "images/<id>.png", "gt": "gt/<id>.npz", "parts": "parts.npz"},
        "samples": [sample_id(i) for i in range(n)],
    }


#: Scene presets of ``furpe make-synthetic --preset``: the evaluation set's scenes, or the
#: training scenes (WHO-calibrated shapes, upper-body and close-up framings, occluders).
PRESETS = ("evaluation", "training")
#: Extensions of background photos (``--backgrounds DIR``).
_PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")


def load_backgrounds(folder: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """The names and RGB images of a folder's photos (sorted by name); they must show no
    people."""
    from furpe.io.inputs import read_image

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in _PHOTO_EXTENSIONS)
    if not paths:
        raise FurpeError(f"{folder}: no background photos (.jpg, .png) in this folder")
    return [p.name for p in paths], [read_image(p) for p in paths]


def generate(out_dir: str | Path, n: int = DEFAULT_N, seed: int = 0, width: int = 640,
             height: int = 640, progress: bool = True, model: Any = None,
             backend: str = "auto", preset: str = "evaluation",
             backgrounds: str | Path | None = None) -> GenerateSummary:
    """Generate (or complete) the synthetic set of ``n`` samples in ``out_dir``.

    Finished samples (image and ground truth present, of this seed, size and generator
    version) are kept; the others are made; ``parts.npz`` and, last, ``manifest.json`` are
    written. A folder holding samples or a manifest of another seed, size, preset or generator
    version raises :class:`~furpe.core.errors.FurpeError` (nothing is overwritten). ``model``
    defaults to the shared Anny model (the sampler knows only the Anny rig). ``preset``:
    :data:`PRESETS`; ``backgrounds``: a folder of photos without people to composite the
    person over (default: generated backgrounds).
    """
    from furpe.io.outputs import read_json, write_image, write_json
    from furpe.render import available_backends
    from furpe.synthetic import TRAINING, SceneRanges, render_scene, sample_scene

    if n < 1:
        raise FurpeError(f"--n must be at least 1, got {n}")
    if width < 32 or height < 32:
        raise FurpeError(f"the image size must be at least 32x32, got {width}x{height}")
    if seed < 0:
        raise FurpeError(f"--seed must be a non-negative whole number, got {seed}")
    if preset not in PRESETS:
        raise FurpeError(f"--preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    background_names, photos = ([], []) if backgrounds is None else load_backgrounds(backgrounds)
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FurpeError(f"{out} exists and is not a folder")
    manifest_path = out / "manifest.json"
    old = read_json(manifest_path) if manifest_path.exists() else None
    if isinstance(old, dict):
        found = (old.get("seed"), old.get("generator_version"),
                 (old.get("image_size") or {}).get("width"),
                 (old.get("image_size") or {}).get("height"),
                 old.get("preset", "evaluation"), old.get("backgrounds", []))
        if found != (seed, GENERATOR_VERSION, width, height, preset, background_names):
            raise FurpeError(
                f"{out} holds a synthetic set of seed {found[0]}, generator {found[1]}, "
                f"{found[2]}x{found[3]}, preset {found[4]}, {len(found[5])} background "
                f"photos, not seed {seed}, generator {GENERATOR_VERSION}, {width}x{height}, "
                f"preset {preset}, {len(background_names)} background photos; use another "
                "folder or the same options")
    if model is None:
        from furpe.bodymodels.anny_model import load_anny

        model = load_anny()
    if model.name != "anny":
        raise FurpeError(f"the synthetic set is made with the Anny body model, not '{model.name}'")
    backend_name = available_backends()[0] if backend == "auto" else backend

    images, gts = out / "images", out / "gt"
    todo = [i for i in range(n)
            if not _done(gts / f"{sample_id(i)}.npz", images / f"{sample_id(i)}.png", seed, i,
                         (width, height))]
    if todo or not isinstance(old, dict) or old.get("n") != n:
        manifest_path.unlink(missing_ok=True)  # the set is incomplete until the manifest is back
    bar = progress_bar(progress, total=n, initial=n - len(todo), desc="make-synthetic", unit="image")
    try:
        for i in todo:
            rng = np.random.default_rng([seed, i])
            scene = sample_scene(model, rng, width, height,
                                 scene=TRAINING if preset == "training" else SceneRanges(),
                                 backgrounds=photos)
            person = render_scene(model, scene, backend=backend_name)
            write_image(images / f"{sample_id(i)}.png", person.image)
            write_npz(gts / f"{sample_id(i)}.npz", _gt_arrays(model, person, scene, seed, i))
            bar.update(1)
    finally:
        bar.close()
    write_npz(out / "parts.npz", {p: np.asarray(model.part_vertices[p], dtype=np.int64)
                                  for p in PARTS})
    if not manifest_path.exists():
        doc = _manifest(model, seed, n, width, height, backend_name)
        doc["preset"], doc["backgrounds"] = preset, background_names
        if preset == "training":
            doc["ranges"]["scene"] = jsonable(asdict(TRAINING))
        write_json(manifest_path, doc)
    return GenerateSummary(out_dir=out, n=n, generated=len(todo), kept=n - len(todo),
                           seconds=time.perf_counter() - start, manifest=manifest_path)


# ---------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------

#: Ground-truth keys copied into :attr:`Sample.gt` (plus every ``keypoints_*`` array).
_GT_KEYS = ("vertices", "joints", "box", "visible", "part_names", "K", "image_size")
#: Scene scalars copied into :attr:`Sample.meta`.
_META_KEYS = ("age_years", "height_m", "yaw_deg", "elevation_deg", "focal", "fill",
              "distance_m", "truncated", "clutter")


class SyntheticDataset(Dataset):
    """Reader and protocol of the synthetic set (see the module docstring).

    Uses ``options.alignment`` only (the non-PA values: mid-hip or none).
    """

    name: ClassVar[str] = _NAME
    protocol: ClassVar[str] = (
        "furpe synthetic set (seeded Anny renders, exact ground truth): PA-PVE on all vertices "
        "and per part (Procrustes re-fitted per part; hands and face only where visible), PVE "
        "after COCO mid-hip translation, PA-MPJPE and mid-hip MPJPE on 23 COCO(+feet) "
        "keypoints; millimetres"
    )

    def __init__(self, root: str | Path, options: ProtocolOptions | None = None) -> None:
        from furpe.datasets.joints import resolve_alignment

        super().__init__(root, options)
        self.alignment = resolve_alignment(self.options.alignment, _NAME)
        self.manifest: dict[str, Any] = {}
        self.parts: dict[str, np.ndarray] = {}
        self.body_model = "anny"
        self._hips: dict[str, tuple[int, int]] = {}

    def _read_manifest(self) -> dict[str, Any]:
        import json

        path = self.root / "manifest.json"
        if not path.is_file():
            raise DatasetError(
                f"{_NAME}: missing {path} (the set was not generated, or its generation did "
                f"not finish); {_MAKE_HINT.format(root=self.root)}")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{_NAME}: cannot read {path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DatasetError(f"{_NAME}: {path} is not a furpe synthetic-set manifest")
        if doc.get("generator_version") != GENERATOR_VERSION:
            raise DatasetError(
                f"{_NAME}: {path} is of generator version {doc.get('generator_version')}, this "
                f"furpe reads version {GENERATOR_VERSION}; generate the set again")
        for key in ("samples", "keypoints", "body_model"):
            if key not in doc:
                raise DatasetError(f"{_NAME}: {path} has no '{key}'")
        return doc

    def _load_set(self) -> dict[str, Any]:
        """Read the manifest and ``parts.npz`` (the part sets and hip indices score needs)."""
        self.manifest = doc = self._read_manifest()
        self.body_model = str(doc["body_model"])
        parts_path = require(self.root / "parts.npz", _NAME, "part vertex index sets")
        try:
            self.parts = read_npz(parts_path)
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"{_NAME}: cannot read {parts_path}: {exc}") from None
        missing = [p for p in PARTS if p not in self.parts]
        if missing:
            raise DatasetError(f"{_NAME}: {parts_path} lacks the part(s) {missing}")
        for conv, hips in (("coco", ("left_hip", "right_hip")),
                           ("mediapipe_pose", ("left_hip", "right_hip"))):
            names = doc["keypoints"].get(conv, [])
            if all(h in names for h in hips):
                self._hips[conv] = (names.index(hips[0]), names.index(hips[1]))
        return doc

    def samples(self) -> Sequence[Sample]:
        """The manifest's samples, in order, with their ground truth loaded."""
        doc = self._load_set()
        out = []
        for sid in doc["samples"]:
            image = require(self.root / "images" / f"{sid}.png", _NAME, "image")
            gt_path = require(self.root / "gt" / f"{sid}.npz", _NAME, "ground truth")
            try:
                arrays = read_npz(gt_path)
            except Exception as exc:  # noqa: BLE001
                raise DatasetError(f"{_NAME}: cannot read {gt_path}: {exc}") from None
            gt = {k: arrays[k] for k in arrays if k in _GT_KEYS or k.startswith("keypoints_")}
            lacking = [k for k in ("vertices", "visible", "part_names", "K", "keypoints_coco")
                       if k not in gt]
            if lacking:
                raise DatasetError(f"{_NAME}: {gt_path} lacks {lacking}")
            visible = {str(p): bool(v) for p, v in zip(arrays["part_names"], arrays["visible"])}
            meta: dict[str, Any] = {k: float(arrays[k]) for k in _META_KEYS if k in arrays}
            meta.update(index=int(arrays.get("index", -1)), visible=visible)
            out.append(Sample(id=str(sid), image_path=image, crop="full",
                              intrinsics=np.asarray(arrays["K"], dtype=np.float64), gt=gt,
                              meta=meta))
        return out

    def score(self, sample: Sample, prediction: Prediction) -> dict[str, float]:
        """Metric values for one sample (see the module docstring), millimetres."""
        from furpe import metrics

        if not self.parts:
            self._load_set()
        gt = sample.gt
        visible = sample.meta.get("visible") or {
            str(p): bool(v) for p, v in zip(gt["part_names"], gt["visible"])}
        kp = prediction.keypoints
        out: dict[str, float] = {}
        coco_pred = gt_coco = None
        if "coco" in kp:
            coco_pred = np.asarray(kp["coco"], dtype=np.float64)
            gt_coco = np.asarray(gt["keypoints_coco"], dtype=np.float64)
            if coco_pred.shape == (17, 3) and len(gt_coco) >= 17:
                gt_coco = gt_coco[:17]
            if coco_pred.shape != gt_coco.shape:
                raise FurpeError(f"keypoints['coco'] has shape {coco_pred.shape}; expected "
                                 f"{gt_coco.shape} or (17, 3)")
            hips = self._hips.get("coco", (11, 12))
            out["pa_mpjpe_mm"] = metrics.pa_mpjpe(coco_pred, gt_coco)
            out["mpjpe_mm"] = metrics.mpjpe(coco_pred, gt_coco, align=self.alignment, hips=hips)
        if "mediapipe_pose" in kp and "keypoints_mediapipe_pose" in gt:
            mp = np.asarray(kp["mediapipe_pose"], dtype=np.float64)
            gmp = np.asarray(gt["keypoints_mediapipe_pose"], dtype=np.float64)
            if mp.shape != gmp.shape:
                raise FurpeError(f"keypoints['mediapipe_pose'] has shape {mp.shape}; expected "
                                 f"{gmp.shape}")
            out["pa_mpjpe_mediapipe_mm"] = metrics.pa_mpjpe(mp, gmp)
            out["mpjpe_mediapipe_mm"] = metrics.mpjpe(
                mp, gmp, align=self.alignment, hips=self._hips.get("mediapipe_pose", (23, 24)))
        for side in ("left", "right"):
            conv = f"mediapipe_hand_{side}"
            if conv in kp and f"keypoints_{conv}" in gt and visible.get(f"{side}_hand"):
                hp = np.asarray(kp[conv], dtype=np.float64)
                ghp = np.asarray(gt[f"keypoints_{conv}"], dtype=np.float64)
                if hp.shape != ghp.shape:
                    raise FurpeError(f"keypoints['{conv}'] has shape {hp.shape}; expected "
                                     f"{ghp.shape}")
                out[f"pa_mpjpe_{side}_hand_mm"] = metrics.pa_mpjpe(hp, ghp)
        if prediction.topology == self.body_model and prediction.vertices is not None:
            pv = np.asarray(prediction.vertices, dtype=np.float64)
            gv = np.asarray(gt["vertices"], dtype=np.float64)
            if pv.shape != gv.shape:
                raise FurpeError(f"the prediction has {pv.shape[0]} vertices, the "
                                 f"'{self.body_model}' ground truth {gv.shape[0]}")
            out["pa_pve_mm"] = metrics.pa_pve(pv, gv)
            if coco_pred is not None:
                if self.alignment == "none":
                    out["pve_mm"] = metrics.pve(pv, gv, align="none")
                else:
                    i, j = self._hips.get("coco", (11, 12))
                    out["pve_mm"] = metrics.pve(pv, gv, align="root",
                                                pred_root=coco_pred[[i, j]].mean(0),
                                                gt_root=gt_coco[[i, j]].mean(0))
            parts = {p: self.parts[p] for p in PARTS if p == "body" or visible.get(p)}
            for part, value in metrics.part_pa_pve(pv, gv, parts).items():
                out[f"pa_pve_{part}_mm"] = float(value)
        return {k: float(v) for k, v in out.items()}
