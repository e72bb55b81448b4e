"""The bottom layer: used by every other module, it uses nothing else of furpe.

* :mod:`~furpe.core.vocab`: part names, landmark conventions, their name lists and mappings;
* geometry: :mod:`~furpe.core.camera` (intrinsics, projection), :mod:`~furpe.core.boxes`
  (boxes, crops and their transforms), :mod:`~furpe.core.rotations`,
  :mod:`~furpe.core.align` (Kabsch, Procrustes), :mod:`~furpe.core.robust` (robust losses);
* :mod:`~furpe.core.errors` (user-facing errors), :mod:`~furpe.core.files` (atomic writes,
  JSON), :mod:`~furpe.core.registry` (the one plug-in registry).
"""
