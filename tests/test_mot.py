"""MOTChallenge files: det.txt and gt.txt reading (with file:line errors), results writing, `edgepipe track`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from edgepipe.cli import main
from edgepipe.errors import EdgepipeError
from edgepipe.mot import TracksWriter, read_detections, read_trajectories, write_results
from edgepipe.types import Tracks

DET_TXT = """\
1,-1,10,20,30,60,0.9,-1,-1,-1
1,-1,100,20,40,80,0.4,-1,-1,-1

3,-1,12,21,30,60,0.8,-1,-1,-1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "det.txt"
    path.write_text(text)
    return path


def test_read_detections_gives_every_frame_with_xyxy_boxes(tmp_path: Path) -> None:
    frames = read_detections(write(tmp_path, DET_TXT))
    assert list(frames) == [1, 2, 3]
    np.testing.assert_array_equal(frames[1].xyxy, [[10, 20, 40, 80], [100, 20, 140, 100]])
    np.testing.assert_array_equal(frames[1].score, np.array([0.9, 0.4], np.float32))
    np.testing.assert_array_equal(frames[1].class_id, [0, 0])
    assert len(frames[2]) == 0
    np.testing.assert_array_equal(frames[3].xyxy, [[12, 21, 42, 81]])


def test_min_score_drops_rows_but_keeps_frames(tmp_path: Path) -> None:
    frames = read_detections(write(tmp_path, DET_TXT), min_score=0.85)
    assert [len(d) for d in frames.values()] == [1, 0, 0]


def test_empty_file_has_no_frames(tmp_path: Path) -> None:
    assert read_detections(write(tmp_path, "")) == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "2,-1,10,20,30",
            "expected at least 7 comma-separated fields (frame, id, x, y, w, h, score), found 5",
        ),
        ("2,-1,abc,20,30,60,0.9", "field 'x' is 'abc', not a number"),
        ("2,-1,10,20,30,nan,0.9", "field 'h' is 'nan', not a finite number"),
        ("0,-1,10,20,30,60,0.9", "field 'frame' is '0': frames are numbered from 1"),
        ("2.5,-1,10,20,30,60,0.9", "field 'frame' is '2.5': frames are numbered from 1"),
        ("2,-1,10,20,-30,60,0.9", "field 'w' is -30: boxes need a positive width and height"),
        ("2,-1,10,20,30,0,0.9", "field 'h' is 0: boxes need a positive width and height"),
    ],
)
def test_bad_rows_are_reported_with_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "1,-1,10,20,30,60,0.9,-1,-1,-1\n" + line + "\n")
    with pytest.raises(EdgepipeError) as error:
        read_detections(path)
    assert str(error.value) == f"{path}:2: {message}"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(EdgepipeError, match=r"cannot read MOT detections .*nope\.txt"):
        read_detections(tmp_path / "nope.txt")


def test_write_results_uses_the_motchallenge_layout() -> None:
    tracks = Tracks(
        np.array([[10, 20, 40, 80], [1.234, 5.678, 11.5, 20]], np.float32),
        np.array([0.9, 0.8], np.float32),
        np.zeros(2, np.int32),
        np.array([3, 7], np.int64),
        np.array([0, 1], np.intp),
        np.empty(0, np.int64),
    )
    out = io.StringIO()
    write_results(out, 5, tracks)
    assert (
        out.getvalue() == "5,3,10.00,20.00,30.00,60.00,-1,-1,-1,-1\n5,7,1.23,5.68,10.27,14.32,-1,-1,-1,-1\n"
    )


def moving_target_det(frames: int) -> str:
    return "".join(f"{f},-1,{10 + 2 * f},20,30,60,0.9,-1,-1,-1\n" for f in range(1, frames + 1))


def test_track_command_writes_results_file(tmp_path: Path) -> None:
    det = write(tmp_path, moving_target_det(6))
    out = tmp_path / "out.txt"
    assert main(["track", "--mot", str(det), "-o", str(out), "--min-hits", "1"]) == 0  # occlusion tracker
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert [(r[0], r[1]) for r in rows] == [(str(f), "1") for f in range(1, 7)]
    assert rows[-1][6:] == ["-1", "-1", "-1", "-1"]
    assert abs(float(rows[-1][2]) - 22.0) < 0.5


