"""The peer of `edgepipe bench pipeline`: the detect-track-count loop a tutorial teaches, written here.

cv2 read → cv2.resize to the network input → numpy normalise and transpose → synchronous inference
of the plain IR (no preprocessing in the graph) → numpy decode of every anchor → cv2.dnn.NMSBoxes →
SORT (roboflow `trackers`, as a tutorial would pip-install it) → a line-crossing check on the box
centres. It does what the demo pipeline does, as most published loops do it, so that the ratio
`edgepipe / tutorial` says what edgepipe's design is worth on the same machine in the same run:

    .venv/bin/python -m tests.bench.tutorial_loop pipelines/demo.yml [--frames 400] [--rounds 3]

(tests/bench/test_tutorial_loop.py checks that its boxes are the detector's, so the peer is honest.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
STRIDES = (8, 16, 32, 64)
REG_MAX = 7


class TutorialDetector:
    """NanoDet-Plus on OpenVINO the way a tutorial writes it."""

    def __init__(self, model_xml: Path, *, threshold: float, nms_iou: float = 0.6, class_id: int = 0) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(str(model_xml), "CPU")
        self.size = int(self.compiled.inputs[0].get_shape()[2])
        self.threshold, self.nms_iou, self.class_id = threshold, nms_iou, class_id
        centres = []
        for stride in STRIDES:
            side = -(-self.size // stride)
            ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
            centres.append(
                np.stack([xs.ravel() * stride, ys.ravel() * stride, np.full(side * side, stride)], 1)
            )
        self.centres = np.concatenate(centres).astype(np.float32)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(xyxy (K, 4) in image pixels, scores (K,)) of the wanted class."""
        height, width = image.shape[:2]
        resized = cv2.resize(image, (self.size, self.size))
        blob = ((resized.astype(np.float32) - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)[None]
        output = self.compiled([blob])[0][0]  # (N, 80 + 32)
        num_classes = output.shape[1] - 4 * (REG_MAX + 1)
        scores = output[:, :num_classes]
        best = scores.argmax(axis=1)
        best_score = scores.max(axis=1)
        keep = (best == self.class_id) & (best_score > self.threshold)
        bins = output[keep, num_classes:].reshape(-1, 4, REG_MAX + 1)
        soft = np.exp(bins - bins.max(axis=2, keepdims=True))
        soft /= soft.sum(axis=2, keepdims=True)
        distance = (soft * np.arange(REG_MAX + 1)).sum(axis=2) * self.centres[keep, 2:3]
        cx, cy = self.centres[keep, 0], self.centres[keep, 1]
        boxes = np.stack(
            [cx - distance[:, 0], cy - distance[:, 1], cx + distance[:, 2], cy + distance[:, 3]], 1
        )
        boxes = np.clip(boxes, 0, self.size) * np.array([width, height, width, height]) / self.size
        confidences = best_score[keep]
        xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.tolist()]
        kept = cv2.dnn.NMSBoxes(xywh, confidences.tolist(), self.threshold, self.nms_iou)
        kept = np.asarray(kept, np.intp).reshape(-1)
        return boxes[kept].astype(np.float32), confidences[kept].astype(np.float32)


def run_loop(video: Path, model_xml: Path, frames: int, line: tuple[tuple[float, float], tuple[float, float]],
             threshold: float) -> tuple[float, int]:  # fmt: skip
    """The tutorial loop over `frames` frames of `video` (looped): (fps, crossings)."""
    import supervision as sv
    import trackers

    detect = TutorialDetector(model_xml, threshold=threshold)
    tracker = trackers.SORTTracker()
    (ax, ay), (bx, by) = line
    side_of: dict[int, float] = {}
    crossings = 0
    capture = cv2.VideoCapture(str(video))
    done = 0
    start = time.perf_counter()
    while done < frames:
        ok, image = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        boxes, scores = detect(image)
        tracked = tracker.update(
            sv.Detections(xyxy=boxes, confidence=scores, class_id=np.zeros(len(boxes), int))
        )
        for (x1, y1, x2, y2), track_id in zip(tracked.xyxy, tracked.tracker_id, strict=True):
            if track_id < 0:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            side = np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))
            if side and side_of.get(int(track_id), side) != side:
                crossings += 1
            if side:
                side_of[int(track_id)] = side
        done += 1
    capture.release()
    return done / (time.perf_counter() - start), crossings


def main(argv: list[str] | None = None) -> int:
    from edgepipe.bench.pipeline import file_source_of, pipeline_run
    from edgepipe.config import LineRuleConfig, load_pipeline
    from edgepipe.detect import ModelPool

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pipeline")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = load_pipeline(args.pipeline)
    video = file_source_of(cfg).path
    line = next(r for r in cfg.rules if isinstance(r, LineRuleConfig))
    (ax, ay), (bx, by) = line.points
    pool: Any = ModelPool()
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            order = ("tutorial", "edgepipe") if number % 2 == 0 else ("edgepipe", "tutorial")
            fps = {}
            for which in order:
                if which == "tutorial":
                    fps[which], _ = run_loop(video, cfg.detector.model, args.frames, ((ax, ay), (bx, by)),
                                             cfg.detector.threshold)  # fmt: skip
                else:
                    fps[which] = pipeline_run(cfg, pool, args.frames, Path(folder)).fps
            ratios.append(fps["edgepipe"] / fps["tutorial"])
            print(f"round {number + 1}: tutorial {fps['tutorial']:.1f} FPS, edgepipe {fps['edgepipe']:.1f} FPS, "
                  f"ratio {ratios[-1]:.2f}")  # fmt: skip
    print(f"edgepipe / tutorial loop, median of {args.rounds} rounds: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
