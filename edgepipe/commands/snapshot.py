"""`edgepipe snapshot`: one frame of the pipeline's own source with every rule and a labelled pixel
grid drawn on it, to place lines and zones and see that their direction is right."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgepipe.errors import ConfigError, SourceError

if TYPE_CHECKING:
    from edgepipe.config import PipelineConfig
    from edgepipe.sources import Source
    from edgepipe.types import Detections, Frame

LOCAL_OPEN_TIMEOUT_S = 10.0  # a file or folder that gives no frame in this long is broken


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "snapshot", help="one frame of the pipeline's source with its rules and a pixel grid drawn on it"
    )
    p.add_argument("pipeline", metavar="PIPELINE.yml")
    p.add_argument(
        "-o", "--out", metavar="FRAME.jpg", help="image to write (default: <pipeline>-snapshot.jpg)"
    )
    p.add_argument(
        "--at",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="take the frame this far into a video, or this long after a camera or stream connects (0)",
    )
    p.add_argument("--source", metavar="PATH_OR_URL", help="take the frame from here instead")
    p.add_argument(
        "--detect", action="store_true", help="also run the detector on the frame and draw its boxes"
    )
    p.add_argument(
        "--grid", type=int, metavar="PX", help="grid step in pixels (default: about 10 lines across)"
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.config import LiveSourceConfig, load_pipeline, source_from_argument
    from edgepipe.draw import rule_shapes, rules_picture, write_image
    from edgepipe.pipeline import build_rules
    from edgepipe.sources import open_source

    if not 0 <= args.at <= 24 * 3600:
        raise ConfigError(f"--at {args.at:g}: expected 0 <= SECONDS <= 86400")
    if args.grid is not None and not 5 <= args.grid <= 10_000:
        raise ConfigError(f"--grid {args.grid}: expected 5 <= PX <= 10000")
    cfg = load_pipeline(args.pipeline)
    if args.source is not None:
        cfg = source_from_argument(args.source, cfg)
    spec = cfg.source
    timeout_s = spec.open_timeout_s if isinstance(spec, LiveSourceConfig) else LOCAL_OPEN_TIMEOUT_S
    frame = take_frame(open_source(spec), at_s=args.at, timeout_s=timeout_s)
    frame_hw = (frame.image.shape[0], frame.image.shape[1])
    labels, detections = _detect(cfg, frame) if args.detect else (_labels(cfg), None)
    rules = build_rules(cfg, labels)
    problem = None
    try:
        rules.place(frame_hw)
    except ConfigError as error:
        problem = error  # still write the picture: it is how to find the right coordinates
    picture = rules_picture(
        frame.image, rule_shapes(rules), grid_step_px=args.grid, detections=detections, labels=labels
    )
    out = Path(args.out or f"{cfg.name}-snapshot.jpg")
    write_image(out, picture, "-o")
    where = f"{frame.source_time:.2f} s" if frame.source_time is not None else time.strftime("%H:%M:%S")
    found = f", {len(detections)} detections" if detections is not None else ""
    print(f"{out}: {frame_hw[1]}x{frame_hw[0]} frame {frame.index} at {where}, {len(cfg.rules)} rules{found}")
    if problem is not None:
        raise ConfigError(f"{problem}\n(the picture is written all the same, to place them with its grid)")
    return 0


def take_frame(source: Source, *, at_s: float = 0.0, timeout_s: float) -> Frame:
    """The first frame at or after `at_s`: container time for a file, time since the first frame for a
    camera or stream. SourceError if none came within `timeout_s` (+ `at_s`)."""
    # a live source retries forever by design; the timer turns that into a clear answer
    timer = threading.Timer(timeout_s + at_s, source.stop)
    timer.start()
    first_s: float | None = None
    try:
        with source:
            for frame in source.frames():
                if frame is None:
                    continue
                if first_s is None:
                    first_s = frame.timestamp
                if frame.source_time is not None:
                    reached = frame.source_time >= at_s
                else:
                    reached = frame.timestamp - first_s >= at_s
                if reached:
                    return frame
    finally:
        timer.cancel()
    state = source.stats().state
    if first_s is not None:
        raise SourceError(f"{source.name}: the source ended before {at_s:g} s (state: {state})")
    raise SourceError(f"{source.name}: the source gave no frame within {timeout_s:g} s (state: {state})")


def _labels(cfg: PipelineConfig) -> tuple[str, ...]:
    from edgepipe.detect import ModelPool

    return ModelPool().card(cfg.detector.model).labels


def _detect(cfg: PipelineConfig, frame: Frame) -> tuple[tuple[str, ...], Detections]:
    from edgepipe.detect import Detector, ModelPool

    detector = Detector(cfg.detector, pool=ModelPool())
    return detector.labels, detector.detect(frame)
