"""What a decoder is: the meaning of one model family's raw outputs, apart from where it runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edgepipe.types import Detections


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """Per-detector choices applied while decoding (from the `detector:` config section)."""

    score_threshold: float
    nms_iou: float
    max_detections: int
    class_mask: NDArray[np.bool_] | None = None  # (C,) classes to keep; None keeps all
    multi_label: bool = False  # every class above the threshold per anchor (COCO eval), not only the best


class GraphDecode(Protocol):
    """A decoder's work done by the network itself: operations appended after its raw outputs, so
    that OpenVINO's inference threads decode (and NMS) and Python only gathers the kept rows.

    Hashable (a frozen dataclass): it is part of the key the runtime caches compiled models by."""

    def append_to(self, model: Any) -> Any:
        """The ov.Model with its outputs replaced by the decoded ones (changes `model`)."""

    def detections(self, outputs: Sequence[NDArray[Any]], frame_hw: tuple[int, int]) -> Detections:
        """The outputs `append_to` made, of one frame of (height, width) `frame_hw` → Detections in
        frame pixels (copies: outputs are views)."""


class Decoder(Protocol):
    """Turns a model's raw outputs for one frame into Detections in frame pixels."""

    def graph_decode(self, inner_hw: tuple[int, int], settings: DecodeSettings) -> GraphDecode | None:
        """The same decode as OpenVINO operations for frames that fill (height, width) `inner_hw` of
        the input (all of it unless letterboxed; any frame size maps to it), or None if this family
        decodes in Python only."""

    def check_outputs(self, output_shapes: Sequence[Sequence[int]], origin: str) -> None:
        """Raise ModelError naming `origin` if the network's outputs are not what this family makes."""

    def decode(
        self, outputs: Sequence[NDArray[np.floating]], frame_hw: tuple[int, int], settings: DecodeSettings
    ) -> Detections:
        """`outputs` of one frame of (height, width) `frame_hw` → Detections."""
