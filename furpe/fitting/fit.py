"""Whole-body fit: one body model instance per person, fitted to all part observations.

The fit is batched over the people of an image. Its energy is

* a robust (Geman-McClure), confidence-weighted 2D reprojection term per part, with residuals
  measured as a fraction of the part's observed size so that body, hands and face weigh
  alike whatever the image resolution;
* 3D terms per part for experts that give metric 3D landmarks, against the model's points of
  the expert's own 3D skeleton where there are some (``PartObservation.world_convention``;
  see ``scripts/make_correspondences.py``): positions after centring (they are known up to a
  translation) and, for the body, the directions of its bones (``vocab.BONES``: which way a
  limb points whatever its length);
* priors: squared rotation magnitude per pose block (rest pose = most plausible), a bound
  penalty for large joint rotations, shape towards the mean, sparsity of facial actions, and
  in videos closeness to the previous frame.

It runs in stages: (1) global orientation and translation from the torso, (2) the body and
hand poses to the experts' 3D landmarks alone (which way limbs point in depth: seated legs,
arms crossed in front; which way each hand faces, which the 2D stages do not turn round),
(3) the body pose and shape, with robust scales that start wide and shrink, (4) hands, face
and body together (see :meth:`Fitter._plan`; a head or hand crop alone is fitted from that
part). The energy needs keypoints only, so each iteration evaluates
the model on the few vertices the correspondences use (:class:`KeypointSampler`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel, BodyOutput, KeypointSampler, Regressor, apply_regressor
from furpe.bodymodels.correspondences import load_readout
from furpe.core.align import kabsch
from furpe.core.camera import project
from furpe.core.errors import FurpeError
from furpe.core.robust import gmof
from furpe.core.rotations import rotmat_to_rotvec, rotvec_to_rotmat
from furpe.core.vocab import (ANCHOR_ORDER, DETAIL_PARTS, FACE_TO_IBUG68, PARTS, bone_pairs,
                              part_convention)
from furpe.experts.base import PartObservation, PersonObservation
from furpe.fitting.optim import MultiRateAdam

#: Landmark names of the torso in the MediaPipe pose convention (used for initialisation).
TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


@dataclass
class FitConfig:
    """Optimisation settings (iterations per stage, learning rate, loss weights)."""

    iters_global: int = 30
    #: Iterations of a stage that poses the body to the expert's 3D landmarks alone (no 2D
    #: term) before the 2D body stage: a start that knows which way limbs point in depth
    #: (0: skip it). Its weight is ``w3d_pose``.
    iters_body3d: int = 30
    w3d_pose: float = 1.0
    iters_body: int = 40
    iters_parts: int = 40
    lr: float = 0.05
    #: Robust scale of the 2D term, as a fraction of the part's observed size (Geman-McClure:
    #: quadratic well below it, saturating well above it). The body's is wide, a fifth of its
    #: size: only landmarks far off it are given up on.
    sigma: dict[str, float] = field(
        default_factory=lambda: {"body": 0.2, "left_hand": 0.1, "right_hand": 0.1, "face": 0.05}
    )
    w2d: dict[str, float] = field(
        default_factory=lambda: {"body": 1.0, "left_hand": 1.0, "right_hand": 1.0, "face": 1.0}
    )
    #: Robust scale of the 3D term, as a fraction of the part's size: wide for the body (its 3D
    #: landmarks tell an arm reaching forward from one reaching back), narrow for the noisier
    #: hand landmarks.
    sigma3d: dict[str, float] = field(
        default_factory=lambda: {"body": 0.3, "left_hand": 0.1, "right_hand": 0.1, "face": 0.3}
    )
    w3d: dict[str, float] = field(
        default_factory=lambda: {"body": 0.1, "left_hand": 0.3, "right_hand": 0.3, "face": 0.0}
    )
    #: Weight of a second 3D term per part that compares the directions of its bones
    #: (``vocab.BONES``, unit vectors, robust scale ``sigma3d``): it says which way a limb
    #: points whatever the expert's limb lengths (BlazePose's 3D skeleton is not the model's,
    #: and its arms, compared by position alone, pulled the wrists off their 2D landmarks).
    w3d_bones: dict[str, float] = field(default_factory=lambda: {"body": 0.1})
    #: Compare the experts' metric 3D landmarks with the model's points of their own
    #: correspondences (``PartObservation.world_convention``, where the expert's 3D skeleton
    #: sits on the model: BlazePose Heavy's ``mediapipe_pose_world``) when the model has them,
    #: rather than with the 2D landmarks' surface points.
    world_landmarks: bool = True
    w_pose: dict[str, float] = field(
        default_factory=lambda: {"body_pose": 2e-4, "left_hand_pose": 2e-2,
                                 "right_hand_pose": 2e-2, "eye_pose": 1e-3}
    )
    #: Finger bones bend about one hinge axis (the model's ``finger_hinge_axes``): rotation
    #: about it costs ``w_finger_flex``, any other rotation (twist, sideways) costs
    #: ``w_finger_other`` (per squared radian, averaged over the block's bones like
    #: ``w_pose``); bones without a hinge (metacarpals) keep ``w_pose``.
    w_finger_flex: float = 5e-3
    w_finger_other: float = 0.3
    #: Rotation magnitude (radians) above which a joint is penalised steeply.
    max_angle: float = 2.2
    w_limit: float = 1e-1
    w_shape: float = 1e-3
    w_face_sparsity: float = 1e-4
    #: Facial blendshape scores of a face expert that gives them (``mediapipe_face``,
    #: ARKit names), read as facial actions by the body model's shipped read-out
    #: (:func:`blendshape_targets`), initialise those actions and pull them towards what the
    #: scores say (squared difference, mean weighted by the read-out's confidence).
    w_blendshapes: float = 0.1
    #: Closeness to the previous frame's parameters, for people warm-started from it (video).
    w_temporal: float = 1e-3
    #: Learning-rate multiplier of global/body/shape blocks in the last stage.
    body_lr_final: float = 0.2
    #: Iterations of the placement and part stages for part-only input (a head or hand crop,
    #: no body): the part alone pins the pose down more slowly.
    part_only_iters: tuple[int, int] = (100, 200)
    #: Learning-rate multiplier when warm-started (video): Adam's steps are about ``lr`` in
    #: size even at the optimum, so a warm start that is already right takes smaller ones.
    warm_lr_scale: float = 0.15
    #: Share of the body and part stages' iterations a warm start from the previous frame
    #: (video) runs.
    warm_iters: float = 0.2
    #: The same share when the fit starts from the network's estimate (``--refine``),
    #: which is further from the answer than a previous frame's fit.
    refine_iters: float = 0.5
    #: With ``--refine``, a person with an observed part whose residual (median landmark
    #: distance over the part's size) ends above that part's limit here is fitted again from
    #: scratch (None: never). The limits are the selection scheme's: the short warm
    #: schedule moves a joint by a few degrees only, so a network whose arm is far off leaves
    #: the body's median residual low but its hands off their landmarks and rejected.
    refine_fallback: dict[str, float] | None = field(
        default_factory=lambda: {"body": 0.05, "left_hand": 0.12, "right_hand": 0.12,
                                 "face": 0.06})
    #: Keep refining the body shape while hands and face are fitted (slower: the rest
    #: skeleton then changes every iteration).
    shape_in_final_stage: bool = False
    #: The robust scales (``sigma``) start this many times wider in the body stage and
    #: shrink to their value over its first half, so limbs far from their landmarks (arms
    #: crossed in front of the body, seen from a rest pose) are still pulled towards them.
    sigma_anneal: float = 4.0


def _scatter(params: dict[str, torch.Tensor], rows: np.ndarray,
             values: dict[str, torch.Tensor], size: int) -> None:
    """Write ``values`` (a fit of some people) into the batch ``params`` (``size`` people) at
    ``rows``."""
    for k, v in values.items():
        if k not in params:
            params[k] = v.new_zeros((size, *v.shape[1:]))
        params[k][torch.as_tensor(rows, device=v.device)] = v


@dataclass
class PartTargets:
    """Observations of one part for a batch of people (zero confidence where absent)."""

    regressor: str
    names: tuple[str, ...]  # the K keypoint names
    kp2d: torch.Tensor  # (B, K, 2)
    conf: torch.Tensor  # (B, K)
    kp3d: torch.Tensor  # (B, K, 3)
    has3d: torch.Tensor  # (B,)
    scale: torch.Tensor  # (B,) size of the observed part in pixels
    present: torch.Tensor  # (B,) bool
    #: The regressor of the 3D term (the ``_world`` correspondences, or ``regressor``).
    regressor3d: str = ""
    #: (M, 2) landmark index pairs, the bones among them (:func:`~furpe.core.vocab.bone_pairs`),
    #: for the 3D term that compares their directions (``FitConfig.w3d_bones``).
    bones: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.regressor3d = self.regressor3d or self.regressor
        self._derived: dict[str, torch.Tensor] | None = None

    def derived(self) -> dict[str, torch.Tensor]:
        """Functions of the observations alone that the energy needs every iteration,
        computed once: ``w2d`` (B, K) the confidences over their sum per person; for the 3D
        term ``m3_norm`` (B, K) the same for people with 3D landmarks (zero for the others),
        ``centred`` (B, K, 3) the landmarks minus their weighted centre and ``size2`` (B, 1)
        the squared mean distance from it; for the bone term ``bone_wn`` (B, M) the lower
        confidence of each bone's ends over their sum, and ``bone_dirs`` (B, M, 3) the
        bones' unit directions."""
        if self._derived is None:
            conf = self.conf
            d = {"w2d": conf / conf.sum(1, keepdim=True).clamp(min=1e-6)}
            m3 = conf * self.has3d[:, None]
            n = m3.sum(1).clamp(min=1e-6)
            o = self.kp3d - (self.kp3d * m3[..., None]).sum(1, keepdim=True) / n[:, None, None]
            size = (o.norm(dim=-1) * m3).sum(1) / n
            d.update(m3_norm=m3 / n[:, None], centred=o,
                     size2=size.clamp(min=1e-3)[:, None].pow(2))
            if self.bones is not None and self.bones.numel():
                a, b = self.bones[:, 0], self.bones[:, 1]
                v = self.kp3d[:, b] - self.kp3d[:, a]
                w = torch.minimum(m3[:, a], m3[:, b])
                d.update(bone_dirs=v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6),
                         bone_wn=w / w.sum(1, keepdim=True).clamp(min=1e-6))
            self._derived = d
        return self._derived


