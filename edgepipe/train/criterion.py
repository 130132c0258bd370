"""The NanoDet-Plus training loss of one batch: decode, assign (guided by the AGM), QFL + GIoU + DFL.

As `NanoDetPlusHead.loss`: the assigner sees the AGM's detached predictions; the same targets
then train both the main head and the AGM head, and the two losses are added. QFL is averaged over
the positives of the batch; GIoU and DFL are weighted by each positive's best class score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgepipe.detect.decoders.nanodet_plus import center_priors
from edgepipe.train.assigner import assign
from edgepipe.train.losses import distribution_focal_loss, giou_loss, quality_focal_loss
from edgepipe.train.recipe import Recipe

LOSS_TERMS = ("qfl", "giou", "dfl", "aux_qfl", "aux_giou", "aux_dfl")
TARGET_MARGIN = 0.1  # distance targets stop at reg_max - 0.1 bins so that DFL's right bin exists


@dataclass(frozen=True, slots=True)
class Targets:
    """Per anchor of the whole batch, flattened to `B·N` rows."""

    labels: Tensor  # (B·N,) class index, num_classes for background
    quality: Tensor  # (B·N,) IoU target of the assigned class
    boxes: Tensor  # (B·N, 4) assigned box
    distances: Tensor  # (B·N, 4) assigned box as l, t, r, b in bins
    num_positive: int


class Criterion:
    """Loss of NanoDet-Plus logits `[B, N, C + 4·(reg_max+1)]` against per-image boxes."""

    def __init__(self, num_classes: int, input_size: int, strides: Sequence[int], reg_max: int, recipe: Recipe,
                 device: torch.device) -> None:  # fmt: skip
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.recipe = recipe
        priors = torch.from_numpy(center_priors(input_size, strides)).to(device)
        self.priors_xy = priors[:, :2]
        self.stride = priors[:, 2:3]
        self.project = torch.arange(reg_max + 1, dtype=torch.float32, device=device)

    def __call__(
        self,
        main: Tensor,
        aux: Tensor,
        gt_xyxy: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        *,
        guide_with_aux: bool = True,
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss (main + AGM) and its terms. The AGM's predictions guide the assigner, or the
        main head's own with `guide_with_aux=False` (a new AGM that has not learnt anything yet)."""
        main_boxes, aux_boxes = self.decode(main), self.decode(aux)
        guide, guide_boxes = (aux, aux_boxes) if guide_with_aux else (main, main_boxes)
        targets = self.targets(guide.detach(), guide_boxes.detach(), gt_xyxy, gt_labels)
        loss, terms = self.loss(main, main_boxes, targets, "")
        aux_loss, aux_terms = self.loss(aux, aux_boxes, targets, "aux_")
        return loss + aux_loss, {**terms, **aux_terms}

    def decode(self, logits: Tensor) -> Tensor:
        """`[B, N, ·]` logits → `[B, N, 4]` boxes: expected bin (softmax · 0..reg_max) · stride."""
        bins = logits[..., self.num_classes :].reshape(*logits.shape[:2], 4, self.reg_max + 1)
        distance = F.softmax(bins, dim=-1) @ self.project * self.stride
        return torch.cat((self.priors_xy - distance[..., :2], self.priors_xy + distance[..., 2:]), dim=-1)

    def targets(
        self, logits: Tensor, boxes: Tensor, gt_xyxy: Sequence[Tensor], gt_labels: Sequence[Tensor]
    ) -> Targets:
        labels, quality, box_targets, distances = [], [], [], []
        num_positive = 0
        for image_logits, image_boxes, gt, gt_label in zip(logits, boxes, gt_xyxy, gt_labels, strict=True):
            result = assign(image_logits[:, : self.num_classes], self.priors_xy, image_boxes, gt, gt_label,
                            topk=self.recipe.assigner_topk, iou_factor=self.recipe.assigner_iou_factor)  # fmt: skip
            positive = result.positive
            num_positive += int(positive.sum())
            matched = result.gt_index.clamp(min=0)
            label = torch.where(positive, gt_label[matched] if len(gt) else matched, self.num_classes)
            box = gt[matched] if len(gt) else torch.zeros_like(image_boxes)
            box = torch.where(positive[:, None], box, torch.zeros_like(box))
            ltrb = torch.cat((self.priors_xy - box[:, :2], box[:, 2:] - self.priors_xy), dim=1) / self.stride
            labels.append(label)
            quality.append(result.iou)
            box_targets.append(box)
            distances.append(ltrb.clamp(min=0, max=self.reg_max - TARGET_MARGIN))
        return Targets(
            torch.cat(labels), torch.cat(quality), torch.cat(box_targets), torch.cat(distances), num_positive
        )

    def loss(
        self, logits: Tensor, boxes: Tensor, targets: Targets, prefix: str
    ) -> tuple[Tensor, dict[str, float]]:
        """QFL + GIoU + DFL of one head (`_get_loss_from_assign`)."""
        r = self.recipe
        cls_logits = logits[..., : self.num_classes].reshape(-1, self.num_classes)
        bin_logits = logits[..., self.num_classes :].reshape(-1, 4, self.reg_max + 1)
        boxes = boxes.reshape(-1, 4)
        qfl = quality_focal_loss(cls_logits, targets.labels, targets.quality, r.qfl_beta).sum()
        qfl = r.qfl_weight * qfl / max(targets.num_positive, 1)
        positive = torch.nonzero(targets.labels < self.num_classes).squeeze(1)
        if positive.numel():
            # a positive counts as much as the head already believes in it (its best class score)
            weight = cls_logits[positive].detach().sigmoid().max(dim=1).values
            avg = max(float(weight.sum()), 1.0)
            giou = r.giou_weight * (giou_loss(boxes[positive], targets.boxes[positive]) * weight).sum() / avg
            dfl = distribution_focal_loss(bin_logits[positive].reshape(-1, self.reg_max + 1),
                                          targets.distances[positive].reshape(-1))  # fmt: skip
            dfl = r.dfl_weight * (dfl * weight.repeat_interleave(4)).sum() / (4.0 * avg)
        else:
            giou = dfl = bin_logits.sum() * 0.0
        terms = {f"{prefix}qfl": qfl.item(), f"{prefix}giou": giou.item(), f"{prefix}dfl": dfl.item()}
        return qfl + giou + dfl, terms
