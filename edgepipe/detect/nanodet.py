"""NanoDet-Plus decode: raw head output [N, C + 4·(reg_max+1)] → Detections in frame pixels.

GFL decode as in RangiLyu/nanodet (`NanoDetPlusHead.get_bboxes`, `Integral`, `distance2bbox`):
softmax over the reg_max+1 bins of each side, expectation times stride, distances from the grid
point (x·s, y·s) (no +0.5), clamp to the input square, scale to the frame, class-aware NMS.
No OpenVINO import here: this is the model's meaning, not where it runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import ModelError
from edgepipe.geometry import nms
from edgepipe.modelcard import NANODET_MEAN_BGR, NANODET_STD_BGR, InputKind, ModelCard, card_path, read_card
from edgepipe.types import Detections

DEFAULT_STRIDES = (8, 16, 32, 64)
DEFAULT_REG_MAX = 7
BEST_SCORE_MARGIN = 0.01


def center_priors(input_size: int, strides: Sequence[int]) -> NDArray[np.float32]:
    """(N, 3) rows of [x·s, y·s, s] in the head's output order: stride by stride, row-major."""
    levels = []
    for s in strides:
        side = math.ceil(input_size / s)
        y, x = np.mgrid[0:side, 0:side]
        levels.append(np.stack([x.ravel() * s, y.ravel() * s, np.full(side * side, s)], axis=1))
    return np.concatenate(levels).astype(np.float32)


def num_anchors(input_size: int, strides: Sequence[int]) -> int:
    return sum(math.ceil(input_size / s) ** 2 for s in strides)


class NanoDetDecoder:
    """Decodes one image's raw output; built once per model, reused for every frame."""

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        *,
        reg_max: int = DEFAULT_REG_MAX,
        strides: Sequence[int] = DEFAULT_STRIDES,
    ) -> None:
        self.input_size = input_size
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        self.priors = center_priors(input_size, self.strides)
        self._project = np.arange(reg_max + 1, dtype=np.float32)

    @property
    def num_outputs(self) -> int:
        """Columns per anchor: class scores then 4 sides of reg_max+1 bins each."""
        return self.num_classes + 4 * (self.reg_max + 1)

    def decode(
        self,
        raw: NDArray[np.floating],
        frame_hw: tuple[int, int],
        *,
        score_threshold: float,
        nms_iou: float,
        max_detections: int = 100,
        class_mask: NDArray[np.bool_] | None = None,
        multi_label: bool = False,
        best_score: NDArray[np.floating] | None = None,
    ) -> Detections:
        """`raw` (N, C + 4·(reg_max+1)) with sigmoid scores → Detections in a frame of `frame_hw` pixels.

        One candidate per anchor (its best class, as the official C++ demos) unless `multi_label`
        (every class above the threshold, as the official Python eval). `class_mask` (C,) bool keeps
        only those classes; applying it before NMS is exact because NMS is class-aware.
        `best_score` (N,), the max class score of each anchor if the runtime computed it, saves
        reading the whole score block."""
        raw = raw.reshape(len(self.priors), self.num_outputs)
        scores = raw[:, : self.num_classes]
        # Only the few anchors above the threshold need argmax and softmax: most of the speed.
        # (np.nonzero on the whole strided score block costs 4x more than any() + flatnonzero.)
        if best_score is not None:
            # the margin covers a runtime that rounds the max (bf16); `above` re-checks exactly
            candidates = np.flatnonzero(best_score.reshape(-1) > score_threshold - BEST_SCORE_MARGIN)
        else:
            candidates = np.flatnonzero((scores > score_threshold).any(axis=1))
        above = scores[candidates] > score_threshold  # (K, C) for the few candidate anchors
        if multi_label:
            rows, class_id = np.nonzero(above)
        else:
            rows = np.flatnonzero(above.any(axis=1))
            class_id = scores[candidates[rows]].argmax(axis=1)
        if class_mask is not None:
            keep_class = class_mask[class_id]
            rows, class_id = rows[keep_class], class_id[keep_class]
        if rows.size == 0:
            return Detections.empty()
        anchor = candidates[rows]
        boxes = self._boxes(raw[candidates, self.num_classes :], self.priors[candidates], frame_hw)[rows]
        score = scores[anchor, class_id].astype(np.float32)
        keep = nms(boxes, score, class_id, nms_iou)[:max_detections]
        return Detections(boxes[keep], score[keep], class_id[keep].astype(np.int32))

    def _boxes(
        self, bins: NDArray[np.floating], priors: NDArray[np.float32], frame_hw: tuple[int, int]
    ) -> NDArray[np.float32]:
        """(K, 4·(reg_max+1)) bin logits, (K, 3) priors → (K, 4) xyxy in frame pixels."""
        logits = bins.reshape(-1, 4, self.reg_max + 1).astype(np.float32)
        logits = logits - logits.max(axis=2, keepdims=True)  # stable softmax
        weights = np.exp(logits)
        distance = (weights @ self._project) / weights.sum(axis=2) * priors[:, 2:3]  # (K, 4) l, t, r, b
        cx, cy = priors[:, 0:1], priors[:, 1:2]
        size = float(self.input_size)
        xyxy = np.concatenate(
            [cx - distance[:, 0:1], cy - distance[:, 1:2], cx + distance[:, 2:3], cy + distance[:, 3:4]],
            axis=1,
        )
        np.clip(xyxy, 0.0, size, out=xyxy)
        height, width = frame_hw
        xyxy *= np.array([width, height, width, height], np.float32) / size
        return xyxy.astype(np.float32, copy=False)


