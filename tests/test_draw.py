"""Drawing (edgepipe/draw.py), checked by pixels: rules where their points say, the arrow on the "in"
side, the grid at its step, tracks in their colours with trails, and files that read back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.draw import (
    LINE_BGR,
    PALETTE_BGR,
    ZONE_BGR,
    LineShape,
    Scene,
    VideoFile,
    ZoneShape,
    annotate,
    draw_grid,
    draw_rules,
    draw_tracks,
    grid_step,
    palette_color,
    rule_shapes,
    rules_picture,
)
from edgepipe.errors import OutputError
from edgepipe.geometry import Segment
from edgepipe.rules import LineCrossing, Rules, Zone
from edgepipe.types import Detections, Frame, FrameResult, Tracks


def black(height: int = 360, width: int = 480) -> NDArray[np.uint8]:
    return np.zeros((height, width, 3), np.uint8)


def is_color(image: NDArray[np.uint8], xy: NDArray[np.float64], color: tuple[int, int, int]) -> bool:
    x, y = np.round(xy).astype(int)
    return bool((image[y, x] == color).all())


def points_along(start: tuple[float, float], end: tuple[float, float], n: int = 25) -> NDArray[np.float64]:
    """`n` points on the segment, away from its ends (where labels and end dots are)."""
    t = np.linspace(0.1, 0.9, n)[:, None]
    return np.asarray(start) + t * (np.asarray(end) - np.asarray(start))


@pytest.mark.parametrize(
    ("start", "end", "in_sign"),
    [
        ((240, 100), (240, 300), -1),
        ((250, 402), (560, 402), -1),
        ((600, 300), (600, 432), 1),
        ((20, 20), (400, 300), 1),
    ],
)
def test_a_line_is_drawn_along_its_points_with_the_arrow_on_the_in_side(
    start: tuple[float, float], end: tuple[float, float], in_sign: int
) -> None:
    canvas = black(432, 768)
    line = LineShape("door", start, end, in_sign)
    draw_rules(canvas, [line], None)
    for point in points_along(start, end):
        assert is_color(canvas, point, LINE_BGR), point
    # the arrow leaves the middle of the line towards the side rules.LineCrossing counts as "in"
    middle, normal = (np.asarray(start) + np.asarray(end)) / 2, line.in_normal()
    arrow = middle + normal * 15
    assert is_color(canvas, arrow, LINE_BGR)
    assert not is_color(canvas, middle - normal * 15, LINE_BGR)
    side, _ = Segment(start, end).position(*arrow.tolist())
    assert np.sign(side) == in_sign  # +1: the right-hand side of start→end, as in_side: right means


def test_a_zone_is_outlined_in_its_colour_and_lightly_filled() -> None:
    canvas = np.full((360, 480, 3), 100, np.uint8)
    polygon = ((100.0, 100.0), (300.0, 80.0), (320.0, 250.0), (90.0, 240.0))
    draw_rules(canvas, [ZoneShape("table", polygon)], None)
    edges = list(zip(polygon, polygon[1:] + polygon[:1], strict=True))
    for a, b in edges:
        for point in points_along(a, b, 10):
            assert is_color(canvas, point, ZONE_BGR), point
    inside, outside = canvas[180, 200], canvas[330, 400]
    assert (outside == 100).all()  # untouched away from the zone
    assert inside[0] > 100 and inside[1] > 100 and inside[2] < 100  # tinted towards cyan (BGR 255, 255, 0)


def test_counts_change_the_labels_but_not_the_geometry() -> None:
    line = LineShape("door", (240.0, 100.0), (240.0, 300.0), -1)
    plain, counted = black(), black()
    draw_rules(plain, [line], None)
    draw_rules(counted, [line], {"door": {"in": 12, "out": 3, "by_label": {}}})
    assert not np.array_equal(plain, counted)
    for point in points_along((240, 100), (240, 300)):
        assert is_color(counted, point, LINE_BGR)


def test_rule_shapes_come_from_placed_rules_in_pixels() -> None:
    line = LineCrossing("door", (0.5, 0.25), (0.5, 0.75), pipeline="p", labels=("person",), units="relative")
    zone = Zone("table", [(10, 10), (50, 10), (50, 50)], pipeline="p", labels=("person",))
    rules = Rules([line, zone])
    rules.place((360, 480))
    assert rule_shapes(rules) == (
        LineShape("door", (240.0, 90.0), (240.0, 270.0), 1),
        ZoneShape("table", ((10.0, 10.0), (50.0, 10.0), (50.0, 50.0))),
    )


@pytest.mark.parametrize(("size", "step"), [(480, 50), (768, 100), (1920, 200), (200, 20), (3840, 500)])
def test_grid_step_gives_about_ten_lines(size: int, step: int) -> None:
    assert grid_step(size) == step


def test_grid_lines_fall_on_multiples_of_the_step() -> None:
    canvas = black()
    draw_grid(canvas, 50)
    row = canvas[225, :, 0].astype(int)  # a row between the labels along the left edge
    lit = set(np.flatnonzero(row > 60).tolist())
    assert {50, 100, 150, 200, 250, 300, 350, 400, 450} <= lit
    assert not lit & {25, 75, 125, 175, 225, 275, 325, 375, 425}
    # the top edge is labelled with pixel values: the label boxes change pixels near x = 100 in row 5
    assert canvas[5, 90:110].any()


def test_rules_picture_leaves_the_frame_alone_and_draws_grid_rules_and_boxes() -> None:
    frame = np.full((360, 480, 3), 100, np.uint8)
    before = frame.copy()
    detections = Detections(
        np.array([[20, 200, 60, 300]], np.float32), np.array([0.8], np.float32), np.zeros(1, np.int32)
    )
    picture = rules_picture(
        frame,
        [LineShape("door", (240.0, 100.0), (240.0, 300.0), -1)],
        detections=detections,
        labels=("person",),
    )
    assert np.array_equal(frame, before)
    assert is_color(picture, np.array([240.0, 150.0]), LINE_BGR)
    assert is_color(picture, np.array([20.0, 250.0]), palette_color(0))  # the box's left edge


def tracks_of(rows: list[tuple[int, float, float]]) -> Tracks:
    """Tracks from (id, centre x, bottom y) with 20x40 boxes."""
    xyxy = np.array([[x - 10, y - 40, x + 10, y] for _, x, y in rows], np.float32).reshape(-1, 4)
    n = len(rows)
    return Tracks(
        xyxy,
        np.full(n, 0.9, np.float32),
        np.zeros(n, np.int32),
        np.array([tid for tid, _, _ in rows], np.int64),
        np.arange(n, dtype=np.intp),
        np.empty(0, np.int64),
    )


def test_tracks_are_boxed_in_their_colour_with_a_trail_of_their_feet() -> None:
    canvas = black()
    recent = [tracks_of([(3, 100 + 10 * i, 300), (4, 400, 100 + 5 * i)]) for i in range(10)]
    now = recent[-1]
    draw_tracks(canvas, now, ("person",), recent)
    assert is_color(canvas, np.array([180.0, 280.0]), palette_color(3))  # left edge of track 3's box
    # the trail of track 3 runs along its feet, y = 300, behind where it is now
    assert all((canvas[300, x] == palette_color(3)).all() for x in (110, 130, 150))
    assert (canvas[300, 60] == 0).all()  # not before it was first seen
    assert not set(PALETTE_BGR) & {LINE_BGR, ZONE_BGR}


def test_annotate_draws_on_a_copy() -> None:
    image = np.full((120, 200, 3), 80, np.uint8)
    frame = Frame(image, 7, 1_700_000_000.0, 0.7)
    result = FrameResult(frame, Detections.empty(), tracks_of([(1, 50, 100)]), ())
    scene = Scene((LineShape("door", (100.0, 10.0), (100.0, 110.0), 1),), ("person",))
    picture = annotate(
        result, scene, {"door": {"in": 1, "out": 0, "by_label": {}}}, status="scripted 9.0 fps"
    )
    assert (image == 80).all()
    assert is_color(picture, np.array([100.0, 60.0]), LINE_BGR)
    assert picture[2:14, 2:60].min() == 0  # the status line's dark box, top left


def test_a_video_file_reads_back_frame_by_frame(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with VideoFile(path, 10.0, "--annotate") as video:
        for level in (0, 120, 240):
            video.write(np.full((64, 96, 3), level, np.uint8))
    capture = cv2.VideoCapture(str(path))
    levels = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image.shape == (64, 96, 3)
        levels.append(float(image.mean()))
    capture.release()
    assert levels == pytest.approx([0, 120, 240], abs=3)


def test_a_video_file_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    video = VideoFile(tmp_path / "missing" / "out.mp4", 10.0, "--annotate")
    with pytest.raises(OutputError, match=r"^--annotate .*out\.mp4: cannot open a video writer"):
        video.write(black(8, 8))
