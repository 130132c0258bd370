"""Drawing on frames for people to look at: detection boxes with label and score (`detect --out`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edgepipe.types import Detections


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class (golden-ratio hue steps)."""
    import cv2

    hue = int((class_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(
    image: NDArray[np.uint8], detections: Detections, labels: Sequence[str], *, thickness: int = 2
) -> NDArray[np.uint8]:
    """A copy of the BGR `image` with each box, its label and its score drawn on it."""
    import cv2

    out: NDArray[np.uint8] = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 1000)
    for (x1, y1, x2, y2), score, class_id in zip(
        detections.xyxy.round().astype(int).tolist(),
        detections.score.tolist(),
        detections.class_id.tolist(),
        strict=True,
    ):
        color = class_color(class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        name = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        text = f"{name} {score:.2f}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        # keep the label inside the frame for boxes touching the top or right edge
        top, left = max(y1 - h - base, 0), max(min(x1, out.shape[1] - w), 0)
        cv2.rectangle(out, (left, top), (left + w, top + h + base), color, -1)
        cv2.putText(out, text, (left, top + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out
