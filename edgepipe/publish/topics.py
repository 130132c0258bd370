"""The MQTT topics of one pipeline and what their plain payloads mean: one home for the layout that
the publisher writes and Home Assistant discovery points at (README, "Events and topics")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from edgepipe.types import Counts

# `<prefix>/<pipeline>/available`, retained; the Last Will is "offline"
ONLINE = "online"
OFFLINE = "offline"  # the process died or lost its connection (Last Will)
STOPPED = "stopped"  # a clean shutdown (SIGTERM, the end of a file)
CAMERA_UP = "connected"  # of the source states on `<prefix>/<pipeline>/camera` (sources.SourceState)

_NOT_IN_A_LEVEL = re.compile(r"[/+#\x00]")  # a level separator or a wildcard inside a label


@dataclass(frozen=True, slots=True)
class Topics:
    """`<prefix>/<pipeline>/…` for one pipeline."""

    base: str

    @classmethod
    def of(cls, prefix: str, pipeline: str) -> Topics:
        return cls(f"{prefix}/{pipeline}")

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def counts(self) -> str:
        return f"{self.base}/counts"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def camera(self) -> str:
        return f"{self.base}/camera"

    def count(self, rule: str, key: str, label: str | None = None) -> str:
        """`counts/<rule>/<key>`, or `counts/<rule>/by_label/<label>/<key>`: the JSON path of the value."""
        if label is None:
            return f"{self.counts}/{rule}/{key}"
        return f"{self.counts}/{rule}/by_label/{_NOT_IN_A_LEVEL.sub('_', label)}/{key}"

    def count_values(self, counts: Counts) -> Iterator[tuple[str, int]]:
        """Every total of `counts` as (its plain topic, its value)."""
        for rule, values in counts.items():
            for key, value in values.items():
                if isinstance(value, int):
                    yield self.count(rule, key), value
            by_label = values.get("by_label")
            if isinstance(by_label, dict):
                for label, tally in by_label.items():
                    for key, value in tally.items():
                        yield self.count(rule, key, label), value
