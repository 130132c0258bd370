"""The subcommands, one module each: `add_parser(sub)` declares the options, `main(args)` runs it.

Modules import what they need inside `main`, so `edgepipe --help` is instant.
"""

from __future__ import annotations

from edgepipe.commands import bench, check, detect, eval, export, models, run, snapshot, track, train

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
    train,
)  # in the order `edgepipe --help` lists them
