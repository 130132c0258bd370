"""Where events go: the Publisher protocol, and a fan-out to several publishers.

Implementations: `mqtt.MqttPublisher` (durable outbox → MQTT), `jsonl.JsonlSink` (a file or
stdout) and `CallbackPublisher` (events to a function of yours, for scripts and notebooks).
`publish` is called on the frame loop and must never wait for the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from edgepipe.types import Counts, Event


class Publisher(Protocol):
    """Receives the pipeline's events, running totals and status."""

    def publish(self, event: Event) -> None:
        """Deliver one event; must not block the frame loop on the network."""

    def publish_counts(self, counts: Counts) -> None:
        """Running totals per rule, after they changed (retained on MQTT; only the newest matters)."""

    def publish_status(self, status: dict[str, object]) -> None:
        """Periodic stats (fps, drops, `source_state`), and at once when the source state changed."""

    def backlog(self) -> int | None:
        """Messages accepted but not yet delivered (an outbox's depth); None if it keeps none."""

    def lost(self) -> int:
        """Messages accepted that will never be delivered (reported, never silent)."""

    def problems(self) -> list[str]:
        """What keeps delivery from working normally right now (the pipeline is degraded)."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within `timeout_s`, say "stopped", release resources."""


class FanoutPublisher:
    """Sends everything to each publisher in order; closing closes all of them, even if one fails."""

    def __init__(self, publishers: Sequence[Publisher]) -> None:
        self.publishers = list(publishers)

    def publish(self, event: Event) -> None:
        for publisher in self.publishers:
            publisher.publish(event)

    def publish_counts(self, counts: Counts) -> None:
        for publisher in self.publishers:
            publisher.publish_counts(counts)

    def publish_status(self, status: dict[str, object]) -> None:
        for publisher in self.publishers:
            publisher.publish_status(status)

    def backlog(self) -> int | None:
        depths = [depth for p in self.publishers if (depth := p.backlog()) is not None]
        return sum(depths) if depths else None

    def lost(self) -> int:
        return sum(p.lost() for p in self.publishers)

    def problems(self) -> list[str]:
        return [problem for p in self.publishers for problem in p.problems()]

    def close(self, timeout_s: float = 5.0) -> None:
        errors: list[BaseException] = []
        for publisher in self.publishers:
            try:
                publisher.close(timeout_s)
            except Exception as err:  # close the others first, then report the first failure
                errors.append(err)
        if errors:
            raise errors[0]

    def __enter__(self) -> FanoutPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CallbackPublisher:
    """Hands each event (and, if given, each change of the totals) to a function of yours.

    The functions run on the frame loop: keep them quick, or hand the work to a thread of yours."""

    def __init__(
        self,
        on_event: Callable[[Event], object],
        on_counts: Callable[[Counts], object] | None = None,
    ) -> None:
        self.on_event = on_event
        self.on_counts = on_counts

    def publish(self, event: Event) -> None:
        self.on_event(event)

    def publish_counts(self, counts: Counts) -> None:
        if self.on_counts is not None:
            self.on_counts(counts)

    def publish_status(self, status: dict[str, object]) -> None:
        pass

    def backlog(self) -> int | None:
        return None

    def lost(self) -> int:
        return 0

    def problems(self) -> list[str]:
        return []

    def close(self, timeout_s: float = 5.0) -> None:
        pass
