"""Synthetic people with known parameters: pose sampling and rendering for the Anny model.

Used to make correspondences (``scripts/make_correspondences.py``), by the end-to-end tests, by
the benchmark and by the synthetic evaluation set (:mod:`furpe.datasets.synthetic`).
Everything is seeded: the same ``seed`` (or generator state) gives the same person and image.

Two levels:

* :func:`sample_params` + :func:`render_person` (+ :func:`make_person`): one person, facing the
  camera, with the ranges of a :class:`PoseRanges` (default :data:`STANDING`: natural
  standing poses, unchanged since the first release; :data:`VARIED`: wider body, finger,
  face and shape variety, children to seniors).
* :func:`sample_scene` + :func:`render_scene`: a whole varied scene for evaluation: the person
  of :data:`VARIED`, a camera elevation, a focal length, a framing (distance from how much of
  the image the person fills, off-centre placement, sometimes cut by the image border), a
  light (direction and intensity), a skin tone and a cluttered background.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel, BodyOutput
from furpe.experts.base import PartObservation, PersonObservation
from furpe.core.camera import intrinsics, project
from furpe.render import AMBIENT, DIFFUSE, Mesh, render
from furpe.core.boxes import crop_intrinsics
from furpe.core.rotations import compose_rotvec
from furpe.core.vocab import EXPERT_CONVENTIONS, part_convention, world_convention

#: Skin tones (linear-ish RGB in [0, 1]) from light to dark.
SKIN_TONES = (
    (0.93, 0.78, 0.67), (0.87, 0.69, 0.56), (0.76, 0.57, 0.43),
    (0.60, 0.43, 0.31), (0.45, 0.31, 0.22), (0.33, 0.22, 0.16),
)

#: Facial actions that the sampler sets (others stay 0), with their maximum value.
EXPRESSIVE_ACTIONS = {
    "jawOpen": 0.5, "mouthSmileLeft": 0.6, "mouthSmileRight": 0.6, "browInnerUp": 0.6,
    "eyeBlinkLeft": 0.4, "eyeBlinkRight": 0.4, "mouthFunnel": 0.4, "browDownLeft": 0.4,
    "browDownRight": 0.4, "cheekPuff": 0.4,
}


@dataclass
class SyntheticPerson:
    """A rendered synthetic person with its exact ground truth."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    params: dict[str, torch.Tensor]  # batch of 1
    intrinsics: np.ndarray  # (3, 3)
    vertices: np.ndarray  # (V, 3) camera frame
    joints: np.ndarray  # (J, 3)
    visible: dict[str, bool]  # part -> the part is in the image and not tiny (part_visibility)
    inside: dict[str, float] = field(default_factory=dict)  # part -> share of vertices in frame
    pixels: dict[str, float] = field(default_factory=dict)  # part -> projected size, pixels
    seen: dict[str, float] = field(default_factory=dict)  # part -> share of vertices not hidden
    mask: np.ndarray | None = None  # (H, W) bool: pixels covered by the person
    depth: np.ndarray | None = None  # (H, W) rendered depth, inf where no mesh

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The person's box (x0, y0, x1, y1) in pixels: the projected vertices' extent,
        clipped to the image."""
        K, v = self.intrinsics, self.vertices.astype(np.float64)
        uv = v[:, :2] / np.maximum(v[:, 2:3], 1e-6) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
        h, w = self.image.shape[:2]
        lo = np.clip(uv.min(0), -0.5, [w - 0.5, h - 0.5])
        hi = np.clip(uv.max(0), -0.5, [w - 0.5, h - 0.5])
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


#: Anny's age phenotype (0..1) against morphological age in years: the anchors of Anny's
#: calibration to WHO height-for-age data (``anny/data/shape_calibration/boys.pth``,
#: ``morphological_age_mapping``; the same for girls). 0 is a newborn, 0.415 an 11-year-old,
#: 0.77 an 18-year-old, 0.83 a 64-year-old; Anny's blend shapes are ``baby`` at 0, ``child`` at
#: 1/3, ``young`` at 2/3 and ``old`` at 1.
ANNY_AGE_ANCHORS = (0.0, 0.05, 0.215, 0.415, 0.67, 0.77, 0.83, 1.0)
AGE_YEARS_ANCHORS = (0.0, 1.0, 4.0, 11.0, 16.0, 18.0, 64.0, 110.0)


def anny_age_from_years(years: float) -> float:
    """Anny's ``age`` phenotype value for a morphological age in years (piecewise linear)."""
    return float(np.interp(years, AGE_YEARS_ANCHORS, ANNY_AGE_ANCHORS))


def years_from_anny_age(age: float) -> float:
    """Morphological age in years of Anny's ``age`` phenotype value (piecewise linear)."""
    return float(np.interp(age, ANNY_AGE_ANCHORS, AGE_YEARS_ANCHORS))


def _default_phenotype() -> dict[str, tuple[float, float]]:
    return {"gender": (0, 1), "age": (0.4, 0.9), "muscle": (0.2, 0.8),
            "weight": (0.2, 0.8), "height": (0.2, 0.8), "proportions": (0.3, 0.7)}


