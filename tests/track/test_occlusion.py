"""OcclusionTracker: lifecycle frame by frame, ids through occlusions at 10 and 25 fps, crossing
paths, the two score levels, lifetime in seconds, buffered IoU, detection mapping, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edgepipe.track import OcclusionTracker, associate
from edgepipe.track.occlusion import _HITS, _MISSES, _TRACK_ID
from edgepipe.types import Detections, Tracks

HIGH = 0.5  # the detector's threshold in these tests


def dets(*boxes: tuple[float, float, float, float], score: float | list[float] = 0.9) -> Detections:
    if not boxes:
        return Detections.empty()
    n = len(boxes)
    scores = np.broadcast_to(np.asarray(score, np.float32), (n,)).copy()
    return Detections(np.array(boxes, np.float32).reshape(n, 4), scores, np.zeros(n, np.int32))


def box_at(x: float, y: float = 100.0, w: float = 40.0, h: float = 80.0) -> tuple[float, float, float, float]:
    return (x, y, x + w, y + h)


def ids(tracks: Tracks) -> list[int]:
    return [int(i) for i in tracks.track_id]


def tracker(**settings: float) -> OcclusionTracker:
    return OcclusionTracker(high_threshold=HIGH, **settings)


def state(t: OcclusionTracker) -> list[tuple[int, int, int]]:
    """(id, hits in a row, misses) of every live track, in start order."""
    rows = t._tracks[: len(t)]
    return [(int(r[_TRACK_ID]), int(r[_HITS]), int(r[_MISSES])) for r in rows]


# ---------------------------------------------------------------- lifecycle
def test_lifecycle_frame_by_frame() -> None:
    t = tracker(min_hits=3, max_age_s=0.25)  # 10 fps: a confirmed track ends after 3 misses
    history = []
    seen = [True, True, True, True, True, False, True, False, False, False]
    for frame in range(1, 14):
        # Frames 1-3 are empty (the warm-up passes), the target starts in frame 4.
        boxes = [box_at(100 + 5 * frame)] if 4 <= frame < 14 and seen[frame - 4] else []
        out = t.update(dets(*boxes), frame_index=frame, time_s=frame / 10)
        history.append((ids(out), [int(i) for i in out.ended], state(t)))
    assert history == [
        ([], [], []),
        ([], [], []),
        ([], [], []),
        ([], [], [(0, 0, 0)]),  # started: tentative, no id
        ([], [], [(0, 1, 0)]),
        ([], [], [(0, 2, 0)]),
        ([1], [], [(1, 3, 0)]),  # 3 matches in a row after its start: confirmed, reported
        ([1], [], [(1, 4, 0)]),
        ([], [], [(1, 4, 1)]),  # a miss: coasting, not reported
        ([1], [], [(1, 1, 0)]),  # matched again: reported at once (SORT would wait 3 frames)
        ([], [], [(1, 1, 1)]),
        ([], [], [(1, 1, 2)]),
        ([], [1], []),  # 0.3 s without a match > max_age_s 0.25: ended
    ]


def test_a_tentative_track_ends_at_its_first_miss_without_an_id() -> None:
    t = tracker(min_hits=3)
    for frame in range(4):  # past the warm-up
        t.update(dets(), frame_index=frame)
    t.update(dets(box_at(100)), frame_index=4)
    t.update(dets(box_at(102)), frame_index=5)
    assert state(t) == [(0, 1, 0)]
    out = t.update(dets(), frame_index=6)
    assert out.ended.tolist() == [] and len(t) == 0


def test_warm_up_reports_what_the_first_min_hits_frames_see() -> None:
    t = tracker(min_hits=3)
    seen = [ids(t.update(dets(box_at(100 + frame), box_at(300)), frame_index=frame)) for frame in range(5)]
    assert seen == [[1, 2]] * 5


def test_ids_count_up_in_confirmation_order_and_are_never_reused() -> None:
    t = tracker(min_hits=1, max_age_s=0.15)
    for frame in range(3):
        t.update(dets(), frame_index=frame)
    t.update(dets(box_at(100), box_at(500)), frame_index=3)
    assert ids(t.update(dets(box_at(101), box_at(501)), frame_index=4)) == [1, 2]
    for frame in range(5, 8):  # both end
        t.update(dets(), frame_index=frame)
    t.update(dets(box_at(100)), frame_index=8)
    assert ids(t.update(dets(box_at(101)), frame_index=9)) == [3]


# ---------------------------------------------------------------- occlusions
@pytest.mark.parametrize("fps", [10, 25])
def test_a_person_hidden_for_one_second_keeps_one_id(fps: int) -> None:
    # Walks right at 1 m/s (25 px per second here), hidden 1 s (10 frames at 10 fps, 25 at 25 fps)
    # behind a post; one setting, max_age_s, holds at both frame rates.
    t = tracker()
    hidden = range(2 * fps, 3 * fps)
    reported = []
    for frame in range(5 * fps):
        x = 100 + 25.0 * frame / fps
        boxes = [] if frame in hidden else [box_at(x, w=20, h=50)]
        reported += ids(t.update(dets(*boxes), frame_index=frame, time_s=frame / fps))
    assert set(reported) == {1}
    assert len(reported) == 5 * fps - fps


@pytest.mark.parametrize("fps", [10, 25])
def test_sort_gives_the_same_person_a_new_id(fps: int) -> None:
    from edgepipe.track import SortTracker

    t = SortTracker(max_age=3)
    reported = set()
    for frame in range(5 * fps):
        boxes = [] if 2 * fps <= frame < 3 * fps else [box_at(100 + 25.0 * frame / fps, w=20, h=50)]
        reported |= set(ids(t.update(dets(*boxes), frame_index=frame)))
    assert reported == {1, 2}


def test_two_people_crossing_paths_keep_their_ids() -> None:
    t = tracker()
    history = []
    for frame in range(40):
        left_to_right = box_at(100 + 5.0 * frame, y=100)
        right_to_left = box_at(300 - 5.0 * frame, y=110)  # they overlap most at frame 20
        tracks = t.update(dets(left_to_right, right_to_left), frame_index=frame, time_s=frame / 10)
        history.append(dict(zip(ids(tracks), tracks.detection_index.tolist(), strict=True)))
    assert all(frame == {1: 0, 2: 1} for frame in history)


def test_two_people_crossing_while_the_front_one_hides_the_other_keep_their_ids() -> None:
    # The one behind is not detected for the 6 frames they overlap most.
    t = tracker()
    seen: dict[int, set[str]] = {}
    for frame in range(40):
        front, back = box_at(100 + 5.0 * frame, y=100), box_at(300 - 5.0 * frame, y=105)
        boxes, who = ([front], ["front"]) if 17 <= frame < 23 else ([front, back], ["front", "back"])
        tracks = t.update(dets(*boxes), frame_index=frame, time_s=frame / 10)
        for track_id, row in zip(ids(tracks), tracks.detection_index.tolist(), strict=True):
            seen.setdefault(track_id, set()).add(who[row])
    assert seen == {1: {"front"}, 2: {"back"}}


def test_the_buffer_lets_a_track_that_drifted_find_its_person_again() -> None:
    # The person stops while hidden; the prediction walks on and no longer overlaps them.
    def run(buffer_ratio: float) -> set[int]:
        t = tracker(buffer_ratio=buffer_ratio, iou_threshold=0.3)
        out: set[int] = set()
        for frame in range(30):
            x = 100 + 4.0 * min(frame, 12)  # walks until frame 12, then stands
            boxes = [] if 10 <= frame < 16 else [box_at(x, w=20, h=50)]
            out |= set(ids(t.update(dets(*boxes), frame_index=frame, time_s=frame / 10)))
        return out

    assert run(0.0) == {1, 2}
    assert run(0.4) == {1}


# ---------------------------------------------------------------- the two score levels
def test_low_score_boxes_never_start_a_track() -> None:
    t = tracker()
    for frame in range(30):
        out = t.update(dets(box_at(100 + frame), box_at(400), score=[0.3, 0.45]), frame_index=frame)
        assert len(out) == 0
    assert len(t) == 0


def test_low_score_boxes_continue_a_track_that_has_no_high_box() -> None:
    t = tracker(low_threshold=0.1)
    reported = []
    for frame in range(20):
        score = 0.2 if 8 <= frame < 14 else 0.9  # half hidden: the detector is unsure
        out = t.update(dets(box_at(100 + 2.0 * frame), score=score), frame_index=frame, time_s=frame / 10)
        reported.append((ids(out), out.score.tolist()))
    assert all(r[0] == [1] for r in reported)
    assert reported[10][1] == [pytest.approx(0.2)]


def test_a_low_score_box_needs_a_close_match_and_loses_to_a_high_one() -> None:
    t = tracker(low_iou_threshold=0.7)
    for frame in range(5):
        t.update(dets(box_at(100)), frame_index=frame)
    # A low box at IoU about 0.6 does not continue the track ...
    out = t.update(dets(box_at(110), score=0.2), frame_index=5)
    assert len(out) == 0
    # ... a high box wins over a better placed low one.
    out = t.update(dets(box_at(100), box_at(106), score=[0.2, 0.9]), frame_index=6)
    assert ids(out) == [1] and out.detection_index.tolist() == [1]


def test_boxes_below_the_low_threshold_are_ignored() -> None:
    t = tracker(low_threshold=0.3)
    for frame in range(5):
        t.update(dets(box_at(100)), frame_index=frame)
    assert len(t.update(dets(box_at(100), score=0.2), frame_index=5)) == 0


# ---------------------------------------------------------------- time
def test_max_age_is_in_seconds_whatever_the_frame_rate() -> None:
    def survives(fps: float, gap_frames: int) -> bool:
        t = tracker(max_age_s=1.0)
        for frame in range(10):
            t.update(dets(box_at(100)), frame_index=frame, time_s=frame / fps)
        for frame in range(10, 10 + gap_frames):
            t.update(dets(), frame_index=frame, time_s=frame / fps)
        return ids(
            t.update(dets(box_at(100)), frame_index=10 + gap_frames, time_s=(10 + gap_frames) / fps)
        ) == [1]

    assert survives(5, 4) and not survives(5, 6)  # 1.0 s then 1.4 s since the last match at 5 fps
    assert survives(30, 29) and not survives(30, 31)


def test_without_time_frames_are_taken_at_the_assumed_rate() -> None:
    t = tracker(max_age_s=1.0, assumed_fps=10)
    for frame in range(10):
        t.update(dets(box_at(100)), frame_index=frame)
    for frame in range(10, 20):
        t.update(dets(), frame_index=frame)
    assert ids(t.update(dets(box_at(100)), frame_index=20)) == [1]  # 1.1 s: ...
    t.update(dets(), frame_index=21)
    t.update(dets(), frame_index=32)  # 1.2 s after frame 20
    assert len(t) == 0


def test_dropped_frames_are_predicted_over() -> None:
    t = tracker()
    for frame in range(10):
        t.update(dets(box_at(10.0 * frame, w=20.0)), frame_index=frame)
    # Frames 10..14 were dropped by a live source; the target moved 60 px, 3 box widths.
    assert ids(t.update(dets(box_at(150.0, w=20.0)), frame_index=15)) == [1]


def test_frame_index_must_increase() -> None:
    t = tracker()
    t.update(dets(), frame_index=7)
    with pytest.raises(ValueError, match="frame_index must increase: got 7 after 7"):
        t.update(dets(), frame_index=7)


# ---------------------------------------------------------------- outputs
def test_detection_index_score_and_class_name_the_row_each_track_was_updated_with() -> None:
    rng = np.random.default_rng(3)
    targets = [(100.0, 100.0), (300.0, 120.0), (500.0, 90.0), (700.0, 300.0)]
    t = tracker(min_hits=1)
    target_of_id: dict[int, int] = {}
    for frame in range(12):
        order = rng.permutation(len(targets))
        boxes = [box_at(targets[i][0] + 3 * frame, targets[i][1]) for i in order]
        frame_dets = Detections(
            np.array(boxes, np.float32),
            (0.6 + np.arange(len(order)) / 10).astype(np.float32),
            order.astype(np.int32),
        )
        tracks = t.update(frame_dets, frame_index=frame)
        assert len(tracks) == len(targets)
        for track_id, row in zip(ids(tracks), tracks.detection_index.tolist(), strict=True):
            assert target_of_id.setdefault(track_id, int(order[row])) == int(order[row])
        np.testing.assert_array_equal(tracks.score, frame_dets.score[tracks.detection_index])
        np.testing.assert_array_equal(tracks.class_id, frame_dets.class_id[tracks.detection_index])
        np.testing.assert_allclose(tracks.xyxy, frame_dets.xyxy[tracks.detection_index], atol=3.0)
    assert sorted(target_of_id) == [1, 2, 3, 4]


def test_empty_frames_give_empty_tracks_of_the_right_types() -> None:
    tracks = tracker().update(Detections.empty())
    assert tracks.xyxy.shape == (0, 4) and tracks.xyxy.dtype == np.float32
    assert tracks.track_id.dtype == np.int64 and tracks.detection_index.dtype == np.intp


def crowd(frames: int, targets: int, seed: int) -> list[Detections]:
    """Crossing targets with misses and mixed scores, so every stage and the buffer are used."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 600, (targets, 2))
    velocity = rng.uniform(-4, 4, (targets, 2))
    out = []
    for f in range(frames):
        top_left = start + f * velocity
        xyxy = np.concatenate([top_left, top_left + np.array([30.0, 60.0])], axis=1) + rng.normal(
            0, 1.5, (targets, 4)
        )
        keep = rng.random(targets) > 0.15
        score = rng.uniform(0.2, 1.0, targets).astype(np.float32)
        out.append(
            Detections(xyxy[keep].astype(np.float32), score[keep], np.zeros(int(keep.sum()), np.int32))
        )
    return out


