"""`edgepipe eval` from saved tracks and events (no detector run), its errors, and end to end on
tud-campus.mp4 against the stored numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgepipe.cli import main
from tests.evaluate.test_counting import gt_rows, row

DATA = Path(__file__).resolve().parent.parent / "data" / "counting"


def pipeline(tmp_path: Path, shared_data: Path, shared_models: Path) -> Path:
    """The door line and the shop zone of test_counting.py, on a model whose labels are COCO's."""
    config: dict[str, Any] = {
        "name": "shop",
        "source": {"type": "file", "path": str(shared_data / "video" / "tud-campus.mp4")},
        "detector": {"model": str(shared_models / "nanodet-plus-m_320_fp16.xml")},
        "rules": [
            {"type": "line", "name": "door", "points": [[100, 0], [100, 200]]},
            {"type": "zone", "name": "shop", "polygon": [[120, 0], [200, 0], [200, 200], [120, 200]]},
        ],
    }
    path = tmp_path / "shop.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def sequence(tmp_path: Path) -> Path:
    """A MOT sequence folder: gt/gt.txt and seqinfo.ini (10 fps); returns the gt path."""
    gt = tmp_path / "seq" / "gt" / "gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("\n".join(gt_rows()) + "\n")
    (tmp_path / "seq" / "seqinfo.ini").write_text("[Sequence]\nname=seq\nframeRate=10\nseqLength=40\n")
    return gt


def fragmented_tracks(tmp_path: Path) -> Path:
    """The gt as a tracker might report it: person 1 is lost for two frames before the line (last
    seen at x = 80, frame 5) and found again as id 12 at x = 110 (frame 8); the others as in the gt."""
    rows = [row(f, 11, 40 + 10 * (f - 1)) for f in range(1, 6)]
    rows += [row(f, 12, 40 + 10 * (f - 1)) for f in range(8, 13)]
    rows += [r for r in gt_rows() if r.split(",")[1] in ("2", "3", "4")]
    path = tmp_path / "tracks.txt"
    path.write_text("\n".join(rows) + "\n")
    return path


def evaluate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict[str, Any]:
    assert main(["eval", *map(str, args), "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_eval_from_saved_tracks_runs_the_rules_on_them_with_linking(
    tmp_path: Path, shared_data: Path, shared_models: Path, sequence: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = pipeline(tmp_path, shared_data, shared_models)
    report = evaluate(capsys, config, "--gt", sequence, "--tracks", fragmented_tracks(tmp_path))
    assert report["pipeline"] == "shop"
    # the tracks are the gt with one person broken in two across a 2-frame gap: 5 ids for 4 people,
    # one identity switch, the gap's 2 boxes missed, nothing false (evaluate/tracking.py, TrackEval)
    tracking = report["tracking"]
    assert (tracking["ids"], tracking["true_ids"], tracking["id_switches"]) == (5, 4, 1)
    assert (tracking["misses"], tracking["false_positives"], tracking["precision"]) == (2, 0, 1.0)
    counting = report["counting"]
    assert (counting["fps"], counting["frames"]) == (10.0, 40)  # from seqinfo.ini
    door = counting["rules"]["door"]
    # id 12 carries on id 11's side: its crossing (first seen in the band, out of it at frame 8) counts
    assert door["out"] == {"true": 1, "counted": 1, "matched": 1, "linked": 1, "missed": 0, "extra": 0}
    assert door["in"]["matched"] == 1
    shop = counting["rules"]["shop"]
    assert [shop[k]["matched"] for k in ("enter", "exit")] == [2, 2]
    assert shop["occupancy"]["max_abs_error"] == 0
    assert counting["lines"]["abs_count_error"] == 0

    # The table says the same for people.
    assert (
        main(["eval", str(config), "--gt", str(sequence), "--tracks", str(fragmented_tracks(tmp_path))]) == 0
    )
    table = capsys.readouterr().out
    assert "door             out          1        1        1       0      0       1" in table
    assert (
        "tracking: mota 0.9571, idf1 0.913, hota 0.9424, id_switches 1" in table
    )  # 1 - (2 + 1) / 70 gt boxes


def test_eval_from_saved_events_scores_them_as_they_are(
    tmp_path: Path, shared_data: Path, shared_models: Path, sequence: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {"type": "line_cross", "pipeline": "shop", "rule": "door", "direction": "out", "frame": 8},
        {"type": "line_cross", "pipeline": "shop", "rule": "door", "direction": "out", "frame": 9},
        {"type": "line_cross", "pipeline": "elsewhere", "rule": "door", "direction": "in", "frame": 11},
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = pipeline(tmp_path, shared_data, shared_models)
    report = evaluate(capsys, config, "--gt", sequence, "--events", events, "--fps", "20")
    door = report["counting"]["rules"]["door"]
    assert (door["out"]["matched"], door["out"]["extra"], door["in"]["missed"]) == (1, 1, 1)
    assert report["counting"]["fps"] == 20.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "x.mp4", "--tracks", "t.txt"], "--source runs the pipeline again; it cannot go with --tracks or --events"),
        (["--fps", "0", "--events", "e.jsonl"], "--fps 0: expected 0 < F <= 1000"),
        (["--window-s", "-1", "--events", "e.jsonl"], "--window-s -1: expected S > 0"),
    ],
)  # fmt: skip
def test_eval_rejects_bad_options(
    tmp_path: Path,
    shared_data: Path,
    shared_models: Path,
    sequence: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    config = pipeline(tmp_path, shared_data, shared_models)
    assert main(["eval", str(config), "--gt", str(sequence), *extra]) == 2
    assert capsys.readouterr().err == f"edgepipe: error: {message}\n"


def test_eval_names_the_bad_gt_line(
    tmp_path: Path, shared_data: Path, shared_models: Path, sequence: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sequence.write_text(sequence.read_text() + "7,x,1,2,3,4,1,-1,-1,-1\n")
    config = pipeline(tmp_path, shared_data, shared_models)
    assert (
        main(["eval", str(config), "--gt", str(sequence), "--tracks", str(fragmented_tracks(tmp_path))]) == 1
    )
    bad_line = len(gt_rows()) + 1
    assert (
        capsys.readouterr().err
        == f"edgepipe: error: {sequence}:{bad_line}: field 'id' is 'x', not a number\n"
    )


def test_eval_needs_a_frame_rate(
    tmp_path: Path, shared_data: Path, shared_models: Path, sequence: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sequence.parent.parent / "seqinfo.ini").unlink()
    config = pipeline(tmp_path, shared_data, shared_models)
    assert (
        main(["eval", str(config), "--gt", str(sequence), "--tracks", str(fragmented_tracks(tmp_path))]) == 1
    )
    assert "the frame rate is unknown" in capsys.readouterr().err


@pytest.mark.slow
def test_tud_campus_end_to_end_counts_match_the_stored_numbers(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tud-campus.mp4 through the real detector (f32) and SORT with the demo's settings; the stored file
    also has the numbers of the rules before linking, which the linked counts must halve."""
    stored = json.loads((DATA / "tud_campus_counts.json").read_text())
    gt = shared_data / "mot15" / "TUD-Campus" / "gt" / "gt.txt"
    report = evaluate(capsys, DATA / "tud-campus.yml", "--gt", gt)["counting"]
    assert report == stored["linked"]
    assert report["lines"]["abs_count_error"] <= stored["today"]["lines"]["abs_count_error"] / 2
    assert report["lines"]["extra"] <= stored["today"]["lines"]["extra"]
