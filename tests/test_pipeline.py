"""`edgepipe run` end to end on a real video with the real model: frames → events → JSON lines."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "nanodet-plus-m_320_fp16.xml"

pytestmark = pytest.mark.integration


def demo_config(tmp_path: Path, shared_data: Path, events: Path) -> Path:
    """pipelines/demo.yml with absolute paths, the 320 model and f32 so numbers are stable."""
    text = (REPO / "pipelines" / "demo.yml").read_text()
    text = text.replace("../../shared/data/video/vtest.mp4", str(shared_data / "video" / "vtest.mp4"))
    text = text.replace("../models/nanodet-plus-m_416_fp16.xml", f"{MODEL}\n  precision: f32")
    text = text.replace("../state/demo-events.jsonl", str(events))
    path = tmp_path / "demo.yml"
    path.write_text(text)
    return path


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.mark.slow
def test_demo_counts_people_crossing_the_line(tmp_path: Path, shared_data: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    result = run(str(demo_config(tmp_path, shared_data, events_path)), "--max-frames", "400")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in events_path.read_text().splitlines()]

    assert len({e["id"] for e in events}) == len(events)
    assert {e["type"] for e in events} <= {"line_cross", "zone_enter", "zone_exit", "zone_loiter"}
    assert all(e["schema"] == 1 and e["pipeline"] == "demo" and e["label"] == "person" for e in events)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in events)
    frames = [e["frame"] for e in events]
    assert min(frames) >= 0 and max(frames) < 400
    # in frame order, but for the exits of tracks lost inside a zone: decided when no successor came
    # within linking.max_gap_s, they carry the frame the track was last seen (rules.Zone)
    decided = [e["frame"] for e in events if e["type"] != "zone_exit"]
    assert decided == sorted(decided)
    crossings = [e for e in events if e["type"] == "line_cross"]
    # PETS09-S2L1: several people walk across the middle of the path in the first 40 s
    assert len(crossings) >= 4
    ins = sum(e["direction"] == "in" for e in crossings)
    outs = sum(e["direction"] == "out" for e in crossings)
    assert ins >= 1 and outs >= 1
    for e in crossings:  # the feet (bottom centre) are near the vertical line x = 240 when it is crossed
        x1, _, x2, _ = e["bbox"]
        if "linked_from" in e:  # crossed while the tracker had lost them: stamped where found again
            assert ((x1 + x2) / 2 > 240) == (e["direction"] == "in"), e  # in = the image's right
        else:
            assert abs((x1 + x2) / 2 - 240) < 40, e

    summary = result.stderr.splitlines()
    assert re.fullmatch(
        r"demo: 400 frames in [\d.]+ s \([\d.]+ fps\), \d+ detections, \d+ tracks", summary[-4]
    )
    assert summary[-3].startswith("demo: events: line_cross ")
    assert summary[-2] == f"demo: crossing: in {ins}, out {outs}"


@pytest.mark.slow
def test_source_override_and_events_to_stdout(tmp_path: Path, shared_data: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(shared_data / "coco" / "val2017"))[:5]:
        (images / name).symlink_to(shared_data / "coco" / "val2017" / name)
    config = demo_config(tmp_path, shared_data, tmp_path / "unused.jsonl")
    result = run(str(config), "--source", str(images), "--events", "-")
    assert result.returncode == 0, result.stderr
    assert re.match(r"demo: 5 frames in ", result.stderr.splitlines()[-4])
    for line in result.stdout.splitlines():  # stdout carries nothing but events
        assert json.loads(line)["schema"] == 1


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal(tmp_path: Path, shared_data: Path) -> None:
    config = demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "run", str(config), "--max-frames", "60"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        readable, _, _ = select.select([leader], [], [], 0.5)
        if not readable:
            if process.poll() is not None:
                break
            continue
        try:
            output += os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
    os.close(leader)
    assert process.wait(timeout=10) == 0
    text = output.decode()
    assert re.search(r"\r\[#*\s*\] \d+/60 frames +[\d.]+ fps", text), text
    assert "demo: 60 frames in" in text
    piped = run(str(config), "--max-frames", "60")
    assert "frames " not in piped.stderr.split("demo: 60 frames in")[0]  # no bar when not a terminal


@pytest.mark.slow
def test_door_counts_each_person_in_at_the_entry_and_out_at_the_exit(
    tmp_path: Path, shared_data: Path
) -> None:
    """pipelines/door.yml on its video: six people come in one by one, stop at the table, leave."""
    config = yaml.safe_load((REPO / "pipelines" / "door.yml").read_text())
    config["source"]["path"] = str(shared_data / "video" / "one-by-one-person-detection.mp4")
    config["detector"]["model"] = str(REPO / "models" / "nanodet-plus-m_416_fp16.xml")
    config["detector"]["precision"] = "f32"
    events_path = tmp_path / "events.jsonl"
    config["outputs"] = {"jsonl": {"path": str(events_path)}}  # the same rules, no broker
    path = tmp_path / "door.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(str(path))
    assert result.returncode == 0, result.stderr
    crossings = [
        e for e in map(json.loads, events_path.read_text().splitlines()) if e["type"] == "line_cross"
    ]
    by_track: dict[int, list[tuple[str, str]]] = {}
    for event in crossings:
        by_track.setdefault(event["track_id"], []).append((event["rule"], event["direction"]))
    assert len(by_track) == 6, by_track
    assert all(moves == [("entry", "in"), ("exit", "out")] for moves in by_track.values()), by_track
    assert "door: entry: in 6, out 0" in result.stderr
    assert "door: exit: in 0, out 6" in result.stderr


class RecordingWatcher:
    """A Watcher that writes down what the loop hands it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def started(self, scene: object) -> None:
        self.calls.append(("started", scene))

    def frame(self, result: object) -> None:
        self.calls.append(("frame", result))

    def counts(self, counts: object) -> None:
        self.calls.append(("counts", counts))

    def beat(self, beat: object) -> None:
        self.calls.append(("beat", beat))

    def stopped(self) -> None:
        self.calls.append(("stopped", None))


