"""Durable queue of messages the broker has not acknowledged yet: SQLite in WAL mode (stdlib).

A row is written before anything is sent and deleted only on the broker's PUBACK, so a broker
outage or a killed process loses nothing: the next connection sends the backlog oldest first.
WAL with `synchronous=NORMAL` survives a crash or SIGKILL of the process; a power cut may lose
the last commits (FULL would fsync on every event, on the frame loop).

Bounds: at most `max_messages` rows and none older than `max_age_s`; when a bound is hit the
OLDEST rows are dropped (the newest events are the most useful ones to an operator after a long
outage), a WARNING names the count and `dropped` keeps the total.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgepipe.errors import OutputError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    replace_key TEXT UNIQUE
)
"""

# Checking the age bound costs a query; once a second is plenty for a bound measured in days.
_AGE_CHECK_INTERVAL_S = 1.0
_WARNING_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Message:
    """One queued message; `id` grows with insertion order."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """SQLite-backed FIFO used by the frame loop (put) and the sender thread (pending, ack).

    One process per file: a lock file beside the database keeps a second pipeline with the same
    outbox from sending the same rows twice."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_messages: int = 100_000,
        max_age_s: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ):
        if max_messages < 1 or max_age_s <= 0:
            raise ValueError(
                f"outbox bounds must be positive: max_messages={max_messages}, max_age_s={max_age_s}"
            )
        self.path = Path(path)
        self._clock = clock  # wall clock: rows keep their creation time across restarts
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.dropped = 0
        self._lock = threading.Lock()
        self._next_age_check = 0.0
        self._next_warning = 0.0
        self._unreported = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = self._take_lock(Path(f"{self.path}.lock"))
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except (OSError, sqlite3.Error) as err:
            raise OutputError(
                f"cannot open the MQTT outbox {self.path}: {err}; check that its directory is writable"
            ) from err
        self._depth = int(depth)
        with self._lock:
            self._enforce_bounds(self._clock())

    @staticmethod
    def _take_lock(lock_path: Path) -> IO[bytes]:
        handle = open(lock_path, "wb")  # noqa: SIM115  (held open for the outbox's lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputError(
                f"the MQTT outbox {lock_path.with_suffix('')} is in use by another edgepipe process; "
                "give each pipeline its own outbox path"
            ) from None
        return handle

    @property
    def depth(self) -> int:
        """Messages waiting for an acknowledgement."""
        return self._depth

    def put(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, replace_key: str | None = None
    ) -> int:
        """Store a message and return its id. With `replace_key`, an older row with the same key is
        replaced (retained totals: only the newest matters)."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if replace_key is not None:
                    replaced = self._db.execute(
                        "DELETE FROM outbox WHERE replace_key = ?", (replace_key,)
                    ).rowcount
                    self._depth -= replaced
                cursor = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created, replace_key) VALUES (?, ?, ?, ?, ?, ?)",
                    (topic, payload, qos, int(retain), now, replace_key),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth += 1
            self._enforce_bounds(now)
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def pending(self, after_id: int = 0, limit: int = 100) -> list[Message]:
        """Up to `limit` messages with id > `after_id`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Message(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), bool(r[4])) for r in rows]

    def ack(self, message_id: int) -> None:
        """The broker has the message: forget it (a row already dropped or replaced is fine)."""
        with self._lock:
            self._depth -= self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lock_file.close()

    def _enforce_bounds(self, now: float) -> None:
        """Drop the oldest rows beyond max_messages or older than max_age_s. Caller holds the lock."""
        dropped = 0
        if now >= self._next_age_check:
            self._next_age_check = now + _AGE_CHECK_INTERVAL_S
            cutoff = now - self.max_age_s
            oldest = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
            if oldest is not None and oldest[0] < cutoff:  # cheap test first: a full scan only when needed
                dropped += self._db.execute("DELETE FROM outbox WHERE created < ?", (cutoff,)).rowcount
        excess = self._depth - dropped - self.max_messages
        if excess > 0:
            dropped += self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
            ).rowcount
        if dropped:
            self._depth -= dropped
            self.dropped += dropped
            self._unreported += dropped
        # One line per interval, not one per event, while a long outage keeps the outbox full.
        if self._unreported and now >= self._next_warning:
            self._next_warning = now + _WARNING_INTERVAL_S
            log.warning(
                "MQTT outbox %s: dropped the %d oldest unsent messages to stay within "
                "max_messages=%d and max_age_s=%g (%d dropped since start)",
                self.path,
                self._unreported,
                self.max_messages,
                self.max_age_s,
                self.dropped,
            )
            self._unreported = 0
