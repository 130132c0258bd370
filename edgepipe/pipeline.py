"""The frame loop of one pipeline, and `build()` that makes its stages from a config.

    Source ──Frame──▶ Detector ──Detections──▶ Tracker ──Tracks──▶ Rules ──Event──▶ Publisher

`Pipeline.results()` is the whole loop, top to bottom: every stage is called from it and returns
to it, nothing is set on a stage from outside. What the process adds around it (READY, the
watchdog, the systemd status line) comes in as one `Lifecycle` object that the loop calls; the
process itself is runtime.py, the commands are commands/, the Python API is api.py. Whoever looks
at the loop from other threads (the web page, web/) is a `Watcher` the loop hands references to.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from edgepipe.config import LineRuleConfig, PipelineConfig, ZoneRuleConfig
from edgepipe.counts import LastingCounts, counts_path_of, lasting_counts
from edgepipe.detect import Detector, ModelPool
from edgepipe.draw import Scene, rule_shapes
from edgepipe.errors import FieldError, OutputError
from edgepipe.labels import class_ids
from edgepipe.linking import TrackLinker
from edgepipe.metrics import Metrics, PrometheusPipeline, log_line
from edgepipe.publish import FanoutPublisher, Publisher
from edgepipe.publish.discovery import home_assistant_discovery
from edgepipe.publish.jsonl import JsonlSink, check_events_path
from edgepipe.publish.mqtt import MqttPublisher, MqttSettings, mqtt_settings
from edgepipe.rules import LineCrossing, Rules, Zone
from edgepipe.sources import Source, SourceStats, open_source
from edgepipe.track import Tracker, build_tracker
from edgepipe.types import Counts, Detections, Event, Frame, FrameResult

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """What one run did, for the final summary."""

    frames: int = 0
    detections: int = 0
    track_ids: set[int] = field(default_factory=set)
    events: Counter[str] = field(default_factory=Counter)
    lost: int = 0  # events accepted by the outputs that will never be delivered (known at the end)
    skipped_frames: int = 0  # frames or images of the source that could not be decoded
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Lifecycle(Protocol):
    """What the process around a pipeline wants to hear from its loop (runtime.Runtime)."""

    def ready(self, pipeline: str) -> None:
        """The model is compiled and the source is open: frames are about to flow."""

    def alive(self, pipeline: str) -> None:
        """The loop went round once more (after a frame, or an idle tick while a camera is away)."""

    def status(self, pipeline: str, line: str) -> None:
        """A new one-line status of this pipeline."""


@dataclass(frozen=True, slots=True)
class Beat:
    """What the loop tells its watcher after each frame or idle tick."""

    at_s: float  # time.monotonic() of the beat
    frames: int  # frames processed in this run
    source: SourceStats
    outbox_depth: int | None
    status: dict[str, object] | None  # the status last published (the MQTT status topic's stats)


class Watcher(Protocol):
    """Looks at the loop from threads of its own (the web page, web/view.py). The loop hands it
    references to what it already has; every method must return at once: nothing is copied, drawn or
    encoded here, and nothing waits for a reader."""

    def started(self, scene: Scene) -> None:
        """The rules are placed on the frame size: what to draw beside the tracks."""

    def frame(self, result: FrameResult) -> None:
        """A frame's result (its image is not changed afterwards by anyone)."""

    def counts(self, counts: Counts) -> None:
        """The running totals: at the start and after each change (a new dict each time)."""

    def beat(self, beat: Beat) -> None:
        """The loop went round once more."""

    def stopped(self) -> None:
        """The loop has ended."""


class NoLifecycle:
    """No process to tell: scripts, notebooks and tests."""

    def ready(self, pipeline: str) -> None:
        pass

    def alive(self, pipeline: str) -> None:
        pass

    def status(self, pipeline: str, line: str) -> None:
        pass


