"""What training reports as it goes: per step, per epoch, and COCO scores. Plain values, no torch,
so the progress display and its tests need none."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scores:
    """COCO box metrics: mAP@[0.5:0.95], AP50, and AP / AP50 of each class (by label)."""

    map: float
    ap50: float
    per_class_ap: dict[str, float]
    per_class_ap50: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        return {"mAP": self.map, "AP50": self.ap50,
                **{f"AP/{k}": v for k, v in self.per_class_ap.items()}}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StepReport:
    epoch: int  # 0-based
    batch: int  # 1-based within the epoch
    batches: int  # per epoch
    step: int  # optimiser steps done in the whole run
    total_steps: int
    lr: float
    loss: float
    terms: dict[str, float]
    elapsed_s: float  # since this process started training
    steps_this_process: int


@dataclass(frozen=True, slots=True)
class EpochReport:
    epoch: int  # 0-based
    loss: dict[str, float]  # mean of each term over the epoch, and "loss"
    scores: Scores | None  # EMA model on the validation set
    best: bool
    seconds: float
