"""Line and zone rules, frame by frame on hand-made tracks with the expected events written out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edgepipe.errors import ConfigError
from edgepipe.geometry import Polygon
from edgepipe.linking import TrackLinker
from edgepipe.rules import LineCrossing, Rules, Zone
from edgepipe.types import Event, Frame, Tracks, totals

LABELS = ["person", "bicycle", "car"]
IMAGE = np.zeros((4, 4, 3), np.uint8)
T0 = 1_800_000_000.0


def frame(index: int, fps: float = 10.0, source: bool = True) -> Frame:
    return Frame(IMAGE, index, T0 + index / fps, index / fps if source else None)


def feet(x: float, y: float) -> list[float]:
    """A 20 x 40 box whose bottom centre is (x, y)."""
    return [x - 10, y - 40, x + 10, y]


def tracks(
    rows: Sequence[tuple[int, Sequence[float]]], ended: Sequence[int] = (), class_id: int = 0
) -> Tracks:
    n = len(rows)
    return Tracks(
        np.array([r[1] for r in rows], np.float32).reshape(n, 4),
        np.full(n, 0.9, np.float32),
        np.full(n, class_id, np.int32),
        np.array([r[0] for r in rows], np.int64),
        np.arange(n, dtype=np.intp),
        np.array(ended, np.int64),
    )


def run_path(
    rule: LineCrossing | Zone, path: Sequence[tuple[float, float] | None], track_id: int = 1
) -> list[Event]:
    """Feed one track along `path` (None = not seen that frame), then end it."""
    events: list[Event] = []
    for i, point in enumerate(path):
        rows = [] if point is None else [(track_id, feet(*point))]
        events += rule.update(tracks(rows), frame(i))
    events += rule.update(tracks([], ended=[track_id]), frame(len(path)))
    return events


def summary(events: Sequence[Event]) -> list[tuple[str, int, int, str | None]]:
    return [(e.type, e.track_id, e.frame, e.direction) for e in events]


def door(**kwargs: object) -> LineCrossing:
    """Horizontal line y = 100 from x = 0 to x = 200, drawn left→right: below it is "right" = in."""
    return LineCrossing("door", (0, 100), (200, 100), pipeline="p", labels=LABELS, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- line
def test_line_downward_crossing_is_in_with_full_payload() -> None:
    rule = door()
    events = run_path(rule, [(50, 60), (50, 80), (50, 95), (50, 112), (50, 130)])
    assert summary(events) == [("line_cross", 1, 3, "in")]
    e = events[0]
    assert (e.pipeline, e.rule, e.label, e.ts) == ("p", "door", "person", T0 + 0.3)
    assert e.bbox == (40.0, 72.0, 60.0, 112.0)
    assert e.score == pytest.approx(0.9)
    assert totals(rule.counts()) == {"in": 1, "out": 0}


def test_line_upward_crossing_is_out() -> None:
    rule = door()
    assert summary(run_path(rule, [(50, 150), (50, 120), (50, 80)])) == [("line_cross", 1, 2, "out")]
    assert totals(rule.counts()) == {"in": 0, "out": 1}


def test_in_side_left_flips_direction() -> None:
    rule = door(in_side="left")
    assert summary(run_path(rule, [(50, 60), (50, 140)])) == [("line_cross", 1, 1, "out")]


def test_jitter_across_the_line_counts_once() -> None:
    # Oscillates ±8 px around y = 100 (inside the 10 px band) several times before walking on.
    path = [(50, 70), (50, 92), (50, 108), (50, 93), (50, 107), (50, 95), (50, 109), (50, 140)]
    rule = door()
    assert summary(run_path(rule, path)) == [("line_cross", 1, 7, "in")]
    assert totals(rule.counts()) == {"in": 1, "out": 0}


def test_jitter_without_hysteresis_counts_every_flip() -> None:
    path = [(50, 70), (50, 92), (50, 108), (50, 93), (50, 107)]
    assert summary(run_path(door(hysteresis_px=0.0), path)) == [
        ("line_cross", 1, 2, "in"),
        ("line_cross", 1, 3, "out"),
        ("line_cross", 1, 4, "in"),
    ]


def test_cross_and_return_counts_in_then_out() -> None:
    rule = door()
    path = [(50, 60), (50, 130), (50, 140), (50, 100), (50, 70)]
    assert summary(run_path(rule, path)) == [("line_cross", 1, 1, "in"), ("line_cross", 1, 4, "out")]
    assert totals(rule.counts()) == {"in": 1, "out": 1}


def test_track_first_seen_on_the_line_has_no_side_until_it_leaves_the_band() -> None:
    # Appears on the line and walks down: it never was on the other side, so no crossing...
    assert run_path(door(), [(50, 100), (50, 105), (50, 130), (50, 160)]) == []
    # ...but once it has a side, going back across counts.
    assert summary(run_path(door(), [(50, 101), (50, 130), (50, 60)])) == [("line_cross", 1, 2, "out")]


def test_crossing_outside_the_segment_does_not_count() -> None:
    # x = 250 is beyond the end of the segment (projection 1.25).
    assert run_path(door(), [(250, 60), (250, 140)]) == []
    # Walking round the end changes side without counting; then crossing back inside counts "out".
    events = run_path(door(), [(250, 60), (250, 140), (150, 140), (150, 60)])
    assert summary(events) == [("line_cross", 1, 3, "out")]


def test_diagonal_line() -> None:
    # Line from (0, 0) to (200, 200): "right" of it on screen is below-left (x < y).
    rule = LineCrossing("diag", (0, 0), (200, 200), pipeline="p", labels=LABELS, hysteresis_px=5.0)
    path = [(150, 50), (120, 80), (100, 100), (80, 120), (50, 150)]
    assert summary(run_path(rule, path)) == [("line_cross", 1, 3, "in")]
    # Back across near the end of the segment, with a step that stays inside the 5 px band (|d| = 2.8).
    assert summary(run_path(rule, [(170, 190), (182, 178), (190, 170)], track_id=2)) == [
        ("line_cross", 2, 2, "out")
    ]
    assert totals(rule.counts()) == {"in": 1, "out": 1}


def test_reference_point_center_uses_box_middle() -> None:
    # Feet cross y = 100 at frame 1 but the centre (20 px higher) only at frame 2.
    rule = door(reference_point="center")
    assert summary(run_path(rule, [(50, 85), (50, 115), (50, 140)])) == [("line_cross", 1, 2, "in")]


def test_class_filter_and_label_names() -> None:
    rule = door(class_ids=[2])
    person = [
        rule.update(tracks([(1, feet(50, 60))]), frame(0)),
        rule.update(tracks([(1, feet(50, 140))]), frame(1)),
    ]
    assert person == [[], []]
    rule.update(tracks([(2, feet(50, 60))], class_id=2), frame(2))
    events = rule.update(tracks([(2, feet(50, 140))], class_id=2), frame(3))
    assert [(e.label, e.direction) for e in events] == [("car", "in")]


def test_unknown_class_id_uses_the_number_as_label() -> None:
    rule = door()
    rule.update(tracks([(1, feet(50, 60))], class_id=7), frame(0))
    assert [e.label for e in rule.update(tracks([(1, feet(50, 140))], class_id=7), frame(1))] == ["7"]


def test_several_tracks_in_one_frame() -> None:
    rule = door()
    rule.update(tracks([(1, feet(20, 60)), (2, feet(60, 140)), (3, feet(90, 60))]), frame(0))
    events = rule.update(tracks([(1, feet(20, 140)), (2, feet(60, 60)), (3, feet(90, 70))]), frame(1))
    assert summary(events) == [("line_cross", 1, 1, "in"), ("line_cross", 2, 1, "out")]


def test_state_is_dropped_when_a_track_ends() -> None:
    rule = door()
    rule.update(tracks([(1, feet(50, 60)), (2, feet(80, 60))]), frame(0))
    assert set(rule._state) == {1, 2}
    rule.update(tracks([(2, feet(80, 60))], ended=[1]), frame(1))
    assert set(rule._state) == {2}
    # An id seen again after it ended starts without a side.
    assert rule.update(tracks([(1, feet(50, 140))]), frame(2)) == []


@pytest.mark.parametrize(
    ("start", "end", "kwargs", "message"),
    [
        ((0, 0), (0, 0), {}, "rule 'door': start and end are the same point"),
        ((0, 0), (1, 0), {"in_side": "up"}, "rule 'door': in_side must be 'left' or 'right', not 'up'"),
        ((0, 0), (1, 0), {"hysteresis_px": -1}, "rule 'door': hysteresis_px must be >= 0, not -1"),
    ],
)
def test_line_rejects_bad_settings(
    start: tuple[float, float], end: tuple[float, float], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LineCrossing("door", start, end, pipeline="p", labels=LABELS, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- zone
# A U shape (concave): the notch x in (100, 200), y in (0, 200) is outside.
U_SHAPE = [(0, 0), (100, 0), (100, 200), (200, 200), (200, 0), (300, 0), (300, 300), (0, 300)]


def zone(**kwargs: object) -> Zone:
    return Zone("counter", U_SHAPE, pipeline="p", labels=LABELS, **kwargs)  # type: ignore[arg-type]


def zsummary(events: Sequence[Event]) -> list[tuple[str, int, int, float | None]]:
    return [(e.type, e.track_id, e.frame, e.dwell_s) for e in events]


def test_zone_enter_and_exit_with_dwell_across_a_concave_notch() -> None:
    rule = zone()
    # Walks right through the notch (outside), along the bottom bar (inside) and out at the right edge.
    path = [(150, 100), (150, 250), (250, 250), (250, 280), (350, 280)]
    assert zsummary(run_path(rule, path)) == [("zone_enter", 1, 1, None), ("zone_exit", 1, 4, 0.3)]
    assert totals(rule.counts()) == {"occupancy": 0, "enter": 1, "exit": 1}


def test_zone_notch_is_outside_while_the_bounding_box_would_contain_it() -> None:
    rule = zone()
    # (150, 50) lies within the polygon's bounding box but in the notch.
    assert run_path(rule, [(150, 50), (160, 60), (150, 150)]) == []


def test_zone_track_first_seen_inside_enters_and_ending_inside_exits() -> None:
    rule = zone()
    rule.update(tracks([(5, feet(50, 50))]), frame(0))
    assert totals(rule.counts()) == {"occupancy": 1, "enter": 1, "exit": 0}
    rule.update(tracks([(5, feet(50, 60))]), frame(1))
    events = rule.update(tracks([], ended=[5]), frame(2))
    # Released when it ends (no linker here), stamped with its last sighting: frame 1, 0.1 s inside.
    assert zsummary(events) == [("zone_exit", 5, 1, 0.1)]
    assert (events[0].bbox, events[0].ts) == ((40.0, 20.0, 60.0, 60.0), T0 + 0.1)  # the last box seen
    assert totals(rule.counts()) == {"occupancy": 0, "enter": 1, "exit": 1}


def test_zone_occupancy_counts_tracks_inside() -> None:
    rule = zone()
    rule.update(tracks([(1, feet(50, 50)), (2, feet(250, 50)), (3, feet(150, 50))]), frame(0))
    assert totals(rule.counts()) == {"occupancy": 2, "enter": 2, "exit": 0}


def test_zone_loiter_fires_once_per_visit() -> None:
    rule = zone(loiter_s=0.5)
    path = [(50, 50)] * 8 + [(150, 100), (50, 50), (50, 50)]
    assert zsummary(run_path(rule, path)) == [
        ("zone_enter", 1, 0, None),
        ("zone_loiter", 1, 5, 0.5),
        ("zone_exit", 1, 8, 0.8),
        ("zone_enter", 1, 9, None),
        ("zone_exit", 1, 10, 0.1),  # ends after frame 10: its last sighting
    ]
    assert totals(rule.counts()) == {"occupancy": 0, "enter": 2, "exit": 2, "loiter": 1}


def test_zone_dwell_uses_source_time_when_present_else_capture_time() -> None:
    rule = zone()
    # Source time runs at 10 fps, capture time is not used when source time exists.
    rule.update(tracks([(1, feet(50, 50))]), Frame(IMAGE, 0, T0, 0.0))
    out = rule.update(tracks([(1, feet(150, 50))]), Frame(IMAGE, 1, T0 + 0.01, 2.0))
    assert zsummary(out) == [("zone_exit", 1, 1, 2.0)]
    live = zone()
    live.update(tracks([(1, feet(50, 50))]), Frame(IMAGE, 0, T0, None))
    out = live.update(tracks([(1, feet(150, 50))]), Frame(IMAGE, 1, T0 + 1.5, None))
    assert zsummary(out) == [("zone_exit", 1, 1, 1.5)]


def test_zone_state_does_not_grow_after_tracks_end() -> None:
    rule = zone()
    for i in range(100):
        rule.update(tracks([(i, feet(50, 50))], ended=[i - 1] if i else []), frame(i))
    assert list(rule._inside) == [99]
    assert totals(rule.counts()) == {"occupancy": 1, "enter": 100, "exit": 99}


def per_frame(rule: Zone, path: Sequence[tuple[float, float]]) -> list[list[tuple[str, float | None]]]:
    """Feed one track (id 1) along `path` without ending it → (type, dwell_s) of each frame's events."""
    return [
        [(e.type, e.dwell_s) for e in rule.update(tracks([(1, feet(*p))]), frame(i))]
        for i, p in enumerate(path)
    ]


