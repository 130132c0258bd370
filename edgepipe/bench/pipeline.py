"""`edgepipe bench pipeline`: the whole pipeline as it really runs, against what the hardware allows.

In one run, on the pipeline's own model, frame size and video, each as FPS and as a ratio to the
ceiling, rounds alternating so that load from other processes hits all alike:
- limit: OpenVINO alone on the compiled model the pipeline uses (async requests, pre-filled input);
- decode: the video source alone (OpenCV/FFmpeg decode, as the pipeline's file source does it);
- ceiling: 1 / (1/limit + 1/decode), what both cost when they share the cores, as they do;
- pipeline: decode → detect → track → rules → publishers (a JSON lines file in a temporary folder in
  place of the file's own outputs), the pipeline's loop at its own pace.

With `streams`: N copies of the pipeline in one process, each on its own thread with its video paced
in real time like a camera (looped), all on one compiled model; per stream fps, frame age (from the
"camera" handing a frame over to its events being published) and frames dropped; then the largest N
that holds the source's fps with p95 frame age within two frame intervals. The ceiling is measured
again between the trials, and each trial's demand (N times the source's fps) is given as a ratio to the
ceiling measured next to it: on a shared machine the host's load moves within minutes, and a ceiling
from before the trials would compare them with another hour's machine.

With `soak`: one looped run of that many frames, the process's resident memory sampled along it.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.bench.detector import Run, openvino_limit
from edgepipe.config import FileSourceConfig, PipelineConfig
from edgepipe.detect import ModelPool
from edgepipe.errors import ConfigError
from edgepipe.pipeline import Pipeline, build, prepare
from edgepipe.sources import FileSource

WARMUP_FRAMES = 20  # frames of each pipeline run left out of its timing: first requests, caches
STREAM_WARMUP_S = 2.0  # seconds of a streams run left out: every stream started, its requests warm
HOLD_FPS_SHARE = 0.95  # a stream holds the source's fps when it delivers at least this share of it
HOLD_AGE_INTERVALS = 2.0  # ... and 95 % of its frames are at most this many frame intervals old
SOAK_WARMUP_FRAMES = 2000  # frames before the first memory sample of a soak: caches and pools filled


def ceiling_fps(limit: Run, decode: Run) -> float:
    """What inference and decode allow together when they share the cores, as they do."""
    return 1.0 / (1.0 / limit.fps + 1.0 / decode.fps)


@dataclass(frozen=True, slots=True)
class Round:
    """The four speeds of one round."""

    limit: Run
    decode: Run
    pipeline: Run

    @property
    def ceiling_fps(self) -> float:
        return ceiling_fps(self.limit, self.decode)

    @property
    def ratio(self) -> float:
        return self.pipeline.fps / self.ceiling_fps


@dataclass(frozen=True, slots=True)
class StreamsRun:
    """`streams` real-time copies of the pipeline for `seconds` after the warm-up."""

    streams: int
    source_fps: float
    seconds: float
    fps: list[float]  # per stream, frames delivered per second
    age_p50_ms: float  # frame age over every stream's frames
    age_p95_ms: float
    dropped: int  # frames the streams' sources overwrote unread, all streams
    cpu_ms: float  # process CPU time per delivered frame
    ceiling_fps: float | None = None  # the ceiling measured just before and just after, averaged

    @property
    def total_fps(self) -> float:
        return sum(self.fps)

    @property
    def demand_ratio(self) -> float | None:
        """What the streams ask for (N times the source's fps) against the ceiling measured next to them."""
        return None if self.ceiling_fps is None else self.streams * self.source_fps / self.ceiling_fps

    @property
    def holds(self) -> bool:
        """Every stream at the source's fps (within HOLD_FPS_SHARE), p95 age within two intervals."""
        interval_ms = 1000.0 / self.source_fps
        return (
            min(self.fps) >= HOLD_FPS_SHARE * self.source_fps
            and self.age_p95_ms <= HOLD_AGE_INTERVALS * interval_ms
        )


@dataclass(frozen=True, slots=True)
class Soak:
    frames: int
    rss_mb: list[tuple[int, float]]  # (frames done, resident MB), from SOAK_WARMUP_FRAMES on

    @property
    def growth_mb(self) -> float:
        return self.rss_mb[-1][1] - self.rss_mb[0][1] if self.rss_mb else 0.0


@dataclass
class Report:
    pipeline: str
    model: str
    frame_size: tuple[int, int]  # (width, height)
    precision: str
    limit_requests: int
    frames: int
    rounds: list[Round] = field(default_factory=list)
    streams: list[StreamsRun] = field(default_factory=list)  # every N tried, in order
    soak: Soak | None = None

    def median(self, value: Callable[[Round], float]) -> float:
        return statistics.median(value(r) for r in self.rounds)

    @property
    def largest_holding(self) -> int | None:
        run = self.largest_holding_run
        return None if run is None else run.streams

    @property
    def largest_holding_run(self) -> StreamsRun | None:
        held = [run for run in self.streams if run.holds]
        return max(held, key=lambda run: run.streams) if held else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pipeline": self.pipeline,
            "model": self.model,
            "frame_size": list(self.frame_size),
            "precision": self.precision,
            "limit_requests": self.limit_requests,
            "frames_per_round": self.frames,
        }
        if self.rounds:
            out["median"] = {
                "limit_fps": self.median(lambda r: r.limit.fps),
                "decode_fps": self.median(lambda r: r.decode.fps),
                "ceiling_fps": self.median(lambda r: r.ceiling_fps),
                "pipeline_fps": self.median(lambda r: r.pipeline.fps),
                "pipeline_ratio": self.median(lambda r: r.ratio),
                "limit_ratio": self.median(lambda r: r.limit.fps / r.ceiling_fps),
                "decode_ratio": self.median(lambda r: r.decode.fps / r.ceiling_fps),
            }
            out["rounds"] = [
                {**{k: asdict(v) for k, v in (("limit", r.limit), ("decode", r.decode), ("pipeline", r.pipeline))},
                 "ceiling_fps": r.ceiling_fps, "ratio": r.ratio}
                for r in self.rounds
            ]  # fmt: skip
        if self.streams:
            out["streams"] = [
                {
                    **asdict(run),
                    "total_fps": run.total_fps,
                    "demand_ratio": run.demand_ratio,
                    "holds": run.holds,
                }
                for run in self.streams
            ]
            out["largest_holding_streams"] = self.largest_holding
            held = self.largest_holding_run
            out["largest_holding_demand_ratio"] = None if held is None else held.demand_ratio
        if self.soak is not None:
            out["soak"] = {
                "frames": self.soak.frames,
                "rss_mb": self.soak.rss_mb,
                "growth_mb": self.soak.growth_mb,
            }
        return out


