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


# How far down each box the point that rules test lies: y = (1 - w) * y1 + w * y2.
_DOWN: dict[str, float] = {"top_center": 0.0, "center": 0.5, "bottom_center": 1.0}


def reference_points(xyxy: FloatArray, where: ReferencePoint = "bottom_center") -> NDArray[np.float64]:
    """(N, 4) xyxy → (N, 2) the point of each box that rules test (feet by default)."""
    xyxy = np.asarray(xyxy, np.float64)
    down = _DOWN[where]
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    return np.stack([cx, (1.0 - down) * xyxy[:, 1] + down * xyxy[:, 3]], axis=1)


def reference_point(
    xyxy: tuple[float, float, float, float], where: ReferencePoint = "bottom_center"
) -> tuple[float, float]:
    """One box's point that rules test, in plain floats (`reference_points` for many)."""
    x1, y1, x2, y2 = xyxy
    down = _DOWN[where]
    return (x1 + x2) / 2, (1.0 - down) * y1 + down * y2


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


class Segment:
    """A directed segment start→end prepared for one point at a time: rules ask about a few tracks
    a frame, where plain floats cost less than numpy's per-call overhead (tests/test_geometry.py holds
    it to a vectorised reference)."""

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
    answers inside-or-not and the distance to the nearest edge in one call (to ~1e-4 px: its vertices
    are float32; tests/test_geometry.py holds it to a vectorised even-odd and edge-distance reference)."""

    def __init__(self, vertices: FloatArray) -> None:
        self.vertices = np.array(vertices, np.float64)
        self._contour = self.vertices.astype(np.float32).reshape(-1, 1, 2)

    def signed_distance(self, x: float, y: float) -> float:
        """Distance in pixels to the nearest edge: positive inside, negative outside, 0 on an edge."""
        return float(cv2.pointPolygonTest(self._contour, (x, y), True))


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
