"""BVH (Biovision hierarchy) motion files of a :class:`~furpe.export.rig.Rig`, and a reader.

Layout: y up, **centimetres**, the person facing +z at rest, in the same world as the glTF
export (the result's camera frame turned to y up: ``(x, -y, -z)``). The root has six
channels (``Xposition Yposition Zposition Zrotation Xrotation Yrotation``: its head's
position, with ``OFFSET 0 0 0``), every other bone three (``Zrotation Xrotation
Yrotation``, degrees, applied as ``Rz @ Rx @ Ry``); leaves end in an ``End Site``. A bone
whose offset from its parent changes over the frames (SMPL-X's joints move a little with the
expression) also gets position channels: the change, added to its ``OFFSET``.

BVH bones have no orientation of their own: at zero rotation the skeleton stands in its rest
pose (the rig's bind pose, or a T-pose with ``tpose=True``) with every bone's axes the world
axes. With ``G_j = posed world rotation of bone j @ inverse(its rest world rotation)``, bone
j's channel rotation is ``inv(G_parent) @ G_j`` (the root's: ``G_root``), and forward
kinematics ``head_j = head_parent + G_parent @ OFFSET_j`` gives back the posed heads (the
offsets, in the rest bone frames, are the same in every pose of a skeleton): the body
model's joints (:attr:`Motion.joints`).

Euler angles are continuous: of the two solutions of each rotation (and their 360-degree
turns) each frame takes the one nearest the previous frame's.

Frames are evenly spaced (``Frame Time``, by default the median step of the motion's
times); a frame missing from the motion (the track not seen) repeats the one before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from furpe.core.errors import FurpeError
from furpe.core.files import atomic_write
from furpe.export.rig import Motion, Rig, t_pose_bones

#: Metres to BVH units (centimetres).
CM = 100.0
ROOT_CHANNELS = ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
JOINT_CHANNELS = ("Zrotation", "Xrotation", "Yrotation")
#: Below this change (cm) a bone's offset from its parent counts as constant.
_OFFSET_TOLERANCE_CM = 1e-3


def _rx(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1),
                     np.stack([z, s, c], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1),
                     np.stack([-s, z, c], -1)], -2)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1),
                     np.stack([z, z, o], -1)], -2)


_AXIS_ROTATION = {"X": _rx, "Y": _ry, "Z": _rz}


def zxy_to_matrix(angles: np.ndarray) -> np.ndarray:
    """(..., 3) angles (z, x, y) in radians to ``Rz(z) @ Rx(x) @ Ry(y)``."""
    a = np.asarray(angles, dtype=np.float64)
    return _rz(a[..., 0]) @ _rx(a[..., 1]) @ _ry(a[..., 2])


def _wrap_near(angle: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``angle`` plus the multiple of 2 pi that brings it nearest ``reference``."""
    return angle - 2 * np.pi * np.round((angle - reference) / (2 * np.pi))


