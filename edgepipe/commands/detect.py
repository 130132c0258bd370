"""`edgepipe detect IMAGE_OR_VIDEO`: run the detector on one image or a video and print what it found."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.errors import SourceError

if TYPE_CHECKING:
    from edgepipe.detect import Detector
    from edgepipe.types import Detections


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("detect", help="run the detector on an image or a video and print detections")
    p.add_argument("input", metavar="IMAGE_OR_VIDEO")
    p.add_argument(
        "--model", metavar="M", help="IR .xml or ONNX (default: the default model of the models folder)"
    )
    p.add_argument(
        "--threshold", type=float, metavar="F", help="score threshold (default: as `detector.threshold`)"
    )
    p.add_argument("--classes", metavar="NAMES", help="keep only these labels, e.g. person,car")
    p.add_argument("--device", help="OpenVINO device: CPU, GPU, NPU, AUTO (default CPU)")
    p.add_argument("--precision", choices=("auto", "f32", "bf16", "f16"), help="inference precision (auto)")
    p.add_argument("--json", action="store_true", help="JSON: a list per image, one object per video frame")
    p.add_argument("--out", metavar="PATH", help="write the annotated image (or .mp4 for a video)")
    p.add_argument("--max-frames", type=int, metavar="N", help="video: stop after N frames")
    p.set_defaults(handler=main)


def detections_json(detections: Detections, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """[{label, score, bbox: [x1, y1, x2, y2]}], rounded to 0.1 px and 4 digits of score."""
    return [
        {"label": labels[c], "score": round(s, 4), "bbox": [round(v, 1) for v in box]}
        for box, s, c in zip(
            detections.xyxy.tolist(), detections.score.tolist(), detections.class_id.tolist(), strict=True
        )
    ]


def build_detector(args: argparse.Namespace) -> Detector:
    """The detector the options describe, with the `detector:` section's defaults and bounds."""
    from edgepipe.config import DetectorConfig, settings_from_options
    from edgepipe.detect import Detector
    from edgepipe.models import default_model_path

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    settings = settings_from_options(
        DetectorConfig,
        {
            "model": Path(args.model) if args.model else default_model_path(),
            "threshold": args.threshold,
            "classes": classes,
            "device": args.device,
            "precision": args.precision,
        },
        {"model": "--model", "threshold": "--threshold", "classes": "--classes", "device": "--device"},
    )
    return Detector(settings)


def main(args: argparse.Namespace) -> int:
    from edgepipe.sources import IMAGE_SUFFIXES

    path = Path(args.input)
    if path.is_dir():
        raise SourceError(f"input {path} is a folder: give one image or video file")
    if not path.is_file():
        raise SourceError(f"input {path} does not exist: give an image or a video file")
    detector = build_detector(args)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _detect_image(detector, path, args)
    return _detect_video(detector, path, args)


def _detect_image(detector: Detector, path: Path, args: argparse.Namespace) -> int:
    from edgepipe.draw import draw_detections, write_image
    from edgepipe.sources import read_image
    from edgepipe.types import Frame

    image = read_image(path)
    detections = detector.detect(Frame(image, 0, 0.0, None))
    found = detections_json(detections, detector.labels)
    if args.json:
        print(json.dumps(found))
    else:
        for item in found:
            print(f"{item['label']} {item['score']:.3f} {item['bbox']}")
        print(f"{path.name}: {len(found)} detections", file=sys.stderr)
    if args.out:
        canvas = image.copy()
        draw_detections(canvas, detections, detector.labels)
        write_image(Path(args.out), canvas, "--out")
    return 0


def _detect_video(detector: Detector, path: Path, args: argparse.Namespace) -> int:
    from edgepipe.config import FileSourceConfig
    from edgepipe.draw import VideoFile, draw_detections
    from edgepipe.sources import FileSource

    source = FileSource(FileSourceConfig(path=path))
    frames = 0
    with source, VideoFile(Path(args.out or "-"), source.fps or 25.0, "--out") as video:
        for item in detector.stream(source.frames()):
            if item is None:
                continue
            frame, detections = item
            frames += 1
            found = detections_json(detections, detector.labels)
            if args.json:
                print(json.dumps({"frame": frame.index, "detections": found}))
            else:
                summary = ", ".join(f"{d['label']} {d['score']:.2f}" for d in found)
                print(f"frame {frame.index}: {len(found)} detections{': ' if found else ''}{summary}")
            if args.out:
                canvas = frame.image.copy()
                draw_detections(canvas, detections, detector.labels)
                video.write(canvas)
            if args.max_frames is not None and frames >= args.max_frames:
                break
    if frames == 0:
        raise SourceError(f"cannot read any frame from {path}: is it an image or a video?")
    return 0
