"""Animated, skinned glTF 2.0 binaries (``.glb``) of a :class:`~furpe.export.rig.Rig`.

One file holds one person (track): the mesh at the track's shape, the skeleton as a node
hierarchy bound by inverse bind matrices, every skinning influence as ``JOINTS_n`` /
``WEIGHTS_n`` sets of four, the facial actions (or expressions) as morph targets named in
the mesh's ``extras.targetNames``, and one animation with each frame's bone rotations
(quaternions kept on one hemisphere from frame to frame), the root's translation (and that of
any bone whose offset from its parent changes) and the morph weights, keyed at the frames'
timestamps with linear interpolation.

Axes and units are glTF's: y up, metres, the person facing +z at rest. The scene's world is
the result's camera frame turned to y up (``world = (x, -y, -z)`` of the camera frame, see
:data:`furpe.export.rig.WORLD_FROM_CAMERA`): a glTF camera at the origin, looking down -z,
sees each frame as the video did (up to the intrinsics).

Morph targets are written as sparse accessors (only the vertices a target moves), which
keeps the 52 facial actions of Anny under 2 MB. See docs/export.md.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import furpe
from furpe.core.files import atomic_write
from furpe.export.rig import Motion, Rig

#: Below this change (metres) a bone's offset from its parent counts as constant (no
#: translation channel).
_TRANSLATION_TOLERANCE = 1e-5

# glTF enums
_FLOAT, _UBYTE, _USHORT, _UINT = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations (nearly orthonormal) to unit quaternions (..., 4) in glTF's
    (x, y, z, w) order."""
    from scipy.spatial.transform import Rotation

    flat = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    return Rotation.from_matrix(flat).as_quat().reshape(R.shape[:-2] + (4,))


def continuous_quaternions(q: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Flip the signs of (N, ..., 4) quaternions so that each is on the hemisphere of the one
    before it (frame 0: of ``reference`` (..., 4) when given): the same rotations, and linear
    interpolation between frames then takes the short way."""
    q = np.array(q, dtype=np.float64, copy=True)
    prev = reference
    for f in range(q.shape[0]):
        if prev is not None:
            flip = (q[f] * prev).sum(-1) < 0
            q[f][flip] *= -1
        prev = q[f]
    return q


def local_matrices(bones: np.ndarray, parents: tuple[int, ...]) -> np.ndarray:
    """(..., J, 4, 4) bone matrices relative to their parents (the root: as given)."""
    out = np.array(bones, dtype=np.float64, copy=True)
    for j, p in enumerate(parents):
        if p >= 0:
            out[..., j, :, :] = np.linalg.inv(bones[..., p, :, :]) @ bones[..., j, :, :]
    return out


class _Blob:
    """The binary buffer: 4-byte aligned views and their accessors."""

    def __init__(self, gltf: Any) -> None:
        self.gltf = gltf
        self.data = bytearray()

    def view(self, array: np.ndarray, target: int | None = None) -> int:
        import pygltflib

        while len(self.data) % 4:
            self.data.append(0)
        raw = np.ascontiguousarray(array).tobytes()
        self.gltf.bufferViews.append(pygltflib.BufferView(
            buffer=0, byteOffset=len(self.data), byteLength=len(raw), target=target))
        self.data.extend(raw)
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array: np.ndarray, kind: str, *, target: int | None = None,
                 bounds: bool = False, name: str | None = None) -> int:
        """An accessor over a new view of ``array`` ((count, n) or (count,)); ``bounds``
        writes min and max (required for positions and animation inputs)."""
        import pygltflib

        arr = np.ascontiguousarray(array)
        component = {np.dtype("float32"): _FLOAT, np.dtype("uint8"): _UBYTE,
                     np.dtype("uint16"): _USHORT, np.dtype("uint32"): _UINT}[arr.dtype]
        flat = arr.reshape(arr.shape[0], -1)
        acc = pygltflib.Accessor(bufferView=self.view(arr, target), componentType=component,
                                 count=int(arr.shape[0]), type=kind, name=name)
        if bounds:
            acc.min = [float(v) for v in flat.min(0)]
            acc.max = [float(v) for v in flat.max(0)]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def sparse_vec3(self, dense: np.ndarray, name: str | None = None) -> int:
        """A VEC3 float accessor of (V, 3) ``dense`` values stored sparsely: only the rows
        that are not zero (an all-zero target has no data at all: glTF reads zeros)."""
        import pygltflib

        values = np.ascontiguousarray(dense, dtype=np.float32)
        rows = np.flatnonzero(np.any(values != 0, axis=1))
        acc = pygltflib.Accessor(componentType=_FLOAT, count=int(values.shape[0]), type="VEC3",
                                 name=name, min=[float(v) for v in values.min(0)],
                                 max=[float(v) for v in values.max(0)])
        acc.bufferView = None
        acc.byteOffset = None
        if len(rows):
            index_type = np.uint16 if values.shape[0] <= 65535 else np.uint32
            acc.sparse = pygltflib.Sparse(
                count=int(len(rows)),
                indices=pygltflib.AccessorSparseIndices(
                    bufferView=self.view(rows.astype(index_type)), byteOffset=0,
                    componentType=_USHORT if index_type is np.uint16 else _UINT),
                values=pygltflib.AccessorSparseValues(
                    bufferView=self.view(values[rows]), byteOffset=0))
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1


def _normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (a vertex on no triangle gets +y)."""
    v = vertices[triangles]
    face_n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, triangles[:, k], face_n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-20, n / np.maximum(length, 1e-30), [0.0, 1.0, 0.0])
    return n.astype(np.float32)


