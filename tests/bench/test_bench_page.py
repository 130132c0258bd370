"""`edgepipe bench page`: a short run on the demo; the segments alternate as they should, the viewer
got pictures in its segments only, and the report adds up. Speeds are measured, not asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.bench.page import format_report, prepared, report, watched_segments, whole_runs
from edgepipe.cli import main
from edgepipe.config import load_pipeline
from edgepipe.detect import ModelPool

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_segments_alternate_and_the_viewer_gets_pictures_in_its_own(
    tmp_path: Path, shared_data: Path
) -> None:
    from tests.test_api import demo_config

    cfg = prepared(load_pipeline(demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")))
    assert cfg.source.type == "file" and cfg.source.loop and not cfg.source.realtime
    pool = ModelPool()
    segments = watched_segments(cfg, pairs=3, segment_frames=30, stream_fps=5.0, pool=pool)
    assert [s.watched for s in segments] == [False, True, True, False, False, True]
    assert all(s.frames == 30 and s.seconds > 0 and s.cpu_s > 0 for s in segments)
    watched = [s for s in segments if s.watched]
    assert all(s.pictures > 0 and s.picture_cpu_s > 0 for s in watched)
    # after the viewer hangs up, at most the pictures being drawn and sent then are still made
    most_per_picture = max(s.picture_cpu_s / s.pictures for s in watched)
    assert all(s.pictures == 0 and s.picture_cpu_s <= 3 * most_per_picture for s in segments if not s.watched)
    runs = whole_runs(cfg, rounds=2, frames=30, pool=pool)
    assert [r.server for r in runs] == [False, True, True, False]
    assert not (tmp_path / "events.jsonl").exists()  # outputs off: a benchmark writes no events
    summary = report(segments, runs, 5.0)
    watched = summary["watched_idle"]
    assert len(watched["fps_ratio"]) == 3 and len(summary["idle_off"]["fps_ratio"]) == 2
    assert 0 < watched["picture_cpu_share"] < 1
    text = format_report(summary)
    assert text.startswith("watched/idle: 3 pairs of 30-frame segments, one viewer at 5 fps (received ")


def test_the_command_prints_json(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_api import demo_config

    config = str(demo_config(tmp_path, shared_data, tmp_path / "events.jsonl"))
    args = [
        "bench",
        "page",
        config,
        "--pairs",
        "1",
        "--segment-frames",
        "20",
        "--rounds",
        "1",
        "--frames",
        "20",
    ]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["segment_frames"] == 20 and summary["stream_fps"] == 5.0
    assert main([*args, "--stream-fps", "0"]) == 2
    assert "--stream-fps 0.0: 0.0 is not between 0 and 30" in capsys.readouterr().err
