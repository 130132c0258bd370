"""The Python API (edgepipe/api.py) as a notebook uses it: iterate a pipeline's frames, get events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgepipe
from edgepipe.errors import ConfigError
from edgepipe.types import Event

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "nanodet-plus-m_320_fp16.xml"

pytestmark = pytest.mark.integration


def demo_config(tmp_path: Path, shared_data: Path, events: Path) -> Path:
    """pipelines/demo.yml with absolute paths, the 320 model, f32 and its events file in tmp_path."""
    text = (REPO / "pipelines" / "demo.yml").read_text()
    text = text.replace("../../shared/data/video/vtest.mp4", str(shared_data / "video" / "vtest.mp4"))
    text = text.replace("../models/nanodet-plus-m_416_fp16.xml", f"{MODEL}\n  precision: f32")
    text = text.replace("../state/demo-events.jsonl", str(events))
    path = tmp_path / "demo.yml"
    path.write_text(text)
    return path


def test_a_notebook_iterates_20_frames_of_the_demo_and_gets_events(tmp_path: Path, shared_data: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    consumed: list[Event] = []
    changed_counts: list[dict[str, dict[str, int]]] = []
    with edgepipe.open(
        demo_config(tmp_path, shared_data, events_file),
        max_frames=20,
        publishers=[edgepipe.CallbackPublisher(consumed.append, changed_counts.append)],
    ) as run:
        results = list(run)
    assert [r.frame.index for r in results] == list(range(20))
    assert all(r.frame.image.shape == (360, 480, 3) for r in results)
    assert sum(len(r.detections) for r in results) > 20 * 3  # PETS09: several people in every frame
    # every reported track names the detection row it was updated with
    for r in results:
        rows = r.tracks.detection_index[r.tracks.detection_index >= 0]
        assert len(rows) == 0 or rows.max() < len(r.detections)
    events = [e for r in results for e in r.events]
    assert any(e.type == "zone_enter" for e in events)
    # the consumer got the same events, then the zone's closing exits; the file's own output got them all
    assert consumed[: len(events)] == events
    assert [e.type for e in consumed[len(events) :]] == ["zone_exit"] * run.counts()["junction"]["exit"]
    assert [json.loads(line)["id"] for line in events_file.read_text().splitlines()] == [
        e.id for e in consumed
    ]
    assert changed_counts[0] == {  # published once at the start: retained zeros for dashboards
        "crossing": {"in": 0, "out": 0, "by_label": {}},
        "junction": {"occupancy": 0, "enter": 0, "exit": 0, "loiter": 0, "by_label": {}},
    }
    assert changed_counts[-1] == run.counts()
    assert run.stats.frames == 20


def test_stopping_early_closes_the_run(tmp_path: Path, shared_data: Path) -> None:
    """Leaving the loop after 5 frames: the `with` closes the source and flushes the outputs."""
    events_file = tmp_path / "events.jsonl"
    with edgepipe.open(demo_config(tmp_path, shared_data, events_file)) as run:
        for result in run:
            if result.frame.index == 4:
                break
    assert run.stats.frames == 5 and run.stats.finished is not None
    assert run.pipeline.source.stats().state == "ended"
    assert run.counts()["junction"]["occupancy"] == 0  # everyone still inside exited at the close
    written = [json.loads(line)["type"] for line in events_file.read_text().splitlines()]
    assert written.count("zone_enter") == written.count("zone_exit") > 0


def test_outputs_off_and_a_source_of_your_own(tmp_path: Path, shared_data: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in (shared_data / "coco" / "val2017").iterdir())[:3]:
        (images / name).symlink_to(shared_data / "coco" / "val2017" / name)
    with edgepipe.open(
        demo_config(tmp_path, shared_data, events_file), source=str(images), outputs=False
    ) as run:
        assert len(list(run)) == 3
    assert not events_file.exists()


def test_bad_settings_raise_at_open(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read pipeline file"):
        edgepipe.open(tmp_path / "missing.yml")


def test_the_readme_example_runs(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's Python API block, on the demo with the 320 model for 20 frames, prints events and counts."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("```python\nimport edgepipe\n") + len("```python\n")
    code = readme[start : readme.index("```", start)]
    config = demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")
    code = code.replace('"pipelines/demo.yml", max_frames=200', f'"{config}", max_frames=20')
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert any(json.loads(line)["type"] == "zone_enter" for line in printed[:-1])
    assert printed[-1].startswith("{'crossing': {'in': ")
