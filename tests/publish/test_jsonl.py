"""JSON-lines sink and the fan-out publisher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.errors import OutputError
from edgepipe.publish import FanoutPublisher
from edgepipe.publish.jsonl import JsonlSink
from edgepipe.types import Event


def event(n: int) -> Event:
    return Event("line_cross", "door", "entry", 1_800_000_000.5, track_id=n, label="person", score=0.87654,
                 bbox=(1, 2, 3, 4), frame=10 + n, direction="in", id=f"id{n}")  # fmt: skip


def test_file_gets_one_flushed_line_per_event_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    sink.publish(event(1))
    assert json.loads(path.read_text()) == {  # flushed before close
        "id": "id1", "schema": 1, "type": "line_cross", "pipeline": "door", "rule": "entry", "track_id": 1,
        "label": "person", "score": 0.8765, "bbox": [1.0, 2.0, 3.0, 4.0], "frame": 11,
        "ts": "2027-01-15T08:00:00.500Z", "direction": "in",
    }  # fmt: skip
    sink.publish_counts({"entry": {"in": 1, "out": 0}})  # events only
    sink.publish_status({"fps": 3.0})
    sink.close()
    with JsonlSink(path) as again:
        again.publish(event(2))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["id1", "id2"]


def test_dash_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonlSink("-")
    sink.publish(event(3))
    sink.close()
    assert capsys.readouterr().out == event(3).to_json() + "\n"


def test_missing_folders_are_created(tmp_path: Path) -> None:
    with JsonlSink(tmp_path / "state" / "events.jsonl") as sink:
        sink.publish(event(1))
    assert (tmp_path / "state" / "events.jsonl").read_text() == event(1).to_json() + "\n"


def test_unwritable_path_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(
        OutputError, match=r"the events file.s folder .*/file cannot be created: .*/file is not a folder"
    ):
        JsonlSink(tmp_path / "file" / "events.jsonl")


class Recorder:
    def __init__(self, log: list[str], name: str, fail_close: bool = False) -> None:
        self.log, self.name, self.fail_close = log, name, fail_close

    def publish(self, event: Event) -> None:
        self.log.append(f"{self.name}:event:{event.id}")

    def publish_counts(self, counts: dict[str, dict[str, int]]) -> None:
        self.log.append(f"{self.name}:counts")

    def publish_status(self, status: dict[str, object]) -> None:
        self.log.append(f"{self.name}:status")

    def close(self, timeout_s: float = 5.0) -> None:
        self.log.append(f"{self.name}:close:{timeout_s}")
        if self.fail_close:
            raise OSError("disk gone")


def test_fanout_calls_each_publisher_in_order_and_closes_all_even_if_one_fails() -> None:
    log: list[str] = []
    fan = FanoutPublisher([Recorder(log, "a", fail_close=True), Recorder(log, "b")])
    fan.publish(event(1))
    fan.publish_counts({})
    fan.publish_status({})
    with pytest.raises(OSError, match="disk gone"):
        fan.close(2.0)
    assert log == [
        "a:event:id1", "b:event:id1", "a:counts", "b:counts", "a:status", "b:status", "a:close:2.0", "b:close:2.0",
    ]  # fmt: skip
