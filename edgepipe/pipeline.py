"""Build the stages of a pipeline from its config and run the frame loop.

    Source ──Frame──▶ Detector ──Detections──▶ SortTracker ──Tracks──▶ Rules ──Event──▶ Publisher

`build()` is the one place that maps config sections to stage arguments; `Pipeline.run()` is the
whole loop. `run_command` / `check_command` are the `edgepipe run` / `edgepipe check` commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from edgepipe.config import (
    CameraSourceConfig,
    FileSourceConfig,
    ImageFolderSourceConfig,
    LineRuleConfig,
    PipelineConfig,
    RtspSourceConfig,
    load_pipeline,
    source_from_argument,
)
from edgepipe.detect import Detector, ModelPool
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.metrics import Metrics, log_line
from edgepipe.publish import FanoutPublisher, Publisher
from edgepipe.publish.jsonl import JsonlSink
from edgepipe.publish.mqtt import MqttPublisher
from edgepipe.rules import LineCrossing, Rules, Zone
from edgepipe.sources import CameraSource, FileSource, ImageFolderSource, RtspSource, Source
from edgepipe.systemd import Notifier
from edgepipe.track import SortTracker
from edgepipe.types import Event, Frame

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """What one run did, for the final summary."""

    frames: int = 0
    detections: int = 0
    track_ids: set[int] = field(default_factory=set)
    events: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    """One camera's stages and the loop that drives them."""

    def __init__(
        self,
        name: str,
        source: Source,
        detector: Detector,
        tracker: SortTracker,
        rules: Rules,
        publisher: Publisher,
        *,
        max_frames: int | None = None,
        status_interval_s: float = 10.0,
    ) -> None:
        self.name = name
        self.source = source
        self.detector = detector
        self.tracker = tracker
        self.rules = rules
        self.publisher = publisher
        self.max_frames = max_frames
        self.status_interval_s = status_interval_s
        self.stats = RunStats()
        self.metrics = Metrics(name, window_s=max(status_interval_s, 5.0))
        # Set by the process runtime (run_command): the source is open / the loop is alive / a status line.
        self.on_ready: Callable[[], object] | None = None
        self.on_alive: Callable[[], object] | None = None
        self.on_status: Callable[[str], object] | None = None
        self._stopping = threading.Event()
        self._next_status = 0.0
        self._status_state = ""

    def run(self, progress: ProgressBar | None = None) -> RunStats:
        """Process frames until the source ends, max_frames is reached or stop() is called."""
        self.stats = RunStats()
        self.metrics = Metrics(self.name, window_s=self.metrics.window_s)
        last_counts: dict[str, dict[str, int]] | None = None
        self._next_status = time.monotonic() + self.status_interval_s
        self._status_state = self.source.state
        entered: dict[int, float] = {}  # frame index → when the detector took it (≤ 2·in_flight entries)
        self.source.on_idle = self._idle
        try:
            with self.source:
                if self.on_ready is not None:
                    self.on_ready()
                for frame, detections in self.detector.stream(self._feed(entered)):
                    t_detected = time.perf_counter()
                    self.metrics.record("detect", t_detected - entered.pop(frame.index, t_detected))
                    tracks = self.tracker.update(detections, frame_index=frame.index)
                    t_tracked = time.perf_counter()
                    self.metrics.record("track", t_tracked - t_detected)
                    for event in self.rules.update(tracks, frame):
                        self._publish(event)
                    counts = self.rules.counts()
                    if counts != last_counts:
                        self.publisher.publish_counts(counts)
                        last_counts = counts
                    self.metrics.record("rules", time.perf_counter() - t_tracked)  # rules + publish
                    self.metrics.frame_done(frame.timestamp)
                    self.stats.frames += 1
                    self.stats.detections += len(detections)
                    self.stats.track_ids.update(tracks.track_id.tolist())
                    if progress is not None:
                        progress.update(self.stats)
                    self._idle()
                    if self.max_frames is not None and self.stats.frames >= self.max_frames:
                        break
        finally:
            self.stats.finished = time.monotonic()
            for event in self.rules.close():
                self._publish(event)
            self.publisher.publish_counts(self.rules.counts())
            self.publisher.publish_status(self.status())
            self.publisher.close()
        return self.stats

    def _feed(self, entered: dict[int, float]) -> Iterator[Frame]:
        for frame in self.source:
            entered[frame.index] = time.perf_counter()
            yield frame

    def _idle(self) -> None:
        """Called after each frame and, while the source has none, about once a second."""
        if self.on_alive is not None:
            self.on_alive()
        state = self.source.state
        if time.monotonic() >= self._next_status or state != self._status_state:
            # a source state change (connected → reconnecting) is published at once, not at the next tick
            self._status_state = state
            self._next_status = time.monotonic() + self.status_interval_s
            snapshot = self.status()
            self.publisher.publish_status(snapshot)
            line = log_line(snapshot)
            log.info("%s", line)
            if self.on_status is not None:
                self.on_status(line)

    def stop(self) -> None:
        """Ask the loop to finish: the source ends, frames in flight are still processed."""
        self._stopping.set()
        self.source.stop()

    def status(self) -> dict[str, object]:
        """The status payload: windowed metrics, source state and drops, outbox depth."""
        snapshot: dict[str, object] = self.metrics.snapshot(
            source_state=self.source.state,
            dropped_frames=self.source.dropped_frames,
            source_reconnects=getattr(self.source, "reconnects", None),
            outbox_depth=self._outbox_depth(),
        )
        snapshot["run_fps"] = round(self.stats.fps, 2)
        return snapshot

    def _outbox_depth(self) -> int | None:
        publishers = getattr(self.publisher, "publishers", [self.publisher])
        depths = [p.outbox_depth for p in publishers if isinstance(p, MqttPublisher)]
        return sum(depths) if depths else None

    def _publish(self, event: Event) -> None:
        self.stats.events[event.type] += 1
        self.publisher.publish(event)


