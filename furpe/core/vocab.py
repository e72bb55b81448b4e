"""The vocabulary: part names, landmark conventions, their name lists and mappings.

Defined once here and used everywhere else. Every
:class:`~furpe.experts.base.PartObservation` names its ``convention``; the tuples here give
the landmark names of each convention, in the order the expert returns them, so that
correspondence tables can be written by name.

Facts from MediaPipe's documentation, its legacy solutions (0.10.21) and Tasks API (1.2.3):

* ``mediapipe_pose``: BlazePose's 33 landmarks, ``left``/``right`` meaning the *subject's*
  side (a person facing the camera has ``left_shoulder`` on the image's right).
* ``mediapipe_hand``: 21 landmarks per hand, the same for either hand. A body model serves
  it per side as ``mediapipe_hand_left`` / ``mediapipe_hand_right`` (:func:`part_convention`).
* ``mediapipe_face``: the face mesh's 468 landmarks, plus 10 iris landmarks (468-477) when
  iris refinement is on (the built-in face expert always turns it on, so it always returns
  478). ``LEFT``/``RIGHT`` groups are the subject's side, as in MediaPipe's
  ``face_mesh_connections`` (index 33 is the outer corner of the subject's right eye, 263 of
  the left one).
* ``ibug68``: the 68 iBUG face landmarks (names ``ibug_00`` ... ``ibug_67``).

The face index groups below are the landmark sets of MediaPipe's ``FACEMESH_*`` connection
lists (the test suite checks them against the installed package).
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

Part = Literal["body", "left_hand", "right_hand", "face"]
#: The parts of a person, body first (the body places everything else).
PARTS: tuple[Part, ...] = ("body", "left_hand", "right_hand", "face")
#: The parts that hang on the body: reset to their neutral pose when rejected.
DETAIL_PARTS: tuple[Part, ...] = ("left_hand", "right_hand", "face")
#: The order in which parts can place a whole model (body, else face, else a hand).
ANCHOR_ORDER: tuple[Part, ...] = ("body", "face", "left_hand", "right_hand")


#: The landmark convention of each part's built-in expert.
EXPERT_CONVENTIONS: dict[str, str] = {"body": "mediapipe_pose", "left_hand": "mediapipe_hand",
                                      "right_hand": "mediapipe_hand", "face": "mediapipe_face"}


def world_convention(convention: str) -> str:
    """The name of the correspondences of an expert's metric 3D landmarks when its 3D skeleton
    has its own (``mediapipe_pose`` -> ``mediapipe_pose_world``, made by
    ``scripts/make_correspondences.py --world``)."""
    return convention + "_world"


def part_convention(convention: str, part: str) -> str:
    """The name a body model gives ``convention`` for ``part``: hand conventions are served
    per side (``mediapipe_hand`` + ``left_hand`` -> ``mediapipe_hand_left``)."""
    side = {"left_hand": "_left", "right_hand": "_right"}.get(part, "")
    return convention + side


MEDIAPIPE_POSE: tuple[str, ...] = (
    "nose",
    "left_eye_inner", "left_eye", "left_eye_outer",
    "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear",
    "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_pinky", "right_pinky",
    "left_index", "right_index",
    "left_thumb", "right_thumb",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
    "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)

MEDIAPIPE_HAND: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_finger_mcp", "index_finger_pip", "index_finger_dip", "index_finger_tip",
    "middle_finger_mcp", "middle_finger_pip", "middle_finger_dip", "middle_finger_tip",
    "ring_finger_mcp", "ring_finger_pip", "ring_finger_dip", "ring_finger_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)


def _sided(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((f"{side}_{a}", f"{side}_{b}") for side in ("left", "right") for a, b in pairs)


_FINGERS = ("index_finger", "middle_finger", "ring_finger", "pinky")

#: Bones between landmarks of one convention (by name; ``mediapipe_pose`` and
#: ``mediapipe_hand``): the segments whose 3D directions the fit compares with an expert's
#: metric 3D landmarks (:func:`bone_pairs`, ``FitConfig.w3d_bones``). BlazePose's own hand
#: points (pinky, index, thumb) are left out: on close-ups they turned the hand away from
#: what the hand expert saw.
BONES: tuple[tuple[str, str], ...] = (
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
    *_sided((("shoulder", "elbow"), ("elbow", "wrist"), ("shoulder", "hip"), ("hip", "knee"),
             ("knee", "ankle"), ("ankle", "heel"), ("heel", "foot_index"))),
    ("wrist", "thumb_cmc"), ("thumb_cmc", "thumb_mcp"), ("thumb_mcp", "thumb_ip"),
    ("thumb_ip", "thumb_tip"),
    *((a, b) for f in _FINGERS for a, b in (
        ("wrist", f"{f}_mcp"), (f"{f}_mcp", f"{f}_pip"), (f"{f}_pip", f"{f}_dip"),
        (f"{f}_dip", f"{f}_tip"))),
    *((f"{a}_mcp", f"{b}_mcp") for a, b in zip(_FINGERS, _FINGERS[1:])),
)


def bone_pairs(names: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """Index pairs of the :data:`BONES` whose two landmarks are both in ``names``."""
    at = {n: i for i, n in enumerate(names)}
    return [(at[a], at[b]) for a, b in BONES if a in at and b in at]


FACE_MESH_SIZE = 468
"""Number of face-mesh landmarks without iris refinement."""
FACE_MESH_REFINED_SIZE = 478
"""Number of face-mesh landmarks with iris refinement (468 + 2 x 5 iris landmarks)."""

MEDIAPIPE_FACE: tuple[str, ...] = tuple(f"face_{i:03d}" for i in range(FACE_MESH_REFINED_SIZE))

IBUG68: tuple[str, ...] = tuple(f"ibug_{i:02d}" for i in range(68))

CONVENTIONS: dict[str, tuple[str, ...]] = {
    "mediapipe_pose": MEDIAPIPE_POSE,
    "mediapipe_hand": MEDIAPIPE_HAND,
    "mediapipe_face": MEDIAPIPE_FACE,
    "ibug68": IBUG68,
}


def landmark_index(convention: str, name: str) -> int:
    """Index of landmark ``name`` in ``convention`` (``KeyError`` if unknown)."""
    try:
        return CONVENTIONS[convention].index(name)
    except ValueError:
        raise KeyError(f"{name!r} is not a landmark of {convention!r}") from None


# --- pose index groups -------------------------------------------------------------------

POSE = {name: i for i, name in enumerate(MEDIAPIPE_POSE)}
"""Name -> index for ``mediapipe_pose``."""

POSE_FACE: tuple[int, ...] = tuple(range(11))
"""Nose, eyes, ears and mouth corners: the pose landmarks that locate the head."""
POSE_TORSO: tuple[int, ...] = (11, 12, 23, 24)
"""Shoulders and hips."""
POSE_LEFT_HAND: tuple[int, ...] = (15, 17, 19, 21)
"""Left wrist, pinky, index and thumb (BlazePose's rough hand points)."""
POSE_RIGHT_HAND: tuple[int, ...] = (16, 18, 20, 22)
"""Right wrist, pinky, index and thumb."""
POSE_FEET: tuple[int, ...] = tuple(range(27, 33))
"""Ankles, heels and foot indices."""


def _swap_sides(names: tuple[str, ...]) -> tuple[int, ...]:
    """The permutation that swaps every ``left*`` name with its ``right*`` twin."""
    index = {n: i for i, n in enumerate(names)}

    def twin(n: str) -> str:
        if n.startswith("left"):
            return "right" + n[4:]
        if n.startswith("right"):
            return "left" + n[5:]
        if n.endswith("_left"):
            return n[:-5] + "_right"
        if n.endswith("_right"):
            return n[:-6] + "_left"
        return n

    return tuple(index[twin(n)] for n in names)


POSE_FLIP: tuple[int, ...] = _swap_sides(MEDIAPIPE_POSE)
"""Left/right permutation for ``mediapipe_pose``: after flipping an image horizontally,
``kp_flipped[i]`` corresponds to ``kp[POSE_FLIP[i]]`` (with x mirrored)."""


def mirror_pose_points(points: Any, reflect: float | None = None, column: int = 0) -> Any:
    """BlazePose's landmarks (..., N, D) seen in a mirrored view, as the person's in the plain
    view: rows swapped by :data:`POSE_FLIP` (rows past the 33 body landmarks, BlazePose's
    auxiliary points, keep their places) and x, the ``column``-th value, mirrored: ``reflect
    - x`` for pixels (``reflect``: the view's width, or width - 1 with pixel centres at whole
    numbers), ``-x`` for metric points (``reflect`` None). NumPy arrays or torch tensors (in
    the graph: differentiable and exported to ONNX)."""
    order = list(POSE_FLIP) + list(range(len(POSE_FLIP), points.shape[-2]))
    moved = points[..., order, :]
    x = moved[..., column:column + 1]
    x = -x if reflect is None else reflect - x
    parts = [moved[..., :column], x, moved[..., column + 1:]]
    if isinstance(points, np.ndarray):
        return np.concatenate(parts, -1)
    import torch

    return torch.cat(parts, -1)


HAND_FLIP: tuple[int, ...] = tuple(range(len(MEDIAPIPE_HAND)))
"""Identity: a mirrored hand keeps its landmark order; it is the hand's *side* that swaps."""

# --- face index groups (subject's left/right) ----------------------------------------------

FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
"""Face outline as a closed contour starting at the top of the forehead (index 10)."""
FACE_LIPS: tuple[int, ...] = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185,
    191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409,
    415,
)
"""Outer and inner lip contours."""
FACE_LEFT_EYE: tuple[int, ...] = (
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466,
)
FACE_RIGHT_EYE: tuple[int, ...] = (
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
)
FACE_LEFT_EYEBROW: tuple[int, ...] = (276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
FACE_RIGHT_EYEBROW: tuple[int, ...] = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107)
FACE_NOSE: tuple[int, ...] = (
    1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326,
    327, 344, 440,
)
FACE_LEFT_IRIS: tuple[int, ...] = (473, 474, 475, 476, 477)
"""Left iris: centre (473) then 4 boundary points; only with iris refinement."""
FACE_RIGHT_IRIS: tuple[int, ...] = (468, 469, 470, 471, 472)
"""Right iris: centre (468) then 4 boundary points; only with iris refinement."""

