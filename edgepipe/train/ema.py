"""Exponential moving average of the weights (NanoDet's ExpMovingAverager): the model that is saved.

The weight of the newest values starts near 1 and decays towards 1 - decay over the first few
thousand steps, so early averages follow the model closely: w = decay·exp(-(1 + step)/2000) + 1 - decay.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

RAMP_STEPS = 2000.0


def new_value_weight(decay: float, step: int) -> float:
    """Share of the current weights in the average after optimiser step `step` (0-based)."""
    return decay * math.exp(-(1 + step) / RAMP_STEPS) + (1 - decay)


class ExpMovingAverage:
    """Average of every parameter and buffer of a model, keyed by their state-dict names."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state: dict[str, Tensor] = {k: v.detach().clone() for k, v in _tensors(model)}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        weight = new_value_weight(self.decay, step)
        for name, value in _tensors(model):
            average = self.state[name]
            if average.is_floating_point():
                average.mul_(1 - weight).add_(value.detach(), alpha=weight)
            else:  # e.g. BN's num_batches_tracked: a counter, not something to average
                average.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, value in _tensors(model):
            value.copy_(self.state[name])

    def state_dict(self) -> dict[str, Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = self.state.keys() - state.keys()
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        self.state = {k: state[k].detach().clone() for k in self.state}


def _tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]
