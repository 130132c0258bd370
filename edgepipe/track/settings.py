"""A tracker's settings from a TrackerConfig, or from its fields given by name."""

from __future__ import annotations

from typing import Any

from edgepipe.config import TrackerConfig


def with_fields(settings: TrackerConfig | None, fields: dict[str, Any], kind: str) -> TrackerConfig:
    """`settings` (default: TrackerConfig of type `kind`) with `fields` replaced, validated again,
    so that `SortTracker(max_age=3)` has the bounds and defaults of the config and no others."""
    if settings is None:
        return TrackerConfig.model_validate({"type": kind, **fields})
    if not fields:
        return settings
    given = settings.model_dump(include=settings.model_fields_set)
    return TrackerConfig.model_validate({**given, **fields})
