"""QFL, DFL, GIoU and pairwise IoU against values worked out by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="training needs the export extra: pip install 'edgepipe[train]'")

from edgepipe.train.losses import box_iou, distribution_focal_loss, giou_loss, quality_focal_loss  # noqa: E402

pytestmark = pytest.mark.slow  # needs torch
LOG2, LOG3 = math.log(2), math.log(3)


def test_qfl_positive_learns_its_iou_and_the_other_class_zero() -> None:
    # sigmoid(0) = 0.5 for both classes; class 0 is assigned with IoU 0.8.
    # class 0: BCE(0, 0.8) = log 2, times |0.8 - 0.5|^2;  class 1: BCE(0, 0) = log 2, times 0.5^2
    loss = quality_focal_loss(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([0.8]), beta=2.0)
    assert loss.tolist() == pytest.approx([LOG2 * 0.09 + LOG2 * 0.25])


def test_qfl_negative_pushes_every_class_towards_zero() -> None:
    # label 2 = background of 2 classes. logit log 3 → sigmoid 0.75: BCE(·, 0) = log 4, times 0.75^2
    logits = torch.tensor([[math.log(3), 0.0]])
    loss = quality_focal_loss(logits, torch.tensor([2]), torch.tensor([0.0]), beta=2.0)
    assert loss.tolist() == pytest.approx([math.log(4) * 0.5625 + LOG2 * 0.25])


def test_qfl_is_zero_for_a_perfect_score() -> None:
    # sigmoid(x) = IoU exactly: the focal factor |IoU - sigmoid|^beta is 0; the other class is
    # at sigmoid(-30), negligible
    logits = torch.tensor([[math.log(0.6 / 0.4), -30.0]])
    assert float(quality_focal_loss(logits, torch.tensor([0]), torch.tensor([0.6]), beta=2.0)[0]) < 1e-12


@pytest.mark.parametrize(
    ("bins", "target", "expected"),
    [
        ([0.0, 0.0, 0.0], 0.25, LOG3),  # uniform: both neighbours cost log 3
        # probabilities 1/4, 1/2, 1/4; target 0.25 = 0.75 of bin 0 + 0.25 of bin 1
        ([0.0, LOG2, 0.0], 0.25, 0.75 * math.log(4) + 0.25 * LOG2),
        ([0.0, LOG2, 0.0], 1.0, LOG2),  # on a bin: all weight on it
        ([0.0, LOG2, 0.0], 1.5, 0.5 * LOG2 + 0.5 * math.log(4)),
    ],
)
def test_dfl(bins: list[float], target: float, expected: float) -> None:
    loss = distribution_focal_loss(torch.tensor([bins]), torch.tensor([target]))
    assert loss.tolist() == pytest.approx([expected])


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 0.0),
        # overlap 1, union 7, enclosing 3x3 = 9: GIoU = 1/7 - 2/9
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 - (1 / 7 - 2 / 9)),
        # disjoint: IoU 0, union 2, enclosing 3: GIoU = -1/3
        ([0, 0, 1, 1], [2, 0, 3, 1], 1 + 1 / 3),
        ([0, 0, 4, 4], [1, 1, 3, 3], 1 - 4 / 16),  # contained: IoU 4/16, enclosing = union
    ],
)
def test_giou_loss(pred: list[float], target: list[float], expected: float) -> None:
    loss = giou_loss(torch.tensor([pred], dtype=torch.float32), torch.tensor([target], dtype=torch.float32))
    assert loss.tolist() == pytest.approx([expected], abs=1e-6)


def test_box_iou_is_pairwise() -> None:
    a = torch.tensor([[0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]], dtype=torch.float32)
    b = torch.tensor([[0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]], dtype=torch.float32)
    assert box_iou(a, b).flatten().tolist() == pytest.approx([0.5, 0, 0, 0, 0, 1, 0, 0, 0])
    assert box_iou(a[:0], b).shape == (0, 3)
