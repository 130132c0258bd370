"""Learning rate: linear warm-up, then cosine annealing per epoch down to eta_min."""

from __future__ import annotations

import pytest

from edgepipe.train.recipe import Recipe
from edgepipe.train.schedule import learning_rate

RECIPE = Recipe(epochs=10, lr=1e-3, eta_min=5e-5, warmup_ratio=1e-4)


@pytest.mark.parametrize(
    ("epoch", "step", "expected"),
    [
        (0, 0, 1e-3 * 1e-4),  # warm-up starts at ratio·lr
        (0, 50, 1e-3 * (1 - 0.5 * (1 - 1e-4))),  # halfway up
        (0, 100, 1e-3),  # warm-up done, cosine at epoch 0
        (5, 500, 5e-5 + (1e-3 - 5e-5) / 2),  # half the epochs: halfway down
        (9, 900, 5e-5 + (1e-3 - 5e-5) * (1 + 0.9510565162951535 * -1) / 2),  # cos(0.9 pi)
    ],
)
def test_learning_rate(epoch: int, step: int, expected: float) -> None:
    assert learning_rate(RECIPE, epoch, step, warmup_steps=100) == pytest.approx(expected)


@pytest.mark.parametrize(("total", "expected"), [(10_000, 500), (80, 8), (5, 0)])
def test_warm_up_is_the_official_500_steps_or_a_tenth_of_a_short_run(total: int, expected: int) -> None:
    assert Recipe().warmup_total_steps(total) == expected
