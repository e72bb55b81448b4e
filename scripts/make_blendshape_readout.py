"""Regenerate the read-out of FaceLandmarker's blendshape scores as a body model's facial actions.

    python scripts/make_blendshape_readout.py [--renders 1600] [--out furpe/data/correspondences/anny_blendshapes.npz]

FaceLandmarker names its 52 scores after ARKit's blendshapes, and Anny's facial actions carry
the same names, but the expert does not read a render of Anny's action as the action of the
same name (an open jaw partly as ``mouthLowerDown``; eye look, squint and brow scores of
0.2-0.4 on a face at rest), and most of Anny's actions move the face by less than the expert
can see at full-body distances. The read-out is what the expert's scores say about each action.

Method (reproducible, seeded; renders disjoint from the benchmark's and the correspondences'):

1. Render Anny (``furpe.synthetic.sample_params``, natural standing poses, 1.2 to 3.5 m away
   in 640x640, random skin and background) with 0 to 4 of its facial actions set, each
   uniform in [0, 1].
2. Crop the head as the face expert does in the pipeline (``face_crop_box`` around the body
   model's BlazePose head points) and run the shipped FaceLandmarker on it.
3. Fit a ridge regression from the 52 scores (plus an intercept) to each action on the first
   three quarters of the renders; score it on the last quarter (R^2). Actions whose held-out
   R^2 is at least ``--min-r2`` are kept, refitted on all renders, and written with their
   R^2 as the confidence the fit gives them (:class:`furpe.bodymodels.correspondences.
   BlendshapeReadout`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from furpe.bodymodels import correspondences, load_body_model
from furpe.core.boxes import face_crop_box
from furpe.core.camera import project
from furpe.core.vocab import POSE_FACE
from furpe.experts.face import MediaPipeFaceExpert
from furpe.synthetic import SKIN_TONES, render_person, sample_params, textured_background

SEED = 20000


def collect(model, n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(score names, scores (M, 52), true actions (M, A)) over the renders the expert read."""
    labels = list(model.blocks["facial_actions"].labels)
    expert = MediaPipeFaceExpert()
    names: list[str] | None = None
    scores, truth = [], []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        params = sample_params(model, rng, distance=float(rng.uniform(1.2, 3.5)))
        actions = torch.zeros(1, len(labels))
        for name in rng.choice(labels, size=int(rng.integers(0, 5)), replace=False):
            actions[0, labels.index(name)] = float(rng.uniform(0.0, 1.0))
        params["facial_actions"] = actions
        skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        person = render_person(model, params, 640, 640, skin=skin,
                               background=textured_background(rng, 640, 640))
        with torch.no_grad():
            head = model.keypoints(model(params), "mediapipe_pose")[0, list(POSE_FACE)]
            uv = project(head, torch.as_tensor(person.intrinsics, dtype=head.dtype)).numpy()
        obs = expert.observe_face_in_box(person.image, face_crop_box(uv, scale=expert.crop_scale))
        if obs is None or not obs.blendshapes:
            continue
        names = names or sorted(obs.blendshapes)
        scores.append([obs.blendshapes.get(k, 0.0) for k in names])
        truth.append(actions[0].numpy())
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{n} renders, {len(scores)} faces read", flush=True)
    return names or [], np.array(scores), np.array(truth)


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """(outputs, inputs + 1) ridge coefficients, the intercept last and not penalised."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    reg = lam * np.eye(xa.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(xa.T @ xa + reg, xa.T @ y).T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--renders", type=int, default=1600)
    ap.add_argument("--ridge", type=float, default=1.0)
    ap.add_argument("--min-r2", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_body_model("anny")
    labels = list(model.blocks["facial_actions"].labels)
    names, x, y = collect(model, args.renders, SEED)
    split = 3 * len(x) // 4
    held_out = correspondences.BlendshapeReadout(
        tuple(names), tuple(labels), ridge(x[:split], y[:split], args.ridge), np.ones(len(labels)))
    pred = np.stack([held_out(dict(zip(names, row))) for row in x[split:]])
    var = y[split:].var(0)  # an action never set in the held-out renders is not scored
    r2 = np.where(var > 0, 1.0 - ((pred - y[split:]) ** 2).mean(0) / np.maximum(var, 1e-12),
                  -np.inf)
    keep = [k for k in np.argsort(-r2) if r2[k] >= args.min_r2]
    for k in np.argsort(-r2)[:12]:
        print(f"{labels[k]:20s} held-out R^2 {r2[k]:.2f}{'  kept' if k in keep else ''}")
    coef = ridge(x, y, args.ridge)
    readout = correspondences.BlendshapeReadout(
        tuple(names), tuple(labels[k] for k in keep), coef[keep], r2[keep])
    out = args.out or correspondences.readout_path(model.name)
    correspondences.save_readout(out, readout)
    print(f"wrote {out}: {len(keep)} actions from {len(x)} faces ({args.renders} renders)")


if __name__ == "__main__":
    main()
