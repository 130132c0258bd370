"""`edgepipe check`: validate pipeline files, their models and rules, and that each source answers
with frames the rules fit in."""

from __future__ import annotations

import argparse

from edgepipe.errors import ConfigError, EdgepipeError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate pipeline files, model files and source reachability")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml")
    p.add_argument("--no-source", action="store_true", help="do not try to open the sources")
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
        try:
            ready = prepare(cfg, pool)  # exactly what `edgepipe run` checks before its first frame
            frame_size = ""
            if not args.no_source:
                spec = cfg.source
                timeout_s = (
                    spec.open_timeout_s if isinstance(spec, LiveSourceConfig) else LOCAL_OPEN_TIMEOUT_S
                )
                image = take_frame(ready.source, timeout_s=timeout_s).image
                ready.rules.place((image.shape[0], image.shape[1]))  # every rule inside the frame
                frame_size = f", {image.shape[1]}x{image.shape[0]} frames"
        except ConfigError as error:  # already FILE:LINE: field
            problems.extend(str(error).splitlines())
            continue
        except EdgepipeError as error:
            problems.extend(f"{path}: {line}" for line in str(error).splitlines())
            continue
        print(f"{path}: ok ({cfg.name}: {len(cfg.rules)} rules, model {cfg.detector.model.name}{frame_size})")
    if problems:
        raise ConfigError("\n".join(problems))
    return 0
