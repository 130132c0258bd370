"""Command line: `edgepipe run|check|detect|track|bench|models|export`; parses and dispatches.

Each subcommand lives in edgepipe/commands/<name>.py. An EdgepipeError becomes one
`edgepipe: error: ...` line on stderr and exit status 2 (configuration) or 1 (anything else);
programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from edgepipe import __version__
from edgepipe.commands import ALL
from edgepipe.errors import EdgepipeError, mask_secrets

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgepipe",
        description="Edge video analytics: detect (NanoDet-Plus/OpenVINO) → track → events → MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edgepipe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in ALL:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
