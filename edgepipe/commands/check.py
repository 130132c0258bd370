"""`edgepipe check`: validate pipeline files, their models and rules, that each source answers with
frames the rules fit in, and that each MQTT broker answers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edgepipe.errors import BrokerError, ConfigError, EdgepipeError

if TYPE_CHECKING:
    from edgepipe.config import PipelineConfig
    from edgepipe.pipeline import Prepared

BROKER_TIMEOUT_S = 10.0  # a broker that has not answered a CONNECT in this long is as good as away


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate pipeline files, model files and source reachability")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml")
    p.add_argument("--no-source", action="store_true", help="do not try to open the sources")
    p.add_argument("--no-broker", action="store_true", help="do not connect to the MQTT brokers")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.commands.run import load_all
    from edgepipe.commands.snapshot import LOCAL_OPEN_TIMEOUT_S, take_frame
    from edgepipe.config import LiveSourceConfig
    from edgepipe.detect import ModelPool
    from edgepipe.pipeline import prepare
    from edgepipe.web import process_settings

    configs = load_all(args.pipelines)
    pool = ModelPool()
    problems: list[str] = []
    try:
        settings = process_settings(list(zip(args.pipelines, configs, strict=True)))
        if settings is not None:
            settings.token()
    except EdgepipeError as error:
        problems.append(str(error))
    for path, cfg in zip(args.pipelines, configs, strict=True):
        found: list[str] = []
        try:
            ready = prepare(cfg, pool)  # exactly what `edgepipe run` checks before its first frame
        except EdgepipeError as error:
            problems.extend(_lines(path, error))
            continue
        frame_size = broker = ""
        try:  # the source and the rules on its frames, then the broker: each finding is reported
            if not args.no_source:
                spec = cfg.source
                timeout_s = (
                    spec.open_timeout_s if isinstance(spec, LiveSourceConfig) else LOCAL_OPEN_TIMEOUT_S
                )
                image = take_frame(ready.source, timeout_s=timeout_s).image
                ready.rules.place((image.shape[0], image.shape[1]))  # every rule inside the frame
                frame_size = f", {image.shape[1]}x{image.shape[0]} frames"
        except EdgepipeError as error:
            found.extend(_lines(path, error))
        try:
            broker = "" if args.no_broker else _probe_broker(cfg, ready)
        except EdgepipeError as error:
            found.extend(_lines(path, error))
        if found:
            problems.extend(found)
            continue
        print(
            f"{path}: ok ({cfg.name}: {len(cfg.rules)} rules, model {cfg.detector.model.name}{frame_size}{broker})"
        )
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


def _lines(path: str, error: EdgepipeError) -> list[str]:
    """A finding's lines: a ConfigError already says FILE:LINE: field; anything else gets the file."""
    lines = str(error).splitlines()
    return lines if isinstance(error, ConfigError) else [f"{path}: {line}" for line in lines]