ENTER = ("zone_enter", None)

# Feet at x = 50 in the U's left arm; its bottom edge is y = 300 (inside above, outside below).
# The y values give the distance to that edge: 295 is 5 px inside, 305 is 5 px outside.
STANDING_ON_THE_EDGE = [(50.0, 250.0), (50, 295), (50, 305), (50, 295), (50, 305), (50, 295), (50, 305)]
APPROACHING_THE_EDGE = [(50.0, 340.0), (50, 305), (50, 295), (50, 305), (50, 295)]


@pytest.mark.parametrize(
    ("path", "hysteresis_px", "expected"),
    [
        # Inside, then jitters ±5 px across the edge: one enter, no exit while it stays there.
        (STANDING_ON_THE_EDGE, 10.0, [[ENTER], [], [], [], [], [], []]),
        # Without hysteresis every crossing of the edge is an event, with tiny dwell times.
        (
            STANDING_ON_THE_EDGE,
            0.0,
            [[ENTER], [], [("zone_exit", 0.2)], [ENTER], [("zone_exit", 0.1)], [ENTER], [("zone_exit", 0.1)]],
        ),
        # Comes from outside and stands on the edge: never gets clear inside, so nothing happens.
        (APPROACHING_THE_EDGE, 10.0, [[], [], [], [], []]),
        (APPROACHING_THE_EDGE, 0.0, [[], [], [ENTER], [("zone_exit", 0.1)], [ENTER]]),
    ],
)
def test_zone_jitter_on_the_edge(
    path: list[tuple[float, float]], hysteresis_px: float, expected: list[list[tuple[str, float | None]]]
) -> None:
    assert per_frame(zone(hysteresis_px=hysteresis_px), path) == expected