def _weight_sets(rig: Rig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """JOINTS_n and WEIGHTS_n arrays (V, 4) each; float32 weights summing to 1."""
    k = rig.num_influences
    sets = -(-k // 4)
    joints = np.zeros((len(rig.vertices), 4 * sets), dtype=np.int64)
    weights = np.zeros((len(rig.vertices), 4 * sets), dtype=np.float64)
    joints[:, :k] = rig.skin_joints
    weights[:, :k] = rig.skin_weights / rig.skin_weights.sum(1, keepdims=True)
    w32 = weights.astype(np.float32)
    # Put the float32 rounding of the sum on the largest weight (the first).
    w32[:, 0] = np.float32(1.0) - w32[:, 1:].sum(1, dtype=np.float32)
    joints[w32 == 0] = 0
    jtype = np.uint8 if len(rig.bone_names) <= 256 else np.uint16
    return ([joints[:, 4 * s:4 * s + 4].astype(jtype) for s in range(sets)],
            [w32[:, 4 * s:4 * s + 4] for s in range(sets)])


def _mat4_column_major(m: np.ndarray) -> np.ndarray:
    out = np.array(m, dtype=np.float64, copy=True)
    out[..., 3, :] = (0.0, 0.0, 0.0, 1.0)
    return np.ascontiguousarray(np.swapaxes(out, -1, -2)).astype(np.float32).reshape(-1, 16)


def build_gltf(rig: Rig, motion: Motion, *, name: str = "person",
               max_influences: int | None = None,
               extras: Mapping[str, Any] | None = None) -> Any:
    """The :class:`pygltflib.GLTF2` document (with its binary blob set) of ``rig`` animated
    by ``motion``; ``max_influences`` keeps each vertex's largest weights (renormalised)."""
    import pygltflib

    rig = rig.with_max_influences(max_influences)
    J = len(rig.bone_names)
    gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0",
                                                 generator=f"furpe {furpe.__version__}"))
    blob = _Blob(gltf)

    # --- mesh -------------------------------------------------------------------------
    attributes: dict[str, int] = {
        "POSITION": blob.accessor(rig.vertices.astype(np.float32), "VEC3",
                                  target=_ARRAY_BUFFER, bounds=True),
        "NORMAL": blob.accessor(_normals(rig.vertices, rig.triangles), "VEC3",
                                target=_ARRAY_BUFFER),
    }
    joint_sets, weight_sets = _weight_sets(rig)
    for s, (js, ws) in enumerate(zip(joint_sets, weight_sets)):
        attributes[f"JOINTS_{s}"] = blob.accessor(js, "VEC4", target=_ARRAY_BUFFER)
        attributes[f"WEIGHTS_{s}"] = blob.accessor(ws, "VEC4", target=_ARRAY_BUFFER)
    index_type = np.uint16 if len(rig.vertices) <= 65535 else np.uint32
    indices = blob.accessor(rig.triangles.reshape(-1).astype(index_type), "SCALAR",
                            target=_ELEMENT_ARRAY_BUFFER)
    targets = [pygltflib.Attributes(POSITION=blob.sparse_vec3(t, name=n))
               for n, t in zip(rig.morph_names, rig.morph_targets)]
    gltf.materials.append(pygltflib.Material(
        name="skin", pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
            baseColorFactor=[0.8, 0.68, 0.6, 1.0], metallicFactor=0.0, roughnessFactor=0.7)))
    primitive = pygltflib.Primitive(attributes=pygltflib.Attributes(**attributes),
                                    indices=indices, material=0, mode=4)
    mesh = pygltflib.Mesh(name=name, primitives=[primitive])
    if targets:
        primitive.targets = targets
        mesh.weights = [0.0] * len(targets)
        mesh.extras = {"targetNames": list(rig.morph_names)}
    gltf.meshes.append(mesh)

    # --- skeleton: node 0 is the mesh, node 1 + j is bone j ------------------------------
    rest_local = local_matrices(rig.rest_bones, rig.parents)
    rest_quat = rotation_to_quaternion(rest_local[:, :3, :3])
    gltf.nodes.append(pygltflib.Node(name=name, mesh=0, skin=0))
    for j, bone in enumerate(rig.bone_names):
        children = [1 + c for c, p in enumerate(rig.parents) if p == j]
        gltf.nodes.append(pygltflib.Node(
            name=bone, children=children,
            translation=[float(v) for v in rest_local[j, :3, 3]],
            rotation=[float(v) for v in rest_quat[j]]))
    roots = [1 + j for j, p in enumerate(rig.parents) if p < 0]
    ibm = blob.accessor(_mat4_column_major(np.linalg.inv(rig.rest_bones)), "MAT4")
    gltf.skins.append(pygltflib.Skin(name=f"{name}_skeleton", inverseBindMatrices=ibm,
                                     joints=[1 + j for j in range(J)],
                                     skeleton=roots[0] if len(roots) == 1 else None))
    gltf.scenes.append(pygltflib.Scene(name=name, nodes=[0, *roots]))
    gltf.scene = 0

    # --- animation ---------------------------------------------------------------------
    local = local_matrices(motion.bones, rig.parents)  # (N, J, 4, 4)
    quats = continuous_quaternions(rotation_to_quaternion(local[..., :3, :3]), rest_quat)
    times = blob.accessor(motion.times.astype(np.float32), "SCALAR", bounds=True)
    anim = pygltflib.Animation(name=name)

    def channel(node: int, path: str, values: np.ndarray, kind: str) -> None:
        output = blob.accessor(values.astype(np.float32), kind)
        anim.samplers.append(pygltflib.AnimationSampler(input=times, output=output,
                                                        interpolation="LINEAR"))
        anim.channels.append(pygltflib.AnimationChannel(
            sampler=len(anim.samplers) - 1,
            target=pygltflib.AnimationChannelTarget(node=node, path=path)))

    for j in range(J):
        offset = local[:, j, :3, 3]
        if rig.parents[j] < 0 or np.abs(offset - rest_local[j, :3, 3]).max() > \
                _TRANSLATION_TOLERANCE:
            channel(1 + j, "translation", offset, "VEC3")
        q = quats[:, j] / np.linalg.norm(quats[:, j], axis=-1, keepdims=True)
        channel(1 + j, "rotation", q, "VEC4")
    if targets:
        channel(0, "weights", motion.morph_weights.reshape(-1), "SCALAR")
    gltf.animations.append(anim)

    if extras:
        gltf.scenes[0].extras = {"furpe": dict(extras)}
    gltf.buffers.append(pygltflib.Buffer(byteLength=len(blob.data)))
    gltf.set_binary_blob(bytes(blob.data))
    return gltf


def write_glb(path: str | os.PathLike[str], rig: Rig, motion: Motion, *, name: str = "person",
              max_influences: int | None = None,
              extras: Mapping[str, Any] | None = None) -> Path:
    """Write ``rig`` animated by ``motion`` as a binary glTF file, atomically (a temporary
    file in the same folder, renamed when complete). See :func:`build_gltf`."""
    gltf = build_gltf(rig, motion, name=name, max_influences=max_influences, extras=extras)
    data = b"".join(gltf.save_to_bytes())
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)
