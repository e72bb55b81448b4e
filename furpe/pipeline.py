"""The reconstruction pipeline as explicit stages: observe -> fit -> select -> result.

* :func:`observe`: the experts' :class:`~furpe.experts.base.PersonObservation` per person
  (for a single image, the hand and face experts still run while the fit places the bodies);
* :class:`~furpe.fitting.fit.Fitter`: one body model instance per person, fitted to them;
* :func:`~furpe.selection.select`: per-part verdicts and the parameters to keep (a new
  dict: rejected hands and faces at rest);
* :func:`assemble`: the :class:`~furpe.results.FrameResult`, posing the kept parameters.

Each stage takes the previous one's output and changes nothing it was given, so a label
builder, a network or a tracker reuses them unchanged. :class:`Reconstructor` chains them
for images, :class:`VideoSession` for the frames of one video.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from furpe.bodymodels import BodyModel, load_body_model
from furpe.config import ReconstructConfig
from furpe.core.boxes import landmark_box
from furpe.core.camera import intrinsics, project
from furpe.core.errors import FurpeError, NoPersonError, SetupError
from furpe.core.exposure import normalise_exposure
from furpe.core.lookahead import Lookahead
from furpe.core.vocab import DETAIL_PARTS, EXPERT_CONVENTIONS, PARTS, part_convention
from furpe.experts import Finish, build_experts, reset_experts, run_experts, start_experts
from furpe.experts.base import Expert, PartObservation, PersonObservation
from furpe.fitting.fit import Fitter, FitOutput
from furpe.results import FrameResult, KeypointSet, PartResult, PersonResult
from furpe.selection import Selection, replace_part, select
from furpe.tracking import Smoother, Tracker, assign, association_cost

#: Per person of a frame, the parameters its fit starts from (None: a cold start).
Sources = list["Mapping[str, np.ndarray] | None"]
#: The video session's hook into the fit stage: ``track(people, sources) -> sources``.
TrackHook = Callable[[list[PersonObservation], Sources], Sources]


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
    return keep_bodies(run_experts(experts, image), max_people)


def keep_bodies(people: Sequence[PersonObservation], max_people: int
                ) -> list[PersonObservation]:
    """The first ``max_people`` of ``people`` that have a body."""
    return [p for p in people if p.get("body") is not None][:max_people]


class _Deferred:
    """The experts still running on an image (:func:`~furpe.experts.start_experts`), waited
    for by the fit (``later``) or, at the latest, when the call ends: the people they saw
    (every one, those they added too), the seconds they ran, and those the fit waited."""

    def __init__(self, finish: Finish) -> None:
        self._finish = finish
        self.people: list[PersonObservation] | None = None
        self.seconds = self.waited = 0.0

    def __call__(self) -> None:
        if self.people is None:
            t = time.perf_counter()
            self.people, self.seconds = self._finish()
            self.waited = time.perf_counter() - t


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


def keep_unobserved_parts(model: BodyModel, selection: Selection,
                          start: Mapping[str, torch.Tensor], warm: np.ndarray) -> Selection:
    """``selection`` with every hand and face that a warm-started person (``warm``) was not
    observed in put back to its ``start`` values and accepted (its estimate drives the mesh):
    with ``fit_landmarks``, the network's hands and face, as without the fit."""
    params = selection.params
    verdicts = [dict(v) for v in selection.verdicts]
    for part in DETAIL_PARTS:
        rows = torch.tensor([bool(warm[b]) and not v[part].observed
                             for b, v in enumerate(verdicts)], device=params["transl"].device)
        if not bool(rows.any()):
            continue
        params = replace_part(model, params, part, rows, start)
        for b in rows.nonzero()[:, 0].tolist():
            verdicts[b][part] = PartResult(part, observed=False, accepted=True)
    return Selection(verdicts, params, True)


def person_box(obs: PartObservation) -> tuple[float, float, float, float]:
    """The observation's box, else the box of its confident landmarks."""
    box = obs.box or landmark_box(obs.keypoints_2d, obs.confidence, 0.1) \
        or landmark_box(obs.keypoints_2d)
    return tuple(float(x) for x in box)  # type: ignore[return-value]


