"""Durable queue of messages the broker has not acknowledged yet: SQLite in WAL mode (stdlib).

A row is written before anything is sent and deleted only on the broker's PUBACK, so a broker
outage or a killed process loses nothing: the next connection sends the backlog oldest first.
WAL with `synchronous=NORMAL` survives a crash or SIGKILL of the process; a power cut may lose
the last commits (FULL would fsync on every event, on the frame loop). The WAL is kept small:
one connection (so checkpoints are never blocked by a reader) and `journal_size_limit`.

Nothing is lost silently, whatever the disk does:
- a full disk (or any failed write): new messages wait, in order, in a bounded memory queue and go
  into the database as soon as a write succeeds again; one ERROR per episode; `problem` says
  "degraded" with the reason meanwhile; what overflows the memory queue is counted in `lost`;
- a damaged file (garbage inside, a broken header, a truncated file), at open or later: it is moved
  aside as `<path>.corrupt-<UTC time>`, the rows that can still be read go into a fresh database,
  and one ERROR says how many were recovered; `generation` changes so a sender starts over;
- bounds: at most `max_messages` rows and none older than `max_age_s`; when a bound is hit the
  OLDEST rows are dropped (the newest events are the most useful ones to an operator after a long
  outage), a WARNING names the count and `lost` keeps the total.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgepipe.config import OutboxConfig
from edgepipe.errors import OutputError
from edgepipe.paths import lock_beside

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
_COLUMNS = "topic, payload, qos, retain, created, replace_key"

# Checking the age bound costs a query; once a second is plenty for a bound measured in days.
_AGE_CHECK_INTERVAL_S = 1.0
_WARNING_INTERVAL_S = 60.0
_RETRY_WRITE_S = 1.0  # while writes fail, how often a put tries the database again
# A WAL that is not checkpointed grows until the disk is full, and then no checkpoint can grow the
# database to empty it: checkpoint every 128 KiB (32 pages of 4 KiB, a few ms every few hundred
# events) and truncate the file after each, so the WAL stays small even on a small disk.
_WAL_LIMIT_BYTES = 128 << 10
_WAL_CHECKPOINT_PAGES = 32
_FLUSH_BATCH = 200  # held messages stored per transaction when writes work again
_SALVAGE_PROBE_LIMIT = 200_000  # ids probed one by one past a damaged page when salvaging
# messages held in memory while the disk refuses writes (outputs.mqtt.outbox.max_memory_messages)
MEMORY_LIMIT = OutboxConfig.model_fields["max_memory_messages"].default
# SQLite's primary result codes (sqlite.org/rescode.html; the sqlite3 module names them from 3.11):
# "cannot write now" (I/O error 10, read-only 8, full 13, cannot open 14) vs "the file is damaged"
# (corrupt 11, not a database 26). Python 3.10 gives no code: the messages say the same.
_WRITE_ERRORS = {8: "readonly", 10: "disk i/o error", 13: "disk is full", 14: "unable to open"}
_DAMAGE_ERRORS = {11: "malformed", 26: "not a database"}


@dataclass(frozen=True, slots=True)
class Message:
    """One queued message; `id` grows with insertion order."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


Row = tuple[str, bytes, int, int, float, str | None]  # topic, payload, qos, retain, created, replace_key


def check_outbox_path(path: Path) -> None:
    """OutputError unless an outbox can live at `path`: a regular file (or none yet) that can be
    read and written, in a folder that exists or can be created and written (the WAL goes beside)."""
    try:
        _check_outbox_path(path)
    except OSError as error:  # a name too long, a loop of links
        raise OutputError(f"the MQTT outbox {path}: {error.strerror}") from None


