"""Headless mesh rendering: an OpenGL (moderngl/EGL) backend and a pure NumPy fallback.

Conventions shared by both backends:

* Meshes are given in the camera frame, in metres: x right, y down, z forward (away from
  the camera). Nothing in front of ``NEAR`` or beyond ``FAR`` is drawn; triangles crossing
  the near plane are clipped.
* ``K`` is a 3x3 pinhole matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``. A camera point
  ``(x, y, z)`` lands at ``u = (fx*x + s*y)/z + cx``, ``v = fy*y/z + cy``, and **pixel centres
  lie at integer coordinates** (the OpenCV convention): pixel ``[row j, column i]`` is
  covered when the point ``(u, v) = (i, j)`` is inside a triangle. A centred camera on a
  W x H image therefore has ``cx = (W - 1)/2``, ``cy = (H - 1)/2``.
* Shading is two-sided Lambertian with smooth per-vertex normals:
  ``rgb = base * (ambient + diffuse * max(0, n . l))``, where ``n`` is flipped to face the
  camera and ``l`` is the unit direction from the surface towards the light (camera frame);
  ``ambient`` and ``diffuse`` default to :data:`AMBIENT` and :data:`DIFFUSE` (the light's
  intensity), the result is clipped to [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from furpe.core.errors import FurpeError

__all__ = ["Mesh", "RenderResult", "available_backends", "render", "overlay",
           "vertex_normals", "NEAR", "FAR", "AMBIENT", "DIFFUSE"]

NEAR = 0.01
"""Near clipping plane, metres."""
FAR = 100.0
"""Far clipping plane, metres."""
AMBIENT = 0.35
"""Ambient share of the shading."""
DIFFUSE = 0.65
"""Diffuse (Lambertian) share of the shading."""

BACKENDS = ("egl", "software")


@dataclass
class Mesh:
    """A triangle mesh in the camera frame (metres; x right, y down, z forward)."""

    vertices: np.ndarray
    """(V, 3) float vertex positions."""
    faces: np.ndarray
    """(F, 3) int triangle vertex indices."""
    color: tuple[float, float, float] = (0.65, 0.74, 0.86)
    """RGB in [0, 1], used when ``vertex_colors`` is None."""
    vertex_colors: np.ndarray | None = None
    """Optional (V, 3) float RGB in [0, 1]."""


@dataclass
class RenderResult:
    """The rendered layers; every array is (H, W[, 3])."""

    color: np.ndarray
    """(H, W, 3) uint8 RGB: shaded meshes over the background (black when no background)."""
    mask: np.ndarray
    """(H, W) bool: the pixel is covered by some mesh."""
    depth: np.ndarray
    """(H, W) float32 camera z in metres of the visible surface, ``np.inf`` where empty."""
    mesh_id: np.ndarray
    """(H, W) int32 index of the visible mesh in the input list, -1 where empty."""
    face_id: np.ndarray
    """(H, W) int32 index of the visible triangle within its mesh, -1 where empty."""


@dataclass
class PreparedMesh:
    """A validated mesh as the backends consume it (float32 / int32, C-contiguous)."""

    positions: np.ndarray  # (V, 3) float32
    normals: np.ndarray    # (V, 3) float32, unit length (zero for unused vertices)
    colors: np.ndarray     # (V, 3) float32 in [0, 1]
    faces: np.ndarray      # (F, 3) int32


@dataclass
class Frame:
    """Backend output before the background is composited."""

    color: np.ndarray    # (H, W, 3) uint8, black where empty
    mask: np.ndarray     # (H, W) bool
    depth: np.ndarray    # (H, W) float32, inf where empty
    mesh_id: np.ndarray  # (H, W) int32, -1 where empty
    face_id: np.ndarray  # (H, W) int32, -1 where empty


_egl_available: bool | None = None


def available_backends() -> list[str]:
    """Backends usable in this process: ``"egl"`` only if an EGL context can be created."""
    global _egl_available
    if _egl_available is None:
        try:
            from furpe.render import gl
            gl.get_context()
            _egl_available = True
        except Exception:  # noqa: BLE001 - any failure means "no EGL here"
            _egl_available = False
    return (["egl"] if _egl_available else []) + ["software"]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth unit vertex normals: area-weighted sum of the adjacent face normals."""
    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces, dtype=np.intp)
    corners = v[f]  # (F, 3, 3)
    face_n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    corner = f.reshape(-1)
    n = np.stack([np.bincount(corner, weights=np.repeat(face_n[:, c], 3), minlength=len(v))
                  for c in range(3)], axis=1).astype(np.float64)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0).astype(np.float32)


