"""Plane geometry helpers with the expected values written out."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.geometry import (
    FloatArray,
    Polygon,
    Segment,
    box_iou,
    nms,
    outside_frame,
    reference_point,
    reference_points,
    to_pixels,
)

# A U shape (concave): the notch x in (100, 200), y in (0, 200) is outside.
U_SHAPE = [(0, 0), (100, 0), (100, 200), (200, 200), (200, 0), (300, 0), (300, 300), (0, 300)]


@pytest.mark.parametrize(
    ("polygon", "point", "expected"),
    [
        (U_SHAPE, (50, 50), 50.0),  # inside the left arm: 50 px to x = 0, x = 100 and y = 0
        (U_SHAPE, (150, 50), 50.0),  # in the notch (outside): 50 px to both walls
        (U_SHAPE, (105, 195), 5.0),  # in the notch by its inner corner: 5 px to the wall and the floor
        # 10 px below the notch floor's infinite line and 40 px left of its wall's, but nearest
        # to their shared corner (100, 200): the distance is to segments, not lines.
        (U_SHAPE, (60, 210), 41.231056),
        (U_SHAPE, (310, 310), 14.142136),  # beyond a convex corner: to the corner (300, 300)
        (U_SHAPE, (350, 150), 50.0),  # outside, right of x = 300
        (U_SHAPE, (300, 120), 0.0),  # on an edge
        (U_SHAPE, (0, 0), 0.0),  # on a vertex
        # A repeated vertex (zero-length edge) measures to the vertex instead of dividing by zero.
        ([(0, 0), (0, 0), (10, 0), (10, 10), (0, 10)], (3, 4), 3.0),
    ],
)
def test_distance_to_polygon_edges(
    polygon: list[tuple[int, int]], point: tuple[float, float], expected: float
) -> None:
    distance = distance_to_polygon_edges(np.array([point], np.float64), np.array(polygon, np.float64))
    assert distance.shape == (1,)
    assert distance[0] == pytest.approx(expected, abs=1e-6)
    assert abs(Polygon(polygon).signed_distance(*point)) == pytest.approx(expected, abs=1e-4)


def test_distance_to_polygon_edges_vectorised_and_empty() -> None:
    points = np.array([[50, 50], [150, 50], [310, 310]], np.float64)
    np.testing.assert_allclose(
        distance_to_polygon_edges(points, np.array(U_SHAPE)), [50.0, 50.0, 14.142136], atol=1e-6
    )
    assert distance_to_polygon_edges(np.empty((0, 2)), np.array(U_SHAPE)).shape == (0,)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # the same box
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap: 50 / (100 + 100 - 50)
        ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),  # one inside the other
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),  # apart
        ((0, 0, 0, 10), (0, 0, 0, 10), 0.0),  # zero area on both sides: no division by zero
    ],
)
def test_box_iou(a: tuple[float, ...], b: tuple[float, ...], expected: float) -> None:
    iou = box_iou(np.array([a], np.float32), np.array([b], np.float32))
    assert iou.shape == (1, 1) and iou.dtype == np.float64
    assert iou[0, 0] == pytest.approx(expected)


def test_box_iou_of_n_by_m_and_empty() -> None:
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float64)
    b = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [100, 100, 110, 110]], np.float64)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0]])
    assert box_iou(np.empty((0, 4)), b).shape == (0, 3) and box_iou(a, np.empty((0, 4))).shape == (2, 0)


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "iou_threshold", "kept"),
    [
        # two boxes of one class overlapping at IoU 1/3: the weaker goes when 1/3 > the threshold
        ([(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8], [0, 0], 0.3, [0]),
        ([(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8], [0, 0], 0.34, [0, 1]),
        ([(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8], [0, 0], 0.5, [0, 1]),
        # the same boxes, other classes: never suppressed
        ([(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8], [0, 1], 0.1, [0, 1]),
        # the higher score wins whatever the order; results come highest first
        ([(1, 0, 11, 10), (0, 0, 10, 10), (50, 50, 60, 60)], [0.5, 0.9, 0.7], [3, 3, 3], 0.5, [1, 2]),
        # a chain: A suppresses B, B would have suppressed C, but C survives (B is gone)
        ([(0, 0, 10, 10), (4, 0, 14, 10), (8, 0, 18, 10)], [0.9, 0.8, 0.7], [0, 0, 0], 0.4, [0, 2]),
        # equal scores: the first one stays (stable order)
        ([(0, 0, 10, 10), (0, 0, 10, 10)], [0.6, 0.6], [0, 0], 0.5, [0]),
        ([], [], [], 0.5, []),
    ],
    ids=["iou-above", "iou-just-below", "iou-below", "other-class", "score-order", "chain", "tie", "empty"],
)
def test_nms(
    boxes: list[tuple[float, ...]],
    scores: list[float],
    classes: list[int],
    iou_threshold: float,
    kept: list[int],
) -> None:
    arrays = (np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(classes))
    assert nms(*arrays, iou_threshold).tolist() == kept
    assert greedy_nms(*arrays, iou_threshold).tolist() == kept


def greedy_nms(
    xyxy: NDArray[np.float32], score: NDArray[np.float32], class_id: NDArray[np.integer], iou_threshold: float
) -> NDArray[np.intp]:
    """The greedy pass written out in numpy: the reference OpenCV's batched NMS is held to."""
    keep: list[int] = []
    order = np.argsort(-score, kind="stable")
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        iou = box_iou(xyxy[best : best + 1], xyxy[rest])[0]
        order = rest[(iou <= iou_threshold) | (class_id[rest] != class_id[best])]
    return np.asarray(keep, np.intp)