def _check_outbox_path(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise OutputError(
            f"the MQTT outbox {path} is not a file (a folder?): set outputs.mqtt.outbox.path to a file"
        )
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"the MQTT outbox folder {folder} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"the MQTT outbox folder {existing} is not writable by this user: fix its permissions"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise OutputError(
            f"the MQTT outbox {path} is not readable and writable by this user: fix its permissions"
        )


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
        memory_limit: int = MEMORY_LIMIT,
        clock: Callable[[], float] = time.time,
    ):
        if max_messages < 1 or max_age_s <= 0 or memory_limit < 1:
            raise ValueError(
                f"outbox bounds must be positive: max_messages={max_messages}, max_age_s={max_age_s}, "
                f"memory_limit={memory_limit}"
            )
        self.path = Path(path)
        self._clock = clock  # wall clock: rows keep their creation time across restarts
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.dropped = 0  # dropped by the bounds
        self.overflowed = 0  # refused while the memory queue was full (disk full for long)
        self.unrecovered = 0  # rows of a damaged file that could not be read back
        self.recoveries = 0
        self.generation = 0  # bumped when the database is replaced: ids start over
        self._lock = threading.RLock()
        self._memory: deque[Row] = deque(maxlen=None)
        self._memory_limit = memory_limit
        self._undeleted: set[int] = set()  # acked rows whose DELETE failed (disk full): retried later
        self._write_problem: str | None = None
        self._next_write_try = 0.0
        self._next_age_check = 0.0
        self._next_warning = 0.0
        self._unreported = 0
        check_outbox_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = lock_beside(
                self.path,
                f"the MQTT outbox {self.path} is in use by another edgepipe process; "
                "give each pipeline its own outbox path",
            )
        except OSError as err:
            raise OutputError(f"cannot open the MQTT outbox {self.path}: {err.strerror}") from err
        try:
            self._db = self._connect_or_recover()
        except sqlite3.Error as err:  # e.g. the disk is full while a damaged file is replaced
            self._lock_file.close()
            raise OutputError(f"cannot open the MQTT outbox {self.path}: {err}") from err
        with self._lock:
            self._enforce_bounds(self._clock())

    # ------------------------------------------------------------ opening, damage
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            db.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            db.execute(_SCHEMA)
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            (self._rows,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _connect_or_recover(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and _code(err) in _WRITE_ERRORS:
                raise OutputError(f"cannot open the MQTT outbox {self.path}: {err}") from err
            return self._replace_damaged(str(err))

    def _replace_damaged(self, reason: str) -> sqlite3.Connection:
        """Move the damaged file aside, start a fresh one with every row that can still be read."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        number = 1
        while aside.exists():  # damaged twice in one second: keep both for whoever looks
            number += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{number}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(Path(f"{aside}{suffix}"))
        rows, unreadable = _salvage(aside)
        self.generation += 1
        self.recoveries += 1
        self.unrecovered += unreadable or 0
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        self._rows = len(rows)
        lost = "none" if unreadable == 0 else ("an unknown number" if unreadable is None else str(unreadable))
        log.error(
            "MQTT outbox %s was damaged (%s): moved it aside to %s and recovered %d messages into a fresh "
            "one (%s could not be read%s)",
            self.path,
            reason,
            aside.name,
            len(rows),
            lost,
            "" if unreadable == 0 else f"; `sqlite3 {aside} .recover` may read more",
        )
        return db

    def _on_damage(self, err: sqlite3.DatabaseError) -> None:
        """A query met a damaged file: replace it now, under the lock (callers retry or skip)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._undeleted.clear()  # their ids belong to the old file
        self._db = self._replace_damaged(str(err))

    # ------------------------------------------------------------ what callers read
    @property
    def depth(self) -> int:
        """Messages waiting for an acknowledgement (in the file or, while writes fail, in memory)."""
        return int(self._rows) - len(self._undeleted) + len(self._memory)

    @property
    def held_in_memory(self) -> int:
        return len(self._memory)

    @property
    def lost(self) -> int:
        """Accepted messages that will never be sent: dropped by the bounds, refused by a full
        memory queue, unreadable in a damaged file. (A retained value that a newer one replaced is
        not lost: only the newest ever matters.)"""
        return self.dropped + self.overflowed + self.unrecovered

    @property
    def problem(self) -> str | None:
        """What is wrong right now (the outbox is degraded), or None."""
        if self._write_problem is None:
            return None
        return f"cannot write the outbox ({self._write_problem}): {len(self._memory)} messages held in memory"

    # ------------------------------------------------------------ frame-loop side
    def put(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, replace_key: str | None = None
    ) -> int | None:
        """Store a message; its id, or None while writes fail and it waits in memory. With
        `replace_key`, an older row with the same key is replaced (retained totals: only the
        newest matters)."""
        now = self._clock()
        row: Row = (topic, payload, qos, int(retain), now, replace_key)
        with self._lock:
            if self._memory and not self._flush_memory(now):
                self._hold(row, replace_key)
                return None
            for attempt in range(2):  # a damaged file is replaced once, then the row goes in again
                try:
                    row_id = self._insert_many([row])
                except sqlite3.DatabaseError as err:
                    if attempt == 1 or self._write_failed(err, now):
                        self._hold(row, replace_key)
                        return None
                    self._on_damage(err)
                    continue
                self._enforce_bounds(now)
                return row_id
            return None  # not reached: the second attempt returns

    def _insert_many(self, rows: list[Row]) -> int:
        """Rows in one transaction, each replacing the row of its replace_key; the last row's id.
        Caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                if row[5] is not None:
                    self._rows -= self._db.execute(
                        "DELETE FROM outbox WHERE replace_key = ?", (row[5],)
                    ).rowcount
                cursor = self._db.execute(f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", row)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                self._db.execute("ROLLBACK")
            (self._rows,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            raise
        self._rows += len(rows)
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def _hold(self, row: Row, replace_key: str | None) -> None:
        """Keep a message in memory, in order, until the disk takes writes again. Full: the oldest
        event goes (as the bounds do: the newest are the most useful), counted as lost; a retained
        value (a replace_key's) is never the one dropped, and a newer one replaces it."""
        if replace_key is not None:  # only the newest retained value matters, in memory too
            self._memory = deque(r for r in self._memory if r[5] != replace_key)
        if len(self._memory) >= self._memory_limit:
            oldest_event = next((i for i, r in enumerate(self._memory) if r[5] is None), None)
            if oldest_event is not None:
                del self._memory[oldest_event]
                self.overflowed += 1
        self._memory.append(row)

    def _write_failed(self, err: sqlite3.DatabaseError, now: float) -> bool:
        """True (and the episode noted, one ERROR) if `err` means "cannot write now"; False if the
        file is damaged."""
        if _code(err) in _DAMAGE_ERRORS:
            return False
        if self._write_problem is None:
            log.error(
                "cannot write the MQTT outbox %s (%s): new messages wait in memory (up to %d) until it "
                "can be written again",
                self.path,
                err,
                self._memory_limit,
            )
        self._write_problem = str(err)
        self._next_write_try = now + _RETRY_WRITE_S
        return True

    def _flush_memory(self, now: float) -> bool:
        """Move the messages held in memory into the database; True when none is left."""
        if now < self._next_write_try:
            return False
        # A full disk is often full of WAL: a checkpoint moves it into the database and truncates it.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            while self._memory:
                batch = [self._memory[i] for i in range(min(_FLUSH_BATCH, len(self._memory)))]
                self._insert_many(batch)
                for _ in batch:
                    self._memory.popleft()
        except sqlite3.DatabaseError as err:
            if not self._write_failed(err, now):
                self._on_damage(err)
            return False
        log.warning(
            "the MQTT outbox %s can be written again: the messages held in memory are stored (%d lost "
            "while it could not)",
            self.path,
            self.overflowed,
        )
        self._write_problem = None
        return True

    # ------------------------------------------------------------ sender side
    def pending(self, after_id: int = 0, limit: int = 100) -> list[Message]:
        """Up to `limit` stored messages with id > `after_id`, oldest first (held ones come once
        they are stored)."""
        with self._lock:
            if self._memory:
                self._flush_memory(self._clock())
            try:
                rows = self._db.execute(
                    "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.DatabaseError as err:
                if _code(err) in _WRITE_ERRORS:
                    return []
                self._on_damage(err)  # the sender sees `generation` change and starts over
                return []
        return [
            Message(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), bool(r[4]))
            for r in rows
            if r[0] not in self._undeleted
        ]

    def ack(self, message_id: int, generation: int | None = None) -> None:
        """The broker has the message: forget it (a row already dropped or replaced is fine). An
        ack for rows of an earlier `generation` (before a damaged file was replaced) is ignored."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._undeleted.add(message_id)
            try:
                for row_id in list(self._undeleted):
                    self._rows -= self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,)).rowcount
                    self._undeleted.discard(row_id)
            except sqlite3.DatabaseError as err:
                if _code(err) not in _WRITE_ERRORS:
                    self._on_damage(err)
                # a full disk: the rows stay, already delivered; they are deleted with the next ack

    def close(self) -> None:
        with self._lock:
            if self._memory:
                self._next_write_try = 0.0
                self._flush_memory(self._clock())
            if self._memory:
                events = sum(1 for r in self._memory if r[5] is None)
                self.overflowed += events
                log.error(
                    "MQTT outbox %s: %d messages held in memory (%d events) could not be stored before the "
                    "end: lost",
                    self.path,
                    len(self._memory),
                    events,
                )
                self._memory.clear()
            with contextlib.suppress(sqlite3.Error):  # else the WAL stays; the next open replays it
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._lock_file.close()

    def _enforce_bounds(self, now: float) -> None:
        """Drop the oldest rows beyond max_messages or older than max_age_s. Caller holds the lock."""
        dropped = 0
        try:
            if now >= self._next_age_check:
                self._next_age_check = now + _AGE_CHECK_INTERVAL_S
                cutoff = now - self.max_age_s
                oldest = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
                if (
                    oldest is not None and oldest[0] < cutoff
                ):  # cheap test first: a full scan only when needed
                    dropped += self._db.execute("DELETE FROM outbox WHERE created < ?", (cutoff,)).rowcount
            excess = self._rows - dropped - self.max_messages
            if excess > 0:
                dropped += self._db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                ).rowcount
        except sqlite3.DatabaseError:
            pass  # a failed write: the bound is enforced with the next put that succeeds
        if dropped:
            self._rows -= dropped
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


def _code(err: sqlite3.Error) -> int | None:
    """The primary SQLite result code of an error (extended codes carry it in the low byte), from
    the error or, where Python does not give it, from its message."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF
    text = str(err).lower()
    return next((c for c, words in (*_WRITE_ERRORS.items(), *_DAMAGE_ERRORS.items()) if words in text), None)


def _salvage(path: Path) -> tuple[list[Row], int | None]:
    """The rows of a damaged outbox that can still be read, oldest first, and how many could not
    be (None: unknown, the file's structure is gone). The copy set aside is opened as it is, WAL
    included (a read may replay it into the copy: its content stays the same)."""
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return [], None
    rows: list[Row] = []
    try:
        last = 0
        while True:
            try:
                batch = db.execute(
                    f"SELECT id, {_COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT 500", (last,)
                ).fetchall()
            except sqlite3.DatabaseError:
                break  # a damaged page: go on one id at a time
            if not batch:
                return rows, 0
            rows += [tuple(r[1:]) for r in batch]
            last = int(batch[-1][0])
        highest = _highest_id(db)
        if highest is None:
            return rows, None
        found, unreadable = _probe(db, last, min(highest, last + _SALVAGE_PROBE_LIMIT))
        return rows + found, unreadable
    finally:
        db.close()


def _highest_id(db: sqlite3.Connection) -> int | None:
    """The largest id the outbox ever gave (AUTOINCREMENT keeps it in sqlite_sequence), if readable."""
    for query in ("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'", "SELECT MAX(id) FROM outbox"):
        try:
            found = db.execute(query).fetchone()
        except sqlite3.DatabaseError:
            continue
        if found is not None and found[0] is not None:
            return int(found[0])
    return None


def _probe(db: sqlite3.Connection, after: int, highest: int) -> tuple[list[Row], int]:
    """Rows with ids after..highest read one at a time; and how many ids could not be read."""
    rows: list[Row] = []
    unreadable = 0
    for row_id in range(after + 1, highest + 1):
        try:
            found = db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            unreadable += 1
            continue
        if found is not None:
            rows.append(tuple(found))
    return rows, unreadable
