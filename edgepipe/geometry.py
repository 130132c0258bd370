"""Box and plane geometry used by several stages: IoU, reference points, segments, polygons and
class-aware NMS. Vectorised over boxes (numpy; NMS in OpenCV)."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

ReferencePoint = Literal["bottom_center", "center", "top_center"]
# How a rule's points are given: frame pixels, or fractions (0..1) of the frame's width and height
Units = Literal["px", "relative"]

FloatArray = NDArray[np.floating]


def box_iou(boxes_a: FloatArray, boxes_b: FloatArray) -> NDArray[np.float64]:
    """IoU of every pair: `boxes_a` shape (N, 4), `boxes_b` shape (M, 4), both xyxy → (N, M)."""
    a = np.asarray(boxes_a, np.float64)[:, None, :]
    b = np.asarray(boxes_b, np.float64)[None, :, :]
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def reference_points(xyxy: FloatArray, where: ReferencePoint = "bottom_center") -> NDArray[np.float64]:
    """(N, 4) xyxy → (N, 2) the point of each box that rules test (feet by default)."""
    xyxy = np.asarray(xyxy, np.float64)
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    if where == "bottom_center":
        y = xyxy[:, 3]
    elif where == "center":
        y = (xyxy[:, 1] + xyxy[:, 3]) / 2
    else:
        y = xyxy[:, 1]
    return np.stack([cx, y], axis=1)


def reference_point(
    xyxy: tuple[float, float, float, float], where: ReferencePoint = "bottom_center"
) -> tuple[float, float]:
    """One box's point that rules test, in plain floats (`reference_points` for many)."""
    x1, y1, x2, y2 = xyxy
    y = y2 if where == "bottom_center" else (y1 + y2) / 2 if where == "center" else y1
    return (x1 + x2) / 2, y


def to_pixels(points: FloatArray, units: Units, frame_hw: tuple[int, int]) -> NDArray[np.float64]:
    """(N, 2) points in `units` → (N, 2) frame pixels; relative x scales by the width, y by the height."""
    pixels = np.array(points, np.float64)  # a copy: callers may keep it
    if units == "relative":
        height, width = frame_hw
        pixels *= np.array([width, height], np.float64)
    return pixels


def outside_frame(points: FloatArray, frame_hw: tuple[int, int]) -> NDArray[np.bool_]:
    """(N, 2) pixel points → (N,) whether each lies outside the frame: x in 0..width, y in 0..height."""
    points = np.asarray(points, np.float64)
    height, width = frame_hw
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width) & (points[:, 1] >= 0) & (points[:, 1] <= height)
    return np.asarray(~inside)


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


class Segment:
    """A directed segment start→end prepared for one point at a time: rules ask about a few tracks
    a frame, where plain floats cost less than numpy's per-call overhead. The same formulas as
    `signed_distance_to_line` and `projection_on_segment`."""

    def __init__(self, start: FloatArray, end: FloatArray) -> None:
        (self._x, self._y), (end_x, end_y) = (float(v) for v in start), (float(v) for v in end)
        self._dx, self._dy = end_x - self._x, end_y - self._y
        self._length = float(np.hypot(self._dx, self._dy))
        self._length2 = self._dx * self._dx + self._dy * self._dy

    def position(self, x: float, y: float) -> tuple[float, float]:
        """(signed distance in pixels to the infinite line, positive on its right-hand side as seen on
        screen; where the point projects along the segment, 0 at start and 1 at end)."""
        rel_x, rel_y = x - self._x, y - self._y
        return (self._dx * rel_y - self._dy * rel_x) / self._length, (
            rel_x * self._dx + rel_y * self._dy
        ) / self._length2


class Polygon:
    """A polygon (concave allowed) prepared for one point at a time: OpenCV's pointPolygonTest in C++
    answers inside-or-not and the distance to the nearest edge in one call (what `points_in_polygon`
    and `distance_to_polygon_edges` give for many points, to ~1e-4 px: its vertices are float32)."""

    def __init__(self, vertices: FloatArray) -> None:
        self.vertices = np.array(vertices, np.float64)
        self._contour = self.vertices.astype(np.float32).reshape(-1, 1, 2)

    def signed_distance(self, x: float, y: float) -> float:
        """Distance in pixels to the nearest edge: positive inside, negative outside, 0 on an edge."""
        return float(cv2.pointPolygonTest(self._contour, (x, y), True))


def _following(vertices: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each vertex's successor around the polygon (np.roll(vertices, -1, axis=0), ~10x cheaper)."""
    return np.concatenate((vertices[1:], vertices[:1]))


def nms(
    xyxy: FloatArray, score: FloatArray, class_id: NDArray[np.integer], iou_threshold: float
) -> NDArray[np.intp]:
    """Class-aware non-maximum suppression → indices kept, highest score first (ties: the first).

    Boxes of different classes never suppress each other; a box goes when its IoU with a kept box of
    its class is above `iou_threshold`. OpenCV's batched NMS does the greedy pass in C++: the same
    boxes as a numpy loop (tests/test_geometry.py compares them), 10-30x faster on the clustered
    candidates of a crowd, where the loop ran once per kept box."""
    if len(xyxy) == 0:
        return np.empty(0, np.intp)
    xywh = np.array(xyxy, np.float64)
    xywh[:, 2:] -= xywh[:, :2]
    scores = np.asarray(score, np.float32)
    lowest = float(scores.min()) - 1.0  # keep every box OpenCV's own score filter would see
    # lists, not arrays: the binding converts a list to its vectors about twice as fast
    kept = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(),
        scores.tolist(),
        np.asarray(class_id).tolist(),
        lowest,
        float(iou_threshold),
    )
    return np.asarray(kept, np.intp).reshape(-1)