@dataclass(frozen=True)
class PoseRanges:
    """Ranges of :func:`sample_params`: uniform draws, radians unless noted.

    Anny's rotations are axis-angle in its native frame (x: the person's left, y: their back,
    z: up): about x a limb swings forwards (negative) or backwards; about y an arm moves in
    the frontal plane (positive lowers the left arm from the rest A-pose; the right arm uses
    the mirrored sign); about z it twists. The defaults are :data:`STANDING`; fields left at
    ``None`` / 0 draw nothing, so the default stream of random numbers never changes.
    """

    body_sigma: float = 0.06  # Gaussian noise on every body bone
    arm_swing: tuple[float, float] = (-0.5, 0.6)  # upperarm01 about x
    arm_lower: tuple[float, float] = (0.5, 1.1)  # upperarm01 about y (mirrored per side)
    arm_twist: tuple[float, float] = (-0.3, 0.3)  # upperarm01 about z
    forearm_swing: tuple[float, float] = (-0.2, 0.2)  # lowerarm01 about x
    forearm_lower: tuple[float, float] = (0.0, 0.4)  # lowerarm01 about y (mirrored)
    elbow: tuple[float, float] = (-0.9, 0.0)  # lowerarm01 about z (mirrored): elbow bend
    hip_flex: tuple[float, float] = (-0.4, 0.1)  # upperleg01 about x (negative: forwards)
    hip_spread: tuple[float, float] = (-0.1, 0.15)  # upperleg01 about z (mirrored)
    knee: tuple[float, float] = (0.0, 0.5)  # lowerleg01 about x
    neck: tuple[float, float, float] = (0.2, 0.15, 0.3)  # neck01 and head, max |angle| per axis
    torso: tuple[tuple[float, float], float, float] | None = None  # spine: (bend range,
    # max side bend, max twist), spread over spine01..03
    finger_sigma: float = 0.15  # Gaussian noise on every finger bone
    finger_curl: float = 0.0  # max flexion per phalanx (0: no curl draw); a grip per hand
    # plus per-finger variation, the thumb at half
    eye_gaze: tuple[float, float] | None = None  # max |pitch|, |yaw| of both eyes
    actions: Mapping[str, float] | None = field(default_factory=lambda: dict(EXPRESSIVE_ACTIONS))
    # facial actions to choose from with their maxima (None: all of the model's, action_max)
    action_max: float = 0.7
    n_actions: tuple[int, int] = (3, 3)  # how many facial actions are set (inclusive range)
    phenotype: Mapping[str, tuple[float, float]] = field(default_factory=_default_phenotype)
    age_years: tuple[tuple[float, float, float], ...] | None = None  # (lo, hi, weight) groups of
    # ages in years; when given they replace the "age" phenotype range
    yaw_deg: float = 35.0  # person turning, max |angle| (degrees)
    pitch_deg: float = 8.0
    roll_deg: float = 5.0
    offset: tuple[float, float] = (0.15, 0.1)  # max |x|, |y| of the pelvis, metres
    distance_jitter: tuple[float, float] = (0.9, 1.1)  # factor on ``distance``


#: Natural standing poses facing the camera (the correspondences, tests and benchmark).
STANDING = PoseRanges()

#: The evaluation set's variety: raised, forward and bent arms, bent legs, torso bends and
#: twists, curled fingers, gaze, 2 to 6 of all facial actions, bodies from 5 to 85 years, the
#: person turned up to 70 degrees.
VARIED = PoseRanges(
    arm_swing=(-1.2, 0.5), arm_lower=(-0.6, 1.2), arm_twist=(-0.5, 0.5),
    forearm_swing=(-0.3, 0.3), forearm_lower=(-0.2, 0.5), elbow=(-1.8, 0.0),
    hip_flex=(-0.9, 0.25), hip_spread=(-0.15, 0.35), knee=(0.0, 1.2),
    neck=(0.3, 0.2, 0.5), torso=((-0.25, 0.5), 0.25, 0.4),
    finger_sigma=0.12, finger_curl=1.3, eye_gaze=(0.25, 0.35),
    actions=None, action_max=0.7, n_actions=(2, 6),
    phenotype={"gender": (0, 1), "muscle": (0.1, 0.9), "weight": (0.1, 0.9),
               "height": (0.2, 0.6), "proportions": (0.2, 0.8)},
    age_years=((5.0, 12.0, 0.25), (12.0, 18.0, 0.10), (18.0, 64.0, 0.50), (64.0, 85.0, 0.15)),
    yaw_deg=70.0,
)


def _set(p: dict[str, torch.Tensor], model: BodyModel, block: str, bone: str, rotvec) -> None:
    labels = model.blocks[block].labels
    p[block][0, labels.index(bone)] = torch.as_tensor(rotvec, dtype=torch.float32)


_PHALANX_WEIGHTS = {"1": 0.9, "2": 1.0, "3": 0.7}


