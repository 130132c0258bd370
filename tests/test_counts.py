"""Counts that last (edgepipe/counts.py): the reset schedule on a fake clock (time zones, daylight
saving), the totals file (atomic, damaged, locked, a full disk) and LastingCounts, alone and driven by
the real frame loop. No broker: the end-to-end runs are in tests/test_pipeline_mqtt.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edgepipe.config import PipelineConfig, load_pipeline
from edgepipe.counts import CountsStore, LastingCounts, ResetSchedule, counts_path_of, time_zone
from edgepipe.errors import OutputError
from edgepipe.pipeline import Pipeline
from edgepipe.publish import CallbackPublisher, FanoutPublisher
from edgepipe.publish.mqtt import MqttSettings, mqtt_settings
from edgepipe.rules import LineCrossing, Rules
from edgepipe.sources import SourceStats
from edgepipe.types import Counts, Detections, Event, Frame, Tracks
from tests.fixtures.mqtt import door_traffic

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: Any = BERLIN) -> float:
    """Seconds since the epoch of a local time written `2026-12-01 23:59:59`."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(seconds: float, zone: Any = BERLIN) -> str:
    return datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


class FakeClock:
    """Wall-clock seconds that a test moves by hand."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


# ---------------------------------------------------------------- the schedule
@pytest.mark.parametrize(
    ("every", "reset_at", "now", "period_start", "next_reset"),
    [
        # daily at midnight, Berlin: an ordinary day, the last second of it, the reset instant itself
        ("daily", "00:00", "2026-12-01 10:00:00", "2026-12-01 00:00:00 CET", "2026-12-02 00:00:00 CET"),
        ("daily", "00:00", "2026-12-01 23:59:59", "2026-12-01 00:00:00 CET", "2026-12-02 00:00:00 CET"),
        ("daily", "00:00", "2026-12-02 00:00:00", "2026-12-02 00:00:00 CET", "2026-12-03 00:00:00 CET"),
        # a later reset time: before it today, the period began yesterday
        ("daily", "06:30", "2026-12-01 06:29:00", "2026-11-30 06:30:00 CET", "2026-12-01 06:30:00 CET"),
        # the clocks go forward on 29 March 2026 (02:00 → 03:00): midnight to midnight is 23 hours
        ("daily", "00:00", "2026-03-29 12:00:00", "2026-03-29 00:00:00 CET", "2026-03-30 00:00:00 CEST"),
        # ... and a reset time inside the gap falls an hour later, at the same offset past it
        ("daily", "02:30", "2026-03-29 12:00:00", "2026-03-29 03:30:00 CEST", "2026-03-30 02:30:00 CEST"),
        # back on 25 October 2026: 25 hours
        ("daily", "00:00", "2026-10-25 12:00:00", "2026-10-25 00:00:00 CEST", "2026-10-26 00:00:00 CET"),
        # hourly at minute 15
        ("hourly", "00:15", "2026-12-01 10:14:59", "2026-12-01 09:15:00 CET", "2026-12-01 10:15:00 CET"),
        ("hourly", "00:15", "2026-12-01 10:15:00", "2026-12-01 10:15:00 CET", "2026-12-01 11:15:00 CET"),
    ],
)
def test_reset_instants_in_berlin(
    every: Any, reset_at: str, now: str, period_start: str, next_reset: str
) -> None:
    hours, minutes = map(int, reset_at.split(":"))
    schedule = ResetSchedule(every, time(hours, minutes), BERLIN)
    now_s = at(now)
    assert local(schedule.period_start(now_s)) == period_start
    assert local(schedule.next_after(now_s)) == next_reset


def test_hourly_follows_the_local_minute_in_a_half_hour_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: minute 0 local is minute 30 UTC
    schedule = ResetSchedule("hourly", time(0, 0), kolkata)
    now_s = at("2026-12-01 10:20:00", kolkata)
    assert local(schedule.next_after(now_s), kolkata) == "2026-12-01 11:00:00 IST"
    assert local(schedule.next_after(now_s), timezone.utc) == "2026-12-01 05:30:00 UTC"


def test_the_machine_zone_comes_from_tz_then_etc_localtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert time_zone(None) == ZoneInfo("Asia/Tokyo")
    assert time_zone("Europe/Berlin") == BERLIN  # a configured zone wins
    monkeypatch.setenv("TZ", "not/a-zone")
    zone = time_zone(None)  # /etc/localtime (or UTC): never an error for a strange TZ
    assert datetime(2026, 1, 1, tzinfo=zone).utcoffset() is not None


# ---------------------------------------------------------------- the file
def test_the_store_keeps_the_totals_and_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "state" / "door-counts.json"
    store = CountsStore(path, "door")
    counts: Counts = {"entry": {"in": 3, "out": 1, "by_label": {"person": {"in": 3, "out": 1}}}}
    store.save(counts, 1_795_000_000.25)
    assert json.loads(path.read_text()) == {
        "schema": 1,
        "pipeline": "door",
        "saved_s": 1_795_000_000.25,
        "counts": counts,
    }
    assert sorted(p.name for p in path.parent.iterdir()) == ["door-counts.json", "door-counts.json.lock"]
    loaded = store.load()
    assert loaded is not None and (loaded.counts, loaded.saved_s) == (counts, 1_795_000_000.25)
    store.close()


def test_one_process_per_counts_file(tmp_path: Path) -> None:
    store = CountsStore(tmp_path / "c.json", "door")
    with pytest.raises(OutputError, match=r"c.json is in use by another edgepipe process"):
        CountsStore(tmp_path / "c.json", "door")
    store.close()
    CountsStore(tmp_path / "c.json", "door").close()  # free again


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"schema": 1, "counts": {"entry": {"in": 3', "is not a counts file"),  # cut short
        ('{"schema": 7, "saved_s": 1, "counts": {}}', "is not a counts file (not a schema 1 counts file)"),
        (
            '{"schema": 1, "saved_s": 1, "counts": {"entry": 3}}',
            "is not a counts file (counts must map rule names",
        ),
        ("\xff\xfe", "cannot be read"),
    ],
)
def test_a_damaged_file_is_moved_aside_with_an_error_and_counting_starts_from_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, why: str
) -> None:
    path = tmp_path / "door-counts.json"
    path.write_bytes(content.encode("latin-1"))
    store = CountsStore(path, "door")
    with caplog.at_level(logging.ERROR, logger="edgepipe.counts"):
        assert store.load() is None
    assert not path.exists()
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].startswith("door-counts.json.corrupt-")
    assert f"the counts file {path} {why}" in caplog.text
    assert "counting starts from zero" in caplog.text
    store.close()


def test_a_full_disk_is_one_error_and_a_problem_until_a_save_works_again(
    small_disk: Callable[[int], Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = small_disk(64 * 1024)
    store = CountsStore(disk / "door-counts.json", "door")
    store.save({"entry": {"in": 1, "out": 0}}, 1.0)
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file, pytest.raises(OSError):  # fill the disk to the last page
        while True:
            file.write(b"x" * 4096)
    with caplog.at_level(logging.ERROR, logger="edgepipe.counts"):
        for n in range(2, 5):
            store.save({"entry": {"in": n, "out": 0}}, float(n))  # never raises
    assert store.problem is not None and "cannot save the counts" in store.problem
    assert sum("cannot save the counts" in r.getMessage() for r in caplog.records) == 1
    loaded = store.load()
    assert loaded is not None and loaded.counts == {"entry": {"in": 1, "out": 0}}  # the old file, whole
    assert not (disk / ".door-counts.json.tmp").exists()
    filler.unlink()
    store.save({"entry": {"in": 5, "out": 0}}, 5.0)
    assert store.problem is None
    loaded = store.load()
    assert loaded is not None and loaded.counts == {"entry": {"in": 5, "out": 0}}
    store.close()


# ---------------------------------------------------------------- LastingCounts
DOOR_FRAME = np.zeros((240, 320, 3), np.uint8)  # a frame the door line lies inside


def door(pipeline: str = "door") -> Rules:
    return Rules(
        [LineCrossing("entry", (0, 100), (200, 100), pipeline=pipeline, labels=["person", "bicycle"])]
    )


def crossing_frames(rules: Rules, frames: range) -> list[Event]:
    """Feed the synthetic door traffic (one "in" per track, every 5 frames) to `rules`."""
    events: list[Event] = []
    for index in frames:
        events += rules.update(door_traffic(index), Frame(np.zeros((1, 1, 3), np.uint8), index, 0.0, None))
    return events


def test_restore_takes_up_the_last_runs_totals(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-12-01 10:00:00"))
    first = door()
    assert len(crossing_frames(first, range(40))) == 7  # at frames 7, 12, ..., 37
    store = CountsStore(tmp_path / "c.json", "door")
    LastingCounts("door", first, store=store, clock=clock).save()
    store.close()

    second = door()
    store = CountsStore(tmp_path / "c.json", "door")
    lasting = LastingCounts("door", second, store=store, clock=clock)
    assert lasting.restore() == []
    assert second.counts() == {"entry": {"in": 7, "out": 0, "by_label": {"person": {"in": 7, "out": 0}}}}
    assert len(crossing_frames(second, range(20))) == 3  # a new run's tracks: counting goes on from 7
    assert second.counts()["entry"]["in"] == 10
    store.close()


def test_a_daily_reset_fires_at_the_configured_time_on_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-12-01 23:59:00"))
    rules = door()
    store = CountsStore(tmp_path / "c.json", "door")
    lasting = LastingCounts(
        "door", rules, store=store, schedule=ResetSchedule("daily", time(0, 0), BERLIN), clock=clock
    )
    assert lasting.restore() == []
    crossing_frames(rules, range(40))
    lasting.save()
    clock.now_s = at("2026-12-01 23:59:59.999")
    assert lasting.reset_if_due() == []
    assert rules.counts()["entry"]["in"] == 7
    clock.now_s = at("2026-12-02 00:00:00.400")  # the loop's next turn after midnight
    (reset,) = lasting.reset_if_due()
    assert (reset.type, reset.rule, reset.ts) == ("counts_reset", "entry", at("2026-12-02 00:00:00"))
    assert reset.counts == {"in": 7, "out": 0, "by_label": {"person": {"in": 7, "out": 0}}}
    # labels seen stay, at zero: a per-label count goes back too
    assert rules.counts() == {"entry": {"in": 0, "out": 0, "by_label": {"person": {"in": 0, "out": 0}}}}
    assert lasting.reset_if_due() == []  # once per period
    clock.now_s = at("2026-12-02 23:59:59")
    assert lasting.reset_if_due() == []
    clock.now_s = at("2026-12-03 00:00:00")
    assert [e.type for e in lasting.reset_if_due()] == ["counts_reset"]
    store.close()


def test_a_period_that_ended_while_the_pipeline_was_down_is_reset_at_start(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-12-01 18:00:00"))
    schedule = ResetSchedule("daily", time(0, 0), BERLIN)
    rules = door()
    crossing_frames(rules, range(40))
    store = CountsStore(tmp_path / "c.json", "door")
    LastingCounts("door", rules, store=store, schedule=schedule, clock=clock).save()
    store.close()

    clock.now_s = at("2026-12-02 08:00:00")  # started again the next morning
    rules = door()
    store = CountsStore(tmp_path / "c.json", "door")
    lasting = LastingCounts("door", rules, store=store, schedule=schedule, clock=clock)
    (reset,) = lasting.restore()
    assert reset.ts == at("2026-12-02 00:00:00")  # when the new period began
    assert reset.counts is not None and reset.counts["in"] == 7  # yesterday's totals
    assert rules.counts()["entry"]["in"] == 0
    store.close()


# ---------------------------------------------------------------- driven by the frame loop
class TrafficSource:
    """A file-like source of blank frames, one every 0.1 s of media time, taken `wall_step_s` apart
    on the wall clock from `start_s` on; `clock()` is the capture time of the last frame taken."""

    name = "traffic"
    is_live = False
    fps = 10.0

    def __init__(self, frames: int, start_s: float, wall_step_s: float) -> None:
        self.frame_count = frames
        self.start_s = start_s
        self.wall_step_s = wall_step_s
        self.now_s = start_s

    def clock(self) -> float:
        return self.now_s

    def __enter__(self) -> TrafficSource:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def frames(self, idle_s: float = 1.0) -> Iterator[Frame | None]:
        for index in range(self.frame_count):
            self.now_s = self.start_s + index * self.wall_step_s
            yield Frame(DOOR_FRAME, index, self.now_s, index / 10)

    def frame_waiting(self) -> bool:
        return True

    def frame_size(self) -> tuple[int, int] | None:
        return None

    def stats(self) -> SourceStats:
        return SourceStats("connected", 0, 0, 0)

    def stop(self) -> None:
        pass


class PassThroughDetector:
    labels = ("person", "bicycle")
    threshold = 0.5

    def prepare(self, frame_hw: tuple[int, int]) -> None:
        pass

    def stream(self, frames: Any, *, frame_waiting: Any = None) -> Iterator[tuple[Frame, Detections] | None]:
        for frame in frames:
            yield None if frame is None else (frame, Detections.empty())


class DoorTracker:
    """The synthetic door traffic as the tracker's output: one "in" every 5 frames."""

    def update(
        self, detections: Detections, frame_index: int | None = None, time_s: float | None = None
    ) -> Tracks:
        assert frame_index is not None
        tracks: Tracks = door_traffic(frame_index)
        return tracks

    def __len__(self) -> int:
        return 0