def test_zone_loiter_counts_time_on_the_edge_after_entering() -> None:
    assert per_frame(zone(loiter_s=0.5), STANDING_ON_THE_EDGE) == [
        [ENTER],
        [],
        [],
        [],
        [],
        [("zone_loiter", 0.5)],
        [],
    ]


@pytest.mark.parametrize(
    ("hysteresis_px", "expected"),
    [
        # Clear inside at frame 4 (15 px in), clear outside at frame 9 (11 px out): dwell 0.5 s.
        (10.0, [("zone_enter", 1, 4, None), ("zone_exit", 1, 9, 0.5)]),
        # Without hysteresis the edge itself decides: in at frame 3, out at frame 7.
        (0.0, [("zone_enter", 1, 3, None), ("zone_exit", 1, 7, 0.4)]),
    ],
)
def test_zone_deep_in_and_far_out_enters_and_exits_once(
    hysteresis_px: float, expected: list[tuple[str, int, int, float | None]]
) -> None:
    rule = zone(hysteresis_px=hysteresis_px)
    path = [
        (50, 340),  # 0: 40 px outside
        (50, 320),  # 1: 20 px outside
        (50, 305),  # 2: in the band, outside
        (50, 295),  # 3: in the band, inside
        (50, 285),  # 4: 15 px inside
        (50, 250),  # 5: 50 px inside
        (50, 295),  # 6: in the band, inside
        (50, 305),  # 7: in the band, outside
        (50, 309),  # 8: in the band, outside
        (50, 311),  # 9: 11 px outside
    ]
    assert zsummary(run_path(rule, path)) == expected  # the track ends at frame 10, already outside
    assert totals(rule.counts()) == {"occupancy": 0, "enter": 1, "exit": 1}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # First seen in the band, 5 px inside: nothing until it is more than 10 px inside (frame 2).
        ([(50, 295), (50, 292), (50, 289), (50, 250)], [[], [], [ENTER], []]),
        # First seen in the band, 5 px outside, then walks in: the same.
        ([(50, 305), (50, 298), (50, 289), (50, 250)], [[], [], [ENTER], []]),
        # First seen in the band, 5 px inside, then walks out: it never was inside, so no exit.
        ([(50, 295), (50, 305), (50, 340)], [[], [], []]),
        # 2 px from the line through the notch's floor (y = 200) but 50 px from the floor itself:
        # clear inside, enters at once (distance is to the edges, not to their infinite lines).
        ([(50, 202), (50, 198)], [[ENTER], []]),
    ],
)
def test_zone_track_first_seen_in_the_band_has_no_state_until_it_leaves_it(
    path: list[tuple[float, float]], expected: list[list[tuple[str, float | None]]]
) -> None:
    assert per_frame(zone(), path) == expected


