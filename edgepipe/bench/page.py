"""`edgepipe bench page`: what watching costs. The pipeline's loop over its video as fast as it goes,
in three modes, alternated round by round so that load from other processes hits each alike:

- off: no web server at all;
- idle: the server up, the loop handing its view every result, nobody watching;
- watched: one client reading the live MJPEG stream, drawn and encoded at `stream_fps`.

Reported per mode: frames per second of wall time and process CPU time (every thread: the loop,
OpenVINO's, the server's) per frame; and the ratios idle/off and watched/idle, per round and their
range, measured in the same run.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.request import urlopen

from edgepipe.config import FileSourceConfig, HttpConfig, PipelineConfig
from edgepipe.detect import ModelPool
from edgepipe.errors import ConfigError
from edgepipe.pipeline import Pipeline, build
from edgepipe.web import Web

MODES = ("off", "idle", "watched")
BOUNDARY_LINE = b"--edgepipe-frame\r\n"


@dataclass(frozen=True, slots=True)
class Round:
    """One timed run of the loop in one mode."""

    mode: str
    frames: int
    fps: float  # frames after the first / seconds from the first to the last result
    cpu_ms: float  # process CPU time per frame, all threads
    received_fps: float | None  # pictures per second the client got (watched only)


def run_rounds(
    cfg: PipelineConfig, *, frames: int, rounds: int, stream_fps: float, pool: ModelPool | None = None
) -> list[Round]:
    """`rounds` rounds of every mode, in an order that turns each round; a warm-up run first (the
    model compiles then) is not counted."""
    if not isinstance(cfg.source, FileSourceConfig):
        raise ConfigError(f"{cfg.name}: bench page needs a video file source, to run at the loop's own speed")
    source = cfg.source.model_copy(update={"realtime": False, "loop": True})
    cfg = cfg.model_copy(update={"source": source})
    pool = pool if pool is not None else ModelPool()
    _run(cfg, pool, "off", min(frames, 30), stream_fps)
    results: list[Round] = []
    for number in range(rounds):
        order = MODES[number % 3 :] + MODES[: number % 3]
        results += [_run(cfg, pool, mode, frames, stream_fps) for mode in order]
    return results


def _run(cfg: PipelineConfig, pool: ModelPool, mode: str, frames: int, stream_fps: float) -> Round:
    if mode == "off":
        return _timed(build(cfg, pool, max_frames=frames, outputs=False), mode, None)
    web = Web(HttpConfig(port=0, stream_fps=stream_fps), [cfg.name])
    with web.server:
        pipeline = build(
            cfg,
            pool,
            max_frames=frames,
            outputs=False,
            watcher=web.views[cfg.name],
            prometheus=web.prometheus.pipeline(cfg.name),
        )
        client = _Client(f"{web.server.url}{cfg.name}/stream.mjpg") if mode == "watched" else None
        return _timed(pipeline, mode, client)


def _timed(pipeline: Pipeline, mode: str, client: _Client | None) -> Round:
    first_at = last_at = cpu_start = 0.0
    count = 0
    for _ in pipeline.results():
        last_at = time.perf_counter()
        if count == 0:
            first_at, cpu_start = last_at, time.process_time()
            if client is not None:
                client.started_at = first_at
        count += 1
    cpu = time.process_time() - cpu_start
    received = client.finish(last_at) if client is not None else None
    seconds = last_at - first_at
    fps = (count - 1) / seconds if seconds > 0 else 0.0
    return Round(mode, int(count), fps, 1000.0 * cpu / max(count - 1, 1), received)


class _Client:
    """A viewer on its own thread: reads the MJPEG stream and counts the pictures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started_at: float | None = None
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._read, name="bench-viewer", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with urlopen(self.url, timeout=30) as stream:
                for line in stream:
                    if line == BOUNDARY_LINE:
                        self.times.append(time.perf_counter())
        except OSError:
            pass  # the server closed at the end of the round

    def finish(self, until: float) -> float:
        """Pictures per second received while the loop ran."""
        self._thread.join(timeout=10)
        start = self.started_at if self.started_at is not None else until
        received = [t for t in self.times if start <= t <= until]
        return len(received) / (until - start) if until > start else 0.0


def report(rounds: list[Round], stream_fps: float) -> dict[str, Any]:
    """Per mode the median fps and CPU per frame; the ratios per round and their range."""
    by_mode = {mode: [r for r in rounds if r.mode == mode] for mode in MODES}

    def ratios(numerator: str, denominator: str, key: str) -> list[float]:
        return [
            getattr(a, key) / getattr(b, key)
            for a, b in zip(by_mode[numerator], by_mode[denominator], strict=True)
            if getattr(b, key) > 0
        ]

    summary: dict[str, Any] = {
        "stream_fps": stream_fps,
        "frames_per_round": rounds[0].frames if rounds else 0,
        "modes": {
            mode: {
                "fps": [round(r.fps, 2) for r in runs],
                "cpu_ms_per_frame": [round(r.cpu_ms, 2) for r in runs],
                "received_fps": [round(r.received_fps, 2) for r in runs if r.received_fps is not None]
                or None,
            }
            for mode, runs in by_mode.items()
        },
    }
    for name, (a, b) in {"idle/off": ("idle", "off"), "watched/idle": ("watched", "idle")}.items():
        fps, cpu = ratios(a, b, "fps"), ratios(a, b, "cpu_ms")
        summary[name] = {
            "fps_ratio": [round(x, 3) for x in fps],
            "fps_ratio_median": round(statistics.median(fps), 3) if fps else None,
            "cpu_per_frame_ratio": [round(x, 3) for x in cpu],
        }
    return summary


def format_report(summary: dict[str, Any]) -> str:
    lines = [
        f"page: {summary['frames_per_round']} frames a round; watched = one MJPEG client, "
        f"stream capped at {summary['stream_fps']:g} fps",
        f"{'mode':<8} {'fps per round':<32} {'CPU ms per frame':<32} received fps",
    ]
    for mode, values in summary["modes"].items():
        received = ", ".join(f"{v:.1f}" for v in values["received_fps"] or []) or "-"
        fps = ", ".join(f"{v:.1f}" for v in values["fps"])
        cpu = ", ".join(f"{v:.1f}" for v in values["cpu_ms_per_frame"])
        lines.append(f"{mode:<8} {fps:<32} {cpu:<32} {received}")
    for name in ("idle/off", "watched/idle"):
        values = summary[name]
        fps = values["fps_ratio"]
        span = f"{min(fps):.3f}..{max(fps):.3f}" if fps else "-"
        cpu = ", ".join(f"{v:.3f}" for v in values["cpu_per_frame_ratio"])
        lines.append(
            f"{name:<13} fps ratio median {values['fps_ratio_median']} (range {span}); CPU per frame ratio {cpu}"
        )
    return "\n".join(lines)
