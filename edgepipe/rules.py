"""Rules that turn tracks into events: line crossings with direction, and polygon zones with
enter/exit, dwell and loiter. Counters per rule and per label. A track that carries on a broken one
(linking.py) takes over its state, so a gap in tracking neither loses nor repeats a count; per-track
state is dropped when a track ends without a successor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import ConfigError, FieldError
from edgepipe.geometry import (
    Polygon,
    ReferencePoint,
    Segment,
    Units,
    outside_frame,
    reference_point,
    to_pixels,
)
from edgepipe.linking import Lineage, TrackLinker
from edgepipe.types import Counts, Event, Frame, RuleCounts, Tally, Tracks

Side = Literal["left", "right"]
Box = tuple[float, float, float, float]


def _clock(frame: Frame) -> float:
    """Seconds used for dwell/loiter and linking: source time for files (faster than real time), else capture time."""
    return frame.source_time if frame.source_time is not None else frame.timestamp


def _label(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


@dataclass(frozen=True, slots=True)
class _Sighting:
    """A track as last seen: an event is stamped with the sighting it is about (a zone exit decided
    after a track was lost has the frame and time it was last seen)."""

    class_id: int
    score: float
    bbox: Box
    frame: int
    ts: float
    media_time_s: float | None  # Frame.source_time: where in the file, for file sources


def _sightings(tracks: Tracks, frame: Frame, class_ids: frozenset[int] | None) -> list[tuple[int, _Sighting]]:
    """(track id, sighting) of each track of a class the rule watches (None: all), in row order.
    Plain Python from one tolist() per array: a frame has a few tracks, and numpy's per-element
    access cost more than the rules' own work."""
    return [
        (
            track_id,
            _Sighting(class_id, score, (x1, y1, x2, y2), frame.index, frame.timestamp, frame.source_time),
        )
        for track_id, class_id, score, (x1, y1, x2, y2) in zip(
            tracks.track_id.tolist(),
            tracks.class_id.tolist(),
            tracks.score.tolist(),
            tracks.xyxy.tolist(),
            strict=True,
        )
        if class_ids is None or class_id in class_ids
    ]


def _placed(
    field: str, points: NDArray[np.float64], units: Units, frame_hw: tuple[int, int]
) -> NDArray[np.float64]:
    """`points` in frame pixels for frames of `frame_hw`; a FieldError at the rule's `field` (its
    points or polygon) naming the frame size for any point outside it."""
    pixels = to_pixels(points, units, frame_hw)
    outside = pixels[outside_frame(pixels, frame_hw)]
    if len(outside):
        height, width = frame_hw
        shown = ", ".join(f"[{x:g}, {y:g}]" for x, y in outside.tolist())
        raise FieldError(
            (field,),
            f"{shown} {'is' if len(outside) == 1 else 'are'} outside the {width}x{height} frame "
            f"(x 0..{width}, y 0..{height}); `edgepipe snapshot` draws the frame with a pixel grid",
        )
    return pixels


class Rule(Protocol):
    """What `Rules` needs from each rule."""

    name: str
    frame_hw: tuple[int, int] | None

    def place(self, frame_hw: tuple[int, int]) -> None: ...

    def update(self, tracks: Tracks, frame: Frame, lineage: Lineage | None = None) -> list[Event]: ...

    def counts(self) -> RuleCounts: ...

    def restore_counts(self, counts: RuleCounts) -> None: ...

    def reset_counts(self) -> None: ...

    def close(self, frame: Frame | None, lineage: Lineage | None = None) -> list[Event]: ...


