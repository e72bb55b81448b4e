"""Regenerate the MediaPipe landmark correspondences of a body model.

    python scripts/make_correspondences.py [--poses 16] [--world 240] [--out furpe/data/correspondences/anny.npz]
    python scripts/make_correspondences.py --world-only --world 240   # only the _world ones

Method (reproducible, seeded):

1. Pose the body model in ``--poses`` natural standing poses (``furpe.synthetic``), neutral
   expression, varied shape.
2. Render each pose from several viewing angles (the person turned from -30 to +30 degrees):
   the whole body for BlazePose (``--pose-model``, default Heavy), and zoomed views (a longer
   focal length centred on the part) of each hand for HandLandmarker and of the head for
   FaceLandmarker (478 points): the shipped models of :mod:`furpe.experts.tasks`.
3. Triangulate each landmark per pose from the views that detected it (linear DLT), in the
   model's native frame.
4. Express each landmark as a convex combination of nearby model points (its 16 nearest
   vertices and 3 nearest joints), with weights fitted by non-negative least squares over all
   poses, so the landmark follows the mesh as it moves.

BlazePose's metric 3D (world) landmarks follow its own skeleton, not the surface points its 2D
landmarks mark: its 3D shoulders sit several centimetres behind the 2D ones. ``--world N`` (or
``--world-only N``, keeping the file's other conventions) therefore adds ``<convention>_world``
correspondences (:func:`furpe.core.vocab.world_convention`), which the fit's 3D term uses:

5. Run the shipped experts (furpe's default configuration) on ``N`` seeded renders
   (:func:`furpe.synthetic.make_person`, seeds from 1000, 1.6 to 3 m away, so disjoint from the
   benchmark's seeds) and rotate each person's 3D landmarks into the model's native frame
   (:data:`WORLD_PARTS`: the body only).
6. Starting from the 2D correspondences, move each render's landmarks rigidly onto the
   current correspondences (confidence-weighted Kabsch: the experts' errors in orientation are
   not a difference of skeleton, and left in they would shrink the fitted skeleton towards its
   centre), refit the weights as in step 4 over all renders, and repeat.

The result is written with :func:`furpe.bodymodels.correspondences.save`. Only the Anny model is
supported out of the box (its synthetic sampler knows the Anny rig).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from furpe.bodymodels import correspondences
from furpe.bodymodels import load_body_model
from furpe.core.align import kabsch
from furpe.core.vocab import CONVENTIONS, world_convention
from furpe.core.camera import intrinsics
from furpe.experts.tasks import FaceModel, HandModel, PoseModel
from furpe.render import Mesh, render
from furpe.synthetic import SKIN_TONES, sample_params, vertex_colors

YAWS = (-40, -25, -10, 0, 10, 25, 40)


def _zoom_camera(points: np.ndarray, K: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Intrinsics of a virtual camera (same centre) zoomed on ``points`` (camera frame)."""
    uv = points[:, :2] / points[:, 2:3]
    lo, hi = uv.min(0), uv.max(0)
    extent = max(hi - lo) * margin
    f = size / extent
    centre = (lo + hi) / 2
    return np.array([[f, 0, (size - 1) / 2 - f * centre[0]],
                     [0, f, (size - 1) / 2 - f * centre[1]], [0, 0, 1.0]])


def triangulate(projs: list[np.ndarray], uvs: list[np.ndarray], max_err: float = 6.0) -> np.ndarray | None:
    """DLT triangulation that drops the worst view while its reprojection error (px) is large."""
    projs, uvs = list(projs), list(uvs)
    while len(projs) >= 2:
        X = _dlt(projs, uvs)
        errs = []
        for P, uv in zip(projs, uvs):
            x = P @ np.append(X, 1.0)
            errs.append(np.linalg.norm(x[:2] / x[2] - uv))
        worst = int(np.argmax(errs))
        if errs[worst] <= max_err:
            return X
        del projs[worst], uvs[worst]
    return None


def _dlt(projs: list[np.ndarray], uvs: list[np.ndarray]) -> np.ndarray:
    rows = []
    for P, (u, v) in zip(projs, uvs):
        rows.append(u * P[2] - P[0])
        rows.append(v * P[2] - P[1])
    _, _, vt = np.linalg.svd(np.stack(rows))
    X = vt[-1]
    return X[:3] / X[3]


