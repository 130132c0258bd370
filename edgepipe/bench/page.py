"""`edgepipe bench page`: what watching costs the frame loop, on the pipeline's video run as fast as
the loop goes.

- watched / idle: one run with the web server up, cut into segments of `segment_frames` frames; a
  viewer reads the live MJPEG stream during one segment of each pair, first in one pair and second
  in the next (idle, watched, watched, idle, ...), so that load from other processes, which drifts
  over seconds, hits both alike. Reported: fps per segment and the ratio per pair; and the CPU the pictures took (the
  drawing and JPEG threads' own CPU time) as a share of the process's CPU meanwhile: on a machine the
  loop keeps busy, the fps it costs.
- idle / off: whole runs with and without the server (the loop's hand-offs to its view), alternated.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edgepipe.config import FileSourceConfig, HttpConfig, PipelineConfig
from edgepipe.detect import ModelPool
from edgepipe.errors import ConfigError
from edgepipe.pipeline import Pipeline, build
from edgepipe.web import Web

BOUNDARY = b"--edgepipe-frame"


@dataclass(frozen=True, slots=True)
class Segment:
    """Frames of one run with or without a viewer."""

    watched: bool
    frames: int
    seconds: float
    cpu_s: float  # process CPU time, all threads
    picture_cpu_s: float  # of which drawing and encoding the viewer's pictures
    pictures: int  # pictures the viewer received

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class WholeRun:
    """One run of `frames` frames with the web server off or idle."""

    server: bool
    fps: float
    cpu_ms: float  # process CPU time per frame


def prepared(cfg: PipelineConfig) -> PipelineConfig:
    """The pipeline on its video at the loop's own pace (not real time), looping so that any number
    of frames can be asked for."""
    if not isinstance(cfg.source, FileSourceConfig):
        raise ConfigError(f"{cfg.name}: bench page needs a video file source, to run at the loop's own speed")
    return cfg.model_copy(update={"source": cfg.source.model_copy(update={"realtime": False, "loop": True})})


def watched_segments(
    cfg: PipelineConfig, *, pairs: int, segment_frames: int, stream_fps: float, pool: ModelPool
) -> list[Segment]:
    """One run of 2 * `pairs` segments after one discarded warm-up segment: idle, watched, watched,
    idle, idle, watched, ..."""
    web = Web(HttpConfig(port=0, stream_fps=stream_fps), [cfg.name])
    view = web.views[cfg.name]
    with web.server:
        pipeline = build(
            cfg,
            pool,
            max_frames=segment_frames * (2 * pairs + 1),
            outputs=False,
            watcher=view,
            prometheus=web.prometheus.pipeline(cfg.name),
        )
        segments: list[Segment] = []
        viewer: _Viewer | None = None
        start = (time.perf_counter(), time.process_time(), view.encode_cpu_s)
        for count, _ in enumerate(pipeline.results(), start=1):
            if count % segment_frames:
                continue
            now = (time.perf_counter(), time.process_time(), view.encode_cpu_s)
            pictures = viewer.stop() if viewer is not None else 0
            if count > segment_frames:  # the first segment warms up: compile, caches
                segments.append(
                    Segment(
                        viewer is not None,
                        segment_frames,
                        now[0] - start[0],
                        now[1] - start[1],
                        now[2] - start[2],
                        pictures,
                    )
                )
            watch_next = len(segments) % 4 in (1, 2) and count < segment_frames * (2 * pairs + 1)
            viewer = _Viewer(web.server.url, cfg.name) if watch_next else None
            start = (time.perf_counter(), time.process_time(), view.encode_cpu_s)
        if viewer is not None:
            viewer.stop()
    return segments


def whole_runs(cfg: PipelineConfig, *, rounds: int, frames: int, pool: ModelPool) -> list[WholeRun]:
    """`rounds` pairs of runs without and with the (idle) web server, the order turned each round."""
    runs: list[WholeRun] = []
    for number in range(rounds):
        for server in (False, True) if number % 2 == 0 else (True, False):
            runs.append(_whole_run(cfg, pool, server, frames))
    return runs


def _whole_run(cfg: PipelineConfig, pool: ModelPool, server: bool, frames: int) -> WholeRun:
    web = Web(HttpConfig(port=0), [cfg.name]) if server else None
    if web is not None:
        web.server.start()
    try:
        pipeline = build(
            cfg,
            pool,
            max_frames=frames,
            outputs=False,
            watcher=web.views[cfg.name] if web is not None else None,
            prometheus=web.prometheus.pipeline(cfg.name) if web is not None else None,
        )
        return _timed(pipeline, server)
    finally:
        if web is not None:
            web.server.close()


def _timed(pipeline: Pipeline, server: bool) -> WholeRun:
    """fps from the first result to the last (compiling and opening are not counted)."""
    first_at = last_at = cpu_start = 0.0
    count = 0
    for _ in pipeline.results():
        last_at = time.perf_counter()
        if count == 0:
            first_at, cpu_start = last_at, time.process_time()
        count += 1
    cpu_s = time.process_time() - cpu_start
    seconds = last_at - first_at
    return WholeRun(server, (count - 1) / seconds if seconds > 0 else 0.0, 1000.0 * cpu_s / max(count - 1, 1))


class _Viewer:
    """A client of the live stream on a thread of its own, counting the pictures; stop() hangs up."""

    def __init__(self, base_url: str, pipeline: str) -> None:
        address = urlsplit(base_url)
        self._sock = socket.create_connection(
            (address.hostname or "127.0.0.1", address.port or 80), timeout=30
        )
        self._sock.sendall(f"GET /{pipeline}/stream.mjpg HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        self.pictures = 0
        self._thread = threading.Thread(target=self._read, name="bench-viewer", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        tail = b""
        try:
            while chunk := self._sock.recv(1 << 16):
                data = tail + chunk
                self.pictures += data.count(BOUNDARY)
                tail = data[-len(BOUNDARY) + 1 :]  # a boundary split across two chunks
        except OSError:
            pass  # hung up by stop()

    def stop(self) -> int:
        """Hang up; the pictures received."""
        with contextlib.suppress(OSError):  # the server may have hung up first
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=10)
        return self.pictures


def report(segments: list[Segment], runs: list[WholeRun], stream_fps: float) -> dict[str, Any]:
    """The ratios, per pair and their median and range; the pictures' CPU share; the whole runs."""
    pairs = [
        (a, b) if b.watched else (b, a) for a, b in zip(segments[0::2], segments[1::2], strict=False)
    ]  # (idle, watched)
    fps_ratios = [watched.fps / idle.fps for idle, watched in pairs if idle.fps > 0]
    watched = [s for s in segments if s.watched]
    picture_cpu = sum(s.picture_cpu_s for s in watched)
    process_cpu = sum(s.cpu_s for s in watched)
    received = sum(s.pictures for s in watched) / sum(s.seconds for s in watched) if watched else 0.0
    offs, ons = [r for r in runs if not r.server], [r for r in runs if r.server]
    idle_ratios = [on.fps / off.fps for off, on in zip(offs, ons, strict=True) if off.fps > 0]
    return {
        "stream_fps": stream_fps,
        "segment_frames": segments[0].frames if segments else 0,
        "watched_idle": {
            "idle_fps": [round(idle.fps, 1) for idle, _ in pairs],
            "watched_fps": [round(w.fps, 1) for _, w in pairs],
            "fps_ratio": [round(r, 3) for r in fps_ratios],
            "fps_ratio_median": round(statistics.median(fps_ratios), 3) if fps_ratios else None,
            "received_fps": round(received, 2),
            "cpu_ms_per_frame": {
                "idle": round(statistics.median(1000 * i.cpu_s / i.frames for i, _ in pairs), 2)
                if pairs
                else None,
                "watched": round(statistics.median(1000 * w.cpu_s / w.frames for _, w in pairs), 2)
                if pairs
                else None,
            },
            "picture_cpu_share": round(picture_cpu / process_cpu, 4) if process_cpu > 0 else None,
            "picture_cpu_ms": round(1000 * picture_cpu / max(sum(s.pictures for s in watched), 1), 2),
        },
        "idle_off": {
            "off_fps": [round(r.fps, 1) for r in offs],
            "idle_fps": [round(r.fps, 1) for r in ons],
            "fps_ratio": [round(r, 3) for r in idle_ratios],
            "fps_ratio_median": round(statistics.median(idle_ratios), 3) if idle_ratios else None,
            "cpu_ms_per_frame": {
                "off": round(statistics.median(r.cpu_ms for r in offs), 2) if offs else None,
                "idle": round(statistics.median(r.cpu_ms for r in ons), 2) if ons else None,
            },
        },
    }