class _TrackRule:
    """What every rule shares: its name and pipeline for events, the labels, its shape's points as
    given (pixels, or fractions of the frame until placed), which point of a box it tests, the
    hysteresis band, the classes it watches and its counters per label."""

    _points_field: str  # the config field of the shape's points, for errors

    def __init__(
        self,
        name: str,
        given: NDArray[np.float64],
        *,
        units: Units,
        pipeline: str,
        labels: Sequence[str],
        reference_point: ReferencePoint,
        hysteresis_px: float,
        class_ids: Collection[int] | None,
        count_keys: Sequence[str],
    ) -> None:
        if hysteresis_px < 0:
            raise ConfigError(f"rule {name!r}: hysteresis_px must be >= 0, not {hysteresis_px}")
        self.name = name
        self.pipeline = pipeline
        self.labels = list(labels)
        self.reference_point: ReferencePoint = reference_point
        self.hysteresis_px = float(hysteresis_px)
        self.class_ids = None if class_ids is None else frozenset(int(c) for c in class_ids)
        self._count_keys = tuple(count_keys)
        self._total: Tally = dict.fromkeys(count_keys, 0)
        self._by_label: dict[str, Tally] = {}
        self.units: Units = units
        self._given = given
        self.frame_hw: tuple[int, int] | None = None
        # pixel rules work at once (place() only checks them against a frame); relative ones need place()
        self._set_shape(given if units == "px" else np.full_like(given, np.nan))

    def _set_shape(self, points: NDArray[np.float64]) -> None:
        raise NotImplementedError

    def place(self, frame_hw: tuple[int, int]) -> None:
        """Fit the rule to frames of (height, width) `frame_hw`: relative points become pixels; a
        point outside the frame is a ConfigError that names the frame size."""
        self._set_shape(_placed(self._points_field, self._given, self.units, frame_hw))
        self.frame_hw = frame_hw

    def _lineage(self, tracks: Tracks, lineage: Lineage | None) -> Lineage:
        """The lineage of this frame's ended tracks (without a TrackLinker's, every ended track is
        released at once), once the rule is known to be placed."""
        if self.frame_hw is None and self.units == "relative":
            raise RuntimeError(f"rule {self.name!r} is in relative units: place() it on the frame size first")
        return lineage if lineage is not None else Lineage.unlinked(tracks.ended)

    def _count(self, key: str, label: str, step: int = 1) -> None:
        self._total[key] += step
        tally = self._by_label.get(label)
        if tally is None:
            tally = self._by_label[label] = dict.fromkeys(self._count_keys, 0)
        tally[key] += step

    def restore_counts(self, counts: RuleCounts) -> None:
        """Take up the totals of an earlier run (counts.py): keys this rule counts are restored, the
        rest (gauges such as occupancy, keys of a rule that changed type) are left out."""
        for key in self._count_keys:
            value = counts.get(key)
            if isinstance(value, int):
                self._total[key] = value
        by_label = counts.get("by_label")
        if isinstance(by_label, dict):
            for label, tally in by_label.items():
                self._by_label[label] = {key: int(tally.get(key, 0)) for key in self._count_keys}

    def reset_counts(self) -> None:
        """Totals back to zero (counts.reset): every label seen stays, at zero, so whoever reads a
        label's count sees it go back too. Gauges (occupancy) are not counts: they stay."""
        self._total = dict.fromkeys(self._count_keys, 0)
        for tally in self._by_label.values():
            tally.update(dict.fromkeys(self._count_keys, 0))

    def _counts(self, **gauges: Counter[str]) -> RuleCounts:
        """Totals, then the same per label; `gauges` are current values per label (e.g. occupancy),
        which come first."""
        counts: RuleCounts = {key: gauge.total() for key, gauge in gauges.items()}
        counts.update(self._total)
        counts["by_label"] = {
            label: {**{key: gauge[label] for key, gauge in gauges.items()}, **tally}
            for label, tally in sorted(self._by_label.items())
        }
        return counts

    def _event(
        self,
        kind: str,
        track_id: int,
        seen: _Sighting,
        lineage: Lineage,
        *,
        direction: str | None = None,
        dwell_s: float | None = None,
    ) -> Event:
        return Event(
            type=kind,
            pipeline=self.pipeline,
            rule=self.name,
            track_id=track_id,
            label=_label(self.labels, seen.class_id),
            score=seen.score,
            bbox=seen.bbox,
            frame=seen.frame,
            ts=seen.ts,
            media_time_s=seen.media_time_s,
            direction=direction,
            dwell_s=None if dwell_s is None else round(max(dwell_s, 0.0), 3),
            linked_from=lineage.origin.get(track_id),
        )


