"""What a decoder is: the meaning of one model family's raw outputs, apart from where it runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


class Decoder(Protocol):
    """Turns a model's raw outputs for one frame into Detections in frame pixels."""

    @property
    def row_max_columns(self) -> int:
        """> 0: the runtime appends an output with the max of the first N columns of output 0 per
        row (the best class score per anchor), computed while the output is still in cache."""

    def check_outputs(self, output_shapes: Sequence[Sequence[int]], origin: str) -> None:
        """Raise ModelError naming `origin` if the network's outputs are not what this family makes."""

    def decode(
        self, outputs: Sequence[NDArray[np.floating]], frame_hw: tuple[int, int], settings: DecodeSettings
    ) -> Detections:
        """`outputs` of one frame of (height, width) `frame_hw` → Detections."""
