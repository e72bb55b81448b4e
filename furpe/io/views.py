"""Pictures for people to look at: a second virtual camera beside the input's, and contact
sheets of many overlays."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from furpe.results import FrameResult

#: Background of views that have no photo behind them (RGB).
VIEW_BACKGROUND = (236, 236, 236)


def _yaw(yaw_deg: float) -> np.ndarray:
    a = math.radians(yaw_deg)
    return np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0],
                     [-math.sin(a), 0.0, math.cos(a)]])


def _framing(pts: np.ndarray, centre: np.ndarray, R: np.ndarray, width: int, height: int,
             fill: float) -> tuple[float, np.ndarray]:
    """The distance from ``centre`` at which ``pts`` fill ``fill`` of the image, and K."""
    local = (pts - centre) @ R.T
    focal = float(max(width, height))
    half = np.abs(local[:, :2]).max(0) + 1e-6
    depth = max(half[0] * focal / (0.5 * fill * width), half[1] * focal / (0.5 * fill * height))
    distance = depth + max(0.0, -local[:, 2].min()) + 0.05
    K = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0, 0, 1.0]])
    return distance, K


def _points(vertices: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float64).reshape(-1, 3) for v in vertices])


def side_camera(vertices: Sequence[np.ndarray], width: int, height: int, yaw_deg: float = 90.0,
                fill: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A virtual camera looking at the people from the side: ``(R, t, K)`` such that a
    camera-frame point ``p`` is at ``R @ p + t`` in the new camera, which turns by ``yaw_deg``
    about the vertical axis through the people's centre and backs off until they fill
    ``fill`` of the image."""
    pts = _points(vertices)
    centre = 0.5 * (pts.min(0) + pts.max(0))
    R = _yaw(yaw_deg)
    distance, K = _framing(pts, centre, R, width, height, fill)
    return R, -R @ centre + np.array([0.0, 0.0, distance]), K


class SideCamera:
    """The side camera of a video: framed like :func:`side_camera` but following the people
    smoothly (centre and distance averaged over frames with weight ``follow``) so the view
    does not jump when someone moves, enters or leaves."""

    def __init__(self, width: int, height: int, yaw_deg: float = 90.0, follow: float = 0.1,
                 fill: float = 0.7) -> None:
        self.width, self.height, self.yaw, self.follow, self.fill = (
            width, height, yaw_deg, follow, fill)
        self._centre: np.ndarray | None = None
        self._distance = 0.0

    def update(self, vertices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The camera ``(R, t, K)`` for this frame's people."""
        R = _yaw(self.yaw)
        pts = _points(vertices)
        centre = 0.5 * (pts.min(0) + pts.max(0))  # the point the camera turns about
        a = self.follow
        self._centre = centre if self._centre is None else (1 - a) * self._centre + a * centre
        needed, K = _framing(pts, self._centre, R, self.width, self.height, self.fill)
        # back off at once when people would leave the view, come closer slowly
        self._distance = needed if self._distance == 0.0 else max(
            needed, (1 - a) * self._distance + a * needed)
        return R, -R @ self._centre + np.array([0.0, 0.0, self._distance]), K


def render_side_view(result: FrameResult, width: int, height: int, yaw_deg: float = 90.0,
                     camera: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                     backend: str = "auto") -> np.ndarray:
    """The people of ``result`` seen by a second virtual camera (:func:`side_camera`, or the
    given ``camera``, e.g. one kept fixed for a whole video), in their track colours on a
    plain background: depth errors that the input view hides show here."""
    from furpe.io.outputs import person_meshes
    from furpe.render import render

    background = np.empty((height, width, 3), np.uint8)
    background[:] = VIEW_BACKGROUND
    meshes = person_meshes(result)
    if not meshes:
        return background
    R, t, K = camera if camera is not None else side_camera(
        [m.vertices for m in meshes], width, height, yaw_deg)
    for m in meshes:
        m.vertices = np.asarray(m.vertices, np.float64) @ R.T + t
    return render(meshes, K, width, height, background=background, backend=backend).color


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images of the same height next to each other."""
    return np.concatenate(images, axis=1)


def contact_sheet(images: Sequence[tuple[str, np.ndarray]], columns: int = 4,
                  tile: int = 320) -> np.ndarray:
    """A grid of ``(caption, RGB image)`` tiles, each scaled to fit ``tile`` x ``tile``
    (aspect kept) with its caption under it; white between tiles."""
    import cv2

    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    caption_h, pad = 22, 6
    cell_w, cell_h = tile + 2 * pad, tile + caption_h + 2 * pad
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for k, (caption, img) in enumerate(images):
        h, w = img.shape[:2]
        s = tile / max(h, w)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA)
        r, c = divmod(k, columns)
        y0 = r * cell_h + pad + (tile - small.shape[0]) // 2
        x0 = c * cell_w + pad + (tile - small.shape[1]) // 2
        sheet[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        text = caption if len(caption) <= 40 else caption[:37] + "..."
        cv2.putText(sheet, text, (c * cell_w + pad, r * cell_h + pad + tile + 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return sheet
