"""Build the stages of a pipeline from its config and run the frame loop.

    Source ──Frame──▶ Detector ──Detections──▶ SortTracker ──Tracks──▶ Rules ──Event──▶ Publisher

`build()` is the one place that maps config sections to stage arguments; `Pipeline.run()` is the
whole loop. The process around it (signals, sd_notify, one thread per pipeline) is runtime.py;
the `edgepipe run` / `edgepipe check` commands are commands.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgepipe.config import (
    CameraSourceConfig,
    FileSourceConfig,
    ImageFolderSourceConfig,
    LineRuleConfig,
    PipelineConfig,
    RtspSourceConfig,
    ZoneRuleConfig,
)
from edgepipe.detect import Detector, ModelPool
from edgepipe.errors import ConfigError
from edgepipe.linking import TrackLinker
from edgepipe.metrics import Metrics, log_line
from edgepipe.publish import FanoutPublisher, Publisher
from edgepipe.publish.discovery import discovery_messages
from edgepipe.publish.jsonl import JsonlSink
from edgepipe.publish.mqtt import MqttPublisher
from edgepipe.rules import LineCrossing, Rules, Zone
from edgepipe.sources import CameraSource, FileSource, ImageFolderSource, RtspSource, Source
from edgepipe.track import SortTracker
from edgepipe.types import Counts, Event, Frame, totals

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

    def run(self, on_frame: Callable[[RunStats], object] | None = None) -> RunStats:
        """Process frames until the source ends, max_frames is reached or stop() is called."""
        self.stats = RunStats()
        self.metrics = Metrics(self.name, window_s=self.metrics.window_s)
        last_counts: Counts | None = None
        self._next_status = time.monotonic() + self.status_interval_s
        self._status_state = self.source.state
        entered: dict[int, float] = {}  # frame index → when the detector took it (≤ 2·in_flight entries)
        self.source.on_idle = self._idle
        try:
            with self.source:
                if self.on_ready is not None:
                    self.on_ready()
                frame_waiting = self.source.frame_waiting if self.source.is_live else None
                for frame, detections in self.detector.stream(
                    self._feed(entered), frame_waiting=frame_waiting
                ):
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
                    if on_frame is not None:
                        on_frame(self.stats)
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
    rules = build_rules(cfg, detector.labels)
    return Pipeline(
        cfg.name,
        build_source(cfg),
        detector,
        tracker,
        rules,
        _build_publisher(cfg, events_path, rules.counts()),
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


def build_rules(cfg: PipelineConfig, labels: Sequence[str], *, link: bool = True) -> Rules:
    """The pipeline's rules and the TrackLinker they share; `link=False` for ids that are true
    identities (ground truth)."""
    rules = [build_rule(cfg.name, rule, labels) for rule in cfg.rules]
    if not link or cfg.linking.max_gap_s == 0:
        return Rules(rules)
    return Rules(rules, TrackLinker(cfg.linking.max_gap_s, cfg.linking.max_distance))


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
            class_ids=_class_ids(rule.classes, labels, f"rules.{rule.name}.classes"),
        )
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


def _build_publisher(cfg: PipelineConfig, events_path: str | None, counts: Counts) -> Publisher:
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
                discovery=discovery_messages(
                    cfg.name,
                    {rule: list(totals(values)) for rule, values in counts.items()},
                    topic_prefix=mqtt.topic_prefix,
                )
                if mqtt.home_assistant_discovery
                else (),
            )
        )
    if cfg.outputs.jsonl is not None:
        publishers.append(JsonlSink(cfg.outputs.jsonl.path))
    if events_path is not None:
        publishers.append(JsonlSink(events_path))
    return FanoutPublisher(publishers)
