"""`edgepipe run`: load pipeline files, build them, run them to their end, print a summary; with
`http:` (or --http) serve the live page, /metrics and /healthz meanwhile; --annotate writes the video."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from edgepipe.errors import ConfigError, OutputError
from edgepipe.types import Counts, totals

if TYPE_CHECKING:  # imported when the command runs: `edgepipe --help` stays instant
    from edgepipe.config import HttpConfig, PipelineConfig
    from edgepipe.draw import Scene, VideoFile
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
    p.add_argument(
        "--annotate",
        metavar="OUT.mp4",
        help="write the run's video with boxes, track ids and trails, the rules with live counts, fps and time",
    )
    p.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="serve the live page, /metrics and /healthz on HOST:PORT (default host 127.0.0.1); "
        "the pipeline file's http: settings apply otherwise, its token included",
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
        from edgepipe.draw import VideoFile
        from edgepipe.mot import TracksWriter
        from edgepipe.pipeline import build
        from edgepipe.web import Web

        configs = load_all(args.pipelines)
        one_only = [
            option for option in ("source", "tracks", "annotate") if getattr(args, option) is not None
        ]
        if len(configs) != 1 and one_only:
            options = " and ".join(f"--{option}" for option in one_only)
            verb = "is" if len(one_only) == 1 else "are"
            raise ConfigError(f"{options} {verb} for one pipeline; give exactly one PIPELINE.yml")
        if args.source is not None:
            configs = [source_from_argument(args.source, configs[0])]
        settings = http_settings(args.http, list(zip(args.pipelines, configs, strict=True)))
        web = Web(settings, [cfg.name for cfg in configs]) if settings is not None else None
        with contextlib.ExitStack() as outputs:
            if web is not None:  # bound before the model compiles: a port in use fails at once
                outputs.enter_context(web.server)
            pool = ModelPool()  # one OpenVINO core, one compiled model per (model, device) for every pipeline
            pipelines = [
                build(
                    cfg,
                    pool,
                    events_path=args.events,
                    max_frames=args.max_frames,
                    watcher=web.views[cfg.name] if web is not None else None,
                    prometheus=web.prometheus.pipeline(cfg.name) if web is not None else None,
                )
                for cfg in configs
            ]
            runtime.attach(pipelines)
            progress = _progress_bar(pipelines[0], args) if len(pipelines) == 1 else None
            tracks_file = outputs.enter_context(TracksWriter(args.tracks)) if args.tracks else None
            annotation = None
            if args.annotate is not None:
                video = VideoFile(Path(args.annotate), pipelines[0].source.fps or 10.0, "--annotate")
                annotation = Annotation(pipelines[0], outputs.enter_context(video))

            def each_frame(result: FrameResult, stats: RunStats) -> None:
                if tracks_file is not None:
                    tracks_file.write(result.frame.index, result.tracks)
                if annotation is not None:
                    annotation.write(result, stats)
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


def http_settings(option: str | None, files: Sequence[tuple[str, PipelineConfig]]) -> HttpConfig | None:
    """The process's web server settings: the files' http: section, with --http's address over it."""
    from pydantic import ValidationError

    from edgepipe.config import HttpConfig
    from edgepipe.config_errors import message
    from edgepipe.web import process_settings

    settings = process_settings(files)
    if option is None:
        return settings
    host, _, port = option.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--http {option}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    data = settings.model_dump() if settings is not None else {}
    data.update(port=int(port), **({"host": host.strip("[]")} if host else {}))
    try:
        return HttpConfig.model_validate(data)
    except ValidationError as error:
        details = "; ".join(message(e, tuple(e["loc"]), HttpConfig) for e in error.errors(include_url=False))
        raise ConfigError(f"--http {option}: {details}") from None


class Annotation:
    """--annotate: every frame of one pipeline drawn (tracks with trails, rules with their counts, fps
    and time) into a video file, on the loop's thread: every frame, at the cost of the loop's speed."""

    def __init__(self, pipeline: Pipeline, video: VideoFile) -> None:
        from edgepipe.draw import TrackHistory

        self.pipeline = pipeline
        self.video = video
        self.history = TrackHistory()
        self.scene: Scene | None = None

    def write(self, result: FrameResult, stats: RunStats) -> None:
        from edgepipe.draw import annotate, status_text

        if self.scene is None:  # the rules are placed on the frame size by now
            self.scene = self.pipeline.scene()
        self.history.add(result.tracks)
        status = status_text(self.pipeline.name, stats.fps, result)
        counts = self.pipeline.rules.counts()
        self.video.write(annotate(result, self.scene, counts, recent=self.history.recent(), status=status))


def _progress_bar(pipeline: Pipeline, args: argparse.Namespace) -> ProgressBar | None:
    """A bar on a terminal for a file source; nothing in a pipe, a journal or for a camera."""
    if args.no_progress or not sys.stderr.isatty() or pipeline.source.is_live:
        return None
    total = pipeline.source.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    return ProgressBar(sys.stderr, total)
