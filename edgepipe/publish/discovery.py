"""Home Assistant MQTT discovery: the retained config messages that make one pipeline one device in
Home Assistant, with

- a sensor per rule total (`entry in`, `table occupancy`; `total_increasing`, occupancy
  `measurement`), and per label when the rule watches a few named classes, reading the plain
  `counts/<rule>/<key>` topics; available while the pipeline is online *and* its camera connected;
- a connectivity binary_sensor for the camera (the `camera` topic), available while the pipeline is;
- an `event` entity for the events topic (line crossings, zone events, counts resets);
- diagnostic sensors from the status topic: fps, frame age, outbox depth, dropped frames.

Every config names the device (with `model` and `sw_version`) and `origin`. The topics are
`<discovery_prefix>/<component>/edgepipe_<pipeline>/<object>/config`, so `discovery_scope` is a
filter that matches exactly this pipeline's configs: the publisher clears those it no longer sends.
Keys follow Home Assistant's MQTT discovery documentation; tests/publish/test_discovery.py checks
them with Home Assistant's own schemas. Pure functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgepipe import __version__
from edgepipe.config import LineRuleConfig, PipelineConfig
from edgepipe.labels import spelt_as_in
from edgepipe.publish.topics import CAMERA_UP, ONLINE, Topics
from edgepipe.types import Counts, totals

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
PEOPLE_UNIT = "people"
OBJECTS_UNIT = "objects"


@dataclass(frozen=True, slots=True)
class RuleEntities:
    """What discovery needs to know of one rule."""

    name: str
    keys: tuple[str, ...]  # its totals, e.g. ("in", "out") or ("occupancy", "enter", "exit")
    classes: tuple[str, ...] | None  # the labels it counts (None: whatever the model finds)


def node_id(pipeline: str) -> str:
    return f"edgepipe_{pipeline}"


def discovery_scope(pipeline: str, discovery_prefix: str = "homeassistant") -> str:
    """The topic filter that matches every discovery config of this pipeline's device."""
    return f"{discovery_prefix}/+/{node_id(pipeline)}/+/config"


def legacy_topics(
    pipeline: str, rules: Sequence[RuleEntities], discovery_prefix: str = "homeassistant"
) -> list[str]:
    """Where edgepipe 0.2 published its configs: one sensor per total, no node id. They have the unique
    ids of today's count sensors, so Home Assistant refuses the new configs while the old ones are
    retained: the publisher clears them (if the broker has them) at connect."""
    return [
        f"{discovery_prefix}/sensor/{_SAFE.sub('_', f'edgepipe_{pipeline}_{rule.name}_{key}')}/config"
        for rule in rules
        for key in rule.keys
    ]


def unit_of(classes: Sequence[str] | None) -> str:
    return PEOPLE_UNIT if classes is not None and list(classes) == ["person"] else OBJECTS_UNIT


