"""Dynamic Soft Label Assigner (NanoDet-Plus): which anchors learn which ground-truth box.

Candidates are the anchors whose centre lies inside some box. The cost of anchor i for box j is
the focal-weighted BCE of its class scores against the soft label (one-hot · IoU) plus
`iou_factor · -log(IoU)`. Each box takes its k cheapest candidates, k = ⌊Σ top-`topk` IoUs⌋ ≥ 1
(OTA/YOLOX dynamic k); an anchor taken by several boxes keeps only its cheapest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgepipe.train.losses import box_iou

LOG_EPS = 1e-7  # -log(IoU + eps): a zero IoU costs ~16, not infinity


@dataclass(frozen=True, slots=True)
class Assignment:
    """Per anchor: the matched box (-1 = background) and the IoU of its predicted box with it."""

    gt_index: Tensor  # (N,) long
    iou: Tensor  # (N,) float, 0 for background

    @property
    def positive(self) -> Tensor:
        return self.gt_index >= 0


@torch.no_grad()
def assign(
    logits: Tensor,
    priors_xy: Tensor,
    pred_xyxy: Tensor,
    gt_xyxy: Tensor,
    gt_labels: Tensor,
    *,
    topk: int,
    iou_factor: float,
) -> Assignment:
    """`logits` (N, C) class logits, `priors_xy` (N, 2) anchor centres, `pred_xyxy` (N, 4) predicted
    boxes, `gt_xyxy` (K, 4), `gt_labels` (K,) → Assignment (official DynamicSoftLabelAssigner)."""
    n = len(pred_xyxy)
    gt_index = torch.full((n,), -1, dtype=torch.long, device=pred_xyxy.device)
    iou = torch.zeros(n, dtype=pred_xyxy.dtype, device=pred_xyxy.device)
    if len(gt_xyxy) == 0 or n == 0:
        return Assignment(gt_index, iou)
    # strictly inside: the distances to all four sides are positive
    deltas = torch.cat(
        (priors_xy[:, None] - gt_xyxy[None, :, :2], gt_xyxy[None, :, 2:] - priors_xy[:, None]), dim=2
    )
    candidate = (deltas.min(dim=2).values > 0).any(dim=1)
    if not candidate.any():
        return Assignment(gt_index, iou)
    pairwise_iou = box_iou(pred_xyxy[candidate], gt_xyxy)  # (V, K)
    cost = matching_cost(logits[candidate], pairwise_iou, gt_labels, iou_factor)
    matched = _dynamic_k_matching(cost, pairwise_iou, topk)  # (V,) box index or -1
    candidate_index = torch.nonzero(candidate).squeeze(1)
    positive = matched >= 0
    gt_index[candidate_index[positive]] = matched[positive]
    iou[candidate_index[positive]] = pairwise_iou[positive, matched[positive]]
    return Assignment(gt_index, iou)


def matching_cost(logits: Tensor, pairwise_iou: Tensor, gt_labels: Tensor, iou_factor: float) -> Tensor:
    """(V, C) logits, (V, K) IoUs → (V, K) matching cost."""
    num_candidates, num_gt = pairwise_iou.shape
    onehot = F.one_hot(gt_labels.long(), logits.shape[1]).to(logits.dtype)  # (K, C)
    soft_label = onehot[None] * pairwise_iou[..., None]  # (V, K, C)
    scores = logits[:, None, :].expand(num_candidates, num_gt, -1)
    focal = (soft_label - scores.sigmoid()).abs().pow(2.0)
    cls_cost = (F.binary_cross_entropy_with_logits(scores, soft_label, reduction="none") * focal).sum(dim=2)
    return cls_cost - iou_factor * torch.log(pairwise_iou + LOG_EPS)


def _dynamic_k_matching(cost: Tensor, pairwise_iou: Tensor, topk: int) -> Tensor:
    """(V, K) cost and IoU → (V,) matched box per candidate, -1 where none."""
    num_candidates, num_gt = cost.shape
    top_ious = torch.topk(pairwise_iou, min(topk, num_candidates), dim=0).values  # (k, K)
    dynamic_k = top_ious.sum(dim=0).int().clamp(min=1)
    matching = torch.zeros_like(cost, dtype=torch.bool)
    for j in range(num_gt):
        cheapest = torch.topk(cost[:, j], int(dynamic_k[j]), largest=False).indices
        matching[cheapest, j] = True
    contested = matching.sum(dim=1) > 1
    if contested.any():
        matching[contested] = False
        matching[contested, cost[contested].argmin(dim=1)] = True
    matched = matching.to(torch.int8).argmax(dim=1)
    return torch.where(matching.any(dim=1), matched, torch.full_like(matched, -1))
