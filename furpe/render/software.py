"""Pure NumPy z-buffer rasterizer, the fallback when no OpenGL context can be had.

Triangles are clipped against the near plane, projected, and rasterized in batches: each
triangle's pixel bounding box is cut into tiles of at most ``_TILE`` x ``_TILE`` pixels, the
tiles are grouped by (power-of-two) size, and each group is tested against the three edge
functions at once. The nearest fragment per pixel wins through one ``np.minimum.at`` on a
packed (depth, triangle) key. Only the winning pixels are then interpolated (perspective
correct) and shaded per pixel, exactly as the OpenGL fragment shader does.
"""
from __future__ import annotations

import numpy as np

from furpe.render import AMBIENT, DIFFUSE, FAR, NEAR, Frame, PreparedMesh

_TILE = 64                 # largest tile side, pixels
_CHUNK = 1 << 19           # candidate pixels tested per batch
_EMPTY = np.iinfo(np.int64).max


def _gather(meshes: list[PreparedMesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-triangle corner attributes (T, 3, 9) = position, normal, colour; mesh and face ids."""
    attrs, mesh_ids, face_ids = [], [], []
    for i, m in enumerate(meshes):
        if not m.faces.size:
            continue
        per_vertex = np.concatenate([m.positions, m.normals, m.colors], axis=1).astype(np.float64)
        attrs.append(per_vertex[m.faces])
        mesh_ids.append(np.full(len(m.faces), i, dtype=np.int32))
        face_ids.append(np.arange(len(m.faces), dtype=np.int32))
    if not attrs:
        return np.zeros((0, 3, 9)), np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(attrs), np.concatenate(mesh_ids), np.concatenate(face_ids)


def _clip_near(attr: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip triangles against z = NEAR; a triangle may become 0, 1 or 2 triangles.

    ``ids`` holds one row per triangle (it follows the triangle into its pieces).
    """
    inside = attr[:, :, 2] >= NEAR
    n_in = inside.sum(axis=1)
    keep_attr, keep_ids = [attr[n_in == 3]], [ids[n_in == 3]]

    def lerp(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        t = (NEAR - p[:, 2]) / (q[:, 2] - p[:, 2])
        return p + t[:, None] * (q - p)

    for count in (1, 2):
        sel = np.nonzero(n_in == count)[0]
        if not len(sel):
            continue
        # Rotate the corners so that the odd one out (the only inside corner when count == 1,
        # the only outside one when count == 2) comes first.
        odd = np.argmax(inside[sel] if count == 1 else ~inside[sel], axis=1)
        order = (odd[:, None] + np.arange(3)[None, :]) % 3
        tri = np.take_along_axis(attr[sel], order[:, :, None], axis=1)
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        if count == 1:
            keep_attr.append(np.stack([a, lerp(a, b), lerp(a, c)], axis=1))
            keep_ids.append(ids[sel])
        else:  # a is outside: the quad b, c, c->a, b->a becomes two triangles
            ca, ba = lerp(c, a), lerp(b, a)
            keep_attr += [np.stack([b, c, ca], axis=1), np.stack([b, ca, ba], axis=1)]
            keep_ids += [ids[sel], ids[sel]]
    return np.concatenate(keep_attr), np.concatenate(keep_ids)


def _edge_coefficients(screen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge functions e_k(x, y) = A_k x + B_k y + C_k, each (T, 3); e_k is 0 on the edge
    opposite corner k. For a shared edge the two triangles get exactly opposite values."""
    p1 = screen[:, [1, 2, 0]]
    p2 = screen[:, [2, 0, 1]]
    A = p1[..., 1] - p2[..., 1]
    B = p2[..., 0] - p1[..., 0]
    C = p1[..., 0] * p2[..., 1] - p2[..., 0] * p1[..., 1]
    return A, B, C


def _tiles(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cut inclusive pixel boxes into tiles of at most _TILE x _TILE: (tri, x0, y0, x1, y1)."""
    nx = (x1 - x0) // _TILE + 1
    ny = (y1 - y0) // _TILE + 1
    count = nx * ny
    tri = np.repeat(np.arange(len(x0)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    tx, ty = k % nx[tri], k // nx[tri]
    tx0, ty0 = x0[tri] + tx * _TILE, y0[tri] + ty * _TILE
    return tri, tx0, ty0, np.minimum(tx0 + _TILE - 1, x1[tri]), np.minimum(ty0 + _TILE - 1, y1[tri])


def _rasterize(screen: np.ndarray, inv_z: np.ndarray, width: int, height: int) -> np.ndarray:
    """Z-buffer over all triangles; returns (H*W,) packed keys (float32 depth bits << 32 | tri)."""
    buffer = np.full(width * height, _EMPTY, dtype=np.int64)
    A, B, C = _edge_coefficients(screen)
    area = A[:, 0] * screen[:, 0, 0] + B[:, 0] * screen[:, 0, 1] + C[:, 0]  # e_0 at corner 0
    x0 = np.maximum(np.ceil(screen[..., 0].min(axis=1)), 0)
    x1 = np.minimum(np.floor(screen[..., 0].max(axis=1)), width - 1)
    y0 = np.maximum(np.ceil(screen[..., 1].min(axis=1)), 0)
    y1 = np.minimum(np.floor(screen[..., 1].max(axis=1)), height - 1)
    live = np.nonzero((x1 >= x0) & (y1 >= y0) & (np.abs(area) > 1e-12))[0]
    if not len(live):
        return buffer
    # Orient every triangle so that inside means all edge functions >= 0.
    sign = np.sign(area)[:, None]
    A, B, C, area = A * sign, B * sign, C * sign, np.abs(area)

    tri, tx0, ty0, tx1, ty1 = _tiles(*(a[live].astype(np.int64) for a in (x0, y0, x1, y1)))
    tri = live[tri]
    log_w = np.ceil(np.log2(tx1 - tx0 + 1)).astype(np.int64)
    log_h = np.ceil(np.log2(ty1 - ty0 + 1)).astype(np.int64)
    group = log_w * 16 + log_h
    order = np.argsort(group, kind="stable")
    keys, starts = np.unique(group[order], return_index=True)
    ends = np.append(starts[1:], len(order))

    for key, start, end in zip(keys, starts, ends):
        bw, bh = 1 << int(key // 16), 1 << int(key % 16)
        step = max(1, _CHUNK // (bw * bh))
        dx = np.arange(bw)[None, None, :]
        dy = np.arange(bh)[None, :, None]
        for s in range(start, end, step):
            job = order[s:min(s + step, end)]
            t = tri[job]
            xs = (tx0[job][:, None, None] + dx).astype(np.float64)
            ys = (ty0[job][:, None, None] + dy).astype(np.float64)
            inside = (xs <= tx1[job][:, None, None]) & (ys <= ty1[job][:, None, None])
            edges = []
            for k in range(3):
                e = A[t, k][:, None, None] * xs + B[t, k][:, None, None] * ys + C[t, k][:, None, None]
                inside &= e >= 0.0
                edges.append(e)
            j, r, c = np.nonzero(inside)
            if not len(j):
                continue
            tj = t[j]
            w = sum(edges[k][j, r, c] * inv_z[tj, k] for k in range(3)) / area[tj]
            with np.errstate(divide="ignore"):
                z = (1.0 / w).astype(np.float32)
            ok = z <= np.float32(FAR)  # the near plane was clipped geometrically
            pixel = (ty0[job][j] + r) * width + tx0[job][j] + c
            packed = (z.view(np.int32).astype(np.int64) << 32) | tj.astype(np.int64)
            np.minimum.at(buffer, pixel[ok], packed[ok])
    return buffer


def render_frame(meshes: list[PreparedMesh], K: np.ndarray, width: int, height: int,
                 light: np.ndarray, ambient: float = AMBIENT, diffuse: float = DIFFUSE) -> Frame:
    """Render prepared meshes in NumPy; ``light`` is a unit vector towards the light,
    ``ambient`` and ``diffuse`` the two shares of the shading."""
    color = np.zeros((height, width, 3), dtype=np.uint8)
    depth = np.full((height, width), np.inf, dtype=np.float32)
    mesh_id = np.full((height, width), -1, dtype=np.int32)
    face_id = np.full((height, width), -1, dtype=np.int32)

    attr, mesh_ids, face_ids = _gather(meshes)
    attr, ids = _clip_near(attr, np.stack([mesh_ids, face_ids], axis=1))
    pos = attr[:, :, :3]
    inv_z = 1.0 / pos[..., 2]
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    screen = np.stack([(fx * pos[..., 0] + s * pos[..., 1]) * inv_z + cx,
                       fy * pos[..., 1] * inv_z + cy], axis=-1)

    buffer = _rasterize(screen, inv_z, width, height)
    pixel = np.nonzero(buffer != _EMPTY)[0]
    mask = np.zeros(width * height, dtype=bool)
    mask[pixel] = True
    if len(pixel):
        tri = (buffer[pixel] & 0xFFFFFFFF).astype(np.int64)
        px, py = (pixel % width).astype(np.float64), (pixel // width).astype(np.float64)
        A, B, C = _edge_coefficients(screen[tri])
        bary = A * px[:, None] + B * py[:, None] + C  # unnormalised, same sign for all three
        weights = bary * inv_z[tri]
        weights /= weights.sum(axis=1, keepdims=True)  # perspective-correct
        values = np.einsum("pk,pkc->pc", weights, attr[tri])
        p, n, base = values[:, :3], values[:, 3:6], values[:, 6:9]
        length = np.linalg.norm(n, axis=1, keepdims=True)
        n = np.divide(n, length, out=np.zeros_like(n), where=length > 0)
        n[np.einsum("pc,pc->p", n, p) > 0] *= -1.0  # two-sided: face the camera
        shade = ambient + diffuse * np.maximum(n @ light, 0.0)
        rgb = np.clip(base * shade[:, None], 0.0, 1.0)
        color.reshape(-1, 3)[pixel] = np.rint(rgb * 255.0).astype(np.uint8)
        depth.reshape(-1)[pixel] = (buffer[pixel] >> 32).astype(np.int32).view(np.float32)
        mesh_id.reshape(-1)[pixel] = ids[tri, 0]
        face_id.reshape(-1)[pixel] = ids[tri, 1]
    return Frame(color=color, mask=mask.reshape(height, width), depth=depth,
                 mesh_id=mesh_id, face_id=face_id)
