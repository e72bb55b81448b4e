"""Helpers of the animation-export tests: test motions, the Khronos glTF validator, and a
NumPy re-implementation of glTF skinning that reads a ``.glb`` back (independent of
:mod:`furpe.export`, so that it checks what a glTF viewer would show)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VALIDATOR_SCRIPT = REPO / "tests" / "tools" / "validate_gltf.mjs"
WORLD_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])  # restated here on purpose (glTF's y-up world)


def random_frames(model, n: int, seed: int, scale: float = 0.3) -> list[dict[str, np.ndarray]]:
    """``n`` saved-style parameter dicts: random bone rotations (normal, ``scale`` rad),
    random face and shape coefficients, the person about 3 m in front of the camera, turning
    about the vertical."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        p: dict[str, np.ndarray] = {}
        for name, blk in model.blocks.items():
            if blk.kind == "rotation":
                p[name] = rng.normal(0.0, scale, (blk.size, 3)).astype(np.float32)
            elif blk.kind == "bounded":
                p[name] = rng.uniform(blk.lower, blk.upper, blk.size).astype(np.float32)
            else:
                p[name] = rng.normal(0.0, 0.5, blk.size).astype(np.float32)
        p["global_orient"] = np.array([[0.1, 0.4 * i, 0.05]], np.float32)
        p["transl"] = np.array([0.2, 0.1, 3.0], np.float32) + rng.normal(0, 0.05, 3).astype(
            np.float32)
        frames.append(p)
    return frames


