"""JSON-lines sink: one event per line (the MQTT payload) to a file or stdout, for runs without
a broker. Each line is flushed, so `tail -f` and a killed process see every event written."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from edgepipe.errors import OutputError
from edgepipe.types import Counts, Event


class JsonlSink:
    """Appends events to `path_or_dash` ("-" = stdout; missing folders are created). Counts and status are not written: the
    file holds events only, so every line has the same schema."""

    def __init__(self, path_or_dash: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path_or_dash)
        self._stream: TextIO
        if self.path == "-":
            self._stream, self._owned = sys.stdout, False
        else:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._stream, self._owned = open(self.path, "a", encoding="utf-8"), True  # noqa: SIM115
            except OSError as err:
                raise OutputError(
                    f"cannot open the events file {self.path}: {err.strerror}; "
                    "check that its folder can be created and written to"
                ) from err
        self.written = 0

    def publish(self, event: Event) -> None:
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()
        self.written += 1

    def publish_counts(self, counts: Counts) -> None:
        pass

    def publish_status(self, status: dict[str, object]) -> None:
        pass

    def backlog(self) -> int | None:
        return None

    def close(self, timeout_s: float = 5.0) -> None:
        if self._owned and not self._stream.closed:
            self._stream.close()
        elif not self._owned:
            self._stream.flush()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