def finger_flex_axes(model: BodyModel) -> dict[str, np.ndarray]:
    """Per Anny hand block, (N, 3) unit axes (Anny's native frame) about which a positive
    rotation curls each phalanx towards the palm: the model's hinge axes
    (:meth:`~furpe.bodymodels.base.BodyModel.finger_hinge_axes`) with the sign that curls
    Anny's fingers (mirrored between the hands); zero rows for the metacarpals."""
    axes = model.finger_hinge_axes()
    return {"left_hand_pose": -axes["left_hand_pose"], "right_hand_pose": axes["right_hand_pose"]}


def _curl_hand(p: dict[str, torch.Tensor], model: BodyModel, block: str,
               rng: np.random.Generator, max_curl: float) -> None:
    axes = finger_flex_axes(model)[block]
    labels = model.blocks[block].labels
    grip = rng.uniform(0.0, 1.0)
    per_finger = {f"finger{k}": float(np.clip(grip + rng.normal(0.0, 0.3), -0.15, 1.0))
                  for k in range(1, 6)}
    for i, label in enumerate(labels):
        if not label.startswith("finger"):
            continue
        finger, phalanx = label.split(".")[0].split("-")
        amount = per_finger[finger] * _PHALANX_WEIGHTS[phalanx] * max_curl
        if finger == "finger1":
            amount *= 0.5
        p[block][0, i] += torch.as_tensor(amount * axes[i], dtype=torch.float32)


def sample_params(model: BodyModel, rng: np.random.Generator, distance: float = 3.0,
                  expression: bool = True, ranges: PoseRanges = STANDING) -> dict[str, torch.Tensor]:
    """A random pose, shape and expression of Anny within ``ranges``.

    With the default :data:`STANDING`: a natural standing pose, arms down and bent, small
    spine, head and leg motion, relaxed random fingers, a few facial actions and a random
    phenotype; the person faces the camera within +-35 degrees, ``distance`` metres away
    (the stream of random numbers, hence every seeded person, is the same as before
    ``ranges`` existed). :data:`VARIED` adds the evaluation set's variety.
    """
    if model.name != "anny":
        raise NotImplementedError("the synthetic sampler is written for the Anny rig")
    r = ranges
    p = model.neutral_params(1)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    body = p["body_pose"]
    body[:] = torch.as_tensor(rng.normal(0, r.body_sigma, body.shape), dtype=torch.float32)
    for side, s in (("L", 1.0), ("R", -1.0)):
        _set(p, model, "body_pose", f"upperarm01.{side}",
             [u(*r.arm_swing), s * u(*r.arm_lower), u(*r.arm_twist)])
        _set(p, model, "body_pose", f"lowerarm01.{side}",
             [u(*r.forearm_swing), s * u(*r.forearm_lower), u(*r.elbow) * s])
        _set(p, model, "body_pose", f"upperleg01.{side}", [u(*r.hip_flex), 0.0, s * u(*r.hip_spread)])
        _set(p, model, "body_pose", f"lowerleg01.{side}", [u(*r.knee), 0.0, 0.0])
    for bone in ("neck01", "head"):
        _set(p, model, "body_pose", bone, [u(-r.neck[0], r.neck[0]), u(-r.neck[1], r.neck[1]),
                                           u(-r.neck[2], r.neck[2])])
    if r.torso is not None:
        (bend_lo, bend_hi), side_max, twist_max = r.torso
        total = np.array([u(bend_lo, bend_hi), u(-side_max, side_max), u(-twist_max, twist_max)])
        labels = model.blocks["body_pose"].labels
        for bone in ("spine01", "spine02", "spine03"):
            p["body_pose"][0, labels.index(bone)] += torch.as_tensor(total / 3, dtype=torch.float32)
    for hand in ("left_hand_pose", "right_hand_pose"):
        x = p[hand]
        x[:] = torch.as_tensor(rng.normal(0, r.finger_sigma, x.shape), dtype=torch.float32)
    if r.finger_curl > 0:
        for hand in ("left_hand_pose", "right_hand_pose"):
            _curl_hand(p, model, hand, rng, r.finger_curl)
    if r.eye_gaze is not None and "eye_pose" in p:
        gaze = torch.tensor([u(-r.eye_gaze[0], r.eye_gaze[0]), 0.0,
                             u(-r.eye_gaze[1], r.eye_gaze[1])])
        p["eye_pose"][0, :] = gaze
    if expression and "facial_actions" in p:
        labels = model.blocks["facial_actions"].labels
        actions = dict(r.actions) if r.actions is not None else dict.fromkeys(labels, r.action_max)
        lo, hi = r.n_actions
        k = lo if lo == hi else int(rng.integers(lo, hi + 1))
        for name in rng.choice(list(actions), size=min(k, len(actions)), replace=False):
            if name in labels:
                p["facial_actions"][0, labels.index(name)] = u(0.0, actions[name])
    if "phenotype" in p:
        labels = model.blocks["phenotype"].labels
        for i, name in enumerate(labels):
            if name == "age" and r.age_years is not None:
                weights = np.array([g[2] for g in r.age_years], dtype=np.float64)
                group = r.age_years[int(rng.choice(len(weights), p=weights / weights.sum()))]
                p["phenotype"][0, i] = anny_age_from_years(u(group[0], group[1]))
                continue
            lo, hi = r.phenotype.get(name, (0.5, 0.5))
            p["phenotype"][0, i] = u(lo, hi)
    yaw = math.radians(u(-r.yaw_deg, r.yaw_deg))
    p["global_orient"][0, 0] = torch.tensor([math.radians(u(-r.pitch_deg, r.pitch_deg)), yaw,
                                             math.radians(u(-r.roll_deg, r.roll_deg))])
    p["transl"][0] = torch.tensor([u(-r.offset[0], r.offset[0]), u(-r.offset[1], r.offset[1]),
                                   distance * u(*r.distance_jitter)])
    return p


