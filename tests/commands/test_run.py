"""`edgepipe run`: the closing summary (totals per rule, per label when there are several) and --tracks."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from edgepipe.commands.run import summary_text
from edgepipe.pipeline import RunStats
from edgepipe.types import Counts


def test_summary_shows_totals_and_labels_only_when_there_are_several() -> None:
    stats = RunStats(frames=10, detections=4, track_ids={1, 2}, events=Counter(line_cross=3))
    stats.finished = stats.started + 2.0
    counts: Counts = {
        "door": {"in": 2, "out": 1, "by_label": {"car": {"in": 1, "out": 0}, "person": {"in": 1, "out": 1}}},
        "table": {
            "occupancy": 0,
            "enter": 1,
            "exit": 1,
            "by_label": {"person": {"occupancy": 0, "enter": 1, "exit": 1}},
        },
    }
    assert summary_text("p", stats, counts).splitlines() == [
        "p: 10 frames in 2.0 s (5.0 fps), 4 detections, 2 tracks",
        "p: events: line_cross 3",
        "p: door: in 2, out 1; car in 1, out 0; person in 1, out 1",
        "p: table: occupancy 0, enter 1, exit 1",
    ]


def test_run_writes_every_frames_tracks_as_motchallenge_rows(tmp_path: Path, shared_data: Path) -> None:
    """`edgepipe run --tracks`: frame = source index + 1, one row per reported track, with its score;
    the file reads back as the trajectories `edgepipe eval --tracks` scores."""
    from edgepipe.mot import read_trajectories
    from tests.test_api import demo_config

    tracks_path = tmp_path / "tracks.txt"
    config = demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe",
            "run",
            str(config),
            "--max-frames",
            "30",
            "--tracks",
            str(tracks_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in tracks_path.read_text().splitlines()]
    assert rows and all(len(row) == 10 and row[7:] == ["-1", "-1", "-1"] for row in rows)
    frames = [int(row[0]) for row in rows]
    assert frames == sorted(frames) and frames[0] >= 1 and frames[-1] <= 30
    assert all(0.0 < float(row[6]) <= 1.0 and float(row[4]) > 0 and float(row[5]) > 0 for row in rows)
    read = read_trajectories(tracks_path, ground_truth=False)
    assert sum(len(t) for t in read.values()) == len(rows)
    tracks_in_summary = int(result.stderr.split(" tracks")[0].rsplit(", ", 1)[1])
    assert len({row[1] for row in rows}) == tracks_in_summary


def test_tracks_is_for_one_pipeline(tmp_path: Path, shared_data: Path) -> None:
    from tests.test_api import demo_config

    first = demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")
    second = tmp_path / "second.yml"
    second.write_text(first.read_text().replace("name: demo", "name: other"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe",
            "run",
            str(first),
            str(second),
            "--tracks",
            str(tmp_path / "t.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == ("edgepipe: error: --tracks is for one pipeline; give exactly one PIPELINE.yml\n")