def matrix_to_zxy(R: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """(J, 3, 3) rotations to (J, 3) angles (z, x, y), radians, with ``Rz Rx Ry = R``.

    Of the two solutions (``(z, x, y)`` and ``(z + pi, pi - x, y + pi)``), each shifted by
    whole turns, the one nearest ``previous`` (J, 3) is returned (without ``previous``: the
    one with ``|x| <= pi/2``). At gimbal lock (``x = +-pi/2``) only ``z - y`` (or ``z + y``)
    is defined: z is kept at its previous value.
    """
    R = np.asarray(R, dtype=np.float64)
    cos_x = np.hypot(R[..., 0, 1], R[..., 1, 1])
    x = np.arctan2(R[..., 2, 1], cos_x)
    z = np.arctan2(-R[..., 0, 1], R[..., 1, 1])
    y = np.arctan2(-R[..., 2, 0], R[..., 2, 2])
    locked = cos_x < 1e-7
    if np.any(locked):
        # R = Rz(z) Rx(+-pi/2) Ry(y): choose z (the previous one, or 0), solve for y.
        zl = np.zeros_like(z) if previous is None else previous[..., 0]
        z = np.where(locked, zl, z)
        M = np.swapaxes(_rx(x), -1, -2) @ np.swapaxes(_rz(z), -1, -2) @ R  # = Ry(y)
        y = np.where(locked, np.arctan2(M[..., 0, 2], M[..., 0, 0]), y)
    first = np.stack([z, x, y], -1)
    if previous is None:
        return first
    second = np.stack([z + np.pi, np.pi - x, y + np.pi], -1)
    first, second = _wrap_near(first, previous), _wrap_near(second, previous)
    d1 = np.abs(first - previous).sum(-1)
    d2 = np.abs(second - previous).sum(-1)
    return np.where((d2 < d1)[..., None], second, first)


@dataclass(frozen=True)
class BVH:
    """A BVH file's content (units as in the file).

    Attributes:
        names: J joint names (End Sites excluded), in file order (parents first).
        parents: J parent indices (-1 for the root).
        offsets: (J, 3) offsets from the parent.
        channels: per joint, its channel names in file order.
        end_sites: (joint index, (3,) offset) of each End Site.
        frame_time: seconds per frame.
        motion: (N, C) channel values, C = all joints' channels in file order.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    end_sites: tuple[tuple[int, np.ndarray], ...]
    frame_time: float
    motion: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def _fmt(values: np.ndarray) -> str:
    return " ".join(f"{v:.6f}" for v in values)


def bvh_frames(times: np.ndarray, frame_time: float) -> np.ndarray:
    """For each evenly spaced BVH frame from the first time to the last, the index of the
    motion frame it shows (the latest one at or before it: gaps repeat the last pose)."""
    slots = np.round((times - times[0]) / frame_time).astype(np.int64)
    out = np.zeros(int(slots[-1]) + 1, dtype=np.int64)
    for i, s in enumerate(slots):
        out[s:] = i
    return out


def bvh_text(rig: Rig, motion: Motion, *, tpose: bool = False,
             frame_time: float | None = None) -> str:
    """The BVH file of ``rig`` animated by ``motion`` (see the module docstring)."""
    rest = t_pose_bones(rig) if tpose else rig.rest_bones
    if frame_time is None:
        steps = np.diff(motion.times)
        frame_time = float(np.median(steps)) if len(steps) else 1.0 / 30.0
    if not frame_time > 0:
        raise FurpeError(f"BVH frame time must be positive, got {frame_time}")
    parents = rig.parents
    children: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    roots = []
    for j, p in enumerate(parents):
        (roots if p < 0 else children[p]).append(j)
    if len(roots) != 1:
        raise FurpeError(f"BVH needs one root bone, the rig has {len(roots)}")
    heads = rest[:, :3, 3] * CM
    offsets = np.array([np.zeros(3) if p < 0 else heads[j] - heads[p]
                        for j, p in enumerate(parents)])

    # Channel rotations: G_j = W_j R_j^T; local = G_parent^T G_j.
    G = motion.bones[..., :3, :3] @ np.swapaxes(rest[None, :, :3, :3], -1, -2)
    local = G.copy()
    # Where a bone's offset from its parent changes (SMPL-X's joints move a little with the
    # expression), position channels carry the change: head_j = head_p + G_p (OFFSET + p).
    posed = motion.joints[:, :len(parents)] * CM
    shift = np.zeros_like(posed)
    for j, p in enumerate(parents):
        if p >= 0:
            local[:, j] = np.swapaxes(G[:, p], -1, -2) @ G[:, j]
            shift[:, j] = np.einsum("nji,nj->ni", G[:, p], posed[:, j] - posed[:, p]) - offsets[j]
    moving = {j for j, p in enumerate(parents)
              if p >= 0 and np.abs(shift[:, j]).max() > _OFFSET_TOLERANCE_CM}

    lines = ["HIERARCHY"]
    order: list[int] = []

    def write(j: int, depth: int) -> None:
        pad = "  " * depth
        order.append(j)
        if parents[j] < 0:
            lines.append(f"{pad}ROOT {rig.bone_names[j]}")
            channels = ROOT_CHANNELS
        else:
            lines.append(f"{pad}JOINT {rig.bone_names[j]}")
            channels = ROOT_CHANNELS if j in moving else JOINT_CHANNELS
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {_fmt(offsets[j])}")
        lines.append(f"{pad}  CHANNELS {len(channels)} {' '.join(channels)}")
        for c in children[j]:
            write(c, depth + 1)
        if not children[j]:
            tip = (0.5 * offsets[j] if np.linalg.norm(offsets[j]) > 1e-6
                   else np.array([0.0, 1.0, 0.0]))
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {_fmt(tip)}",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")

    write(roots[0], 0)

    frames = bvh_frames(motion.times, frame_time)
    lines += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time:.8f}"]
    previous = None
    root = roots[0]
    for f in frames:
        angles = matrix_to_zxy(local[f][order], previous)
        previous = angles
        values = []
        for k, j in enumerate(order):
            if j == root:
                values.append(posed[f, j])
            elif j in moving:
                values.append(shift[f, j])
            values.append(np.degrees(angles[k]))
        lines.append(_fmt(np.concatenate(values)))
    return "\n".join(lines) + "\n"


def write_bvh(path: str | os.PathLike[str], rig: Rig, motion: Motion, *, tpose: bool = False,
              frame_time: float | None = None) -> Path:
    """Write the BVH file of ``rig`` animated by ``motion``, atomically. ``tpose``: the rest
    skeleton (zero rotations) has the arms straight out sideways (:func:`t_pose_bones`),
    which retargeting tools expect; otherwise it is the rig's bind pose."""
    text = bvh_text(rig, motion, tpose=tpose, frame_time=frame_time)
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def read_bvh(path: str | os.PathLike[str]) -> BVH:
    """Parse a BVH file (any channel order; raises :class:`FurpeError` when malformed)."""
    tokens = Path(path).read_text().split()
    pos = 0

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise FurpeError(f"{path}: unexpected end of the BVH file")
        pos += 1
        return tokens[pos - 1]

    def expect(word: str) -> None:
        got = take()
        if got != word:
            raise FurpeError(f"{path}: expected '{word}', found '{got}'")

    names: list[str] = []
    parents: list[int] = []
    offsets: list[np.ndarray] = []
    channels: list[tuple[str, ...]] = []
    end_sites: list[tuple[int, np.ndarray]] = []

    def joint(parent: int) -> None:
        name = take()
        index = len(names)
        names.append(name)
        parents.append(parent)
        expect("{")
        expect("OFFSET")
        offsets.append(np.array([float(take()) for _ in range(3)]))
        expect("CHANNELS")
        channels.append(tuple(take() for _ in range(int(take()))))
        while True:
            word = take()
            if word == "}":
                return
            if word == "JOINT":
                joint(index)
            elif word == "End":
                expect("Site")
                expect("{")
                expect("OFFSET")
                end_sites.append((index, np.array([float(take()) for _ in range(3)])))
                expect("}")
            else:
                raise FurpeError(f"{path}: unexpected '{word}' in joint '{name}'")

    try:
        expect("HIERARCHY")
        expect("ROOT")
        joint(-1)
        expect("MOTION")
        expect("Frames:")
        count = int(take())
        expect("Frame")
        expect("Time:")
        frame_time = float(take())
        width = sum(len(c) for c in channels)
        values = np.array(tokens[pos:], dtype=np.float64)
    except ValueError as exc:
        raise FurpeError(f"{path}: not a valid BVH file ({exc})") from exc
    if values.size != count * width:
        raise FurpeError(f"{path}: {values.size} motion values, expected {count} x {width}")
    return BVH(names=tuple(names), parents=tuple(parents), offsets=np.stack(offsets),
               channels=tuple(channels), end_sites=tuple(end_sites),
               frame_time=frame_time, motion=values.reshape(count, width))


def bvh_forward_kinematics(bvh: BVH) -> tuple[np.ndarray, np.ndarray]:
    """World positions (N, J, 3) and rotations (N, J, 3, 3) of every joint and frame.

    Each joint's local transform is a translation by ``OFFSET`` (plus its position channels)
    followed by its rotation channels multiplied in file order (``Zrotation Xrotation
    Yrotation`` is ``Rz @ Rx @ Ry``), angles in degrees.
    """
    n, J = bvh.num_frames, len(bvh.names)
    positions = np.zeros((n, J, 3))
    rotations = np.zeros((n, J, 3, 3))
    column = 0
    for j in range(J):
        local_t = np.tile(bvh.offsets[j], (n, 1))
        local_r = np.tile(np.eye(3), (n, 1, 1))
        for name in bvh.channels[j]:
            value = bvh.motion[:, column]
            column += 1
            axis, kind = name[0].upper(), name[1:].lower()
            if kind == "position":
                local_t[:, "XYZ".index(axis)] += value
            elif kind == "rotation":
                local_r = local_r @ _AXIS_ROTATION[axis](np.radians(value))
            else:
                raise FurpeError(f"unknown BVH channel '{name}'")
        p = bvh.parents[j]
        if p < 0:
            positions[:, j], rotations[:, j] = local_t, local_r
        else:
            positions[:, j] = positions[:, p] + np.einsum("nij,nj->ni", rotations[:, p], local_t)
            rotations[:, j] = rotations[:, p] @ local_r
    return positions, rotations