def vertex_colors(model: BodyModel, skin: tuple[float, float, float]) -> np.ndarray:
    """Per-vertex colours: uniform skin tone."""
    return np.tile(np.asarray(skin, dtype=np.float32), (model.num_vertices, 1))


#: A part counts as visible when at least this share of its vertices projects inside the
#: image ...
MIN_INSIDE = 0.9
#: ... and its projected size (the longer side of the box around its vertices) is at least
#: this many pixels.
MIN_PART_PIXELS: dict[str, float] = {"left_hand": 20.0, "right_hand": 20.0, "face": 20.0,
                                     "body": 60.0}
#: ... and, when the rendered depth is known, at least this share of its vertices is seen
#: (not hidden by the body or by the part itself). A hand in plain view scores 0.7-0.9 (its
#: far side counts as seen within :data:`SEEN_TOLERANCE`), a hand behind the hips or the
#: back 0.0-0.3. The body is always evaluated.
MIN_SEEN: dict[str, float] = {"left_hand": 0.5, "right_hand": 0.5, "face": 0.5}
#: Depth tolerance (metres) of :func:`part_visibility`'s ``seen`` share.
SEEN_TOLERANCE = 0.02


@dataclass
class PartVisibility:
    """Per part: ``visible`` (in the image, not tiny and, with a depth map, not hidden),
    ``inside`` (share of its vertices projecting inside the image), ``pixels`` (projected
    size: the longer side of its vertices' box, pixels) and ``seen`` (share of its vertices
    that are the nearest surface at their pixel, i.e. not hidden by the body or by the part
    itself; NaN without a depth map).
    """

    visible: dict[str, bool]
    inside: dict[str, float]
    pixels: dict[str, float]
    seen: dict[str, float]


def part_visibility(part_vertices: Mapping[str, np.ndarray], vertices: np.ndarray,
                    K: np.ndarray, width: int, height: int, depth: np.ndarray | None = None,
                    min_inside: float = MIN_INSIDE,
                    min_pixels: Mapping[str, float] | None = None,
                    min_seen: Mapping[str, float] | None = None) -> PartVisibility:
    """Which parts of a camera-frame mesh are in a ``width`` x ``height`` image, not tiny and
    not hidden.

    A part is *visible* when more than ``min_inside`` of its vertices project inside the image
    (pixel centres at integer coordinates, so inside means ``-0.5 <= u < W - 0.5``) in front of
    the camera, its projected size is at least ``min_pixels[part]`` (:data:`MIN_PART_PIXELS`)
    and, when the rendered ``depth`` map is given, at least ``min_seen[part]`` of its vertices
    are seen (:data:`MIN_SEEN`; a hand behind the body is not visible).
    """
    v = np.asarray(vertices, dtype=np.float64)
    thresholds = dict(MIN_PART_PIXELS if min_pixels is None else min_pixels)
    seen_min = dict(MIN_SEEN if min_seen is None else min_seen)
    z = v[:, 2]
    front = z > 1e-6
    uv = np.full((len(v), 2), np.nan)
    uv[front] = v[front, :2] / z[front, None] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    uv[front, 0] += K[0, 1] * v[front, 1] / z[front]
    inside = front & (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) \
        & (uv[:, 1] < height - 0.5)
    seen_all = None
    if depth is not None:
        seen_all = np.zeros(len(v), dtype=bool)
        ij = np.rint(uv[inside]).astype(np.int64)
        ij[:, 0] = np.clip(ij[:, 0], 0, width - 1)
        ij[:, 1] = np.clip(ij[:, 1], 0, height - 1)
        seen_all[inside] = z[inside] <= depth[ij[:, 1], ij[:, 0]] + SEEN_TOLERANCE
    visible, inside_share, pixels, seen = {}, {}, {}, {}
    for part, idx in part_vertices.items():
        idx = np.asarray(idx)
        share = float(inside[idx].mean())
        pts = uv[idx][front[idx]]
        size = float((pts.max(0) - pts.min(0)).max()) if len(pts) else 0.0
        inside_share[part] = share
        pixels[part] = size
        seen[part] = float(seen_all[idx].mean()) if seen_all is not None else float("nan")
        visible[part] = bool(share > min_inside and size >= thresholds.get(part, 0.0)
                             and (seen_all is None or seen[part] >= seen_min.get(part, 0.0)))
    return PartVisibility(visible, inside_share, pixels, seen)


