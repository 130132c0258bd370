"""Learning rate at each step: linear warm-up over the first steps, cosine annealing per epoch.

Official NanoDet-Plus: `warmup: linear` (from ratio·lr) and `CosineAnnealingLR(T_max=total_epochs,
eta_min)` stepped once per epoch; here both in closed form, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math

from edgepipe.train.recipe import Recipe


def learning_rate(recipe: Recipe, epoch: int, step: int, warmup_steps: int) -> float:
    """lr for optimiser step `step` (0-based, counted over the whole run) inside epoch `epoch` (0-based)."""
    cosine = (
        recipe.eta_min + (recipe.lr - recipe.eta_min) * (1 + math.cos(math.pi * epoch / recipe.epochs)) / 2
    )
    if step >= warmup_steps:
        return cosine
    return cosine * (1 - (1 - step / warmup_steps) * (1 - recipe.warmup_ratio))
