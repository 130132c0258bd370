"""`edgepipe detect IMAGE_OR_VIDEO`: run the detector on one image or a video and print what it found."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepipe.detect import Detector
from edgepipe.errors import ConfigError, SourceError
from edgepipe.types import Detections, Frame

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_MODEL = "nanodet-plus-m_416_fp16.xml"
MODEL_DIRS = (REPO / "models", REPO.parent / "shared" / "models")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def default_model() -> Path:
    """The 416 FP16 IR from models/ of this checkout, else from ../shared/models."""
    for folder in MODEL_DIRS:
        if (folder / DEFAULT_MODEL).is_file():
            return folder / DEFAULT_MODEL
    raise ConfigError(
        f"no --model given and {DEFAULT_MODEL} is not in {' or '.join(map(str, MODEL_DIRS))}: "
        f"run `edgepipe models fetch nanodet-plus-m-416` or pass --model"
    )


def detections_json(detections: Detections, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """[{label, score, bbox: [x1, y1, x2, y2]}], rounded to 0.1 px and 4 digits of score."""
    return [
        {"label": labels[c], "score": round(s, 4), "bbox": [round(v, 1) for v in box]}
        for box, s, c in zip(
            detections.xyxy.tolist(), detections.score.tolist(), detections.class_id.tolist(), strict=True
        )
    ]


def build_detector(args: argparse.Namespace) -> Detector:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    return Detector(
        Path(args.model) if args.model else default_model(),
        device=args.device,
        precision=args.precision,
        score_threshold=args.threshold,
        classes=classes,
    )


def detect_command(args: argparse.Namespace) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise SourceError(f"input {path} does not exist: give an image or a video file")
    detector = build_detector(args)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _detect_image(detector, path, args)
    return _detect_video(detector, path, args)


def _read_image(path: Path) -> Any:
    import cv2
    import numpy as np

    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise SourceError(f"cannot read image {path}: the file is empty or not an image")
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the top 8 bits
        image = np.right_shift(image, 8)
    return np.asarray(image, np.uint8)


def _detect_image(detector: Detector, path: Path, args: argparse.Namespace) -> int:
    image = _read_image(path)
    detections = detector.detect(Frame(image, 0, 0.0, None))
    found = detections_json(detections, detector.labels)
    if args.json:
        print(json.dumps(found))
    else:
        for item in found:
            print(f"{item['label']} {item['score']:.3f} {item['bbox']}")
        print(f"{path.name}: {len(found)} detections", file=sys.stderr)
    if args.out:
        from edgepipe.preview import draw_detections

        _write_image(Path(args.out), draw_detections(image, detections, detector.labels))
    return 0


def _write_image(path: Path, image: Any) -> None:
    import cv2

    ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise ConfigError(
            f"--out {path}: cannot encode an image with suffix {path.suffix!r}; use .jpg or .png"
        )
    try:
        encoded.tofile(path)
    except OSError as error:
        raise ConfigError(f"--out {path}: cannot write: {error.strerror}") from None


def _video_frames(path: Path, max_frames: int | None) -> Iterator[Frame]:
    import time

    import cv2
    import numpy as np

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open {path} as an image or a video: check the file and its format")
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            yield Frame(
                np.asarray(image, np.uint8), index, time.time(), capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            )
            index += 1
    finally:
        capture.release()


def _detect_video(detector: Detector, path: Path, args: argparse.Namespace) -> int:
    import cv2

    from edgepipe.preview import draw_detections

    writer: Any = None
    frames = 0
    try:
        for frame, detections in detector.stream(_video_frames(path, args.max_frames)):
            frames += 1
            found = detections_json(detections, detector.labels)
            if args.json:
                print(json.dumps({"frame": frame.index, "detections": found}))
            else:
                summary = ", ".join(f"{d['label']} {d['score']:.2f}" for d in found)
                print(f"frame {frame.index}: {len(found)} detections{': ' if found else ''}{summary}")
            if args.out:
                if writer is None:
                    height, width = frame.image.shape[:2]
                    fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) or 25.0
                    writer = cv2.VideoWriter(args.out, cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
                    if not writer.isOpened():
                        raise ConfigError(f"--out {args.out}: cannot open a video writer; use a .mp4 name")
                writer.write(draw_detections(frame.image, detections, detector.labels))
    finally:
        if writer is not None:
            writer.release()
    if frames == 0:
        raise SourceError(f"cannot read any frame from {path}: is it an image or a video?")
    return 0
