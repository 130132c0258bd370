"""`edgepipe check`: validate pipeline files, their models and rules, and that each source and MQTT
broker answers."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING

from edgepipe.errors import BrokerError, ConfigError, EdgepipeError, SourceError

if TYPE_CHECKING:
    from edgepipe.config import PipelineConfig
    from edgepipe.pipeline import Prepared
    from edgepipe.sources import Source


LOCAL_OPEN_TIMEOUT_S = 10.0  # a file or folder that gives no frame in this long is broken
BROKER_TIMEOUT_S = 10.0  # a broker that has not answered a CONNECT in this long is as good as away


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate pipeline files, model files and source reachability")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml")
    p.add_argument("--no-source", action="store_true", help="do not try to open the sources")
    p.add_argument("--no-broker", action="store_true", help="do not connect to the MQTT brokers")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.commands.run import load_all
    from edgepipe.config import LiveSourceConfig
    from edgepipe.detect import ModelPool
    from edgepipe.pipeline import prepare

    configs = load_all(args.pipelines)
    pool = ModelPool()
    problems: list[str] = []
    for path, cfg in zip(args.pipelines, configs, strict=True):
        try:
            ready = prepare(cfg, pool)  # exactly what `edgepipe run` checks before its first frame
            broker = "" if args.no_broker else _probe_broker(cfg, ready)
            if not args.no_source:
                spec = cfg.source
                timeout_s = (
                    spec.open_timeout_s if isinstance(spec, LiveSourceConfig) else LOCAL_OPEN_TIMEOUT_S
                )
                _probe_source(ready.source, timeout_s)
        except ConfigError as error:  # already FILE:LINE: field
            problems.append(str(error))
            continue
        except EdgepipeError as error:
            problems.append(f"{path}: {error}")
            continue
        print(f"{path}: ok ({cfg.name}: {len(cfg.rules)} rules, model {cfg.detector.model.name}{broker})")
    if problems:
        raise ConfigError("\n".join(problems))
    return 0


def _probe_broker(cfg: PipelineConfig, ready: Prepared) -> str:
    """Connect to the pipeline's broker as `run` would; a refusal or no answer is a finding at the
    `outputs.mqtt` section's line. What the ok line adds, e.g. ", MQTT broker localhost:1883"."""
    from edgepipe.publish.probe import probe_broker

    if ready.mqtt is None:
        return ""
    try:
        probe_broker(ready.mqtt, BROKER_TIMEOUT_S)
    except BrokerError as error:
        raise cfg.error_at(("outputs", "mqtt"), str(error)) from None
    return f", MQTT broker {ready.mqtt.broker}"


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
