"""Counting truth from ground-truth trajectories, and a pipeline's line and zone events scored against it.

The truth is what the pipeline's own rules report when they run on the ground-truth boxes: the same
rule classes with the same reference point, direction, segment extent and hysteresis, on gt ids that
are true identities (so without linking). A difference is then the detector's and the tracker's
doing, never a different definition of a crossing. Each counted event is matched one to one to a
true event of the same rule, type and direction within `window_s` (Hungarian on the time
difference): matched; missed (a true event with no counted one); extra (a counted event with no true
one: double counts and phantoms). Zones also compare their occupancy frame by frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.errors import EdgepipeError
from edgepipe.types import Event, Frame, Tracks

if TYPE_CHECKING:
    from edgepipe.rules import Rules

MATCH_WINDOW_S = 1.0  # default: a counted event within 1 s of the true one is the same event
RULE_KINDS = {"line": ("in", "out"), "zone": ("enter", "exit")}  # "loiter" joins zones that have one
_EVENT_KIND = {"zone_enter": "enter", "zone_exit": "exit", "zone_loiter": "loiter"}
_IMAGE = np.zeros((1, 1, 3), np.uint8)  # rules never look at pixels


@dataclass(frozen=True, slots=True)
class RuleEvent:
    """What the comparison needs of an event: rule, kind ("in"/"out" of a crossing, "enter"/"exit"/
    "loiter" of a zone), the 0-based frame and whether it came from a linked track."""

    rule: str
    kind: str
    frame: int
    linked: bool = False

    @classmethod
    def of(cls, event: Event) -> RuleEvent | None:
        """None for events that are not about a rule's counts."""
        kind = event.direction if event.type == "line_cross" else _EVENT_KIND.get(event.type)
        if kind is None or event.frame is None:  # a counts_reset has no frame
            return None
        return cls(event.rule, kind, event.frame, event.linked_from is not None)


def run_rules(rules: Rules, frames: Mapping[int, Tracks], fps: float) -> list[Event]:
    """Feed per-frame Tracks keyed by MOT frame (from 1) to `rules` as source frames 0, 1, ... at
    `fps` (frame i = MOT frame i + 1, as a video of the sequence), then close them."""
    events: list[Event] = []
    for mot_frame, tracks in frames.items():
        index = mot_frame - 1
        events += rules.update(tracks, Frame(_IMAGE, index, index / fps, index / fps))
    return events + rules.close()


def read_events(path: Path | str, pipeline: str) -> list[RuleEvent]:
    """A JSON-lines events file (`edgepipe run --events`, the jsonl output) → the rule events of
    `pipeline`. Errors name the file, the line and the field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise EdgepipeError(f"cannot read the events file {path}: {error}") from None
    found: list[RuleEvent] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as error:
            raise EdgepipeError(f"{path}:{number}: not JSON: {error.msg}") from None
        if not isinstance(payload, dict):
            raise EdgepipeError(f"{path}:{number}: expected one JSON object (an event) per line")
        if payload.get("pipeline") != pipeline:
            continue
        event = _rule_event(payload, path, number)
        if event is not None:
            found.append(event)
    return found


def _rule_event(payload: dict[str, Any], path: Path, number: int) -> RuleEvent | None:
    event_type = payload.get("type")
    if event_type == "line_cross":
        kind = payload.get("direction")
        if kind not in ("in", "out"):
            raise EdgepipeError(f"{path}:{number}: field 'direction' is {kind!r}, not 'in' or 'out'")
    else:
        kind = _EVENT_KIND.get(event_type) if isinstance(event_type, str) else None
        if kind is None:
            return None  # not about a rule's counts (status, track events, ...)
    for name, expected, what in (("rule", str, "a rule name"), ("frame", int, "a frame number")):
        value = payload.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise EdgepipeError(f"{path}:{number}: field '{name}' is {value!r}, not {what}")
    return RuleEvent(payload["rule"], str(kind), payload["frame"], payload.get("linked_from") is not None)


@dataclass(slots=True)
class Tally:
    """One rule's events of one kind, counted against the truth."""

    true: int = 0
    counted: int = 0
    matched: int = 0
    linked: int = 0  # counted events that came from a linked track

    @property
    def missed(self) -> int:
        return self.true - self.matched

    @property
    def extra(self) -> int:
        return self.counted - self.matched

    @property
    def count_error(self) -> int:
        """counted - true: what a counter display would be off by."""
        return self.counted - self.true

    def add(self, other: Tally) -> None:
        self.true += other.true
        self.counted += other.counted
        self.matched += other.matched
        self.linked += other.linked

    def to_dict(self) -> dict[str, int]:
        values = asdict(self)
        values.update(missed=self.missed, extra=self.extra)
        return values


@dataclass(frozen=True, slots=True)
class Occupancy:
    """A zone's occupancy (enters minus exits so far) frame by frame, counted against the truth."""

    mean_abs_error: float
    max_abs_error: int
    true_mean: float
    counted_mean: float


@dataclass(slots=True)
class RuleScore:
    name: str
    type: str  # "line" | "zone"
    kinds: dict[str, Tally]
    occupancy: Occupancy | None = None

    @property
    def abs_count_error(self) -> int:
        return sum(abs(t.count_error) for t in self.kinds.values())

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"type": self.type, **{k: t.to_dict() for k, t in self.kinds.items()}}
        values["abs_count_error"] = self.abs_count_error
        if self.occupancy is not None:
            values["occupancy"] = asdict(self.occupancy)
        return values


