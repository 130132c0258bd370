"""COCO bbox evaluation with the official NanoDet protocol, one home for the detector benchmark,
training's validation and quantization: every class above 0.05 per anchor, class-aware NMS 0.6,
at most 100 boxes per image, scored by pycocotools."""

from __future__ import annotations

import contextlib
import io
from typing import Any

# NanoDetPlusHead.get_bboxes / the official evaluator
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.6
MAX_DETECTIONS = 100


def bbox_evaluation(truth: Any, results: list[dict[str, Any]]) -> Any:
    """pycocotools' COCOeval of `results` (image_id, category_id, bbox xywh, score) against the
    COCO object `truth`, evaluated, accumulated and summarized (pycocotools' printing silenced).
    `results` must not be empty (pycocotools cannot load nothing)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation
