"""build_tracker picks the tracker the config names; both satisfy the Tracker protocol; settings
come from TrackerConfig, given whole or field by field."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edgepipe.config import TrackerConfig
from edgepipe.track import OcclusionTracker, SortTracker, Tracker, build_tracker
from edgepipe.types import Detections


def one_box(x: float) -> Detections:
    return Detections(
        np.array([[x, 10, x + 40, 90]], np.float32), np.array([0.3], np.float32), np.zeros(1, np.int32)
    )


def test_build_tracker_picks_the_type_and_passes_the_high_threshold() -> None:
    default = build_tracker(TrackerConfig(), high_threshold=0.25)
    assert isinstance(default, OcclusionTracker) and default.high_threshold == 0.25
    sort = build_tracker(TrackerConfig(type="sort", max_age=4), high_threshold=0.25)
    assert isinstance(sort, SortTracker) and sort.max_age == 4


def test_both_trackers_are_trackers_and_report_the_detection_they_were_updated_with() -> None:
    # SORT uses every box; the occlusion tracker starts tracks only from the high threshold.
    for tracker, expected in (
        (build_tracker(TrackerConfig(type="sort"), high_threshold=0.5), 1),
        (build_tracker(TrackerConfig(), high_threshold=0.5), 0),
        (build_tracker(TrackerConfig(), high_threshold=0.2), 1),
    ):
        assert isinstance(tracker, Tracker)
        out = tracker.update(one_box(10), frame_index=0, time_s=0.0)
        assert len(out) == expected and len(tracker) == expected
        assert out.detection_index.tolist() == [0] * expected


def test_fields_by_name_are_checked_and_defaulted_by_the_config() -> None:
    assert SortTracker().max_age == TrackerConfig.model_fields["max_age"].default
    assert OcclusionTracker(high_threshold=0.5, max_age_s=3).settings.max_age_s == 3
    with pytest.raises(ValidationError):
        SortTracker(min_hits=0)
    with pytest.raises(ValidationError, match="max_age: only for type sort"):
        OcclusionTracker(TrackerConfig(), high_threshold=0.5, max_age=2)
    # a config with a field replaced keeps the fields it set
    settings = TrackerConfig(type="sort", max_age=5)
    assert SortTracker(settings, min_hits=1).max_age == 5