@pytest.mark.parametrize(
    ("hysteresis_px", "expected"),
    [
        # Down the middle of the notch (outside, 50 px from its walls), across its floor y = 200
        # into the bottom bar: clear inside at frame 4 (15 px below the floor).
        (10.0, [[], [], [], [], [ENTER], [], []]),
        (0.0, [[], [], [], [ENTER], [], [], []]),
    ],
)
def test_zone_hysteresis_in_a_concave_polygon(
    hysteresis_px: float, expected: list[list[tuple[str, float | None]]]
) -> None:
    # Frame 5 is 5 px below the notch's floor next to its inner corner (100, 200): in the band,
    # stays in; frame 6 is 50 px from every edge.
    path = [(150, 50), (150, 150), (150, 195), (150, 205), (150, 215), (105, 205), (50, 250)]
    assert per_frame(zone(hysteresis_px=hysteresis_px), path) == expected


def test_zone_without_hysteresis_follows_the_polygon_frame_by_frame() -> None:
    # A random walk over the U and around it: with hysteresis_px = 0 the zone is in exactly where
    # the polygon says so (no point lands exactly on an edge), i.e. the rule without a band.
    rng = np.random.default_rng(4)
    path = np.cumsum(rng.normal(0, 25, (400, 2)), axis=0) % 360 - 30
    rule = zone(hysteresis_px=0.0)
    inside = [Polygon(U_SHAPE).signed_distance(x, y) > 0 for x, y in path.tolist()]
    for i, point in enumerate(path.tolist()):
        events = rule.update(tracks([(1, feet(*point))]), frame(i))
        was_inside = i > 0 and inside[i - 1]
        expected = {(False, True): ["zone_enter"], (True, False): ["zone_exit"]}.get(
            (was_inside, inside[i]), []
        )
        assert [e.type for e in events] == expected, f"frame {i}"
    assert 20 < totals(rule.counts())["enter"] < 200  # the walk does cross the edge many times