def test_track_command_writes_to_stdout_without_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    det = write(tmp_path, moving_target_det(2))
    assert main(["track", "--mot", str(det)]) == 0
    assert capsys.readouterr().out.startswith("1,1,12.00,20.00,30.00,60.00,-1,-1,-1,-1\n")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--iou", "0"], "--iou 0.0: 0.0 is not between 0 and 1"),
        (["--type", "sort", "--max-age", "-1"], "--max-age -1: -1 is not between 0 and 1000"),
        (["--min-hits", "0"], "--min-hits 0: 0 is not between 1 and 1000"),
        (["--max-age", "3"], "max_age: only for type sort, and this tracker is type occlusion"),
        (
            ["--type", "sort", "--max-age-s", "2"],
            "max_age_s: only for type occlusion, and this tracker is type sort",
        ),
        (["--high-threshold", "1.5"], "--high-threshold 1.5: 1.5 is not between 0 and 1"),
        (["--fps", "0"], "--fps 0.0: 0.0 is not between 0 and 1000"),
    ],
)
def test_track_command_rejects_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    det = write(tmp_path, moving_target_det(2))
    assert main(["track", "--mot", str(det), *option]) == 2
    assert capsys.readouterr().err == f"edgepipe: error: {message}\n"


def test_track_command_runs_either_tracker_with_the_config_defaults(tmp_path: Path) -> None:
    # One target seen in frames 1-12, hidden in 13-17, seen again from 18 at 10 fps: SORT
    # (max_age 1 frame) gives it a second id, the occlusion tracker (max_age_s 1.5) keeps one.
    lines = [f"{f},-1,{10 + 4 * f},20,30,60,0.9,-1,-1,-1\n" for f in range(1, 31) if not 13 <= f <= 17]
    det = write(tmp_path, "".join(lines))
    ids = {}
    for kind in ("sort", "occlusion"):
        out = tmp_path / f"{kind}.txt"
        assert main(["track", "--mot", str(det), "-o", str(out), "--type", kind, "--fps", "10"]) == 0
        ids[kind] = sorted({int(line.split(",")[1]) for line in out.read_text().splitlines()})
    assert ids == {"sort": [1, 2], "occlusion": [1]}


def test_track_command_starts_tracks_only_from_the_high_threshold(tmp_path: Path) -> None:
    det = write(tmp_path, "".join(f"{f},-1,{10 + 2 * f},20,30,60,0.3,-1,-1,-1\n" for f in range(1, 8)))
    out = tmp_path / "out.txt"
    assert main(["track", "--mot", str(det), "-o", str(out)]) == 0  # 0.3 < the detector's 0.4
    assert out.read_text() == ""
    assert main(["track", "--mot", str(det), "-o", str(out), "--high-threshold", "0.3"]) == 0
    assert {line.split(",")[1] for line in out.read_text().splitlines()} == {"1"}


def test_track_command_takes_the_frame_rate_from_seqinfo(tmp_path: Path) -> None:
    # At 25 fps (seqinfo.ini) the 5-frame gap is 0.2 s: one id. Assumed 10 fps would make it 0.5 s,
    # still within 1.5 s; so shrink max_age_s to 0.3 s, which only the real frame rate keeps.
    (tmp_path / "seq" / "det").mkdir(parents=True)
    (tmp_path / "seq" / "seqinfo.ini").write_text("[Sequence]\nframeRate=25\nseqLength=30\n")
    lines = [f"{f},-1,{10 + 2 * f},20,30,60,0.9,-1,-1,-1\n" for f in range(1, 31) if not 13 <= f <= 17]
    det = tmp_path / "seq" / "det" / "det.txt"
    det.write_text("".join(lines))
    out = tmp_path / "out.txt"
    assert main(["track", "--mot", str(det), "-o", str(out), "--max-age-s", "0.3"]) == 0
    assert {line.split(",")[1] for line in out.read_text().splitlines()} == {"1"}
    assert main(["track", "--mot", str(det), "-o", str(out), "--max-age-s", "0.3", "--fps", "10"]) == 0
    assert {line.split(",")[1] for line in out.read_text().splitlines()} == {"1", "2"}


