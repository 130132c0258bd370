"""The detection stage: Detector = compiled model (runtime.py) + the decoder its card names (decoders/).

`detect(frame)` is synchronous; `stream(frames)` keeps `in_flight` requests busy and yields
(frame, Detections) in frame order. Config filters (classes, min box area, ROI) apply after decode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.config import DetectorConfig
from edgepipe.detect.decoders import Decoder, DecodeSettings, GraphDecode, decoder_for
from edgepipe.detect.runtime import ModelPool, Preprocess, check_image, infer_one, infer_stream
from edgepipe.errors import ConfigError
from edgepipe.labels import class_ids
from edgepipe.modelcard import ModelCard
from edgepipe.types import Detections, Frame

__all__ = ["Detector", "ModelPool"]

log = logging.getLogger(__name__)

# Requests beyond OpenVINO's optimal number keep the device busy while Python decodes a result.
EXTRA_IN_FLIGHT = 1


class Detector:
    """A detector model on OpenVINO: raw BGR frames in, Detections in frame pixels out.

    Settings come typed and checked from the `detector:` config section. The model is compiled
    once for frames of every size (with letterbox: once per aspect ratio), on first use (`prepare`
    does it ahead of the first frame)."""

    def __init__(
        self,
        settings: DetectorConfig,
        *,
        pool: ModelPool | None = None,
        score_threshold: float | None = None,
        multi_label: bool = False,
    ) -> None:
        """`score_threshold` overrides settings.threshold (the tracker may want lower-scored boxes
        than the ones that count); `multi_label` keeps every class above it per anchor (COCO eval)."""
        self.settings = settings
        self.model_path = settings.model
        self.pool = pool if pool is not None else ModelPool()
        shapes = self.pool.shapes(self.model_path)
        self.card: ModelCard = self.pool.card(self.model_path)
        self.decoder: Decoder = decoder_for(self.card, str(self.model_path))
        self.decoder.check_outputs(shapes.output_shapes, str(self.model_path))
        float_input = self.card.input_kind == "float_nchw"
        self.preprocess = Preprocess(
            layout="NCHW" if float_input else "NHWC",
            normalize=float_input,
            mean_bgr=self.card.mean_bgr,
            std_bgr=self.card.std_bgr,
            rgb=self.card.channel_order == "rgb",
        )
        self.pool.check_device(settings.device)  # a device that is not here fails now, not at the first frame
        self.decode_settings = DecodeSettings(
            score_threshold=settings.threshold if score_threshold is None else score_threshold,
            nms_iou=settings.nms_iou,
            max_detections=settings.max_detections,
            class_mask=None if settings.classes is None else _class_mask(settings.classes, self.card.labels),
            multi_label=multi_label,
        )
        self._in_flight = settings.in_flight
        self._sync: tuple[Any, Any] | None = None  # (compiled model, infer request) of detect()
        # per part of the input a frame fills (`inner_hw`, one for every frame size unless
        # letterboxed): the decode the compiled network does, or None where it decodes in Python
        self._graph_decodes: dict[tuple[int, int], GraphDecode | None] = {}

    @property
    def threshold(self) -> float:
        """The configured score from which a detection counts (and starts a track); the detector may
        deliver lower ones (`score_threshold`) for a tracker to continue tracks with."""
        return self.settings.threshold

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def input_size(self) -> int:
        return self.card.input_size

    @property
    def in_flight(self) -> int:
        """Requests kept busy by `stream`: the configured number, else OpenVINO's optimal + 1
        (known once the model is compiled: call `prepare` or run a frame first)."""
        if self._in_flight is None:
            raise RuntimeError("in_flight is known once the model is compiled: call prepare(frame_hw) first")
        return self._in_flight

    def prepare(self, frame_hw: tuple[int, int]) -> None:
        """Compile for frames of `frame_hw` = (height, width) now, before the first frame arrives."""
        self.compiled_for(frame_hw)

    def compiled_for(self, frame_hw: tuple[int, int]) -> Any:
        """The compiled model (from the pool) that takes frames of `frame_hw` = (height, width):
        one for frames of every size, or with letterbox one per aspect ratio.

        The decoder's operations are appended to the network where the device compiles them; where
        it does not (an NPU without dynamic-shape NMS, say), the network gives its raw outputs and
        the decoder's Python twin decodes them: the same detections, more work on the loop thread."""

        def compile_with(graph_decode: GraphDecode | None) -> Any:
            return self.pool.compile(
                self.model_path,
                self.preprocess,
                device=self.settings.device,
                precision=self.settings.precision,
                performance_hint=self.settings.performance_hint,
                graph_decode=graph_decode,
            )

        inner_hw = self.card.resized_hw(frame_hw)
        if inner_hw in self._graph_decodes:
            compiled = compile_with(self._graph_decodes[inner_hw])
        else:
            graph_decode = self.decoder.graph_decode(inner_hw, self.decode_settings)
            try:
                compiled = compile_with(graph_decode)
            except ConfigError as error:
                if graph_decode is None:
                    raise
                compiled = compile_with(None)  # a device that cannot compile the network fails here again
                log.warning(
                    "%s on %s: decoding in Python, the device does not compile the decode operations (%s)",
                    self.model_path.name,
                    self.settings.device,
                    error,
                )
                graph_decode = None
            self._graph_decodes[inner_hw] = graph_decode
        if self._in_flight is None:
            self._in_flight = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) + EXTRA_IN_FLIGHT
        return compiled

    def detect(self, frame: Frame) -> Detections:
        """Detections for one frame, synchronously."""
        image = check_image(frame.image, f"frame {frame.index}")
        frame_hw = (int(image.shape[1]), int(image.shape[2]))
        compiled = self.compiled_for(frame_hw)
        if self._sync is None or self._sync[0] is not compiled:
            self._sync = (compiled, compiled.create_infer_request())
        return self._postprocess(infer_one(self._sync[1], image, self.inner_hw(frame_hw)), frame_hw)

    def stream(
        self, frames: Iterable[Frame | None], *, frame_waiting: Callable[[], bool] | None = None
    ) -> Iterator[tuple[Frame, Detections] | None]:
        """(frame, Detections) in frame order, with `in_flight` inference requests kept busy; each
        None that `frames` yields (an idle tick of a live source) comes out as None in its place.

        Frames may change size (one compiled model serves all; with letterbox, each new aspect ratio
        compiles once more, then cached). For a live source pass its `frame_waiting`: a result is
        then delivered as soon as it is ready instead of when the next frame arrives (see
        `infer_stream`)."""
        outputs = infer_stream(
            self.compiled_for,
            lambda: self.in_flight,
            frames,
            lambda f: check_image(f.image, f"frame {f.index}"),
            frame_waiting,
            self.inner_hw,
        )
        for item in outputs:
            if item is None:
                yield None
                continue
            frame, raw = item
            yield frame, self._postprocess(raw, frame.image.shape[:2])

    def inner_hw(self, frame_hw: tuple[int, int]) -> tuple[int, int] | None:
        """Letterbox: where a frame of `frame_hw` goes in the input (None: stretched over all of it)."""
        return self.card.resized_hw(frame_hw) if self.card.letterbox else None

    def _postprocess(self, outputs: tuple[NDArray[np.float32], ...], frame_hw: tuple[int, ...]) -> Detections:
        frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        graph_decode = self._graph_decodes.get(self.card.resized_hw(frame_hw))
        if graph_decode is not None:
            detections = graph_decode.detections(outputs, frame_hw)
        else:
            detections = self.decoder.decode(outputs, frame_hw, self.decode_settings)
        min_box_area, roi = self.settings.min_box_area, self.settings.roi
        if len(detections) == 0 or (min_box_area <= 0 and roi is None):
            return detections
        xyxy = detections.xyxy
        keep = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) >= min_box_area
        if roi is not None:
            x1, y1, x2, y2 = roi
            cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
            keep &= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
        return detections[keep]


def _class_mask(classes: Iterable[str], labels: tuple[str, ...]) -> NDArray[np.bool_]:
    mask = np.zeros(len(labels), np.bool_)
    mask[class_ids(classes, labels)] = True
    return mask