class Pipeline:
    """One camera's stages and the loop that drives them."""

    def __init__(
        self,
        name: str,
        source: Source,
        detector: Detector,
        tracker: Tracker,
        rules: Rules,
        publisher: Publisher,
        *,
        max_frames: int | None = None,
        status_interval_s: float = 10.0,
        counts: LastingCounts | None = None,
        watcher: Watcher | None = None,
        prometheus: PrometheusPipeline | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.detector = detector
        self.tracker = tracker
        self.rules = rules
        self.publisher = publisher
        # the rules' totals across restarts and reset periods (counts.py); by default, this run's only
        self.counts = counts if counts is not None else LastingCounts(name, rules)
        self.max_frames = max_frames
        self.status_interval_s = status_interval_s
        self.watcher = watcher
        self.stats = RunStats()
        self.metrics = Metrics(name, window_s=max(status_interval_s, 5.0), prometheus=prometheus)
        self._taken_at: dict[int, float] = {}  # frame index → when the detector took it (≤ 2·in_flight)
        self._next_status = 0.0
        self._status_state = ""
        self._last_status: dict[str, object] | None = None

    def results(self, lifecycle: Lifecycle | None = None) -> Iterator[FrameResult]:
        """Run the loop, yielding what each frame gave, until the source ends, max_frames is reached
        or stop() is called (closing the iterator early ends it too). At the end the rules close
        (zones emit their last exits) and the publisher is flushed and closed."""
        lifecycle = lifecycle if lifecycle is not None else NoLifecycle()
        self.stats = RunStats()
        self.metrics = Metrics(self.name, window_s=self.metrics.window_s, prometheus=self.metrics.prometheus)
        self._next_status = time.monotonic() + self.status_interval_s
        self._status_state = ""
        try:
            with self.source:
                frame_hw = self.source.frame_size()
                if frame_hw is not None:
                    self.detector.prepare(frame_hw)  # compile before READY, not on the first frame
                    self._place_rules(frame_hw)  # a rule outside the frame stops here, before READY
                lifecycle.ready(self.name)
                self._publish(self.counts.restore())  # earlier runs' totals (reset if their period ended)
                self._publish_counts()  # retained totals from the start
                frame_waiting = self.source.frame_waiting if self.source.is_live else None
                frames = self._clocked(self.source.frames())
                for item in self.detector.stream(frames, frame_waiting=frame_waiting):
                    self._publish(self.counts.reset_if_due())  # counts.reset: a new period began
                    if item is not None:  # None: no frame for a while (a camera reconnecting)
                        yield self._track_and_count(*item)
                    self._heartbeat(lifecycle)
                    if self.max_frames is not None and self.stats.frames >= self.max_frames:
                        break
        finally:
            self._finish()

    def run(self, lifecycle: Lifecycle | None = None) -> RunStats:
        """The loop to its end, for callers that only want the totals."""
        for _ in self.results(lifecycle):
            pass
        return self.stats

    def stop(self) -> None:
        """Ask the loop to finish: the source ends, frames in flight are still processed."""
        self.source.stop()

    def _clocked(self, frames: Iterator[Frame | None]) -> Iterator[Frame | None]:
        """The source's frames, noting when each went into the detector (for its latency)."""
        for frame in frames:
            if frame is not None:
                self._taken_at[frame.index] = time.perf_counter()
            yield frame

    def _place_rules(self, frame_hw: tuple[int, int]) -> None:
        """Fit the rules to the frame size (relative points become pixels) and tell the watcher
        what to draw; a rule outside the frame is a ConfigError naming the frame size."""
        self.rules.place(frame_hw)  # a rule outside: a ConfigError at its line of the pipeline file
        if self.watcher is not None:
            self.watcher.started(self.scene())

    def scene(self) -> Scene:
        """What to draw beside the tracks: the placed rules and the model's labels."""
        return Scene(rule_shapes(self.rules), self.detector.labels)

    def _track_and_count(self, frame: Frame, detections: Detections) -> FrameResult:
        """Everything after detection for one frame: track, rules, publish, count."""
        if self.rules.frame_hw is None:  # a source that did not know its frame size before the first
            self._place_rules((frame.image.shape[0], frame.image.shape[1]))
        detected_at = time.perf_counter()
        self.metrics.record("detect", detected_at - self._taken_at.pop(frame.index, detected_at))
        time_s = frame.source_time if frame.source_time is not None else frame.timestamp
        tracks = self.tracker.update(detections, frame_index=frame.index, time_s=time_s)
        tracked_at = time.perf_counter()
        self.metrics.record("track", tracked_at - detected_at)
        events = tuple(self.rules.update(tracks, frame))
        self._publish(events)
        self.metrics.record("rules", time.perf_counter() - tracked_at)  # rules + publish
        self.metrics.frame_done(frame.timestamp)
        self.stats.frames += 1
        # what the detector's threshold lets through; lower boxes only continue tracks
        self.stats.detections += int(np.count_nonzero(detections.score >= self.detector.threshold))
        self.stats.track_ids.update(tracks.track_id.tolist())
        result = FrameResult(frame, detections, tracks, events)
        if self.watcher is not None:
            self.watcher.frame(result)
        return result

    def _publish(self, events: Sequence[Event]) -> None:
        for event in events:
            self.stats.events[event.type] += 1
            self.metrics.event(event)
            self.publisher.publish(event)
        if events:  # totals change only with an event: publish them then, and only then
            self.counts.save()  # saved first: what a restart takes up is never behind what was published
            self._publish_counts()

    def _publish_counts(self) -> None:
        counts = self.rules.counts()
        self.publisher.publish_counts(counts)
        if self.watcher is not None:
            self.watcher.counts(counts)

    def _heartbeat(self, lifecycle: Lifecycle) -> None:
        """After each frame and each idle tick: tell the process we are alive; publish the status
        when it is due or the source state just changed (connected → reconnecting at once)."""
        lifecycle.alive(self.name)
        source = self.source.stats()
        if time.monotonic() >= self._next_status or source.state != self._status_state:
            self._status_state = source.state
            self._next_status = time.monotonic() + self.status_interval_s
            self._last_status = snapshot = self.status()
            self.publisher.publish_status(snapshot)
            line = log_line(snapshot)
            log.info("%s", line)
            lifecycle.status(self.name, line)
        if self.watcher is not None:
            beat = Beat(
                time.monotonic(), self.stats.frames, source, self.publisher.backlog(), self._last_status
            )
            self.watcher.beat(beat)

    def _finish(self) -> None:
        self.stats.finished = time.monotonic()
        try:
            self._publish(self.rules.close())
            self._last_status = snapshot = self.status()
            self.publisher.publish_status(snapshot)
            try:
                self.publisher.close()
            finally:
                self.counts.close()
            self.stats.lost = self.publisher.lost()
            self.stats.skipped_frames = self.source.stats().skipped
        finally:
            if self.watcher is not None:
                self.watcher.stopped()

    def status(self) -> dict[str, object]:
        """The status payload: windowed metrics, source state and drops, outbox depth."""
        source = self.source.stats()
        snapshot: dict[str, object] = self.metrics.snapshot(
            source_state=source.state,
            dropped_frames=source.dropped_frames,
            source_reconnects=source.reconnects if self.source.is_live else None,
            outbox_depth=self.publisher.backlog(),
        )
        snapshot["run_fps"] = round(self.stats.fps, 2)
        problems = self.publisher.problems() + self.counts.problems()
        if problems:  # "degraded": still counting, but delivery is not as it should be
            snapshot["problems"] = problems
        return snapshot


# ---------------------------------------------------------------- building stages from config
@dataclass
class Prepared:
    """Every stage of a pipeline made and every setting checked, with nothing started yet: no
    source opened, no outbox or events file created, no connection made. `edgepipe check` stops
    here; `build` goes on from here, so both run the same checks."""

    cfg: PipelineConfig
    source: Source
    detector: Detector
    tracker: Tracker
    rules: Rules
    mqtt: MqttSettings | None
    jsonl_paths: list[str]
    counts_path: Path | None  # where the totals last across runs; None: they do not


def prepare(
    cfg: PipelineConfig, pool: ModelPool, *, events_path: str | None = None, outputs: bool = True
) -> Prepared:
    """Check and make every stage of `cfg`; any problem is a ConfigError at its `FILE:LINE`, or
    another EdgepipeError, before any frame. `outputs=False` leaves out the file's own outputs."""
    # The occlusion tracker lets lower-scored boxes continue tracks: the detector delivers down to
    # its low_threshold; `detector.threshold` stays the score that starts a track and is counted.
    lowest = cfg.detector.threshold
    if cfg.tracker.type == "occlusion":
        lowest = min(lowest, cfg.tracker.low_threshold)
    detector = located(cfg, ("detector",), lambda: Detector(cfg.detector, pool=pool, score_threshold=lowest))
    tracker = build_tracker(cfg.tracker, high_threshold=cfg.detector.threshold)
    rules = build_rules(cfg, detector.labels)
    mqtt = cfg.outputs.mqtt if outputs else None
    mqtt_ready = None
    if mqtt is not None:
        discovery: tuple[list[tuple[str, bytes]], list[str]] = ([], [])
        if mqtt.home_assistant_discovery:
            # configs, and what to clear
            discovery = home_assistant_discovery(cfg, rules.counts(), detector.labels)
        mqtt_ready = located(cfg, ("outputs", "mqtt"), lambda: mqtt_settings(cfg.name, mqtt, *discovery))
    counts_path = located(cfg, ("counts",), lambda: counts_path_of(cfg, mqtt_ready))
    jsonl: list[str] = []
    if outputs and cfg.outputs.jsonl is not None:
        try:
            check_events_path(cfg.outputs.jsonl.path)
        except OutputError as error:
            raise cfg.error_at(("outputs", "jsonl", "path"), str(error)) from None
        jsonl.append(cfg.outputs.jsonl.path)
    if events_path is not None:
        check_events_path(events_path)
        jsonl.append(events_path)
    return Prepared(cfg, open_source(cfg.source), detector, tracker, rules, mqtt_ready, jsonl, counts_path)


def build(
    cfg: PipelineConfig,
    pool: ModelPool,
    *,
    events_path: str | None = None,
    max_frames: int | None = None,
    outputs: bool = True,
    publishers: Sequence[Publisher] = (),
    watcher: Watcher | None = None,
    prometheus: PrometheusPipeline | None = None,
) -> Pipeline:
    """Create every stage of `cfg` (see `prepare`) and open its outputs.

    `outputs=False` leaves out the file's own outputs (MQTT, JSON lines); `publishers` are added
    after them (the Python API's event consumers). `watcher` (the web page's view of this pipeline)
    and `prometheus` (its instruments on the process's /metrics) are for `edgepipe run --http`."""
    ready = prepare(cfg, pool, events_path=events_path, outputs=outputs)
    counts = lasting_counts(cfg, ready.rules, ready.counts_path)  # before the outputs: it holds no thread
    own: list[Publisher] = [JsonlSink(path) for path in ready.jsonl_paths]
    if ready.mqtt is not None:
        own.insert(0, MqttPublisher(cfg.name, ready.mqtt))
    return Pipeline(
        cfg.name,
        ready.source,
        ready.detector,
        ready.tracker,
        ready.rules,
        FanoutPublisher([*own, *publishers]),
        max_frames=max_frames,
        status_interval_s=cfg.status_interval_s,
        counts=counts,
        watcher=watcher,
        prometheus=prometheus,
    )


def _class_ids(names: Sequence[str] | None, labels: Sequence[str]) -> set[int] | None:
    return None if names is None else set(class_ids(names, labels))


T = TypeVar("T")


def located(cfg: PipelineConfig, section: tuple[str | int, ...], make: Callable[[], T]) -> T:
    """`make()`, with a FieldError it raises turned into the pipeline file's `FILE:LINE: field`."""
    try:
        return make()
    except FieldError as error:
        raise cfg.error_at((*section, *error.field), error.message) from None


def build_rules(cfg: PipelineConfig, labels: Sequence[str], *, link: bool = True) -> Rules:
    """The pipeline's rules and the TrackLinker they share; `link=False` for ids that are true
    identities (ground truth)."""
    rules = [
        located(cfg, ("rules", index), functools.partial(build_rule, cfg.name, rule, labels))
        for index, rule in enumerate(cfg.rules)
    ]
    linker = None
    if link and cfg.linking.max_gap_s > 0:
        linker = TrackLinker(cfg.linking.max_gap_s, cfg.linking.max_distance)
    return Rules(rules, linker, locate=lambda error: cfg.error_at(("rules", *error.field), error.message))


def build_rule(
    pipeline: str, rule: LineRuleConfig | ZoneRuleConfig, labels: Sequence[str]
) -> LineCrossing | Zone:
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
            class_ids=_class_ids(rule.classes, labels),
            units=rule.units,
        )
    return Zone(
        rule.name,
        rule.polygon,
        pipeline=pipeline,
        labels=labels,
        reference_point=rule.reference_point,
        loiter_s=rule.loiter_s,
        hysteresis_px=rule.hysteresis_px,
        class_ids=_class_ids(rule.classes, labels),
        units=rule.units,
    )