#: What the built-in experts report, per part: (part, the model's regressor, landmark
#: convention, with metric 3D landmarks). Face Mesh gives no metric 3D.
EXPERT_LANDMARKS: tuple[tuple[str, str, str, bool], ...] = tuple(
    (part, part_convention(conv, part), conv, part != "face")
    for part, conv in EXPERT_CONVENTIONS.items())


def exact_observations(model: BodyModel, output: BodyOutput, K: np.ndarray,
                       score: float = 1.0) -> list[PersonObservation]:
    """What the built-in experts would report for each person of a posed model if they were
    exact: every landmark of :data:`EXPERT_LANDMARKS` projected with intrinsics ``K`` (3, 3),
    confidence 1, and for body and hands the metric 3D landmarks centred on their mean (an
    expert's 3D landmarks are known up to a translation), taken from the model's
    ``<convention>_world`` correspondences when it has them (where the expert's 3D skeleton
    sits). Fitting these measures the fit alone: its optimiser and priors, without the
    experts' errors."""
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float32)
    people = []
    world = {reg: world_convention(reg) if world_convention(reg) in model.regressors else reg
             for _, reg, _, _ in EXPERT_LANDMARKS}
    with torch.no_grad():
        kp = {r: model.keypoints(output, r).float().cpu()
              for _, reg, _, _ in EXPERT_LANDMARKS for r in (reg, world[reg])}
    for b in range(output.vertices.shape[0]):
        parts: dict[str, PartObservation] = {}
        for part, reg, conv, with3d in EXPERT_LANDMARKS:
            k2 = project(kp[reg][b], Kt).numpy()
            k3 = kp[world[reg]][b].numpy().astype(np.float64)
            parts[part] = PartObservation(
                part, conv, k2, np.ones(len(k2)), k3 - k3.mean(0) if with3d else None,
                score=score, expert="exact",
                world_convention=world[reg] if with3d and world[reg] != reg else None)
        people.append(PersonObservation(parts))
    return people


def render_person(model: BodyModel, params: dict[str, torch.Tensor], width: int, height: int,
                  focal: float | None = None, skin: tuple[float, float, float] = SKIN_TONES[1],
                  background: np.ndarray | None = None, backend: str = "auto", *,
                  K: np.ndarray | None = None,
                  light_dir: Sequence[float] = (0.3, -0.5, -1.0), ambient: float = AMBIENT,
                  diffuse: float = DIFFUSE) -> SyntheticPerson:
    """Render one person; ground truth comes from the same forward pass.

    ``K`` (3, 3) overrides ``focal`` (default: a centred camera, ``intrinsics(width, height,
    focal)``); ``light_dir``, ``ambient`` and ``diffuse`` set the light (see
    :func:`furpe.render.render`). ``visible`` follows :func:`part_visibility`.
    """
    K = intrinsics(width, height, focal) if K is None else np.asarray(K, dtype=np.float64)
    with torch.no_grad():
        out = model(params)
    verts = out.vertices[0].cpu().numpy()
    if background is None:
        background = np.full((height, width, 3), 128, dtype=np.uint8)
    res = render([Mesh(verts, model.faces, vertex_colors=vertex_colors(model, skin))], K,
                 width, height, background=background, backend=backend, light_dir=light_dir,
                 ambient=ambient, diffuse=diffuse)
    vis = part_visibility(model.part_vertices, verts, K, width, height, depth=res.depth)
    return SyntheticPerson(res.color, params, K, verts, out.joints[0].cpu().numpy(), vis.visible,
                           inside=vis.inside, pixels=vis.pixels, seen=vis.seen, mask=res.mask,
                           depth=res.depth)