def observe_pose(model, params, graphs, size: int = 720):
    """Detections of every landmark in every view of one pose: conv -> list of (P, uv, ok)."""
    with torch.no_grad():
        native_v, native_j = model._forward(model.complete(params))
    native_v, native_j = native_v[0].numpy(), native_j[0].numpy()
    skin = SKIN_TONES[1]
    colors = vertex_colors(model, skin)
    obs: dict[str, list] = {c: [] for c in ("mediapipe_pose", "mediapipe_hand_left",
                                            "mediapipe_hand_right", "mediapipe_face")}
    base_yaw = float(params["global_orient"][0, 0, 1])
    for yaw in YAWS:
        p = {k: v.clone() for k, v in params.items()}
        p["global_orient"][0, 0] = torch.tensor([0.0, base_yaw + math.radians(yaw), 0.0])
        import roma

        R = roma.rotvec_to_rotmat(p["global_orient"][0, 0].double()).numpy() @ model.canonical_rotation
        t = p["transl"][0].double().numpy()
        verts = native_v @ R.T + t
        Rt = np.concatenate([R, t[:, None]], 1)
        K = intrinsics(size, size)
        views = {"mediapipe_pose": K}
        for conv, part in (("mediapipe_hand_left", "left_hand"),
                           ("mediapipe_hand_right", "right_hand"), ("mediapipe_face", "face")):
            views[conv] = _zoom_camera(verts[model.part_vertices[part]], K, 384 if part == "face" else 320,
                                       2.0 if part == "face" else 2.2)
        for conv, Kv in views.items():
            s = size if conv == "mediapipe_pose" else (384 if conv == "mediapipe_face" else 320)
            img = render([Mesh(verts, model.faces, vertex_colors=colors)], Kv, s, s,
                         background=np.full((s, s, 3), 120, np.uint8)).color
            uv = _detect(graphs, conv, img)
            obs[conv].append((Kv @ Rt, uv))
    return obs, native_v, native_j


def _detect(models, conv: str, img: np.ndarray) -> np.ndarray | None:
    """(K, 3) pixel coordinates and a confidence of the expert's landmarks, or None."""
    h, w = img.shape[:2]
    if conv == "mediapipe_pose":
        found = models["pose"].process(img)
        if not found:
            return None
        uv = np.column_stack([found[0].uv * (w, h), found[0].visibility])
    elif conv.startswith("mediapipe_hand"):
        # The zoomed view is centred on the wanted hand; the other hand may be in view too.
        want = "right" if conv.endswith("right") else "left"
        hands = [np.column_stack([hand.uv * (w, h), np.ones(21)])
                 for hand in models["hands"].process(img) if hand.side == want]
        if not hands:
            return None
        uv = min(hands, key=lambda a: np.linalg.norm(a[:, :2].mean(0) - [w / 2, h / 2]))
    else:
        found = models["face"].process(img)
        if not found:
            return None
        uv = np.column_stack([found[0].uv * (w, h), np.ones(len(found[0].uv))])
    uv[:, :2] -= 0.5  # MediaPipe's normalised coordinates have pixel centres at +0.5
    return uv


def fit_weights(targets: np.ndarray, points: np.ndarray, k_vert: int = 16, k_joint: int = 3,
                num_vertices: int = 0) -> dict[int, float]:
    """Convex weights over nearby points reproducing ``targets`` (P, 3) from ``points``
    (P, N, 3) in every pose. Poses whose triangulation disagrees with the others (residual over
    3x the median and over 1 cm) are dropped and the weights refitted."""
    keep = np.ones(len(targets), dtype=bool)
    for _ in range(3):
        ref = np.median(targets[keep], axis=0)
        d = np.linalg.norm(np.median(points[keep], axis=0) - ref, axis=1)
        cand = np.concatenate([np.argsort(d[:num_vertices])[:k_vert],
                               num_vertices + np.argsort(d[num_vertices:])[:k_joint]])
        A = points[keep][:, cand].transpose(0, 2, 1).reshape(-1, len(cand))
        b = targets[keep].reshape(-1)
        lam = 10.0
        w, _ = nnls(np.vstack([A, lam * np.ones((1, len(cand)))]), np.concatenate([b, [lam]]))
        w = w / w.sum()
        resid = np.linalg.norm(np.einsum("n,pnd->pd", w, points[:, cand]) - targets, axis=1)
        bad = (resid > 3 * np.median(resid[keep])) & (resid > 0.01)
        if not (bad & keep).any() or (keep & ~bad).sum() < 2:
            break
        keep &= ~bad
    return {int(i): float(x) for i, x in zip(cand, w) if x > 1e-4}


