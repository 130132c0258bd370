"""Metrics: windowed rates and latencies on a fake clock, the status snapshot, Prometheus text."""

from __future__ import annotations

import json

import pytest

from edgepipe.metrics import MAX_SAMPLES, Metrics, log_line, prometheus_text


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


def test_prometheus_text(clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    metrics = Metrics("door", clock=mono, wall_clock=wall)
    run_frames(metrics, mono, wall, n=11, interval_s=0.1, age_s=0.25)
    text = prometheus_text([metrics.snapshot(source_state="connected", dropped_frames=2, outbox_depth=7)])
    lines = text.splitlines()
    assert "# TYPE edgepipe_frames_total counter" in lines
    assert 'edgepipe_frames_total{pipeline="door"} 11' in lines
    assert 'edgepipe_fps{pipeline="door"} 10' in lines
    assert 'edgepipe_frame_age_seconds{pipeline="door",quantile="0.95"} 0.25' in lines
    assert 'edgepipe_stage_latency_seconds{pipeline="door",stage="detect"} 0.04' in lines
    assert 'edgepipe_dropped_frames_total{pipeline="door"} 2' in lines
    assert 'edgepipe_outbox_depth{pipeline="door"} 7' in lines
    assert 'edgepipe_source_state{pipeline="door",state="connected"} 1' in lines
    assert 'edgepipe_source_state{pipeline="door",state="reconnecting"} 0' in lines
    # each family declared once even with two pipelines
    two = prometheus_text([metrics.snapshot(), Metrics("yard", clock=mono, wall_clock=wall).snapshot()])
    assert two.count("# TYPE edgepipe_frames_total counter") == 1
    assert 'edgepipe_frames_total{pipeline="yard"} 0' in two.splitlines()
    assert text.endswith("\n")
