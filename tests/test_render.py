"""Tests for furpe.render: geometry of the projection, depth, ids, compositing, backends."""
from __future__ import annotations

import numpy as np
import pytest

import furpe.render as render_mod
from furpe.core.errors import FurpeError
from furpe.render import NEAR, Mesh, available_backends, overlay, render

HAS_EGL = "egl" in available_backends()
NO_EGL = "no EGL OpenGL context could be created here (moderngl/libEGL/Mesa missing)"
needs_egl = [pytest.mark.egl, pytest.mark.skipif(not HAS_EGL, reason=NO_EGL)]
BACKENDS = ["software", pytest.param("egl", marks=needs_egl)]


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def icosphere(radius: float, center, subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosahedron split `subdivisions` times, pushed onto a sphere."""
    t = (1.0 + 5 ** 0.5) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
                  [8, 6, 7], [9, 8, 1]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = v[unique].mean(axis=1)
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = inverse.reshape(3, -1).T + len(v)  # midpoints of edges 01, 12, 20
        a, b, c = f.T
        f = np.concatenate([np.stack([a, m[:, 0], m[:, 2]], 1), np.stack([b, m[:, 1], m[:, 0]], 1),
                            np.stack([c, m[:, 2], m[:, 1]], 1), m])
        v = np.concatenate([v, mid])
    return v * radius + np.asarray(center, float), f


def box(center, size) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return corners * np.asarray(size, float) + np.asarray(center, float), faces


def sphere_mesh(radius: float, center, **kwargs) -> Mesh:
    v, f = icosphere(radius, center)
    return Mesh(v, f, **kwargs)


def rectangle(u0: float, u1: float, v0: float, v1: float, z: float, K: np.ndarray) -> Mesh:
    """A camera-facing rectangle whose corners project exactly to the pixel box [u0,u1]x[v0,v1]."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    uv = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    v = np.stack([(uv[:, 0] - cx) * z / fx, (uv[:, 1] - cy) * z / fy, np.full(4, z)], axis=1)
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("backend", BACKENDS)
def test_sphere_projects_to_expected_disc(backend: str) -> None:
    r, d = 0.5, 2.5
    fx, fy, cx, cy = 400.0, 440.0, 170.0, 121.0
    res = render([sphere_mesh(r, (0, 0, d))], intrinsics(fx, fy, cx, cy), 320, 256, backend=backend)
    # A sphere centred on the axis has a circular silhouette of angular radius asin(r/d).
    tan = r / np.sqrt(d * d - r * r)
    rows, cols = np.nonzero(res.mask)
    radius_x = np.sqrt(res.mask.sum() / np.pi * (fx / fy))
    assert abs(radius_x - fx * tan) < 1.0
    assert abs((cols.max() - cols.min()) / 2 - fx * tan) < 1.5
    assert abs((rows.max() - rows.min()) / 2 - fy * tan) < 1.5
    # Pixel centres sit at integer coordinates: the disc is centred on (cx, cy) exactly.
    assert abs(cols.mean() - cx) < 0.1 and abs(rows.mean() - cy) < 0.1
    assert res.depth[int(cy), int(cx)] == pytest.approx(d - r, abs=2e-3)
    assert res.depth[res.mask].min() == pytest.approx(d - r, abs=2e-3)
    assert np.isinf(res.depth[~res.mask]).all()
    assert (res.mesh_id[res.mask] == 0).all() and (res.mesh_id[~res.mask] == -1).all()
    assert (res.face_id[~res.mask] == -1).all() and res.face_id[res.mask].min() >= 0
    assert (res.color[~res.mask] == 0).all() and (res.color[res.mask].max(axis=1) > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_centres_are_integer_coordinates(backend: str) -> None:
    K = intrinsics(100.0, 120.0, 16.0, 12.0)
    res = render([rectangle(10.25, 20.25, 5.25, 9.25, 2.0, K)], K, 32, 24, backend=backend)
    expected = np.zeros((24, 32), bool)
    expected[6:10, 11:21] = True  # centres 11..20 and 6..9 lie inside; half-pixel centres would not
    np.testing.assert_array_equal(res.mask, expected)
    np.testing.assert_allclose(res.depth[expected], 2.0, atol=1e-5)
    assert set(np.unique(res.face_id[expected])) == {0, 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_plane_crossing_near_plane_is_clipped_with_exact_depth(backend: str) -> None:
    # A floor y = h running from behind the camera to z = 50: row v shows depth fy*h/(v - cy).
    h, fy, cy = 0.5, 100.0, 31.5
    K = intrinsics(100.0, fy, 31.5, cy)
    v = np.array([[-50, h, -1.0], [50, h, -1.0], [50, h, 50.0], [-50, h, 50.0]])
    res = render([Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))], K, 64, 64, backend=backend)
    rows = np.arange(64)
    horizon = cy + fy * h / 50.0
    np.testing.assert_array_equal(res.mask.any(axis=1), rows > horizon + 0.01)
    assert res.mask[rows > horizon + 0.01].all()
    covered = rows[rows > horizon + 0.01]
    expected = fy * h / (covered - cy)
    np.testing.assert_allclose(res.depth[covered], np.repeat(expected[:, None], 64, 1), rtol=1e-4)
    assert res.depth[res.mask].min() >= NEAR


@pytest.mark.parametrize("backend", BACKENDS)
def test_vertex_colors_interpolate_perspective_correctly(backend: str) -> None:
    # A floor from z = 1 to z = 5 whose red channel is (z - 1) / 4, lit head-on (shade = 1):
    # every covered pixel must show the red of the depth it sees.
    h = 0.5
    K = intrinsics(100.0, 100.0, 31.5, 31.5)
    v = np.array([[-9, h, 1.0], [9, h, 1.0], [9, h, 5.0], [-9, h, 5.0]])
    red = (v[:, 2] - 1.0) / 4.0
    colors = np.stack([red, np.zeros(4), np.full(4, 0.6)], axis=1)
    mesh = Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), vertex_colors=colors)
    res = render([mesh], K, 64, 64, backend=backend, light_dir=(0, -1, 0))
    assert res.mask.sum() > 500
    expected = (res.depth[res.mask] - 1.0) / 4.0 * 255.0
    np.testing.assert_allclose(res.color[res.mask][:, 0], expected, atol=1.0)
    assert (res.color[res.mask][:, 2] == 153).all()