# ---------------------------------------------------------------- building stages from config
def build(
    cfg: PipelineConfig,
    pool: ModelPool,
    *,
    events_path: str | None = None,
    max_frames: int | None = None,
) -> Pipeline:
    """Create every stage of `cfg`; fails here, before any frame, on anything wrong."""
    detector = build_detector(cfg, pool)
    tracker = SortTracker(
        max_age=cfg.tracker.max_age,
        min_hits=cfg.tracker.min_hits,
        iou_threshold=cfg.tracker.iou_threshold,
        match_classes=cfg.tracker.match_classes,
    )
    rules = Rules([_build_rule(cfg.name, rule, detector.labels) for rule in cfg.rules])
    return Pipeline(
        cfg.name,
        build_source(cfg),
        detector,
        tracker,
        rules,
        _build_publisher(cfg, events_path),
        max_frames=max_frames,
        status_interval_s=cfg.status_interval_s,
    )


def build_detector(cfg: PipelineConfig, pool: ModelPool) -> Detector:
    detector_cfg = cfg.detector
    return Detector(
        detector_cfg.model,
        pool=pool,
        device=detector_cfg.device,
        precision=detector_cfg.precision,
        performance_hint=detector_cfg.performance_hint,
        in_flight=detector_cfg.in_flight,
        score_threshold=detector_cfg.threshold,
        nms_iou=detector_cfg.nms_iou,
        classes=detector_cfg.classes,
        min_box_area=detector_cfg.min_box_area,
        roi_xyxy=detector_cfg.roi,
        max_detections=detector_cfg.max_detections,
    )


def build_source(cfg: PipelineConfig) -> Source:
    spec = cfg.source
    if isinstance(spec, FileSourceConfig):
        return FileSource(spec.path, loop=spec.loop, realtime=spec.realtime)
    if isinstance(spec, ImageFolderSourceConfig):
        return ImageFolderSource(spec.path, fps=spec.fps, loop=spec.loop)
    if isinstance(spec, CameraSourceConfig):
        return CameraSource(
            spec.device,
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            reconnect_initial_s=spec.reconnect_initial_s,
            reconnect_max_s=spec.reconnect_max_s,
        )
    assert isinstance(spec, RtspSourceConfig)
    return RtspSource(
        spec.url,
        open_timeout_s=spec.open_timeout_s,
        read_timeout_s=spec.read_timeout_s,
        reconnect_initial_s=spec.reconnect_initial_s,
        reconnect_max_s=spec.reconnect_max_s,
        transport=spec.transport,
    )


def _class_ids(names: Sequence[str] | None, labels: Sequence[str], where: str) -> set[int] | None:
    if names is None:
        return None
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise ConfigError(f"{where}: unknown class {', '.join(unknown)}; the model knows {', '.join(labels)}")
    return {labels.index(n) for n in names}


def _build_rule(pipeline: str, rule: LineRuleConfig | object, labels: Sequence[str]) -> LineCrossing | Zone:
    if isinstance(rule, LineRuleConfig):
        return LineCrossing(
            rule.name,
            rule.points[0],
            rule.points[1],
            pipeline=pipeline,
            labels=labels,
            in_side=rule.in_side,
            reference_point=rule.reference_point,
            hysteresis_px=rule.hysteresis_px,
            class_ids=_class_ids(rule.classes, labels, f"rules.{rule.name}.classes"),
        )
    from edgepipe.config import ZoneRuleConfig

    assert isinstance(rule, ZoneRuleConfig)
    return Zone(
        rule.name,
        rule.polygon,
        pipeline=pipeline,
        labels=labels,
        reference_point=rule.reference_point,
        loiter_s=rule.loiter_s,
        hysteresis_px=rule.hysteresis_px,
        class_ids=_class_ids(rule.classes, labels, f"rules.{rule.name}.classes"),
    )


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; elsewhere keep state beside the working dir
    return Path(os.environ.get("STATE_DIRECTORY", "state"))


