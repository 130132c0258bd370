"""edgepipe: edge video analytics — NanoDet-Plus on OpenVINO, tracking, line/zone events, MQTT.

    import edgepipe
    with edgepipe.open("pipelines/door.yml") as run:
        for result in run: ...          # FrameResult: frame, detections, tracks, events

The names are imported on first use, so that importing the package (and `edgepipe --help`, and
the start of `edgepipe run`, which takes signals before anything slow) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgepipe.api import Run, open
    from edgepipe.publish import CallbackPublisher, Publisher
    from edgepipe.types import Detections, Event, Frame, FrameResult, Tracks

__version__ = "0.2.0"

__all__ = [
    "CallbackPublisher",
    "Detections",
    "Event",
    "Frame",
    "FrameResult",
    "Publisher",
    "Run",
    "Tracks",
    "__version__",
    "open",
]

_LAZY = {"open": "edgepipe.api", "Run": "edgepipe.api", "Publisher": "edgepipe.publish",
         "CallbackPublisher": "edgepipe.publish", "Detections": "edgepipe.types", "Event": "edgepipe.types",
         "Frame": "edgepipe.types", "FrameResult": "edgepipe.types", "Tracks": "edgepipe.types"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgepipe' has no attribute {name!r}")
