"""The detection stage: Detector = compiled OpenVINO model (openvino.py) + NanoDet-Plus decode (nanodet.py).

`detect(frame)` is synchronous; `stream(frames)` keeps `in_flight` requests busy and yields
(frame, Detections) in frame order. Config filters (classes, min box area, ROI) apply after decode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.detect.nanodet import NanoDetDecoder, resolve_card
from edgepipe.detect.openvino import ModelPool, Preprocess, check_image, infer_one, infer_stream
from edgepipe.errors import ConfigError
from edgepipe.modelcard import ModelCard
from edgepipe.types import Detections, Frame

__all__ = ["Detector", "ModelPool"]

# The uint8 NHWC (int8) IRs reverse the channels inside; feeding them RGB lands closer to the
# official normalisation. COCO-subset mAP, RGB vs BGR: 416 0.153/0.139, 320 0.140/0.121, 1.5x-416 0.181/0.158.
UINT8_MODEL_RGB = True
# Requests beyond OpenVINO's optimal number keep the device busy while Python decodes a result.
EXTRA_IN_FLIGHT = 1


class Detector:
    """NanoDet-Plus on OpenVINO: raw BGR frames in, Detections in frame pixels out."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        pool: ModelPool | None = None,
        device: str = "CPU",
        precision: str = "auto",
        performance_hint: str = "throughput",
        in_flight: int | None = None,
        score_threshold: float = 0.4,
        nms_iou: float = 0.5,
        classes: Sequence[str] | None = None,
        min_box_area: float = 0.0,
        roi_xyxy: tuple[float, float, float, float] | None = None,
        max_detections: int = 100,
        rgb: bool | None = None,
        multi_label: bool = False,
    ) -> None:
        _check_settings(score_threshold, nms_iou, min_box_area, roi_xyxy, max_detections, in_flight)
        self.model_path = Path(model_path)
        self.pool = pool if pool is not None else ModelPool()
        shapes = self.pool.shapes(self.model_path)
        self.card: ModelCard = resolve_card(
            self.model_path, shapes.rt_info, shapes.input_shape, shapes.input_type, shapes.output_shapes
        )
        float_input = self.card.input_kind == "float_nchw"
        preprocess = Preprocess(
            layout="NCHW" if float_input else "NHWC",
            normalize=float_input,
            mean_bgr=self.card.mean_bgr,
            std_bgr=self.card.std_bgr,
            rgb=(not float_input and UINT8_MODEL_RGB) if rgb is None else rgb,
            row_max_columns=len(self.card.labels),  # best class score per anchor, for the pre-filter
        )
        self.preprocess = preprocess
        self._compile_settings = {
            "device": device,
            "precision": precision,
            "performance_hint": performance_hint,
        }
        # compiled now for SxS frames, so that a bad device or precision fails at construction
        size = self.card.input_size
        self.compiled: Any = self.compiled_for((size, size))
        self.decoder = NanoDetDecoder(
            self.card.input_size, len(self.card.labels), reg_max=self.card.reg_max, strides=self.card.strides
        )
        self.class_mask = None if classes is None else _class_mask(classes, self.card.labels)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.min_box_area = min_box_area
        self.roi_xyxy = roi_xyxy
        self.max_detections = max_detections
        self.multi_label = multi_label
        optimal = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.in_flight = in_flight if in_flight is not None else optimal + EXTRA_IN_FLIGHT
        self._sync: tuple[tuple[int, int], Any] | None = None  # (frame_hw, infer request) of detect()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def input_size(self) -> int:
        return self.card.input_size

    def compiled_for(self, frame_hw: tuple[int, int]) -> Any:
        """The compiled model (from the pool) that takes frames of `frame_hw` = (height, width)."""
        return self.pool.compile(self.model_path, self.preprocess, frame_hw, **self._compile_settings)

    def detect(self, frame: Frame) -> Detections:
        """Detections for one frame, synchronously."""
        image = check_image(frame.image, f"frame {frame.index}")
        frame_hw = (int(image.shape[1]), int(image.shape[2]))
        if self._sync is None or self._sync[0] != frame_hw:
            self._sync = (frame_hw, self.compiled_for(frame_hw).create_infer_request())
        return self._postprocess(infer_one(self._sync[1], image), frame_hw)

    def stream(
        self, frames: Iterable[Frame], *, frame_waiting: Callable[[], bool] | None = None
    ) -> Iterator[tuple[Frame, Detections]]:
        """(frame, Detections) in frame order, with `in_flight` inference requests kept busy.

        Frames may change size; each new size compiles the model once more (then cached). For a
        live source pass its `frame_waiting`: a result is then delivered as soon as it is ready
        instead of when the next frame arrives (see `infer_stream`)."""
        outputs = infer_stream(
            self.compiled_for,
            frames,
            lambda f: check_image(f.image, f"frame {f.index}"),
            self.in_flight,
            frame_waiting,
        )
        for frame, (raw, best_score) in outputs:
            yield frame, self._postprocess((raw, best_score), frame.image.shape[:2])

    def _postprocess(self, outputs: tuple[NDArray[np.float32], ...], frame_hw: tuple[int, ...]) -> Detections:
        raw, best_score = outputs
        detections = self.decoder.decode(
            raw,
            (int(frame_hw[0]), int(frame_hw[1])),
            best_score=best_score,
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            max_detections=self.max_detections,
            class_mask=self.class_mask,
            multi_label=self.multi_label,
        )
        if len(detections) == 0 or (self.min_box_area <= 0 and self.roi_xyxy is None):
            return detections
        xyxy = detections.xyxy
        keep = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) >= self.min_box_area
        if self.roi_xyxy is not None:
            x1, y1, x2, y2 = self.roi_xyxy
            cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
            keep &= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
        return detections[keep]


def _class_mask(classes: Sequence[str], labels: tuple[str, ...]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise ConfigError(f"unknown class name(s) {', '.join(unknown)}; valid names: {', '.join(labels)}")
    return np.isin(np.asarray(labels), list(classes))


def _check_settings(
    score_threshold: float,
    nms_iou: float,
    min_box_area: float,
    roi_xyxy: tuple[float, float, float, float] | None,
    max_detections: int,
    in_flight: int | None,
) -> None:
    if not 0.0 <= score_threshold < 1.0:
        raise ConfigError(f"score_threshold must be in [0, 1), got {score_threshold}")
    if not 0.0 < nms_iou <= 1.0:
        raise ConfigError(f"nms_iou must be in (0, 1], got {nms_iou}")
    if min_box_area < 0:
        raise ConfigError(f"min_box_area must be >= 0, got {min_box_area}")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be >= 1, got {max_detections}")
    if in_flight is not None and in_flight < 1:
        raise ConfigError(f"in_flight must be >= 1, got {in_flight}")
    if roi_xyxy is not None and (
        len(roi_xyxy) != 4 or roi_xyxy[0] >= roi_xyxy[2] or roi_xyxy[1] >= roi_xyxy[3]
    ):
        raise ConfigError(f"roi_xyxy must be (x1, y1, x2, y2) with x1 < x2 and y1 < y2, got {roi_xyxy}")