@dataclass
class BlendshapeTargets:
    """Blendshape scores for a bounded face block of a batch (mask 0 where not observed)."""

    block: str
    values: torch.Tensor  # (B, N) in the block's order
    mask: torch.Tensor  # (B, N)


def blendshape_targets(model: BodyModel, people: list[PersonObservation],
                       device: torch.device | str = "cpu") -> BlendshapeTargets | None:
    """The face observations' blendshapes read as the model's facial actions by its shipped
    read-out (:func:`furpe.bodymodels.correspondences.load_readout`), on the bounded face
    block; the mask is the read-out's confidence per action. None when the model has no such
    block or read-out, or no face has blendshapes."""
    block = next((n for n, b in model.blocks.items()
                  if b.part == "face" and b.kind == "bounded"), None)
    faces = [p.get("face") for p in people]
    readout = load_readout(model.name) if block is not None else None
    if readout is None or not any(f is not None and f.blendshapes for f in faces):
        return None
    labels = list(model.blocks[block].labels)
    cols = [(labels.index(name), j) for j, name in enumerate(readout.outputs) if name in labels]
    values = np.zeros((len(people), len(labels)))
    mask = np.zeros((len(people), len(labels)))
    for b, face in enumerate(faces):
        if face is not None and face.blendshapes:
            actions = readout(face.blendshapes)
            for k, j in cols:
                values[b, k], mask[b, k] = actions[j], readout.confidence[j]
    if not mask.any():
        return None
    t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return BlendshapeTargets(block, t(values), t(mask))


