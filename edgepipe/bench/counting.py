"""Counting accuracy on MOT15: lines on sequences with ground truth, SORT on their det.txt, with and
without track linking, scored by edgepipe.evaluate.counting against the truth the same lines give on
the gt trajectories.

Lines come from a YAML file (`sequences: {NAME: [line rule, ...]}`, each entry a pipeline line rule);
the tracker is today's SortTracker with the demo's settings (max_age 3, min_hits 3, IoU 0.3), fed
every frame of `det/det.txt`. Run `python -m edgepipe.bench.counting --data DIR --lines FILE` for
the table, `--json` for the numbers a regression file stores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgepipe.config import LineRuleConfig, LinkingConfig
from edgepipe.config_errors import message
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.evaluate.counting import CountReport, RuleEvent, compare, run_rules
from edgepipe.linking import TrackLinker
from edgepipe.mot import read_detections, read_seqinfo, read_trajectories
from edgepipe.pipeline import build_rule
from edgepipe.rules import Rules
from edgepipe.track import SortTracker
from edgepipe.types import Detections, Tracks

LABELS = ("person",)  # MOT files are people, class 0
DEMO_TRACKER = {"max_age": 3, "min_hits": 3, "iou_threshold": 0.3}  # pipelines/demo.yml


@dataclass(frozen=True)
class SequenceLines:
    name: str
    lines: list[LineRuleConfig]


def read_lines(path: Path) -> list[SequenceLines]:
    """The lines file: `sequences: {NAME: [{name, points, ...}, ...]}`, validated as line rules."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the lines file: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sequences"), dict):
        raise ConfigError(f"{path}: expected a mapping 'sequences: {{NAME: [line, ...]}}'")
    found = []
    for name, lines in data["sequences"].items():
        rules = []
        for index, line in enumerate(lines if isinstance(lines, list) else [lines]):
            where = f"{path}: sequences.{name}[{index}]"
            if not isinstance(line, dict):
                raise ConfigError(f"{where}: expected a line rule {{name, points, ...}}")
            try:
                rules.append(LineRuleConfig.model_validate({"type": "line", **line}))
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {message(e, tuple(e['loc']), LineRuleConfig)}"
                    for e in error.errors()
                )
                raise ConfigError(f"{where}: {problems}") from None
        found.append(SequenceLines(str(name), rules))
    return found


def frame_rate(sequence_dir: Path) -> float:
    """`frameRate` of the sequence's seqinfo.ini."""
    info = read_seqinfo(sequence_dir / "seqinfo.ini")
    if info is None:
        raise EdgepipeError(f"cannot read {sequence_dir / 'seqinfo.ini'}")
    return info.frame_rate


def sort_tracks(det_path: Path, last_frame: int) -> dict[int, Tracks]:
    """SORT with the demo's settings over det.txt, every frame up to `last_frame` (the gt's)."""
    tracker = SortTracker(**DEMO_TRACKER)  # type: ignore[arg-type]
    detections = read_detections(det_path)
    empty = Detections.empty()
    return {
        frame: tracker.update(detections.get(frame, empty), frame_index=frame)
        for frame in range(1, last_frame + 1)
    }


def score_sequence(data_dir: Path, sequence: SequenceLines, linking: LinkingConfig | None) -> CountReport:
    """One sequence's lines: truth from gt.txt, counts from SORT on det.txt (linked when `linking`)."""
    folder = data_dir / sequence.name
    fps = frame_rate(folder)
    truth_tracks = read_trajectories(folder / "gt" / "gt.txt", ground_truth=True)
    frames = max(truth_tracks, default=0)
    tracked = sort_tracks(folder / "det" / "det.txt", frames)
    rules = [build_rule(sequence.name.lower(), line, LABELS) for line in sequence.lines]
    truth = run_rules(Rules(rules), truth_tracks, fps)
    rules = [build_rule(sequence.name.lower(), line, LABELS) for line in sequence.lines]
    linker = TrackLinker(linking.max_gap_s, linking.max_distance) if linking is not None else None
    counted = run_rules(Rules(rules, linker), tracked, fps)
    return compare(
        {line.name: "line" for line in sequence.lines},
        _rule_events(truth),
        _rule_events(counted),
        fps=fps,
        frames=frames,
    )


def _rule_events(events: Sequence[Any]) -> list[RuleEvent]:
    return [e for e in (RuleEvent.of(event) for event in events) if e is not None]


MODES = ("unlinked", "linked")  # this code with linking off, and with the given (default) linking


def run_benchmark(data_dir: Path, lines_path: Path, linking: LinkingConfig | None = None) -> dict[str, Any]:
    """Counted vs true per sequence, line and direction, unlinked and linked (`linking`, default: the
    config's defaults), and summed over all lines."""
    linking = linking if linking is not None else LinkingConfig()
    report: dict[str, Any] = {
        "tracker": {"type": "sort", **DEMO_TRACKER},
        "linking": linking.model_dump(),
        "sequences": {},
        "overall": {},
    }
    for sequence in read_lines(lines_path):
        scored: dict[str, Any] = {}
        for mode, settings in zip(MODES, (None, linking), strict=True):
            result = score_sequence(data_dir, sequence, settings)
            scored[mode] = {name: _line_numbers(rule) for name, rule in result.to_dict()["rules"].items()}
            total = report["overall"].setdefault(mode, dict.fromkeys(_NUMBERS, 0) | {"abs_count_error": 0})
            total["abs_count_error"] += result.abs_count_error("line")
            for key, value in result.total("line").to_dict().items():
                total[key] += value
        report["sequences"][sequence.name] = scored
    return report


_NUMBERS = ("true", "counted", "matched", "missed", "extra", "linked")


def _line_numbers(rule: dict[str, Any]) -> dict[str, Any]:
    return {d: {k: rule[d][k] for k in _NUMBERS} for d in ("in", "out")}


def format_report(report: dict[str, Any]) -> str:
    """Counted vs true per line and direction, unlinked → linked."""
    lines = [
        f"{'sequence':<15} {'line':<10} {'dir':<4} {'true':>5} {'unlinked':>9} {'linked':>7}  "
        f"{'matched u/l':>11}  {'extra u/l':>9}"
    ]
    for seq, modes in report["sequences"].items():
        for name, directions in modes["unlinked"].items():
            for direction, before in directions.items():
                after = modes["linked"][name][direction]
                lines.append(
                    f"{seq:<15} {name:<10} {direction:<4} {before['true']:>5} {before['counted']:>9} "
                    f"{after['counted']:>7}  {before['matched']:>5}/{after['matched']:<5}  "
                    f"{before['extra']:>4}/{after['extra']:<4}"
                )
    for mode, total in report["overall"].items():
        lines.append(
            f"{mode}: {total['true']} true, {total['counted']} counted, {total['matched']} matched, "
            f"{total['missed']} missed, {total['extra']} extra; total |count error| {total['abs_count_error']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="folder of MOT15 sequences")
    parser.add_argument("--lines", required=True, type=Path, metavar="FILE", help="lines file (YAML)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_benchmark(args.data, args.lines)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
