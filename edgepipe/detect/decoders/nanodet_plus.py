"""NanoDet-Plus decode: raw head output [N, C + 4·(reg_max+1)] → Detections in frame pixels.

GFL decode as in RangiLyu/nanodet (`NanoDetPlusHead.get_bboxes`, `Integral`, `distance2bbox`):
softmax over the reg_max+1 bins of each side, expectation times stride, distances from the grid
point (x·s, y·s) (no +0.5), clamp to the part of the input the frame fills (all of it unless
letterboxed), scale to the frame, class-aware NMS.
No OpenVINO import here: this is the model's meaning, not where it runs. The runtime runs the same
decode inside the network (nanodet_plus_graph.py, from `graph_decode`); this one decodes outputs
that come from elsewhere (PyTorch, the export checks, a device that cannot run the decode ops).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from edgepipe.detect.decoders.base import DecodeSettings
from edgepipe.errors import ModelError
from edgepipe.geometry import nms
from edgepipe.modelcard import ModelCard
from edgepipe.types import Detections

if TYPE_CHECKING:
    from edgepipe.detect.decoders.nanodet_plus_graph import NanoDetPlusGraphDecode


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


class NanoDetPlusDecoder:
    """Decodes one image's raw output; built once per model, reused for every frame."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.input_size = card.input_size
        self.num_classes = len(card.labels)
        self.reg_max = card.reg_max
        self.strides = tuple(card.strides)
        self.priors = center_priors(self.input_size, self.strides)
        bins = np.arange(self.reg_max + 1, dtype=np.float32)
        self._moments = np.stack([bins, np.ones_like(bins)], axis=1)  # (reg_max+1, 2): expectation, sum

    def graph_decode(self, inner_hw: tuple[int, int], settings: DecodeSettings) -> NanoDetPlusGraphDecode:
        """This decode as OpenVINO operations after the network (nanodet_plus_graph.py), which the
        runtime uses wherever the device compiles them."""
        from edgepipe.detect.decoders.nanodet_plus_graph import NanoDetPlusGraphDecode  # it uses our priors

        mask = settings.class_mask
        kept = range(self.num_classes) if mask is None else np.flatnonzero(mask).tolist()
        return NanoDetPlusGraphDecode(
            input_size=self.input_size,
            strides=self.strides,
            num_classes=self.num_classes,
            reg_max=self.reg_max,
            inner_hw=inner_hw,
            score_threshold=float(settings.score_threshold),
            nms_iou=float(settings.nms_iou),
            max_detections=int(settings.max_detections),
            class_ids=tuple(kept),
            multi_label=settings.multi_label,
        )

    def check_outputs(self, output_shapes: Sequence[Sequence[int]], origin: str) -> None:
        """One output [1, N, C + 4·(reg_max+1)] with N the anchors of the card's strides."""
        expected = (1, num_anchors(self.input_size, self.strides), self.num_outputs)
        found = [list(s) for s in output_shapes]
        if len(found) != 1 or tuple(found[0]) != expected:
            raise ModelError(
                f"{origin}: expected 1 output [1, N, C+4·(reg_max+1)] = {list(expected)} "
                f"(N for strides {list(self.strides)}, C = {self.num_classes} labels, reg_max {self.reg_max}), "
                f"found {found}"
            )

    @property
    def num_outputs(self) -> int:
        """Columns per anchor: class scores then 4 sides of reg_max+1 bins each."""
        return self.num_classes + 4 * (self.reg_max + 1)

    def decode(
        self, outputs: Sequence[NDArray[np.floating]], frame_hw: tuple[int, int], settings: DecodeSettings
    ) -> Detections:
        """`outputs[0]` (1, N, C + 4·(reg_max+1)) with sigmoid scores → Detections in frame pixels.

        One candidate per anchor (its best class, as the official C++ demos) unless `multi_label`
        (every class above the threshold, as the official Python eval). `class_mask` (C,) bool keeps
        only those classes; applying it before NMS is exact because NMS is class-aware."""
        score_threshold, multi_label, class_mask = (
            settings.score_threshold,
            settings.multi_label,
            settings.class_mask,
        )
        raw = outputs[0].reshape(len(self.priors), self.num_outputs)
        scores = raw[:, : self.num_classes]
        # Only the few anchors above the threshold need argmax and softmax: most of the speed.
        # (np.nonzero on the whole strided score block costs 4x more than any() + flatnonzero.)
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
        # boxes only for the rows kept: with a class filter (person), half the candidates or fewer
        boxes = self._boxes(raw[anchor, self.num_classes :], self.priors[anchor], frame_hw)
        score = scores[anchor, class_id].astype(np.float32)
        keep = nms(boxes, score, class_id, settings.nms_iou)[: settings.max_detections]
        return Detections(boxes[keep], score[keep], class_id[keep].astype(np.int32))

    def _boxes(
        self, bins: NDArray[np.floating], priors: NDArray[np.float32], frame_hw: tuple[int, int]
    ) -> NDArray[np.float32]:
        """(K, 4·(reg_max+1)) bin logits, (K, 3) priors → (K, 4) xyxy in frame pixels."""
        logits = bins.reshape(-1, 4, self.reg_max + 1).astype(np.float32)
        # stable softmax: the max over the bins by elementwise maximum of the bin columns, and the
        # expectation and the normaliser in one matmul: numpy's reductions over an axis of 8 cost
        # several times more on the few hundred candidates of a frame
        peak = functools.reduce(
            np.maximum, (logits[..., i] for i in range(1, logits.shape[2])), logits[..., 0]
        )
        weights = np.exp(logits - peak[..., None])
        moments = weights @ self._moments  # (K, 4, 2): Σ i·w_i, Σ w_i
        distance = moments[..., 0] / moments[..., 1] * priors[:, 2:3]  # (K, 4) l, t, r, b
        cx, cy = priors[:, 0:1], priors[:, 1:2]
        xyxy = np.concatenate(
            [cx - distance[:, 0:1], cy - distance[:, 1:2], cx + distance[:, 2:3], cy + distance[:, 3:4]],
            axis=1,
        )
        # The frame fills (inner_h, inner_w) of the input: all of it, or less with letterbox padding.
        inner_h, inner_w = self.card.resized_hw(frame_hw)
        np.clip(xyxy[:, 0::2], 0.0, float(inner_w), out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0.0, float(inner_h), out=xyxy[:, 1::2])
        height, width = frame_hw
        xyxy *= np.array([width / inner_w, height / inner_h, width / inner_w, height / inner_h], np.float32)
        return xyxy.astype(np.float32, copy=False)