@dataclass(slots=True)
class CountReport:
    """Every line and zone rule of a pipeline against the truth; `lines` and `zones` sum their kinds."""

    fps: float
    frames: int
    window_s: float
    rules: list[RuleScore] = field(default_factory=list)

    def total(self, rule_type: str) -> Tally:
        total = Tally()
        for rule in self.rules:
            if rule.type == rule_type:
                for tally in rule.kinds.values():
                    total.add(tally)
        return total

    def abs_count_error(self, rule_type: str) -> int:
        return sum(rule.abs_count_error for rule in self.rules if rule.type == rule_type)

    def to_dict(self) -> dict[str, Any]:
        totals = {
            name: {**self.total(kind).to_dict(), "abs_count_error": self.abs_count_error(kind)}
            for name, kind in (("lines", "line"), ("zones", "zone"))
        }
        return {
            "fps": self.fps,
            "frames": self.frames,
            "window_s": self.window_s,
            "rules": {rule.name: rule.to_dict() for rule in self.rules},
            **totals,
        }


def compare(
    rule_types: Mapping[str, str],
    truth: Iterable[RuleEvent],
    counted: Iterable[RuleEvent],
    *,
    fps: float,
    frames: int,
    window_s: float = MATCH_WINDOW_S,
) -> CountReport:
    """Score `counted` against `truth` for each rule of `rule_types` (name → "line" | "zone"), over
    source frames 0..frames-1 (counted events after the ground truth ends are left out)."""
    truth = [e for e in truth if e.rule in rule_types]
    counted = [e for e in counted if e.rule in rule_types and e.frame < frames]
    report = CountReport(fps, frames, window_s)
    for name, rule_type in rule_types.items():
        kinds = list(RULE_KINDS[rule_type])
        if rule_type == "zone" and any(e.rule == name and e.kind == "loiter" for e in [*truth, *counted]):
            kinds.append("loiter")
        tallies = {}
        for kind in kinds:
            true_frames = [e.frame for e in truth if e.rule == name and e.kind == kind]
            ours = [e for e in counted if e.rule == name and e.kind == kind]
            matched = matched_pairs(true_frames, [e.frame for e in ours], window_frames=window_s * fps)
            linked = sum(e.linked for e in ours)
            tallies[kind] = Tally(len(true_frames), len(ours), matched, linked)
        occupancy = None
        if rule_type == "zone":
            occupancy = _occupancy(
                [e for e in truth if e.rule == name], [e for e in counted if e.rule == name], frames
            )
        report.rules.append(RuleScore(name, rule_type, tallies, occupancy))
    return report


def matched_pairs(true_frames: Sequence[int], counted_frames: Sequence[int], *, window_frames: float) -> int:
    """How many counted events pair one to one with true events at most `window_frames` apart:
    the most pairs, and among those the least total time difference."""
    if not true_frames or not counted_frames:
        return 0
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: not on `edgepipe --help`'s path

    gap = np.abs(
        np.subtract.outer(np.asarray(true_frames, np.float64), np.asarray(counted_frames, np.float64))
    )
    outside = gap > window_frames
    # A pair outside the window costs more than all pairs inside together, so the assignment takes
    # as many inside pairs as it can before it minimises their time differences.
    cost = np.where(outside, gap.size * (window_frames + 1.0), gap)
    rows, cols = linear_sum_assignment(cost)
    return int(np.count_nonzero(~outside[rows, cols]))


def _occupancy(truth: Sequence[RuleEvent], counted: Sequence[RuleEvent], frames: int) -> Occupancy:
    def series(events: Sequence[RuleEvent]) -> np.ndarray[Any, np.dtype[np.int64]]:
        change = np.zeros(frames + 1, np.int64)
        for event in events:
            if event.kind in ("enter", "exit"):
                change[min(event.frame, frames)] += 1 if event.kind == "enter" else -1
        return np.cumsum(change)[:frames]

    true, ours = series(truth), series(counted)
    if frames == 0:
        return Occupancy(0.0, 0, 0.0, 0.0)
    error = np.abs(ours - true)
    return Occupancy(
        round(float(error.mean()), 3),
        int(error.max()),
        round(float(true.mean()), 3),
        round(float(ours.mean()), 3),
    )


def format_table(report: CountReport) -> str:
    """The report as a table for people."""
    lines = [
        f"counting: {report.frames} frames at {report.fps:g} fps; events matched to the truth within "
        f"{report.window_s:g} s",
        f"{'rule':<16} {'event':<8} {'true':>5} {'counted':>8} {'matched':>8} {'missed':>7} {'extra':>6} {'linked':>7}",
    ]
    for rule in report.rules:
        for kind, t in rule.kinds.items():
            lines.append(
                f"{rule.name:<16} {kind:<8} {t.true:>5} {t.counted:>8} {t.matched:>8} {t.missed:>7} {t.extra:>6} {t.linked:>7}"
            )
        if rule.occupancy is not None:
            o = rule.occupancy
            lines.append(
                f"{rule.name:<16} occupancy: mean |error| {o.mean_abs_error:g} per frame, max {o.max_abs_error} "
                f"(true mean {o.true_mean:g}, counted mean {o.counted_mean:g})"
            )
    for title, kind in (("lines", "line"), ("zones", "zone")):
        if any(rule.type == kind for rule in report.rules):
            t = report.total(kind)
            lines.append(
                f"{title}: {t.true} true, {t.counted} counted, {t.matched} matched, {t.missed} missed, "
                f"{t.extra} extra; total |count error| {report.abs_count_error(kind)}"
            )
    return "\n".join(lines)
