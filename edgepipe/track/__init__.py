"""Trackers: the `Tracker` protocol the pipeline depends on, and `build_tracker` for a config.

Two implementations share the batched Kalman filter (kalman.py) and the IoU matching
(associate.py): `OcclusionTracker` (occlusion.py, the default) keeps an id through occlusions;
`SortTracker` (sort.py) is the SORT reference.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edgepipe.config import TrackerConfig
from edgepipe.track.occlusion import OcclusionTracker
from edgepipe.track.sort import SortTracker
from edgepipe.types import Detections, Tracks

__all__ = ["OcclusionTracker", "SortTracker", "Tracker", "build_tracker"]


@runtime_checkable
class Tracker(Protocol):
    """Turns each frame's Detections into Tracks; `update` is called for every frame, in order,
    even with no detections.

    Every returned track names the detection row it was updated with (`Tracks.detection_index`);
    both trackers here report only tracks matched in this frame, so it is never -1 from them.
    `Tracks.ended` lists the reported ids whose tracks ended in this frame."""

    def update(
        self, detections: Detections, frame_index: int | None = None, time_s: float | None = None
    ) -> Tracks:
        """`frame_index`: the frame's position in its source (a jump means dropped frames);
        `time_s`: its time in seconds (media time for files, capture time for live sources)."""
        ...

    def __len__(self) -> int:
        """Live tracks, tentative ones included."""
        ...


def build_tracker(cfg: TrackerConfig, *, high_threshold: float) -> Tracker:
    """The tracker `cfg.type` names. `high_threshold` is the detector's `threshold`: the score a
    box needs to start a track (and to be counted); the occlusion tracker lets boxes down to
    `cfg.low_threshold` continue tracks that exist."""
    if cfg.type == "sort":
        return SortTracker(cfg)
    return OcclusionTracker(cfg, high_threshold=high_threshold)