def test_the_loop_hands_its_watcher_each_frame_count_change_and_heartbeat(tmp_path: Path) -> None:
    """No model: a scripted person walks across a line given in relative units. The watcher learns of
    the placed rules before the first frame (an image folder knows its frame size only then), gets
    every result in order, the counts at the start and at each change (a new dict each time), a
    heartbeat after each frame and `stopped` last."""
    from edgepipe.draw import LineShape
    from edgepipe.pipeline import Beat
    from tests.fixtures.scripted import FRAMES, scripted_pipeline, write_frames

    watcher = RecordingWatcher()
    pipeline = scripted_pipeline(
        write_frames(tmp_path / "frames"), tmp_path / "events.jsonl", watcher=watcher
    )
    results = list(pipeline.results())
    kinds = [kind for kind, _ in watcher.calls]
    assert kinds[0] == "counts" and kinds[1] == "started" and kinds[2] == "frame"
    assert kinds[-1] == "stopped"
    scene = watcher.calls[1][1]
    assert scene.rules[0] == LineShape("door", (100.0, 10.0), (100.0, 110.0), -1)  # type: ignore[attr-defined]
    frames = [value for kind, value in watcher.calls if kind == "frame"]
    assert frames == results and len(frames) == FRAMES
    counts = [value for kind, value in watcher.calls if kind == "counts"]
    assert counts[0] == {
        "door": {"in": 0, "out": 0, "by_label": {}},
        "right": {"occupancy": 0, "enter": 0, "exit": 0, "by_label": {}},
    }
    assert counts[-1] == pipeline.rules.counts()  # after the closing exit
    assert len(counts) == 4 and len({id(c) for c in counts}) == 4  # start, crossing, enter, closing exit
    beats = [value for kind, value in watcher.calls if kind == "beat"]
    assert all(isinstance(b, Beat) for b in beats)
    assert [b.frames for b in beats] == list(range(1, FRAMES + 1))  # type: ignore[attr-defined]
    assert beats[-1].source.frames_read == FRAMES  # type: ignore[attr-defined]
    assert beats[-1].status is not None  # type: ignore[attr-defined]
    # a frame's counts come before its result (the rules ran first), its heartbeat right after it
    assert all(kinds[i + 1] == "beat" for i, kind in enumerate(kinds) if kind == "frame")


def test_a_rule_outside_the_frame_stops_the_run_naming_the_frame_size(tmp_path: Path) -> None:
    from edgepipe.errors import ConfigError
    from edgepipe.rules import LineCrossing, Rules
    from tests.fixtures.scripted import scripted_pipeline, write_frames

    pipeline = scripted_pipeline(write_frames(tmp_path / "frames", 3), tmp_path / "events.jsonl")
    pipeline.rules = Rules(
        [LineCrossing("door", (100, 10), (100, 5000), pipeline="scripted", labels=("person",))]
    )
    with pytest.raises(ConfigError) as caught:
        pipeline.run()
    assert str(caught.value) == (
        "rule 'door': [100, 5000] is outside the 200x120 frame (x 0..200, y 0..120); "
        "`edgepipe snapshot` draws the frame with a pixel grid"
    )
    assert pipeline.stats.frames == 0
