"""`edgepipe bench page`: a short run of each mode (off, idle, watched) on the demo; the shape of the
report and that the watched runs had a viewer who got pictures. Speeds are measured, not asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.bench.page import MODES, format_report, report, run_rounds
from edgepipe.cli import main
from edgepipe.config import load_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_each_mode_runs_its_frames_and_the_viewer_gets_pictures(tmp_path: Path, shared_data: Path) -> None:
    from tests.test_api import demo_config

    cfg = load_pipeline(demo_config(tmp_path, shared_data, tmp_path / "events.jsonl"))
    rounds = run_rounds(cfg, frames=40, rounds=2, stream_fps=5.0)
    assert [r.mode for r in rounds] == [
        "off",
        "idle",
        "watched",
        "idle",
        "watched",
        "off",
    ]  # turned each round
    assert all(r.frames == 40 and r.fps > 0 and r.cpu_ms > 0 for r in rounds)
    watched = [r for r in rounds if r.mode == "watched"]
    assert all(r.received_fps is not None and r.received_fps > 0 for r in watched)
    assert all(r.received_fps is None for r in rounds if r.mode != "watched")
    assert not (tmp_path / "events.jsonl").exists()  # outputs off: a benchmark writes no events
    summary = report(rounds, 5.0)
    assert set(summary["modes"]) == set(MODES)
    assert len(summary["watched/idle"]["fps_ratio"]) == 2
    text = format_report(summary)
    assert (
        text.splitlines()[0] == "page: 40 frames a round; watched = one MJPEG client, stream capped at 5 fps"
    )
    assert "watched/idle  fps ratio median" in text


def test_the_command_prints_json(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_api import demo_config

    config = demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")
    assert main(["bench", "page", str(config), "--frames", "20", "--rounds", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames_per_round"] == 20 and summary["stream_fps"] == 5.0
    assert main(["bench", "page", str(config), "--stream-fps", "0"]) == 2
    assert "--stream-fps 0.0: 0.0 is not between 0 and 30" in capsys.readouterr().err