def test_track_command_names_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    det = write(tmp_path, moving_target_det(2) + "3,-1,10,20,30,x,0.9\n")
    assert main(["track", "--mot", str(det)]) == 1
    assert capsys.readouterr().err == f"edgepipe: error: {det}:3: field 'h' is 'x', not a number\n"


# ---------------------------------------------------------------- trajectories (gt.txt, results)
GT_TXT = """\
1,1,10,20,30,60,1,-1,-1,-1
1,2,100,20,40,80,1,-1,-1,-1
2,1,12,20,30,60,1,-1,-1,-1
2,3,50,50,10,10,0,-1,-1,-1
4,2,104,20,40,80,1,-1,-1,-1
"""


def test_ground_truth_keeps_evaluated_rows_and_ends_each_id_after_its_last_row(tmp_path: Path) -> None:
    frames = read_trajectories(write(tmp_path, GT_TXT), ground_truth=True)
    assert list(frames) == [1, 2, 3, 4]
    assert frames[1].track_id.tolist() == [1, 2]
    np.testing.assert_array_equal(frames[1].xyxy, [[10, 20, 40, 80], [100, 20, 140, 100]])
    assert frames[2].track_id.tolist() == [1]  # id 3 has flag 0: not evaluated
    assert frames[3].track_id.tolist() == [] and frames[3].ended.tolist() == [1]
    assert frames[4].track_id.tolist() == [2] and frames[4].ended.tolist() == []  # ends with the run
    assert all(t.score.tolist() == [1.0] * len(t) for t in frames.values())
    assert frames[4].detection_index.tolist() == [0]


def test_results_keep_their_score(tmp_path: Path) -> None:
    frames = read_trajectories(write(tmp_path, "3,5,1,2,3,4,0.75,-1,-1,-1\n"), ground_truth=False)
    assert [len(t) for t in frames.values()] == [0, 0, 1]
    assert frames[3].score.tolist() == [0.75]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2,1,10,20,30", "expected at least 7 comma-separated fields (frame, id, x, y, w, h, flag), found 5"),
        ("2,-1,10,20,30,60,1", "field 'id' is '-1': track ids are whole numbers from 1"),
        ("2,1.5,10,20,30,60,1", "field 'id' is '1.5': track ids are whole numbers from 1"),
        ("2,1,10,20,30,60,yes", "field 'flag' is 'yes', not a number"),
        ("0,1,10,20,30,60,1", "field 'frame' is '0': frames are numbered from 1"),
    ],
)
def test_bad_ground_truth_rows_name_the_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "1,1,10,20,30,60,1,-1,-1,-1\n" + line + "\n")
    with pytest.raises(EdgepipeError) as error:
        read_trajectories(path, ground_truth=True)
    assert str(error.value) == f"{path}:2: {message}"


def test_tracks_writer_writes_every_frame_as_motchallenge_rows_from_frame_1(tmp_path: Path) -> None:
    tracks = Tracks(
        np.array([[10, 20, 40, 80]], np.float32),
        np.array([0.875], np.float32),
        np.zeros(1, np.int32),
        np.array([3], np.int64),
        np.array([0], np.intp),
        np.empty(0, np.int64),
    )
    path = tmp_path / "out" / "tracks.txt"
    with TracksWriter(path) as writer:
        writer.write(0, tracks)
        writer.write(1, Tracks.empty())
        writer.write(2, tracks)
        assert path.read_text().count("\n") == 2  # flushed frame by frame
    assert (
        path.read_text()
        == "1,3,10.00,20.00,30.00,60.00,0.8750,-1,-1,-1\n3,3,10.00,20.00,30.00,60.00,0.8750,-1,-1,-1\n"
    )
    # ...which reads back as the same tracks
    back = read_trajectories(path, ground_truth=False)
    np.testing.assert_array_equal(back[3].xyxy, tracks.xyxy)
    assert back[3].score.tolist() == [0.875]


def test_tracks_writer_reports_a_path_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(EdgepipeError, match=r"cannot write the tracks file .*file/tracks\.txt"):
        TracksWriter(tmp_path / "file" / "tracks.txt")