@dataclass(slots=True)
class _LineState:
    """A track's side of a line. `distance` (signed, px) and `along` (0..1 on the segment) are where
    it was last seen beyond the band on `side`; a crossing is placed on the straight path from there
    to where it is next seen beyond the band on the other side."""

    side: int  # +1 right / -1 left; 0 until it is first seen beyond the band
    distance: float
    along: float
    last_distance: float  # signed distance at its last sighting, in the band or not
    first_side: int  # the first side it took, with where: a link found after the new track began
    first_distance: float  # compares the old track's side with this (a crossing, if any, happened
    first_along: float  # before the new track was first seen beyond the band)
    heading: float | None  # inherited from a lost track: the change of signed distance it was heading for
    seen: _Sighting


class LineCrossing(_TrackRule):
    """A directed segment start→end; a track's reference point crossing it gives one `line_cross`.

    `in_side` is the side of start→end, as seen on screen (y down), that counts as "in": for a
    line drawn left to right, "right" is below it. A track must get more than `hysteresis_px`
    away from the line on the new side to count, and back beyond it on the old side to count
    again, so jitter on the line counts once. A track first seen inside the band has no side
    until it leaves it, and takes the side it leaves on without counting: it was never seen on the
    other side. Only crossings within the segment's extent count: the straight path between the last
    sightings beyond the band on either side must meet the line within the segment (0..1); a track
    that walks around an end of the line changes side without counting.

    A track linked to one that ended (linking.py) carries on its side: a person lost on one side and
    found on the other counts once, found on the same side not again. A crossing during the gap (the
    successor's first sighting is beyond the band on the other side) counts only if the old track was
    moving towards that side; a successor that only the gate's slack puts there takes that side
    without counting. When the link is found only after the new track began (it was first seen
    before the old one ended), the crossing between the old track's side and the new track's first
    side is counted at the link, stamped with the new track's last sighting.
    """

    _points_field = "points"

    def __init__(
        self,
        name: str,
        start_xy: Sequence[float],
        end_xy: Sequence[float],
        *,
        pipeline: str,
        labels: Sequence[str],
        in_side: Side = "right",
        reference_point: ReferencePoint = "bottom_center",
        hysteresis_px: float = 10.0,
        class_ids: Collection[int] | None = None,
        units: Units = "px",
    ) -> None:
        given = np.asarray([start_xy, end_xy], np.float64)
        if given.shape != (2, 2):
            raise ConfigError(f"rule {name!r}: start and end must be [x, y] points")
        if np.allclose(given[0], given[1]):
            raise ConfigError(f"rule {name!r}: start and end are the same point; draw a line of some length")
        if in_side not in ("left", "right"):
            raise ConfigError(f"rule {name!r}: in_side must be 'left' or 'right', not {in_side!r}")
        self.in_sign = 1 if in_side == "right" else -1
        self._state: dict[int, _LineState] = {}
        super().__init__(
            name,
            given,
            units=units,
            pipeline=pipeline,
            labels=labels,
            reference_point=reference_point,
            hysteresis_px=hysteresis_px,
            class_ids=class_ids,
            count_keys=("in", "out"),
        )

    def _set_shape(self, points: NDArray[np.float64]) -> None:
        self.start, self.end = points[0].copy(), points[1].copy()
        self._segment = Segment(self.start, self.end)
        direction = self.end - self.start
        # signed distance changes by normal · displacement (the gradient of Segment.position's distance)
        self._normal = np.array([-direction[1], direction[0]]) / float(np.hypot(*direction))

    def update(self, tracks: Tracks, frame: Frame, lineage: Lineage | None = None) -> list[Event]:
        """Events for this frame; call once per frame, also with no tracks (ended ids drop state).

        Without a `lineage` (from a TrackLinker), every ended track is released at once."""
        lineage = self._lineage(tracks, lineage)
        events = self._carry_over(lineage)
        for track_id, seen in _sightings(tracks, frame, self.class_ids):
            d, t = self._segment.position(*reference_point(seen.bbox, self.reference_point))
            event = self._step(track_id, d, t, seen, lineage)
            if event is not None:
                events.append(event)
        for track_id in lineage.released:
            self._state.pop(track_id, None)
        return events

    def _step(self, track_id: int, d: float, t: float, seen: _Sighting, lineage: Lineage) -> Event | None:
        beyond = abs(d) > self.hysteresis_px
        state = self._state.get(track_id)
        if state is None:
            side = (1 if d > 0 else -1) if beyond else 0
            self._state[track_id] = _LineState(side, d, t, d, side, d, t, None, seen)
            return None
        # the heading checks a crossing during the gap only: seen in the band first, it is seen crossing
        heading, state.heading = state.heading, None
        state.seen, state.last_distance = seen, d
        if not beyond:
            return None  # inside the band: keep the last side
        side = 1 if d > 0 else -1
        previous, before = state.side, (state.distance, state.along)
        state.side, state.distance, state.along = side, d, t
        if state.first_side == 0:
            state.first_side, state.first_distance, state.first_along = side, d, t
        if previous in (0, side) or not self._heading_agrees(heading, side):
            return None
        return self._crossing(track_id, before, (d, t), seen, lineage)

    def _heading_agrees(self, heading: float | None, side: int) -> bool:
        """Whether a crossing to `side` right after a link is one the old track's motion explains:
        it was moving towards that side (`heading`: the change of signed distance it was heading for)."""
        return heading is None or heading * side > 0

    def _crossing(
        self,
        track_id: int,
        before: tuple[float, float],
        after: tuple[float, float],
        seen: _Sighting,
        lineage: Lineage,
    ) -> Event | None:
        """The crossing from `before` to `after` ((distance, along) on opposite sides), if it meets the
        segment itself."""
        (d0, t0), (d1, t1) = before, after
        crossing_along = t0 + d0 / (d0 - d1) * (t1 - t0)
        if not 0.0 <= crossing_along <= 1.0:
            return None
        direction = "in" if (1 if d1 > 0 else -1) == self.in_sign else "out"
        self._count(direction, _label(self.labels, seen.class_id))
        return self._event("line_cross", track_id, seen, lineage, direction=direction)

    def _carry_over(self, lineage: Lineage) -> list[Event]:
        """Give each successor its predecessor's side (see the class docstring)."""
        events: list[Event] = []
        for link in lineage.links:
            old = self._state.pop(link.ended_id, None)
            if old is None:
                continue
            heading = None if link.heading_xy is None else float(self._normal @ np.asarray(link.heading_xy))
            new = self._state.get(link.successor_id)
            if new is None:
                self._state[link.successor_id] = replace(old, heading=heading)
            elif new.first_side == 0:  # seen only in the band so far: seen on its way across
                self._state[link.successor_id] = replace(old, seen=new.seen, last_distance=new.last_distance)
            elif old.side not in (0, new.first_side) and self._heading_agrees(heading, new.first_side):
                before, after = (old.distance, old.along), (new.first_distance, new.first_along)
                event = self._crossing(link.successor_id, before, after, new.seen, lineage)
                if event is not None:
                    events.append(event)
        return events

    def counts(self) -> RuleCounts:
        return self._counts()

    def close(self, frame: Frame | None, lineage: Lineage | None = None) -> list[Event]:
        """Nothing to flush: a line has no open intervals."""
        self._state.clear()
        return []