#: Parts whose expert's metric 3D landmarks get their own correspondences, with the convention
#: they start from. Not the hands: on the renders' 30-60 px hands HandLandmarker's 3D landmarks
#: are too noisy to place them.
WORLD_PARTS = {"body": "mediapipe_pose"}


def _apply(reg, points: np.ndarray) -> np.ndarray:
    """The regressor's keypoints (..., K, 3) of model points (..., N, 3) (NumPy)."""
    return np.einsum("kn,...knd->...kd", reg.weights, points[..., reg.indices, :])


def observe_world(model, n: int, first_seed: int = 1000) -> dict[str, list]:
    """Per convention, (landmarks (K, 3) native frame, confidence (K,), model points (N, 3)
    native frame) of every render where the default experts saw that part."""
    import roma

    from furpe.config import ReconstructConfig
    from furpe.pipeline import Reconstructor, observe
    from furpe.synthetic import make_person

    rec = Reconstructor(ReconstructConfig(), body_model=model)
    rng = np.random.default_rng(first_seed)
    out: dict[str, list] = {conv: [] for conv in WORLD_PARTS.values()}
    for i in range(n):
        sp = make_person(model, first_seed + i, 640, 640, distance=float(rng.uniform(1.6, 3.0)))
        people = observe(rec.experts, sp.image, 1)
        if not people:
            continue
        params = model.complete(sp.params)
        with torch.no_grad():
            nv, nj = model._forward(params)
        points = np.concatenate([nv[0].numpy(), nj[0].numpy()]).astype(np.float64)
        R = roma.rotvec_to_rotmat(params["global_orient"][0, 0].double()).numpy() \
            @ np.asarray(model.canonical_rotation, dtype=np.float64)
        for part, conv in WORLD_PARTS.items():
            obs = people[0].get(part)
            if obs is not None and obs.keypoints_3d is not None:
                out[conv].append((obs.keypoints_3d @ R, np.asarray(obs.confidence), points))
        if (i + 1) % 25 == 0:
            print(f"render {i + 1}/{n}: " + ", ".join(f"{c} {len(v)}" for c, v in out.items()),
                  flush=True)
    return out


def fit_world(start, samples: list, num_vertices: int, rounds: int = 3,
              min_conf: float = 0.5):
    """``_world`` correspondences from ``samples`` of :func:`observe_world`, starting from the
    2D correspondences ``start`` (a Regressor); returns the Regressor and the median distance
    (metres) between the shifted landmarks and the new correspondences."""
    reg = start
    names = list(start.names)
    points = np.stack([p for _, _, p in samples])
    for _ in range(rounds):
        cur = _apply(reg, points)
        targets = np.full(cur.shape, np.nan)
        for j, (obs, conf, _) in enumerate(samples):
            w = np.where(conf > min_conf, conf, 0.0)
            if w.sum() <= 0:
                continue
            R = kabsch(obs, cur[j], w)
            placed = obs @ R.T
            shift = ((cur[j] - placed) * w[:, None]).sum(0) / w.sum()
            targets[j] = np.where((w > 0)[:, None], placed + shift, np.nan)
        rows = []
        for k in range(len(names)):
            ok = np.isfinite(targets[:, k, 0])
            if ok.sum() < 2:
                raise SystemExit(f"{names[k]} was seen in fewer than 2 renders")
            rows.append(fit_weights(targets[ok, k], points[ok], num_vertices=num_vertices))
        reg = correspondences.pack_rows(names, rows)
    return reg, float(np.nanmedian(np.linalg.norm(_apply(reg, points) - targets, axis=-1)))