@pytest.mark.parametrize("seed", range(5))
def test_nms_keeps_the_boxes_the_greedy_pass_keeps_in_a_crowd(seed: int) -> None:
    """Clustered boxes of three classes, as a crowd gives the decoder: the same boxes, the same order."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 400, (20, 2))[rng.integers(0, 20, 300)] + rng.normal(0, 5, (300, 2))
    sizes = rng.uniform(20, 60, (300, 2))
    xyxy = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    score = np.round(rng.uniform(0.1, 1.0, 300), 2).astype(np.float32)  # rounded: ties happen
    class_id = rng.integers(0, 3, 300)
    for threshold in (0.3, 0.6):
        expected = greedy_nms(xyxy, score, class_id, threshold)
        assert 20 < len(expected) < 300
        assert nms(xyxy, score, class_id, threshold).tolist() == expected.tolist()


SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]


@pytest.mark.parametrize(
    ("polygon", "point", "inside"),
    [
        (SQUARE, (5, 5), True),
        (SQUARE, (15, 5), False),
        (SQUARE, (-0.1, 5), False),
        (SQUARE, (9.99, 9.99), True),
        (U_SHAPE, (50, 100), True),  # the left arm
        (U_SHAPE, (150, 100), False),  # the notch of the U (concave part)
        (U_SHAPE, (150, 250), True),  # the bar joining both arms
        (U_SHAPE, (250, 100), True),  # the right arm
        ([(0, 0), (10, 0), (0, 10)], (6, 6), False),  # beyond a triangle's hypotenuse
        ([(0, 0), (10, 0), (0, 10)], (4, 4), True),
    ],
)
def test_points_in_polygon(
    polygon: list[tuple[float, float]], point: tuple[float, float], inside: bool
) -> None:
    assert points_in_polygon(np.array([point], np.float64), np.array(polygon, np.float64)).tolist() == [
        inside
    ]
    assert (Polygon(polygon).signed_distance(*point) > 0) == inside


@pytest.mark.parametrize("seed", range(3))
def test_a_prepared_polygon_answers_as_the_vectorised_functions(seed: int) -> None:
    """Polygon (OpenCV, one point at a time, what the zone rule asks) against points_in_polygon and
    distance_to_polygon_edges on random points around a random star-shaped (concave) polygon."""
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radii = rng.uniform(40, 200, 9)
    vertices = np.stack([300 + radii * np.cos(angles), 250 + radii * np.sin(angles)], axis=1)
    points = rng.uniform(50, 550, (400, 2))
    inside = points_in_polygon(points, vertices)
    distance = distance_to_polygon_edges(points, vertices)
    polygon = Polygon(vertices)
    signed = np.array([polygon.signed_distance(x, y) for x, y in points.tolist()])
    assert 30 < np.count_nonzero(inside) < 370  # both sides well sampled
    np.testing.assert_array_equal(signed > 0, inside)
    np.testing.assert_allclose(np.abs(signed), distance, atol=1e-3)


def test_points_in_polygon_vectorised_and_empty() -> None:
    points = np.array([[5, 5], [150, 100], [250, 100]], np.float64)
    assert points_in_polygon(points, np.array(U_SHAPE)).tolist() == [True, False, True]
    assert points_in_polygon(np.empty((0, 2)), np.array(SQUARE)).shape == (0,)


@pytest.mark.parametrize(
    ("where", "expected"),
    [("bottom_center", (15.0, 40.0)), ("center", (15.0, 30.0)), ("top_center", (15.0, 20.0))],
)
def test_reference_points(where: str, expected: tuple[float, float]) -> None:
    points = reference_points(np.array([[10, 20, 20, 40]], np.float32), where)  # type: ignore[arg-type]
    assert points.tolist() == [list(expected)]
    assert reference_point((10.0, 20.0, 20.0, 40.0), where) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("point", "distance", "along"),
    [((50, 10), 10.0, 0.5), ((50, -10), -10.0, 0.5), ((0, 0), 0.0, 0.0), ((150, 5), 5.0, 1.5)],
)
def test_signed_distance_and_projection_on_a_left_to_right_line(
    point: tuple[float, float], distance: float, along: float
) -> None:
    """Line (0, 0) → (100, 0): below it (y > 0) is the right-hand side, positive."""
    points = np.array([point], np.float64)
    assert signed_distance_to_line(points, (0, 0), (100, 0))[0] == pytest.approx(distance)
    assert projection_on_segment(points, (0, 0), (100, 0))[0] == pytest.approx(along)
    assert Segment((0, 0), (100, 0)).position(*point) == pytest.approx((distance, along))


def test_a_prepared_segment_answers_as_the_vectorised_functions() -> None:
    rng = np.random.default_rng(3)
    start, end = np.array([37.5, 410.0]), np.array([455.0, 61.25])
    points = rng.uniform(0, 480, (200, 2))
    segment = Segment(start, end)
    found = np.array([segment.position(x, y) for x, y in points.tolist()])
    np.testing.assert_allclose(
        found[:, 0], signed_distance_to_line(points, start, end), rtol=1e-12, atol=1e-9
    )
    np.testing.assert_allclose(found[:, 1], projection_on_segment(points, start, end), rtol=1e-12, atol=1e-12)


def test_to_pixels_scales_relative_points_by_width_and_height() -> None:
    points = np.array([[0.0, 0.0], [0.5, 0.25], [1.0, 1.0]])
    assert to_pixels(points, "relative", (360, 480)).tolist() == [[0, 0], [240, 90], [480, 360]]
    pixels = to_pixels(points, "px", (360, 480))
    assert pixels.tolist() == points.tolist() and pixels is not points


def test_outside_frame_keeps_the_edges_inside() -> None:
    points = np.array([[0, 0], [480, 360], [480.5, 10], [-1, 10], [10, 361], [240, 180]])
    assert outside_frame(points, (360, 480)).tolist() == [False, False, True, True, True, False]


# ---------------------------------------------------------------- references
# Vectorised over points and edges, written out in numpy: what Segment and Polygon (one point at a
# time, what the rules ask) are held to.
def signed_distance_to_line(points: FloatArray, start: FloatArray, end: FloatArray) -> NDArray[np.float64]:
    """(N, 2) points → (N,) signed distance in pixels to the infinite line start→end.

    Positive on the right-hand side of start→end as seen on screen (image y grows downwards):
    for a line drawn left to right, points below it are positive."""
    points = np.asarray(points, np.float64)
    start = np.asarray(start, np.float64)
    direction = np.asarray(end, np.float64) - start
    length = float(np.hypot(direction[0], direction[1]))
    rel = points - start
    distance: NDArray[np.float64] = (direction[0] * rel[:, 1] - direction[1] * rel[:, 0]) / length
    return distance


def projection_on_segment(points: FloatArray, start: FloatArray, end: FloatArray) -> NDArray[np.float64]:
    """(N, 2) points → (N,) position of their projection along start→end: 0 at start, 1 at end."""
    points = np.asarray(points, np.float64)
    start = np.asarray(start, np.float64)
    direction = np.asarray(end, np.float64) - start
    return ((points - start) @ direction) / float(direction @ direction)


def points_in_polygon(points: FloatArray, polygon: FloatArray) -> NDArray[np.bool_]:
    """(N, 2) points, (K, 2) polygon vertices (any simple polygon, concave allowed) → (N,) inside.

    Even-odd ray casting, vectorised over points and edges."""
    points = np.asarray(points, np.float64)
    poly = np.asarray(polygon, np.float64)
    x, y = points[:, 0:1], points[:, 1:2]  # (N, 1)
    x1, y1 = poly[:, 0], poly[:, 1]  # (K,)
    following = _following(poly)
    x2, y2 = following[:, 0], following[:, 1]
    straddles = (y1 > y) != (y2 > y)  # (N, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (x < x_cross)
    return np.asarray(np.count_nonzero(crossings, axis=1) % 2 == 1)


def distance_to_polygon_edges(points: FloatArray, polygon: FloatArray) -> NDArray[np.float64]:
    """(N, 2) points, (K, 2) polygon vertices → (N,) distance in pixels to the nearest edge.

    Unsigned (same inside and out) and to the segments, not their infinite lines, so a point
    beyond a corner measures to the corner. Vectorised over points and edges."""
    points = np.asarray(points, np.float64)
    start = np.asarray(polygon, np.float64)  # (K, 2)
    edge = _following(start) - start  # (K, 2)
    length2 = np.einsum("kd,kd->k", edge, edge)
    rel = points[:, None, :] - start[None, :, :]  # (N, K, 2)
    along = np.einsum("nkd,kd->nk", rel, edge)
    # A repeated vertex makes a zero-length edge: its nearest point is the vertex itself (t = 0).
    t = np.clip(np.divide(along, length2, out=np.zeros_like(along), where=length2 > 0), 0.0, 1.0)
    offset = rel - t[..., None] * edge
    return np.asarray(np.hypot(offset[..., 0], offset[..., 1]).min(axis=1, initial=np.inf))


def _following(vertices: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each vertex's successor around the polygon (np.roll(vertices, -1, axis=0), ~10x cheaper)."""
    return np.concatenate((vertices[1:], vertices[:1]))