def same_shape(model, frames: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """``frames`` with every shape block set to frame 0's (so the track's median shape is
    every frame's shape)."""
    shape = [k for k, b in model.blocks.items() if b.part == "shape"]
    return [{**f, **{k: frames[0][k] for k in shape}} for f in frames]


def forward(model, frames: list[dict[str, np.ndarray]]):
    """The body model's own (camera-frame) vertices and joints (N, V, 3), (N, J, 3)."""
    batch = {k: torch.as_tensor(np.stack([f[k] for f in frames])) for k in frames[0]}
    with torch.no_grad():
        out = model(batch)
    return out.vertices.double().numpy(), out.joints.double().numpy()


# ------------------------------------------------------------------------------------------
# The Khronos validator
# ------------------------------------------------------------------------------------------

def validate_gltf(path: Path) -> dict:
    """The Khronos glTF validator's report of ``path``; fails (not skips) when node or the
    validator is missing: ``make install`` installs it (npm ci, package.json)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the glTF validator runs on node (install nodejs, "
                    "then `make install`)")
    if not (REPO / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the Khronos glTF validator is missing: run `make install` (it runs "
                    "`npm ci`, installing gltf-validator from package.json)")
    proc = subprocess.run([node, str(VALIDATOR_SCRIPT), str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"validator failed on {path}: {proc.stderr}"
    return json.loads(proc.stdout)[0]


def assert_valid_gltf(path: Path) -> dict:
    report = validate_gltf(path)
    issues = report["issues"]
    errors = [m for m in issues["messages"] if m["severity"] == 0]
    assert issues["numErrors"] == 0, f"{path}: glTF validator errors: {json.dumps(errors)[:2000]}"
    return report


# ------------------------------------------------------------------------------------------
# glTF skinning in NumPy
# ------------------------------------------------------------------------------------------

_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
           5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _view(gltf, blob: bytes, view: int, offset: int, dtype, count: int) -> np.ndarray:
    bv = gltf.bufferViews[view]
    start = (bv.byteOffset or 0) + (offset or 0)
    assert bv.byteStride in (None, 0), "strided views are not used by furpe"
    return np.frombuffer(blob, dtype=dtype, count=count, offset=start)


def read_accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    """An accessor's elements (count, width) as float64 (or the integer type), sparse
    substitution applied."""
    acc = gltf.accessors[index]
    width = _WIDTH[acc.type]
    dtype = _DTYPES[acc.componentType]
    if acc.bufferView is None:
        data = np.zeros(acc.count * width, dtype=dtype)
    else:
        data = _view(gltf, blob, acc.bufferView, acc.byteOffset, dtype,
                     acc.count * width).copy()
    data = data.reshape(acc.count, width)
    if acc.sparse is not None:
        sp = acc.sparse
        idx = _view(gltf, blob, sp.indices.bufferView, sp.indices.byteOffset,
                    _DTYPES[sp.indices.componentType], sp.count).astype(np.int64)
        assert np.all(np.diff(idx) > 0), "sparse indices must increase"
        vals = _view(gltf, blob, sp.values.bufferView, sp.values.byteOffset, dtype,
                     sp.count * width).reshape(sp.count, width)
        data[idx] = vals
    return data


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _slerp(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    d = float(np.dot(a, b))
    if d < 0:
        b, d = -b, -d
    if d > 0.9995:
        q = a + s * (b - a)
        return q / np.linalg.norm(q)
    theta = np.arccos(d)
    return (np.sin((1 - s) * theta) * a + np.sin(s * theta) * b) / np.sin(theta)


def _sample(times: np.ndarray, values: np.ndarray, t: float, path: str) -> np.ndarray:
    """glTF LINEAR sampling (slerp for rotations), clamped outside the keys."""
    if t <= times[0]:
        return values[0]
    if t >= times[-1]:
        return values[-1]
    k = int(np.searchsorted(times, t, side="right")) - 1
    s = (t - times[k]) / (times[k + 1] - times[k])
    if path == "rotation":
        return _slerp(values[k], values[k + 1], s)
    return (1 - s) * values[k] + s * values[k + 1]


def _trs(node, overrides: dict[str, np.ndarray]) -> np.ndarray:
    if node.matrix:
        return np.array(node.matrix, dtype=np.float64).reshape(4, 4).T
    t = overrides.get("translation", np.array(node.translation or [0, 0, 0], np.float64))
    r = overrides.get("rotation", np.array(node.rotation or [0, 0, 0, 1], np.float64))
    s = overrides.get("scale", np.array(node.scale or [1, 1, 1], np.float64))
    m = np.eye(4)
    m[:3, :3] = _quat_to_matrix(np.asarray(r, np.float64)) * np.asarray(s)[None]
    m[:3, 3] = t
    return m


def skin_glb(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a skinned, animated ``.glb`` and skin its mesh at every key time of its first
    animation, as a glTF viewer does: nodes' TRS animated, joint world matrices from the
    node hierarchy, ``world = sum w * (joint world @ inverse bind) @ (base + morphs)``.

    Returns the key times (N,), the world-space vertices (N, V, 3) and a few facts about the
    file (``influences``, ``target_names``, ``sparse_targets``).
    """
    import pygltflib

    gltf = pygltflib.GLTF2().load_binary(str(path))
    blob = gltf.binary_blob()
    mesh_node = next(i for i, n in enumerate(gltf.nodes) if n.mesh is not None)
    node = gltf.nodes[mesh_node]
    prim = gltf.meshes[node.mesh].primitives[0]
    attrs = {k: v for k, v in prim.attributes.__dict__.items() if v is not None}
    base = read_accessor(gltf, blob, attrs["POSITION"]).astype(np.float64)
    sets = sorted(int(k.split("_")[1]) for k in attrs if k.startswith("JOINTS_"))
    joints = np.concatenate([read_accessor(gltf, blob, attrs[f"JOINTS_{s}"]) for s in sets], 1)
    weights = np.concatenate([read_accessor(gltf, blob, attrs[f"WEIGHTS_{s}"])
                              for s in sets], 1).astype(np.float64)
    targets = [read_accessor(gltf, blob, (t if isinstance(t, dict) else t.__dict__)["POSITION"])
               .astype(np.float64) for t in (prim.targets or [])]
    sparse = [gltf.accessors[(t if isinstance(t, dict) else t.__dict__)["POSITION"]].sparse
              is not None for t in (prim.targets or [])]
    skin = gltf.skins[node.skin]
    ibm = read_accessor(gltf, blob, skin.inverseBindMatrices).astype(np.float64)
    ibm = np.swapaxes(ibm.reshape(-1, 4, 4), 1, 2)  # column-major
    parent = {c: i for i, n in enumerate(gltf.nodes) for c in (n.children or [])}

    anim = gltf.animations[0]
    channels = []
    for ch in anim.channels:
        sampler = anim.samplers[ch.sampler]
        channels.append((ch.target.node, ch.target.path,
                         read_accessor(gltf, blob, sampler.input)[:, 0].astype(np.float64),
                         read_accessor(gltf, blob, sampler.output).astype(np.float64)))
    times = channels[0][2]
    default_weights = np.array(gltf.meshes[node.mesh].weights or [0.0] * len(targets))

    out = np.empty((len(times), len(base), 3))
    for f, t in enumerate(times):
        overrides: dict[int, dict[str, np.ndarray]] = {}
        morph = default_weights.copy()
        for target_node, path_name, keys, values in channels:
            if path_name == "weights":
                morph = _sample(keys, values.reshape(len(keys), -1), t, path_name)
            else:
                overrides.setdefault(target_node, {})[path_name] = _sample(keys, values, t,
                                                                           path_name)
        world: dict[int, np.ndarray] = {}

        def world_of(i: int) -> np.ndarray:
            if i not in world:
                local = _trs(gltf.nodes[i], overrides.get(i, {}))
                world[i] = local if i not in parent else world_of(parent[i]) @ local
            return world[i]

        mats = np.stack([world_of(j) @ ibm[k] for k, j in enumerate(skin.joints)])
        verts = base + sum(w * d for w, d in zip(morph, targets)) if targets else base
        blend = np.einsum("vk,vkij->vij", weights, mats[joints.astype(np.int64)])
        out[f] = np.einsum("vij,vj->vi", blend[:, :3, :3], verts) + blend[:, :3, 3]
    facts = {"influences": joints.shape[1],
             "target_names": list((gltf.meshes[node.mesh].extras or {}).get("targetNames", [])),
             "sparse_targets": sparse, "scene_extras": gltf.scenes[0].extras}
    return times, out, facts