def test_the_dense_and_the_sparse_matching_give_the_same_tracks(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = crowd(40, 80, seed=5)

    def run() -> list[list[tuple[int, int]]]:
        t = tracker(min_hits=1)
        return [
            sorted(zip(ids(out), out.detection_index.tolist(), strict=True))
            for out in (t.update(d, frame_index=i, time_s=i / 10) for i, d in enumerate(frames))
        ]

    expected = run()
    monkeypatch.setattr(associate, "_DENSE_PAIRS", 0)
    assert run() == expected
    assert sum(map(len, expected)) > 1000


def test_500_targets_keep_their_ids() -> None:
    grid = np.stack(np.meshgrid(np.arange(25) * 50.0, np.arange(20) * 100.0), axis=-1).reshape(-1, 2)
    t = tracker()
    for frame in range(6):
        xyxy = np.concatenate([grid + frame, grid + frame + [40.0, 80.0]], axis=1)
        shuffled = np.random.default_rng(frame).permutation(500)
        frame_dets = Detections(
            xyxy[shuffled].astype(np.float32), np.ones(500, np.float32), np.zeros(500, np.int32)
        )
        tracks = t.update(frame_dets, frame_index=frame)
        assert sorted(ids(tracks)) == list(range(1, 501))
        np.testing.assert_allclose(tracks.xyxy, frame_dets.xyxy[tracks.detection_index], atol=2.0)


# ---------------------------------------------------------------- input checks
def test_invalid_boxes_are_rejected_with_the_row_and_the_box() -> None:
    with pytest.raises(ValueError, match=r"detection 1 has box \[50.0, 10.0, 10.0, 90.0\]"):
        tracker().update(dets(box_at(300), (50.0, 10.0, 10.0, 90.0)))


@pytest.mark.parametrize(
    "settings", [{"max_age_s": 0.0}, {"low_threshold": 1.5}, {"buffer_ratio": -0.1}, {"max_age": 3}]
)
def test_settings_are_checked_by_the_config(settings: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        tracker(**settings)


def test_high_threshold_must_be_a_score() -> None:
    with pytest.raises(ValueError, match="high_threshold must be a score between 0 and 1, got 2"):
        OcclusionTracker(high_threshold=2)


def test_a_coasting_track_stops_changing_its_area() -> None:
    # Shrinking while seen; once it has missed a frame the area holds (an extrapolated area
    # velocity would shrink a hidden person to nothing).
    t = tracker(min_hits=1)
    for frame in range(10):
        t.update(dets(box_at(100, w=40 - 2 * frame, h=80 - 4 * frame)), frame_index=frame)
    last_seen, area_velocity = float(t._tracks[0, 2]), float(t._tracks[0, 6])
    assert area_velocity < -10  # px² per frame
    areas = []
    for frame in range(10, 14):
        t.update(dets(), frame_index=frame)
        areas.append(float(t._tracks[0, 2]))
    # The first miss predicts one step as usual; from then on the area holds.
    assert areas == [pytest.approx(last_seen + area_velocity)] * 4
    assert t._tracks[0, 6] == 0.0


def test_class_aware_matching_keeps_classes_apart_in_both_stages() -> None:
    def run(match_classes: bool, score: float) -> list[int]:
        t = tracker(min_hits=1, match_classes=match_classes)
        person = Detections(
            np.array([box_at(100)], np.float32), np.array([0.9], np.float32), np.array([0], np.int32)
        )
        t.update(person, frame_index=0)
        # Same place, other class, a high (stage 1) or a low (stage 2) score.
        car = Detections(
            np.array([box_at(101)], np.float32), np.array([score], np.float32), np.array([2], np.int32)
        )
        return ids(t.update(car, frame_index=1))

    assert run(True, 0.9) == [] and run(True, 0.3) == []  # a new tentative track / nothing
    assert run(False, 0.9) == [1] and run(False, 0.3) == [1]
