"""`edgepipe run` and `edgepipe check`: load pipeline files, build, run or probe, report."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from edgepipe.config import PipelineConfig, RtspSourceConfig, load_pipeline, source_from_argument
from edgepipe.detect import ModelPool
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.pipeline import Pipeline, RunStats, build, build_detector, build_rule, build_source
from edgepipe.runtime import Runtime, run_pipelines
from edgepipe.sources import Source
from edgepipe.systemd import Notifier
from edgepipe.types import Counts, totals

log = logging.getLogger(__name__)


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


def summary_text(name: str, stats: RunStats, counts: Counts) -> str:
    events = ", ".join(f"{kind} {n}" for kind, n in sorted(stats.events.items())) or "none"
    lines = [
        f"{name}: {stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} fps), "
        f"{stats.detections} detections, {len(stats.track_ids)} tracks",
        f"{name}: events: {events}",
    ]
    for rule, values in counts.items():
        line = f"{name}: {rule}: " + ", ".join(f"{k} {v}" for k, v in totals(values).items())
        by_label = values.get("by_label")
        if isinstance(by_label, dict) and len(by_label) > 1:  # one label: the totals say it all
            line += "; " + "; ".join(
                f"{label} " + ", ".join(f"{k} {v}" for k, v in tally.items())
                for label, tally in by_label.items()
            )
        lines.append(line)
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
        results = run_pipelines(pipelines, progress.update if progress is not None else None)
    if progress is not None:
        progress.finish()
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


def check_command(args: argparse.Namespace) -> int:
    configs = load_all(args.pipelines)
    pool = ModelPool()
    problems: list[str] = []
    for path, cfg in zip(args.pipelines, configs, strict=True):
        try:
            detector = build_detector(cfg, pool)
            for rule in cfg.rules:
                build_rule(cfg.name, rule, detector.labels)
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