def _card_from_rt_info(info: dict[str, str], origin: str) -> ModelCard | None:
    """model_api-style `model_info` in the IR: a whole card as JSON under "card", or separate keys."""
    if "card" in info:
        try:
            data = json.loads(info["card"])
        except json.JSONDecodeError as error:
            raise ModelError(f"{origin}: rt_info model_info/card is not valid JSON: {error.msg}") from None
        return ModelCard.from_dict(data, f"{origin} rt_info") if isinstance(data, dict) else None
    if "labels" not in info:
        return None
    try:
        numbers = {
            k: [float(v) for v in info[k].split()] for k in ("mean_values", "scale_values") if k in info
        }
        return ModelCard(
            arch=info.get("arch", info.get("model_type", "nanodet-plus")),
            input_size=int(info.get("input_size", "0")),
            labels=tuple(info["labels"].split()),
            reg_max=int(info.get("reg_max", DEFAULT_REG_MAX)),
            strides=tuple(int(s) for s in info.get("strides", "8 16 32 64").split()),
            mean_bgr=tuple(numbers.get("mean_values", NANODET_MEAN_BGR)),  # type: ignore[arg-type]
            std_bgr=tuple(numbers.get("scale_values", NANODET_STD_BGR)),  # type: ignore[arg-type]
        )
    except ValueError as error:
        raise ModelError(f"{origin}: rt_info model_info has a bad value: {error}") from None


def _default_card(model_path: Path, input_size: int) -> ModelCard:
    names = model_path.parent / "coco.names"
    if not names.is_file():
        raise ModelError(
            f"{model_path}: no model card {card_path(model_path).name}, no rt_info model_info and no "
            f"coco.names beside it, so the class names are unknown; add one of them"
        )
    labels = tuple(line.strip() for line in names.read_text(encoding="utf-8").splitlines() if line.strip())
    return ModelCard(arch="nanodet-plus", input_size=input_size, labels=labels)


def resolve_card(
    model_path: Path,
    rt_info: dict[str, str],
    input_shape: Sequence[int],
    input_type: str,
    output_shapes: Sequence[Sequence[int]],
) -> ModelCard:
    """What the model means, from (in order) the IR's rt_info, `<stem>.json`, or NanoDet-Plus
    defaults with labels from `coco.names` — checked against the shapes the file really has."""
    shape = tuple(input_shape)
    if (
        len(shape) == 4
        and shape[0] == 1
        and shape[1] == 3
        and shape[2] == shape[3]
        and input_type.startswith("f")
    ):
        kind: InputKind = "float_nchw"
    elif len(shape) == 4 and shape[0] == 1 and shape[3] == 3 and shape[1] == shape[2] and input_type == "u8":
        kind = "uint8_nhwc"
    else:
        raise ModelError(
            f"{model_path}: expected input float [1,3,S,S] or uint8 [1,S,S,3], "
            f"found {input_type} {list(shape)}"
        )
    size = shape[2] if kind == "float_nchw" else shape[1]
    card = _card_from_rt_info(rt_info, str(model_path))
    if card is None and card_path(model_path).is_file():
        card = read_card(card_path(model_path))
    if card is None:
        card = _default_card(model_path, size)
    if card.input_size in (0, size):
        card = replace(card, input_size=size, input_kind=kind)
    else:
        raise ModelError(f"{model_path}: model card says input size {card.input_size}, the model has {size}")
    expected = (1, num_anchors(size, card.strides), len(card.labels) + 4 * (card.reg_max + 1))
    found = [list(s) for s in output_shapes]
    if len(found) != 1 or tuple(found[0]) != expected:
        raise ModelError(
            f"{model_path}: expected 1 output [1, N, C+4·(reg_max+1)] = {list(expected)} "
            f"(N for strides {list(card.strides)}, C = {len(card.labels)} labels, reg_max {card.reg_max}), "
            f"found {found}"
        )
    return card
