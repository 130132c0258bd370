"""Values that flow between stages: Frame → Detections → Tracks → Event, and FrameResult, all
four of one frame, which the loop hands to its caller."""

from __future__ import annotations

import json
import uuid
from dataclasses import KW_ONLY, asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from numpy.typing import NDArray

EVENT_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True, eq=False)  # eq on arrays is ambiguous; compare fields in tests
class Frame:
    """One decoded image and when it was taken."""

    image: NDArray[np.uint8]  # (H, W, 3) BGR
    index: int  # 0-based position in its source
    timestamp: float  # capture time, seconds since the epoch (UTC)
    source_time: float | None  # container time in seconds; None for live sources


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Boxes found in one frame, as parallel arrays (struct of arrays)."""

    xyxy: NDArray[np.float32]  # (N, 4) pixels of the original frame
    score: NDArray[np.float32]  # (N,)
    class_id: NDArray[np.int32]  # (N,)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.score.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(
                f"Detections arrays disagree: xyxy {self.xyxy.shape}, "
                f"score {self.score.shape}, class_id {self.class_id.shape}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, keep: NDArray[np.bool_] | NDArray[np.intp] | slice) -> Detections:
        return Detections(self.xyxy[keep], self.score[keep], self.class_id[keep])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int32))


@dataclass(frozen=True, slots=True, eq=False)
class Tracks:
    """Confirmed tracks after one tracker update."""

    xyxy: NDArray[np.float32]  # (N, 4) filtered boxes
    score: NDArray[np.float32]  # (N,) score of the last matched detection
    class_id: NDArray[np.int32]  # (N,)
    track_id: NDArray[np.int64]  # (N,) unique within one pipeline run
    detection_index: NDArray[np.intp]  # (N,) row in this frame's Detections, -1 if coasting
    ended: NDArray[np.int64]  # ids that ended this frame; rules drop their state

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        shapes = (self.score.shape, self.class_id.shape, self.track_id.shape, self.detection_index.shape)
        if self.xyxy.shape != (n, 4) or any(s != (n,) for s in shapes) or self.ended.ndim != 1:
            raise ValueError(
                f"Tracks arrays disagree: xyxy {self.xyxy.shape}, score {self.score.shape}, "
                f"class_id {self.class_id.shape}, track_id {self.track_id.shape}, "
                f"detection_index {self.detection_index.shape}, ended {self.ended.shape}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls, ended: NDArray[np.int64] | None = None) -> Tracks:
        return cls(
            np.empty((0, 4), np.float32),
            np.empty(0, np.float32),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.intp),
            np.empty(0, np.int64) if ended is None else ended,
        )


# Running totals of the rules (`Rules.counts()`, the retained MQTT `counts` payload), e.g.
# {"door": {"in": 3, "out": 1, "by_label": {"person": {"in": 3, "out": 1}}}}: per rule its totals,
# and the same totals per label under "by_label".
Tally = dict[str, int]  # e.g. {"in": 3, "out": 1} or {"occupancy": 1, "enter": 4, "exit": 3}
RuleCounts = dict[str, int | dict[str, Tally]]  # a Tally plus "by_label": {label: Tally}
Counts = dict[str, RuleCounts]  # per rule name


def totals(counts: RuleCounts) -> Tally:
    """A rule's totals without the per-label breakdown."""
    return {key: value for key, value in counts.items() if isinstance(value, int)}


def utc_iso(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-24T10:36:10.123Z."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened in a pipeline; its JSON form is the public MQTT payload (schema 1).

    Events of a track (line_cross, zone_*) carry the track's fields; a `counts_reset` has none and
    carries the totals of the period that ended instead. Fields that are None are left out of the JSON."""

    type: str  # line_cross | zone_enter | zone_exit | zone_loiter | counts_reset
    pipeline: str
    rule: str
    ts: float  # capture time of the frame (or when a reset happened), seconds since the epoch (UTC)
    _: KW_ONLY
    track_id: int | None = None
    label: str | None = None
    score: float | None = None
    bbox: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in frame pixels
    frame: int | None = None  # index of the frame in its source
    media_time_s: float | None = None  # the frame's time in the file (Frame.source_time); None when live
    direction: str | None = None  # "in" / "out" for line_cross
    dwell_s: float | None = None  # time inside, for zone_exit and zone_loiter
    linked_from: int | None = None  # first track id of a broken track this one carries on (rules.py)
    counts: RuleCounts | None = None  # counts_reset: the rule's totals just before the reset
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # made once, where the event is created

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["schema"] = EVENT_SCHEMA_VERSION
        payload["ts"] = utc_iso(self.ts)
        if self.bbox is not None:
            payload["bbox"] = [round(float(v), 1) for v in self.bbox]
        if self.score is not None:
            payload["score"] = round(float(self.score), 4)
        if self.media_time_s is not None:
            payload["media_time_s"] = round(float(self.media_time_s), 3)
        return {k: v for k, v in payload.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True, eq=False)
class FrameResult:
    """What the pipeline made of one frame: its detections, the tracks and the events they caused."""

    frame: Frame
    detections: Detections
    tracks: Tracks
    events: tuple[Event, ...]
