"""Second-camera views and contact sheets (furpe.io.views)."""
from __future__ import annotations

import numpy as np
from test_render import box

from furpe.io.views import VIEW_BACKGROUND, contact_sheet, render_side_view, side_camera
from furpe.results import FrameResult, PersonResult


def _frame(*people: tuple[np.ndarray, np.ndarray]) -> FrameResult:
    faces = people[0][1]
    return FrameResult(
        image_size=(320, 240), intrinsics=np.array([[300.0, 0, 159.5], [0, 300, 119.5], [0, 0, 1]]),
        body_model="test", joint_names=(), faces=faces, timings={},
        people=[PersonResult(params={}, vertices=v, joints=np.zeros((0, 3)), keypoints_2d={},
                             parts={}, box=(0, 0, 1, 1), track_id=k)
                for k, (v, _) in enumerate(people)])


def _width(mask: np.ndarray) -> int:
    cols = np.flatnonzero(mask.any(0))
    return int(cols[-1] - cols[0] + 1) if len(cols) else 0


def test_side_view_turns_a_wide_thin_plate_edge_on() -> None:
    # A plate 1 m wide (x), 1.6 m tall (y), 5 cm deep (z), 4 m in front of the camera:
    # from the input camera it is wide; from the side (yaw 90) it must be thin.
    verts, faces = box((0.0, 0.0, 4.0), (1.0, 1.6, 0.05))
    frame = _frame((verts, faces))
    front = render_side_view(frame, 200, 200, yaw_deg=0.0, backend="software")
    side = render_side_view(frame, 200, 200, yaw_deg=90.0, backend="software")
    bg = np.array(VIEW_BACKGROUND, np.uint8)
    w_front = _width((front != bg).any(-1))
    w_side = _width((side != bg).any(-1))
    assert w_front > 60 and w_side < w_front / 8, (w_front, w_side)


def test_side_camera_frames_every_person() -> None:
    a, _ = box((-1.0, 0.0, 4.0), (0.5, 1.7, 0.3))
    b, _ = box((1.2, 0.1, 6.0), (0.5, 1.7, 0.3))
    R, t, K = side_camera([a, b], 400, 300, yaw_deg=60.0, fill=0.8)
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
    p = np.concatenate([a, b]) @ R.T + t
    assert (p[:, 2] > 0.05).all()
    uv = p[:, :2] / p[:, 2:] * K[0, 0] + K[:2, 2]
    assert (uv[:, 0] >= 0).all() and (uv[:, 0] <= 399).all()
    assert (uv[:, 1] >= 0).all() and (uv[:, 1] <= 299).all()
    # and it fills the frame (not just a dot in the middle)
    assert np.ptp(uv[:, 0]) > 0.5 * 400 or np.ptp(uv[:, 1]) > 0.5 * 300


def test_side_view_without_people_is_the_background() -> None:
    frame = _frame((np.zeros((3, 3)), np.zeros((1, 3), np.int64)))
    frame.people = []
    img = render_side_view(frame, 64, 48)
    assert img.shape == (48, 64, 3) and (img == np.array(VIEW_BACKGROUND, np.uint8)).all()


def test_contact_sheet_places_tiles_in_a_grid() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = [(f"img{k}.jpg", np.full((60 + 10 * k, 90, 3), c, np.uint8))
              for k, c in enumerate(colours)]
    sheet = contact_sheet(images, columns=3, tile=100)
    cell_w, cell_h = 112, 134  # tile + 2*pad, tile + caption + 2*pad
    assert sheet.shape == (2 * cell_h, 3 * cell_w, 3)
    for k, c in enumerate(colours):
        r, col = divmod(k, 3)
        centre = sheet[r * cell_h + 6 + 50, col * cell_w + 6 + 50]
        assert tuple(centre) == c, (k, centre)
    # the caption is drawn (dark pixels under the first tile)
    assert (sheet[6 + 100:cell_h, :cell_w] < 128).any()


def test_side_camera_of_a_video_follows_smoothly() -> None:
    from furpe.io.views import SideCamera

    cam = SideCamera(200, 200, yaw_deg=90.0, follow=0.2)
    a, _ = box((0.0, 0.0, 4.0), (0.5, 1.7, 0.3))
    first = cam.update([a])
    assert np.allclose(first[1], side_camera([a], 200, 200, 90.0, 0.7)[1])
    # the person walks 1 m away from the input camera (sideways in the side view): the
    # camera follows part of the way, not at once (unsmoothed: the centre would stay put)
    R, t, _ = cam.update([a + [0.0, 0.0, 1.0]])
    moved = (R @ np.array([0.0, 0.0, 5.0]) + t) - (first[0] @ np.array([0.0, 0.0, 4.0]) + first[1])
    assert 0.6 < abs(moved[0]) < 0.95 and abs(moved[1]) < 1e-9
    # a second person far away: the camera backs off at once so both stay in view
    b = a + [0.0, 0.0, 6.0]
    R, t, K = cam.update([a, b])
    p = np.concatenate([a, b]) @ R.T + t
    uv = p[:, :2] / p[:, 2:] * K[0, 0] + K[:2, 2]
    assert (p[:, 2] > 0).all() and (np.abs(uv - 99.5) < 100).all()
