"""Synthetic people with known parameters: pose sampling and rendering for the Anny model.

Used to make correspondences (``scripts/make_correspondences.py``), by the end-to-end tests and
by the benchmark. Everything is seeded: the same ``seed`` gives the same person and image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from furpe.bodymodels.base import BodyModel
from furpe.fitting.camera import intrinsics
from furpe.render import Mesh, render

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
    visible: dict[str, bool]  # part -> enough of the part is visible in the image


def _set(p: dict[str, torch.Tensor], model: BodyModel, block: str, bone: str, rotvec) -> None:
    labels = model.blocks[block].labels
    p[block][0, labels.index(bone)] = torch.as_tensor(rotvec, dtype=torch.float32)


def sample_params(model: BodyModel, rng: np.random.Generator, distance: float = 3.0,
                  expression: bool = True) -> dict[str, torch.Tensor]:
    """A natural standing pose of Anny: arms down and bent, small spine, head, leg motion,
    relaxed random fingers, a few facial actions and a random phenotype; the person faces
    the camera within +-35 degrees, ``distance`` metres away."""
    if model.name != "anny":
        raise NotImplementedError("the synthetic sampler is written for the Anny rig")
    p = model.neutral_params(1)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    body = p["body_pose"]
    body[:] = torch.as_tensor(rng.normal(0, 0.06, body.shape), dtype=torch.float32)
    for side, s in (("L", 1.0), ("R", -1.0)):
        _set(p, model, "body_pose", f"upperarm01.{side}", [u(-0.5, 0.6), s * u(0.5, 1.1), u(-0.3, 0.3)])
        _set(p, model, "body_pose", f"lowerarm01.{side}", [u(-0.2, 0.2), s * u(0.0, 0.4), u(-0.9, 0.0) * s])
        _set(p, model, "body_pose", f"upperleg01.{side}", [u(-0.4, 0.1), 0.0, s * u(-0.1, 0.15)])
        _set(p, model, "body_pose", f"lowerleg01.{side}", [u(0.0, 0.5), 0.0, 0.0])
    for bone in ("neck01", "head"):
        _set(p, model, "body_pose", bone, [u(-0.2, 0.2), u(-0.15, 0.15), u(-0.3, 0.3)])
    for hand in ("left_hand_pose", "right_hand_pose"):
        x = p[hand]
        x[:] = torch.as_tensor(rng.normal(0, 0.15, x.shape), dtype=torch.float32)
    if expression and "facial_actions" in p:
        labels = model.blocks["facial_actions"].labels
        for name in rng.choice(list(EXPRESSIVE_ACTIONS), size=3, replace=False):
            if name in labels:
                p["facial_actions"][0, labels.index(name)] = u(0.0, EXPRESSIVE_ACTIONS[name])
    if "phenotype" in p:
        labels = model.blocks["phenotype"].labels
        ranges = {"gender": (0, 1), "age": (0.4, 0.9), "muscle": (0.2, 0.8),
                  "weight": (0.2, 0.8), "height": (0.2, 0.8), "proportions": (0.3, 0.7)}
        for i, name in enumerate(labels):
            lo, hi = ranges.get(name, (0.5, 0.5))
            p["phenotype"][0, i] = u(lo, hi)
    yaw = math.radians(u(-35, 35))
    p["global_orient"][0, 0] = torch.tensor([math.radians(u(-8, 8)), yaw, math.radians(u(-5, 5))])
    p["transl"][0] = torch.tensor([u(-0.15, 0.15), u(-0.1, 0.1), distance * u(0.9, 1.1)])
    return p


def vertex_colors(model: BodyModel, skin: tuple[float, float, float]) -> np.ndarray:
    """Per-vertex colours: uniform skin tone."""
    return np.tile(np.asarray(skin, dtype=np.float32), (model.num_vertices, 1))


def render_person(model: BodyModel, params: dict[str, torch.Tensor], width: int, height: int,
                  focal: float | None = None, skin: tuple[float, float, float] = SKIN_TONES[1],
                  background: np.ndarray | None = None, backend: str = "auto") -> SyntheticPerson:
    """Render one person; ground truth comes from the same forward pass."""
    K = intrinsics(width, height, focal)
    with torch.no_grad():
        out = model(params)
    verts = out.vertices[0].cpu().numpy()
    if background is None:
        background = np.full((height, width, 3), 128, dtype=np.uint8)
    res = render([Mesh(verts, model.faces, vertex_colors=vertex_colors(model, skin))], K,
                 width, height, background=background, backend=backend)
    uv = verts[:, :2] / verts[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    visible = {part: bool(inside[idx].mean() > 0.9) for part, idx in model.part_vertices.items()}
    return SyntheticPerson(res.color, params, K, verts, out.joints[0].cpu().numpy(), visible)


def textured_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random colour gradient with mild noise (no people, no faces)."""
    c0, c1 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = np.linspace(0, 1, height)[:, None, None]
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 4, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_person(model: BodyModel, seed: int, width: int = 640, height: int = 640,
                distance: float = 3.0) -> SyntheticPerson:
    """A seeded random person rendered over a random background."""
    rng = np.random.default_rng(seed)
    params = sample_params(model, rng, distance=distance)
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    bg = textured_background(rng, width, height)
    return render_person(model, params, width, height, skin=skin, background=bg)