def _build_publisher(cfg: PipelineConfig, events_path: str | None) -> Publisher:
    publishers: list[Publisher] = []
    mqtt = cfg.outputs.mqtt
    if mqtt is not None:
        password = mqtt.password()
        outbox_path = mqtt.outbox.path or _default_state_dir() / f"{cfg.name}-outbox.sqlite"
        tls = mqtt.tls
        publishers.append(
            MqttPublisher(
                cfg.name,
                host=mqtt.host,
                port=mqtt.port,
                client_id=mqtt.client_id or f"edgepipe-{cfg.name}",
                keepalive_s=mqtt.keepalive_s,
                qos=mqtt.qos,
                topic_prefix=mqtt.topic_prefix,
                tls=tls is not None,  # a tls: section without ca_file means the system CAs
                tls_ca_file=tls.ca_file if tls else None,
                tls_cert_file=tls.cert_file if tls else None,
                tls_key_file=tls.key_file if tls else None,
                tls_insecure=tls.insecure if tls else False,
                username=mqtt.username,
                password=password.get_secret_value() if password is not None else None,
                outbox_path=outbox_path,
                outbox_max_messages=mqtt.outbox.max_messages,
                outbox_max_age_s=mqtt.outbox.max_age_s,
            )
        )
    if cfg.outputs.jsonl is not None:
        publishers.append(JsonlSink(cfg.outputs.jsonl.path))
    if events_path is not None:
        publishers.append(JsonlSink(events_path))
    return FanoutPublisher(publishers)


# ---------------------------------------------------------------- commands
class ProgressBar:
    """One self-rewriting line on a terminal: frames done, of how many, and fps."""

    def __init__(self, stream: TextIO, total_frames: int | None) -> None:
        self.stream = stream
        self.total = total_frames
        self._last = 0.0

    def update(self, stats: RunStats) -> None:
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        if self.total:
            done = min(stats.frames / self.total, 1.0)
            bar = "#" * int(done * 30)
            line = f"[{bar:<30}] {stats.frames}/{self.total} frames {stats.fps:6.1f} fps"
        else:
            line = f"{stats.frames} frames {stats.fps:6.1f} fps"
        self.stream.write(f"\r{line}  ")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


def load_all(paths: Sequence[str]) -> list[PipelineConfig]:
    """Load every pipeline file and report all their errors together."""
    configs: list[PipelineConfig] = []
    errors: list[str] = []
    for path in paths:
        try:
            configs.append(load_pipeline(path))
        except ConfigError as error:
            errors.append(str(error))
    if errors:
        raise ConfigError("\n".join(errors))
    names = [c.name for c in configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"pipeline names must be unique in one process; repeated: {', '.join(repeated)}")
    return configs


