"""The reconstruction pipeline: experts -> whole-body fit -> selection -> results."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from furpe.bodymodels import BodyModel, load_body_model
from furpe.errors import FurpeError, NoPersonError
from furpe.experts.base import PARTS, Expert, PersonObservation
from furpe.fitting.camera import intrinsics
from furpe.fitting.fit import FitConfig, Fitter, FitOutput
from furpe.results import FrameResult, KeypointSet, PartResult, PersonResult
from furpe.selection import SelectionScheme


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FurpeError("--device cuda was asked for but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise FurpeError(f"unknown device '{device}'; use auto, cpu or cuda")
    return torch.device(device)


class Reconstructor:
    """Whole-body reconstruction of every person in an image from part experts.

    Example::

        rec = Reconstructor()
        frame = rec.reconstruct_image(rgb)          # FrameResult
        frame.people[0].vertices                    # (V, 3), camera frame, metres
    """

    def __init__(
        self,
        body_model: str | BodyModel = "anny",
        model_path: str | Path | None = None,
        focal: float | None = None,
        device: str = "auto",
        max_people: int = 4,
        video: bool = False,
        experts: Sequence[Expert] | None = None,
        fit_config: FitConfig | None = None,
        selection: SelectionScheme | None = None,
    ) -> None:
        if focal is not None and focal <= 0:
            raise FurpeError("--focal must be a positive number of pixels")
        if max_people < 1:
            raise FurpeError("--max-people must be at least 1")
        self.device = resolve_device(device)
        self.body_model = (
            body_model if isinstance(body_model, BodyModel)
            else load_body_model(body_model, model_path)
        ).to(self.device)
        if experts is None:
            from furpe.experts import default_experts

            experts = default_experts(video=video, max_people=max_people)
        self.experts = list(experts)
        self.focal = focal
        self.max_people = max_people
        cfg = fit_config or FitConfig()
        if video and fit_config is None:
            cfg.w_temporal = 1e-3
        self.fitter = Fitter(self.body_model, cfg)
        self.selection = selection or SelectionScheme()

    def observe(self, image: np.ndarray) -> list[PersonObservation]:
        """Run the experts: one :class:`PersonObservation` per person with a body estimate."""
        from furpe.experts import run_experts

        people = run_experts(self.experts, image)
        return [p for p in people if p.get("body") is not None][: self.max_people]

    def reconstruct_image(
        self, image: np.ndarray, previous: FrameResult | None = None,
        K: np.ndarray | None = None,
    ) -> FrameResult:
        """Reconstruct everyone in an RGB uint8 image; ``previous`` warm-starts a video frame.

        ``K`` (3, 3), when the camera is known (e.g. an evaluation set's intrinsics, whose
        principal point may be off-centre), replaces the camera built from ``focal``.
        """
        _check_image(image)
        t0 = time.perf_counter()
        people = self.observe(image)
        t1 = time.perf_counter()
        if not people:
            raise NoPersonError("no person found")
        h, w = image.shape[:2]
        K = _camera(K, w, h, self.focal)
        init = self._warm_start(people, previous)
        fit = self.fitter.fit(people, K, init=init, device=self.device)
        verdicts = self._select(people, fit)
        t2 = time.perf_counter()
        frame = self._to_frame(people, fit, verdicts, K, (w, h))
        frame.timings.update({"experts": t1 - t0, "fit": t2 - t1,
                              "total": time.perf_counter() - t0})
        return frame

    def reconstruct_part(
        self, image: np.ndarray, part: str, box: tuple[float, float, float, float] | None = None,
        K: np.ndarray | None = None,
    ) -> FrameResult:
        """Reconstruct from a crop that shows one part only: ``"face"`` (a head crop, e.g.
        NoW) or ``"left_hand"``/``"right_hand"``/``"hand"`` (a hand crop, e.g. FreiHAND; the
        side from the hand expert when ``"hand"``). ``box`` limits the search (default: the
        whole image).

        The whole model is fitted to that part alone (its body pose stays at rest, its shape
        adapts). The part's scores are reported, but since it is the only observation it is
        not reset when the selection scheme rejects it.
        """
        img = _check_image(image)
        t0 = time.perf_counter()
        if part == "face":
            obs = self._expert_with("observe_face_in_box").observe_face_in_box(img, box)
        elif part in ("hand", "left_hand", "right_hand"):
            side = None if part == "hand" else part.split("_")[0]
            obs = self._expert_with("observe_hand_in_box").observe_hand_in_box(img, box, side)
        else:
            raise FurpeError(f"part-only reconstruction needs part face, hand, left_hand or "
                             f"right_hand, not '{part}'")
        t1 = time.perf_counter()
        if obs is None:
            raise NoPersonError(f"no {part.replace('_', ' ')} found")
        people = [PersonObservation({obs.part: obs})]
        h, w = img.shape[:2]
        K = _camera(K, w, h, self.focal)
        fit = self.fitter.fit(people, K, device=self.device)
        verdicts = self._select(people, fit, reset=False)
        t2 = time.perf_counter()
        frame = self._to_frame(people, fit, verdicts, K, (w, h))
        frame.timings.update({"experts": t1 - t0, "fit": t2 - t1,
                              "total": time.perf_counter() - t0})
        return frame

    def _expert_with(self, method: str) -> Expert:
        for expert in self.experts:
            if callable(getattr(expert, method, None)):
                return expert
        raise FurpeError(f"none of the configured experts can look at a crop ({method})")

    # -- internals --------------------------------------------------------------------------
    def _warm_start(self, people, previous: FrameResult | None) -> dict[str, torch.Tensor] | None:
        """Previous-frame parameters, matched to the current people by box centre."""
        if previous is None or not previous.people or previous.body_model != self.body_model.name:
            return None
        prev_centres = np.array([_centre(p.box) for p in previous.people])
        rows = []
        for person in people:
            c = _centre(person.get("body").box or _kp_box(person.get("body")))
            d = np.linalg.norm(prev_centres - c, axis=1)
            j = int(d.argmin())
            box = previous.people[j].box
            if d[j] > 0.5 * max(box[2] - box[0], box[3] - box[1]):
                return None  # someone new: start cold
            rows.append(previous.people[j].params)
        return {
            k: torch.as_tensor(np.stack([r[k] for r in rows]), dtype=torch.float32)
            for k in self.body_model.blocks
        }

    def _select(self, people, fit: FitOutput, reset: bool = True) -> list[dict[str, PartResult]]:
        model = self.body_model
        verdicts = []
        for b, person in enumerate(people):
            per = {}
            for part in PARTS:
                obs = person.get(part)
                observed = obs is not None and part in fit.targets and bool(
                    fit.targets[part].present[b])
                per[part] = self.selection.judge(
                    part, observed,
                    detector=float(obs.score) if obs is not None else 0.0,
                    residual=float(fit.residual[part][b]) if observed else float("inf"),
                    plausibility=float(fit.plausibility.get(part, torch.ones(len(people)))[b]),
                )
            verdicts.append(per)
        if not reset:
            return verdicts
        # Rejected or unobserved hands and faces fall back to their neutral pose.
        neutral = model.neutral_params(len(people), device=self.device)
        changed = False
        for b, per in enumerate(verdicts):
            for name, blk in model.blocks.items():
                if blk.part in ("left_hand", "right_hand", "face") and not per[blk.part].accepted:
                    fit.params[name][b] = neutral[name][b]
                    changed = True
        if changed:
            with torch.no_grad():
                fit.output = model(fit.params)
        return verdicts

    def _to_frame(self, people, fit: FitOutput, verdicts, K, size) -> FrameResult:
        model = self.body_model
        verts = fit.output.vertices.detach().cpu().numpy()
        joints = fit.output.joints.detach().cpu().numpy()
        results = []
        for b, person in enumerate(people):
            kps = {}
            for part, tg in fit.targets.items():
                if not bool(tg.present[b]):
                    continue
                kps[part] = KeypointSet(
                    convention=person.get(part).convention,
                    names=tuple(model.regressors[tg.regressor].names),
                    observed=tg.kp2d[b].cpu().numpy(),
                    confidence=tg.conf[b].cpu().numpy(),
                    fitted=fit.projected[part][b].cpu().numpy(),
                )
            body = person.get("body") or next(iter(person.parts.values()))
            results.append(PersonResult(
                params={k: v[b].detach().cpu().numpy() for k, v in fit.params.items()},
                vertices=verts[b], joints=joints[b], keypoints_2d=kps, parts=verdicts[b],
                box=tuple(float(x) for x in (body.box or _kp_box(body))),
            ))
        return FrameResult(
            image_size=size, intrinsics=K, body_model=model.name,
            joint_names=tuple(model.joint_names), faces=model.faces, people=results, timings={},
        )


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FurpeError("images must be RGB uint8 arrays of shape (H, W, 3)")
    return image


def _camera(K: np.ndarray | None, width: int, height: int, focal: float | None) -> np.ndarray:
    """The given intrinsics (validated), else the default camera of the image size."""
    if K is None:
        return intrinsics(width, height, focal)
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FurpeError("K must be a finite 3x3 intrinsics matrix with positive focal lengths")
    return K


def _kp_box(obs) -> tuple[float, float, float, float]:
    pts = obs.keypoints_2d[obs.confidence > 0.1]
    if len(pts) == 0:
        pts = obs.keypoints_2d
    return (*pts.min(0), *pts.max(0))


def _centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def reconstruct(image: np.ndarray, **kwargs) -> FrameResult:
    """One-shot convenience: ``furpe.reconstruct(rgb)`` builds a :class:`Reconstructor`."""
    return Reconstructor(**kwargs).reconstruct_image(image)
