"""Home Assistant MQTT discovery: one retained config message per rule counter, so each count
shows up as a sensor that reads the retained `counts` topic and the `status` topic's state.

Pure functions; `MqttPublisher(discovery=...)` publishes the messages (retained) on every connect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def discovery_messages(
    pipeline: str,
    counters: Mapping[str, Sequence[str]],
    *,
    topic_prefix: str = "edgepipe",
    discovery_prefix: str = "homeassistant",
) -> list[tuple[str, bytes]]:
    """(topic, payload) per counter; `counters` maps a rule name to its count keys, e.g.
    {"door": ["in", "out"], "table": ["occupancy", "enter", "exit"]} (the keys of `Rules.counts()`)."""
    base = f"{topic_prefix}/{pipeline}"
    device = {
        "identifiers": [f"edgepipe_{pipeline}"],
        "name": f"edgepipe {pipeline}",
        "manufacturer": "edgepipe",
    }
    messages: list[tuple[str, bytes]] = []
    for rule, keys in counters.items():
        for key in keys:
            object_id = _SAFE.sub("_", f"edgepipe_{pipeline}_{rule}_{key}")
            config = {
                "name": f"{rule} {key}",
                "unique_id": object_id,
                "state_topic": f"{base}/counts",
                "value_template": f"{{{{ value_json[{json.dumps(rule)}][{json.dumps(key)}] }}}}",
                "state_class": "measurement" if key == "occupancy" else "total_increasing",
                "availability_topic": f"{base}/status",
                "availability_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
            }
            topic = f"{discovery_prefix}/sensor/{object_id}/config"
            messages.append((topic, json.dumps(config, separators=(",", ":"), sort_keys=True).encode()))
    return messages
