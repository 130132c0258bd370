"""The tutorial-style peer loop (tests/bench/tutorial_loop.py) is an honest peer: it finds the boxes
edgepipe's detector finds, and its loop runs, tracks and counts on the real video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepipe.config import DetectorConfig, FileSourceConfig
from edgepipe.detect import Detector
from edgepipe.geometry import box_iou
from edgepipe.sources import FileSource
from tests.bench.tutorial_loop import TutorialDetector, run_loop
from tests.test_api import MODEL

pytestmark = pytest.mark.integration


def test_the_tutorial_detector_finds_the_boxes_edgepipe_finds(shared_data: Path) -> None:
    tutorial = TutorialDetector(MODEL, threshold=0.4)
    ours = Detector(DetectorConfig(model=MODEL, threshold=0.4, classes=["person"]))
    matched = total = 0
    with FileSource(FileSourceConfig(path=shared_data / "video" / "vtest.mp4")) as video:
        for frame, _ in zip(video.frames(), range(10), strict=False):
            assert frame is not None
            boxes, scores = tutorial(frame.image)
            found = ours.detect(frame)
            assert np.all(scores > 0.4)
            total += len(found)
            if len(found) and len(boxes):
                matched += int(np.count_nonzero(box_iou(found.xyxy, boxes).max(axis=1) > 0.9))
    print(f"tutorial boxes matched {matched} of {total}")
    assert total >= 30  # PETS09: several people in every frame
    # the same network, the same decode: only the resize (cv2 vs OpenVINO's) moves a box a little
    assert matched >= 0.9 * total, (matched, total)


@pytest.mark.slow
def test_the_tutorial_loop_tracks_and_counts_crossings(shared_data: Path) -> None:
    fps, crossings = run_loop(shared_data / "video" / "vtest.mp4", MODEL, 150, ((240, 100), (240, 300)), 0.5)
    assert fps > 0
    assert crossings >= 3  # the demo's line sees several people cross in its first 15 s