def file_source_of(cfg: PipelineConfig) -> FileSourceConfig:
    if not isinstance(cfg.source, FileSourceConfig):
        raise ConfigError(
            f"{cfg.name}: bench pipeline needs a video file source (source.type: file), "
            f"not {cfg.source.type}: the ceiling is measured on the same video"
        )
    return cfg.source


def with_source(cfg: PipelineConfig, *, realtime: bool) -> PipelineConfig:
    """The pipeline on its video looped (any number of frames), at its own pace or in real time,
    with totals that do not last beyond the run (no counts file written by a benchmark)."""
    source = file_source_of(cfg).model_copy(update={"loop": True, "realtime": realtime})
    counts = cfg.counts.model_copy(update={"persist": False})
    return cfg.model_copy(update={"source": source, "counts": counts})


def _timed(run: Callable[[Callable[[], None]], int]) -> Run:
    """`run(start)` calls `start()` when its timed part begins and returns the frames after it."""
    began: list[tuple[float, float]] = []

    def start() -> None:
        began.append((time.perf_counter(), time.process_time()))

    count = run(start)
    wall, cpu = time.perf_counter(), time.process_time()
    wall0, cpu0 = began[-1]
    return Run(count / (wall - wall0), 1000.0 * (cpu - cpu0) / count)


def decode_run(source: FileSourceConfig, frames: int) -> Run:
    """The video decoded alone, `frames` frames (looped), as the pipeline's file source reads it."""

    def run(start: Callable[[], None]) -> int:
        with FileSource(source.model_copy(update={"loop": True, "realtime": False})) as video:
            decoded = video.frames()
            for _ in itertools.islice(decoded, WARMUP_FRAMES):
                pass
            start()
            return sum(1 for _ in itertools.islice(decoded, frames))

    return _timed(run)


def pipeline_run(cfg: PipelineConfig, pool: ModelPool, frames: int, folder: Path) -> Run:
    """The whole pipeline at its own pace for WARMUP_FRAMES + `frames` frames; the last `frames` timed."""
    pipeline = build(
        with_source(cfg, realtime=False),
        pool,
        events_path=str(folder / "events.jsonl"),
        outputs=False,
        max_frames=WARMUP_FRAMES + frames,
    )

    def run(start: Callable[[], None]) -> int:
        for count, _ in enumerate(pipeline.results(), start=1):
            if count == WARMUP_FRAMES:
                start()
        return pipeline.stats.frames - WARMUP_FRAMES

    return _timed(run)