def _span(values: list[float]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}" if values else "-"


def format_report(summary: dict[str, Any]) -> str:
    watched, idle = summary["watched_idle"], summary["idle_off"]
    return "\n".join(
        [
            f"watched/idle: {len(watched['fps_ratio'])} pairs of {summary['segment_frames']}-frame segments, "
            f"one viewer at {summary['stream_fps']:g} fps (received {watched['received_fps']:.1f} fps)",
            f"  idle fps     {', '.join(f'{v:.1f}' for v in watched['idle_fps'])}",
            f"  watched fps  {', '.join(f'{v:.1f}' for v in watched['watched_fps'])}",
            f"  fps ratio    median {watched['fps_ratio_median']}, range {_span(watched['fps_ratio'])}",
            f"  the pictures took {watched['picture_cpu_ms']:.1f} ms CPU each, "
            f"{100 * (watched['picture_cpu_share'] or 0):.2f} % of the process's CPU while watched; CPU ms per "
            f"frame idle {watched['cpu_ms_per_frame']['idle']}, watched {watched['cpu_ms_per_frame']['watched']}",
            f"idle/off: {len(idle['fps_ratio'])} pairs of whole runs, web server up but nobody watching vs no server",
            f"  off fps      {', '.join(f'{v:.1f}' for v in idle['off_fps'])}",
            f"  idle fps     {', '.join(f'{v:.1f}' for v in idle['idle_fps'])}",
            f"  fps ratio    median {idle['fps_ratio_median']}, range {_span(idle['fps_ratio'])}; CPU ms per frame "
            f"off {idle['cpu_ms_per_frame']['off']}, idle {idle['cpu_ms_per_frame']['idle']}",
        ]
    )
