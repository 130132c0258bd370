"""Metrics: windowed rates and latencies on a fake clock, the status snapshot, and /metrics through
prometheus-client (read back with its own parser)."""

from __future__ import annotations

import json

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from edgepipe.metrics import MAX_SAMPLES, LoopReading, Metrics, PrometheusMetrics, log_line
from edgepipe.sources import SourceStats
from edgepipe.types import Event


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clocks() -> tuple[FakeClock, FakeClock]:
    return FakeClock(100.0), FakeClock(1_700_000_000.0)


def run_frames(
    metrics: Metrics, mono: FakeClock, wall: FakeClock, n: int, interval_s: float, age_s: float
) -> None:
    for _ in range(n):
        metrics.record("detect", 0.040)
        metrics.record("track", 0.002)
        metrics.frame_done(wall.t - age_s)
        mono.t += interval_s
        wall.t += interval_s
    mono.t -= interval_s  # "now" is the last frame
    wall.t -= interval_s


def test_snapshot_rates_and_latencies(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", window_s=10.0, clock=mono, wall_clock=wall)
    run_frames(metrics, mono, wall, n=11, interval_s=0.1, age_s=0.25)
    snap = metrics.snapshot(source_state="connected", dropped_frames=3, source_reconnects=1, outbox_depth=0)
    assert snap == {
        "pipeline": "door",
        "uptime_s": 1.0,
        "frames": 11,
        "fps": 10.0,
        "frame_age_ms": {"mean_ms": 250.0, "p50_ms": 250.0, "p95_ms": 250.0, "max_ms": 250.0},
        "stages": {
            "detect": {
                "count": 11,
                "fps": 10.0,
                "mean_ms": 40.0,
                "p50_ms": 40.0,
                "p95_ms": 40.0,
                "max_ms": 40.0,
            },
            "track": {"count": 11, "fps": 10.0, "mean_ms": 2.0, "p50_ms": 2.0, "p95_ms": 2.0, "max_ms": 2.0},
        },
        "source_state": "connected",
        "dropped_frames": 3,
        "source_reconnects": 1,
        "outbox_depth": 0,
    }
    json.dumps(snap)  # plain JSON values only


def test_quantiles_are_nearest_rank(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", clock=mono, wall_clock=wall)
    for ms in range(1, 101):  # 1..100 ms
        metrics.record("rules", ms / 1000)
    stage = metrics.snapshot()["stages"]["rules"]
    assert (stage["p50_ms"], stage["p95_ms"], stage["max_ms"], stage["mean_ms"]) == (50.0, 95.0, 100.0, 50.5)


def test_old_samples_leave_the_window_and_a_stall_lowers_fps(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", window_s=2.0, clock=mono, wall_clock=wall)
    run_frames(metrics, mono, wall, n=11, interval_s=0.1, age_s=0.1)
    assert metrics.snapshot()["fps"] == 10.0
    mono.t += 1.0  # nothing for a second: 10 intervals over 2 s
    assert metrics.snapshot()["fps"] == 5.0
    mono.t += 5.0
    snap = metrics.snapshot()
    assert (snap["fps"], snap["frame_age_ms"], snap["frames"]) == (0.0, {}, 11)


def test_buffer_is_bounded(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", window_s=1e9, clock=mono, wall_clock=wall)
    for _ in range(MAX_SAMPLES + 100):
        metrics.record("detect", 0.01)
        mono.t += 0.001
    assert metrics.snapshot()["stages"]["detect"]["count"] == MAX_SAMPLES + 100
    assert len(metrics._stages["detect"].samples) == MAX_SAMPLES


def test_frame_age_is_wall_clock_now_minus_capture(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", clock=mono, wall_clock=wall)
    assert metrics.frame_done(wall.t - 0.75) == pytest.approx(0.75)
    assert metrics.frame_done(wall.t + 5.0) == 0.0  # a camera clock ahead of ours is not negative age


def test_log_line(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", clock=mono, wall_clock=wall)
    run_frames(metrics, mono, wall, n=11, interval_s=0.1, age_s=0.25)
    line = log_line(metrics.snapshot(source_state="reconnecting", dropped_frames=4))
    assert line == (
        "door: 11 frames, 10.0 fps, frame age p50 250 ms max 250 ms, detect 40.0 ms track 2.0 ms, "
        "source state reconnecting, dropped frames 4"
    )


def _families(metrics: PrometheusMetrics) -> dict[str, Metric]:
    text = metrics.exposition().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(family: Metric, sample_name: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(found) == 1, (sample_name, labels, family.samples)
    return float(found[0])


def test_prometheus_counts_frames_events_and_latencies_per_pipeline(
    clocks: tuple[FakeClock, FakeClock],
) -> None:
    """The loop's Metrics feeds the process's registry; the exposition parses with prometheus-client's
    own parser, and each figure is where it belongs."""
    mono, wall = clocks
    prometheus = PrometheusMetrics()
    door = Metrics("door", clock=mono, wall_clock=wall, prometheus=prometheus.pipeline("door"))
    yard = Metrics("yard", clock=mono, wall_clock=wall, prometheus=prometheus.pipeline("yard"))
    run_frames(door, mono, wall, n=11, interval_s=0.1, age_s=0.25)
    run_frames(yard, mono, wall, n=3, interval_s=0.1, age_s=2.0)
    event = Event("line_cross", "door", "entry", 0.0, track_id=7, label="person", score=0.9, bbox=(0, 0, 1, 1), frame=3,
                  direction="in")  # fmt: skip
    door.event(event)
    door.event(event)
    door.event(
        Event(
            "zone_enter",
            "door",
            "table",
            0.0,
            track_id=7,
            label="person",
            score=0.9,
            bbox=(0, 0, 1, 1),
            frame=3,
        )
    )
    families = _families(prometheus)
    frames = families["edgepipe_frames"]
    assert frames.type == "counter"
    assert _value(frames, "edgepipe_frames_total", pipeline="door") == 11
    assert _value(frames, "edgepipe_frames_total", pipeline="yard") == 3
    events = families["edgepipe_events"]
    entry = {"pipeline": "door", "rule": "entry", "type": "line_cross", "direction": "in", "label": "person"}
    assert _value(events, "edgepipe_events_total", **entry) == 2
    table = {"pipeline": "door", "rule": "table", "type": "zone_enter", "direction": "", "label": "person"}
    assert _value(events, "edgepipe_events_total", **table) == 1
    stages = families["edgepipe_stage_seconds"]
    assert stages.type == "histogram"
    assert _value(stages, "edgepipe_stage_seconds_count", pipeline="door", stage="detect") == 11
    assert _value(stages, "edgepipe_stage_seconds_sum", pipeline="door", stage="detect") == pytest.approx(
        0.44
    )
    # 40 ms: not within 25 ms, within 50 ms
    assert _value(stages, "edgepipe_stage_seconds_bucket", pipeline="door", stage="detect", le="0.025") == 0
    assert _value(stages, "edgepipe_stage_seconds_bucket", pipeline="door", stage="detect", le="0.05") == 11
    age = families["edgepipe_frame_age_seconds"]
    assert _value(age, "edgepipe_frame_age_seconds_bucket", pipeline="yard", le="1.0") == 0
    assert _value(age, "edgepipe_frame_age_seconds_bucket", pipeline="yard", le="2.5") == 3
    assert "process_cpu_seconds" in families  # the process collector, on this registry


def test_prometheus_reads_sources_and_outbox_when_scraped() -> None:
    readings = [LoopReading("door", SourceStats("reconnecting", 120, 4, 2), 7)]
    families = _families(PrometheusMetrics(lambda: readings))
    assert _value(families["edgepipe_dropped_frames"], "edgepipe_dropped_frames_total", pipeline="door") == 4
    assert (
        _value(families["edgepipe_source_reconnects"], "edgepipe_source_reconnects_total", pipeline="door")
        == 2
    )
    assert _value(families["edgepipe_outbox_depth"], "edgepipe_outbox_depth", pipeline="door") == 7
    state = families["edgepipe_source_state"]
    assert {s.labels["state"]: s.value for s in state.samples} == {
        "connecting": 0,
        "connected": 0,
        "reconnecting": 1,
        "failed": 0,
        "ended": 0,
    }
    readings[0] = LoopReading("door", SourceStats("connected", 130, 4, 3), None)  # no outbox: no sample
    families = _families(PrometheusMetrics(lambda: readings))
    assert families["edgepipe_outbox_depth"].samples == []
    assert (
        _value(families["edgepipe_source_state"], "edgepipe_source_state", pipeline="door", state="connected")
        == 1
    )


def test_two_processes_worth_of_metrics_do_not_share_state() -> None:
    """Each PrometheusMetrics has its own registry: nothing lands in prometheus-client's global one."""
    from prometheus_client import REGISTRY

    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.pipeline("door").frames.inc()
    assert _value(_families(first)["edgepipe_frames"], "edgepipe_frames_total", pipeline="door") == 1
    assert _families(second)["edgepipe_frames"].samples == []
    assert REGISTRY.get_sample_value("edgepipe_frames_total", {"pipeline": "door"}) is None
