"""Animation export: a result's tracks as skinned, animated glTF binaries and BVH files.

* :mod:`furpe.export.rig`: a body model's rig at one shape (bones, rest mesh, skin weights,
  morph targets) and its per-frame motion; model-specific parts in
  :mod:`furpe.export.anny_rig` and :mod:`furpe.export.smplx_rig`.
* :mod:`furpe.export.gltf`: ``.glb`` writer; :mod:`furpe.export.bvh`: BVH writer and reader.
* :mod:`furpe.export.results`: a result folder read as tracks;
  :mod:`furpe.export.exporter`: ``furpe export``.

Axes, units and options: docs/export.md.
"""
from __future__ import annotations

from furpe.export.bvh import read_bvh, write_bvh
from furpe.export.exporter import FORMATS, export_results, export_track
from furpe.export.gltf import write_glb
from furpe.export.results import Track, read_tracks
from furpe.export.rig import WORLD_FROM_CAMERA, Motion, Rig, make_rig, pose_rig, track_rig

__all__ = ["FORMATS", "WORLD_FROM_CAMERA", "Motion", "Rig", "Track", "export_results",
           "export_track", "make_rig", "pose_rig", "read_bvh", "read_tracks", "track_rig",
           "write_bvh", "write_glb"]
