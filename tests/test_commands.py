"""The closing summary of `edgepipe run`: totals per rule, and per label when there is more than one."""

from __future__ import annotations

from collections import Counter

from edgepipe.commands import summary_text
from edgepipe.pipeline import RunStats
from edgepipe.types import Counts


def test_summary_shows_totals_and_labels_only_when_there_are_several() -> None:
    stats = RunStats(frames=10, detections=4, track_ids={1, 2}, events=Counter(line_cross=3))
    stats.finished = stats.started + 2.0
    counts: Counts = {
        "door": {"in": 2, "out": 1, "by_label": {"car": {"in": 1, "out": 0}, "person": {"in": 1, "out": 1}}},
        "table": {
            "occupancy": 0,
            "enter": 1,
            "exit": 1,
            "by_label": {"person": {"occupancy": 0, "enter": 1, "exit": 1}},
        },
    }
    assert summary_text("p", stats, counts).splitlines() == [
        "p: 10 frames in 2.0 s (5.0 fps), 4 detections, 2 tracks",
        "p: events: line_cross 3",
        "p: door: in 2, out 1; car in 1, out 0; person in 1, out 1",
        "p: table: occupancy 0, enter 1, exit 1",
    ]
