"""edgepipe.evaluate.tracking: a tiny hand-made case computed by hand, and py-motmetrics 1.4 on
real tracker output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.bench.tracker import mot_scores, results_text, track_rows
from edgepipe.errors import EdgepipeError
from edgepipe.evaluate.tracking import OVERALL, Sequence, score
from edgepipe.mot import read_detections, read_rows
from edgepipe.track import SortTracker


def rows(*entries: tuple[int, int, float, float]) -> NDArray[np.float64]:
    """(frame, id, x, y) → rows of 20x40 boxes, flag/score 1."""
    return np.array([(f, i, x, y, 20.0, 40.0, 1.0) for f, i, x, y in entries], np.float64).reshape(-1, 7)


# Two people over four frames. Person 1 is followed by result id 10, then by id 11 (one switch);
# person 2 by id 20, missed in frame 3; id 30 is a false box in frame 2.
GT = rows(*[(f, 1, 10.0 * f, 0.0) for f in range(1, 5)], *[(f, 2, 200.0, 10.0 * f) for f in range(1, 5)])
RESULTS = rows(
    (1, 10, 10.0, 0.0),
    (2, 10, 20.0, 0.0),
    (3, 11, 30.0, 0.0),
    (4, 11, 40.0, 0.0),
    (1, 20, 200.0, 10.0),
    (2, 20, 200.0, 20.0),
    (4, 20, 200.0, 40.0),
    (2, 30, 500.0, 500.0),
)


def test_a_hand_made_case_gives_the_hand_computed_scores() -> None:
    got = score({"tiny": Sequence(GT, RESULTS)})["tiny"]
    # 8 gt boxes: 7 matched, 1 missed, 1 false, 1 switch.
    assert (got.true_positives, got.misses, got.false_positives, got.id_switches) == (7, 1, 1, 1)
    assert got.mota == pytest.approx(1 - 3 / 8)
    # Best id mapping: 1 ↔ 10 (or 11) for 2 frames, 2 ↔ 20 for 3: IDTP 5 of 8 gt and 8 result boxes.
    assert got.idf1 == pytest.approx(2 * 5 / (8 + 8))
    assert got.idp == pytest.approx(5 / 8) and got.idr == pytest.approx(5 / 8)
    # HOTA (every box exact, so the same at every IoU threshold): DetA = 7 / 9; AssA averages over
    # the 7 matches the association of their pair: (1,10) and (1,11) 2 / 4 each, (2,20) 3 / 4.
    assert got.deta == pytest.approx(7 / 9)
    assert got.assa == pytest.approx((2 * 0.5 + 2 * 0.5 + 3 * 0.75) / 7)
    assert got.hota == pytest.approx(math.sqrt(7 / 9 * (4.25 / 7)))
    assert got.motp == pytest.approx(1.0)
    assert (got.mostly_tracked, got.partly_tracked, got.mostly_lost, got.fragmentations) == (1, 1, 0, 1)
    assert (got.ids, got.true_ids, got.gt_boxes, got.frames) == (4, 2, 8, 4)


def test_gt_rows_flagged_0_are_not_scored_and_overall_sums_the_counts() -> None:
    flagged = GT.copy()
    flagged[GT[:, 1] == 2, 6] = 0.0  # person 2 is not to be scored: its matches become false boxes
    scores = score({"a": Sequence(GT, RESULTS), "b": Sequence(flagged, RESULTS, frames=6)})
    b = scores["b"]
    assert (b.true_positives, b.misses, b.false_positives, b.true_ids, b.frames) == (4, 0, 4, 1, 6)
    overall = scores[OVERALL]
    assert overall.true_positives == 7 + 4 and overall.false_positives == 1 + 4
    assert overall.mota == pytest.approx(1 - (1 + 1 + 1 + 0 + 4 + 1) / (8 + 4))


def test_perfect_results_score_1() -> None:
    got = score({"same": Sequence(GT, GT)})["same"]
    assert got.mota == got.idf1 == pytest.approx(1.0)
    assert got.hota == pytest.approx(1.0)


def test_bad_rows_are_reported() -> None:
    with pytest.raises(EdgepipeError, match="x: results rows need 7 fields"):
        score({"x": Sequence(GT, np.zeros((2, 5)))})
    with pytest.raises(EdgepipeError, match="x: rows for frame 4, but the sequence has 3 frames"):
        score({"x": Sequence(GT, RESULTS, frames=3)})


def sort_results(shared_data: Path, sequence: str) -> NDArray[np.float64]:
    frames = read_detections(shared_data / "mot15" / sequence / "det" / "det.txt")
    return track_rows(SortTracker(), frames, None)


@pytest.mark.slow
def test_the_scores_agree_with_py_motmetrics_on_sort_results(shared_data: Path) -> None:
    sequences = ["TUD-Campus", "TUD-Stadtmitte", "KITTI-17", "ETH-Sunnyday"]
    gt_paths = {s: shared_data / "mot15" / s / "gt" / "gt.txt" for s in sequences}
    results = {s: sort_results(shared_data, s) for s in sequences}
    ours = score({s: Sequence(read_rows(gt_paths[s], "ground truth"), results[s]) for s in sequences})
    reference = mot_scores({s: (gt_paths[s], results_text(results[s])) for s in sequences})
    for name in [*sequences, OVERALL]:
        got, expected = ours[name], reference[name]
        assert got.idf1 == pytest.approx(expected["idf1"], abs=1e-6), name
        assert got.false_positives == expected["num_false_positives"], name
        assert got.misses == expected["num_misses"], name
        # TrackEval counts a switch when a person's id differs from the last one they had, at
        # any gap; py-motmetrics the same, but it can pick another pairing in a tied frame.
        assert abs(got.id_switches - expected["num_switches"]) <= 1, name
        assert got.mota == pytest.approx(expected["mota"], abs=1.5 / got.gt_boxes), name
