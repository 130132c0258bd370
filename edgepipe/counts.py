"""Counts that last: the rules' totals saved to a file and taken up again at start, and their reset
schedule (`counts:` in a pipeline file).

A door counter read in Home Assistant as "people in today" must neither drop back at a restart nor
run on past midnight. `LastingCounts` does both for one pipeline's `Rules`:
- `restore()` at start takes up the totals of the last run (a restart, a crash, an update); if the
  reset period they belong to ended meanwhile, they are reset at once instead.
- the loop calls `save()` after every change, before the new totals go to the outputs, so the
  file is never behind what was published: retained totals never go back.
- `reset_if_due()` once per loop turn: at each boundary of `counts.reset` (daily at a local time,
  hourly at a minute) the totals go back to zero and one `counts_reset` event per rule says what
  they were.

The file is JSON, replaced atomically (write a temporary file, fsync, rename), so a kill or a power
cut leaves the old totals or the new ones, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as time_of_day
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgepipe.config import PipelineConfig
from edgepipe.errors import FieldError, OutputError
from edgepipe.paths import lock_beside, state_directory
from edgepipe.rules import Rules
from edgepipe.types import Counts, Event

if TYPE_CHECKING:
    from edgepipe.publish.mqtt import MqttSettings

log = logging.getLogger(__name__)

STORE_SCHEMA = 1
ResetEvery = Literal["daily", "hourly"]


# ---------------------------------------------------------------- time zones and the schedule
def time_zone(name: str | None) -> tzinfo:
    """The IANA zone `name` (e.g. Europe/Berlin), or the machine's when None: $TZ if it names a
    zone, else /etc/localtime, else UTC. ZoneInfoNotFoundError for a name that is no zone."""
    if name is not None:
        return ZoneInfo(name)
    tz_name = os.environ.get("TZ", "").removeprefix(":")
    if tz_name:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(tz_name)
    with contextlib.suppress(OSError, ValueError), open("/etc/localtime", "rb") as file:
        return ZoneInfo.from_file(file, key="localtime")
    return timezone.utc


class ResetSchedule:
    """When the totals go back to zero: every day at `at` (local time in `zone`), or every hour at
    `at`'s minute. A day is a calendar day, so it is 23 or 25 hours long when the clocks change; a
    reset time that does not exist that day (inside the spring gap) falls at the same offset after
    the gap."""

    def __init__(self, every: ResetEvery, at: time_of_day, zone: tzinfo) -> None:
        self.every = every
        self.at = at
        self.zone = zone

    def period_start(self, now_s: float) -> float:
        """The last reset instant at or before `now_s` (seconds since the epoch)."""
        return max(b for b in self._boundaries(now_s) if b <= now_s)

    def next_after(self, now_s: float) -> float:
        """The first reset instant after `now_s`."""
        return min(b for b in self._boundaries(now_s) if b > now_s)

    def _boundaries(self, now_s: float) -> list[float]:
        """Reset instants around `now_s`: at least one before it and one after."""
        local = datetime.fromtimestamp(now_s, self.zone)
        if self.every == "daily":
            days = (local.date() + timedelta(days=n) for n in (-1, 0, 1))
            return [_instant(day, self.at, self.zone) for day in days]
        # hourly: the minute of the local hour; offsets change by whole hours in all but a few zones
        offset_s = local.utcoffset() or timedelta(0)
        minute_s = self.at.minute * 60
        local_s = now_s + offset_s.total_seconds()
        start = (local_s - minute_s) // 3600 * 3600 + minute_s - offset_s.total_seconds()
        return [start - 3600, start, start + 3600]


def _instant(day: date, at: time_of_day, zone: tzinfo) -> float:
    return datetime.combine(day, at, tzinfo=zone).timestamp()


# ---------------------------------------------------------------- the file
@dataclass(frozen=True, slots=True)
class Stored:
    """What a counts file holds: the totals and when they were saved (seconds since the epoch)."""

    counts: Counts
    saved_s: float


def check_counts_path(path: Path) -> None:
    """OutputError unless a counts file can live at `path` (a file or none yet, in a folder that
    exists or can be made, writable): `edgepipe check` and `run` say so before any frame."""
    if path.exists() and not path.is_file():
        raise OutputError(f"the counts file {path} is not a file (a folder?): set counts.path to a file")
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"the counts folder {folder} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"the counts folder {existing} is not writable by this user: fix its permissions")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise OutputError(
            f"the counts file {path} is not readable and writable by this user: fix its permissions"
        )


class CountsStore:
    """One pipeline's totals in a JSON file, replaced atomically on every save. One process per
    file (a lock beside it), like the outbox. A file that cannot be read as totals is moved aside
    (`<path>.corrupt-<UTC time>`) with an ERROR and counting starts from zero; a save that fails (a
    full disk) is an ERROR once and `problem` says so until a save works again."""

    def __init__(self, path: Path, pipeline: str) -> None:
        check_counts_path(path)
        self.path = path
        self.pipeline = pipeline
        self.problem: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = lock_beside(
                path,
                f"the counts file {path} is in use by another edgepipe process; "
                "give each pipeline its own counts.path",
            )
        except OSError as err:
            raise OutputError(f"cannot open the counts file {path}: {err.strerror}") from err

    def load(self) -> Stored | None:
        """The totals saved last, or None when there are none (or they were unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            self._damaged(f"cannot be read: {err}")
            return None
        try:
            data = json.loads(text)
            counts, saved_s = data["counts"], float(data["saved_s"])
            if data.get("schema") != STORE_SCHEMA or not isinstance(counts, dict):
                raise ValueError(f"not a schema {STORE_SCHEMA} counts file")
            if not all(isinstance(v, dict) for v in counts.values()):
                raise ValueError("counts must map rule names to their totals")
        except (ValueError, KeyError, TypeError) as err:
            self._damaged(f"is not a counts file ({err})")
            return None
        return Stored(counts, saved_s)

    def save(self, counts: Counts, saved_s: float) -> None:
        """Replace the file with these totals; never raises (a failure is logged and kept in `problem`)."""
        data = {
            "schema": STORE_SCHEMA,
            "pipeline": self.pipeline,
            "saved_s": round(saved_s, 3),
            "counts": counts,
        }
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump(data, file, separators=(",", ":"), sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as err:
            problem = (
                f"cannot save the counts to {self.path} ({err.strerror or err}): a restart would lose them"
            )
            if problem != self.problem:
                log.error("%s: %s", self.pipeline, problem)
            self.problem = problem
            with contextlib.suppress(OSError):
                temporary.unlink()
            return
        if self.problem is not None:
            log.warning("%s: the counts are saved to %s again", self.pipeline, self.path)
        self.problem = None

    def close(self) -> None:
        self._lock.close()

    def _damaged(self, why: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        with contextlib.suppress(OSError):
            self.path.replace(aside)
        log.error(
            "%s: the counts file %s %s: moved it aside to %s; counting starts from zero",
            self.pipeline,
            self.path,
            why,
            aside.name,
        )


# ---------------------------------------------------------------- the rules' totals, lasting
class LastingCounts:
    """The totals of one pipeline's rules across runs and reset periods (see the module docstring).
    Without a store nothing lasts past the run; without a schedule nothing is reset."""

    def __init__(
        self,
        pipeline: str,
        rules: Rules,
        *,
        store: CountsStore | None = None,
        schedule: ResetSchedule | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.rules = rules
        self.store = store
        self.schedule = schedule
        self._clock = clock  # wall clock (UTC seconds): resets follow the calendar, not the frames
        self._next_reset_s = float("inf")

    def restore(self) -> list[Event]:
        """At start: take up the saved totals; `counts_reset` events if their period ended since."""
        now_s = self._clock()
        stored = None
        if self.store is not None:
            stored = self.store.load()
            if stored is not None:
                self.rules.restore_counts(stored.counts)
                log.info("%s: counts of the last run taken up from %s", self.pipeline, self.store.path)
        if self.schedule is None:
            return []
        period_start_s = self.schedule.period_start(now_s)
        if stored is not None and stored.saved_s < period_start_s:
            return self._reset(period_start_s)  # the period of the saved totals ended while we were away
        self._next_reset_s = self.schedule.next_after(now_s)
        return []

    def reset_if_due(self) -> list[Event]:
        """Once per loop turn: `counts_reset` events (and totals at zero) when a reset time has come."""
        if self._clock() < self._next_reset_s:
            return []
        assert self.schedule is not None  # the next reset is infinitely far without one
        return self._reset(self.schedule.period_start(self._clock()))

    def save(self) -> None:
        """After the totals changed, before they are published: the file is never behind the outputs."""
        if self.store is not None:
            self.store.save(self.rules.counts(), self._clock())

    def problems(self) -> list[str]:
        return [] if self.store is None or self.store.problem is None else [self.store.problem]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def _reset(self, period_start_s: float) -> list[Event]:
        """Zero the totals; one event per rule with what they were, stamped with when the new period began."""
        before = self.rules.counts()
        self.rules.reset_counts()
        assert self.schedule is not None
        self._next_reset_s = self.schedule.next_after(max(self._clock(), period_start_s))
        log.info("%s: counts reset (%s)", self.pipeline, self.schedule.every)
        return [
            Event("counts_reset", self.pipeline, rule, period_start_s, counts=counts)
            for rule, counts in before.items()
        ]


# ---------------------------------------------------------------- from a pipeline's config
def counts_path_of(cfg: PipelineConfig, mqtt: MqttSettings | None) -> Path | None:
    """Where the totals of `cfg` last (`counts.persist`), checked; None when they do not. By default
    they last with an MQTT output (beside its outbox) and not without one: a file demo counts from
    zero each run. A path that cannot be used is a FieldError on `path`."""
    persist = cfg.counts.persist if cfg.counts.persist is not None else mqtt is not None
    if not persist:
        return None
    folder = mqtt.outbox_path.parent if mqtt is not None else state_directory()
    path = cfg.counts.path or folder / f"{cfg.name}-counts.json"
    try:
        check_counts_path(path)
    except OutputError as error:
        raise FieldError(("path",), str(error)) from None
    return path


def lasting_counts(cfg: PipelineConfig, rules: Rules, path: Path | None) -> LastingCounts:
    """The rules' totals with the file (from `counts_path_of`) and the reset schedule of `cfg.counts`."""
    settings = cfg.counts
    schedule = (
        None
        if settings.reset == "never"
        else ResetSchedule(settings.reset, settings.at_time(), time_zone(settings.time_zone))
    )
    store = None if path is None else CountsStore(path, cfg.name)
    return LastingCounts(cfg.name, rules, store=store, schedule=schedule)
