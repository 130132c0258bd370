"""Run-time numbers of one pipeline: per-stage rate and latency, frame age, drops, source and outbox.

`Metrics` lives on the frame loop's thread (no locks). `snapshot()` is the dict published on the
status topic and logged; rates and latencies cover a sliding window of the last `window_s` seconds,
in a bounded buffer. `PrometheusMetrics` is the process's /metrics (prometheus-client, on a registry
of its own): the loop's `Metrics` feeds its counters and histograms when given a pipeline's
`PrometheusPipeline`; source and outbox gauges are read when scraped.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgepipe.sources import SOURCE_STATES, SourceStats
from edgepipe.types import Event

MAX_SAMPLES = 2048  # per stage; at 30 fps a 10 s window needs 300
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FRAME_AGE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Window:
    """Timestamped samples of one quantity within a sliding window."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self.total = 0

    def add(self, now: float, value: float) -> None:
        self.samples.append((now, value))
        self.total += 1

    def summary(self, now: float, window_s: float) -> dict[str, float]:
        while self.samples and now - self.samples[0][0] > window_s:
            self.samples.popleft()
        if not self.samples:
            return {"fps": 0.0}
        values = sorted(v for _, v in self.samples)
        # Intervals since the oldest sample in the window, up to now: falls during a stall.
        span = now - self.samples[0][0]
        return {
            "fps": round((len(values) - 1) / span, 2) if len(values) > 1 and span > 0 else 0.0,
            "mean_ms": round(1000 * sum(values) / len(values), 2),
            "p50_ms": round(1000 * _quantile(values, 0.5), 2),
            "p95_ms": round(1000 * _quantile(values, 0.95), 2),
            "max_ms": round(1000 * values[-1], 2),
        }


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class Metrics:
    """Per-stage counts and latencies of one pipeline, over a sliding window; also fed to
    Prometheus when given the pipeline's `PrometheusPipeline`."""

    def __init__(
        self,
        pipeline: str,
        *,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        prometheus: PrometheusPipeline | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.window_s = window_s
        self.prometheus = prometheus
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._stages: dict[str, _Window] = {}
        self._frame_age = _Window()

    def record(self, stage: str, seconds: float) -> None:
        """One pass through `stage` took `seconds`."""
        window = self._stages.get(stage)
        if window is None:
            window = self._stages[stage] = _Window()
        window.add(self._clock(), seconds)
        if self.prometheus is not None:
            self.prometheus.stage(stage).observe(seconds)

    def frame_done(self, capture_timestamp: float) -> float:
        """A frame left the loop; returns its age in seconds (now - capture time, wall clock)."""
        age_s = max(0.0, self._wall_clock() - capture_timestamp)
        self._frame_age.add(self._clock(), age_s)
        if self.prometheus is not None:
            self.prometheus.frames.inc()
            self.prometheus.frame_age_s.observe(age_s)
        return age_s

    def event(self, event: Event) -> None:
        """An event was published."""
        if self.prometheus is not None:
            self.prometheus.count_event(event)

    @property
    def frames(self) -> int:
        return self._frame_age.total

    def snapshot(
        self,
        *,
        source_state: str | None = None,
        dropped_frames: int | None = None,
        source_reconnects: int | None = None,
        outbox_depth: int | None = None,
    ) -> dict[str, Any]:
        """The status payload: plain JSON values only."""
        now = self._clock()
        age = self._frame_age.summary(now, self.window_s)
        snap: dict[str, Any] = {
            "pipeline": self.pipeline,
            "uptime_s": round(now - self._started, 1),
            "frames": self._frame_age.total,
            "fps": age.pop("fps"),
            "frame_age_ms": age,
            "stages": {
                name: {"count": window.total, **window.summary(now, self.window_s)}
                for name, window in self._stages.items()
            },
        }
        optional = {
            "source_state": source_state,
            "dropped_frames": dropped_frames,
            "source_reconnects": source_reconnects,
            "outbox_depth": outbox_depth,
        }
        snap.update({k: v for k, v in optional.items() if v is not None})
        return snap


def log_line(snapshot: Mapping[str, Any]) -> str:
    """One short human line for the journal."""
    age = snapshot.get("frame_age_ms", {})
    parts = [
        f"{snapshot['pipeline']}: {snapshot['frames']} frames",
        f"{snapshot['fps']:.1f} fps",
        f"frame age p50 {age.get('p50_ms', 0):.0f} ms max {age.get('max_ms', 0):.0f} ms",
    ]
    stages = snapshot.get("stages", {})
    if stages:
        parts.append(" ".join(f"{name} {s.get('mean_ms', 0):.1f} ms" for name, s in stages.items()))
    for key in ("source_state", "dropped_frames", "outbox_depth"):
        if key in snapshot:
            parts.append(f"{key.replace('_', ' ')} {snapshot[key]}")
    for problem in snapshot.get("problems", ()):
        parts.append(f"DEGRADED: {problem}")
    return ", ".join(parts)


# ---------------------------------------------------------------- Prometheus (/metrics)
@dataclass(frozen=True, slots=True)
class LoopReading:
    """What a scrape reads of one pipeline: the source's counters as the loop last saw them."""

    pipeline: str
    source: SourceStats
    outbox_depth: int | None


class PrometheusMetrics:
    """The Prometheus metrics of one process on a registry of its own (never prometheus-client's
    global default, so two in one process, as in tests, do not collide): counters and histograms the
    frame loops update, source and outbox figures read at each scrape from `readings()`, and the
    process collector (CPU, memory, open files)."""

    def __init__(self, readings: Callable[[], Iterable[LoopReading]] = tuple) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.frames = Counter("edgepipe_frames", "Frames processed.", ["pipeline"], registry=self.registry)
        self.events = Counter(
            "edgepipe_events",
            "Events published, by rule, type, direction (line crossings; empty otherwise) and label.",
            ["pipeline", "rule", "type", "direction", "label"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "edgepipe_stage_seconds",
            "Time per frame in each stage: detect (in flight in the detector), track, rules (and publishing).",
            ["pipeline", "stage"],
            buckets=STAGE_BUCKETS_S,
            registry=self.registry,
        )
        self.frame_age_seconds = Histogram(
            "edgepipe_frame_age_seconds",
            "Capture to done, per frame.",
            ["pipeline"],
            buckets=FRAME_AGE_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_LoopCollector(readings))

    def pipeline(self, name: str) -> PrometheusPipeline:
        """The instruments of one pipeline, for its `Metrics`."""
        return PrometheusPipeline(
            name,
            self.frames.labels(name),
            self.frame_age_seconds.labels(name),
            self.stage_seconds,
            self.events,
        )

    def exposition(self) -> bytes:
        """Everything in the Prometheus text format (what /metrics serves)."""
        return generate_latest(self.registry)


@dataclass(slots=True)
class PrometheusPipeline:
    """One pipeline's children of the process's families; updated on its frame loop (prometheus-client
    takes a short lock per update)."""

    name: str
    frames: Counter
    frame_age_s: Histogram
    _stage_family: Histogram
    _event_family: Counter
    _stages: dict[str, Histogram] = field(default_factory=dict)

    def stage(self, stage: str) -> Histogram:
        child = self._stages.get(stage)
        if child is None:
            child = self._stages[stage] = self._stage_family.labels(self.name, stage)
        return child

    def count_event(self, event: Event) -> None:
        self._event_family.labels(self.name, event.rule, event.type, event.direction or "", event.label).inc()


class _LoopCollector(Collector):
    """Source and outbox figures at scrape time: counters the sources keep themselves (they cannot
    be inc()-ed from here) and gauges of state and depth."""

    def __init__(self, readings: Callable[[], Iterable[LoopReading]]) -> None:
        self._readings = readings

    def describe(self) -> list[Metric]:
        return []  # families are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        readings = list(self._readings())
        dropped = CounterMetricFamily(
            "edgepipe_dropped_frames",
            "Live frames overwritten before the loop took them.",
            labels=["pipeline"],
        )
        reconnects = CounterMetricFamily(
            "edgepipe_source_reconnects", "Connection attempts after the first one.", labels=["pipeline"]
        )
        state = GaugeMetricFamily(
            "edgepipe_source_state",
            "1 for the source's current state, 0 for the others.",
            labels=["pipeline", "state"],
        )
        outbox = GaugeMetricFamily(
            "edgepipe_outbox_depth",
            "Messages accepted but not yet delivered (MQTT outbox).",
            labels=["pipeline"],
        )
        for reading in readings:
            name, source = reading.pipeline, reading.source
            dropped.add_metric([name], source.dropped_frames)
            reconnects.add_metric([name], source.reconnects)
            for each in SOURCE_STATES:
                state.add_metric([name, each], 1.0 if source.state == each else 0.0)
            if reading.outbox_depth is not None:
                outbox.add_metric([name], reading.outbox_depth)
        yield from (dropped, reconnects, state, outbox)
