"""The NanoDet-Plus training recipe: every hyper-parameter of `edgepipe train`, with its default and bounds.

Defaults are the official `config/nanodet-plus-m_{320,416}.yml` of RangiLyu/nanodet unless a comment
says why a fine-tune differs. No torch here, so the command line can show these defaults without it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Range = tuple[float, float]


class Augmentation(BaseModel):
    """The official training pipeline: random scale, stretch, shift and flip, then colour jitter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: Range = Field((0.6, 1.4), description="zoom factor range (both axes)")
    stretch_x: Range = Field((0.8, 1.2), description="extra horizontal zoom range")
    stretch_y: Range = Field((0.8, 1.2), description="extra vertical zoom range")
    translate: float = Field(0.2, ge=0, le=0.5, description="image centre shift, share of the side")
    flip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    brightness: float = Field(0.2, ge=0, le=1, description="added to [0, 1] pixels: ±this")
    contrast: Range = Field((0.6, 1.4), description="pixel multiplier range")
    saturation: Range = Field((0.5, 1.2), description="HSV saturation multiplier range")
    # the official pipeline applies each colour change with probability 1/2 (color.py)
    colour_probability: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> Augmentation:
        for name in ("scale", "stretch_x", "stretch_y", "contrast", "saturation"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name}: expected 0 < low <= high, got ({low}, {high})")
        return self


class Recipe(BaseModel):
    """Optimiser, schedule, EMA, losses, assigner and augmentation of one training run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1, description="passes over the training images")
    # The official batch is 96 on a GPU; 8 keeps a CPU step near 2 s for the 320 model.
    batch: int = Field(8, ge=1, le=512, description="images per optimiser step")
    # AdamW with weight decay 0.05 as the official config, but a tenth of its lr of 1e-3 (set for
    # batch 96 from ImageNet weights). Measured from the COCO weights, 64 COCO images, batch 8, person
    # AP on 16 held out (official 0.371): lr 5e-4 fell to 0.25-0.33 within 10 epochs, 1e-4 stayed at
    # 0.35-0.38 over 6; on 8 images without augmentation, lr 1e-3 cut AP50 from 0.72 to 0.21 in 4 steps.
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.05, ge=0)
    # Linear warm-up from warmup_ratio·lr over warmup_steps steps, then cosine to eta_min by the
    # last epoch. A fine-tune has far fewer than the official 500 warm-up steps in all, so the
    # warm-up is also capped at warmup_max_share of the run.
    warmup_steps: int = Field(500, ge=0)
    warmup_ratio: float = Field(1e-4, gt=0, le=1)
    warmup_max_share: float = Field(0.1, ge=0, le=1)
    eta_min: float = Field(5e-5, ge=0)
    grad_clip: float = Field(35.0, gt=0, description="max L2 norm of all gradients")
    ema_decay: float = Field(0.9998, ge=0, le=1, description="ExpMovingAverager decay")
    # From this epoch on the AGM no longer sends gradients into the backbone and the main PAN.
    detach_epoch: int = Field(10, ge=0)
    # Whose predictions guide the assigner. "agm": always the AGM, as the official training.
    # "better": the AGM once its loss over the last epoch is below the main head's, the main head
    # before that. A start without AGM weights (the official ONNX) has a new AGM that knows nothing
    # yet while the main head is trained; letting it steer at once knocked AP50 on 8 images from
    # 0.75 to 0.64 in two steps, where the main head's own guidance kept rising.
    assign_guide: Literal["agm", "better"] = "better"
    # BatchNorm statistics stay as loaded: the BN-folded official start is exact only with them, and
    # batch statistics of 8 images are too noisy to re-estimate (the affine BN weights still train).
    freeze_bn_stats: bool = True
    # Losses (NanoDetPlusHead.loss_cfg) and the Dynamic Soft Label Assigner.
    qfl_beta: float = Field(2.0, ge=0)
    qfl_weight: float = Field(1.0, ge=0)
    dfl_weight: float = Field(0.25, ge=0)
    giou_weight: float = Field(2.0, ge=0)
    assigner_topk: int = Field(13, ge=1)
    assigner_iou_factor: float = Field(3.0, ge=0)
    augment: bool = Field(True, description="False: plain resize, no jitter (overfit checks)")
    augmentation: Augmentation = Field(default_factory=Augmentation)
    seed: int = Field(0, ge=0)

    def warmup_total_steps(self, total_steps: int) -> int:
        """Warm-up length for a run of `total_steps` optimiser steps."""
        return min(self.warmup_steps, int(self.warmup_max_share * total_steps))
