"""Rules that turn tracks into events: line crossings with direction, and polygon zones with
enter/exit, dwell and loiter. Per-rule counters; per-track state is dropped when a track ends."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import ConfigError
from edgepipe.geometry import (
    ReferencePoint,
    distance_to_polygon_edges,
    points_in_polygon,
    projection_on_segment,
    reference_points,
    signed_distance_to_line,
)
from edgepipe.types import Event, Frame, Tracks

Side = Literal["left", "right"]


def _clock(frame: Frame) -> float:
    """Seconds used for dwell/loiter: source time for files (faster than real time), else capture time."""
    return frame.source_time if frame.source_time is not None else frame.timestamp


def _label(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def _selected(tracks: Tracks, class_ids: frozenset[int] | None) -> NDArray[np.intp]:
    """Rows of `tracks` this rule looks at."""
    if class_ids is None:
        return np.arange(len(tracks), dtype=np.intp)
    keep = np.isin(tracks.class_id, np.fromiter(class_ids, np.int64, len(class_ids)))
    return np.flatnonzero(keep)


def _bbox(xyxy: NDArray[np.float32]) -> tuple[float, float, float, float]:
    return (float(xyxy[0]), float(xyxy[1]), float(xyxy[2]), float(xyxy[3]))


class Rule(Protocol):
    """What `Rules` needs from each rule."""

    name: str

    def update(self, tracks: Tracks, frame: Frame) -> list[Event]: ...

    def counts(self) -> dict[str, int]: ...

    def close(self, frame: Frame | None) -> list[Event]: ...


class _TrackRule:
    """What every rule shares: its name and pipeline for events, the labels, which point of a box
    it tests, the hysteresis band and the classes it watches."""

    def __init__(
        self,
        name: str,
        *,
        pipeline: str,
        labels: Sequence[str],
        reference_point: ReferencePoint,
        hysteresis_px: float,
        class_ids: Collection[int] | None,
    ) -> None:
        if hysteresis_px < 0:
            raise ConfigError(f"rule {name!r}: hysteresis_px must be >= 0, not {hysteresis_px}")
        self.name = name
        self.pipeline = pipeline
        self.labels = list(labels)
        self.reference_point: ReferencePoint = reference_point
        self.hysteresis_px = float(hysteresis_px)
        self.class_ids = None if class_ids is None else frozenset(int(c) for c in class_ids)

    def _event(
        self,
        kind: str,
        track_id: int,
        class_id: int,
        score: float,
        bbox: tuple[float, float, float, float],
        frame: Frame,
        *,
        direction: str | None = None,
        dwell_s: float | None = None,
    ) -> Event:
        return Event(
            type=kind,
            pipeline=self.pipeline,
            rule=self.name,
            track_id=track_id,
            label=_label(self.labels, class_id),
            score=score,
            bbox=bbox,
            frame=frame.index,
            ts=frame.timestamp,
            direction=direction,
            dwell_s=None if dwell_s is None else round(max(dwell_s, 0.0), 3),
        )


class LineCrossing(_TrackRule):
    """A directed segment start→end; a track's reference point crossing it gives one `line_cross`.

    `in_side` is the side of start→end, as seen on screen (y down), that counts as "in": for a
    line drawn left to right, "right" is below it. A track must get more than `hysteresis_px`
    away from the line on the new side to count, and back beyond it on the old side to count
    again, so jitter on the line counts once. A track first seen inside the band has no side
    until it leaves it. Only crossings within the segment's extent count: the projection of the
    point where the track leaves the band must fall on the segment (0..1); a track that walks
    around an end of the line changes side without counting.
    """

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
    ) -> None:
        self.start = np.asarray(start_xy, np.float64)
        self.end = np.asarray(end_xy, np.float64)
        if self.start.shape != (2,) or self.end.shape != (2,):
            raise ConfigError(f"rule {name!r}: start and end must be [x, y] points")
        if np.allclose(self.start, self.end):
            raise ConfigError(f"rule {name!r}: start and end are the same point; draw a line of some length")
        if in_side not in ("left", "right"):
            raise ConfigError(f"rule {name!r}: in_side must be 'left' or 'right', not {in_side!r}")
        super().__init__(
            name,
            pipeline=pipeline,
            labels=labels,
            reference_point=reference_point,
            hysteresis_px=hysteresis_px,
            class_ids=class_ids,
        )
        self.in_sign = 1 if in_side == "right" else -1
        self._side: dict[int, int] = {}  # track id → +1 right / -1 left: last side beyond the band
        self._in = 0
        self._out = 0

    def update(self, tracks: Tracks, frame: Frame) -> list[Event]:
        """Events for this frame; call once per frame, also with no tracks (ended ids drop state)."""
        for track_id in tracks.ended.tolist():
            self._side.pop(track_id, None)
        rows = _selected(tracks, self.class_ids)
        if len(rows) == 0:
            return []
        points = reference_points(tracks.xyxy[rows], self.reference_point)
        distance = signed_distance_to_line(points, self.start, self.end)
        along = projection_on_segment(points, self.start, self.end)
        events: list[Event] = []
        for row, d, t in zip(rows.tolist(), distance.tolist(), along.tolist(), strict=True):
            if abs(d) <= self.hysteresis_px:
                continue  # inside the band: keep the last side
            track_id = int(tracks.track_id[row])
            side = 1 if d > 0 else -1
            previous = self._side.get(track_id)
            self._side[track_id] = side
            if previous is None or previous == side or not 0.0 <= t <= 1.0:
                continue
            direction = "in" if side == self.in_sign else "out"
            if direction == "in":
                self._in += 1
            else:
                self._out += 1
            events.append(
                self._event(
                    "line_cross",
                    track_id,
                    int(tracks.class_id[row]),
                    float(tracks.score[row]),
                    _bbox(tracks.xyxy[row]),
                    frame,
                    direction=direction,
                )
            )
        return events

    def counts(self) -> dict[str, int]:
        return {"in": self._in, "out": self._out}

    def close(self, frame: Frame | None) -> list[Event]:
        """Nothing to flush: a line has no open intervals."""
        self._side.clear()
        return []


@dataclass(slots=True)
class _Inside:
    """A track inside a zone: when it entered and how it looked when last seen."""

    entered_s: float
    loitered: bool
    class_id: int
    score: float
    bbox: tuple[float, float, float, float]


class Zone(_TrackRule):
    """A polygon (concave allowed); `zone_enter`, `zone_exit` with `dwell_s`, optional `zone_loiter`.

    A track enters when its reference point is inside by more than `hysteresis_px` from the
    edge and exits when it is outside by more than that; within the band it keeps its state, so
    someone standing on the border gives no flood of enter/exit. A track first seen clearly
    inside enters on that frame; one first seen in the band is outside until it gets clear of it.
    A track that ends while inside exits on the frame it ends (with its last box), so occupancy
    falls back when people leave the picture. `zone_loiter` fires once per visit when a track has
    been inside for `loiter_s` seconds.
    """

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
    ) -> None:
        self.polygon = np.asarray(polygon_xy, np.float64)
        if self.polygon.ndim != 2 or self.polygon.shape[1] != 2 or len(self.polygon) < 3:
            raise ConfigError(f"rule {name!r}: polygon needs at least 3 [x, y] points")
        if loiter_s is not None and loiter_s <= 0:
            raise ConfigError(f"rule {name!r}: loiter_s must be > 0, not {loiter_s}")
        super().__init__(
            name,
            pipeline=pipeline,
            labels=labels,
            reference_point=reference_point,
            hysteresis_px=hysteresis_px,
            class_ids=class_ids,
        )
        self.loiter_s = loiter_s
        self._inside: dict[int, _Inside] = {}
        self._enter = 0
        self._exit = 0
        self._loiter = 0

    def update(self, tracks: Tracks, frame: Frame) -> list[Event]:
        """Events for this frame; call once per frame, also with no tracks (ended ids exit here)."""
        now = _clock(frame)
        events: list[Event] = []
        rows = _selected(tracks, self.class_ids)
        points = reference_points(tracks.xyxy[rows], self.reference_point)
        inside = points_in_polygon(points, self.polygon)
        clear = distance_to_polygon_edges(points, self.polygon) > self.hysteresis_px
        for row, is_inside, is_clear in zip(rows.tolist(), inside.tolist(), clear.tolist(), strict=True):
            track_id = int(tracks.track_id[row])
            state = self._inside.get(track_id)
            look = (int(tracks.class_id[row]), float(tracks.score[row]), _bbox(tracks.xyxy[row]))
            if state is None:
                if is_clear and is_inside:
                    state = self._inside[track_id] = _Inside(now, False, *look)
                    self._enter += 1
                    events.append(self._visit_event("zone_enter", track_id, state, frame, None))
                continue  # outside, or in the band without having been inside: nothing to do
            state.class_id, state.score, state.bbox = look
            if is_clear and not is_inside:
                events.append(self._exit_event(track_id, frame, now))
                continue
            if self.loiter_s is not None and not state.loitered and now - state.entered_s >= self.loiter_s:
                state.loitered = True
                self._loiter += 1
                events.append(self._visit_event("zone_loiter", track_id, state, frame, now - state.entered_s))
        for track_id in tracks.ended.tolist():
            if track_id in self._inside:
                events.append(self._exit_event(track_id, frame, now))
        return events

    def counts(self) -> dict[str, int]:
        counts = {"occupancy": len(self._inside), "enter": self._enter, "exit": self._exit}
        if self.loiter_s is not None:
            counts["loiter"] = self._loiter
        return counts

    def close(self, frame: Frame | None) -> list[Event]:
        """At shutdown every track still inside exits, so each enter has its exit.

        Without a frame (nothing processed) there is nobody inside and nothing to emit."""
        if frame is None:
            self._inside.clear()
            return []
        now = _clock(frame)
        return [self._exit_event(track_id, frame, now) for track_id in list(self._inside)]

    def _exit_event(self, track_id: int, frame: Frame, now: float) -> Event:
        state = self._inside.pop(track_id)
        self._exit += 1
        return self._visit_event("zone_exit", track_id, state, frame, now - state.entered_s)

    def _visit_event(
        self, kind: str, track_id: int, state: _Inside, frame: Frame, dwell_s: float | None
    ) -> Event:
        return self._event(kind, track_id, state.class_id, state.score, state.bbox, frame, dwell_s=dwell_s)


class Rules:
    """All rules of one pipeline, updated together; events come out in rule order."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        self.rules: list[Rule] = list(rules)
        self._last_frame: Frame | None = None

    def update(self, tracks: Tracks, frame: Frame) -> list[Event]:
        """Events of every rule for this frame; call once per frame, also when there are no tracks."""
        self._last_frame = frame
        events: list[Event] = []
        for rule in self.rules:
            events.extend(rule.update(tracks, frame))
        return events

    def counts(self) -> dict[str, dict[str, int]]:
        """Running totals per rule, e.g. {"door": {"in": 3, "out": 1}}."""
        return {rule.name: rule.counts() for rule in self.rules}

    def close(self, frame: Frame | None = None) -> list[Event]:
        """Shutdown: zones emit `zone_exit` for tracks still inside (at `frame`, default the last one)."""
        frame = frame if frame is not None else self._last_frame
        events: list[Event] = []
        for rule in self.rules:
            events.extend(rule.close(frame))
        return events
