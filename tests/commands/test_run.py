"""`edgepipe run`: the closing summary (totals per rule, per label when there are several) and --tracks."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from edgepipe.commands.run import http_settings, summary_text
from edgepipe.config import HttpConfig
from edgepipe.errors import ConfigError
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_annotate_writes_the_run_as_a_video_with_the_rules_drawn(tmp_path: Path, shared_data: Path) -> None:
    """`edgepipe run demo.yml --annotate y.mp4`: every processed frame, at the frame size, with the
    line (240, 100) → (240, 300) along its path in every frame, and a picture that moves."""
    import cv2
    import numpy as np

    from tests.test_api import demo_config

    video = tmp_path / "y.mp4"
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
            "--annotate",
            str(video),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(video))
    assert capture.get(cv2.CAP_PROP_FPS) == 10.0  # the source's rate
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 30 and all(f.shape == (360, 480, 3) for f in frames)
    for image in frames:
        line = image[110:291:10, 239:242].astype(int)  # the 3-pixel-wide line, give or take the codec
        b, g, r = line[..., 0].max(axis=1), line[..., 1].min(axis=1), line[..., 2].max(axis=1)
        assert (b > 170).all() and (r > 170).all() and (g < 110).all(), line
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 2.0  # people walk


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "0.0.0.0:8080",
            "--http 0.0.0.0:8080: host 0.0.0.0 is reachable from other machines: give token_file or token_env "
            "(or listen on 127.0.0.1)",
        ),
        ("localhost:http", "--http localhost:http: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080"),
        ("70000", "--http 70000: 70000 is not between 0 and 65535"),
    ],
)
def test_http_option_errors(option: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        http_settings(option, [])
    assert str(caught.value) == message


def test_http_option_over_the_files_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--http sets the address; the file's other http: settings (its token) stay."""
    from edgepipe.config import PipelineConfig

    monkeypatch.setenv("EDGEPIPE_TEST_TOKEN", "0123456789abcdef")
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"")
    (tmp_path / "v.mp4").write_bytes(b"")
    cfg = PipelineConfig.model_validate(
        {
            "name": "door",
            "source": {"type": "file", "path": str(tmp_path / "v.mp4")},
            "detector": {"model": str(tmp_path / "m.xml")},
            "http": {"token_env": "EDGEPIPE_TEST_TOKEN", "stream_fps": 2},
        }
    )
    assert http_settings(None, []) is None
    assert http_settings("9090", []) == HttpConfig(port=9090)
    settings = http_settings("[::]:9090", [("door.yml", cfg)])
    assert settings == HttpConfig(host="::", port=9090, token_env="EDGEPIPE_TEST_TOKEN", stream_fps=2)


@pytest.mark.slow
def test_a_rule_outside_the_frame_stops_the_run_before_any_frame(tmp_path: Path, shared_data: Path) -> None:
    from tests.test_api import demo_config

    config = demo_config(tmp_path, shared_data, tmp_path / "events.jsonl")
    config.write_text(config.read_text().replace("[[240, 100], [240, 300]]", "[[240, 100], [240, 5000]]"))
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(config)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"edgepipe: error: {config}:17: rules[0].points: [240, 5000] is outside the 480x360 frame "
        "(x 0..480, y 0..360); `edgepipe snapshot` draws the frame with a pixel grid\n"
    )
