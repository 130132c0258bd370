"""`edgepipe bench tracker|detector|page|train`: speed as ratios against a baseline measured in the same run."""

from __future__ import annotations

import argparse

from edgepipe.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench", help="benchmarks: speed as ratios against a baseline measured in the same run"
    )
    what = p.add_subparsers(
        dest="bench_target", required=True, metavar="{pipeline,tracker,detector,page,train}"
    )

    pipeline = what.add_parser(
        "pipeline",
        help="the whole pipeline against the ceiling its model and video allow; N real-time streams; memory",
    )
    pipeline.add_argument("pipeline", metavar="PIPELINE.yml", help="a pipeline with a video file source")
    pipeline.add_argument("--frames", type=int, default=400, metavar="N", help="frames per speed run (400)")
    pipeline.add_argument(
        "--rounds", type=int, default=3, metavar="N", help="limit/decode/pipeline rounds (3)"
    )
    pipeline.add_argument(
        "--streams",
        type=int,
        metavar="N",
        help="also N real-time copies in one process, then the largest number that holds the source fps",
    )
    pipeline.add_argument(
        "--seconds", type=float, default=10.0, metavar="S", help="measured seconds per streams run (10)"
    )
    pipeline.add_argument(
        "--soak",
        type=int,
        metavar="FRAMES",
        help="also a looped run of FRAMES frames, resident memory sampled",
    )
    pipeline.add_argument(
        "--no-speed", action="store_true", help="skip the rounds (with --streams or --soak)"
    )
    pipeline.add_argument("--json", action="store_true", help="print the results as one JSON object")
    pipeline.set_defaults(handler=bench_pipeline)

    tracker = what.add_parser(
        "tracker", help="SORT on MOT sequences: MOTA/IDF1 and speed against a PyPI SORT"
    )
    tracker.add_argument(
        "--data", required=True, metavar="DIR", help="folder of MOT sequences (<seq>/det/det.txt)"
    )
    tracker.add_argument(
        "--high-threshold",
        type=float,
        metavar="F",
        help="score from which a box starts a track in the occlusion tracker (default: MOT15's, 0.8)",
    )
    tracker.add_argument(
        "--repeats", type=int, default=3, metavar="N", help="speed runs per case, best kept (3)"
    )
    tracker.add_argument("--json", action="store_true", help="print the results as one JSON object")
    tracker.add_argument(
        "--gate", metavar="FILE", help="also write the accuracy numbers as a regression gate file"
    )
    tracker.set_defaults(handler=bench_tracker)

    detector = what.add_parser("detector", help="detector FPS against OpenVINO's own throughput; COCO mAP")
    detector.add_argument("--model", action="append", metavar="M", help="model file; repeat for several")
    detector.add_argument("--video", metavar="V", help="video for the speed runs (needed unless --no-speed)")
    detector.add_argument("--frames", type=int, default=200, metavar="N", help="frames per speed round (200)")
    detector.add_argument(
        "--rounds", type=int, default=3, metavar="N", help="alternating limit/stage rounds (3)"
    )
    detector.add_argument("--precision", default="auto", choices=("auto", "f32", "bf16", "f16"))
    detector.add_argument("--hint", default="throughput", choices=("throughput", "latency"))
    detector.add_argument(
        "--in-flight", type=int, metavar="N", help="requests in flight (default: optimal + 1)"
    )
    detector.add_argument(
        "--coco", metavar="DIR", help="also evaluate mAP on a COCO folder (val2017/, annotations/)"
    )
    detector.add_argument("--no-speed", action="store_true", help="skip the speed runs (with --coco)")
    detector.set_defaults(handler=bench_detector)

    page = what.add_parser(
        "page",
        help="what watching costs: loop fps with one live viewer vs none, and with the server vs without",
    )
    page.add_argument("pipeline", metavar="PIPELINE.yml", help="a pipeline with a video file source")
    page.add_argument("--pairs", type=int, default=10, metavar="N", help="idle/watched segment pairs (10)")
    page.add_argument("--segment-frames", type=int, default=100, metavar="N", help="frames per segment (100)")
    page.add_argument("--rounds", type=int, default=3, metavar="N", help="off/idle pairs of whole runs (3)")
    page.add_argument("--frames", type=int, default=300, metavar="N", help="frames per whole run (300)")
    page.add_argument(
        "--stream-fps",
        type=float,
        default=5.0,
        metavar="F",
        help="the viewer's picture rate, http.stream_fps (5)",
    )
    page.add_argument("--json", action="store_true", help="print the results as one JSON object")
    page.set_defaults(handler=bench_page)

    from edgepipe.bench.train import add_arguments as add_train_arguments

    train = what.add_parser("train", help="fine-tune on COCO images, person AP against the official weights")
    add_train_arguments(train)
    train.set_defaults(handler=bench_train)