def summary_text(name: str, stats: RunStats, counts: dict[str, dict[str, int]]) -> str:
    events = ", ".join(f"{kind} {n}" for kind, n in sorted(stats.events.items())) or "none"
    lines = [
        f"{name}: {stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} fps), "
        f"{stats.detections} detections, {len(stats.track_ids)} tracks",
        f"{name}: events: {events}",
    ]
    for rule, values in counts.items():
        lines.append(f"{name}: {rule}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    configs = load_all(args.pipelines)
    if args.source is not None:
        if len(configs) != 1:
            raise ConfigError("--source replaces the source of one pipeline; give exactly one PIPELINE.yml")
        configs = [source_from_argument(args.source, configs[0])]
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames: {args.max_frames} is not a positive number of frames")
    pool = ModelPool()  # one OpenVINO core, one compiled model per (model, device) for every pipeline
    pipelines = [build(cfg, pool, events_path=args.events, max_frames=args.max_frames) for cfg in configs]
    show_progress = (
        len(pipelines) == 1
        and not args.no_progress
        and sys.stderr.isatty()
        and not pipelines[0].source.is_live
    )
    progress = ProgressBar(sys.stderr, _frame_total(pipelines[0], args.max_frames)) if show_progress else None
    with Runtime(pipelines, Notifier()) as runtime:
        results = _run_all(pipelines, progress)
    if runtime.signal_name is not None:
        log.warning("stopped by %s", runtime.signal_name)
    for pipeline, stats in zip(pipelines, results, strict=True):
        print(summary_text(pipeline.name, stats, pipeline.rules.counts()), file=sys.stderr)
    return 0


def _frame_total(pipeline: Pipeline, max_frames: int | None) -> int | None:
    total = getattr(pipeline.source, "frame_count", None)
    if max_frames is not None:
        return min(total, max_frames) if total else max_frames
    return total if isinstance(total, int) and total > 0 else None


def _run_all(pipelines: list[Pipeline], progress: ProgressBar | None) -> list[RunStats]:
    """Run each pipeline's loop in its own thread; the main thread waits and handles signals."""
    if len(pipelines) == 1:
        stats = pipelines[0].run(progress)
        if progress is not None:
            progress.finish()
        return [stats]
    results: dict[str, RunStats] = {}
    errors: list[BaseException] = []

    def work(pipeline: Pipeline) -> None:
        try:
            results[pipeline.name] = pipeline.run()
        except BaseException as error:  # re-raised on the main thread below
            errors.append(error)
            for other in pipelines:
                other.stop()

    threads = [threading.Thread(target=work, args=(p,), name=f"pipeline-{p.name}") for p in pipelines]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join keeps the main thread responsive to signals
            thread.join(timeout=0.5)
    if errors:
        raise errors[0]
    return [results[p.name] for p in pipelines]


class Runtime:
    """What the process adds around its pipelines: SIGTERM/SIGINT, and sd_notify to systemd.

    READY=1 once every pipeline has its model compiled and its source open; WATCHDOG=1 only while
    every running pipeline's frame loop is alive (one hung camera loop gets the service restarted);
    STATUS= with each pipeline's last status line; STOPPING=1 on a signal or at the end. The first
    SIGTERM/SIGINT stops the sources and lets each loop drain, flush and publish "offline"; a second
    one raises KeyboardInterrupt (exit 130).
    """

    def __init__(self, pipelines: Sequence[Pipeline], notifier: Notifier) -> None:
        self.pipelines = list(pipelines)
        self.notifier = notifier
        self.signal_name: str | None = None
        self._lock = threading.Lock()  # pipeline threads call in; the signal handler never takes it
        self._ready: set[str] = set()
        self._alive: set[str] = set()
        self._status: dict[str, str] = {}
        self._previous: dict[int, object] = {}
        for pipeline in self.pipelines:
            pipeline.on_ready = lambda name=pipeline.name: self.ready(name)
            pipeline.on_alive = lambda name=pipeline.name: self.alive(name)
            pipeline.on_status = lambda line, name=pipeline.name: self.status(name, line)

    def __enter__(self) -> Runtime:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self.signal_name is None:
            self.notifier.stopping()
        self.notifier.close()

    def ready(self, name: str) -> None:
        with self._lock:
            self._ready.add(name)
            if len(self._ready) == len(self.pipelines):
                names = ", ".join(p.name for p in self.pipelines)
                self.notifier.ready(status=f"running {names}")
                log.info("ready: %s", names)

    def alive(self, name: str) -> None:
        with self._lock:
            self._alive.add(name)
            running = {p.name for p in self.pipelines if p.stats.finished is None}
            if self._alive >= running and self.notifier.watchdog():
                self._alive.clear()

    def status(self, name: str, line: str) -> None:
        with self._lock:
            self._status[name] = line
            self.notifier.status(
                "; ".join(self._status[p.name] for p in self.pipelines if p.name in self._status)
            )

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.notifier.stopping()
        for pipeline in self.pipelines:
            pipeline.stop()


def check_command(args: argparse.Namespace) -> int:
    configs = load_all(args.pipelines)
    pool = ModelPool()
    problems: list[str] = []
    for path, cfg in zip(args.pipelines, configs, strict=True):
        try:
            detector = build_detector(cfg, pool)
            for rule in cfg.rules:
                _build_rule(cfg.name, rule, detector.labels)
            if cfg.outputs.mqtt is not None:
                cfg.outputs.mqtt.password()
            if not args.no_source:
                _probe_source(build_source(cfg), _open_timeout_s(cfg))
        except EdgepipeError as error:
            problems.append(f"{path}: {error}")
            continue
        print(f"{path}: ok ({cfg.name}: {len(cfg.rules)} rules, model {cfg.detector.model.name})")
    if problems:
        raise ConfigError("\n".join(problems))
    return 0


def _open_timeout_s(cfg: PipelineConfig) -> float:
    return cfg.source.open_timeout_s if isinstance(cfg.source, RtspSourceConfig) else 10.0


def _probe_source(source: Source, timeout_s: float) -> None:
    """Open the source and read one frame, so an unreachable camera shows up now."""
    # a live source retries forever by design; the timer turns that into a clear answer
    timer = threading.Timer(timeout_s, source.stop)
    timer.start()
    try:
        with source:
            for _frame in source:
                return
    finally:
        timer.cancel()
    raise EdgepipeError(f"the source gave no frame within {timeout_s:g} s (state: {source.state})")
