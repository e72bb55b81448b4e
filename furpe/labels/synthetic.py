"""The synthetic set's exact ground truth as label shards (``provenance.truth: synthetic``).

``furpe make-synthetic OUT --format webdataset`` makes the set (``OUT/images``, ``OUT/gt``,
see :mod:`furpe.datasets.synthetic`), then writes ``OUT/shards/``: one sample per render in the
label schema, its truth where the experts' estimates would be. A sample's key is the key that
``furpe label OUT/images -o LABELS/`` gives the same image, so pseudo labels and truth join by
key: train on one, score against the other.

Per person (one per render): ``params`` are the true parameters; ``keypoints_2d`` hold, per
part, the true landmarks of the experts' conventions projected (``observed`` and ``fitted``
equal; confidence 1 inside the image, 0 outside); ``observations`` hold the same landmarks with
their camera-frame 3D positions (``expert: "synthetic"``, ``box``: the part's box); ``parts``
mark a part observed and accepted when it is visible (in the image, not tiny, not hidden:
:func:`furpe.synthetic.part_visibility`), with ``score`` 1, else 0.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from furpe.core.errors import FurpeError
from furpe.core.files import read_json
from furpe.datasets.synthetic import PARTS as SET_PARTS, read_npz
from furpe.experts.base import PartObservation, PersonObservation
from furpe.io.console import progress_bar
from furpe.io.inputs import read_image
from furpe.labels.engine import done_keys, encode_jpeg, unit_key, write_indexes
from furpe.labels.schema import label_document
from furpe.labels.shards import ShardWriter
from furpe.results import FrameResult, KeypointSet, PartResult, PersonResult
from furpe.synthetic import EXPERT_LANDMARKS


def truth_frame(gt: dict[str, np.ndarray], keypoint_names: dict[str, list[str]],
                joint_names: list[str], body_model: str) -> FrameResult:
    """A :class:`FrameResult` holding a render's ground truth (``gt``: its npz arrays)."""
    width, height = (int(v) for v in gt["image_size"])
    visible = dict(zip([str(p) for p in gt["part_names"]], gt["visible"]))
    kps, observations, parts = {}, {}, {}
    for part, reg, conv, _ in EXPERT_LANDMARKS:
        uv = gt[f"keypoints2d_{reg}"].astype(np.float64)
        xyz = gt[f"keypoints_{reg}"].astype(np.float64)
        inside = ((uv[:, 0] >= -0.5) & (uv[:, 0] <= width - 0.5) & (uv[:, 1] >= -0.5)
                  & (uv[:, 1] <= height - 0.5) & (xyz[:, 2] > 0)).astype(np.float64)
        kps[part] = KeypointSet(conv, tuple(keypoint_names[reg]), uv, inside, uv)
        seen = uv[inside > 0]
        box = None if not len(seen) else (*seen.min(0), *seen.max(0))
        observations[part] = PartObservation(part, conv, uv, inside, xyz, box=box, score=1.0,
                                             expert="synthetic")
        ok = bool(visible.get(part, False))
        parts[part] = PartResult(part, observed=ok, accepted=ok,
                                 scores={"score": 1.0 if ok else 0.0},
                                 reason="" if ok else "not visible")
    person = PersonResult(
        params={k[len("param_"):]: v for k, v in gt.items() if k.startswith("param_")},
        vertices=gt["vertices"], joints=gt["joints"], keypoints_2d=kps, parts=parts,
        box=tuple(float(x) for x in gt["box"]), observation=PersonObservation(observations))
    return FrameResult(image_size=(width, height), intrinsics=gt["K"], body_model=body_model,
                       joint_names=tuple(joint_names), faces=np.zeros((0, 3), np.int32),
                       people=[person], timings={})


def write_truth_shards(set_dir: str | os.PathLike[str], shard_size: int = 1000,
                       quality: int = 95, progress: bool = True) -> Path:
    """Write (or complete) ``set_dir/shards`` from a finished synthetic set; returns the
    shard folder. Samples already in complete shards are kept."""
    root = Path(set_dir)
    manifest = read_json(root / "manifest.json")
    if not isinstance(manifest, dict):
        raise FurpeError(f"{root}: no finished synthetic set (manifest.json missing)")
    out = root / "shards"
    done = done_keys(out)
    writer = ShardWriter(out, 0, 1, shard_size)
    config = {"synthetic": {k: manifest[k] for k in
                            ("format", "generator_version", "seed", "n", "image_size")}}
    ids = manifest["samples"]
    bar = progress_bar(progress, total=len(ids), desc="truth shards", unit="image")
    try:
        for sid in ids:
            key = unit_key(sid, None)
            if key not in done:
                gt = read_npz(root / "gt" / f"{sid}.npz")
                frame = truth_frame(gt, manifest["keypoints"], manifest["joint_names"],
                                    manifest["body_model"])
                rgb = read_image(root / "images" / f"{sid}.png")
                doc = label_document(key, frame, f"images/{sid}.png", None, config,
                                     image_size=frame.image_size, image_file=f"{key}.jpg",
                                     truth="synthetic")
                for k in SET_PARTS:  # the scene's visibility measures, per part
                    i = [str(p) for p in gt["part_names"]].index(k)
                    doc["people"][0]["parts"][k]["visibility"] = {
                        "inside": round(float(gt["part_inside"][i]), 4),
                        "pixels": round(float(gt["part_pixels"][i]), 2),
                        "seen": round(float(gt["part_seen"][i]), 4)}
                writer.write(key, {"json": doc, "jpg": encode_jpeg(rgb, quality)}, people=1)
            bar.update(1)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    write_indexes(out, 0, 1, complete=True, written=writer.written)
    return out
