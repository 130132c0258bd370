"""edgepipe: edge video analytics — NanoDet-Plus on OpenVINO, SORT tracking, line/zone events, MQTT."""

from __future__ import annotations

from edgepipe.types import Detections, Event, Frame, Tracks

__version__ = "0.1.0"

__all__ = ["Detections", "Event", "Frame", "Tracks", "__version__"]
