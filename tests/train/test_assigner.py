"""Dynamic Soft Label Assigner on small cases worked out by hand (logit 0 → score 0.5 unless said)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="training needs the export extra: pip install 'edgepipe[train]'")

from edgepipe.train.assigner import assign, matching_cost  # noqa: E402

pytestmark = pytest.mark.slow  # needs torch
LOG2 = math.log(2)


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _assign(logits: torch.Tensor, priors: list[list[float]], preds: list[list[float]],
            gts: list[list[float]], labels: list[int]) -> tuple[list[int], list[float]]:  # fmt: skip
    result = assign(logits, _t(priors), _t(preds), _t(gts), torch.tensor(labels), topk=13, iou_factor=3.0)
    return result.gt_index.tolist(), result.iou.tolist()


def test_cost_is_focal_bce_to_the_soft_label_plus_three_times_minus_log_iou() -> None:
    # one class, score 0.5: BCE(0, IoU) = log 2 for any IoU, times (IoU - 0.5)^2
    iou = _t([[1.0, 0.0], [0.25, 0.5]])
    cost = matching_cost(torch.zeros(2, 1), iou, torch.tensor([0, 0]), iou_factor=3.0)
    minus_log_eps = -math.log(1e-7)
    assert cost.flatten().tolist() == pytest.approx(
        [LOG2 * 0.25 - 3 * math.log(1 + 1e-7), LOG2 * 0.25 + 3 * minus_log_eps,
         LOG2 * 0.0625 - 3 * math.log(0.25), 0.0 - 3 * math.log(0.5)], rel=1e-5
    )  # fmt: skip


def test_each_box_takes_its_dynamic_k_cheapest_candidates() -> None:
    # boxes A = [0,0,10,10], B = [20,0,30,10]. Priors: p0, p1, p4 inside A, p2 inside B, p3 in neither.
    priors = [[5, 5], [2, 2], [25, 5], [15, 5], [8, 8]]
    preds = [[0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 30, 10], [10, 0, 20, 10], [5, 5, 15, 15]]
    # IoU with A: p0 1, p1 0.9, p4 25/175; k_A = floor(1 + 0.9 + 1/7) = 2 → p0 and p1 (p4 costs more).
    # IoU with B: only p2 (1.0): k_B = 1. p3 is no candidate (its centre is in no box).
    gt_index, iou = _assign(torch.zeros(5, 1), priors, preds, [[0, 0, 10, 10], [20, 0, 30, 10]], [0, 0])
    assert gt_index == [0, 0, 1, -1, -1]
    assert iou == pytest.approx([1.0, 0.9, 1.0, 0.0, 0.0])


def test_k_is_at_least_one() -> None:
    # IoUs 0.25 and 1/7 sum to 0.39: k = max(floor(0.39), 1) = 1, the cheaper (higher IoU) one
    priors, preds = [[2, 2], [8, 8]], [[0, 0, 5, 5], [5, 5, 15, 15]]
    assert _assign(torch.zeros(2, 1), priors, preds, [[0, 0, 10, 10]], [0]) == ([0, -1], [0.25, 0.0])


def test_a_candidate_wanted_by_two_boxes_goes_to_the_cheaper() -> None:
    # A = [0,0,10,10], C = [0,0,10,12]. p0 (5,5) is in both, predicts A exactly: IoU 1 with A, 100/120 with C.
    # p1 (5,11) is only in C, predicts [0,6,10,12]: IoU 1/3 with A, 1/2 with C. k_A = k_C = 1.
    # A's cheapest is p0 (cost 0.17); C's cheapest is also p0 (0.62 < 2.08 for p1): p0 goes to A,
    # and C, whose only pick was taken, gets nothing (as the official assigner).
    priors, preds = [[5, 5], [5, 11]], [[0, 0, 10, 10], [0, 6, 10, 12]]
    gt_index, iou = _assign(torch.zeros(2, 1), priors, preds, [[0, 0, 10, 10], [0, 0, 10, 12]], [0, 0])
    assert (gt_index, iou) == ([0, -1], [1.0, 0.0])


def test_class_scores_decide_between_equally_good_boxes() -> None:
    # two candidates, both IoU 0.5 with a box of class 1 (of 2): k = 1. p0 is confident in class 1,
    # p1 in class 0: p0's class cost is 0.34, p1's 1.65.
    logits = _t([[0.0, 2.0], [2.0, 0.0]])
    priors, preds = [[3, 5], [7, 5]], [[0, 0, 10, 5], [0, 5, 10, 10]]
    cost = matching_cost(logits, _t([[0.5], [0.5]]), torch.tensor([1]), iou_factor=0.0)
    sig2 = 1 / (1 + math.exp(-2))
    bce2 = math.log(1 + math.exp(2))
    assert cost[:, 0].tolist() == pytest.approx(
        [LOG2 * 0.25 + (bce2 - 1.0) * (sig2 - 0.5) ** 2, bce2 * sig2**2 + 0.0], rel=1e-5
    )
    gt_index, _ = _assign(logits, priors, preds, [[0, 0, 10, 10]], [1])
    assert gt_index == [0, -1]


@pytest.mark.parametrize(
    ("gts", "labels"), [([], []), ([[100, 100, 110, 110]], [0])], ids=["no boxes", "no prior inside"]
)
def test_everything_is_background_without_candidates(gts: list[list[float]], labels: list[int]) -> None:
    gt_index, iou = _assign(torch.zeros(2, 1), [[5, 5], [2, 2]], [[0, 0, 10, 10]] * 2,
                            gts or [[0, 0, 0, 0]][:0], labels)  # fmt: skip
    assert (gt_index, iou) == ([-1, -1], [0.0, 0.0])
