"""Command line: `edgepipe run|check|eval|detect|track|bench|models|export|train`; parses and dispatches.

Each subcommand lives in edgepipe/commands/<name>.py. An EdgepipeError becomes one
`edgepipe: error: ...` line on stderr and exit status 2 (configuration) or 1 (anything else);
programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from edgepipe import __version__
from edgepipe.errors import EdgepipeError, mask_secrets

Handler = Callable[[argparse.Namespace], int]


class Terminated(BaseException):
    """SIGTERM before a command installed its own handling (run's: drain, flush, exit 0)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgepipe",
        description="Edge video analytics: detect (NanoDet-Plus/OpenVINO) → track → events → MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edgepipe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from edgepipe.commands import ALL  # after the signal handler: these imports take a while

    for command in ALL:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # First, before anything slow: a SIGTERM while Python imports or a model compiles must end the
    # process cleanly, not kill it (systemd may stop a service at any moment of its start).
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except Terminated:
        print("edgepipe: stopped by SIGTERM", file=sys.stderr)
        # `run` stopped before its pipelines started: a clean stop, as later on; anything else: 128 + 15
        command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), "")
        return 0 if command == "run" else 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    # FFmpeg and OpenCV print a line for every undecodable packet or refused connection; edgepipe says
    # what matters in its own words (a short video, a camera reconnecting). Set these to see theirs.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    # OpenCV's worker pool splits each frame's resize over the cores OpenVINO's inference threads are
    # busy on, and its waiting workers preempt them: with one thread, OpenCV's per-frame work stays on
    # the thread that asks for it (11 cameras of the 416 model, alternating runs: 79-90 → 83-105 FPS in
    # all, 7 pairs of 8 faster; one pipeline unchanged within noise).
    # Read when cv2 is first imported, which is after this (the commands import it lazily).
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except EdgepipeError as error:
        print(f"edgepipe: error: {mask_secrets(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`edgepipe track ... | head`): not an error; silence the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