FACE_NOSE_TIP = 1
FACE_MOUTH_LEFT = 291
"""Left mouth corner (subject's left)."""
FACE_MOUTH_RIGHT = 61
FACE_LEFT_EYE_OUTER = 263
FACE_LEFT_EYE_INNER = 362
FACE_RIGHT_EYE_OUTER = 33
FACE_RIGHT_EYE_INNER = 133
FACE_CHIN = 152
FACE_FOREHEAD = 10


#: Face Mesh landmarks at iBUG-68 points (iBUG index -> Face Mesh index), for body models that
#: carry the 68-point face landmarks (SMPL-X) instead of Face Mesh correspondences. Only points
#: with an unambiguous Face Mesh counterpart: the chin (8), brows (17-26), nose bridge, tip and
#: bottom (27-30, 33), eye corners and lids (36-47) and the lips (48-67). iBUG's 17-21, 36-41
#: and 48 are on the subject's right, like Face Mesh's ``RIGHT`` groups. (The jaw contour and
#: the nostril wings are left out: their Face Mesh counterparts are a matter of choice.)
FACE_TO_IBUG68: dict[int, int] = {
    8: 152,
    17: 70, 18: 63, 19: 105, 20: 66, 21: 107,
    22: 336, 23: 296, 24: 334, 25: 293, 26: 300,
    27: 168, 28: 197, 29: 5, 30: 4, 33: 2,
    36: 33, 37: 160, 38: 158, 39: 133, 40: 153, 41: 144,
    42: 362, 43: 385, 44: 387, 45: 263, 46: 373, 47: 380,
    48: 61, 49: 40, 50: 37, 51: 0, 52: 267, 53: 270, 54: 291, 55: 321, 56: 314, 57: 17,
    58: 84, 59: 91,
    60: 78, 61: 81, 62: 13, 63: 311, 64: 308, 65: 402, 66: 14, 67: 178,
}