@dataclass(frozen=True)
class Stage:
    """One stage of the fit: Adam ``iters`` times on ``blocks``, with the energy of
    ``parts``: their 2D and 3D terms, or with ``only3d`` the 3D terms alone; ``anneal``
    widens the robust scales of the 2D terms at the start (``FitConfig.sigma_anneal``)."""

    iters: int
    blocks: tuple[str, ...]
    parts: tuple[str, ...]
    only3d: bool = False
    anneal: bool = False


@dataclass
class FitOutput:
    """Result of a fit for a batch of people."""

    params: dict[str, torch.Tensor]
    output: BodyOutput
    targets: dict[str, PartTargets]
    projected: dict[str, torch.Tensor]  # part -> (B, K, 2) fitted keypoints in pixels
    residual: dict[str, torch.Tensor]  # part -> (B,) median normalised 2D error
    plausibility: dict[str, torch.Tensor]  # part -> (B,) in [0, 1]


def resolve_convention(
    regressors: dict[str, Regressor], part: str, convention: str, model_name: str = "model"
) -> tuple[str, np.ndarray | None]:
    """The regressor for ``convention`` and, when the model serves it only through another
    landmark set, the observation rows to use (``None``: all of them, in order).

    Face Mesh landmarks are fitted to a model with only the iBUG-68 face landmarks (SMPL-X)
    through :data:`~furpe.core.vocab.FACE_TO_IBUG68`: a regressor of the mapped iBUG rows is
    added to ``regressors`` (the fitter's own dict) as ``"mediapipe_face>ibug68"``. Raises
    :class:`FurpeError` when there is no way.
    """
    sided = part_convention(convention, part)
    if sided != convention and sided in regressors:
        return sided, None
    if convention in regressors:
        return convention, None
    if convention == "mediapipe_face" and "ibug68" in regressors:
        key = "mediapipe_face>ibug68"
        ibug = regressors["ibug68"]
        pairs = [(ibug.names.index(f"ibug_{i:02d}"), mp)
                 for i, mp in sorted(FACE_TO_IBUG68.items()) if f"ibug_{i:02d}" in ibug.names]
        if key not in regressors:
            rows = [r for r, _ in pairs]
            regressors[key] = Regressor(
                tuple(ibug.names[r] for r in rows), ibug.indices[rows], ibug.weights[rows])
        return key, np.array([mp for _, mp in pairs])
    raise FurpeError(
        f"body model '{model_name}' has no correspondences for the {part} landmarks of "
        f"convention '{convention}'"
    )


