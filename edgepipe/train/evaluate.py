"""Validation: COCO mAP of a training model on a DetectionSet, with pycocotools.

The images go through exactly what the runtime does (plain resize, BGR mean/std, the deploy
forward with sigmoid scores, edgepipe.detect's GFL decode) with the official evaluation settings:
every class above 0.05 per anchor, class-aware NMS 0.6, at most 100 boxes per image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from edgepipe.detect.decoders.base import DecodeSettings
from edgepipe.detect.decoders.nanodet_plus import NanoDetPlusDecoder
from edgepipe.evaluate.coco import MAX_DETECTIONS, NMS_IOU, SCORE_THRESHOLD, bbox_evaluation
from edgepipe.modelcard import DEFAULT_ARCH, ModelCard
from edgepipe.train.augment import resized
from edgepipe.train.dataset import DetectionSet
from edgepipe.train.reports import Scores
from edgepipe.types import Detections

COCO_EVAL = DecodeSettings(SCORE_THRESHOLD, NMS_IOU, MAX_DETECTIONS, multi_label=True)
BATCH = 8


@torch.no_grad()
def predict(
    forward: Callable[[Tensor], Tensor], dataset: DetectionSet, size: int, device: torch.device
) -> list[Detections]:
    """Detections in each image's own pixels; `forward` maps `[B, 3, S, S]` to sigmoid-score output."""
    import cv2

    decoder = NanoDetPlusDecoder(ModelCard(arch=DEFAULT_ARCH, input_size=size, labels=dataset.labels))
    empty = np.zeros((0, 4), np.float32)
    found: list[Detections] = []
    for start in range(0, len(dataset.samples), BATCH):
        samples = dataset.samples[start : start + BATCH]
        inputs = [
            resized(np.asarray(cv2.imread(str(s.path)), np.uint8), empty, np.zeros(0, np.int64), size).image
            for s in samples
        ]
        raw = forward(torch.from_numpy(np.stack(inputs)).to(device)).float().cpu().numpy()
        for sample, output in zip(samples, raw, strict=True):
            found.append(decoder.decode([output[None]], (sample.height, sample.width), COCO_EVAL))
    return found


def coco_scores(dataset: DetectionSet, detections: list[Detections]) -> Scores:
    """pycocotools' bbox evaluation of `detections` (one per sample, in order) against the set."""
    from pycocotools.coco import COCO

    results: list[dict[str, Any]] = []
    for sample, found in zip(dataset.samples, detections, strict=True):
        for (x1, y1, x2, y2), score, class_id in zip(
            found.xyxy.tolist(), found.score.tolist(), found.class_id.tolist(), strict=True
        ):
            results.append({"image_id": sample.image_id, "category_id": class_id,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})  # fmt: skip
    zeros = dict.fromkeys(dataset.labels, 0.0)
    if not results:
        return Scores(0.0, 0.0, zeros, dict(zeros))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = dataset.coco_truth()
        truth.createIndex()
    evaluation = bbox_evaluation(truth, results)
    # precision: [IoU thresholds, recall points, classes, area ranges (0 = all), max dets (-1 = 100)]
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_class_ap, per_class_ap50 = {}, {}
    for k, label in enumerate(dataset.labels):
        every, at50 = precision[:, :, k], precision[0, :, k]
        per_class_ap[label] = float(every[every > -1].mean()) if (every > -1).any() else 0.0
        per_class_ap50[label] = float(at50[at50 > -1].mean()) if (at50 > -1).any() else 0.0
    return Scores(
        max(float(evaluation.stats[0]), 0.0),
        max(float(evaluation.stats[1]), 0.0),
        per_class_ap,
        per_class_ap50,
    )
