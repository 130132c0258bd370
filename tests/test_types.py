"""The values that flow between stages: shape checks, indexing, and the public event JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepipe.types import EVENT_SCHEMA_VERSION, Detections, Event, Tracks, utc_iso


def detections(n: int) -> Detections:
    xyxy = np.array([[10 * i, 0, 10 * i + 5, 8] for i in range(n)], np.float32).reshape(n, 4)
    return Detections(xyxy, np.linspace(0.5, 0.9, n, dtype=np.float32), np.arange(n, dtype=np.int32))


@pytest.mark.parametrize(
    ("xyxy", "score", "class_id", "message"),
    [
        ((2, 4), (3,), (2,), r"xyxy \(2, 4\), score \(3,\), class_id \(2,\)"),
        ((2, 5), (2,), (2,), r"xyxy \(2, 5\)"),
        ((2, 4), (2,), (2, 1), r"class_id \(2, 1\)"),
    ],
)
def test_detections_with_disagreeing_arrays_are_refused(
    xyxy: tuple[int, ...], score: tuple[int, ...], class_id: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=f"Detections arrays disagree: .*{message}"):
        Detections(np.zeros(xyxy, np.float32), np.zeros(score, np.float32), np.zeros(class_id, np.int32))


def test_detections_index_every_array_together() -> None:
    dets = detections(4)
    kept = dets[dets.score > 0.7]
    assert len(kept) == 2
    np.testing.assert_array_equal(kept.class_id, [2, 3])
    np.testing.assert_array_equal(kept.xyxy[:, 0], [20, 30])
    np.testing.assert_array_equal(dets[np.array([3, 0])].class_id, [3, 0])
    assert len(Detections.empty()) == 0
    assert Detections.empty().xyxy.shape == (0, 4)


def test_tracks_with_disagreeing_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Tracks arrays disagree: .*track_id \(1,\)"):
        Tracks(
            np.zeros((2, 4), np.float32),
            np.zeros(2, np.float32),
            np.zeros(2, np.int32),
            np.zeros(1, np.int64),
            np.zeros(2, np.intp),
            np.zeros(0, np.int64),
        )


def test_empty_tracks_carry_the_ended_ids() -> None:
    tracks = Tracks.empty(np.array([4, 9]))
    assert len(tracks) == 0
    np.testing.assert_array_equal(tracks.ended, [4, 9])
    assert Tracks.empty().ended.shape == (0,)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_795_000_000.1234, "2026-11-18T11:06:40.123Z"),
        (1_795_000_000.9999, "2026-11-18T11:06:40.999Z"),  # truncated, never rounded into the next second
    ],
)
def test_utc_iso_has_milliseconds_and_a_z(timestamp: float, expected: str) -> None:
    assert utc_iso(timestamp) == expected


def test_event_json_is_the_documented_payload() -> None:
    event = Event(
        "line_cross",
        "door",
        "entry",
        0.0,
        track_id=7,
        label="person",
        score=np.float32(0.876543),  # numpy scalars come straight from the tracker
        bbox=(np.float32(10.04), 20.0, 30.06, 40.0),
        frame=123,
        media_time_s=12.30049,
        direction="in",
    )
    payload = json.loads(event.to_json())
    assert payload == {
        "id": event.id,
        "schema": EVENT_SCHEMA_VERSION,
        "type": "line_cross",
        "pipeline": "door",
        "rule": "entry",
        "track_id": 7,
        "label": "person",
        "score": 0.8765,
        "bbox": [10.0, 20.0, 30.1, 40.0],
        "frame": 123,
        "ts": "1970-01-01T00:00:00.000Z",
        "media_time_s": 12.3,
        "direction": "in",
    }  # dwell_s is None for a line crossing: left out, not null
    assert len(event.id) == 32
    assert event.id != Event("zone_enter", "door", "z", 0.0, track_id=1).id


def test_a_counts_reset_event_has_no_track_fields() -> None:
    totals = {"in": 3, "out": 1, "by_label": {"person": {"in": 3, "out": 1}}}
    event = Event("counts_reset", "door", "entry", 1_795_000_000.0, counts=totals)
    assert json.loads(event.to_json()) == {
        "id": event.id,
        "schema": EVENT_SCHEMA_VERSION,
        "type": "counts_reset",
        "pipeline": "door",
        "rule": "entry",
        "ts": "2026-11-18T11:06:40.000Z",
        "counts": totals,
    }