def bench_tracker(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from edgepipe.bench.tracker import MOT15_HIGH_THRESHOLD, accuracy_summary, format_report, run_benchmark
    from edgepipe.config import DetectorConfig, check_option

    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: expected N >= 1")
    high = MOT15_HIGH_THRESHOLD
    if args.high_threshold is not None:
        high = check_option(DetectorConfig, "threshold", args.high_threshold, "--high-threshold")
    report = run_benchmark(Path(args.data), high, args.repeats)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.gate:
        gate = {"data": Path(args.data).name, "high_threshold": high, "settings": report["settings"]}
        gate["trackers"] = accuracy_summary(report["accuracy"])
        Path(args.gate).write_text(json.dumps(gate, indent=1) + "\n")
    return 0


def bench_pipeline(args: argparse.Namespace) -> int:
    import functools
    import json

    from edgepipe.bench.pipeline import (
        CeilingProbe,
        Report,
        file_source_of,
        format_report,
        largest_holding,
        measure_rounds,
        soak_run,
    )
    from edgepipe.config import load_pipeline
    from edgepipe.detect import ModelPool
    from edgepipe.sources import FileSource

    for option, value, least in (
        ("--frames", args.frames, 10),
        ("--rounds", args.rounds, 1),
        ("--streams", args.streams, 1),
        ("--seconds", args.seconds, 1.0),
        ("--soak", args.soak, 3000),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{option} {value}: expected at least {least}")
    if args.no_speed and args.streams is None and args.soak is None:
        raise ConfigError("--no-speed: give --streams N or --soak FRAMES, or there is nothing to measure")
    cfg, pool = load_pipeline(args.pipeline), ModelPool()
    with FileSource(file_source_of(cfg)) as video:
        height, width = video.frame_size() or (0, 0)
    report = Report(
        cfg.name, cfg.detector.model.name, (width, height), cfg.detector.precision, 0, args.frames
    )
    if not args.no_speed or args.streams is not None:
        probe = CeilingProbe.of(cfg, pool)
        report.limit_requests = probe.requests
        if not args.no_speed:
            measure_rounds(cfg, pool, probe, args.frames, args.rounds, report)
        if args.streams is not None:  # the ceiling again around each trial, on as many frames as a round
            ceiling = functools.partial(probe.ceiling_fps, args.frames)
            largest_holding(cfg, pool, args.streams, args.seconds, report, ceiling=ceiling)
    if args.soak is not None:
        report.soak = soak_run(cfg, pool, args.soak)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


def bench_detector(args: argparse.Namespace) -> int:
    from edgepipe.bench.detector import bench_command

    return bench_command(args)


def bench_page(args: argparse.Namespace) -> int:
    import json

    from edgepipe.bench.page import format_report, prepared, report, watched_segments, whole_runs
    from edgepipe.config import HttpConfig, load_pipeline, settings_from_options
    from edgepipe.detect import ModelPool

    for option, value, least in (
        ("--pairs", args.pairs, 1),
        ("--segment-frames", args.segment_frames, 10),
        ("--rounds", args.rounds, 0),
        ("--frames", args.frames, 10),
    ):
        if value < least:
            raise ConfigError(f"{option} {value}: expected at least {least}")
    http = settings_from_options(HttpConfig, {"stream_fps": args.stream_fps}, {"stream_fps": "--stream-fps"})
    cfg, pool = prepared(load_pipeline(args.pipeline)), ModelPool()
    segments = watched_segments(
        cfg, pairs=args.pairs, segment_frames=args.segment_frames, stream_fps=http.stream_fps, pool=pool
    )
    runs = whole_runs(cfg, rounds=args.rounds, frames=args.frames, pool=pool)
    summary = report(segments, runs, http.stream_fps)
    print(json.dumps(summary, indent=2) if args.json else format_report(summary))
    return 0


def bench_train(args: argparse.Namespace) -> int:
    from edgepipe.bench.train import run

    return run(args)
