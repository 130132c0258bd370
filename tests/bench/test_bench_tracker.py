"""The tracker benchmark: metric code against the MOTChallenge devkit, the tracker against the SORT
reference on MOT15 (the stored MOTA/IDF1 files are the regression gate), and a small benchmark run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lap
import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.bench.tracker import (
    OURS,
    PEERS,
    accuracy,
    accuracy_summary,
    find_sequences,
    format_report,
    mot_scores,
    run_benchmark,
    synthetic_frames,
)
from edgepipe.mot import read_detections
from edgepipe.track import SortTracker
from edgepipe.track.associate import iou

DATA = Path(__file__).resolve().parent.parent / "data" / "tracker"
REFERENCE = json.loads((DATA / "sort_reference_mot15.json").read_text())
STORED_SORT = json.loads((DATA / "edgepipe_sort_mot15.json").read_text())
GATE = json.loads((DATA / "bench_mot15.json").read_text())
ROUNDING = 0.0005  # the reference table has 3 decimals


def test_metric_code_reproduces_the_devkit_scores_of_the_cem_tracker(shared_data: Path) -> None:
    pairs: dict[str, tuple[Path, Path | str]] = {
        seq: (shared_data / "mot15" / seq / "gt" / "gt.txt", shared_data / "mot15-cem-results" / f"{seq}.txt")
        for seq in ("TUD-Campus", "TUD-Stadtmitte")
    }
    scores = mot_scores(pairs)
    # MOTChallenge Matlab devkit numbers quoted in ../shared/data/PROVENANCE.md.
    devkit = {
        "TUD-Campus": (0.526, 0.558, 7, 13, 150),
        "TUD-Stadtmitte": (0.564, 0.645, 7, 45, 452),
        "OVERALL": (0.555, 0.624, 14, 58, 602),
    }
    for name, (mota, idf1, switches, false_positives, misses) in devkit.items():
        got = scores[name]
        assert got["mota"] == pytest.approx(mota, abs=ROUNDING), name
        assert got["idf1"] == pytest.approx(idf1, abs=ROUNDING), name
        assert (got["num_switches"], got["num_false_positives"], got["num_misses"]) == (
            switches,
            false_positives,
            misses,
        ), name
    assert not hasattr(np, "asfarray"), "the NumPy shim for motmetrics must not outlive the call"


def score_mot15(shared_data: Path, tracker_class: type[SortTracker]) -> dict[str, dict[str, float]]:
    pairs: dict[str, tuple[Path, Path | str]] = {}
    for seq in REFERENCE["sequences"]:
        folder = shared_data / "mot15" / seq
        tracker = tracker_class()
        text = []
        for frame, detections in read_detections(folder / "det" / "det.txt").items():
            tracks = tracker.update(detections, frame_index=frame)
            for track_id, (x1, y1, x2, y2) in zip(
                tracks.track_id.tolist(), tracks.xyxy.tolist(), strict=True
            ):
                text.append(f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},-1,-1,-1,-1\n")
        pairs[seq] = (folder / "gt" / "gt.txt", "".join(text))
    return mot_scores(pairs)


@pytest.fixture(scope="module")
def our_scores(shared_data: Path) -> dict[str, dict[str, float]]:
    return score_mot15(shared_data, SortTracker)


class SortPyAssociation(SortTracker):
    """sort.py's association rule instead of the cost-limited one: if no track and no detection
    has two IoUs above the threshold, take those pairs; otherwise the assignment of largest
    total IoU over all pairs (lapjv on -IoU, no cost limit), then drop pairs below the threshold."""

    def _associate(
        self, n: int, corners: NDArray[np.float64], z: NDArray[np.float64], class_id: NDArray[np.int32]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        if n == 0 or corners.shape[1] == 0:
            return np.empty(0, np.intp), np.empty(0, np.intp)
        similarity = iou(self._tracks[:n, :4], corners, z[2])
        above = similarity > self.iou_threshold
        if above.sum(axis=1).max() == 1 and above.sum(axis=0).max() == 1:
            rows, cols = above.nonzero()
        else:
            col_of_row, _ = lap.lapjv(-similarity, extend_cost=True, return_cost=False)
            rows = (col_of_row >= 0).nonzero()[0]
            cols = col_of_row[rows]
        keep = similarity[rows, cols] >= self.iou_threshold
        return rows[keep], cols[keep]


@pytest.mark.slow
def test_with_sort_py_association_every_number_of_the_reference_is_reproduced(shared_data: Path) -> None:
    # Everything but the association step is SORT itself: filter, warm-up, streaks, deletion.
    scores = score_mot15(shared_data, SortPyAssociation)
    for name, ref in [*REFERENCE["sequences"].items(), ("OVERALL", REFERENCE["overall"])]:
        assert scores[name]["mota"] == pytest.approx(ref["mota"], abs=ROUNDING), name
        assert scores[name]["idf1"] == pytest.approx(ref["idf1"], abs=ROUNDING), name
        assert scores[name]["num_switches"] == ref["num_switches"], name


@pytest.mark.slow
def test_overall_mota_and_idf1_are_at_least_the_sort_reference(
    our_scores: dict[str, dict[str, float]],
) -> None:
    for metric in ("mota", "idf1"):
        assert our_scores["OVERALL"][metric] >= REFERENCE["overall"][metric] - ROUNDING, metric
    assert our_scores["OVERALL"]["num_switches"] <= REFERENCE["overall"]["num_switches"]


# The cost-limited assignment (lapjv with cost limit 1 - iou_threshold) picks other pairs than
# sort.py in contested frames: better overall, within 0.003 on eight sequences, and on KITTI-13
# 0.011 MOTA / 0.009 IDF1 lower (see the test above for the exact reproduction with its rule).
PER_SEQUENCE_TOLERANCE = 0.015


@pytest.mark.parametrize("sequence", sorted(REFERENCE["sequences"]))
def test_mota_and_idf1_per_sequence_are_not_below_the_reference(
    our_scores: dict[str, dict[str, float]], sequence: str
) -> None:
    for metric in ("mota", "idf1"):
        reference = REFERENCE["sequences"][sequence][metric]
        assert our_scores[sequence][metric] >= reference - PER_SEQUENCE_TOLERANCE, metric


@pytest.mark.parametrize("sequence", sorted(STORED_SORT["sequences"]))
def test_mota_and_idf1_per_sequence_are_not_below_the_stored_edgepipe_numbers(
    our_scores: dict[str, dict[str, float]], sequence: str
) -> None:
    for metric in ("mota", "idf1"):
        assert our_scores[sequence][metric] >= STORED_SORT["sequences"][sequence][metric] - 1e-4, metric


# ---------------------------------------------------------------- the stored regression gate
# tests/data/tracker/bench_mot15.json is written by `edgepipe bench tracker --data
# ../shared/data/mot15 --gate FILE`; regenerate it when a tracker changes on purpose.


@pytest.fixture(scope="module")
def gate_run(shared_data: Path) -> dict[str, object]:
    sequences = find_sequences(shared_data / "mot15")
    return accuracy_summary(accuracy(sequences, OURS, GATE["high_threshold"]))


@pytest.mark.slow
@pytest.mark.parametrize("tracker", OURS)
def test_edgepipe_trackers_reproduce_the_stored_numbers(gate_run: dict[str, Any], tracker: str) -> None:
    stored = GATE["trackers"][tracker]
    assert set(gate_run[tracker]) == set(stored)
    for sequence, numbers in stored.items():
        for key, value in numbers.items():
            assert gate_run[tracker][sequence][key] == pytest.approx(value, abs=1e-5), (sequence, key)


def test_the_gate_was_made_with_the_default_settings() -> None:
    from edgepipe.config import TrackerConfig

    assert GATE["settings"] == TrackerConfig().model_dump()


def test_the_default_tracker_leads_every_peer_on_mota_and_idf1_at_once() -> None:
    # The bar of the tracker issue, on the stored numbers (the tests above tie them to the code).
    ours = GATE["trackers"]["edgepipe-occlusion"]
    for evaluator in (ours["OVERALL"], ours["motmetrics"]):
        assert evaluator["mota"] >= 0.355 and evaluator["idf1"] >= 0.51
        assert evaluator["id_switches"] <= 330
    for peer in (*PEERS, "edgepipe-sort"):
        theirs = GATE["trackers"][peer]
        for key in ("OVERALL", "motmetrics"):
            assert ours[key]["mota"] > theirs[key]["mota"], (peer, key)
            assert ours[key]["idf1"] > theirs[key]["idf1"], (peer, key)


@pytest.mark.slow
def test_the_peers_reproduce_their_stored_numbers(shared_data: Path) -> None:
    sequences = find_sequences(shared_data / "mot15")
    run = accuracy_summary(accuracy(sequences, PEERS, GATE["high_threshold"], motmetrics=False))
    for peer in PEERS:
        for sequence, numbers in run[peer].items():
            stored = GATE["trackers"][peer][sequence]
            for key, value in numbers.items():
                assert value == pytest.approx(stored[key], abs=1e-5), (peer, sequence, key)


# ---------------------------------------------------------------- the bench itself
def test_synthetic_frames_are_reproducible_crowds() -> None:
    first, again = synthetic_frames(50, 3, seed=1), synthetic_frames(50, 3, seed=1)
    assert [len(d) for d in first] == [len(d) for d in again]
    np.testing.assert_array_equal(first[2].xyxy, again[2].xyxy)
    assert 40 <= len(first[0]) <= 50  # 5% misses
    sizes = first[0].xyxy[:, 2:] - first[0].xyxy[:, :2]
    np.testing.assert_allclose(sizes.mean(axis=0), [40, 80], atol=1.0)


def test_benchmark_runs_on_sequences_with_and_without_ground_truth(shared_data: Path, tmp_path: Path) -> None:
    shutil.copytree(shared_data / "mot15" / "TUD-Campus", tmp_path / "TUD-Campus")
    (tmp_path / "NoTruth" / "det").mkdir(parents=True)
    shutil.copy(
        shared_data / "mot15" / "KITTI-17" / "det" / "det.txt", tmp_path / "NoTruth" / "det" / "det.txt"
    )
    names = ("edgepipe-occlusion", "edgepipe-sort", "roboflow-bytetrack")
    report: dict[str, Any] = run_benchmark(tmp_path, repeats=1, targets=(10,), names=names)
    assert set(report["accuracy"]) == set(names)
    campus = report["accuracy"]["edgepipe-sort"]["trackeval"]["TUD-Campus"]
    assert campus["mota"] == pytest.approx(REFERENCE["sequences"]["TUD-Campus"]["mota"], abs=ROUNDING)
    assert "NoTruth" not in report["accuracy"]["edgepipe-sort"]["trackeval"]
    assert report["sequences"]["NoTruth"] == {"frames": None, "fps": None, "gt": False}
    assert report["sequences"]["TUD-Campus"] == {"frames": 71, "fps": 25.0, "gt": True}
    assert set(report["speed"]["sequences_fps"]) == {"TUD-Campus", "NoTruth"}
    assert all(fps > 0 for fps in report["speed"]["overall_fps"].values())
    assert set(report["speed"]["synthetic_ms"]) == {"10"}
    text = format_report(report)
    assert "TUD-Campus" in text and "roboflow-bytetrack" in text
    json.dumps(report)