# ---------------------------------------------------------------- ids and occlusion


@pytest.mark.parametrize("backend", BACKENDS)
def test_mesh_id_and_occlusion(backend: str) -> None:
    K = intrinsics(300.0, 300.0, 127.5, 95.5)
    far = sphere_mesh(0.8, (0.2, 0.0, 3.0))
    near = sphere_mesh(0.3, (-0.2, 0.1, 1.5), color=(0.9, 0.2, 0.2))
    both = render([far, near], K, 256, 192, backend=backend)
    far_only = render([far], K, 256, 192, backend=backend)
    near_only = render([near], K, 256, 192, backend=backend)

    overlap = far_only.mask & near_only.mask
    assert overlap.sum() > 1000 and (far_only.mask & ~near_only.mask).sum() > 1000
    np.testing.assert_array_equal(both.mask, far_only.mask | near_only.mask)
    assert (both.mesh_id[near_only.mask] == 1).all()          # the nearer one wins
    assert (both.mesh_id[far_only.mask & ~near_only.mask] == 0).all()
    assert (both.mesh_id[~both.mask] == -1).all()
    np.testing.assert_array_equal(both.depth[near_only.mask], near_only.depth[near_only.mask])
    np.testing.assert_array_equal(both.face_id[near_only.mask], near_only.face_id[near_only.mask])
    far_visible = far_only.mask & ~near_only.mask
    np.testing.assert_array_equal(both.face_id[far_visible], far_only.face_id[far_visible])
    assert (near_only.depth[overlap] < far_only.depth[overlap]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene_and_empty_mesh(backend: str) -> None:
    K = intrinsics(100.0, 100.0, 15.5, 11.5)
    for meshes in ([], [Mesh(np.zeros((0, 3)), np.zeros((0, 3), int))]):
        res = render(meshes, K, 32, 24, backend=backend)
        assert res.color.shape == (24, 32, 3) and res.color.dtype == np.uint8
        assert not res.mask.any() and np.isinf(res.depth).all()
        assert (res.mesh_id == -1).all() and (res.face_id == -1).all()
    # An empty mesh before a real one keeps the list index of the real one.
    res = render([Mesh(np.zeros((0, 3)), np.zeros((0, 3), int)), rectangle(2.3, 20.3, 2.3, 20.3, 1.0, K)],
                 K, 32, 24, backend=backend)
    assert set(np.unique(res.mesh_id)) == {-1, 1}


# ---------------------------------------------------------------- shading and compositing


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_sided_lambert_shading(backend: str) -> None:
    K = intrinsics(100.0, 100.0, 15.5, 15.5)
    front = rectangle(4, 27, 4, 27, 1.0, K)
    back = Mesh(front.vertices, front.faces[:, ::-1].copy())  # opposite winding
    red = np.tile([1.0, 0.0, 0.0], (4, 1))
    base = np.array(front.color)
    for mesh in (front, back):
        lit = render([mesh], K, 32, 32, backend=backend, light_dir=(0, 0, -1))
        np.testing.assert_array_equal(lit.color[16, 16], np.rint(base * 255))
        dark = render([mesh], K, 32, 32, backend=backend, light_dir=(0, 0, 1))
        np.testing.assert_array_equal(dark.color[16, 16], np.rint(base * 0.35 * 255))
        tilted = render([mesh], K, 32, 32, backend=backend, light_dir=(1, 0, -1))
        np.testing.assert_allclose(tilted.color[16, 16], base * (0.35 + 0.65 / 2 ** 0.5) * 255, atol=1)
    colored = Mesh(front.vertices, front.faces, vertex_colors=red)
    res = render([colored], K, 32, 32, backend=backend, light_dir=(0, 0, -1))
    np.testing.assert_array_equal(res.color[res.mask], np.tile([255, 0, 0], (res.mask.sum(), 1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ambient_and_diffuse_intensity(backend: str) -> None:
    K = intrinsics(100.0, 100.0, 15.5, 15.5)
    mesh = rectangle(4, 27, 4, 27, 1.0, K)
    base = np.array(mesh.color)
    res = render([mesh], K, 32, 32, backend=backend, light_dir=(1, 0, -1), ambient=0.2,
                 diffuse=0.5)
    np.testing.assert_allclose(res.color[16, 16], base * (0.2 + 0.5 / 2 ** 0.5) * 255, atol=1)
    dark = render([mesh], K, 32, 32, backend=backend, light_dir=(0, 0, 1), ambient=0.1,
                  diffuse=0.9)
    np.testing.assert_allclose(dark.color[16, 16], base * 0.1 * 255, atol=1)
    # the defaults come back on the next call (the GL program keeps no stale uniforms)
    default = render([mesh], K, 32, 32, backend=backend, light_dir=(0, 0, -1))
    np.testing.assert_array_equal(default.color[16, 16], np.rint(base * 255))
    bright = render([mesh], K, 32, 32, backend=backend, light_dir=(0, 0, -1), ambient=0.5,
                    diffuse=1.0)
    np.testing.assert_array_equal(bright.color[16, 16], np.rint(np.minimum(base * 1.5, 1) * 255))
    with pytest.raises(FurpeError, match="ambient and diffuse"):
        render([mesh], K, 32, 32, backend=backend, ambient=-0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_background_is_used(backend: str) -> None:
    K = intrinsics(200.0, 200.0, 63.5, 47.5)
    bg = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    meshes = [sphere_mesh(0.3, (0, 0, 2.0))]
    plain = render(meshes, K, 128, 96, backend=backend)
    res = render(meshes, K, 128, 96, background=bg, backend=backend)
    assert 0 < res.mask.sum() < res.mask.size
    np.testing.assert_array_equal(res.color[~res.mask], bg[~res.mask])
    np.testing.assert_array_equal(res.color[res.mask], plain.color[res.mask])


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlay_blends_only_covered_pixels(backend: str) -> None:
    K = intrinsics(200.0, 200.0, 63.5, 47.5)
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    meshes = [sphere_mesh(0.3, (0.1, 0, 2.0))]
    res = render(meshes, K, 128, 96, backend=backend)
    out = overlay(image, meshes, K, alpha=0.7, backend=backend)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[~res.mask], image[~res.mask])
    expected = 0.7 * res.color[res.mask].astype(float) + 0.3 * image[res.mask]
    np.testing.assert_allclose(out[res.mask], expected, atol=0.51)
    assert (out[res.mask] != image[res.mask]).any()
    np.testing.assert_array_equal(overlay(image, meshes, K, alpha=0.0, backend=backend), image)


# ---------------------------------------------------------------- backends and errors


def test_available_backends() -> None:
    backends = available_backends()
    assert "software" in backends and set(backends) <= {"egl", "software"}
    assert available_backends() == backends  # cached probe


def test_bad_backend_name_raises() -> None:
    K = intrinsics(100.0, 100.0, 15.5, 11.5)
    with pytest.raises(FurpeError, match="unknown render backend 'vulkan'"):
        render([], K, 32, 24, backend="vulkan")
    with pytest.raises(FurpeError, match="unknown render backend"):
        overlay(np.zeros((24, 32, 3), np.uint8), [], K, backend="opengl")


def test_egl_requested_but_unavailable_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod, "_egl_available", False)
    K = intrinsics(100.0, 100.0, 15.5, 11.5)
    assert available_backends() == ["software"]
    with pytest.raises(FurpeError, match="'egl' is not available"):
        render([], K, 32, 24, backend="egl")
    res = render([rectangle(2.3, 20.3, 2.3, 20.3, 1.0, K)], K, 32, 24)  # auto falls back to software
    assert res.mask.sum() == 18 * 18


def test_bad_inputs_raise() -> None:
    K = intrinsics(100.0, 100.0, 15.5, 11.5)
    good = rectangle(2.3, 20.3, 2.3, 20.3, 1.0, K)
    with pytest.raises(FurpeError, match="face indices"):
        render([Mesh(good.vertices, good.faces + 2)], K, 32, 24, backend="software")
    with pytest.raises(FurpeError, match="background"):
        render([good], K, 32, 24, background=np.zeros((24, 31, 3), np.uint8), backend="software")
    with pytest.raises(FurpeError, match="K must be"):
        render([good], np.eye(2), 32, 24, backend="software")
    with pytest.raises(FurpeError, match="light_dir"):
        render([good], K, 32, 24, backend="software", light_dir=(0, 0, 0))


@pytest.mark.egl
@pytest.mark.skipif(not HAS_EGL, reason=NO_EGL)
def test_egl_and_software_agree() -> None:
    K = intrinsics(520.0, 500.0, 250.0, 262.0)
    sv, sf = icosphere(0.45, (0.1, -0.05, 2.2), subdivisions=5)
    bv, bf = box((-0.35, 0.25, 1.8), (0.4, 0.3, 0.5))
    rng = np.random.default_rng(2)
    meshes = [Mesh(sv, sf, vertex_colors=rng.uniform(0.2, 1.0, sv.shape)),
              Mesh(bv, bf, color=(0.8, 0.6, 0.3))]
    bg = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    gl = render(meshes, K, 512, 512, background=bg, backend="egl")
    sw = render(meshes, K, 512, 512, background=bg, backend="software")
    both = gl.mask & sw.mask
    assert both.sum() / (gl.mask | sw.mask).sum() > 0.97
    assert np.median(np.abs(gl.depth[both] - sw.depth[both])) < 1e-3
    assert (gl.mesh_id[both] == sw.mesh_id[both]).mean() > 0.99
    assert (gl.face_id[both] == sw.face_id[both]).mean() > 0.9
    assert np.abs(gl.color[both].astype(int) - sw.color[both]).mean() < 2.0
    np.testing.assert_array_equal(gl.color[~(gl.mask | sw.mask)], bg[~(gl.mask | sw.mask)])


@pytest.mark.egl
@pytest.mark.skipif(not HAS_EGL, reason=NO_EGL)
def test_egl_reuses_context_across_sizes() -> None:
    from furpe.render import gl

    K = intrinsics(100.0, 100.0, 15.5, 11.5)
    meshes = [rectangle(2.3, 20.3, 2.3, 20.3, 1.0, K)]
    first = render(meshes, K, 32, 24, backend="egl")
    ctx = gl.get_context()
    for size in [(40, 30), (32, 24), (17, 9), (64, 48), (50, 50), (32, 24)]:
        res = render(meshes, K, *size, backend="egl")
        assert res.mask.shape == (size[1], size[0])
    assert gl.get_context() is ctx
    np.testing.assert_array_equal(res.color, first.color)
    np.testing.assert_array_equal(res.face_id, first.face_id)
