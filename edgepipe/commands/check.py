"""`edgepipe check`: validate pipeline files, their models and rules, and that each source answers."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING

from edgepipe.errors import ConfigError, EdgepipeError, SourceError

if TYPE_CHECKING:
    from edgepipe.sources import Source


LOCAL_OPEN_TIMEOUT_S = 10.0  # a file or folder that gives no frame in this long is broken


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate pipeline files, model files and source reachability")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml")
    p.add_argument("--no-source", action="store_true", help="do not try to open the sources")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.commands.run import load_all
    from edgepipe.config import LiveSourceConfig
    from edgepipe.detect import Detector, ModelPool
    from edgepipe.pipeline import build_rule
    from edgepipe.sources import open_source

    configs = load_all(args.pipelines)
    pool = ModelPool()
    problems: list[str] = []
    for path, cfg in zip(args.pipelines, configs, strict=True):
        try:
            detector = Detector(cfg.detector, pool=pool)
            for rule in cfg.rules:
                build_rule(cfg.name, rule, detector.labels)
            if cfg.outputs.mqtt is not None:
                cfg.outputs.mqtt.password()
            if not args.no_source:
                spec = cfg.source
                timeout_s = (
                    spec.open_timeout_s if isinstance(spec, LiveSourceConfig) else LOCAL_OPEN_TIMEOUT_S
                )
                _probe_source(open_source(spec), timeout_s)
        except EdgepipeError as error:
            problems.append(f"{path}: {error}")
            continue
        print(f"{path}: ok ({cfg.name}: {len(cfg.rules)} rules, model {cfg.detector.model.name})")
    if problems:
        raise ConfigError("\n".join(problems))
    return 0


def _probe_source(source: Source, timeout_s: float) -> None:
    """Open the source and read one frame, so an unreachable camera shows up now."""
    # a live source retries forever by design; the timer turns that into a clear answer
    timer = threading.Timer(timeout_s, source.stop)
    timer.start()
    try:
        with source:
            for frame in source.frames():
                if frame is not None:
                    return
    finally:
        timer.cancel()
    raise SourceError(f"the source gave no frame within {timeout_s:g} s (state: {source.stats().state})")
