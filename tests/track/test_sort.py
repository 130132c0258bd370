"""SortTracker: lifecycle frame by frame, id rules, detection mapping, gaps and input checks.
(The filter itself is checked in test_kalman.py, the matching paths in test_associate.py; the
reproduction of the SORT reference on MOT15 in tests/bench/test_bench_tracker.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.track import SortTracker
from edgepipe.types import Detections, Tracks


def dets(*boxes: tuple[float, float, float, float], class_id: list[int] | None = None) -> Detections:
    """Detections from xyxy tuples, scores 0.9, 0.8, ... so rows can be told apart."""
    if not boxes:
        return Detections.empty()
    n = len(boxes)
    return Detections(
        np.array(boxes, np.float32).reshape(n, 4),
        np.linspace(0.9, 0.5, n).astype(np.float32),
        np.array(class_id if class_id is not None else [0] * n, np.int32),
    )


def box_at(x: float, y: float = 100.0, w: float = 40.0, h: float = 80.0) -> tuple[float, float, float, float]:
    return (x, y, x + w, y + h)


def ids(tracks: Tracks) -> list[int]:
    return [int(i) for i in tracks.track_id]


# ---------------------------------------------------------------- lifecycle


def test_warm_up_reports_at_once_then_min_hits_matches_in_a_row_are_needed() -> None:
    tracker = SortTracker(max_age=1, min_hits=3)
    # Frame 1 (warm-up): reported at once. A target appearing in frame 5 is reported on its
    # 4th frame: created, then 3 matches in a row (the reference's hit_streak >= min_hits).
    seen = []
    for frame in range(1, 10):
        boxes = [box_at(100 + frame)]
        if frame >= 5:
            boxes.append(box_at(400 + frame))
        seen.append(ids(tracker.update(dets(*boxes))))
    assert seen == [[1], [1], [1], [1], [1], [1], [1], [1, 2], [1, 2]]


def test_track_is_deleted_after_max_age_misses_frame_by_frame() -> None:
    tracker = SortTracker(max_age=2, min_hits=1)
    history = []
    for frame_dets in [dets(box_at(100)), dets(), dets(), dets(), dets()]:
        tracks = tracker.update(frame_dets)
        history.append((ids(tracks), [int(i) for i in tracks.ended], len(tracker)))
    # (reported ids, ended ids, live tracks): coasting tracks are not reported; the third miss ends it.
    assert history == [([1], [], 1), ([], [], 1), ([], [], 1), ([], [1], 0), ([], [], 0)]


def test_track_that_was_never_reported_ends_without_an_id() -> None:
    tracker = SortTracker(max_age=1, min_hits=3)
    for _ in range(4):  # past warm-up with no targets
        tracker.update(dets())
    tracker.update(dets(box_at(100)))
    ended = [int(i) for f in range(3) for i in tracker.update(dets()).ended]
    assert ended == []
    assert len(tracker) == 0


def test_constant_velocity_target_keeps_its_id_through_a_5_frame_gap() -> None:
    tracker = SortTracker(max_age=5, min_hits=1)
    reported: dict[int, list[int]] = {}
    for frame in range(30):
        visible = not 10 <= frame < 15
        frame_dets = dets(box_at(50 + 6.0 * frame)) if visible else dets()
        reported[frame] = ids(tracker.update(frame_dets))
    assert all(reported[f] == [1] for f in range(10))
    assert all(reported[f] == [] for f in range(10, 15))
    assert all(reported[f] == [1] for f in range(15, 30))


def test_the_same_gap_is_too_long_for_a_smaller_max_age() -> None:
    tracker = SortTracker(max_age=4, min_hits=1)
    for frame in range(20):
        visible = not 10 <= frame < 15
        tracks = tracker.update(dets(box_at(50 + 6.0 * frame)) if visible else dets())
    assert ids(tracks) == [2]


def test_two_crossing_targets_keep_their_ids() -> None:
    tracker = SortTracker()
    history = []
    for frame in range(40):
        left_to_right = box_at(100 + 5.0 * frame, y=100)
        right_to_left = box_at(300 - 5.0 * frame, y=130)  # they overlap most at frame 20
        tracks = tracker.update(dets(left_to_right, right_to_left))
        history.append(dict(zip(ids(tracks), tracks.detection_index.tolist(), strict=True)))
    assert all(frame == {1: 0, 2: 1} for frame in history)


# ---------------------------------------------------------------- outputs


def test_detection_index_names_the_row_each_track_was_updated_with() -> None:
    rng = np.random.default_rng(3)
    targets = [(100.0, 100.0), (300.0, 120.0), (500.0, 90.0), (700.0, 300.0)]
    tracker = SortTracker(min_hits=1)
    target_of_id: dict[int, int] = {}
    for frame in range(12):
        order = rng.permutation(len(targets))
        boxes = [box_at(targets[t][0] + 3 * frame, targets[t][1]) for t in order]
        frame_dets = Detections(
            np.array(boxes, np.float32),
            (np.arange(len(order)) / 10).astype(np.float32),
            order.astype(np.int32),
        )
        tracks = tracker.update(frame_dets)
        assert len(tracks) == len(targets)
        for track_id, row in zip(ids(tracks), tracks.detection_index.tolist(), strict=True):
            target = int(order[row])
            assert target_of_id.setdefault(track_id, target) == target
        np.testing.assert_array_equal(tracks.score, frame_dets.score[tracks.detection_index])
        np.testing.assert_array_equal(tracks.class_id, frame_dets.class_id[tracks.detection_index])
        np.testing.assert_allclose(tracks.xyxy, frame_dets.xyxy[tracks.detection_index], atol=3.0)
    assert sorted(target_of_id) == [1, 2, 3, 4]


def test_empty_tracker_and_empty_frame_give_empty_tracks() -> None:
    tracks = SortTracker().update(Detections.empty())
    assert tracks.xyxy.shape == (0, 4)
    assert tracks.xyxy.dtype == np.float32
    assert tracks.track_id.dtype == np.int64
    assert tracks.detection_index.dtype == np.intp
    assert len(tracks.ended) == 0


def test_one_detection_in_the_first_frame_is_reported_with_id_1() -> None:
    tracks = SortTracker().update(dets((10.0, 20.0, 50.0, 100.0)))
    assert ids(tracks) == [1]
    assert tracks.detection_index.tolist() == [0]
    np.testing.assert_allclose(tracks.xyxy, [[10.0, 20.0, 50.0, 100.0]], atol=1e-4)


def test_500_detections_become_500_tracks() -> None:
    grid = np.stack(np.meshgrid(np.arange(25) * 50.0, np.arange(20) * 100.0), axis=-1).reshape(-1, 2)
    tracker = SortTracker()
    for frame in range(6):
        xyxy = np.concatenate([grid + frame, grid + frame + [40.0, 80.0]], axis=1)
        shuffled = np.random.default_rng(frame).permutation(500)
        frame_dets = Detections(
            xyxy[shuffled].astype(np.float32), np.ones(500, np.float32), np.zeros(500, np.int32)
        )
        tracks = tracker.update(frame_dets)
        assert len(tracks) == 500
        assert sorted(ids(tracks)) == list(range(1, 501))
        assert sorted(tracks.detection_index.tolist()) == list(range(500))
        np.testing.assert_allclose(tracks.xyxy, frame_dets.xyxy[tracks.detection_index], atol=2.0)


def test_empty_frames_end_all_tracks_and_report_each_id_once() -> None:
    tracker = SortTracker(max_age=1, min_hits=1)
    tracker.update(dets(box_at(100), box_at(300)))
    first = tracker.update(dets())
    second = tracker.update(dets())
    assert sorted(first.ended.tolist() + second.ended.tolist()) == [1, 2]
    assert second.ended.tolist() == [1, 2]


# ---------------------------------------------------------------- ids


def test_ids_start_at_1_in_every_tracker_and_are_never_reused() -> None:
    first, second = SortTracker(min_hits=1), SortTracker(min_hits=1)
    assert ids(first.update(dets(box_at(100), box_at(300)))) == [1, 2]
    assert ids(second.update(dets(box_at(500)))) == [1]
    for _ in range(3):  # both tracks of `first` end
        first.update(dets())
    assert ids(first.update(dets(box_at(100)))) == []  # tentative: one match after its start needed
    assert ids(first.update(dets(box_at(101)))) == [3]
    assert ids(second.update(dets(box_at(501)))) == [1]


def test_class_aware_matching_keeps_classes_apart() -> None:
    tracker = SortTracker(min_hits=1, match_classes=True)
    tracker.update(dets(box_at(100), class_id=[0]))
    # Same place, other class: a new (tentative) track, and the class-0 track coasts, then ends.
    assert ids(tracker.update(dets(box_at(101), class_id=[2]))) == []
    tracks = tracker.update(dets(box_at(102), class_id=[2]))
    assert ids(tracks) == [2]
    assert tracks.class_id.tolist() == [2]
    assert tracks.ended.tolist() == [1]
    mixed = SortTracker(min_hits=1)
    mixed.update(dets(box_at(100), class_id=[0]))
    assert ids(mixed.update(dets(box_at(101), class_id=[2]))) == [1]


# ---------------------------------------------------------------- frame gaps


def test_frame_index_gap_predicts_over_the_dropped_frames() -> None:
    def run(gap_aware: bool) -> tuple[list[int], int]:
        tracker = SortTracker(max_age=1, min_hits=1)
        for frame in range(10):
            tracker.update(dets(box_at(10.0 * frame, w=20.0)), frame_index=frame)
        # Frames 10..14 were dropped by a live source; the target moved 60 px, 3 box widths.
        tracks = tracker.update(dets(box_at(150.0, w=20.0)), frame_index=15 if gap_aware else None)
        return ids(tracks), len(tracker)

    assert run(gap_aware=True) == ([1], 1)
    assert run(gap_aware=False) == ([], 2)  # the box started a second, tentative track


def test_frame_index_must_increase() -> None:
    tracker = SortTracker()
    tracker.update(dets(), frame_index=7)
    with pytest.raises(ValueError, match="frame_index must increase: got 7 after 7"):
        tracker.update(dets(), frame_index=7)


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("bad_box", "shown"),
    [
        ((np.nan, 10.0, 50.0, 90.0), "[nan, 10.0, 50.0, 90.0]"),
        ((10.0, 10.0, np.inf, 90.0), "[10.0, 10.0, inf, 90.0]"),
        ((50.0, 10.0, 10.0, 90.0), "[50.0, 10.0, 10.0, 90.0]"),  # inverted: x2 < x1
        ((10.0, 90.0, 50.0, 10.0), "[10.0, 90.0, 50.0, 10.0]"),  # negative height
        ((10.0, 10.0, 10.0, 90.0), "[10.0, 10.0, 10.0, 90.0]"),  # zero width
    ],
)
def test_invalid_boxes_are_rejected_with_the_row_and_the_box(
    bad_box: tuple[float, float, float, float], shown: str
) -> None:
    tracker = SortTracker()
    with pytest.raises(ValueError) as error:
        tracker.update(dets(box_at(300), bad_box))
    assert str(error.value) == (
        f"detection 1 has box {shown} (x1, y1, x2, y2): every box needs finite coordinates with x2 > x1 and y2 > y1"
    )


# ---------------------------------------------------------------- against the textbook filter


class TextbookSort:
    """One SORT track as a plain 7-state Kalman filter (matrices of Bewley et al. 2016)."""

    def __init__(self, xyxy: NDArray[np.float64]) -> None:
        self.F = np.eye(7)
        self.F[0, 4] = self.F[1, 5] = self.F[2, 6] = 1.0
        self.H = np.eye(4, 7)
        self.Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
        self.R = np.diag([1.0, 1.0, 10.0, 10.0])
        self.P = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
        self.x = np.zeros(7)
        self.x[:4] = self.z(xyxy)
        self.guard_used = 0

    @staticmethod
    def z(xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
        w, h = xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]
        return np.array([xyxy[0] + w / 2, xyxy[1] + h / 2, w * h, w / h])

    def predict(self) -> None:
        if self.x[2] + self.x[6] <= 0:
            self.x[6] = 0.0
            self.guard_used += 1
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q

    def update(self, xyxy: NDArray[np.float64]) -> None:
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (self.z(xyxy) - self.H @ self.x)
        I_KH = np.eye(7) - K @ self.H
        self.P = I_KH @ self.P @ I_KH.T + K @ self.R @ K.T  # Joseph form

    def xyxy(self) -> NDArray[np.float64]:
        cx, cy, s, r = self.x[:4]
        w = np.sqrt(s * r)
        h = s / w
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def test_batched_filter_equals_the_textbook_filter_including_gaps_and_the_area_guard() -> None:
    rng = np.random.default_rng(0)
    # A box that walks, then shrinks fast (the area guard fires), with dropped frames between.
    sizes = [80.0] * 8 + [60.0, 45.0, 34.0, 26.0, 20.0, 16.0] + [16.0] * 6
    frames = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22]
    boxes = [
        np.array([100 + 4.0 * f, 50 + 2.0 * f, 100 + 4.0 * f + size * 0.6, 50 + 2.0 * f + size])
        + rng.normal(0, 0.5, 4)
        for f, size in zip(frames, sizes, strict=True)
    ]
    tracker = SortTracker(max_age=5, min_hits=1, iou_threshold=0.01)
    reference = TextbookSort(boxes[0])
    tracker.update(dets(tuple(boxes[0])), frame_index=frames[0])
    for previous, frame, box in zip(frames[:-1], frames[1:], boxes[1:], strict=True):
        for _ in range(frame - previous):
            reference.predict()
        reference.update(box)
        tracks = tracker.update(dets(tuple(box)), frame_index=frame)
        assert ids(tracks) == [1]
        np.testing.assert_allclose(tracks.xyxy[0], reference.xyxy(), rtol=0, atol=2e-3)
    assert reference.guard_used > 0