#: The 7 NoW challenge landmarks and their Face Mesh indices (in NoW order).
NOW7: tuple[str, ...] = ("right_eye_outer", "right_eye_inner", "left_eye_inner",
                         "left_eye_outer", "nose_bottom", "mouth_right", "mouth_left")
FACE_TO_NOW7: tuple[int, ...] = (FACE_RIGHT_EYE_OUTER, FACE_RIGHT_EYE_INNER,
                                 FACE_LEFT_EYE_INNER, FACE_LEFT_EYE_OUTER, 2,
                                 FACE_MOUTH_RIGHT, FACE_MOUTH_LEFT)


FACE_FLIP: tuple[int, ...] = (
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 250, 251, 252,
    253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270,
    271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288,
    289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306,
    307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 94,
    324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341,
    342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359,
    360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 379, 151, 152, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 164, 391, 392,
    393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403, 404, 405, 406, 407, 408,
    409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197, 420, 199, 200, 421, 422,
    423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440,
    441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458,
    459, 460, 461, 462, 463, 464, 465, 466, 467, 3, 7, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
    30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
    53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
    76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 95, 96, 97, 98, 99,
    100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117,
    118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135,
    136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 153, 154, 155,
    156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170, 171, 172, 173, 174, 176,
    177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194,
    196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216,
    217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 473, 476, 475, 474, 477,
    468, 471, 470, 469, 472
)
"""Left/right permutation for ``mediapipe_face`` (478 entries; the first 468 permute the mesh
landmarks among themselves, so ``FACE_FLIP[:468]`` serves unrefined meshes too), an
involution: after flipping an image horizontally,
``kp_flipped[i]`` corresponds to ``kp[FACE_FLIP[i]]``. Found by matching the mesh of a face
with the mirrored mesh of its mirrored image; it maps MediaPipe's eye, eyebrow and iris
groups onto their twins, lips, nose and oval onto themselves, and the face tesselation onto
itself except for 6 quads that MediaPipe triangulates asymmetrically."""