def crop_part(person: SyntheticPerson, vertex_ids: np.ndarray,
              margin: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """A square crop of ``person.image`` around the projection of ``vertex_ids`` (side =
    ``margin`` x the larger extent) and the intrinsics of the crop: a head or hand crop with
    exact ground truth. Raises ``ValueError`` when the crop leaves the image."""
    K = person.intrinsics
    v = person.vertices[vertex_ids]
    uv = v[:, :2] / v[:, 2:] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    centre = (uv.min(0) + uv.max(0)) / 2
    side = int((uv.max(0) - uv.min(0)).max() * margin)
    x0, y0 = (centre - side / 2).astype(int)
    h, w = person.image.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + side > w or y0 + side > h:
        raise ValueError("the crop leaves the image")
    return (np.ascontiguousarray(person.image[y0:y0 + side, x0:x0 + side]),
            crop_intrinsics(K, x0, y0))


def textured_background(rng: np.random.Generator, width: int, height: int,
                        clutter: int = 0) -> np.ndarray:
    """A smooth random colour gradient with mild noise (no people, no faces), and
    ``clutter`` random shapes (boxes, discs, bars and lines) drawn over it, slightly blurred."""
    c0, c1 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = np.linspace(0, 1, height)[:, None, None]
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 4, (height, width, 3))
    if clutter > 0:
        import cv2

        canvas = np.ascontiguousarray(img, dtype=np.float32)
        scale = max(width, height)
        for _ in range(clutter):
            kind = int(rng.integers(4))
            color = tuple(float(c) for c in rng.uniform(20, 235, 3))
            x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
            a, b = int(rng.uniform(0.03, 0.3) * scale), int(rng.uniform(0.03, 0.3) * scale)
            if kind == 0:
                cv2.rectangle(canvas, (x, y), (x + a, y + b), color, -1)
            elif kind == 1:
                angle = float(rng.uniform(0, 180))
                cv2.ellipse(canvas, (x, y), (a // 2 + 1, b // 2 + 1), angle, 0, 360, color, -1)
            elif kind == 2:  # a horizontal band: floor, shelf, table edge
                cv2.rectangle(canvas, (0, y), (width, y + b // 3 + 1), color, -1)
            else:
                x2, y2 = int(rng.uniform(0, width)), int(rng.uniform(0, height))
                cv2.line(canvas, (x, y), (x2, y2), color, int(rng.integers(1, 6)))
        canvas += rng.normal(0, 3, canvas.shape).astype(np.float32)
        img = cv2.GaussianBlur(canvas, (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_person(model: BodyModel, seed: int, width: int = 640, height: int = 640,
                distance: float = 3.0) -> SyntheticPerson:
    """A seeded random person rendered over a random background."""
    rng = np.random.default_rng(seed)
    params = sample_params(model, rng, distance=distance)
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    bg = textured_background(rng, width, height)
    return render_person(model, params, width, height, skin=skin, background=bg)


# ---------------------------------------------------------------------------------------
# Varied scenes (the synthetic evaluation set)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneRanges:
    """Ranges of :func:`sample_scene` (uniform draws)."""

    focal_factor: tuple[float, float] = (0.9, 1.5)  # focal = factor * longer image side
    elevation_deg: tuple[float, float] = (-10.0, 30.0)  # camera above (+) or below the person
    fill: tuple[float, float] = (0.3, 0.9)  # person's projected height / image height
    min_distance: float = 1.0  # metres, camera to the person's centre
    truncation: float = 0.1  # probability that the image border cuts the person
    truncation_share: tuple[float, float] = (0.1, 0.35)  # share of the box then outside
    ambient: tuple[float, float] = (0.2, 0.5)
    diffuse: tuple[float, float] = (0.45, 0.85)
    clutter: tuple[int, int] = (0, 12)  # number of background shapes (inclusive)
    skin_jitter: float = 0.015
    #: Body shapes (gender, age, height, weight, muscle, proportions) from Anny's
    #: WHO-calibrated ``SimpleShapeDistribution`` (ages 0-90) instead of the pose ranges'.
    who_shapes: bool = False
    #: Probabilities of a full-body, an upper-body (the top 55% of the person fills the
    #: image height) and a close-up (the top 25%: head and shoulders) framing.
    framing: tuple[float, float, float] = (1.0, 0.0, 0.0)
    #: Number of random shapes drawn in front of the person (inclusive range).
    occluders: tuple[int, int] = (0, 0)


@dataclass
class SyntheticScene:
    """One sampled scene, ready for :func:`render_scene`.

    ``info`` holds the scene's variables: ``age_years``, ``height_m`` (standing height in the
    rest pose), ``yaw_deg`` (person turned away from facing the camera), ``elevation_deg``,
    ``focal``, ``fill``, ``distance_m`` (camera to the person's box centre), ``truncated``
    (0/1), ``clutter``.
    """

    params: dict[str, torch.Tensor]
    K: np.ndarray
    width: int
    height: int
    skin: tuple[float, float, float]
    background: np.ndarray
    light_dir: np.ndarray
    ambient: float
    diffuse: float
    info: dict[str, float]
    #: Shapes drawn in front of the person: (kind 0 box / 1 disc, (x, y), (a, b), angle, RGB).
    occluders: list[tuple] = field(default_factory=list)


def _place(model: BodyModel, params: dict[str, torch.Tensor], K: np.ndarray, width: int,
           height: int, rng: np.random.Generator, sc: SceneRanges,
           top: float = 1.0) -> dict[str, float]:
    """Set ``params["transl"]`` so the person fills ``fill`` of the image height, off-centre
    (or cut by a border with probability ``sc.truncation``). With ``top`` < 1 the framing
    holds the top ``top`` share of the person's height (upper body, close-up) instead; the
    rest is cut by the image border."""
    params["transl"][0] = 0.0
    with torch.no_grad():
        v = model(params).vertices[0].cpu().numpy().astype(np.float64)
    if top < 1.0:  # y points down: the top of the person is the smallest y
        y0, y1 = v[:, 1].min(), v[:, 1].max()
        v = v[v[:, 1] <= y0 + top * (y1 - y0)]
    lo, hi = v.min(0), v.max(0)
    centre, extent = (lo + hi) / 2, hi - lo
    f = float(K[0, 0])
    fill = float(rng.uniform(*sc.fill))
    distance = max(f * extent[1] / (fill * height), sc.min_distance + extent[2] / 2)
    w_px, h_px = f * extent[0] / distance, f * extent[1] / distance
    margin = 0.02 * min(width, height)
    mx = max(0.0, (width - w_px) / 2 - margin)
    my = max(0.0, (height - h_px) / 2 - margin)
    cu = (width - 1) / 2 + float(rng.uniform(-mx, mx))
    cv = (height - 1) / 2 + float(rng.uniform(-my, my))
    truncated = bool(rng.uniform() < sc.truncation) and top >= 1.0
    side = int(rng.integers(4))
    share = float(rng.uniform(*sc.truncation_share))
    if truncated:
        if side == 0:
            cu = -0.5 - w_px / 2 + (1 - share) * w_px
        elif side == 1:
            cu = width - 0.5 + w_px / 2 - (1 - share) * w_px
        elif side == 2:
            cv = -0.5 - h_px / 2 + (1 - share) * h_px
        else:
            cv = height - 0.5 + h_px / 2 - (1 - share) * h_px
    t = np.array([(cu - K[0, 2]) / f * distance - centre[0],
                  (cv - K[1, 2]) / K[1, 1] * distance - centre[1],
                  distance - centre[2]])
    # one correction step: put the centre of the projected box where it was meant to be
    moved = v + t
    uv = moved[:, :2] / moved[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    box_centre = (uv.min(0) + uv.max(0)) / 2
    t[:2] += (np.array([cu, cv]) - box_centre) * distance / np.array([K[0, 0], K[1, 1]])
    params["transl"][0] = torch.as_tensor(t, dtype=torch.float32)
    return {"fill": fill, "distance_m": float(distance), "truncated": float(truncated)}


_WHO: "weakref.WeakKeyDictionary[BodyModel, object]" = weakref.WeakKeyDictionary()


def who_phenotype(model: BodyModel, rng: np.random.Generator) -> torch.Tensor:
    """(1, P) phenotype drawn from Anny's WHO-calibrated ``SimpleShapeDistribution`` (ages
    0-90, both genders), seeded by ``rng`` (torch's global generator is left as it was)."""
    from anny.shape_distribution import SimpleShapeDistribution

    if model not in _WHO:
        _WHO[model] = SimpleShapeDistribution(model.anny)  # type: ignore[attr-defined]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**31)))
        _, values = _WHO[model].sample(1)  # type: ignore[attr-defined]
    labels = model.blocks["phenotype"].labels
    row = [float(values[name].reshape(-1)[0]) if name in values else 0.5 for name in labels]
    return torch.tensor([row], dtype=torch.float32).clamp(0.0, 1.0)


def photo_background(rng: np.random.Generator, photo: np.ndarray, width: int,
                     height: int) -> np.ndarray:
    """A random crop of ``photo`` (RGB) at a random scale, resized to ``width`` x ``height``."""
    import cv2

    h, w = photo.shape[:2]
    aspect = width / height
    scale = float(rng.uniform(0.6, 1.0))
    ch = int(min(h, w / aspect) * scale)
    cw = max(1, int(ch * aspect))
    ch = max(1, ch)
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    out = cv2.resize(np.ascontiguousarray(photo[y:y + ch, x:x + cw]), (width, height),
                     interpolation=cv2.INTER_AREA)
    return out[:, ::-1].copy() if rng.uniform() < 0.5 else out


def sample_scene(model: BodyModel, rng: np.random.Generator, width: int = 640,
                 height: int = 640, pose: PoseRanges = VARIED,
                 scene: SceneRanges = SceneRanges(),
                 backgrounds: Sequence[np.ndarray] = ()) -> SyntheticScene:
    """A varied random scene: a person (:func:`sample_params` with ``pose``) seen by a
    camera at a random elevation and focal length, placed to fill a random share of the
    image, lit from a random direction with a random intensity, with a random skin tone
    (between two neighbouring :data:`SKIN_TONES`) over a cluttered background, or over a
    random crop of one of ``backgrounds`` (RGB photos without people). ``scene`` may add
    WHO-calibrated shapes, upper-body and close-up framings and occluders
    (:data:`TRAINING`); without them the random stream is the evaluation set's."""
    sc = scene
    params = sample_params(model, rng, distance=3.0, ranges=pose)
    if sc.who_shapes:
        params["phenotype"] = who_phenotype(model, rng)
    info: dict[str, float] = {}
    labels = model.blocks["phenotype"].labels
    info["age_years"] = years_from_anny_age(float(params["phenotype"][0, labels.index("age")]))
    info["yaw_deg"] = math.degrees(float(params["global_orient"][0, 0, 1]))
    rest = model.neutral_params(1)
    rest["phenotype"] = params["phenotype"].clone()
    with torch.no_grad():
        ys = model(rest).vertices[0, :, 1]
    info["height_m"] = float(ys.max() - ys.min())
    focal = float(rng.uniform(*sc.focal_factor)) * max(width, height)
    K = intrinsics(width, height, focal)
    info["focal"] = focal
    elevation = float(rng.uniform(*sc.elevation_deg))
    info["elevation_deg"] = elevation
    c, s = math.cos(math.radians(elevation)), math.sin(math.radians(elevation))
    Rc = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    params["global_orient"][0, 0] = compose_rotvec(Rc, params["global_orient"][0, 0])
    top = 1.0
    if tuple(sc.framing) != (1.0, 0.0, 0.0):
        probs = np.asarray(sc.framing, dtype=np.float64)
        kind = int(rng.choice(3, p=probs / probs.sum()))
        top = (1.0, 0.55, 0.25)[kind]
        info["framing"] = float(kind)
    info.update(_place(model, params, K, width, height, rng, sc, top))
    tone = int(rng.integers(len(SKIN_TONES) - 1))
    mix = float(rng.uniform())
    skin = (1 - mix) * np.array(SKIN_TONES[tone]) + mix * np.array(SKIN_TONES[tone + 1])
    skin = np.clip(skin + rng.normal(0, sc.skin_jitter, 3), 0.0, 1.0)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), -rng.uniform(0.4, 1.5)])
    light /= np.linalg.norm(light)
    ambient = float(rng.uniform(*sc.ambient))
    diffuse = float(rng.uniform(*sc.diffuse))
    clutter = int(rng.integers(sc.clutter[0], sc.clutter[1] + 1))
    info["clutter"] = float(clutter)
    if backgrounds:
        choice = int(rng.integers(len(backgrounds)))
        background = photo_background(rng, backgrounds[choice], width, height)
        info["background"] = float(choice)
    else:
        background = textured_background(rng, width, height, clutter=clutter)
    occluders: list[tuple] = []
    if sc.occluders[1] > 0:
        with torch.no_grad():
            v = model(params).vertices[0].cpu().numpy().astype(np.float64)
        uv = v[:, :2] / np.maximum(v[:, 2:3], 1e-6) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
        lo = np.clip(uv.min(0), 0, [width - 1, height - 1])
        hi = np.clip(uv.max(0), 0, [width - 1, height - 1])
        side = float(max((hi - lo).max(), 8.0))
        for _ in range(int(rng.integers(sc.occluders[0], sc.occluders[1] + 1))):
            centre = tuple(int(c) for c in rng.uniform(lo, hi))
            axes = tuple(int(a) for a in rng.uniform(0.05, 0.25, 2) * side + 1)
            occluders.append((int(rng.integers(2)), centre, axes, float(rng.uniform(0, 180)),
                              tuple(float(c) for c in rng.uniform(20, 235, 3))))
        info["occluders"] = float(len(occluders))
    return SyntheticScene(params=params, K=K, width=width, height=height,
                          skin=tuple(float(x) for x in skin), background=background,
                          light_dir=light, ambient=ambient, diffuse=diffuse, info=info,
                          occluders=occluders)


def render_scene(model: BodyModel, scene: SyntheticScene, backend: str = "auto") -> SyntheticPerson:
    """Render a :func:`sample_scene` scene (ground truth from the same forward pass); its
    occluders are drawn over the person and hide what they cover (visibility flags too)."""
    person = render_person(model, scene.params, scene.width, scene.height, skin=scene.skin,
                           background=scene.background, backend=backend, K=scene.K,
                           light_dir=scene.light_dir, ambient=scene.ambient,
                           diffuse=scene.diffuse)
    if not scene.occluders:
        return person
    import cv2

    image = np.ascontiguousarray(person.image)
    cover = np.zeros(image.shape[:2], np.uint8)
    for kind, centre, axes, angle, colour in scene.occluders:
        for canvas, value in ((image, colour), (cover, 1)):
            if kind == 0:
                x, y = centre
                cv2.rectangle(canvas, (x - axes[0], y - axes[1]), (x + axes[0], y + axes[1]),
                              value, -1)
            else:
                cv2.ellipse(canvas, centre, axes, angle, 0, 360, value, -1)
    depth = np.where(cover > 0, 0.0, person.depth).astype(np.float32)  # in front of all
    vis = part_visibility(model.part_vertices, person.vertices, scene.K, scene.width,
                          scene.height, depth=depth)
    person.image, person.visible, person.seen, person.depth = image, vis.visible, vis.seen, depth
    if person.mask is not None:
        person.mask = person.mask & (cover == 0)
    return person


#: Scene ranges of synthetic training data: the evaluation set's, plus WHO-calibrated shapes
#: of all ages, upper-body and close-up framings and occluders.
TRAINING = SceneRanges(who_shapes=True, framing=(0.6, 0.25, 0.15), occluders=(0, 3))
