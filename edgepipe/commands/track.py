"""`edgepipe track --mot det.txt`: a tracker over MOTChallenge detections, MOTChallenge results out."""

from __future__ import annotations

import argparse
import sys

from edgepipe.errors import OutputError

# option → TrackerConfig field; unset options keep the config's defaults (shown in --help)
TRACKER_OPTIONS = {
    "type": ("--type", str, "T", "occlusion or sort"),
    "max_age": ("--max-age", int, "N", "sort: frames a track may go unmatched"),
    "max_age_s": ("--max-age-s", float, "S", "occlusion: seconds a confirmed track may go unmatched"),
    "min_hits": ("--min-hits", int, "N", "matches in a row to be reported"),
    "iou_threshold": ("--iou", float, "F", "least IoU of a match"),
    "low_threshold": (
        "--low-threshold",
        float,
        "F",
        "occlusion: least score of a box that continues a track",
    ),
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgepipe.config import DetectorConfig, TrackerConfig  # pydantic: light enough for --help's defaults

    fields = TrackerConfig.model_fields
    p = sub.add_parser("track", help="run a tracker on MOTChallenge detections")
    p.add_argument("--mot", required=True, metavar="DET.txt", help="detections: frame,id,x,y,w,h,score,...")
    p.add_argument("-o", "--output", metavar="OUT.txt", help="MOTChallenge results file (default: stdout)")
    for field, (option, kind, metavar, text) in TRACKER_OPTIONS.items():
        p.add_argument(
            option, dest=field, type=kind, metavar=metavar, help=f"{text} ({fields[field].default})"
        )
    p.add_argument(
        "--high-threshold",
        type=float,
        metavar="F",
        help="occlusion: least score of a box that starts a track (as `detector.threshold`, "
        f"{DetectorConfig.model_fields['threshold'].default})",
    )
    p.add_argument("--min-score", type=float, metavar="F", help="drop detections scored below F")
    p.add_argument(
        "--fps", type=float, metavar="F", help="frame rate (default: seqinfo.ini beside det/, else none)"
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.config import (
        DetectorConfig,
        ImageFolderSourceConfig,
        TrackerConfig,
        check_option,
        settings_from_options,
    )
    from edgepipe.mot import seqinfo_beside, track_file

    settings = settings_from_options(
        TrackerConfig,
        {field: getattr(args, field) for field in TRACKER_OPTIONS},
        {field: option for field, (option, *_) in TRACKER_OPTIONS.items()},
    )
    high = DetectorConfig.model_fields["threshold"].default
    if args.high_threshold is not None:
        high = check_option(DetectorConfig, "threshold", args.high_threshold, "--high-threshold")
    info = seqinfo_beside(args.mot)
    fps = info.frame_rate if info is not None else None
    if args.fps is not None:  # a frame rate with the bounds of a frame rate anywhere in a pipeline file
        fps = check_option(ImageFolderSourceConfig, "fps", args.fps, "--fps")
    run = {"high_threshold": high, "min_score": args.min_score, "fps": fps}
    if args.output is None:
        track_file(args.mot, sys.stdout, settings, **run)
        return 0
    try:
        with open(args.output, "w") as out:
            track_file(args.mot, out, settings, **run)
    except OSError as error:
        raise OutputError(f"cannot write {args.output}: {error.strerror}") from error
    return 0