def build_targets(
    regressors: dict[str, Regressor], people: list[PersonObservation],
    device: torch.device | str = "cpu", model_name: str = "model", world: bool = True,
) -> dict[str, PartTargets]:
    """Stack the people's observations part by part (``regressors``: the fitter's own); with
    ``world``, the 3D landmarks go through the correspondences their expert names
    (``PartObservation.world_convention``) when the model has them and every person's expert
    names the same."""
    targets: dict[str, PartTargets] = {}
    B = len(people)
    for part in PARTS:
        obs = [p.get(part) for p in people]
        convs = {o.convention for o in obs if o is not None}
        if not convs:
            continue
        if len(convs) > 1:
            raise FurpeError(f"people of one batch use different {part} conventions: {convs}")
        key, rows = resolve_convention(regressors, part, convs.pop(), model_name)
        names = regressors[key].names
        K = len(names)
        kp2d = np.zeros((B, K, 2))
        conf = np.zeros((B, K))
        kp3d = np.zeros((B, K, 3))
        has3d = np.zeros(B, dtype=bool)
        scale = np.ones(B)
        present = np.zeros(B, dtype=bool)
        for b, o in enumerate(obs):
            if o is None:
                continue
            if rows is not None:
                o = _rows(o, rows)
            if o.keypoints_2d.shape[0] != K:
                raise FurpeError(
                    f"{o.expert or 'expert'} gave {o.keypoints_2d.shape[0]} {part} landmarks, "
                    f"the correspondences '{key}' have {K}"
                )
            kp2d[b], conf[b] = o.keypoints_2d, np.clip(o.confidence, 0, 1)
            valid = conf[b] > 0.1
            if valid.sum() >= 2:
                pts = o.keypoints_2d[valid]
                scale[b] = max(float(np.linalg.norm(pts.max(0) - pts.min(0))), 1.0)
                present[b] = True
            if o.keypoints_3d is not None:
                kp3d[b], has3d[b] = o.keypoints_3d, True
        t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
        worlds = {o.world_convention for o in obs if o is not None and o.keypoints_3d is not None}
        key3 = worlds.pop() if world and rows is None and len(worlds) == 1 else None
        key3 = key3 if key3 in regressors else key
        if regressors[key3].names != names:
            raise FurpeError(f"the correspondences '{key3}' do not name the landmarks of '{key}'")
        bones = torch.as_tensor(bone_pairs(names), dtype=torch.long,
                                device=device).reshape(-1, 2)
        targets[part] = PartTargets(key, names, t(kp2d), t(conf), t(kp3d), t(has3d, torch.bool),
                                    t(scale), t(present, torch.bool), key3, bones)
    return targets


def _rows(obs: PartObservation, rows: np.ndarray) -> PartObservation:
    """The observation restricted to ``rows`` of its landmarks."""
    from dataclasses import replace

    k3 = None if obs.keypoints_3d is None else obs.keypoints_3d[rows]
    return replace(obs, keypoints_2d=obs.keypoints_2d[rows], confidence=obs.confidence[rows],
                   keypoints_3d=k3)


def anchor_part(targets: dict[str, PartTargets]) -> str:
    """The part that places the model: the body when observed, else the face, else a hand."""
    for part in ANCHOR_ORDER:
        if part in targets and bool(targets[part].present.any()):
            return part
    raise FurpeError("nothing to fit: no person part was observed")


