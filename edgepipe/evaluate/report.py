"""Scoring a pipeline for `edgepipe eval`: how accurate its counts (and its tracks) are against
MOTChallenge ground truth, from a fresh run over a video or from the tracks and events a run saved.

Counts: evaluate/counting.py (truth from the gt trajectories through the pipeline's own rules).
Tracking metrics (MOTA, IDF1, HOTA) join the report in `tracking_section` once evaluate/tracking.py
(issue 17) is there. Source frame i is gt frame i + 1, as MOTChallenge numbers frames from 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.evaluate.counting import (
    MATCH_WINDOW_S,
    CountReport,
    RuleEvent,
    compare,
    format_table,
    read_events,
    run_rules,
)
from edgepipe.mot import read_trajectories, seqinfo_beside
from edgepipe.types import Event, Tracks

if TYPE_CHECKING:
    from edgepipe.config import PipelineConfig
    from edgepipe.rules import Rules


def run_eval(args: argparse.Namespace) -> int:
    """`edgepipe eval` (options: commands/eval.py): score, then print the table or the JSON."""
    from edgepipe.config import load_pipeline

    cfg = load_pipeline(args.pipeline)
    _check_options(args)
    gt_path = Path(args.gt)
    truth_tracks = read_trajectories(gt_path, ground_truth=True)
    cfg, counted, tracks, labels, fps = _counted(args, cfg, gt_path)
    truth_rules = placed_rules(cfg, labels, gt_path, link=False)  # gt ids are true identities
    truth = _rule_events(run_rules(truth_rules, _as_people(truth_tracks, labels), fps))
    rule_types = {rule.name: rule.type for rule in cfg.rules}
    frames = max(truth_tracks, default=0)
    window_s = MATCH_WINDOW_S if args.window_s is None else args.window_s
    report = compare(rule_types, truth, counted, fps=fps, frames=frames, window_s=window_s)
    tracking = tracking_section(gt_path, tracks)
    if args.json:
        payload = {
            "pipeline": cfg.name,
            "gt": str(gt_path),
            "counting": report.to_dict(),
            "tracking": tracking,
        }
        print(json.dumps(payload, indent=2))
    else:
        print(report_text(report, tracking))
    return 0


def _counted(
    args: argparse.Namespace, cfg: PipelineConfig, gt_path: Path
) -> tuple[PipelineConfig, list[RuleEvent], dict[int, Tracks] | None, Sequence[str], float]:
    """The events to score, from saved events, saved tracks (the rules run on them) or a fresh run;
    also the pipeline as run, its tracks if known, the model's labels and the frame rate."""
    from edgepipe.config import source_from_argument
    from edgepipe.detect import ModelPool

    if args.events is None and args.tracks is None:
        if args.source is not None:
            cfg = source_from_argument(args.source, cfg)
        events, tracks, labels, source_fps = run_pipeline(cfg)
        return cfg, _rule_events(events), tracks, labels, _frame_rate(args.fps, gt_path, source_fps)
    labels = ModelPool().card(cfg.detector.model).labels  # read, not compiled
    fps = _frame_rate(args.fps, gt_path, None)
    saved = None if args.tracks is None else read_trajectories(args.tracks, ground_truth=False)
    if args.events is not None:
        return cfg, read_events(args.events, cfg.name), saved, labels, fps
    assert saved is not None
    counted = _rule_events(run_rules(placed_rules(cfg, labels, gt_path), _as_people(saved, labels), fps))
    return cfg, counted, saved, labels, fps


def _check_options(args: argparse.Namespace) -> None:
    if args.source is not None and (args.tracks is not None or args.events is not None):
        raise ConfigError("--source runs the pipeline again; it cannot go with --tracks or --events")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise ConfigError(f"--fps {args.fps:g}: expected 0 < F <= 1000")
    if args.window_s is not None and not args.window_s > 0:
        raise ConfigError(f"--window-s {args.window_s:g}: expected S > 0")


