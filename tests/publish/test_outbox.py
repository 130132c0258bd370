"""The durable outbox: FIFO order, acks, retained-topic replacement, bounds, reopening, SIGKILL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepipe.errors import OutputError
from edgepipe.publish.outbox import Outbox


def test_put_pending_ack_in_insertion_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    ids = [box.put("t/events", f"m{i}".encode(), qos=1, retain=False) for i in range(5)]
    assert ids == sorted(ids)
    assert box.depth == 5
    assert [m.payload for m in box.pending()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [m.payload for m in box.pending(after_id=ids[1], limit=2)] == [b"m2", b"m3"]
    box.ack(ids[2])
    box.ack(ids[2])  # a second ack (QoS 1 duplicate) changes nothing
    assert box.depth == 4
    assert [m.payload for m in box.pending()] == [b"m0", b"m1", b"m3", b"m4"]
    first = box.pending(limit=1)[0]
    assert (first.topic, first.qos, first.retain) == ("t/events", 1, False)
    box.close()


def test_replace_key_keeps_only_the_newest_row_under_a_new_id(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.put("t/events", b"e1", qos=1, retain=False)
    old = box.put("t/counts", b"c1", qos=1, retain=True, replace_key="t/counts")
    box.put("t/events", b"e2", qos=1, retain=False)
    new = box.put("t/counts", b"c2", qos=1, retain=True, replace_key="t/counts")
    assert new > old
    assert [(m.payload, m.retain) for m in box.pending()] == [(b"e1", False), (b"e2", False), (b"c2", True)]
    assert box.depth == 3
    box.ack(old)  # the ack of the replaced row must not delete its replacement
    assert box.depth == 3
    box.close()


def test_rows_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "o.sqlite"  # the directory is created
    box = Outbox(path)
    a = box.put("t", b"a", qos=1, retain=False)
    box.put("t", b"b", qos=1, retain=False)
    box.ack(a)
    box.close()
    again = Outbox(path)
    assert again.depth == 1
    assert [m.payload for m in again.pending()] == [b"b"]
    again.close()


def test_rows_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    child = (
        "import os, signal, sys\n"
        "from edgepipe.publish.outbox import Outbox\n"
        "box = Outbox(sys.argv[1])\n"
        "for i in range(200):\n"
        "    box.put('t', str(i).encode(), qos=1, retain=False)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", child, str(path)], timeout=60)
    assert result.returncode == -9
    box = Outbox(path)  # the killed process's lock is gone with it
    assert box.depth == 200
    assert [m.payload for m in box.pending(limit=3)] == [b"0", b"1", b"2"]
    box.close()


def test_max_messages_drops_the_oldest_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_messages=3)
    with caplog.at_level(logging.WARNING, logger="edgepipe.publish.outbox"):
        for i in range(6):
            box.put("t", str(i).encode(), qos=1, retain=False)
    assert [m.payload for m in box.pending()] == [b"3", b"4", b"5"]
    assert (box.depth, box.dropped) == (3, 3)
    warnings = [r.getMessage() for r in caplog.records]
    # one line per minute, not one per dropped message
    assert len(warnings) == 1
    assert "dropped the 1 oldest unsent messages to stay within max_messages=3" in warnings[0]
    box.close()


def test_max_age_drops_old_rows_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, clock=lambda: 1_000.0)
    box.put("t", b"old", qos=1, retain=False)
    box.close()
    with caplog.at_level(logging.WARNING):
        box = Outbox(path, max_age_s=0.2, clock=lambda: 1_000.3)  # opened 0.3 s later
    assert (box.depth, box.dropped) == (0, 1)
    assert "dropped the 1 oldest unsent messages" in caplog.text
    box.close()


def test_second_process_on_the_same_outbox_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    with pytest.raises(OutputError, match=r"o.sqlite is in use by another edgepipe process"):
        Outbox(tmp_path / "o.sqlite")
    box.close()
    Outbox(tmp_path / "o.sqlite").close()  # free again after close


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(
        OutputError, match=r"the MQTT outbox folder .*/file cannot be created: .*/file is not a folder"
    ):
        Outbox(blocker / "o.sqlite")


def test_wal_mode(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert box._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    box.close()


def _filled(path: Path, count: int) -> None:
    box = Outbox(path)
    for i in range(count):
        box.put("t/e", f"m{i:05d}-".encode() + b"x" * 200, qos=1, retain=False)
    box.close()


def _damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "garbage inside":
        with path.open("r+b") as handle:
            handle.seek(size // 2)
            handle.write(bytes(range(256)) * 32)  # 8 KiB of garbage over the middle pages
    elif how == "garbage header":
        with path.open("r+b") as handle:
            handle.write(b"not a database at all " * 4)
    else:
        os.truncate(path, size // 3)


@pytest.mark.parametrize(
    ("how", "recovered", "unreadable"),
    [("garbage inside", (2900, 3000), "could not be read"), ("garbage header", (0, 0), "an unknown number"),
     ("truncated", (0, 0), "an unknown number")],
)  # fmt: skip
def test_a_damaged_outbox_is_set_aside_and_what_can_be_read_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str, recovered: tuple[int, int], unreadable: str
) -> None:
    path = tmp_path / "o.sqlite"
    _filled(path, 3000)
    _damage(path, how)
    with caplog.at_level(logging.ERROR):
        box = Outbox(path)  # opens: no exception, a fresh file with the readable rows
    assert recovered[0] <= box.depth <= recovered[1]
    payloads = [m.payload[:7] for m in box.pending(limit=10_000)]
    assert payloads == sorted(payloads)  # the rows kept their order
    (aside,) = tmp_path.glob("o.sqlite.corrupt-*")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"MQTT outbox {path} was damaged (")
    assert f"moved it aside to {aside.name} and recovered {box.depth} messages into a fresh one" in line
    assert unreadable in line
    assert box.recoveries == 1 and box.generation == 1
    assert box.lost == (3000 - box.depth if how == "garbage inside" else 0)
    box.put("t/e", b"after", qos=1, retain=False)  # and it works on
    box.close()


def test_damage_found_while_running_is_repaired_and_the_generation_changes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    for i in range(3000):
        box.put("t/e", f"m{i:05d}-".encode() + b"x" * 200, qos=1, retain=False)
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows are in the file, not only in the WAL
    _damage(path, "garbage inside")
    box._db.execute("PRAGMA cache_size=0")  # read from the disk, not from pages cached before
    first = box.pending(limit=10_000)  # meets the damage: repaired, nothing returned this time
    rows = box.pending(limit=10_000)
    assert first == [] and box.generation == 1
    assert 2900 <= len(rows) == box.depth < 3000
    box.ack(rows[0].id, generation=0)  # an ack for the old file's ids changes nothing
    assert box.depth == len(rows)
    box.close()


def test_a_full_disk_holds_messages_in_order_and_stores_them_when_space_returns(
    small_disk: Callable[[int], Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = small_disk(1 << 20)
    now = [1_000.0]
    box = Outbox(disk / "o.sqlite", clock=lambda: now[0])
    filler = disk / "filler"
    filler.write_bytes(b"\0" * ((1 << 20) - (150 << 10)))
    sent = []
    with caplog.at_level(logging.WARNING):
        for i in range(1600):
            if i == 1500:
                filler.unlink()  # space comes back
            now[0] += 0.1
            box.put("t/e", f"m{i:05d}-".encode() + b"x" * 100, qos=1, retain=False)
            sent.append(f"m{i:05d}-".encode())
            if i == 1499:
                assert box.held_in_memory > 1000
                assert box.problem is not None and "disk is full" in box.problem
    assert box.problem is None and box.held_in_memory == 0 and box.lost == 0
    got, cursor = [], 0
    while batch := box.pending(cursor, 500):
        got += [m.payload[:7] for m in batch]
        for m in batch:
            box.ack(m.id)
        cursor = batch[-1].id
    assert got == sent and box.depth == 0
    assert os.path.getsize(disk / "o.sqlite-wal") <= 256 << 10  # the WAL stays small
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "new messages wait in memory" in errors[0]  # one line per episode
    box.close()


def test_messages_beyond_the_memory_limit_are_counted_lost(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(256 << 10)
    box = Outbox(disk / "o.sqlite", memory_limit=100)
    (disk / "filler").write_bytes(b"\0" * (200 << 10))
    for _ in range(500):
        box.put("t/e", b"x" * 200, qos=1, retain=False)
    assert box.held_in_memory == 100
    assert box.lost == box.overflowed > 0
    box.close()  # cannot store them: the rest is lost too, and said
    assert box.lost == 500 - Outbox(disk / "o.sqlite").depth
