"""Optional: the exported files imported in headless Blender (``blender -b``) pose the body as
furpe does. Skipped, with the reason, where Blender is not installed (``apt-get install
blender``); slow (Blender starts twice)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from export_helpers import WORLD_FROM_CAMERA, forward, random_frames, same_shape
from furpe.export.bvh import write_bvh
from furpe.export.gltf import write_glb
from furpe.export.rig import track_rig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("blender") is None,
                       reason="Blender is not installed (blender not on PATH; "
                              "apt-get install blender)"),
]

FPS = 24.0

#: Run inside Blender. argv after "--": the .glb, the .bvh, the output JSON, the frame
#: number (0-based) to compare, the vertex ids and the bone names to report.
BLENDER_SCRIPT = r"""
import builtins, json, sys
import numpy
if not hasattr(numpy, "bool"):  # Blender 3.4's glTF importer uses the removed numpy.bool
    numpy.bool = bool
_open = builtins.open
def _open_without_u(file, mode="r", *args, **kwargs):  # its BVH importer opens with "rU"
    return _open(file, mode.replace("U", "") if isinstance(mode, str) else mode, *args, **kwargs)
builtins.open = _open_without_u
import bpy

glb, bvh, out, frame, vertex_ids, bones = sys.argv[sys.argv.index("--") + 1:]
frame, vertex_ids, bones = int(frame), json.loads(vertex_ids), json.loads(bones)
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = %(fps)d, 1.0
result = {"blender": bpy.app.version_string}

for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
bpy.ops.import_scene.gltf(filepath=glb)
mesh = next(o for o in bpy.context.scene.objects if o.type == "MESH")
arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
action = arm.animation_data.action
keys = sorted({round(k.co[0], 4) for fc in action.fcurves for k in fc.keyframe_points})
result["glb_keys"] = keys[:5]
key = keys[frame]
scene.frame_set(int(key), subframe=key - int(key))
deps = bpy.context.evaluated_depsgraph_get()
evaluated = mesh.evaluated_get(deps)
data = evaluated.to_mesh()
result["glb_vertices"] = [list(evaluated.matrix_world @ data.vertices[i].co) for i in vertex_ids]
keys_of = mesh.data.shape_keys
result["shape_keys"] = [k.name for k in keys_of.key_blocks][:5] if keys_of else []
evaluated.to_mesh_clear()

for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
bpy.ops.import_anim.bvh(filepath=bvh, global_scale=0.01, axis_forward="-Z", axis_up="Y",
                        frame_start=1, use_fps_scale=False, rotate_mode="NATIVE")
arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
scene.frame_set(1 + frame)
bpy.context.view_layer.update()
result["bvh_heads"] = [list(arm.matrix_world @ arm.pose.bones[b].head) for b in bones]
with open(out, "w") as fh:
    json.dump(result, fh)
""" % {"fps": int(FPS)}


def _blender_frame(points_world: np.ndarray) -> np.ndarray:
    """y-up world (glTF, BVH) to Blender's z-up: (x, -z, y)."""
    return np.stack([points_world[..., 0], -points_world[..., 2], points_world[..., 1]], -1)


def _blender_env(tmp_path) -> dict[str, str]:
    """Blender's own Python may lack numpy (Debian's blender does not depend on it): lend it
    this interpreter's numpy alone, through a folder on PYTHONPATH."""
    import os

    lend = tmp_path / "numpy-for-blender"
    lend.mkdir()
    root = Path(np.__file__).resolve().parent
    for name in (root, root.parent / "numpy.libs"):
        if name.exists():
            (lend / name.name).symlink_to(name)
    path = os.pathsep.join(filter(None, [str(lend), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_blender_imports_glb_and_bvh(anny_model, tmp_path):
    blender = shutil.which("blender")
    frames = same_shape(anny_model, random_frames(anny_model, 4, seed=40))
    rig, motion = track_rig(anny_model, frames, np.arange(4) / FPS)
    glb = write_glb(tmp_path / "t.glb", rig, motion)
    bvh = write_bvh(tmp_path / "t.bvh", rig, motion, frame_time=1 / FPS)
    verts, _ = forward(anny_model, frames)
    frame = 2
    vertex_ids = [0, 5000, int(np.argmax(np.abs(rig.morph_targets).sum((0, 2))))]
    bones = ["head", "wrist.L", "foot.R"]
    out = tmp_path / "blender.json"
    proc = subprocess.run(
        [blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr",
         BLENDER_SCRIPT, "--", str(glb), str(bvh), str(out), str(frame),
         json.dumps(vertex_ids), json.dumps(bones)],
        capture_output=True, text=True, timeout=600, env=_blender_env(tmp_path))
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(out.read_text())
    print(f"Blender {got['blender']}: glb keys {got['glb_keys']}, shape keys "
          f"{got['shape_keys']}")

    expected_v = _blender_frame(verts[frame, vertex_ids] @ WORLD_FROM_CAMERA.T)
    err_v = np.linalg.norm(np.array(got["glb_vertices"]) - expected_v, axis=-1).max()
    idx = [rig.bone_names.index(b) for b in bones]
    expected_j = _blender_frame(motion.joints[frame, idx])
    err_j = np.linalg.norm(np.array(got["bvh_heads"]) - expected_j, axis=-1).max()
    print(f"Blender vs furpe: glb vertex error {err_v * 1e3:.3f} mm, BVH joint error "
          f"{err_j * 1e3:.3f} mm")
    assert err_v < 1e-3 and err_j < 1e-3
