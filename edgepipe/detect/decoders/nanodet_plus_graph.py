"""NanoDet-Plus decode as OpenVINO operations appended to the network, so the inference threads do it.

The same meaning as `NanoDetPlusDecoder.decode` (nanodet_plus.py), its Python twin, which decodes
outputs that come from elsewhere (PyTorch while training, the export checks) and is the reference
this is held to (tests/detect/decoders run every decode test on both): the GFL integral over the
bins, boxes from the grid points, clamped to the part of the input the frame fills, the best class
of each anchor (every class with `multi_label`), the class filter, class-aware NMS (OpenVINO's
NonMaxSuppression-9) and the best `max_detections`. Python then only gathers the few kept rows and
scales them to the frame: NMS's IoU does not change when the axes are scaled, so one compiled model
serves frames of every size (of every aspect ratio unless letterboxed).

Why: on the loop thread the Python decode of a 320 frame took 0.6 ms (vtest, boxes down to the
tracker's 0.1), twice its time alone, because the inference threads share the cores; here Python's
part is ~0.07 ms, and the network skips the export's final transpose (see `_channel_major`). The
whole pipeline, A/B in one process against the Python decode: 1.098x at 416, 1.115x at 320.
At the f32 hint the two decodes give the same boxes (to 1e-4 px). At bf16 the network's last layer
fuses differently once its raw output is no longer a result, so scores near the threshold or an NMS
decision can differ as they would between two bf16 runs; boxes matched within 0.4 px.
One difference by design: an anchor whose best score is shared by two classes is a candidate for
both (Python's argmax takes the first); sigmoid scores above a threshold practically never tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.detect.decoders.nanodet_plus import center_priors
from edgepipe.types import Detections

# Fill for scores that are not candidates (not the anchor's best class): below any threshold >= 0
_NOT_A_CANDIDATE = -1.0


@dataclass(frozen=True, slots=True)
class NanoDetPlusGraphDecode:
    """The decode of one model, for frames that fill `inner_hw` of its input, with one detector's settings."""

    input_size: int
    strides: tuple[int, ...]
    num_classes: int
    reg_max: int
    inner_hw: tuple[int, int]  # the part of the input the frame fills (all of it unless letterboxed)
    score_threshold: float
    nms_iou: float
    max_detections: int
    class_ids: tuple[int, ...]  # the classes kept, ascending
    multi_label: bool

    def append_to(self, model: Any) -> Any:
        """Replace the raw output [1, N, C + 4·(reg_max+1)] by: boxes [1, N, 4] (xyxy, input pixels),
        NMS's selected (batch, class, anchor) [M, 3] and their scores [M, 3], and M [1]; the
        selection sorted best first, `class` indexing `class_ids`."""
        import openvino.opset13 as ops

        def const(values: Any, dtype: type[np.generic] = np.float32) -> Any:
            return ops.constant(np.asarray(values, dtype))

        def axis_range(node: Any, axis: int, start: int, stop: int) -> Any:
            begin, end, step = (const([v], np.int64) for v in (start, stop, 1))
            return ops.slice(node, begin, end, step, const([axis], np.int64))

        raw_result = model.get_results()[0]
        channels = _channel_major(raw_result.input_value(0), ops)  # [1, C + 4·(reg_max+1), N]
        if channels.get_element_type().get_type_name() != "f32":
            channels = ops.convert(channels, "f32")
        classes, bins = self.num_classes, self.reg_max + 1
        priors = center_priors(self.input_size, self.strides).T  # (3, N): x·s, y·s, s
        anchors = priors.shape[1]

        # GFL integral: softmax over each side's bins, expectation, times the stride. Channel-major
        # ([1, 4, bins, N]) the softmax runs along N-long rows: over a last axis of 8 it took 0.76 ms.
        logits = ops.reshape(
            axis_range(channels, 1, classes, classes + 4 * bins),
            const([1, 4, bins, anchors], np.int64),
            False,
        )
        weights = const(np.arange(bins).reshape(1, 1, 1, bins))
        expectation = ops.matmul(weights, ops.softmax(logits, 2), False, False)  # [1, 4, 1, N]
        distance = ops.multiply(
            ops.reshape(expectation, const([1, 4, anchors], np.int64), False), const(priors[None, 2:3])
        )
        centres = const(np.concatenate([priors[:2], priors[:2]])[None])  # [1, 4, N]
        xyxy = ops.add(centres, ops.multiply(distance, const([[[-1.0], [-1.0], [1.0], [1.0]]])))
        inner_h, inner_w = self.inner_hw
        xyxy = ops.minimum(
            ops.maximum(xyxy, const(0.0)), const([[[inner_w], [inner_h], [inner_w], [inner_h]]])
        )
        boxes = ops.transpose(xyxy, const([0, 2, 1], np.int64))  # [1, N, 4]

        all_scores = axis_range(channels, 1, 0, classes)  # [1, C, N] sigmoid scores
        scores = all_scores
        if len(self.class_ids) < classes:  # exact before NMS: NMS is per class
            scores = ops.gather(all_scores, const(self.class_ids, np.int64), const(1, np.int64))
        if not self.multi_label:  # only the best class of each anchor is a candidate (of all classes)
            best = ops.reduce_max(all_scores, const([1], np.int64), True)
            scores = ops.select(ops.greater_equal(scores, best), scores, const(_NOT_A_CANDIDATE))
        nms = ops.non_max_suppression(
            boxes,
            scores,  # [1, classes kept, N]
            const([self.max_detections], np.int64),  # per class; the best of all are taken after
            const([self.nms_iou]),
            const([self.score_threshold]),
            box_encoding="corner",
            sort_result_descending=True,
            output_type="i32",
        )
        model.remove_result(raw_result)
        outputs = [boxes, nms.output(0), nms.output(1), nms.output(2)]
        names = ["boxes_xyxy", "selected", "selected_scores", "selected_count"]
        for output, name in zip(outputs, names, strict=True):
            result = ops.result(output)
            result.set_friendly_name(name)
            model.add_results([result])
        return model

    def detections(self, outputs: Sequence[NDArray[Any]], frame_hw: tuple[int, int]) -> Detections:
        boxes, selected, selected_scores, count = outputs
        kept = min(int(count[0]), self.max_detections)  # a device may pad the selection: M counts
        rows = selected[:kept]
        (height, width), (inner_h, inner_w) = frame_hw, self.inner_hw
        scale = np.array([width / inner_w, height / inner_h] * 2, np.float32)
        return Detections(
            boxes[0, rows[:, 2]] * scale,  # fancy indexing copies out of the request
            selected_scores[:kept, 2].astype(np.float32),
            np.asarray(self.class_ids, np.int32)[rows[:, 1]],
        )


def _channel_major(raw: Any, ops: Any) -> Any:
    """The head's output as [1, channels, N]. The official export ends by transposing [1, C, N] to
    [1, N, C] (one row per anchor, what Python reads); the decode wants the channel-major form, so
    it takes the tensor before that transpose (which is then not computed at all: it took 0.7 ms a
    frame at 416), or transposes back if the network ends differently."""
    node = raw.get_node()
    if node.get_type_name() == "Transpose":
        order = node.input_value(1).get_node()
        if order.get_type_name() == "Constant" and order.get_vector().tolist() == [0, 2, 1]:
            return node.input_value(0)
    return ops.transpose(raw, ops.constant(np.array([0, 2, 1], np.int64)))