def observed_keypoints(person: PersonObservation) -> tuple[np.ndarray, np.ndarray] | None:
    """The body's 2D landmarks and confidences that the tracker compares (None: no body)."""
    body = person.get("body")
    return None if body is None else (body.keypoints_2d, body.confidence)


def result_keypoints(person: PersonResult) -> tuple[np.ndarray, np.ndarray] | None:
    """A result's body landmarks for the tracker: the observed ones, else (nothing
    observed, e.g. the network alone) the fitted ones."""
    ks = person.keypoints_2d.get("body")
    if ks is None:
        return None
    observed = np.asarray(ks.observed, dtype=np.float64)
    conf = np.asarray(ks.confidence, dtype=np.float64)
    if np.isfinite(observed).all(-1).any() and (conf > 0).any():
        return observed, conf
    return np.asarray(ks.fitted, dtype=np.float64), np.ones(len(ks.fitted))


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
        self._lookahead = Lookahead()
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

    def prefetch(self, image: np.ndarray) -> None:
        """Start the experts on ``image`` in a background thread, after those started
        before; the :meth:`reconstruct_image` call given this same array takes their
        result. Look one image ahead and the experts of the next image run while this one
        is fitted (docs/results.md: images per second on 2 cores)::

            rec.prefetch(images[0])
            for i, image in enumerate(images):
                if i + 1 < len(images):
                    rec.prefetch(images[i + 1])
                frames.append(rec.reconstruct_image(image))
        """
        self._submit(self.experts, check_image(image))

    def _submit(self, experts: Sequence[Expert], image: np.ndarray) -> None:
        if experts:
            self._lookahead.submit(experts, image, observe, experts, image,
                                   self.config.max_people)

    def video(self) -> "VideoSession":
        """A session for the consecutive frames of one video: the experts in tracking mode
        (their state reset), people tracked (``track_id``), each person's fit warm-started
        from their own track, their parameters smoothed over time (:class:`VideoSession`)."""
        if self._video_experts is None:
            self._video_experts = self._build_experts(True)
        self._lookahead.drain()
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
        self._lookahead.drain()
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
             previous: FrameResult | None, reset: bool = True,
             track: TrackHook | None = None) -> FrameResult:
        t0 = time.perf_counter()
        if self.network is not None:
            h, w = image.shape[:2]
            K_net = camera(K, w, h, self.config.focal)
        if self.network is not None and self.config.fit_landmarks:
            frame, people = self.network.observed(image, K_net)
            fit = self._finish(people, image, K, frame, t0, reset, track,
                               self.config.fit.refine_iters, self.config.fit.refine_fallback,
                               experts_s=0.0, keep_unobserved=True)
            self.network.add_unobserved_keypoints(fit)
            fit.timings["network"] = frame.timings["network"]
            del fit.timings["experts"]
            return fit
        if self.network is not None:
            frame = self.network.frame(image, K_net)
            frame.config = self.config.to_dict()
            if not self.config.refine:
                frame.timings["total"] = time.perf_counter() - t0
                return frame
            previous = frame  # the fit starts from the network's people
        if previous is None and track is None and not self._lookahead.started:
            return self._overlapped(experts, image, K, reset, t0)
        people, seconds = self._lookahead.take(experts, image, observe, experts, image,
                                               self.config.max_people)
        if not people:
            raise NoPersonError("no person found")
        refine = self.network is not None
        return self._finish(people, image, K, previous, t0, reset, track,
                            self.config.fit.refine_iters if refine else None,
                            self.config.fit.refine_fallback if refine else None,
                            experts_s=None if refine else seconds)

    def _overlapped(self, experts: Sequence[Expert], image: np.ndarray, K: np.ndarray | None,
                    reset: bool, t0: float) -> FrameResult:
        """One image, its people placed by their bodies while the hand and face experts run
        (:func:`~furpe.experts.start_experts`, the fit's ``later``): on two cores these
        overlap. ``experts`` in the timings is the experts' own time, ``fit`` the fit's
        without its wait for them."""
        people, finish = start_experts(experts, image)
        body_s = time.perf_counter() - t0
        people = keep_bodies(people, self.config.max_people)
        deferred = _Deferred(finish)
        try:
            if not people:
                raise NoPersonError("no person found")
            frame = self._finish(people, image, K, None, t0, reset, later=deferred)
        finally:
            deferred()  # no expert outlives the call
        everyone = keep_bodies(deferred.people or [], self.config.max_people)
        if len(everyone) > len(people):  # an expert added people: fit them all
            frame = self._finish(everyone, image, K, None, t0, reset)
        frame.timings["experts"] = body_s + deferred.seconds
        frame.timings["fit"] -= deferred.waited
        return frame

    def _finish(self, people: list[PersonObservation], image: np.ndarray, K: np.ndarray | None,
                previous: FrameResult | None, t0: float, reset: bool = True,
                track: TrackHook | None = None, warm_iters: float | None = None,
                fallback: Mapping[str, float] | None = None,
                experts_s: float | None = None, keep_unobserved: bool = False,
                later: Callable[[], None] | None = None) -> FrameResult:
        """Fit, select, assemble. Each person starts from the ``previous`` person matched to
        them (the network's estimate of this image), then ``track`` (a video session) gives
        the others their own track's last parameters; ``warm_iters`` and ``fallback``: see
        :meth:`~furpe.fitting.fit.Fitter.fit`. ``experts_s``: the seconds the experts ran
        (default: since ``t0``); with a look-ahead they ran before this call, and ``total``,
        the call's own time, is less than ``experts + fit``. ``keep_unobserved``: the parts
        a warm-started person was not observed in keep their starting values
        (:func:`keep_unobserved_parts`). ``later``: see :meth:`~furpe.fitting.fit.Fitter.fit`."""
        t1 = time.perf_counter()
        h, w = image.shape[:2]
        K = camera(K, w, h, self.config.focal)
        sources = self._matched(people, previous)
        if track is not None:
            sources = track(people, sources)
        init, warm = self._warm_start(sources)
        fit = self.fitter.fit(people, K, init=init, warm=warm, device=self.device,
                              warm_iters=warm_iters, fallback=fallback, later=later)
        chosen = select(self.selection, self.body_model, people, fit, reset=reset)
        if keep_unobserved and init is not None:
            chosen = keep_unobserved_parts(self.body_model, chosen, init, warm)
        t2 = time.perf_counter()
        frame = assemble(self.body_model, people, fit, chosen, K, (w, h))
        frame.config = self.config.to_dict()
        frame.timings.update({"experts": t1 - t0 if experts_s is None else experts_s,
                              "fit": t2 - t1,
                              "total": time.perf_counter() - t0})
        return frame

    def _matched(self, people: list[PersonObservation], previous: FrameResult | None) -> Sources:
        """``previous``'s parameters matched one-to-one to ``people`` by the tracker's
        association (box overlap and body landmarks, Hungarian, gated; None where nobody
        matches)."""
        sources: Sources = [None] * len(people)
        if previous is None or not previous.people or previous.body_model != self.body_model.name:
            return sources
        cfg = self.config.tracking
        prev = previous.people

        def landmarks(found: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray | None:
            if found is None:
                return None
            kp, conf = found
            return np.where((conf >= cfg.min_confidence)[:, None], kp, np.nan)

        cost = association_cost(
            np.array([p.box for p in prev]), [landmarks(result_keypoints(p)) for p in prev],
            np.array([person_box(p.get("body") or next(iter(p.parts.values()))) for p in people]),
            [landmarks(observed_keypoints(p)) for p in people], cfg.keypoint_weight)
        for r, c in assign(cost, cfg.gate):
            sources[c] = prev[r].params
        return sources

    def usable(self, params: Mapping[str, np.ndarray] | None) -> bool:
        """Whether ``params`` hold every block of the body model, in its shape (a fit can
        start from them)."""
        if params is None:
            return False
        for name, block in self.body_model.blocks.items():
            value = params.get(name)
            if value is None or np.shape(value) != block.shape(1)[1:]:
                return False
        return True

    def _warm_start(self, sources: Sources
                    ) -> tuple[dict[str, torch.Tensor] | None, np.ndarray | None]:
        """The fit's ``(init, warm)`` from each person's starting parameters: ``warm[b]``
        says person ``b`` has some (the others start cold without making them do so)."""
        ok = [s if self.usable(s) else None for s in sources]
        warm = np.array([s is not None for s in ok], dtype=bool)
        if not warm.any():
            return None, None
        neutral = self.body_model.neutral_params(len(ok))
        init = {k: torch.stack([torch.as_tensor(np.asarray(s[k]), dtype=torch.float32)
                                if s is not None else neutral[k][b] for b, s in enumerate(ok)])
                for k in self.body_model.blocks}
        return init, warm


class NetworkRun:
    """``method: network``: the person detector's boxes, then the trained network on every
    person crop of the image in one batch (:mod:`furpe.networks.inference`); with a BlazePose
    body encoder, a box is kept when that encoder saw someone new there (:meth:`_kept`), and
    each person is placed on those landmarks (:meth:`_place`)."""

    def __init__(self, config: ReconstructConfig, model: BodyModel, device: torch.device) -> None:
        from furpe.experts.tasks import PersonDetector
        from furpe.networks.inference import NetworkPredictor, load_network

        self.model = model
        self.max_people = config.max_people
        self.predictor = NetworkPredictor(load_network(config.checkpoint, model, device),
                                          onnx=config.onnx, flip_test=config.flip_test,
                                          body_model=model)
        if config.fit_landmarks and not self.predictor.net.body_encoder.has_pose_landmarks:
            raise SetupError("fit_landmarks needs a network whose body encoder is BlazePose "
                             "with network.features: landmarks (the shipped one is)")
        # as the body expert's: more boxes than people, since some are of one person
        self.detector = PersonDetector(max_results=max(2 * config.max_people, 8))

    def frame(self, image: np.ndarray, K: np.ndarray) -> FrameResult:
        """The network's people in ``image`` (camera ``K``)."""
        return self._frame(image, K)[0]

    def observed(self, image: np.ndarray, K: np.ndarray
                 ) -> tuple[FrameResult, list[PersonObservation]]:
        """:meth:`frame`, and each person's body as its pose encoder saw it: BlazePose's 2D
        landmarks with visibility x presence and its metric 3D landmarks, an observation
        like the body expert's (none for a network without a BlazePose encoder)."""
        from furpe.experts.body import WORLD_CONVENTIONS, body_score

        frame, landmarks = self._frame(image, K)
        if landmarks is None:
            return frame, []
        backbone = self.predictor.net.config.body_backbone
        world = WORLD_CONVENTIONS.get(backbone.removeprefix("mediapipe_pose_"))
        people = [PersonObservation(parts={"body": PartObservation(
            "body", EXPERT_CONVENTIONS["body"], lm[:, :2].copy(), lm[:, 2].copy(),
            keypoints_3d=lm[:, 3:6].copy() if np.isfinite(lm[:, 3:6]).all() else None,
            box=person.box, score=body_score(lm[:, 2]), expert="network",
            world_convention=world)})
            for person, lm in zip(frame.people, landmarks)]
        return frame, people

    def _frame(self, image: np.ndarray, K: np.ndarray
               ) -> tuple[FrameResult, np.ndarray | None]:
        t0 = time.perf_counter()
        image = normalise_exposure(image)  # very dark photos brightened, as for the experts
        boxes = [box for box, _ in self.detector.process(image)][:self.max_people]
        if not boxes:
            raise NoPersonError("no person found")
        params, landmarks = self.predictor.predict_with_landmarks([image], [boxes], [K])[0]
        if landmarks is not None:
            keep = self._kept(landmarks, image.shape[1], image.shape[0])
            if not keep:
                raise NoPersonError("no person found")
            boxes, landmarks = [boxes[i] for i in keep], landmarks[keep]
            params = {k: v[keep] for k, v in params.items()}
        with torch.no_grad():
            out = self.model(params)
            if landmarks is not None:
                out, params = self._place(out, params, landmarks, K)
            fitted = self.projected(out, K)
        verts, joints = out.vertices.cpu().numpy(), out.joints.cpu().numpy()

        def keypoints(b: int) -> dict[str, KeypointSet]:
            """The network's keypoints; observed: the body landmarks its pose encoder saw."""
            sets = {p: self._keypoint_set(p, fitted[p][b]) for p in EXPERT_CONVENTIONS}
            if landmarks is not None:
                sets["body"] = dataclasses.replace(sets["body"], observed=landmarks[b, :, :2],
                                                   confidence=landmarks[b, :, 2])
            return sets

        people = [PersonResult(
            params={k: v[b].cpu().numpy() for k, v in params.items()}, vertices=verts[b],
            joints=joints[b], keypoints_2d=keypoints(b), box=tuple(float(x) for x in box),
            parts={p: PartResult(p, observed=p == "body" and landmarks is not None,
                                 accepted=True) for p in PARTS})
            for b, box in enumerate(boxes)]
        h, w = image.shape[:2]
        return FrameResult(image_size=(w, h), intrinsics=K, body_model=self.model.name,
                           joint_names=tuple(self.model.joint_names), faces=self.model.faces,
                           people=people, timings={"network": time.perf_counter() - t0}
                           ), landmarks

    def projected(self, out: Any, K: np.ndarray) -> dict[str, np.ndarray]:
        """Each part's keypoints (the experts' conventions) of posed people ``out`` in the
        image of camera ``K``, (people, K, 2) per part."""
        Kt = torch.as_tensor(K, dtype=out.vertices.dtype, device=out.vertices.device)
        with torch.no_grad():
            return {p: project(self.model.keypoints(out, part_convention(c, p)), Kt)
                    .cpu().numpy() for p, c in EXPERT_CONVENTIONS.items()}

    def add_unobserved_keypoints(self, frame: FrameResult) -> None:
        """Give every person of ``frame`` the projected keypoints of the parts it has none
        of (not observed, so the fit had no keypoint set for them), nothing observed."""
        from furpe.bodymodels.base import BodyOutput

        if all(set(EXPERT_CONVENTIONS) <= set(p.keypoints_2d) for p in frame.people):
            return
        out = BodyOutput(torch.as_tensor(np.stack([p.vertices for p in frame.people])),
                         torch.as_tensor(np.stack([p.joints for p in frame.people])))
        fitted = self.projected(out, frame.intrinsics)
        for b, person in enumerate(frame.people):
            for p in EXPERT_CONVENTIONS:
                if p not in person.keypoints_2d:
                    person.keypoints_2d[p] = self._keypoint_set(p, fitted[p][b])

    def _keypoint_set(self, part: str, fitted: np.ndarray) -> KeypointSet:
        """A part's projected keypoints ``fitted`` (K, 2), nothing observed."""
        c = EXPERT_CONVENTIONS[part]
        names = self.model.regressors[part_convention(c, part)].names
        return KeypointSet(convention=c, names=names, observed=np.full_like(fitted, np.nan),
                           confidence=np.zeros(len(fitted)), fitted=fitted)

    @staticmethod
    def _kept(landmarks: np.ndarray, width: int, height: int) -> list[int]:
        """The boxes (in the detector's order) whose person the pose encoder saw, by the body
        expert's rules: a body score of at least its ``min_score``, and not one already kept
        (their confident landmarks' boxes overlap: one person boxed twice, or a box around a
        part of someone)."""
        from furpe.experts.body import MIN_SCORE, DEDUPE_IOU, body_score, overlapping

        kept: list[int] = []
        seen: list[tuple[float, float, float, float]] = []
        for b, lm in enumerate(landmarks):
            box = landmark_box(lm[:, :2], lm[:, 2], 0.5, (width, height))
            if box is None or body_score(lm[:, 2]) < MIN_SCORE \
                    or any(overlapping(box, other, DEDUPE_IOU) for other in seen):
                continue
            kept.append(b)
            seen.append(box)
        return kept

    def _place(self, out: Any, params: dict[str, torch.Tensor], landmarks: np.ndarray,
               K: np.ndarray) -> tuple[Any, dict[str, torch.Tensor]]:
        """Move each person onto their body landmarks (:mod:`furpe.networks.placement`)."""
        from furpe.networks.placement import align_translation

        points = self.model.keypoints(out, part_convention(EXPERT_CONVENTIONS["body"], "body"))
        shift = align_translation(points.cpu().numpy(), landmarks[..., :2], landmarks[..., 2],
                                  K)
        if not shift.any():
            return out, params
        dt = torch.as_tensor(shift, dtype=params["transl"].dtype, device=params["transl"].device)
        params = {**params, "transl": params["transl"] + dt}
        return self.model(params), params


class VideoSession:
    """The frames of one video: made by :meth:`Reconstructor.video`.

    * **Tracking**: every person gets a ``track_id`` from the session's
      :class:`~furpe.tracking.Tracker` (``config.tracking``): stable across frames, kept
      through a short absence, never reused.
    * **Warm starts**: each person's fit starts from their own track's last parameters; a
      person entering starts cold without making the others do so, and a person found again
      after a short absence starts from where they were last seen.
    * **Smoothing** (``config.smoothing``): each track's parameters go through One-Euro
      filters driven by the frames' timestamps, and the people are posed again from the
      smoothed parameters, so their vertices, joints and fitted 2D keypoints match the
      parameters written (the parts' scores stay those of the frame's own fit).

    ``method: network`` goes through the same session (its people are tracked by their boxes
    and the network's keypoints).
    """

    def __init__(self, reconstructor: Reconstructor, experts: Sequence[Expert]) -> None:
        self.reconstructor = reconstructor
        self.experts = experts
        cfg = reconstructor.config
        self.tracker = Tracker(cfg.tracking)
        self.smoother = (Smoother(cfg.smoothing, reconstructor.body_model.blocks)
                         if cfg.smoothing.enabled else None)
        #: Frame rate assumed for frames given without a timestamp.
        self.fps = 30.0
        #: The last frame's result (None: no frame yet, or nobody in the last one).
        self.previous: FrameResult | None = None
        self._starts: dict[int, Mapping[str, np.ndarray]] = {}  # track -> its last fit's params
        self._time: float | None = None
        self._ids: list[int] | None = None

    def reconstruct_frame(self, image: np.ndarray, K: np.ndarray | None = None,
                          timestamp: float | None = None) -> FrameResult:
        """Reconstruct the next frame (a :class:`NoPersonError` when nobody is found; every
        track then misses the frame). ``timestamp`` (seconds) drives the smoothing; without
        it frames are taken ``1 / fps`` apart."""
        t = self._clock(timestamp)
        self._ids = None
        try:
            frame = self.reconstructor._run(self.experts, check_image(image), K, None,
                                            track=self._track)
        except FurpeError:
            if self._ids is None:
                self.tracker.skip()
            self._end(None)
            raise
        ids = self._ids
        if ids is None:  # the network alone: no fit, its people are tracked from its output
            ids = self._update_tracker(frame.people)
        for person, tid in zip(frame.people, ids):
            person.track_id = tid
            self._starts[tid] = person.params
        if self.smoother is not None and frame.people:
            for person in frame.people:
                person.params = self.smoother.smooth(person.track_id, person.params, t)
            self._repose(frame)
        self._end(frame)
        return frame

    def prefetch(self, image: np.ndarray) -> None:
        """Start the experts on the frame after the one about to be reconstructed (see
        :meth:`Reconstructor.prefetch`): frames must be prefetched in their order, since the
        experts track from one to the next."""
        self.reconstructor._submit(self.experts, check_image(image))

    def load_frame(self, frame: FrameResult | None, timestamp: float | None = None) -> None:
        """Take a frame reconstructed earlier (e.g. read back from its JSON when a run
        resumes) as the session's next frame: its people keep their ``track_id`` (people
        without one are associated like new detections) and set their track's state, the
        smoothing's and the next warm start's. ``None``: a frame with nobody in it."""
        t = self._clock(timestamp)
        if frame is None or not frame.people:
            self.tracker.skip()
            self._end(None)
            return
        ids = self._update_tracker(frame.people, [p.track_id for p in frame.people])
        same_model = frame.body_model == self.reconstructor.body_model.name
        for person, tid in zip(frame.people, ids):
            person.track_id = tid
            if same_model and self.reconstructor.usable(person.params):
                self._starts[tid] = person.params
                if self.smoother is not None:
                    self.smoother.reset(tid, person.params, t)
        self._end(frame)

    def _clock(self, timestamp: float | None) -> float:
        if timestamp is None:
            timestamp = 0.0 if self._time is None else self._time + 1.0 / self.fps
        self._time = float(timestamp)
        return self._time

    def _track(self, people: list[PersonObservation], sources: Sources) -> Sources:
        """The fit stage's hook: track ids for the frame's people, and for each person not
        started otherwise, their track's last parameters."""
        found = [observed_keypoints(p) for p in people]
        self._ids = self.tracker.update(
            [person_box(p.get("body") or next(iter(p.parts.values()))) for p in people],
            [None if f is None else f[0] for f in found],
            [None if f is None else f[1] for f in found])
        return [s if s is not None else self._starts.get(tid)
                for s, tid in zip(sources, self._ids)]

    def _update_tracker(self, people: Sequence[PersonResult],
                        ids: Sequence[int | None] | None = None) -> list[int]:
        found = [result_keypoints(p) for p in people]
        return self.tracker.update([p.box for p in people],
                                   [None if f is None else f[0] for f in found],
                                   [None if f is None else f[1] for f in found], ids)

    def _end(self, frame: FrameResult | None) -> None:
        """The frame is done: it warm-starts the next one; ended tracks are forgotten."""
        self.previous = frame
        alive = set(self.tracker.tracks)
        self._starts = {k: v for k, v in self._starts.items() if k in alive}
        if self.smoother is not None:
            self.smoother.keep(alive)

    def _repose(self, frame: FrameResult) -> None:
        """Pose the people of ``frame`` again from their parameters: vertices, joints and the
        fitted 2D keypoints (projected with the frame's camera)."""
        model = self.reconstructor.body_model
        device = self.reconstructor.device
        names = [k for k in model.blocks if all(k in p.params for p in frame.people)]
        params = {k: torch.as_tensor(np.stack([np.asarray(p.params[k]) for p in frame.people]),
                                     dtype=torch.float32, device=device) for k in names}
        with torch.no_grad():
            out = model(params)
            Kt = torch.as_tensor(frame.intrinsics, dtype=out.vertices.dtype, device=device)
            verts, joints = out.vertices.cpu().numpy(), out.joints.cpu().numpy()
            fitted: dict[str, np.ndarray] = {}
            for b, person in enumerate(frame.people):
                person.vertices, person.joints = verts[b], joints[b]
                kps = {}
                for part, ks in person.keypoints_2d.items():
                    reg = part_convention(ks.convention, part)
                    if reg in model.regressors:
                        if reg not in fitted:
                            fitted[reg] = project(model.keypoints(out, reg), Kt).cpu().numpy()
                        ks = dataclasses.replace(ks, fitted=fitted[reg][b])
                    kps[part] = ks
                person.keypoints_2d = kps

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.previous = None


def reconstruct(image: np.ndarray, config: ReconstructConfig | None = None) -> FrameResult:
    """One-shot convenience: ``furpe.reconstruct(rgb)`` builds a :class:`Reconstructor`."""
    return Reconstructor(config).reconstruct_image(image)
