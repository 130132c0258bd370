"""The durable outbox: FIFO order, acks, retained-topic replacement, bounds, reopening, SIGKILL."""

from __future__ import annotations

import logging
import subprocess
import sys
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
        OutputError, match=r"cannot open the MQTT outbox .*file/o.sqlite: .*directory is writable"
    ):
        Outbox(blocker / "o.sqlite")


def test_wal_mode(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert box._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    box.close()