@dataclass(slots=True)
class _Inside:
    """A track inside a zone: when it entered (clock seconds, see `_clock`), under which label it
    is counted, and when and how it was last seen."""

    entered_s: float
    label: str  # at entry: a visit is counted under one label from enter to exit
    last_seen_s: float
    loitered: bool
    seen: _Sighting


class Zone(_TrackRule):
    """A polygon (concave allowed); `zone_enter`, `zone_exit` with `dwell_s`, optional `zone_loiter`.

    A track enters when its reference point is inside by more than `hysteresis_px` from the
    edge and exits when it is outside by more than that; within the band it keeps its state, so
    someone standing on the border gives no flood of enter/exit. A track first seen clearly
    inside enters on that frame; one first seen in the band is outside until it gets clear of it.
    A track that ends while inside exits when it is released (linking.py: on the frame it ends
    without linking, else once no successor came within the link window), so occupancy falls back
    when people leave the picture; the exit is stamped with its last sighting (frame, time, box) and
    its dwell runs until then. A successor carries on the visit: a broken track inside a zone is not
    an exit and an enter. `zone_loiter` fires once per visit when a track has been inside for
    `loiter_s` seconds.
    """

    _points_field = "polygon"

    def __init__(
        self,
        name: str,
        polygon_xy: Sequence[Sequence[float]],
        *,
        pipeline: str,
        labels: Sequence[str],
        reference_point: ReferencePoint = "bottom_center",
        loiter_s: float | None = None,
        hysteresis_px: float = 10.0,
        class_ids: Collection[int] | None = None,
        units: Units = "px",
    ) -> None:
        given = np.asarray(polygon_xy, np.float64)
        if given.ndim != 2 or given.shape[1] != 2 or len(given) < 3:
            raise ConfigError(f"rule {name!r}: polygon needs at least 3 [x, y] points")
        if loiter_s is not None and loiter_s <= 0:
            raise ConfigError(f"rule {name!r}: loiter_s must be > 0, not {loiter_s}")
        self.loiter_s = loiter_s
        self._inside: dict[int, _Inside] = {}
        super().__init__(
            name,
            given,
            units=units,
            pipeline=pipeline,
            labels=labels,
            reference_point=reference_point,
            hysteresis_px=hysteresis_px,
            class_ids=class_ids,
            count_keys=("enter", "exit") if loiter_s is None else ("enter", "exit", "loiter"),
        )

    def _set_shape(self, points: NDArray[np.float64]) -> None:
        self._shape = Polygon(points)  # keeps its own copy of the vertices

    @property
    def polygon(self) -> NDArray[np.float64]:
        """The vertices in frame pixels (NaN until a relative zone is placed)."""
        return self._shape.vertices

    def update(self, tracks: Tracks, frame: Frame, lineage: Lineage | None = None) -> list[Event]:
        """Events for this frame; call once per frame, also with no tracks (released ids exit here).

        Without a `lineage` (from a TrackLinker), every ended track is released at once."""
        lineage = self._lineage(tracks, lineage)
        now = _clock(frame)
        events = self._carry_over(lineage)
        for track_id, seen in _sightings(tracks, frame, self.class_ids):
            depth = self._shape.signed_distance(*reference_point(seen.bbox, self.reference_point))
            is_inside, is_clear = depth > 0.0, abs(depth) > self.hysteresis_px
            state = self._inside.get(track_id)
            if state is None:
                if is_clear and is_inside:
                    label = _label(self.labels, seen.class_id)
                    state = self._inside[track_id] = _Inside(now, label, now, False, seen)
                    self._count("enter", label)
                    events.append(self._event("zone_enter", track_id, seen, lineage))
                continue  # outside, or in the band without having been inside: nothing to do
            state.seen, state.last_seen_s = seen, now
            if is_clear and not is_inside:
                events.append(self._exit(track_id, lineage))
                continue
            if self.loiter_s is not None and not state.loitered and now - state.entered_s >= self.loiter_s:
                state.loitered = True
                self._count("loiter", state.label)
                events.append(
                    self._event("zone_loiter", track_id, seen, lineage, dwell_s=now - state.entered_s)
                )
        events += [self._exit(tid, lineage) for tid in lineage.released if tid in self._inside]
        return events

    def _carry_over(self, lineage: Lineage) -> list[Event]:
        """A successor carries on its predecessor's visit. If it already began a visit of its own (it
        was first seen before the old track ended), both were announced: the old one exits now."""
        events: list[Event] = []
        for link in lineage.links:
            if link.ended_id not in self._inside:
                continue
            if link.successor_id in self._inside:
                events.append(self._exit(link.ended_id, lineage))
            else:
                self._inside[link.successor_id] = self._inside.pop(link.ended_id)
        return events

    def counts(self) -> RuleCounts:
        return self._counts(occupancy=Counter(state.label for state in self._inside.values()))

    def close(self, frame: Frame | None, lineage: Lineage | None = None) -> list[Event]:
        """At shutdown every track still inside exits, so each enter has its exit.

        Without a frame (nothing processed) there is nobody inside and nothing to emit."""
        if frame is None:
            self._inside.clear()
            return []
        lineage = lineage if lineage is not None else Lineage()
        return [self._exit(track_id, lineage) for track_id in list(self._inside)]

    def _exit(self, track_id: int, lineage: Lineage) -> Event:
        """Leave the zone, stamped with the track's last sighting (the frame it was seen outside, or the
        last one it was seen at all)."""
        state = self._inside.pop(track_id)
        self._count("exit", state.label)
        dwell_s = state.last_seen_s - state.entered_s
        return self._event("zone_exit", track_id, state.seen, lineage, dwell_s=dwell_s)