def discovery_messages(
    pipeline: str,
    rules: Sequence[RuleEntities],
    *,
    event_types: Sequence[str],
    model: str,
    topic_prefix: str = "edgepipe",
    discovery_prefix: str = "homeassistant",
) -> list[tuple[str, bytes]]:
    """(topic, payload) of every entity of the pipeline's device, in a stable order."""
    topics = Topics.of(topic_prefix, pipeline)
    node = node_id(pipeline)
    common: dict[str, Any] = {
        "device": {
            "identifiers": [node],
            "name": f"edgepipe {pipeline}",
            "manufacturer": "edgepipe",
            "model": model,
            "sw_version": __version__,
        },
        "origin": {"name": "edgepipe", "sw_version": __version__},
    }
    pipeline_up = {"topic": topics.available, "value_template": _is(ONLINE)}
    camera_up = {"topic": topics.camera, "value_template": _is(CAMERA_UP)}
    counting = {"availability": [pipeline_up, camera_up], "availability_mode": "all"}
    running = {"availability": [pipeline_up]}
    entities: list[tuple[str, str, dict[str, Any]]] = []  # (component, object, config)

    for rule in rules:
        labels = rule.classes if rule.classes is not None and len(rule.classes) > 1 else ()
        for key in rule.keys:
            for label in (None, *labels):
                name = f"{rule.name} {key}" if label is None else f"{rule.name} {key} {label}"
                config = {
                    "name": name,
                    "state_topic": topics.count(rule.name, key, label),
                    "state_class": "measurement" if key == "occupancy" else "total_increasing",
                    "unit_of_measurement": unit_of(rule.classes if label is None else [label]),
                    "icon": "mdi:account-group" if key == "occupancy" else "mdi:counter",
                    **counting,
                }
                part = _SAFE.sub("_", f"{rule.name}_{key}" if label is None else f"{rule.name}_{label}_{key}")
                entities.append(("sensor", part, config))

    entities.append(
        (
            "binary_sensor",
            "camera",
            {
                "name": "camera",
                "state_topic": topics.camera,
                "value_template": f"{{{{ 'ON' if value == '{CAMERA_UP}' else 'OFF' }}}}",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                **running,
            },
        )
    )
    entities.append(
        (
            "event",
            "events",
            {
                "name": "events",
                "state_topic": topics.events,
                "event_types": list(event_types),
                # Home Assistant wants the type under `event_type`; every other field becomes an attribute
                "value_template": "{{ dict(value_json, event_type=value_json.type) | to_json }}",
                "icon": "mdi:walk",
                **running,
            },
        )
    )
    # from the status payload (metrics.py); `None` renders as "unknown" (no frames in the window)
    diagnostics = (
        ("fps", "fps", "{{ value_json.fps }}", "fps", "measurement", None),
        (
            "frame_age",
            "frame age",
            "{{ value_json.frame_age_ms.p50_ms | default(None) }}",
            "ms",
            "measurement",
            "duration",
        ),
        (
            "outbox_depth",
            "outbox depth",
            "{{ value_json.outbox_depth | default(None) }}",
            "messages",
            "measurement",
            None,
        ),
        (
            "dropped_frames",
            "dropped frames",
            "{{ value_json.dropped_frames | default(None) }}",
            "frames",
            "total_increasing",
            None,
        ),
    )
    for part, name, template, unit, state_class, device_class in diagnostics:
        config = {
            "name": name,
            "state_topic": topics.status,
            "value_template": template,
            "unit_of_measurement": unit,
            "state_class": state_class,
            "entity_category": "diagnostic",
            **({"device_class": device_class} if device_class else {}),
            **running,
        }
        entities.append(("sensor", part, config))

    messages = []
    for component, part, config in entities:
        unique_id = f"{node}_{part}"
        payload = {**config, "unique_id": unique_id, "object_id": unique_id, **common}
        topic = f"{discovery_prefix}/{component}/{node}/{part}/config"
        messages.append((topic, json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()))
    return messages


def home_assistant_discovery(
    cfg: PipelineConfig, counts: Counts, labels: Sequence[str]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The discovery configs of `cfg`'s device (`outputs.mqtt` must be set): its rules' totals
    (the keys of `counts`, from `Rules.counts()`) and the event types the pipeline publishes; and the
    topic filters under which retained configs that are not among them are cleared. A rule's classes
    are named as the model's `labels` spell them, as its per-label counts are published."""
    mqtt = cfg.outputs.mqtt
    if mqtt is None:
        raise ValueError(f"pipeline {cfg.name} has no MQTT output to announce")
    entities = []
    event_types: list[str] = []
    for rule in cfg.rules:
        classes = rule.classes or cfg.detector.classes
        keys = tuple(totals(counts[rule.name]))
        spelt = None if classes is None else tuple(spelt_as_in(name, labels) for name in classes)
        entities.append(RuleEntities(rule.name, keys, spelt))
        if isinstance(rule, LineRuleConfig):
            kinds = ["line_cross"]
        else:
            kinds = ["zone_enter", "zone_exit"] + (["zone_loiter"] if rule.loiter_s is not None else [])
        event_types += [kind for kind in kinds if kind not in event_types]
    if cfg.counts.reset != "never":
        event_types.append("counts_reset")
    messages = discovery_messages(
        cfg.name,
        entities,
        event_types=event_types,
        model=f"{cfg.detector.model.stem} (OpenVINO {cfg.detector.device})",
        topic_prefix=mqtt.topic_prefix,
        discovery_prefix=mqtt.discovery_prefix,
    )
    cleanup = [
        discovery_scope(cfg.name, mqtt.discovery_prefix),
        *legacy_topics(cfg.name, entities, mqtt.discovery_prefix),
    ]
    return messages, cleanup


def _is(value: str) -> str:
    """An availability template: 'online' when the topic holds `value`, else 'offline' (Home
    Assistant ignores payloads that are neither, so `stopped` or `reconnecting` must be mapped)."""
    return f"{{{{ 'online' if value == '{value}' else 'offline' }}}}"
