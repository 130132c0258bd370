"""JSON-lines sink: one event per line (the MQTT payload) to a file or stdout, for runs without
a broker. Each line is flushed, so `tail -f` and a killed process see every event written.

Nothing is lost silently: while the file cannot be written (a full disk), lines wait in order in a
bounded memory queue and are written as soon as a write succeeds (one ERROR per episode, `problems()`
says so meanwhile, what overflows is counted in `lost()`); a file deleted or replaced under the
running process (log rotation without copytruncate, a user's `rm`) is noticed and written anew.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from edgepipe.errors import OutputError
from edgepipe.types import Counts, Event

log = logging.getLogger(__name__)

MEMORY_LIMIT = 10_000  # lines held while the file cannot be written
_CHECK_FILE_S = 1.0  # how often the sink looks whether its file was deleted or replaced


def check_events_path(path: str | os.PathLike[str]) -> None:
    """OutputError unless events can be appended at `path` ("-" is stdout): a regular file or none
    yet, in a folder that exists or can be created, writable by this user."""
    if os.fspath(path) == "-":
        return
    try:
        _check_events_path(Path(os.fspath(path)))
    except OSError as error:  # a name too long, a loop of links
        raise OutputError(f"the events file {path}: {error.strerror}") from None


def _check_events_path(target: Path) -> None:
    if target.exists() and not target.is_file():
        raise OutputError(f"the events file {target} is not a file (a folder?): give a file name")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"the events file {target} is not writable by this user")
    existing = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(
            f"the events file's folder {target.parent} cannot be created: {existing} is not a folder"
        )
    if not target.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"the events file's folder {existing} is not writable by this user")


class JsonlSink:
    """Appends events to `path_or_dash` ("-" = stdout; missing folders are created). Counts and status are not written: the
    file holds events only, so every line has the same schema."""

    def __init__(self, path_or_dash: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path_or_dash)
        self._stream: TextIO | None = None  # stdout
        self._fd: int | None = None  # the file, appended to with one write(2) per line
        self._inode = 0
        self._owned = self.path != "-"
        self._held: deque[str] = deque()
        self._problem: str | None = None
        self._next_check = 0.0
        self.overflowed = 0
        self.written = 0
        if not self._owned:
            self._stream = sys.stdout
            return
        check_events_path(self.path)
        try:
            self._open()
        except OSError as err:
            raise OutputError(
                f"cannot open the events file {self.path}: {err.strerror}; "
                "check that its folder can be created and written to"
            ) from err

    def _open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._inode = os.fstat(self._fd).st_ino

    def publish(self, event: Event) -> None:
        line = event.to_json() + "\n"
        if self._held or not self._write(line):
            self._hold(line)
            self._retry()

    def _write(self, line: str) -> bool:
        """Write one whole line; False (the episode noted) when the file refuses it. A line cut
        short by a full disk is taken back, so the file never holds half a line."""
        if not self._owned:
            assert self._stream is not None
            self._stream.write(line)
            self._stream.flush()
            self.written += 1
            return True
        data = line.encode()
        try:
            self._reopen_if_replaced()
            assert self._fd is not None
            size = os.fstat(self._fd).st_size
            try:
                done = os.write(self._fd, data)
                if done != len(data):
                    raise OSError(28, os.strerror(28))  # a short write: ENOSPC as write(2) would say next
            except OSError:
                os.ftruncate(self._fd, size)
                raise
        except OSError as err:
            self._failed(err)
            return False
        self.written += 1
        return True

    def _retry(self) -> None:
        """Write the held lines, oldest first, as far as the file takes them."""
        while self._held:
            if not self._write(self._held[0]):
                return
            self._held.popleft()
        if self._problem is not None:
            log.warning(
                "the events file %s can be written again (%d lines lost meanwhile)",
                self.path,
                self.overflowed,
            )
            self._problem = None

    def _hold(self, line: str) -> None:
        if len(self._held) >= MEMORY_LIMIT:
            self._held.popleft()
            self.overflowed += 1
        self._held.append(line)

    def _failed(self, err: OSError) -> None:
        if self._problem is None:
            log.error(
                "cannot write the events file %s (%s): events wait in memory (up to %d) until it can be written",
                self.path,
                err.strerror or err,
                MEMORY_LIMIT,
            )
        self._problem = err.strerror or str(err)

    def _reopen_if_replaced(self) -> None:
        """Reopen the file when it was deleted or replaced (looked at once a second: a stat per
        event is cheap but not free)."""
        now = time.monotonic()
        if self._fd is not None and now < self._next_check:
            return
        self._next_check = now + _CHECK_FILE_S
        if self._fd is not None:
            try:
                if os.stat(self.path).st_ino == self._inode:
                    return
            except FileNotFoundError:
                pass
            log.warning("the events file %s was deleted or replaced: writing to a new one", self.path)
            os.close(self._fd)
            self._fd = None
        self._open()

    def publish_counts(self, counts: Counts) -> None:
        pass

    def publish_status(self, status: dict[str, object]) -> None:
        if self._held:  # the periodic status is a chance to write what waits
            self._retry()

    def backlog(self) -> int | None:
        return len(self._held)

    def lost(self) -> int:
        return self.overflowed

    def problems(self) -> list[str]:
        if self._problem is None:
            return []
        return [
            f"cannot write the events file {self.path} ({self._problem}): {len(self._held)} events held in memory"
        ]

    def close(self, timeout_s: float = 5.0) -> None:
        if self._held:
            self._retry()
        if self._held:
            self.overflowed += len(self._held)
            log.error(
                "%d events for %s could not be written before the end: lost", len(self._held), self.path
            )
            self._held.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        elif self._stream is not None:
            self._stream.flush()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
