"""The subcommands, one module each: `add_parser(sub)` declares the options, `main(args)` runs it.

Modules import what they need inside `main`, so `edgepipe --help` is instant.
"""

from __future__ import annotations

from edgepipe.commands import bench, check, detect, eval, export, models, run, snapshot, track

ALL = (
    run,
    check,
    snapshot,
    eval,
    detect,
    track,
    bench,
    models,
    export,
)  # in the order `edgepipe --help` lists them