@dataclass(frozen=True, slots=True)
class CeilingProbe:
    """The limit and decode runs of one pipeline: its compiled model on its video's first frame,
    and its video."""

    source: FileSourceConfig
    compiled: Any
    image: NDArray[np.uint8]  # the video's first frame
    requests: int  # the limit's requests: the model's optimum, or the pipeline's in_flight if more
    inner_hw: tuple[int, int] | None

    @classmethod
    def of(cls, cfg: PipelineConfig, pool: ModelPool) -> CeilingProbe:
        source = file_source_of(cfg)
        with FileSource(source) as video:
            first = next(f for f in video.frames() if f is not None)
        # the pipeline's own detector, so its own compiled model and request count
        detector = prepare(with_source(cfg, realtime=False), pool, outputs=False).detector
        frame_hw = first.image.shape[:2]
        compiled = detector.compiled_for(frame_hw)
        optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        return cls(
            source, compiled, first.image, max(optimal, detector.in_flight), detector.inner_hw(frame_hw)
        )

    def limit(self, frames: int) -> Run:
        return openvino_limit(self.compiled, self.image, self.requests, frames, self.inner_hw)

    def decode(self, frames: int) -> Run:
        return decode_run(self.source, frames)

    def ceiling_fps(self, frames: int) -> float:
        return ceiling_fps(self.limit(frames), self.decode(frames))


