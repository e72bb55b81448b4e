"""OpenGL backend: moderngl on a headless EGL context (e.g. Mesa llvmpipe).

One context is created lazily per process and reused, together with its program, buffers and
one framebuffer per image size. The context belongs to the thread that created it: render
from one thread only.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from furpe.render import AMBIENT, DIFFUSE, FAR, NEAR, Frame, PreparedMesh

_VERTEX_SHADER = """
#version 330
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_nrm;
in vec3 in_col;
out vec3 v_pos;
out vec3 v_nrm;
out vec3 v_col;
void main() {
    v_pos = in_pos;
    v_nrm = in_nrm;
    v_col = in_col;
    gl_Position = proj * vec4(in_pos, 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 light;
uniform int first_face;
uniform float ambient;
uniform float diffuse;
in vec3 v_pos;
in vec3 v_nrm;
in vec3 v_col;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
layout(location = 2) out int f_face;
void main() {
    float len = length(v_nrm);
    vec3 n = len > 0.0 ? v_nrm / len : vec3(0.0);
    if (dot(n, v_pos) > 0.0) n = -n;  // two-sided: face the camera
    float shade = ambient + diffuse * max(dot(n, light), 0.0);
    f_color = vec4(clamp(v_col * shade, 0.0, 1.0), 1.0);
    f_depth = v_pos.z;
    f_face = first_face + gl_PrimitiveID;  // index into all meshes' faces
}
"""

_MAX_FRAMEBUFFERS = 4


class _Renderer:
    """The process-wide GL state: context, program, growable buffers, framebuffers by size."""

    def __init__(self) -> None:
        import moderngl

        self.ctx = moderngl.create_standalone_context(backend="egl", require=330)
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.program["ambient"].value = AMBIENT
        self.program["diffuse"].value = DIFFUSE
        self.vbo = self.ctx.buffer(reserve=4096)
        self.ibo = self.ctx.buffer(reserve=4096)
        self.vao = self.ctx.vertex_array(
            self.program, [(self.vbo, "3f 3f 3f", "in_pos", "in_nrm", "in_col")],
            index_buffer=self.ibo, index_element_size=4)
        self.framebuffers: OrderedDict[tuple[int, int], tuple[Any, ...]] = OrderedDict()

    def framebuffer(self, width: int, height: int) -> tuple[Any, ...]:
        """(fbo, color RGBA8, depth R32F, face R32I, z-buffer) for this size (LRU cache)."""
        key = (width, height)
        if key in self.framebuffers:
            self.framebuffers.move_to_end(key)
            return self.framebuffers[key]
        size = (width, height)
        color = self.ctx.texture(size, 4, dtype="f1")
        depth = self.ctx.texture(size, 1, dtype="f4")
        faces = self.ctx.texture(size, 1, dtype="i4")
        zbuffer = self.ctx.depth_renderbuffer(size)
        fbo = self.ctx.framebuffer(color_attachments=[color, depth, faces], depth_attachment=zbuffer)
        self.framebuffers[key] = (fbo, color, depth, faces, zbuffer)
        while len(self.framebuffers) > _MAX_FRAMEBUFFERS:
            for obj in self.framebuffers.popitem(last=False)[1]:
                obj.release()
        return self.framebuffers[key]

    def upload(self, meshes: list[PreparedMesh]) -> None:
        """Write all meshes, concatenated, into the shared vertex and index buffers."""
        vertex_data, index_data, base = [], [], 0
        for m in meshes:
            vertex_data.append(np.concatenate([m.positions, m.normals, m.colors], axis=1))
            index_data.append(m.faces.reshape(-1) + base)
            base += len(m.positions)
        vertices = np.ascontiguousarray(np.concatenate(vertex_data), dtype=np.float32)
        indices = np.ascontiguousarray(np.concatenate(index_data), dtype=np.int32)
        for buffer, data in ((self.vbo, vertices), (self.ibo, indices)):
            if data.nbytes > buffer.size:
                buffer.orphan(max(data.nbytes, 2 * buffer.size))
            buffer.write(data)

    def render(self, meshes: list[PreparedMesh], K: np.ndarray, width: int, height: int,
               light: np.ndarray, ambient: float = AMBIENT, diffuse: float = DIFFUSE) -> Frame:
        import moderngl

        fbo, _, depth_tex, face_tex, _ = self.framebuffer(width, height)
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        counts = np.array([len(m.faces) for m in meshes], dtype=np.int64)
        ends = np.cumsum(counts)
        if ends.size and ends[-1]:
            self.ctx.enable(moderngl.DEPTH_TEST)
            self.ctx.disable(moderngl.CULL_FACE)
            self.program["proj"].write(projection_matrix(K, width, height).T.astype("f4").tobytes())
            self.program["light"].value = tuple(float(x) for x in light)
            self.program["ambient"].value = float(ambient)
            self.program["diffuse"].value = float(diffuse)
            self.upload([m for m in meshes if len(m.faces)])
            # One draw call per mesh: gl_PrimitiveID restarts at 0 in each, so the shader adds
            # the mesh's first face to get an index into all meshes' faces.
            for first, count in zip(ends - counts, counts):
                if count:
                    self.program["first_face"].value = int(first)
                    self.vao.render(moderngl.TRIANGLES, vertices=3 * int(count), first=3 * int(first))

        # Row 0 of a GL read-back is the bottom window row; the projection maps v = 0 there,
        # so the read-back is already in image order (rows top to bottom).
        depth = np.frombuffer(depth_tex.read(), dtype=np.float32).reshape(height, width).copy()
        mask = depth > 0.0  # cleared to 0, covered pixels hold z >= NEAR
        depth[~mask] = np.inf
        # Cleared to black, so no masking needed; reading 3 components drops alpha in GL.
        color = np.frombuffer(fbo.read(components=3, attachment=0, alignment=1), dtype=np.uint8)
        face = np.frombuffer(face_tex.read(), dtype=np.int32).reshape(height, width)
        mesh_id = np.full((height, width), -1, dtype=np.int32)
        face_id = np.full((height, width), -1, dtype=np.int32)
        covered = face[mask]
        owner = np.searchsorted(ends, covered, side="right")
        mesh_id[mask] = owner
        face_id[mask] = covered - (ends - counts)[owner]
        return Frame(color=color.reshape(height, width, 3).copy(), mask=mask, depth=depth,
                     mesh_id=mesh_id, face_id=face_id)


_renderer: _Renderer | None = None


def _get_renderer() -> _Renderer:
    global _renderer
    if _renderer is None:
        _renderer = _Renderer()
    return _renderer


def get_context() -> Any:
    """The process-wide moderngl EGL context (created on first use)."""
    return _get_renderer().ctx


def projection_matrix(K: np.ndarray, width: int, height: int,
                      near: float = NEAR, far: float = FAR) -> np.ndarray:
    """4x4 OpenGL projection (column-vector convention) reproducing the pinhole ``K``.

    A camera point projecting to pixel coordinates ``(u, v)`` (integer pixel centres) lands on
    window coordinates ``(u + 0.5, v + 0.5)``. The window is *not* flipped, so window row 0
    (the bottom one in GL terms, and the first row read back) holds image row ``v = 0``.
    """
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    P = np.zeros((4, 4))
    P[0] = [2.0 * fx / width, 2.0 * s / width, 2.0 * (cx + 0.5) / width - 1.0, 0.0]
    P[1] = [0.0, 2.0 * fy / height, 2.0 * (cy + 0.5) / height - 1.0, 0.0]
    P[2] = [0.0, 0.0, (far + near) / (far - near), -2.0 * far * near / (far - near)]
    P[3] = [0.0, 0.0, 1.0, 0.0]
    return P


def render_frame(meshes: list[PreparedMesh], K: np.ndarray, width: int, height: int,
                 light: np.ndarray, ambient: float = AMBIENT, diffuse: float = DIFFUSE) -> Frame:
    """Render prepared meshes with OpenGL; ``light`` is a unit vector towards the light,
    ``ambient`` and ``diffuse`` the two shares of the shading."""
    return _get_renderer().render(meshes, K, width, height, light, ambient, diffuse)