def test_the_frame_loop_publishes_the_reset_as_events_and_fresh_totals(tmp_path: Path) -> None:
    """100 frames taken 10 s apart from 23:50 on: midnight is frame 60, between the 11th crossing (frame
    57 or 58) and the 12th; the outputs see the reset event, then totals from zero."""
    source = TrafficSource(100, at("2026-12-01 23:50:00"), wall_step_s=10.0)
    events: list[Event] = []
    totals_seen: list[int] = []
    rules = door()
    store = CountsStore(tmp_path / "c.json", "door")
    lasting = LastingCounts(
        "door", rules, store=store, schedule=ResetSchedule("daily", time(0, 0), BERLIN), clock=source.clock
    )

    def on_counts(counts: Counts) -> None:
        entry_in = counts["entry"]["in"]
        assert isinstance(entry_in, int)
        totals_seen.append(entry_in)

    publisher = CallbackPublisher(events.append, on_counts)
    pipeline = Pipeline(
        "door",
        source,
        PassThroughDetector(),  # type: ignore[arg-type]
        DoorTracker(),
        rules,
        FanoutPublisher([publisher]),
        counts=lasting,
    )
    results = list(pipeline.results())
    assert len(results) == 100
    resets = [e for e in events if e.type == "counts_reset"]
    assert len(resets) == 1 and resets[0].ts == at("2026-12-02 00:00:00")
    before = [e for e in events[: events.index(resets[0])] if e.type == "line_cross"]
    after = [e for e in events[events.index(resets[0]) :] if e.type == "line_cross"]
    assert resets[0].counts is not None and resets[0].counts["in"] == len(before) == 11
    assert len(after) == 8
    assert min(e.frame or 0 for e in after) > 60 > max(e.frame or 0 for e in before)
    # the totals rose, went to zero at the reset, and rose again from there
    drop = totals_seen.index(0, 1)
    assert totals_seen[:drop] == sorted(totals_seen[:drop]) and totals_seen[drop - 1] == len(before)
    assert totals_seen[drop:] == sorted(totals_seen[drop:]) and totals_seen[-1] == len(after)
    # what a restart would take up: the new day's totals
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["counts"]["entry"]["in"] == len(after)