def measure_rounds(
    cfg: PipelineConfig, pool: ModelPool, probe: CeilingProbe, frames: int, rounds: int, report: Report
) -> None:
    """Limit, decode and pipeline back to back for `rounds`, the order turned every round."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as folder:
        measure: dict[str, Callable[[], Run]] = {
            "limit": lambda: probe.limit(frames),
            "decode": lambda: probe.decode(frames),
            "pipeline": lambda: pipeline_run(cfg, pool, frames, Path(folder)),
        }
        order = list(measure)
        for number in range(rounds):
            runs = {which: measure[which]() for which in order[number % 3 :] + order[: number % 3]}
            report.rounds.append(Round(runs["limit"], runs["decode"], runs["pipeline"]))


def streams_run(cfg: PipelineConfig, pool: ModelPool, streams: int, seconds: float) -> StreamsRun:
    """`streams` real-time looped copies of the pipeline, each on its own thread, for the warm-up
    and then `seconds`."""
    looped = with_source(cfg, realtime=True)
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as folder:
        pipelines = [
            build(looped, pool, events_path=str(Path(folder) / f"events-{i}.jsonl"), outputs=False)
            for i in range(streams)
        ]
        source_fps = pipelines[0].source.fps or 10.0
        measured_from = time.monotonic() + STREAM_WARMUP_S
        until = measured_from + seconds
        delivered = [0] * streams
        ages: list[list[float]] = [[] for _ in range(streams)]
        dropped_at_start = [0] * streams
        failures: list[BaseException] = []  # a stream that fails fails the benchmark, not just its thread

        def loop(number: int, pipeline: Pipeline) -> None:
            try:
                measure_stream(number, pipeline)
            except BaseException as error:
                failures.append(error)
            finally:
                pipeline.stop()

        def measure_stream(number: int, pipeline: Pipeline) -> None:
            started = False
            for result in pipeline.results():
                now = time.monotonic()
                if now >= until:
                    break
                if now < measured_from:
                    continue
                if not started:
                    started = True
                    dropped_at_start[number] = pipeline.source.stats().dropped_frames
                delivered[number] += 1
                ages[number].append(time.time() - result.frame.timestamp)

        threads = [
            threading.Thread(target=loop, args=(i, p), name=f"bench-stream-{i}", daemon=True)
            for i, p in enumerate(pipelines)
        ]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, measured_from - time.monotonic()))
        cpu0 = time.process_time()
        for thread in threads:
            thread.join(timeout=seconds + 60.0)
        cpu = time.process_time() - cpu0
        if failures:
            raise failures[0]
        dropped = sum(
            p.source.stats().dropped_frames - d for p, d in zip(pipelines, dropped_at_start, strict=True)
        )
    every_age = np.asarray([a for each in ages for a in each]) * 1000.0
    frames = max(1, sum(delivered))
    return StreamsRun(
        streams=streams,
        source_fps=source_fps,
        seconds=seconds,
        fps=[count / seconds for count in delivered],
        age_p50_ms=float(np.percentile(every_age, 50)) if every_age.size else math.inf,
        age_p95_ms=float(np.percentile(every_age, 95)) if every_age.size else math.inf,
        dropped=dropped,
        cpu_ms=1000.0 * cpu / frames,
    )


def largest_holding(
    cfg: PipelineConfig,
    pool: ModelPool,
    start: int,
    seconds: float,
    report: Report,
    *,
    ceiling: Callable[[], float] | None = None,
    most: int = 64,
) -> None:
    """Streams runs from `start` up while they hold (or down until one does): the largest N that
    holds. With `ceiling`, it is measured before the first trial and after each, and every trial
    keeps the mean of the ones on either side of it."""
    tried: dict[int, StreamsRun] = {}
    last_ceiling = ceiling() if ceiling is not None else None

    def trial(n: int) -> bool:
        nonlocal last_ceiling
        if n not in tried:
            run = streams_run(cfg, pool, n, seconds)
            if ceiling is not None and last_ceiling is not None:
                after = ceiling()
                run = replace(run, ceiling_fps=(last_ceiling + after) / 2.0)
                last_ceiling = after
            tried[n] = run
            report.streams.append(run)
        return tried[n].holds

    n = max(1, start)
    if trial(n):
        while n < most and trial(n + 1):
            n += 1
    else:
        while n > 1 and not trial(n - 1):
            n -= 1


def soak_run(
    cfg: PipelineConfig, pool: ModelPool, frames: int, samples: int = 20, warmup: int = SOAK_WARMUP_FRAMES
) -> Soak:
    """One looped run of `frames` frames at the loop's own pace, resident memory sampled after
    `warmup` frames and `samples` times more, evenly, to the end."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as folder:
        pipeline = build(
            with_source(cfg, realtime=False),
            pool,
            events_path=str(Path(folder) / "events.jsonl"),
            outputs=False,
            max_frames=frames,
        )
        every = max(1, (frames - warmup) // samples)
        rss: list[tuple[int, float]] = []
        for count, _ in enumerate(pipeline.results(), start=1):
            if (count >= warmup and (count - warmup) % every == 0) or count == frames:
                rss.append((count, resident_mb()))
    return Soak(frames, rss)


def resident_mb() -> float:
    """This process's resident set size (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def format_report(report: Report) -> str:
    width, height = report.frame_size
    limit = f"; limit with {report.limit_requests} requests" if report.rounds else ""
    lines = [f"{report.pipeline}: {report.model} on {width}x{height} frames ({report.precision}{limit})"]
    if report.rounds:
        lines.append(
            f"  {len(report.rounds)} rounds of {report.frames} frames; median FPS, ratio to the ceiling:"
        )
        ceiling = report.median(lambda r: r.ceiling_fps)
        rows: list[tuple[str, list[float], list[float] | None]] = [
            ("OpenVINO limit", [r.limit.fps for r in report.rounds], [r.limit.cpu_ms for r in report.rounds]),
            ("decode alone", [r.decode.fps for r in report.rounds], [r.decode.cpu_ms for r in report.rounds]),
            ("ceiling", [r.ceiling_fps for r in report.rounds], None),
            (
                "whole pipeline",
                [r.pipeline.fps for r in report.rounds],
                [r.pipeline.cpu_ms for r in report.rounds],
            ),
        ]
        ceilings = [r.ceiling_fps for r in report.rounds]
        for name, fps, cpu_ms in rows:
            ratio = statistics.median(f / c for f, c in zip(fps, ceilings, strict=True))
            each = ", ".join(f"{f:.1f}" for f in fps)
            cpu_text = f"  {statistics.median(cpu_ms):5.2f} CPU ms/frame" if cpu_ms is not None else " " * 20
            lines.append(f"  {name:<15} {statistics.median(fps):7.1f} FPS  x{ratio:.3f}{cpu_text}  [{each}]")
        lines.append(
            f"  whole pipeline / ceiling (median of rounds): {report.median(lambda r: r.ratio):.3f}"
            f" (ceiling {ceiling:.1f} FPS)"
        )
    for run in report.streams:
        demand = (
            f", demand x{run.demand_ratio:.3f} of the ceiling next to it ({run.ceiling_fps:.1f} FPS)"
            if run.demand_ratio is not None and run.ceiling_fps is not None
            else ""
        )
        lines.append(
            f"  {run.streams:3d} streams at {run.source_fps:g} fps: per stream {min(run.fps):5.2f}-{max(run.fps):5.2f} fps"
            f" (total {run.total_fps:6.1f}), frame age p50 {run.age_p50_ms:6.1f} ms p95 {run.age_p95_ms:6.1f} ms,"
            f" {run.dropped} dropped, {run.cpu_ms:.2f} CPU ms/frame{demand}  {'holds' if run.holds else 'falls behind'}"
        )
    if report.streams:
        held = report.largest_holding_run
        found = "none" if held is None else str(held.streams)
        if held is not None and held.demand_ratio is not None:
            found += f" (demand x{held.demand_ratio:.3f} of the ceiling measured next to it)"
        lines.append(f"  largest number of streams that holds: {found}")
    if report.soak is not None:
        soak = report.soak
        first, last = soak.rss_mb[0], soak.rss_mb[-1]
        lines.append(
            f"  soak: {soak.frames} frames; resident {first[1]:.1f} MB at frame {first[0]}, {last[1]:.1f} MB at "
            f"frame {last[0]}: {soak.growth_mb:+.1f} MB"
        )
    return "\n".join(lines)