class Rules:
    """All rules of one pipeline, updated together with one TrackLinker; events come out in rule order."""

    def __init__(
        self,
        rules: Sequence[Rule],
        linker: TrackLinker | None = None,
        *,
        locate: Callable[[FieldError], ConfigError] | None = None,
    ) -> None:
        """`locate` turns a problem of rule i's field (FieldError at (i, field)) into the error the
        user sees, e.g. at the rule's line of the pipeline file (build_rules gives it); without it a
        problem names the rule."""
        names = [rule.name for rule in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        self.rules: list[Rule] = list(rules)
        self.linker = linker
        self.locate = locate
        self.frame_hw: tuple[int, int] | None = None
        self._last_frame: Frame | None = None

    def place(self, frame_hw: tuple[int, int]) -> None:
        """Fit every rule to frames of (height, width) `frame_hw` (relative points become pixels);
        one ConfigError with a line for each rule that does not fit in the frame."""
        problems: list[str] = []
        for index, rule in enumerate(self.rules):
            try:
                rule.place(frame_hw)
            except FieldError as error:
                if self.locate is None:
                    problems.append(f"rule {rule.name!r}: {error.message}")
                else:
                    problems.append(str(self.locate(FieldError((index, *error.field), error.message))))
        if problems:
            raise ConfigError("\n".join(problems))
        self.frame_hw = frame_hw

    def update(self, tracks: Tracks, frame: Frame) -> list[Event]:
        """Events of every rule for this frame; call once per frame, also when there are no tracks."""
        self._last_frame = frame
        lineage = (
            self.linker.update(tracks, _clock(frame))
            if self.linker is not None
            else Lineage.unlinked(tracks.ended)
        )
        events: list[Event] = []
        for rule in self.rules:
            events.extend(rule.update(tracks, frame, lineage))
        return events

    def counts(self) -> Counts:
        """Running totals per rule and per label, e.g.
        {"door": {"in": 3, "out": 1, "by_label": {"person": {"in": 3, "out": 1}}}}."""
        return {rule.name: rule.counts() for rule in self.rules}

    def restore_counts(self, counts: Counts) -> None:
        """Totals of an earlier run, by rule name; rules that are not there any more are left out."""
        for rule in self.rules:
            if rule.name in counts:
                rule.restore_counts(counts[rule.name])

    def reset_counts(self) -> None:
        """Every rule's totals back to zero (gauges such as occupancy stay)."""
        for rule in self.rules:
            rule.reset_counts()

    def close(self, frame: Frame | None = None) -> list[Event]:
        """Shutdown: zones emit `zone_exit` for tracks still inside, those waiting for a successor
        included (each at its last sighting). `frame` (default: the last one) only says whether any
        frame was processed."""
        frame = frame if frame is not None else self._last_frame
        lineage = self.linker.close() if self.linker is not None else Lineage()
        events: list[Event] = []
        for rule in self.rules:
            events.extend(rule.close(frame, lineage))
        return events