def add_world(model, regs: dict, n: int) -> None:
    """Add the ``<convention>_world`` correspondences to ``regs`` (steps 5 and 6)."""
    samples = observe_world(model, n)
    for conv, got in samples.items():
        reg, resid = fit_world(regs[conv], got, model.num_vertices)
        regs[world_convention(conv)] = reg
        moved = np.linalg.norm(_apply(reg, got[0][2]) - _apply(regs[conv], got[0][2]), axis=1)
        print(f"{world_convention(conv)}: {len(got)} renders, median residual "
              f"{resid * 1000:.1f} mm, median shift from the 2D correspondences "
              f"{np.median(moved) * 1000:.1f} mm")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--poses", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pose-model", default="heavy", choices=("heavy", "full"),
                    help="the BlazePose variant whose landmarks are placed (default heavy)")
    ap.add_argument("--out", type=Path, default=correspondences.data_path("anny"))
    ap.add_argument("--world", type=int, default=240, metavar="N",
                    help="renders for the experts' 3D-landmark correspondences (0: none)")
    ap.add_argument("--world-only", action="store_true",
                    help="only (re)make the _world correspondences of the existing --out file")
    args = ap.parse_args(argv)
    if args.world_only:
        model = load_body_model("anny")
        regs = correspondences.load(args.out, model.num_vertices, len(model.joint_names))
        worlds = {world_convention(c) for c in WORLD_PARTS.values()}
        regs = {c: r for c, r in regs.items() if c not in worlds}
        add_world(model, regs, args.world)
        correspondences.save(args.out, regs, model.num_vertices, len(model.joint_names))
        print(f"wrote {args.out}")
        return 0
    graphs = {"pose": PoseModel(args.pose_model, 1), "hands": HandModel(2), "face": FaceModel()}
    model = load_body_model("anny")
    rng = np.random.default_rng(args.seed)
    per_conv_targets: dict[str, list] = {}
    all_points = []
    for i in range(args.poses):
        params = sample_params(model, rng, distance=2.6, expression=False)
        if i == 0:
            params["phenotype"][:] = 0.5
        for hand in ("left_hand_pose", "right_hand_pose"):
            params[hand] *= 0.5  # relaxed, well-detectable hands
        obs, nv, nj = observe_pose(model, params, graphs)
        all_points.append(np.concatenate([nv, nj]))
        for conv, views in obs.items():
            K = {"mediapipe_pose": 33, "mediapipe_face": 478}.get(conv, 21)
            X = np.full((K, 3), np.nan)
            for k in range(K):
                projs = [P for P, uv in views if uv is not None and uv[k, 2] > 0.5]
                uvs = [uv[k, :2] for P, uv in views if uv is not None and uv[k, 2] > 0.5]
                Xk = triangulate(projs, uvs)
                if Xk is not None:
                    X[k] = Xk
            per_conv_targets.setdefault(conv, []).append(X)
        print(f"pose {i + 1}/{args.poses}: " + ", ".join(
            f"{c} {int(np.isfinite(per_conv_targets[c][-1][:, 0]).sum())}" for c in obs), flush=True)
    points = np.stack(all_points)
    regs = {}
    for conv, Xs in per_conv_targets.items():
        Xs = np.stack(Xs)  # (P, K, 3)
        names = CONVENTIONS["mediapipe_hand" if conv.startswith("mediapipe_hand") else conv]
        rows = []
        for k in range(Xs.shape[1]):
            ok = np.isfinite(Xs[:, k, 0])
            if ok.sum() < 2:
                raise SystemExit(f"{conv} landmark {names[k]} was triangulated in fewer than 2 poses")
            rows.append(fit_weights(Xs[ok, k], points[ok], num_vertices=model.num_vertices))
        regs[conv] = correspondences.pack_rows(list(names), rows)
        resid = np.nanmedian(np.linalg.norm(_apply(regs[conv], points) - Xs, axis=-1))
        print(f"{conv}: median fit residual {resid * 1000:.1f} mm over {Xs.shape[0]} poses")
    if args.world:
        add_world(model, regs, args.world)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    correspondences.save(args.out, regs, model.num_vertices, len(model.joint_names))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
