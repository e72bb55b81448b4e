"""The reconstruction pipeline as explicit stages: observe -> fit -> select -> result.

* :func:`observe`: the experts' :class:`~furpe.experts.base.PersonObservation` per person;
* :class:`~furpe.fitting.fit.Fitter`: one body model instance per person, fitted to them;
* :func:`~furpe.selection.select`: per-part verdicts and the parameters to keep (a new
  dict: rejected hands and faces at rest);
* :func:`assemble`: the :class:`~furpe.results.FrameResult`, posing the kept parameters.

Each stage takes the previous one's output and changes nothing it was given, so a label
builder, a network or a tracker reuses them unchanged. :class:`Reconstructor` chains them
for images, :class:`VideoSession` for the frames of one video.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from furpe.bodymodels import BodyModel, load_body_model
from furpe.config import ReconstructConfig
from furpe.core.boxes import box_centre, landmark_box
from furpe.core.camera import intrinsics, project
from furpe.core.errors import FurpeError, NoPersonError
from furpe.core.vocab import EXPERT_CONVENTIONS, PARTS, part_convention
from furpe.experts import build_experts, reset_experts, run_experts
from furpe.experts.base import Expert, PartObservation, PersonObservation
from furpe.fitting.fit import Fitter, FitOutput
from furpe.results import FrameResult, KeypointSet, PartResult, PersonResult
from furpe.selection import Selection, select


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FurpeError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def observe(experts: Sequence[Expert], image: np.ndarray,
            max_people: int) -> list[PersonObservation]:
    """Stage 1: run the experts; one :class:`PersonObservation` per person with a body."""
    people = run_experts(experts, image)
    return [p for p in people if p.get("body") is not None][:max_people]


def assemble(model: BodyModel, people: Sequence[PersonObservation], fit: FitOutput,
             selection: Selection, K: np.ndarray, size: tuple[int, int]) -> FrameResult:
    """Last stage: the frame's result from the kept parameters (posed again only when the
    selection changed them)."""
    out = fit.output
    if selection.changed:
        with torch.no_grad():
            out = model(selection.params)
    verts = out.vertices.detach().cpu().numpy()
    joints = out.joints.detach().cpu().numpy()
    results = []
    for b, person in enumerate(people):
        kps = {}
        for part, tg in fit.targets.items():
            if not bool(tg.present[b]):
                continue
            kps[part] = KeypointSet(
                convention=person.get(part).convention, names=tuple(tg.names),
                observed=tg.kp2d[b].cpu().numpy(), confidence=tg.conf[b].cpu().numpy(),
                fitted=fit.projected[part][b].cpu().numpy(),
            )
        anchor = person.get("body") or next(iter(person.parts.values()))
        results.append(PersonResult(
            params={k: v[b].detach().cpu().numpy() for k, v in selection.params.items()},
            vertices=verts[b], joints=joints[b], keypoints_2d=kps,
            parts=selection.verdicts[b], box=person_box(anchor), observation=person,
        ))
    return FrameResult(
        image_size=size, intrinsics=K, body_model=model.name,
        joint_names=tuple(model.joint_names), faces=model.faces, people=results, timings={},
    )


def person_box(obs: PartObservation) -> tuple[float, float, float, float]:
    """The observation's box, else the box of its confident landmarks."""
    box = obs.box or landmark_box(obs.keypoints_2d, obs.confidence, 0.1) \
        or landmark_box(obs.keypoints_2d)
    return tuple(float(x) for x in box)  # type: ignore[return-value]


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` if it is an RGB uint8 (H, W, 3) array (a :class:`FurpeError` otherwise)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FurpeError("images must be RGB uint8 arrays of shape (H, W, 3)")
    return image


def camera(K: np.ndarray | None, width: int, height: int, focal: float | None) -> np.ndarray:
    """The given intrinsics (validated), else the default camera of the image size."""
    if K is None:
        return intrinsics(width, height, focal)
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FurpeError("K must be a finite 3x3 intrinsics matrix with positive focal lengths")
    return K


class Reconstructor:
    """Whole-body reconstruction of every person in an image from part experts.

    Example::

        rec = Reconstructor()                       # or Reconstructor(ReconstructConfig(...))
        frame = rec.reconstruct_image(rgb)          # FrameResult
        frame.people[0].vertices                    # (V, 3), camera frame, metres
        with rec.video() as session:                # the frames of one video
            for rgb in frames: session.reconstruct_frame(rgb)

    ``body_model`` and ``experts`` (already built objects) replace what the configuration
    names, e.g. to share a loaded model.
    """

    def __init__(self, config: ReconstructConfig | None = None, *,
                 body_model: BodyModel | None = None,
                 experts: Sequence[Expert] | None = None) -> None:
        self.config = config or ReconstructConfig()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.body_model = body_model if body_model is not None else load_body_model(
            cfg.body_model, cfg.model_path, self.device)
        self.experts = list(experts) if experts is not None else self._build_experts(False)
        self._video_experts: list[Expert] | None = None if experts is None else self.experts
        self.fitter = Fitter(self.body_model, cfg.fit)
        self.selection = cfg.scheme()
        self.network: NetworkRun | None = None
        if cfg.method == "network":
            self.network = NetworkRun(cfg, self.body_model, self.device)

    def _build_experts(self, video: bool) -> list[Expert]:
        """The configured experts (none for the network alone: nothing runs them)."""
        cfg = self.config
        if cfg.method == "network" and not cfg.refine:
            return []
        return build_experts(cfg.experts, cfg.expert_options, max_people=cfg.max_people,
                             video=video)

    def reconstruct_image(self, image: np.ndarray, K: np.ndarray | None = None, *,
                          reset_rejected: bool = True) -> FrameResult:
        """Reconstruct everyone in an RGB uint8 image (a single image: no tracking state).

        ``K`` (3, 3), when the camera is known (e.g. an evaluation set's intrinsics, whose
        principal point may be off-centre), replaces the camera built from ``focal``. With
        ``reset_rejected=False`` hands and faces that the selection scheme rejects keep their
        fitted pose (still flagged), as pseudo labels do.
        """
        return self._run(self.experts, check_image(image), K, None, reset_rejected)

    def video(self) -> "VideoSession":
        """A session for the consecutive frames of one video: the experts in tracking mode
        (their state reset), each frame's fit warm-started from the previous one."""
        if self._video_experts is None:
            self._video_experts = self._build_experts(True)
        reset_experts(self._video_experts)
        return VideoSession(self, self._video_experts)

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
        img = check_image(image)
        t0 = time.perf_counter()
        if part == "face":
            obs = self._expert_with("observe_face_in_box").observe_face_in_box(img, box)
        elif part in ("hand", "left_hand", "right_hand"):
            side = None if part == "hand" else part.split("_")[0]
            obs = self._expert_with("observe_hand_in_box").observe_hand_in_box(img, box, side)
        else:
            raise FurpeError(f"part-only reconstruction needs part face, hand, left_hand or "
                             f"right_hand, not '{part}'")
        if obs is None:
            raise NoPersonError(f"no {part.replace('_', ' ')} found")
        return self._finish([PersonObservation({obs.part: obs})], img, K, None, t0,
                            reset=False)

    def _expert_with(self, method: str) -> Expert:
        for expert in self.experts:
            if callable(getattr(expert, method, None)):
                return expert
        raise FurpeError(f"none of the configured experts can look at a crop ({method})")

    def _run(self, experts: Sequence[Expert], image: np.ndarray, K: np.ndarray | None,
             previous: FrameResult | None, reset: bool = True) -> FrameResult:
        t0 = time.perf_counter()
        if self.network is not None:
            h, w = image.shape[:2]
            frame = self.network.frame(image, camera(K, w, h, self.config.focal))
            frame.config = self.config.to_dict()
            if not self.config.refine:
                frame.timings["total"] = time.perf_counter() - t0
                return frame
            previous = frame  # the fit starts from the network's people
        people = observe(experts, image, self.config.max_people)
        if not people:
            raise NoPersonError("no person found")
        return self._finish(people, image, K, previous, t0, reset)

    def _finish(self, people: list[PersonObservation], image: np.ndarray, K: np.ndarray | None,
                previous: FrameResult | None, t0: float, reset: bool = True) -> FrameResult:
        t1 = time.perf_counter()
        h, w = image.shape[:2]
        K = camera(K, w, h, self.config.focal)
        init, warm = self._warm_start(people, previous)
        fit = self.fitter.fit(people, K, init=init, warm=warm, device=self.device)
        chosen = select(self.selection, self.body_model, people, fit, reset=reset)
        t2 = time.perf_counter()
        frame = assemble(self.body_model, people, fit, chosen, K, (w, h))
        frame.config = self.config.to_dict()
        frame.timings.update({"experts": t1 - t0, "fit": t2 - t1,
                              "total": time.perf_counter() - t0})
        return frame

    def _warm_start(self, people: list[PersonObservation], previous: FrameResult | None
                    ) -> tuple[dict[str, torch.Tensor] | None, np.ndarray | None]:
        """The previous frame's parameters matched to the current people by box centre
        (one-to-one, Hungarian): ``(init, warm)``, where ``warm[b]`` says person ``b`` was
        matched; a new person starts cold without making the others do so."""
        if previous is None or not previous.people or previous.body_model != self.body_model.name:
            return None, None
        from scipy.optimize import linear_sum_assignment

        prev = previous.people
        cur = np.array([box_centre(person_box(p.get("body"))) for p in people])
        old = np.array([box_centre(p.box) for p in prev])
        dist = np.linalg.norm(cur[:, None] - old[None], axis=-1)
        reach = np.array([0.5 * max(p.box[2] - p.box[0], p.box[3] - p.box[1]) for p in prev])
        rows, cols = linear_sum_assignment(np.where(dist <= reach[None], dist, 1e9))
        warm = np.zeros(len(people), dtype=bool)
        source: list[dict[str, np.ndarray] | None] = [None] * len(people)
        for r, c in zip(rows, cols):
            if dist[r, c] <= reach[c]:
                warm[r], source[r] = True, prev[c].params
        if not warm.any():
            return None, None
        neutral = self.body_model.neutral_params(len(people))
        init = {k: torch.stack([torch.as_tensor(s[k], dtype=torch.float32) if s is not None
                                else neutral[k][b] for b, s in enumerate(source)])
                for k in self.body_model.blocks}
        return init, warm


class NetworkRun:
    """``method: network``: the person detector's boxes, then the trained network on every
    person crop of the image in one batch (:mod:`furpe.networks.inference`)."""

    def __init__(self, config: ReconstructConfig, model: BodyModel, device: torch.device) -> None:
        from furpe.experts.tasks import PersonDetector
        from furpe.networks.inference import NetworkPredictor, load_network

        self.model = model
        self.max_people = config.max_people
        self.predictor = NetworkPredictor(load_network(config.checkpoint, model, device),
                                          onnx=config.onnx)
        self.detector = PersonDetector()

    def frame(self, image: np.ndarray, K: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        boxes = [box for box, _ in self.detector.process(image)][:self.max_people]
        if not boxes:
            raise NoPersonError("no person found")
        params = self.predictor.predict([image], [boxes], [K])[0]
        with torch.no_grad():
            out = self.model(params)
            Kt = torch.as_tensor(K, dtype=out.vertices.dtype, device=out.vertices.device)
            fitted = {p: project(self.model.keypoints(out, part_convention(c, p)), Kt)
                      .cpu().numpy() for p, c in EXPERT_CONVENTIONS.items()}
        verts, joints = out.vertices.cpu().numpy(), out.joints.cpu().numpy()

        def keypoints(b: int) -> dict[str, KeypointSet]:  # the network's, nothing observed
            return {p: KeypointSet(
                convention=c, names=self.model.regressors[part_convention(c, p)].names,
                observed=np.full_like(fitted[p][b], np.nan),
                confidence=np.zeros(len(fitted[p][b])), fitted=fitted[p][b])
                for p, c in EXPERT_CONVENTIONS.items()}

        people = [PersonResult(
            params={k: v[b].cpu().numpy() for k, v in params.items()}, vertices=verts[b],
            joints=joints[b], keypoints_2d=keypoints(b), box=tuple(float(x) for x in box),
            parts={p: PartResult(p, observed=False, accepted=True) for p in PARTS})
            for b, box in enumerate(boxes)]
        h, w = image.shape[:2]
        return FrameResult(image_size=(w, h), intrinsics=K, body_model=self.model.name,
                           joint_names=tuple(self.model.joint_names), faces=self.model.faces,
                           people=people, timings={"network": time.perf_counter() - t0})


class VideoSession:
    """The frames of one video: made by :meth:`Reconstructor.video`."""

    def __init__(self, reconstructor: Reconstructor, experts: Sequence[Expert]) -> None:
        self.reconstructor = reconstructor
        self.experts = experts
        #: The last frame's result, which warm-starts the next frame (None: start cold).
        self.previous: FrameResult | None = None

    def reconstruct_frame(self, image: np.ndarray, K: np.ndarray | None = None) -> FrameResult:
        """Reconstruct the next frame (a :class:`NoPersonError` when nobody is found)."""
        try:
            result = self.reconstructor._run(self.experts, check_image(image), K, self.previous)
        except FurpeError:
            self.previous = None
            raise
        self.previous = result
        return result

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.previous = None


def reconstruct(image: np.ndarray, config: ReconstructConfig | None = None) -> FrameResult:
    """One-shot convenience: ``furpe.reconstruct(rgb)`` builds a :class:`Reconstructor`."""
    return Reconstructor(config).reconstruct_image(image)
