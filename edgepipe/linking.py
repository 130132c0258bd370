"""Track linking for the rules: which new track carries on one that ended (the same person, re-acquired).

A tracker loses a person behind an occluder and finds them again under a new id. Counting on ids
alone then misses the crossing that happened during the gap, or counts a re-acquired person twice.
`TrackLinker` decides, once per frame for all rules of a pipeline (so a line and a zone agree on who
is who), that a track which ended is continued by a track first seen soon after, close to where the
old one was heading; the rules then move the old track's state (its side of a line, the zone visit
it is in) to the new id instead of dropping it.

The gate is the old track's motion. The new track's first box must start (top centre: the head is
the part of a person least often hidden by what stands in front of them) within `max_distance` box
heights of the old track's path over the gap: from where it was last seen to where its velocity
(a least-squares fit over its last second) would have taken it. Anywhere on that path, not only at
its end: people slow down or stop behind occluders, they do not jump sideways. Its box height must
be within a factor of 1.5 of the old one's. Candidates are paired one to one with the smallest total
distance (Hungarian), so two people who re-appear together are not both given to one lost track,
and a track is continued by at most one successor. Tracks the tracker is still coasting (live but not
seen this frame) compete as predecessors too, so a new track that more likely continues one of them
is not handed to a lost track meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from edgepipe.types import Tracks

# Velocity: least-squares slope of the last second of sightings, long enough to average out box
# jitter (measured on MOT15: half a second linked fewer true fragments), short enough to follow a turn.
_VELOCITY_WINDOW_S = 1.0
# Box heights of the same person before and after a gap of up to 2 s stay within this factor
# (95% of true fragment pairs on MOT15); a much taller or shorter box is someone else, or a part of a
# person that the detector boxed alone.
_MAX_HEIGHT_RATIO = 1.5
_INFEASIBLE = 1e9  # cost of a pair outside the gate in the assignment


@dataclass(frozen=True, slots=True)
class Link:
    """`successor_id` carries on `ended_id`; `origin_id` is the first track of the chain. `heading_xy`
    is where the ended track was heading: its velocity times the gap, in pixels (None: seen once, so
    its motion is unknown), so a rule can tell a crossing made during the gap from one that only the
    gate's slack would explain."""

    ended_id: int
    successor_id: int
    origin_id: int
    heading_xy: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Lineage:
    """The linker's decisions for one frame. Rules apply them in this order: `links` (move state from
    the ended track to its successor), then the frame's rows, then `released` (ended tracks that found
    no successor in time: their state ends now, e.g. a zone exit)."""

    links: tuple[Link, ...] = ()
    released: tuple[int, ...] = ()
    origin: Mapping[int, int] = field(default_factory=dict)  # linked track id → its chain's first id

    @classmethod
    def unlinked(cls, ended: NDArray[np.int64]) -> Lineage:
        """No linking: every track that ends is released on the frame it ends."""
        return cls(released=tuple(ended.tolist()))


@dataclass(slots=True)
class _Live:
    """A track the linker has seen and that has not ended."""

    first_s: float
    first_point: tuple[float, float]  # top centre of its first box
    first_height: float
    class_id: int
    history: deque[tuple[float, float, float]]  # (time s, x, y) of the top centre, last second
    height: float  # of the last box
    continues: bool = False  # already linked to a predecessor (a track continues at most one)


@dataclass(frozen=True, slots=True)
class _Lost:
    """A track as a predecessor: where and when it was last seen, and how it was moving."""

    last_s: float
    point: tuple[float, float]
    velocity: tuple[float, float] | None  # pixels per second; None: seen once
    height: float
    class_id: int