@pytest.mark.parametrize(
    ("polygon", "kwargs", "message"),
    [
        ([(0, 0), (1, 1)], {}, "rule 'counter': polygon needs at least 3"),
        (U_SHAPE, {"loiter_s": 0}, "rule 'counter': loiter_s must be > 0, not 0"),
        (U_SHAPE, {"hysteresis_px": -1}, "rule 'counter': hysteresis_px must be >= 0, not -1"),
    ],
)
def test_zone_rejects_bad_settings(
    polygon: list[tuple[int, int]], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Zone("counter", polygon, pipeline="p", labels=LABELS, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- rules
def test_rules_update_counts_and_close() -> None:
    rules = Rules([door(), zone()])
    first = rules.update(tracks([(1, feet(50, 60))]), frame(0))
    second = rules.update(tracks([(1, feet(50, 140))]), frame(1))
    assert [(e.type, e.rule) for e in first] == [("zone_enter", "counter")]
    assert [(e.type, e.rule, e.direction) for e in second] == [("line_cross", "door", "in")]
    assert rules.counts() == {
        "door": {"in": 1, "out": 0, "by_label": {"person": {"in": 1, "out": 0}}},
        "counter": {
            "occupancy": 1,
            "enter": 1,
            "exit": 0,
            "by_label": {"person": {"occupancy": 1, "enter": 1, "exit": 0}},
        },
    }
    closing = rules.close()
    assert [(e.type, e.frame, e.dwell_s) for e in closing] == [("zone_exit", 1, 0.1)]
    assert totals(rules.counts()["counter"]) == {"occupancy": 0, "enter": 1, "exit": 1}


def test_rules_close_before_any_frame_is_empty() -> None:
    assert Rules([door(), zone()]).close() == []


def test_rules_reject_duplicate_names() -> None:
    with pytest.raises(ConfigError, match="rule names must be unique; repeated: door"):
        Rules([door(), door()])


def test_event_ids_are_unique_and_json_is_schema_1() -> None:
    rule = door(hysteresis_px=0.0)
    events = run_path(rule, [(50, 60), (50, 140)] * 20)
    assert len(events) == 39
    assert len({e.id for e in events}) == 39
    payload = events[0].to_dict()
    assert payload["schema"] == 1
    assert payload["ts"] == "2027-01-15T08:00:00.100Z"
    assert payload["direction"] == "in"


# ---------------------------------------------------------------- broken tracks (linking)
def linked(*rules: LineCrossing | Zone) -> Rules:
    return Rules(list(rules), TrackLinker(max_gap_s=2.0, max_distance=0.75))


Step = dict[int, tuple[float, float]]  # track id → feet of the tracks seen in one frame


def play(rules: Rules, steps: Sequence[Step | None], ends: dict[int, int] | None = None) -> list[Event]:
    """Feed frames (None: nobody seen); `ends` maps a frame to the id the tracker ends in it. Every
    track still there at the end ends after the last frame, and the rules are closed."""
    ends = ends or {}
    events: list[Event] = []
    seen: set[int] = set()
    for i, step in enumerate(steps):
        rows = [(tid, feet(*p)) for tid, p in (step or {}).items()]
        seen.update(tid for tid, _ in rows)
        ended = [ends[i]] if i in ends else []
        seen.difference_update(ended)
        events += rules.update(tracks(rows, ended=ended), frame(i))
    events += rules.update(tracks([], ended=sorted(seen)), frame(len(steps)))
    return events + rules.close()


def crossings(events: Sequence[Event]) -> list[tuple[int, int, str | None, int | None]]:
    return [(e.track_id, e.frame, e.direction, e.linked_from) for e in events if e.type == "line_cross"]


def down(track_id: int, ys: Sequence[float], x: float = 50.0) -> list[Step | None]:
    return [{track_id: (x, y)} for y in ys]


# Walking down at 10 px a frame (100 px/s), lost for 3 frames just above the band (90..110) of the
# door y = 100, found again below it: the crossing happened while nobody saw it.
FRAGMENTED = [*down(1, [40, 50, 60, 70, 80]), None, None, None, *down(2, [120, 130, 140, 150])]


def test_a_fragment_found_past_the_line_is_counted_once() -> None:
    events = play(linked(door()), FRAGMENTED, ends={7: 1})
    assert crossings(events) == [(2, 8, "in", 1)]
    assert events[0].to_dict()["linked_from"] == 1
    # Without linking the new track starts past the line and the crossing is lost.
    assert crossings(play(Rules([door()]), FRAGMENTED, ends={7: 1})) == []


def test_a_re_found_person_is_not_counted_again() -> None:
    # Crosses (counted), is lost below the line, found further down: still one crossing.
    path = [*down(1, [70, 90, 115, 125]), None, None, *down(2, [155, 165, 175])]
    assert crossings(play(linked(door()), path, ends={5: 1})) == [(1, 2, "in", None)]


def test_a_person_standing_on_the_line_with_jittering_boxes_counts_once() -> None:
    # Walks to the line, stands on it for 2 s with boxes jittering ±8 px across it, the track breaks
    # while standing there (a new id in the band), then walks on.
    standing = [100 + 8 * (-1) ** i for i in range(10)]
    path = [*down(1, [60, 75, 90, *standing]), None, *down(2, [*standing, 120, 140])]
    events = play(linked(door()), path, ends={13: 1})
    assert crossings(events) == [(2, 24, "in", 1)]  # leaves the band below at frame 24


def test_two_people_side_by_side_count_twice() -> None:
    # Walk down 40 px apart, both lost before the line, both found past it: two crossings, each
    # carried on by the right track.
    path: list[Step | None] = [{1: (40, y), 2: (80, y)} for y in (40, 50, 60, 70, 80)]
    path += [None, None, None, {3: (40, 120), 4: (80, 121)}, {3: (40, 130), 4: (80, 131)}]
    events = play(linked(door()), path, ends={7: 1, 6: 2})
    assert sorted(crossings(events)) == [(3, 8, "in", 1), (4, 8, "in", 2)]


def test_a_person_who_turns_back_before_the_line_counts_zero() -> None:
    # Walks down into the band, turns back, is lost and found again walking up.
    path = [*down(1, [60, 75, 88, 96, 92]), None, None, *down(2, [70, 60, 50, 40])]
    events = play(linked(door()), path, ends={6: 1})
    assert crossings(events) == []


def test_a_linked_track_that_crosses_back_counts_the_opposite_way() -> None:
    back = down(2, [140, 130, 110, 95, 80, 70])
    events = play(linked(door()), [*FRAGMENTED[:8], *back], ends={7: 1})
    assert crossings(events) == [(2, 8, "in", 1), (2, 12, "out", 1)]


def test_a_successor_that_only_the_gate_puts_past_the_line_is_not_a_crossing() -> None:
    # Walks along the line 15 px above it (heading right, not down), is lost, and a track appears
    # 12 px below the line where it was going: close enough to link, but its motion never led across.
    path: list[Step | None] = [{1: (x, 85)} for x in (20, 30, 40, 50)]
    path += [None, None, {2: (90, 112)}, {2: (100, 112)}]
    events = play(linked(door()), path, ends={5: 1})
    assert crossings(events) == []


def test_a_link_found_after_the_new_track_began_counts_the_crossing_then() -> None:
    # The tracker coasts track 1 (last seen at frame 4) and ends it at frame 8; track 2 is first
    # seen at frame 6, past the line. The link (and the crossing) come at frame 8, stamped with
    # track 2's last sighting before it: frame 7.
    rules = linked(door())
    for i, y in enumerate([40, 50, 60, 70, 80]):
        assert rules.update(tracks([(1, feet(50, y))]), frame(i)) == []
    assert rules.update(tracks([]), frame(5)) == []
    for i, y in ((6, 120), (7, 130)):
        assert rules.update(tracks([(2, feet(50, y))]), frame(i)) == []  # 2 alone was never above
    events = rules.update(tracks([(2, feet(50, 140))], ended=[1]), frame(8))
    assert crossings(events) == [(2, 7, "in", 1)]
    assert events[0].bbox == (40.0, 90.0, 60.0, 130.0)


def test_first_seen_in_the_band_takes_its_side_when_it_leaves_and_jitter_adds_no_crossing() -> None:
    jitter = [100, 92, 108, 93, 107, 95, 109, 93, 107]
    for rules in (Rules([door()]), linked(door())):
        # First seen on the line, jitters ±8 px across it, walks off below: never seen above, no count.
        assert crossings(play(rules, down(1, [*jitter, 140, 160]))) == []
    for rules in (Rules([door()]), linked(door())):
        # The same, then back up across: the side it took counts.
        assert [c[2] for c in crossings(play(rules, down(1, [*jitter, 140, 160, 120, 70])))] == ["out"]
    for rules in (Rules([door()]), linked(door())):
        # The jitter fixture of test_jitter_across_the_line_counts_once, from above: once.
        path = down(1, [70, 92, 108, 93, 107, 95, 109, 140])
        assert [c[2] for c in crossings(play(rules, path))] == ["in"]


def test_a_broken_track_inside_a_zone_is_not_an_exit_and_an_enter() -> None:
    # Walks up into the U's left arm (clear inside at frame 2), is lost inside for 3 frames, found
    # inside, walks out at the bottom (clear outside at frame 8).
    path = [*down(1, [340, 290, 250]), None, None, None, *down(2, [240, 280, 330])]
    events = play(linked(zone()), path, ends={5: 1})
    assert [(e.type, e.track_id, e.frame, e.dwell_s, e.linked_from) for e in events] == [
        ("zone_enter", 1, 2, None, None),
        ("zone_exit", 2, 8, 0.6, 1),  # one visit, of 1 and then 2, from frame 2 to frame 8
    ]
    # Without linking: an exit when track 1 ends (stamped with its last sighting), and an enter.
    unlinked = play(Rules([zone()]), path, ends={5: 1})
    assert [(e.type, e.track_id, e.frame) for e in unlinked] == [
        ("zone_enter", 1, 2),
        ("zone_exit", 1, 2),
        ("zone_enter", 2, 6),
        ("zone_exit", 2, 8),
    ]


def test_a_track_lost_inside_a_zone_exits_when_no_successor_came_in_time() -> None:
    rules = linked(zone())
    events: list[Event] = []
    events += rules.update(tracks([(1, feet(50, 250))]), frame(0))
    events += rules.update(tracks([(1, feet(50, 240))]), frame(1))
    occupancy = []
    for i in range(2, 25):
        events += rules.update(tracks([], ended=[1] if i == 4 else []), frame(i))
        occupancy.append(totals(rules.counts()["counter"])["occupancy"])
    # Inside (hidden) until more than max_gap_s (2 s) after it was last seen (frame 1, 0.1 s): then it
    # exits (frame 22, 2.2 s), the event stamped with that last sighting.
    assert occupancy == [1] * 20 + [0] * 3
    assert [(e.type, e.frame, e.ts, e.dwell_s) for e in events] == [
        ("zone_enter", 0, T0, None),
        ("zone_exit", 1, T0 + 0.1, 0.1),
    ]
    assert totals(rules.counts()["counter"]) == {"occupancy": 0, "enter": 1, "exit": 1}


def test_counts_per_label() -> None:
    rules = Rules([door(), zone()])
    rules.update(tracks([(1, feet(50, 60)), (2, feet(80, 60)), (3, feet(120, 60))]), frame(0))
    rules.update(tracks([(1, feet(50, 140)), (2, feet(80, 140))]), frame(1))
    rules.update(tracks([(3, feet(120, 140))], class_id=2), frame(2))
    assert rules.counts()["door"] == {
        "in": 3,
        "out": 0,
        "by_label": {"car": {"in": 1, "out": 0}, "person": {"in": 2, "out": 0}},
    }
    assert rules.counts()["counter"]["by_label"] == {"person": {"occupancy": 2, "enter": 2, "exit": 0}}


# ---------------------------------------------------------------- placing rules on the frame size
def test_a_relative_line_counts_like_the_same_line_in_pixels() -> None:
    """units: relative: x fractions of the width, y of the height; placed on 400x200 frames, the line
    (0, 0.5) → (0.5, 0.5) is the pixel line (0, 100) → (200, 100) and counts the same."""
    relative = LineCrossing("door", (0, 0.5), (0.5, 0.5), pipeline="p", labels=LABELS, units="relative")
    relative.place((200, 400))
    assert relative.start.tolist() == [0.0, 100.0] and relative.end.tolist() == [200.0, 100.0]
    path = [(50, 60), (50, 80), (50, 112), (50, 130), (150, 130), (150, 80)]
    assert (
        summary(run_path(relative, path))
        == summary(run_path(door(), path))
        == [
            ("line_cross", 1, 2, "in"),
            ("line_cross", 1, 5, "out"),
        ]
    )


def test_a_relative_zone_is_scaled_by_width_and_height() -> None:
    rule = Zone("z", [(0, 0), (0.5, 0), (0.5, 1)], pipeline="p", labels=LABELS, units="relative")
    rule.place((360, 480))
    assert rule.polygon.tolist() == [[0.0, 0.0], [240.0, 0.0], [240.0, 360.0]]


def test_a_relative_rule_must_be_placed_before_it_counts() -> None:
    rule = LineCrossing("door", (0, 0.5), (1, 0.5), pipeline="p", labels=LABELS, units="relative")
    with pytest.raises(RuntimeError, match="relative units: place"):
        rule.update(tracks([]), frame(0))


def test_rules_outside_the_frame_are_one_error_naming_the_frame_size() -> None:
    rules = Rules(
        [
            LineCrossing("entry", (250, 300), (560, 5000), pipeline="p", labels=LABELS),
            LineCrossing("inside", (0, 0), (480, 360), pipeline="p", labels=LABELS),  # corners are inside
            Zone("table", [(300, 150), (600, 150), (600, 432)], pipeline="p", labels=LABELS),
        ]
    )
    with pytest.raises(ConfigError) as caught:
        rules.place((360, 480))
    assert str(caught.value).splitlines() == [
        "rule 'entry': [560, 5000] is outside the 480x360 frame (x 0..480, y 0..360); "
        "`edgepipe snapshot` draws the frame with a pixel grid",
        "rule 'table': [600, 150], [600, 432] are outside the 480x360 frame (x 0..480, y 0..360); "
        "`edgepipe snapshot` draws the frame with a pixel grid",
    ]
    assert rules.frame_hw is None
    rules.place((5000, 768))  # the same rules fit a bigger frame
    assert rules.frame_hw == (5000, 768)
