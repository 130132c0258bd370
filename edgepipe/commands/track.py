"""`edgepipe track --mot det.txt`: the tracker over MOTChallenge detections, MOTChallenge results out."""

from __future__ import annotations

import argparse
import sys

from edgepipe.errors import OutputError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("track", help="run the SORT tracker on MOTChallenge detections")
    p.add_argument("--mot", required=True, metavar="DET.txt", help="detections: frame,id,x,y,w,h,score,...")
    p.add_argument("-o", "--output", metavar="OUT.txt", help="MOTChallenge results file (default: stdout)")
    p.add_argument(
        "--max-age", type=int, metavar="N", help="frames a track may go unmatched (as `tracker.max_age`)"
    )
    p.add_argument(
        "--min-hits", type=int, metavar="N", help="matches in a row to be reported (as `tracker.min_hits`)"
    )
    p.add_argument("--iou", type=float, metavar="F", help="least IoU of a match (as `tracker.iou_threshold`)")
    p.add_argument("--min-score", type=float, metavar="F", help="drop detections scored below F")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.config import TrackerConfig, settings_from_options
    from edgepipe.mot import track_file

    settings = settings_from_options(
        TrackerConfig,
        {"max_age": args.max_age, "min_hits": args.min_hits, "iou_threshold": args.iou},
        {"max_age": "--max-age", "min_hits": "--min-hits", "iou_threshold": "--iou"},
    )
    if args.output is None:
        track_file(args.mot, sys.stdout, settings, args.min_score)
        return 0
    try:
        with open(args.output, "w") as out:
            track_file(args.mot, out, settings, args.min_score)
    except OSError as error:
        raise OutputError(f"cannot write {args.output}: {error.strerror}") from error
    return 0