class TrackLinker:
    """Links tracks that end to tracks that start soon after and near where they were heading.

    Call `update` once per frame, with every frame's Tracks (also empty ones), and `close` at the end.
    `max_gap_s` is the longest time from the old track's last sighting to the new one's first; 0 turns
    linking off (every ended track is released on the frame it ends). A track that ends waits up to
    `max_gap_s` after it was last seen before it is released.
    """

    def __init__(self, max_gap_s: float, max_distance: float) -> None:
        self.max_gap_s = float(max_gap_s)
        self.max_distance = float(max_distance)
        self._live: dict[int, _Live] = {}
        self._lost: dict[int, _Lost] = {}
        self._origin: dict[int, int] = {}
        self.links_made = 0  # over the run

    def update(self, tracks: Tracks, now_s: float) -> Lineage:
        """Note this frame's tracks and decide links and releases (see `Lineage`)."""
        self._observe(tracks, now_s)
        released: list[int] = []
        for track_id in tracks.ended.tolist():
            live = self._live.pop(track_id, None)
            if live is None or self.max_gap_s <= 0:
                released.append(track_id)
            else:
                self._lost[track_id] = _predecessor(live)
        links = self._link(now_s) if self._lost else ()
        released += [tid for tid, lost in self._lost.items() if now_s - lost.last_s > self.max_gap_s]
        return self._lineage(links, released)

    def close(self) -> Lineage:
        """End of the run: every track still waiting for a successor is released."""
        return self._lineage((), list(self._lost))

    def _observe(self, tracks: Tracks, now_s: float) -> None:
        xyxy = tracks.xyxy.astype(np.float64)
        x = ((xyxy[:, 0] + xyxy[:, 2]) / 2).tolist()
        height = (xyxy[:, 3] - xyxy[:, 1]).tolist()
        for track_id, class_id, px, py, h in zip(
            tracks.track_id.tolist(), tracks.class_id.tolist(), x, xyxy[:, 1].tolist(), height, strict=True
        ):
            live = self._live.get(track_id)
            if live is None:
                live = self._live[track_id] = _Live(now_s, (px, py), h, class_id, deque(), h)
            live.height = h
            history = live.history
            history.append((now_s, px, py))
            while now_s - history[0][0] > _VELOCITY_WINDOW_S:
                history.popleft()

    def _link(self, now_s: float) -> tuple[Link, ...]:
        """Pair lost tracks with live tracks first seen after them, inside the gate, one to one;
        coasting tracks compete as predecessors without being linked."""
        earliest = min(item.last_s for item in self._lost.values())
        candidate_ids = [
            tid for tid, live in self._live.items() if not live.continues and live.first_s > earliest
        ]
        if not candidate_ids:
            return ()
        coasting = {tid: live for tid, live in self._live.items() if live.history[-1][0] < now_s}
        predecessor_ids = [*self._lost, *coasting]
        predecessors = [*self._lost.values(), *(_predecessor(live) for live in coasting.values())]
        cost = np.full((len(predecessors), len(candidate_ids)), _INFEASIBLE)
        for row, old in enumerate(predecessors):
            for col, tid in enumerate(candidate_ids):
                distance = self._gate_distance(old, self._live[tid])
                if distance is not None:
                    cost[row, col] = distance
        links: list[Link] = []
        for row, col in zip(*linear_sum_assignment(cost), strict=True):
            if cost[row, col] >= _INFEASIBLE or row >= len(self._lost):
                continue  # outside the gate, or the best predecessor is still coasting
            old, new = predecessors[row], self._live[candidate_ids[col]]
            gap_s = new.first_s - old.last_s
            ended_id = predecessor_ids[row]
            heading = None if old.velocity is None else (old.velocity[0] * gap_s, old.velocity[1] * gap_s)
            links.append(Link(ended_id, candidate_ids[col], self._origin.get(ended_id, ended_id), heading))
        for link in links:
            self._origin.pop(link.ended_id, None)
            self._origin[link.successor_id] = link.origin_id
            self._live[link.successor_id].continues = True
            del self._lost[link.ended_id]
        self.links_made += len(links)
        return tuple(links)

    def _gate_distance(self, old: _Lost, new: _Live) -> float | None:
        """Distance in old box heights from the new track's first point to the old track's path
        over the gap, or None when the pair cannot be the same person."""
        gap_s = new.first_s - old.last_s
        if not 0 < gap_s <= self.max_gap_s or new.class_id != old.class_id:
            return None
        if not 1 / _MAX_HEIGHT_RATIO <= new.first_height / old.height <= _MAX_HEIGHT_RATIO:
            return None
        ax, ay = old.point
        vx, vy = old.velocity if old.velocity is not None else (0.0, 0.0)
        dx, dy = vx * gap_s, vy * gap_s
        px, py = new.first_point
        span = dx * dx + dy * dy
        t = 0.0 if span == 0 else min(max(((px - ax) * dx + (py - ay) * dy) / span, 0.0), 1.0)
        distance = float(np.hypot(px - (ax + t * dx), py - (ay + t * dy))) / old.height
        return distance if distance <= self.max_distance else None

    def _lineage(self, links: tuple[Link, ...], released: list[int]) -> Lineage:
        origin = dict(self._origin)  # this frame's events still name the chain of a released track
        for track_id in released:
            self._lost.pop(track_id, None)
            self._origin.pop(track_id, None)
        return Lineage(links, tuple(released), origin)


def _predecessor(live: _Live) -> _Lost:
    """A track as it was last seen, with its velocity: the least-squares slope of its last second
    (two sightings: their difference; one: unknown). Plain Python: a second is a few dozen points."""
    history = live.history
    last_s, x, y = history[-1]
    velocity = None
    if len(history) >= 2 and last_s > history[0][0]:
        n = len(history)
        mean_t = sum(h[0] for h in history) / n
        mean_x = sum(h[1] for h in history) / n
        mean_y = sum(h[2] for h in history) / n
        spread = sum((h[0] - mean_t) ** 2 for h in history)
        velocity = (
            sum((h[0] - mean_t) * (h[1] - mean_x) for h in history) / spread,
            sum((h[0] - mean_t) * (h[2] - mean_y) for h in history) / spread,
        )
    return _Lost(last_s, (x, y), velocity, live.height, live.class_id)
