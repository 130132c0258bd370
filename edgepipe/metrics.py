"""Run-time numbers of one pipeline: per-stage rate and latency, frame age, drops, source and outbox.

`Metrics` lives on the frame loop's thread (no locks). `snapshot()` is the dict published on the
status topic and logged; `prometheus_text()` renders snapshots in the Prometheus text format.
Rates and latencies cover a sliding window of the last `window_s` seconds, in a bounded buffer.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from edgepipe.sources import SOURCE_STATES

MAX_SAMPLES = 2048  # per stage; at 30 fps a 10 s window needs 300


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
    """Per-stage counts and latencies of one pipeline, over a sliding window."""

    def __init__(
        self,
        pipeline: str,
        *,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.window_s = window_s
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

    def frame_done(self, capture_timestamp: float) -> float:
        """A frame left the loop; returns its age in seconds (now - capture time, wall clock)."""
        age_s = max(0.0, self._wall_clock() - capture_timestamp)
        self._frame_age.add(self._clock(), age_s)
        return age_s

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


def prometheus_text(snapshots: Iterable[Mapping[str, Any]]) -> str:
    """Snapshots of one or more pipelines in the Prometheus text exposition format (0.0.4)."""
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, kind: str, help_text: str, labels: dict[str, str], value: float) -> None:
        family = families.setdefault(name, (kind, help_text, []))
        rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        family[2].append(f"{name}{{{rendered}}} {value:g}")

    for snap in snapshots:
        pipe = {"pipeline": str(snap["pipeline"])}
        add("edgepipe_frames_total", "counter", "Frames processed.", pipe, snap["frames"])
        add("edgepipe_fps", "gauge", "Frames per second over the window.", pipe, snap["fps"])
        for q in ("p50", "p95", "max"):
            key = f"{q}_ms"
            if key in snap["frame_age_ms"]:
                labels = {**pipe, "quantile": {"p50": "0.5", "p95": "0.95", "max": "1"}[q]}
                add(
                    "edgepipe_frame_age_seconds",
                    "gauge",
                    "Capture-to-done age of processed frames.",
                    labels,
                    snap["frame_age_ms"][key] / 1000,
                )
        for stage, values in snap["stages"].items():
            labels = {**pipe, "stage": stage}
            add("edgepipe_stage_total", "counter", "Passes through a stage.", labels, values["count"])
            if "mean_ms" in values:
                add(
                    "edgepipe_stage_latency_seconds",
                    "gauge",
                    "Mean time per pass over the window.",
                    labels,
                    values["mean_ms"] / 1000,
                )
        if "dropped_frames" in snap:
            add(
                "edgepipe_dropped_frames_total",
                "counter",
                "Live frames overwritten.",
                pipe,
                snap["dropped_frames"],
            )
        if "source_reconnects" in snap:
            add(
                "edgepipe_source_reconnects_total",
                "counter",
                "Source reconnects.",
                pipe,
                snap["source_reconnects"],
            )
        if "outbox_depth" in snap:
            add(
                "edgepipe_outbox_depth",
                "gauge",
                "Messages waiting for the broker.",
                pipe,
                snap["outbox_depth"],
            )
        if "source_state" in snap:
            for state in SOURCE_STATES:
                value = 1.0 if snap["source_state"] == state else 0.0
                add(
                    "edgepipe_source_state",
                    "gauge",
                    "1 for the current source state.",
                    {**pipe, "state": state},
                    value,
                )
    lines: list[str] = []
    for name, (kind, help_text, samples) in families.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n" if lines else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