def initial_placement(
    model: BodyModel, regressors: dict[str, Regressor], targets: dict[str, PartTargets],
    K: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Global orientation (B, 3) and translation (B, 3) from the body observation, or for
    part-only input (a head or hand crop) from that part's observation.

    Orientation: Kabsch between the model's rest keypoints and the expert's 3D landmarks when
    available, else facing or back to the camera according to the image order of the
    shoulders (facing the camera for a face). Depth: the ratio of the rest size (torso, or the
    whole part) in metres to its size in pixels.
    """
    body = targets[anchor_part(targets)]
    B = body.kp2d.shape[0]
    with torch.no_grad():
        out = model(model.neutral_params(1, device=body.kp2d.device))
        points = torch.cat([out.vertices, out.joints], 1)
        rest = apply_regressor(regressors[body.regressor], points)[0].cpu().numpy()
        rest3 = apply_regressor(regressors[body.regressor3d], points)[0].cpu().numpy()
    names = list(body.names)
    torso = [names.index(n) for n in TORSO if n in names]
    if len(torso) < 3:
        torso = list(range(len(names)))
    f = float(K[0, 0])
    orient = np.zeros((B, 3))
    transl = np.zeros((B, 3))
    for b in range(B):
        conf = body.conf[b].cpu().numpy()
        kp = body.kp2d[b].cpu().numpy()
        R = np.eye(3)
        if bool(body.has3d[b]):
            obs3 = body.kp3d[b].cpu().numpy()
            w = conf * (conf > 0.3)
            if w.sum() > 0 and (w > 0).sum() >= 4:
                R = kabsch(rest3, obs3, w)
        elif len(torso) >= 2 and "left_shoulder" in names and "right_shoulder" in names:
            ls, rs = names.index("left_shoulder"), names.index("right_shoulder")
            if kp[ls, 0] < kp[rs, 0]:  # the left shoulder appears on the left: back view
                R = np.diag([-1.0, 1.0, -1.0])
        orient[b] = rotmat_to_rotvec(R).numpy()
        sel = [i for i in torso if conf[i] > 0.3] or [i for i in range(len(conf)) if conf[i] > 0.3]
        if len(sel) < 2:
            sel = list(range(len(conf)))
        p3 = rest[sel] @ R.T
        c3 = p3.mean(0)
        size3 = np.linalg.norm(p3[:, :2] - c3[:2], axis=1).mean()
        c2 = kp[sel].mean(0)
        size2 = np.linalg.norm(kp[sel] - c2, axis=1).mean()
        z = f * size3 / max(size2, 1.0)
        z = float(np.clip(z, 0.3, 100.0))
        ray = np.array([(c2[0] - K[0, 2]) / f, (c2[1] - K[1, 2]) / K[1, 1], 1.0])
        transl[b] = ray * (z + c3[2]) - c3
    return orient, transl


class Fitter:
    """Staged, batched whole-body fitting of a :class:`BodyModel` to part observations."""

    def __init__(self, model: BodyModel, config: FitConfig | None = None) -> None:
        self.model = model
        self.config = config or FitConfig()
        #: The fitter's own regressors: the model's, plus any derived ones it needs (never
        #: added to the model, which other fitters may share).
        self.regressors: dict[str, Regressor] = dict(model.regressors)
        self._samplers: dict[tuple[str, ...], KeypointSampler] = {}
        self._hinges: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def fit(
        self,
        people: list[PersonObservation],
        K: np.ndarray,
        init: dict[str, torch.Tensor] | None = None,
        warm: np.ndarray | None = None,
        device: torch.device | str = "cpu",
        warm_iters: float | None = None,
        fallback: Mapping[str, float] | None = None,
        later: Callable[[], None] | None = None,
    ) -> FitOutput:
        """Fit one model instance per person.

        ``init`` (batched params) warm-starts the fit from a previous frame: the people where
        ``warm`` (B,) is true (default: all of them) start from their ``init`` row, are held
        close to it and take the short warm-start schedule (its rigid placement at the full
        learning rate, the rest at ``warm_lr_scale``); the others are fitted on their own,
        cold, so a person entering a video does not slow down everyone else's fit.
        ``warm_iters`` (default: the config's) is the share of the iterations a warm start
        runs. With ``fallback`` (part -> residual limit), a warm-started person with an
        observed part whose residual ends above its limit (the start was too far off to
        recover from) is fitted again, cold.

        ``later``, when given, waits for observations still being made of ``people`` (their
        hands and face, by experts running meanwhile): a cold fit calls it once the body has
        placed the model (the first stage, which reads nothing else), any other fit first.
        """
        B = len(people)
        is_warm = np.zeros(B, dtype=bool)
        if init is not None:
            is_warm = np.ones(B, dtype=bool) if warm is None else np.asarray(warm, dtype=bool)
        if later is not None and is_warm.any():
            later()
            later = None
        if is_warm.any() and not is_warm.all():
            params: dict[str, torch.Tensor] = {}
            for rows, start in ((np.flatnonzero(is_warm), init), (np.flatnonzero(~is_warm), None)):
                part_init = None if start is None else {k: v[rows] for k, v in start.items()}
                got, _ = self._optimise([people[i] for i in rows], K, part_init, device,
                                        warm_iters)
                _scatter(params, rows, got, B)
            targets = build_targets(self.regressors, people, device, self.model.name,
                                    self.config.world_landmarks)
        else:
            params, targets = self._optimise(people, K, init if is_warm.any() else None,
                                             device, warm_iters, later)
        result = self._output(params, targets, K, device)
        if not fallback or not is_warm.any():
            return result
        over = np.zeros(B, dtype=bool)
        for part, limit in fallback.items():
            if part in result.residual:
                seen = result.targets[part].present.cpu().numpy()
                over |= seen & (result.residual[part].cpu().numpy() > limit)
        redo = np.flatnonzero(is_warm & over)
        if not len(redo):
            return result
        got, _ = self._optimise([people[i] for i in redo], K, None, device)
        _scatter(params, redo, got, B)
        return self._output(params, targets, K, device)

    def _optimise(self, people: list[PersonObservation], K: np.ndarray,
                  init: dict[str, torch.Tensor] | None, device: torch.device | str,
                  warm_iters: float | None = None, later: Callable[[], None] | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, PartTargets]]:
        """The fitted parameters (and the targets) of ``people``: all warm-started from
        ``init`` on the short schedule, or (``init`` None) all cold; ``later``: see
        :meth:`fit`."""
        cfg = self.config
        model = self.model
        targets = build_targets(self.regressors, people, device, model.name,
                                cfg.world_landmarks)
        if later is not None and ("body" not in targets
                                  or not bool(targets["body"].present.any())):
            later()  # the body does not place everyone alone
            later = None
            targets = build_targets(self.regressors, people, device, model.name,
                                    cfg.world_landmarks)
        B = len(people)
        Kt = torch.as_tensor(K, dtype=torch.float32, device=device)
        params = model.neutral_params(B, device=device)
        warm_all = init is not None
        if init is not None:
            for k, v in init.items():
                params[k] = v.detach().clone().to(device)
        else:
            orient, transl = initial_placement(model, self.regressors, targets, K)
            params["global_orient"] = torch.as_tensor(orient, dtype=torch.float32,
                                                      device=device)[:, None]
            params["transl"] = torch.as_tensor(transl, dtype=torch.float32, device=device)
        prev = None
        if warm_all:
            prev = {k: v.detach().clone() for k, v in params.items()}
            prev["_warm"] = torch.ones(B, dtype=torch.float32, device=device)

        wi = cfg.warm_iters if warm_iters is None else warm_iters
        stages = self._plan(targets, warm_all, wi)
        # The blendshapes start the face once the body has placed the model (the placement
        # reads the body alone; part-only input is placed by its part, with them).
        by_body = anchor_part(targets) == "body"
        blend = None if by_body else self._blend(params, people, device, warm_all)
        for k in range(len(stages)):
            if k == 1 and by_body:
                if later is not None:
                    later()
                    later = None
                    targets = build_targets(self.regressors, people, device, model.name,
                                            cfg.world_landmarks)
                    stages = self._plan(targets, warm_all, wi)
                blend = self._blend(params, people, device, warm_all)
            stage = stages[k]
            iters, names = stage.iters, stage.blocks
            if iters <= 0:
                continue
            final_stage = k == len(stages) - 1
            # Pose only the vertices of the conventions this stage's energy looks at.
            sampler = self._sampler(tuple(sorted(
                {r for part, tg in targets.items() if part in stage.parts
                 for r in (tg.regressor, tg.regressor3d)})))
            for n, p in params.items():
                p.requires_grad_(n in names)
            # A placement-only stage moves the model rigidly: pose it once, then only rotate
            # and translate its keypoints.
            local = self._unplaced(sampler, params) if set(names) <= {"global_orient", "transl"} \
                else None
            opt = MultiRateAdam(
                [params[n] for n in names],
                [cfg.lr * self._lr_scale(n, final_stage)
                 * (cfg.warm_lr_scale if warm_all and local is None else 1.0) for n in names])
            warmup = max(1, iters // 8)
            for i in range(iters):
                opt.zero_grad()
                kps = sampler(params) if local is None else _place(local, params)
                widen = 1.0
                if stage.anneal and cfg.sigma_anneal > 1:
                    widen = cfg.sigma_anneal ** max(0.0, 1.0 - 2.0 * i / iters)
                loss = self.energy(params, targets, Kt, stage.parts, kps, prev, blend, widen,
                                   stage.only3d)
                loss.backward()
                # Linear warm-up over the first eighth, cosine decay to a tenth.
                opt.step(min(1.0, (i + 1) / warmup)
                         * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / iters))))
                self._project_bounds(params)
        for p in params.values():
            p.requires_grad_(False)
        return {k: v.detach() for k, v in params.items()}, targets

    def _blend(self, params: dict[str, torch.Tensor], people: list[PersonObservation],
               device: torch.device | str, warm: bool) -> BlendshapeTargets | None:
        """The face expert's blendshape targets (None: none, or their weight is 0); a cold
        fit's facial actions start from them (in ``params``)."""
        if self.config.w_blendshapes <= 0:
            return None
        blend = blendshape_targets(self.model, people, device)
        if blend is not None and not warm:
            params[blend.block] = torch.where(blend.mask > 0, blend.values, params[blend.block])
        return blend

    def _output(self, params: dict[str, torch.Tensor], targets: dict[str, PartTargets],
                K: np.ndarray, device: torch.device | str) -> FitOutput:
        """The posed model, its projected keypoints and residuals, for fitted ``params``."""
        model = self.model
        Kt = torch.as_tensor(K, dtype=torch.float32, device=device)
        with torch.no_grad():
            out = model(params)
            projected, residual = {}, {}
            for part, tg in targets.items():
                kp3 = apply_regressor(self.regressors[tg.regressor],
                                      torch.cat([out.vertices, out.joints], 1))
                projected[part] = project(kp3, Kt)
                err = (projected[part] - tg.kp2d).norm(dim=-1) / tg.scale[:, None]
                residual[part] = _weighted_median(err, tg.conf)
            plaus = self.plausibility(params)
        final = {k: v.detach() for k, v in params.items()}
        return FitOutput(final, out, targets, projected, residual, plaus)

    def _plan(self, targets: dict[str, PartTargets], warm: bool,
              warm_iters: float = 1.0) -> list[Stage]:
        """The stages.

        With a body: placement from the body, the body and hand poses to the experts' 3D
        landmarks (when the body expert gives them), body pose and shape (both with robust
        scales annealed), then everything with the shape fixed. Part-only input (a head or hand crop): placement from that part,
        then that part's blocks and the shape; the unobserved body pose stays at rest. A warm
        start (video) places the previous frame's body rigidly first (at the full learning
        rate: a walker moves several centimetres a frame, and a body left behind shrinks away
        from the camera to cover its landmarks), skips the 3D stage, anneals nothing and runs
        ``warm_iters`` of the rest.
        """
        cfg, model = self.config, self.model
        anchor = anchor_part(targets)
        with_body = anchor == "body"
        observed = {part for part, tg in targets.items() if bool(tg.present.any())}
        body_blocks = [n for n, b in model.blocks.items() if b.part == "body" and with_body]
        shape_blocks = [n for n, b in model.blocks.items() if b.part == "shape"]
        part_blocks = [n for n, b in model.blocks.items()
                       if b.part in DETAIL_PARTS and (with_body or b.part in observed)]
        final_shape = shape_blocks if cfg.shape_in_final_stage or not with_body else []
        it_global = cfg.iters_global if with_body else cfg.part_only_iters[0]
        it_body = cfg.iters_body if with_body else 0
        it_parts = cfg.iters_parts if with_body else cfg.part_only_iters[1]
        placement = ("global_orient", "transl")
        has3d = with_body and bool(targets["body"].has3d.any())
        hands3d = [p for p in ("left_hand", "right_hand")
                   if with_body and p in observed and bool(targets[p].has3d.any())]
        hand_blocks = [n for n, b in model.blocks.items() if b.part in hands3d]
        return [
            Stage(it_global, placement, (anchor,)),
            Stage(0 if warm or not has3d else cfg.iters_body3d,
                  ("global_orient", *body_blocks, *hand_blocks), ("body", *hands3d),
                  only3d=True, anneal=True),
            Stage(round(it_body * warm_iters) if warm else it_body,
                  (*placement, *body_blocks, *shape_blocks), ("body",), anneal=not warm),
            Stage(round(it_parts * warm_iters) if warm else it_parts,
                  (*placement, *body_blocks, *final_shape, *part_blocks), PARTS),
        ]

    def _sampler(self, conventions: tuple[str, ...]) -> KeypointSampler:
        if conventions not in self._samplers:
            self._samplers[conventions] = KeypointSampler(self.model, conventions,
                                                          self.regressors)
        return self._samplers[conventions]

    @staticmethod
    def _unplaced(sampler: KeypointSampler, params) -> dict[str, torch.Tensor]:
        """Keypoints of the current pose and shape before the global rotation and translation."""
        with torch.no_grad():
            zero = dict(params)
            zero["global_orient"] = torch.zeros_like(params["global_orient"])
            zero["transl"] = torch.zeros_like(params["transl"])
            return sampler(zero)

    def _lr_scale(self, name: str, final_stage: bool) -> float:
        """Learning-rate multiplier of a block: gentler on the body once hands and face join."""
        part = self.model.blocks[name].part
        if part in ("global", "body", "shape"):
            return self.config.body_lr_final if final_stage else 1.0
        return 1.0

    # -- energy ---------------------------------------------------------------------------
    def energy(self, params, targets, Kt, parts, keypoints, prev=None,
               blend: BlendshapeTargets | None = None, widen: float = 1.0,
               only3d: bool = False) -> torch.Tensor:
        """The fit energy of the model keypoints ``keypoints`` (convention -> (B, K, 3), from
        the :class:`KeypointSampler`) posed by ``params``; ``widen`` scales the robust
        scales of the 2D terms; ``only3d`` keeps only the parts' 3D terms (weight
        ``w3d_pose``) and the priors."""
        cfg = self.config
        total = params["transl"].new_zeros(())
        for part in parts:
            tg = targets.get(part)
            if tg is None:
                continue
            kp3 = keypoints[tg.regressor]
            kpw = keypoints[tg.regressor3d]
            if only3d:
                e3 = self._e3d(kpw, tg, cfg.sigma3d[part] * widen)
                if cfg.w3d_bones.get(part, 0) > 0:
                    e3 = e3 + self._ebones(kpw, tg, cfg.sigma3d[part] * widen)
                total = total + cfg.w3d_pose * e3.sum()
                continue
            kp2 = project(kp3, Kt)
            res = ((kp2 - tg.kp2d) / tg.scale[:, None, None]).pow(2).sum(-1)
            e2d = (gmof(res, cfg.sigma[part] * widen) * tg.derived()["w2d"]).sum()
            total = total + cfg.w2d[part] * e2d
            if cfg.w3d.get(part, 0) > 0 and bool(tg.has3d.any()):
                total = total + cfg.w3d[part] * self._e3d(kpw, tg, cfg.sigma3d[part]).sum()
            if cfg.w3d_bones.get(part, 0) > 0 and bool(tg.has3d.any()):
                total = total + cfg.w3d_bones[part] * self._ebones(kpw, tg, cfg.sigma3d[part]).sum()
        if blend is not None and "face" in parts:
            d2 = (params[blend.block] - blend.values).pow(2) * blend.mask
            total = total + cfg.w_blendshapes * (d2.sum(1) / blend.mask.sum(1).clamp(min=1)).sum()
        total = total + self.prior(params, prev)
        return total

    @staticmethod
    def _e3d(kp3: torch.Tensor, tg: PartTargets, sigma: float) -> torch.Tensor:
        """(B,) robust 3D term of a part: model and expert landmarks compared after centring
        (the expert's are known up to a translation), relative to the part's size."""
        d = tg.derived()
        a = kp3 - (kp3 * d["m3_norm"][..., None]).sum(1, keepdim=True)
        r3 = (a - d["centred"]).pow(2).sum(-1) / d["size2"]
        return (gmof(r3, sigma) * d["m3_norm"]).sum(1)

    @staticmethod
    def _ebones(kp3: torch.Tensor, tg: PartTargets, sigma: float) -> torch.Tensor:
        """(B,) robust bone-direction term of a part: the squared distance between the unit
        directions of each bone (``tg.bones``), model against expert, weighted by the lower
        confidence of its two ends; zero for a part without bones."""
        if tg.bones is None or not tg.bones.numel():
            return kp3.new_zeros(kp3.shape[0])
        d = tg.derived()
        v = kp3[:, tg.bones[:, 1]] - kp3[:, tg.bones[:, 0]]
        r3 = (v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6) - d["bone_dirs"]).pow(2).sum(-1)
        return (gmof(r3, sigma) * d["bone_wn"]).sum(1)

    def _hinge_weights(self, block: str, like: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """For a hand block with finger hinges, (axes (N, 3), w_all (N,), w_flex (N,)) on
        ``like``'s device such that the prior of a row is ``w_all |x|^2 + w_flex (x.a)^2``:
        ``w_finger_other`` off the hinge and ``w_finger_flex`` about it for finger bones,
        ``w_pose`` all round for the rest. None when the model has no hinges for it."""
        axes = self.model.finger_hinge_axes().get(block)
        if axes is None:
            return None
        cfg = self.config
        key = (block, str(like.device), cfg.w_finger_flex, cfg.w_finger_other, cfg.w_pose[block])
        if key not in self._hinges:
            a = torch.as_tensor(axes, dtype=like.dtype, device=like.device)
            is_hinge = a.abs().sum(-1) > 0
            w_all = torch.where(is_hinge, cfg.w_finger_other, cfg.w_pose[block]).to(like.dtype)
            w_flex = is_hinge.to(like.dtype) * (cfg.w_finger_flex - cfg.w_finger_other)
            self._hinges[key] = (a, w_all, w_flex)
        return self._hinges[key]

    def _rotation_prior_weights(self, like: torch.Tensor
                                ) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rotation blocks with a prior and, for their rows concatenated, ``w_all``
        (N,), ``w_flex`` (N,) and hinge ``axes`` (N, 3) such that the prior of a row is
        ``w_all |x|^2 + w_flex (x.a)^2``: ``w_pose`` of its block (finger bones:
        ``_hinge_weights``), each divided by its block's number of rows (a mean per block)."""
        cfg = self.config
        key = ("all", str(like.device), cfg.w_finger_flex, cfg.w_finger_other,
               tuple(sorted(cfg.w_pose.items())))
        if key not in self._hinges:
            names, w_all, w_flex, axes = [], [], [], []
            for name, blk in self.model.blocks.items():
                if blk.kind != "rotation" or name not in cfg.w_pose:
                    continue
                names.append(name)
                hinge = self._hinge_weights(name, like)
                if hinge is None:
                    hinge = (like.new_zeros(blk.size, 3),
                             like.new_full((blk.size,), cfg.w_pose[name]), like.new_zeros(blk.size))
                a, wa, wf = hinge
                axes.append(a), w_all.append(wa / blk.size), w_flex.append(wf / blk.size)
            self._hinges[key] = (tuple(names), *(torch.cat(v) if v else like.new_zeros(0)
                                                 for v in (w_all, w_flex, axes)))
        return self._hinges[key]

    def prior(self, params, prev=None) -> torch.Tensor:
        cfg, model = self.config, self.model
        total = params["transl"].new_zeros(())
        names, w_all, w_flex, axes = self._rotation_prior_weights(params["transl"])
        if names:  # all rotation blocks with a prior at once
            x = torch.cat([params[n] for n in names], 1)
            ang2 = x.pow(2).sum(-1)
            total = total + (w_all * ang2 + w_flex * (x * axes).sum(-1).pow(2)).sum()
            over = (ang2.clamp(min=1e-12).sqrt() - cfg.max_angle).clamp(min=0)
            total = total + cfg.w_limit * over.pow(2).sum()
        for name, blk in model.blocks.items():
            x = params[name]
            if blk.kind == "rotation":
                continue
            elif blk.part == "shape":
                d = torch.as_tensor(blk.default or [0.0] * blk.size, dtype=x.dtype, device=x.device)
                total = total + cfg.w_shape * (x - d).pow(2).sum()
            elif blk.part == "face" and blk.kind == "bounded":
                total = total + cfg.w_face_sparsity * x.abs().sum()
            elif blk.part == "face" and blk.kind == "linear":
                total = total + cfg.w_face_sparsity * x.pow(2).sum()
        if prev is not None and cfg.w_temporal > 0:
            warm = prev["_warm"]
            for name in params:
                if name == "transl":
                    continue
                d2 = (params[name] - prev[name]).pow(2).flatten(1).sum(1)
                total = total + cfg.w_temporal * (warm * d2).sum()
        return total

    def plausibility(self, params) -> dict[str, torch.Tensor]:
        """Per part, 1 when every rotation is within the prior's range, falling towards 0."""
        out: dict[str, torch.Tensor] = {}
        for name, blk in self.model.blocks.items():
            if blk.kind != "rotation" or blk.part not in PARTS:
                continue
            ang = params[name].detach().norm(dim=-1).max(1).values
            p = torch.exp(-((ang - self.config.max_angle).clamp(min=0) / 0.3) ** 2)
            out[blk.part] = torch.minimum(out[blk.part], p) if blk.part in out else p
        return out

    def _project_bounds(self, params) -> None:
        with torch.no_grad():
            for name, blk in self.model.blocks.items():
                if blk.kind == "bounded":
                    params[name].clamp_(blk.lower, blk.upper)


def _place(local: dict[str, torch.Tensor], params) -> dict[str, torch.Tensor]:
    """Rotate (about the model origin) and translate unplaced keypoints like the forward pass."""
    R = rotvec_to_rotmat(params["global_orient"][:, 0])
    t = params["transl"][:, None]
    return {c: v @ R.transpose(1, 2) + t for c, v in local.items()}


def _weighted_median(err: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """Median of ``err`` over entries with confidence > 0.1, per row (inf when none)."""
    out = torch.full((err.shape[0],), math.inf, dtype=err.dtype, device=err.device)
    for b in range(err.shape[0]):
        sel = err[b][conf[b] > 0.1]
        if sel.numel():
            out[b] = sel.median()
    return out
