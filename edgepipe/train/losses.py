"""The NanoDet-Plus losses: Quality Focal Loss, Distribution Focal Loss (GFL, Li et al. 2020) and GIoU.

Each returns the per-element loss; the head's criterion weights and averages them as the official
`NanoDetPlusHead._get_loss_from_assign` does. Boxes are `(x1, y1, x2, y2)` in input pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IOU_EPS = 1e-6  # bbox_overlaps / GIoULoss eps: floor of the union and of the enclosing area


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU, `(N, 4)` and `(M, 4)` → `(N, M)`."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area_a[:, None] + area_b[None, :] - overlap).clamp(min=IOU_EPS)
    return overlap / union


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - GIoU of aligned pairs `(N, 4)`, `(N, 4)` → `(N,)` (Rezatofighi et al. 2019)."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    wh = (torch.min(pred[:, 2:], target[:, 2:]) - torch.max(pred[:, :2], target[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = (area_p + area_t - overlap).clamp(min=IOU_EPS)
    enclose_wh = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).clamp(min=0)
    enclose = (enclose_wh[:, 0] * enclose_wh[:, 1]).clamp(min=IOU_EPS)
    giou = overlap / union - (enclose - union) / enclose
    return 1 - giou


def quality_focal_loss(logits: Tensor, labels: Tensor, quality: Tensor, beta: float) -> Tensor:
    """QFL per anchor, summed over classes: `(N, C)` logits, `(N,)` labels (C = background),
    `(N,)` target quality (the IoU of the assigned box) → `(N,)`.

    Every class of every anchor learns towards 0, scaled by sigmoid^beta; the assigned class of a
    positive anchor learns towards its IoU instead, scaled by |IoU - sigmoid|^beta."""
    probability = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    loss = loss * probability.pow(beta)
    positive = torch.nonzero((labels >= 0) & (labels < logits.shape[1])).squeeze(1)
    if positive.numel():
        cls = labels[positive]
        target = quality[positive]
        scale = (target - probability[positive, cls]).abs().pow(beta)
        bce = F.binary_cross_entropy_with_logits(logits[positive, cls], target, reduction="none")
        loss = loss.index_put((positive, cls), bce * scale)
    return loss.sum(dim=1)


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """DFL: `(N, reg_max+1)` bin logits, `(N,)` real-valued target distance in bins (< reg_max) →
    `(N,)` cross-entropy to the two bins around the target, weighted by nearness."""
    left = target.long()
    right = left + 1
    weight_left = right.float() - target
    weight_right = target - left.float()
    return (
        F.cross_entropy(logits, left, reduction="none") * weight_left
        + F.cross_entropy(logits, right, reduction="none") * weight_right
    )
