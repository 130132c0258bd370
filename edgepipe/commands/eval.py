"""`edgepipe eval PIPELINE.yml --gt gt.txt`: how accurate a pipeline's counts and tracks are against
MOTChallenge ground truth (the scoring: edgepipe/evaluate/)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("eval", help="score a pipeline's counts against MOTChallenge ground truth")
    parser.set_defaults(handler=main)
    parser.add_argument("pipeline", metavar="PIPELINE.yml", help="the pipeline whose rules are scored")
    parser.add_argument("--gt", required=True, metavar="GT.txt", help="MOTChallenge ground truth")
    parser.add_argument(
        "--source",
        metavar="VIDEO",
        help="run the pipeline on this video instead of its own source (video frame i = gt frame i + 1)",
    )
    parser.add_argument(
        "--tracks",
        metavar="TRACKS.txt",
        help="tracks a run saved (MOTChallenge rows, `edgepipe run --tracks`): no detector run; the "
        "rules run on them unless --events is given",
    )
    parser.add_argument(
        "--events",
        metavar="EVENTS.jsonl",
        help="events a run saved (`edgepipe run --events`; one run per file): scored as they are",
    )
    parser.add_argument(
        "--fps",
        type=float,
        metavar="F",
        help="frame rate (default: seqinfo.ini beside gt/, else the video's)",
    )
    parser.add_argument(
        "--window-s",
        type=float,
        metavar="S",
        help="an event within S seconds of the true one matches it (default: 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def main(args: argparse.Namespace) -> int:
    from edgepipe.evaluate.report import run_eval  # numpy, pydantic, OpenVINO: not for `edgepipe --help`

    return run_eval(args)
