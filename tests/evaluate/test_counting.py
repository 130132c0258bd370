"""Counting truth from gt trajectories and the matching of events to it, on a tiny hand-made gt
whose numbers are worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.errors import EdgepipeError
from edgepipe.evaluate.counting import (
    RuleEvent,
    compare,
    format_table,
    matched_pairs,
    read_events,
    run_rules,
)
from edgepipe.mot import read_trajectories
from edgepipe.rules import LineCrossing, Rules, Zone

FPS = 10.0
LABELS = ["person"]


def row(frame: int, track_id: int, feet_x: float, feet_y: float = 100.0, flag: int = 1) -> str:
    """A gt row of a 20 x 40 box whose bottom centre is (feet_x, feet_y)."""
    return f"{frame},{track_id},{feet_x - 10},{feet_y - 40},20,40,{flag},-1,-1,-1"


# The line x = 100 from top to bottom: "in" (its right-hand side) is the image's left, so walking
# right to left is "in". Band ±10 px. The zone is the rectangle x 120..200; clear inside from x 130.
def gt_rows() -> list[str]:
    rows = []
    # 1 walks right: x = 40 + 10 (f - 1) for frames 1..12. Beyond the band on the left until x = 80
    # (frame 5), beyond it on the right from x = 120 (frame 9): "out" at source frame 8. Clear inside
    # the zone from x = 140 (frame 11): enter at 10; still inside at the end: exit at 11 (close).
    rows += [row(f, 1, 40 + 10 * (f - 1)) for f in range(1, 13)]
    # 2 walks left: x = 170 - 10 (f - 3) for frames 3..12. Enters at once (2), clear outside at x = 100
    # (frame 10): exit at 9; beyond the band on the left at x = 80 (frame 12): "in" at 11.
    rows += [row(f, 2, 170 - 10 * (f - 3)) for f in range(3, 13)]
    # 3 walks into the band and turns back: no crossing.
    rows += [row(f, 3, x) for f, x in enumerate([60, 70, 80, 90, 95, 90, 80, 70], start=1)]
    # 4 stands far from both, frames 1..40, so the sequence is 40 frames (4 s) long.
    rows += [row(f, 4, 30, 190) for f in range(1, 41)]
    # 5 would cross, but its rows have flag 0: not evaluated.
    rows += [row(f, 5, 40 + 20 * (f - 1), flag=0) for f in range(1, 8)]
    return rows


def rules() -> Rules:
    return Rules(
        [
            LineCrossing("door", (100, 0), (100, 200), pipeline="p", labels=LABELS),
            Zone("shop", [(120, 0), (200, 0), (200, 200), (120, 200)], pipeline="p", labels=LABELS),
        ]
    )


@pytest.fixture
def truth(tmp_path: Path) -> list[RuleEvent]:
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(gt_rows()) + "\n")
    events = run_rules(rules(), read_trajectories(gt, ground_truth=True), FPS)
    return [e for e in (RuleEvent.of(event) for event in events) if e is not None]


def test_truth_is_what_the_rules_give_on_the_gt_boxes(truth: list[RuleEvent]) -> None:
    assert sorted((e.rule, e.kind, e.frame) for e in truth) == [
        ("door", "in", 11),
        ("door", "out", 8),
        ("shop", "enter", 2),
        ("shop", "enter", 10),
        ("shop", "exit", 9),
        ("shop", "exit", 11),
    ]


def test_counts_matched_missed_extra_and_occupancy_by_hand(truth: list[RuleEvent]) -> None:
    counted = [
        RuleEvent("door", "out", 9, linked=True),  # 0.1 s after the true one: matched
        RuleEvent("door", "out", 30),  # no true crossing near: extra
        # the true "in" at 11 has no event: missed
        RuleEvent("shop", "enter", 2),
        RuleEvent("shop", "enter", 25),  # 1.5 s after the true enter at 10: outside the 1 s window
        RuleEvent("shop", "exit", 9),
        RuleEvent("shop", "exit", 11),
        RuleEvent("shop", "exit", 45),  # after the gt's last frame (39): left out
        RuleEvent("other", "in", 5),  # a rule the report does not know: left out
    ]
    report = compare({"door": "line", "shop": "zone"}, truth, counted, fps=FPS, frames=40)
    payload = report.to_dict()
    assert payload["rules"]["door"] == {
        "type": "line",
        "in": {"true": 1, "counted": 0, "matched": 0, "linked": 0, "missed": 1, "extra": 0},
        "out": {"true": 1, "counted": 2, "matched": 1, "linked": 1, "missed": 0, "extra": 1},
        "abs_count_error": 2,
    }
    shop = payload["rules"]["shop"]
    assert shop["enter"] == {"true": 2, "counted": 2, "matched": 1, "linked": 0, "missed": 1, "extra": 1}
    assert shop["exit"] == {"true": 2, "counted": 2, "matched": 2, "linked": 0, "missed": 0, "extra": 0}
    assert shop["abs_count_error"] == 0  # the totals agree even though one enter is late
    # Occupancy, frames 0..39. True: 1 over 2..8 and at 10, else 0 (mean 8/40). Counted: 1 over 2..8,
    # 0 at 9 and 10, -1 over 11..24 (the late enter), 0 from 25: off by one at 10..24 (15 frames).
    assert shop["occupancy"] == {
        "mean_abs_error": 0.375,
        "max_abs_error": 1,
        "true_mean": 0.2,
        "counted_mean": -0.175,
    }
    assert payload["lines"] == {
        "true": 2, "counted": 2, "matched": 1, "linked": 1, "missed": 1, "extra": 1, "abs_count_error": 2
    }  # fmt: skip
    assert (payload["fps"], payload["frames"], payload["window_s"]) == (FPS, 40, 1.0)
    table = format_table(report)
    assert "door             out          1        2        1       0      1       1" in table
    assert "lines: 2 true, 2 counted, 1 matched, 1 missed, 1 extra; total |count error| 2" in table


def test_a_wider_window_matches_the_late_enter(truth: list[RuleEvent]) -> None:
    counted = [RuleEvent("shop", "enter", 2), RuleEvent("shop", "enter", 25)]
    report = compare({"shop": "zone"}, truth, counted, fps=FPS, frames=40, window_s=2.0)
    assert report.to_dict()["rules"]["shop"]["enter"]["matched"] == 2


@pytest.mark.parametrize(
    ("true", "counted", "window", "expected"),
    [
        ([10, 20], [15], 10.0, 1),  # one event cannot match two
        ([10], [10, 11], 10.0, 1),  # a double count: one matched, one extra
        ([10], [21], 10.0, 0),  # just outside the window
        ([10], [20], 10.0, 1),  # on its edge
        # Nearest-first would pair 10 with 9 and leave 0 and 19 apart; the most pairs is 2.
        ([0, 10], [9, 19], 10.0, 2),
        ([], [1, 2], 10.0, 0),
    ],
)
def test_matching_is_one_to_one_and_takes_the_most_pairs(
    true: list[int], counted: list[int], window: float, expected: int
) -> None:
    assert matched_pairs(true, counted, window_frames=window) == expected


def test_read_events_keeps_the_rule_events_of_one_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        {
            "type": "line_cross",
            "pipeline": "p",
            "rule": "door",
            "direction": "in",
            "frame": 3,
            "linked_from": 7,
        },
        {"type": "zone_enter", "pipeline": "p", "rule": "shop", "frame": 4},
        {"type": "line_cross", "pipeline": "other", "rule": "door", "direction": "out", "frame": 5},
        {"type": "track_start", "pipeline": "p", "rule": "x", "frame": 6},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert read_events(path, "p") == [RuleEvent("door", "in", 3, True), RuleEvent("shop", "enter", 4, False)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON: Expecting value"),
        ("[1, 2]", "expected one JSON object (an event) per line"),
        ('{"type": "line_cross", "pipeline": "p", "rule": "door", "direction": "in"}', "field 'frame' is None, not a frame number"),
        ('{"type": "line_cross", "pipeline": "p", "rule": "door", "direction": "up", "frame": 1}', "field 'direction' is 'up', not 'in' or 'out'"),
    ],
)  # fmt: skip
def test_bad_events_files_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "zone_enter", "pipeline": "p", "rule": "z", "frame": 1}\n' + line + "\n")
    with pytest.raises(EdgepipeError) as error:
        read_events(path, "p")
    assert str(error.value).startswith(f"{path}:2: {message}")
