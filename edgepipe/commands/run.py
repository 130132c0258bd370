"""`edgepipe run`: load pipeline files, build them, run them to their end, print a summary."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from edgepipe.errors import ConfigError, OutputError
from edgepipe.types import Counts, totals

if TYPE_CHECKING:  # imported when the command runs: `edgepipe --help` stays instant
    from edgepipe.config import PipelineConfig
    from edgepipe.pipeline import Pipeline, RunStats
    from edgepipe.types import FrameResult

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run one or more pipelines until the source ends or SIGTERM")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml", help="pipeline files")
    p.add_argument("--source", metavar="PATH_OR_URL", help="replace the source of the (single) pipeline")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--events", metavar="PATH", help="also write events as JSON lines to PATH ('-' = stdout)")
    p.add_argument(
        "--tracks",
        metavar="PATH",
        help="write every reported track of every frame to PATH as MOTChallenge rows (for `edgepipe eval`)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(handler=main)


class ProgressBar:
    """One self-rewriting line on a terminal: frames done, of how many, and fps."""

    def __init__(self, stream: TextIO, total_frames: int | None) -> None:
        self.stream = stream
        self.total = total_frames
        self._last = 0.0

    def update(self, frames: int, fps: float) -> None:
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        if self.total:
            done = min(frames / self.total, 1.0)
            bar = "#" * int(done * 30)
            line = f"[{bar:<30}] {frames}/{self.total} frames {fps:6.1f} fps"
        else:
            line = f"{frames} frames {fps:6.1f} fps"
        self.stream.write(f"\r{line}  ")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


def load_all(paths: Sequence[str]) -> list[PipelineConfig]:
    """Load every pipeline file and report all their errors together."""
    from edgepipe.config import load_pipeline

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
    if stats.skipped_frames:
        lines.insert(
            1, f"{name}: {stats.skipped_frames} frames of the source could not be decoded and were left out"
        )
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


def main(args: argparse.Namespace) -> int:
    from edgepipe.runtime import Runtime, run_pipelines
    from edgepipe.systemd import Notifier

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames: {args.max_frames} is not a positive number of frames")
    # Signals first: a SIGTERM while the model compiles must end the process cleanly, not kill it.
    with Runtime(Notifier()) as runtime:
        from edgepipe.config import source_from_argument
        from edgepipe.detect import ModelPool
        from edgepipe.mot import TracksWriter
        from edgepipe.pipeline import build

        configs = load_all(args.pipelines)
        if len(configs) != 1 and (args.source is not None or args.tracks is not None):
            raise ConfigError("--source and --tracks are for one pipeline; give exactly one PIPELINE.yml")
        if args.source is not None:
            configs = [source_from_argument(args.source, configs[0])]
        pool = ModelPool()  # one OpenVINO core, one compiled model per (model, device) for every pipeline
        pipelines = [build(cfg, pool, events_path=args.events, max_frames=args.max_frames) for cfg in configs]
        runtime.attach(pipelines)
        progress = _progress_bar(pipelines[0], args) if len(pipelines) == 1 else None
        with contextlib.ExitStack() as outputs:
            tracks_file = outputs.enter_context(TracksWriter(args.tracks)) if args.tracks else None

            def each_frame(result: FrameResult, stats: RunStats) -> None:
                if tracks_file is not None:
                    tracks_file.write(result.frame.index, result.tracks)
                if progress is not None:
                    progress.update(stats.frames, stats.fps)

            results = run_pipelines(pipelines, runtime, each_frame if len(pipelines) == 1 else None)
    if progress is not None:
        progress.finish()
    if runtime.signal_name is not None:
        log.warning("stopped by %s", runtime.signal_name)
    for pipeline, stats in zip(pipelines, results, strict=True):
        print(summary_text(pipeline.name, stats, pipeline.rules.counts()), file=sys.stderr)
    lost = {
        pipeline.name: stats.lost for pipeline, stats in zip(pipelines, results, strict=True) if stats.lost
    }
    if lost:
        raise OutputError(
            "events were lost (see the errors above): "
            + ", ".join(f"{name} {count}" for name, count in lost.items())
        )
    return 0


def _progress_bar(pipeline: Pipeline, args: argparse.Namespace) -> ProgressBar | None:
    """A bar on a terminal for a file source; nothing in a pipe, a journal or for a camera."""
    if args.no_progress or not sys.stderr.isatty() or pipeline.source.is_live:
        return None
    total = pipeline.source.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    return ProgressBar(sys.stderr, total)