def _prepare(meshes: Sequence[Mesh]) -> list[PreparedMesh]:
    prepared = []
    for i, mesh in enumerate(meshes):
        v = np.asarray(mesh.vertices, dtype=np.float64)
        f = np.asarray(mesh.faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise FurpeError(f"mesh {i}: vertices must be (V, 3), got {v.shape}")
        if f.size == 0:
            f = f.reshape(0, 3)
        if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
            raise FurpeError(f"mesh {i}: faces must be an integer (F, 3) array, got {f.dtype} {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise FurpeError(f"mesh {i}: face indices must lie in [0, {len(v)})")
        if not np.isfinite(v).all():
            raise FurpeError(f"mesh {i}: vertices contain NaN or inf")
        if mesh.vertex_colors is not None:
            c = np.asarray(mesh.vertex_colors, dtype=np.float64)
            if c.shape != v.shape:
                raise FurpeError(f"mesh {i}: vertex_colors must be {v.shape}, got {c.shape}")
        else:
            c = np.broadcast_to(np.asarray(mesh.color, dtype=np.float64).reshape(1, 3), v.shape)
        prepared.append(PreparedMesh(
            positions=np.ascontiguousarray(v, dtype=np.float32),
            normals=np.ascontiguousarray(vertex_normals(v, f), dtype=np.float32),
            colors=np.ascontiguousarray(np.clip(c, 0.0, 1.0), dtype=np.float32),
            faces=np.ascontiguousarray(f, dtype=np.int32),
        ))
    return prepared


def _check_intrinsics(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise FurpeError(f"K must be a finite 3x3 intrinsics matrix, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise FurpeError("K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    return K


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return available_backends()[0]
    if backend not in BACKENDS:
        raise FurpeError(f"unknown render backend {backend!r}; choose 'auto', 'egl' or 'software'")
    if backend == "egl" and "egl" not in available_backends():
        raise FurpeError("render backend 'egl' is not available here "
                         "(no EGL/OpenGL 3.3 context could be created); use 'software'")
    return backend


def render(meshes: Sequence[Mesh], K: np.ndarray, width: int, height: int,
           background: np.ndarray | None = None, backend: str = "auto",
           light_dir: Sequence[float] = (0.3, -0.5, -1.0), ambient: float = AMBIENT,
           diffuse: float = DIFFUSE) -> RenderResult:
    """Render ``meshes`` through the pinhole ``K`` onto a ``width`` x ``height`` image.

    Pixel centres are at integer coordinates (see the module docstring). ``background`` is
    an optional (H, W, 3) uint8 RGB image shown where no mesh is. ``backend`` is ``"auto"``
    (EGL if available, else software), ``"egl"`` or ``"software"``. ``light_dir`` points
    from the surface towards the light, in the camera frame; ``ambient`` and ``diffuse``
    (non-negative) scale the ambient and the Lambertian terms of the shading.
    """
    name = _resolve_backend(backend)
    K = _check_intrinsics(K)
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise FurpeError(f"image size must be positive, got {width}x{height}")
    light = np.asarray(light_dir, dtype=np.float64).reshape(-1)
    if light.shape != (3,) or not np.isfinite(light).all() or np.linalg.norm(light) == 0:
        raise FurpeError(f"light_dir must be a non-zero 3-vector, got {light_dir!r}")
    light = light / np.linalg.norm(light)
    ambient, diffuse = float(ambient), float(diffuse)
    if not (np.isfinite(ambient) and np.isfinite(diffuse) and ambient >= 0 and diffuse >= 0):
        raise FurpeError(f"ambient and diffuse must be non-negative numbers, got {ambient}, {diffuse}")
    if background is not None:
        background = np.asarray(background)
        if background.shape != (height, width, 3):
            raise FurpeError(f"background must be ({height}, {width}, 3), got {background.shape}")
        if background.dtype != np.uint8:
            raise FurpeError(f"background must be uint8 RGB, got {background.dtype}")
    prepared = _prepare(meshes)

    if name == "egl":
        from furpe.render import gl
        frame = gl.render_frame(prepared, K, width, height, light, ambient, diffuse)
    else:
        from furpe.render import software
        frame = software.render_frame(prepared, K, width, height, light, ambient, diffuse)

    color = frame.color
    if background is not None:
        color = np.where(frame.mask[..., None], frame.color, background)
    return RenderResult(color=color, mask=frame.mask, depth=frame.depth,
                        mesh_id=frame.mesh_id, face_id=frame.face_id)


def overlay(image: np.ndarray, meshes: Sequence[Mesh], K: np.ndarray, alpha: float = 0.85,
            backend: str = "auto") -> np.ndarray:
    """Alpha-blend the shaded ``meshes`` over an (H, W, 3) uint8 RGB ``image``.

    Returns a new uint8 image; pixels no mesh covers are exactly those of ``image``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FurpeError(f"overlay needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise FurpeError(f"alpha must lie in [0, 1], got {alpha}")
    result = render(meshes, K, image.shape[1], image.shape[0], backend=backend)
    out = image.copy()
    m = result.mask
    blend = alpha * result.color[m].astype(np.float32) + (1.0 - alpha) * image[m].astype(np.float32)
    out[m] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out