# ---------------------------------------------------------------- where the totals last, from the config
REPO = Path(__file__).resolve().parent.parent


def with_counts(name: str, tmp_path: Path, **counts: Any) -> tuple[PipelineConfig, MqttSettings | None]:
    """A bundled pipeline with its outbox in tmp_path and `counts` settings; its MqttSettings if it has MQTT."""
    data = load_pipeline(REPO / "pipelines" / f"{name}.yml").model_dump(mode="python")
    data["counts"].update(counts)
    if data["outputs"]["mqtt"] is not None:
        data["outputs"]["mqtt"]["outbox"]["path"] = tmp_path / "box" / f"{name}-outbox.sqlite"
    cfg = PipelineConfig.model_validate(data)
    mqtt = cfg.outputs.mqtt
    return cfg, None if mqtt is None else mqtt_settings(cfg.name, mqtt)


@pytest.mark.parametrize(
    ("name", "counts", "expected"),
    [
        ("door", {}, "box/door-counts.json"),  # with MQTT: beside the outbox
        ("demo", {}, None),  # JSON lines only: the demo counts from zero each run
        ("demo", {"persist": True}, "state/demo-counts.json"),  # in the state directory
        ("door", {"persist": False}, None),
        ("door", {"path": "elsewhere/door.json"}, "elsewhere/door.json"),
    ],
)
def test_where_the_totals_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, counts: dict[str, Any], expected: str | None
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    if "path" in counts:
        counts = {"path": tmp_path / counts["path"]}
    cfg, mqtt = with_counts(name, tmp_path, **counts)
    path = counts_path_of(cfg, mqtt)
    assert path == (None if expected is None else tmp_path / expected)
    assert not (tmp_path / "box").exists() or not any((tmp_path / "box").iterdir())  # nothing made yet