def tracking_section(gt_path: Path, tracks: dict[int, Tracks] | None) -> dict[str, Any] | None:
    """MOTA, IDF1, HOTA, ID switches and ids vs true ids of `tracks` ({gt frame: Tracks}) against
    the gt file (evaluate/tracking.py, TrackEval's metrics); None when there are no tracks (events only)."""
    from edgepipe.evaluate.tracking import OVERALL, Sequence, score
    from edgepipe.mot import read_rows

    if tracks is None:
        return None
    gt = read_rows(gt_path, "ground truth")
    rows = [
        (frame, track_id, x1, y1, x2 - x1, y2 - y1, s)
        for frame, frame_tracks in tracks.items()
        for track_id, (x1, y1, x2, y2), s in zip(
            frame_tracks.track_id.tolist(),
            frame_tracks.xyxy.tolist(),
            frame_tracks.score.tolist(),
            strict=True,
        )
    ]
    results = np.array(rows, np.float64).reshape(-1, 7)
    frames = max([int(gt[:, 0].max()) if len(gt) else 0, *tracks])
    result = score({gt_path.parent.parent.name: Sequence(gt, results, frames)})[OVERALL]
    keys = (
        "mota",
        "idf1",
        "hota",
        "id_switches",
        "ids",
        "true_ids",
        "false_positives",
        "misses",
        "recall",
        "precision",
    )
    return {
        key: round(value, 4) if isinstance(value, float) else value
        for key, value in asdict(result).items()
        if key in keys
    }


def report_text(report: CountReport, tracking: dict[str, Any] | None) -> str:
    text = format_table(report)
    if tracking is None:
        return text + "\ntracking: not scored (no tracks: the events alone were given)"
    return text + "\ntracking: " + ", ".join(f"{key} {value}" for key, value in tracking.items())


def run_pipeline(cfg: PipelineConfig) -> tuple[list[Event], dict[int, Tracks], tuple[str, ...], float | None]:
    """Run `cfg` once over its source, its outputs off, and keep every event (the rules' closing
    exits included) and every frame's tracks (keyed by gt frame = source frame + 1); also the
    model's labels and the source's fps."""
    from edgepipe.api import open as open_pipeline
    from edgepipe.publish import CallbackPublisher

    events: list[Event] = []
    tracks: dict[int, Tracks] = {}
    with open_pipeline(cfg, outputs=False, publishers=[CallbackPublisher(events.append)]) as run:
        for result in run:
            tracks[result.frame.index + 1] = result.tracks
    return events, tracks, run.pipeline.detector.labels, run.pipeline.source.fps


def _rule_events(events: Sequence[Event]) -> list[RuleEvent]:
    return [e for e in (RuleEvent.of(event) for event in events) if e is not None]


def _as_people(frames: dict[int, Tracks], labels: Sequence[str]) -> dict[int, Tracks]:
    """MOT files carry no class: every box is a person, under the model's id for "person"."""
    if "person" not in labels:
        raise EdgepipeError(
            "MOT ground truth and tracks are people, but the pipeline's model has no 'person' label"
        )
    person = labels.index("person")
    return {
        f: Tracks(t.xyxy, t.score, np.full(len(t), person, np.int32), t.track_id, t.detection_index, t.ended)
        for f, t in frames.items()
    }


def placed_rules(cfg: PipelineConfig, labels: Sequence[str], gt_path: Path, *, link: bool = True) -> Rules:
    """The pipeline's rules placed on the sequence's frame size (relative points become pixels, a
    rule outside the frame is an error): seqinfo.ini's imWidth/imHeight, else the pipeline's video's."""
    from edgepipe.config import FileSourceConfig
    from edgepipe.pipeline import build_rules
    from edgepipe.sources import FileSource

    rules = build_rules(cfg, labels, link=link)
    info = seqinfo_beside(gt_path)
    frame_hw = info.frame_hw if info is not None else None
    if frame_hw is None and isinstance(cfg.source, FileSourceConfig):
        frame_hw = FileSource(cfg.source).frame_size()
    if frame_hw is not None:
        rules.place(frame_hw)
    elif any(rule.units == "relative" for rule in cfg.rules):
        raise EdgepipeError(
            f"rules in relative units need the frame size: no imWidth/imHeight in a seqinfo.ini beside "
            f"{gt_path.parent} and no video source to read it from"
        )
    return rules


def _frame_rate(option: float | None, gt_path: Path, source_fps: float | None) -> float:
    """--fps, else `frameRate` of the seqinfo.ini beside the gt folder, else the video's."""
    if option is not None:
        return option
    info = seqinfo_beside(gt_path)
    if info is not None:
        return info.frame_rate
    if source_fps is not None:
        return source_fps
    raise EdgepipeError(f"the frame rate is unknown: no seqinfo.ini beside {gt_path.parent}; give --fps")
