"""Command line: `edgepipe run|check|detect|track|bench|models|export|train`.

Each subcommand has an `_add_<name>` function that declares its options and a `_cmd_<name>`
function that runs it. Heavy imports (OpenVINO, torch) happen inside the handlers so that
`edgepipe --help` is instant. An EdgepipeError becomes one `edgepipe: error: ...` line on stderr
and exit status 2 (configuration) or 1 (anything else); programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from edgepipe import __version__
from edgepipe.errors import ConfigError, EdgepipeError

Handler = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- run / check
def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run one or more pipelines until the source ends or SIGTERM")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml", help="pipeline files")
    p.add_argument("--source", metavar="PATH_OR_URL", help="replace the source of the (single) pipeline")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--events", metavar="PATH", help="also write events as JSON lines to PATH ('-' = stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from edgepipe.commands import run_command

    return run_command(args)


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate pipeline files, model files and source reachability")
    p.add_argument("pipelines", nargs="+", metavar="PIPELINE.yml")
    p.add_argument("--no-source", action="store_true", help="do not try to open the sources")
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from edgepipe.commands import check_command

    return check_command(args)


# ---------------------------------------------------------------- detect (issue 7)
def _add_detect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("detect", help="run the detector on an image or a video and print detections")
    p.add_argument("input", metavar="IMAGE_OR_VIDEO")
    p.add_argument("--model", metavar="M", help="IR .xml or ONNX (default: nanodet-plus-m_416_fp16.xml)")
    p.add_argument("--threshold", type=float, default=0.4, metavar="F", help="score threshold (default 0.4)")
    p.add_argument("--classes", metavar="NAMES", help="keep only these labels, e.g. person,car")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU, AUTO (default CPU)")
    p.add_argument("--precision", default="auto", choices=("auto", "f32", "bf16", "f16"))
    p.add_argument("--json", action="store_true", help="JSON: a list per image, one object per video frame")
    p.add_argument("--out", metavar="PATH", help="write the annotated image (or .mp4 for a video)")
    p.add_argument("--max-frames", type=int, metavar="N", help="video: stop after N frames")
    p.set_defaults(handler=_cmd_detect)


def _cmd_detect(args: argparse.Namespace) -> int:
    from edgepipe.detect.command import detect_command

    return detect_command(args)


# ---------------------------------------------------------------- track (issue 3)
def _add_track(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("track", help="run the SORT tracker on MOTChallenge detections")
    p.add_argument("--mot", required=True, metavar="DET.txt", help="detections: frame,id,x,y,w,h,score,...")
    p.add_argument("-o", "--output", metavar="OUT.txt", help="MOTChallenge results file (default: stdout)")
    p.add_argument("--max-age", type=int, default=1, metavar="N", help="frames a track may go unmatched (1)")
    p.add_argument("--min-hits", type=int, default=3, metavar="N", help="matches in a row to be reported (3)")
    p.add_argument("--iou", type=float, default=0.3, metavar="F", help="least IoU of a match (0.3)")
    p.add_argument("--min-score", type=float, metavar="F", help="drop detections scored below F")
    p.set_defaults(handler=_cmd_track)


def _cmd_track(args: argparse.Namespace) -> int:
    from edgepipe.mot import track_file

    for option, value, ok in (
        ("--max-age", args.max_age, args.max_age >= 0),
        ("--min-hits", args.min_hits, args.min_hits >= 0),
        ("--iou", args.iou, 0 < args.iou <= 1),
    ):
        if not ok:
            raise ConfigError(f"{option} {value}: expected {'0 < F <= 1' if option == '--iou' else 'N >= 0'}")
    if args.output is None:
        track_file(args.mot, sys.stdout, args.max_age, args.min_hits, args.iou, args.min_score)
        return 0
    try:
        with open(args.output, "w") as out:
            track_file(args.mot, out, args.max_age, args.min_hits, args.iou, args.min_score)
    except OSError as error:
        raise EdgepipeError(f"cannot write {args.output}: {error.strerror}") from error
    return 0


# ---------------------------------------------------------------- bench (issues 3, 7)
def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench", help="benchmarks: speed as ratios against a baseline measured in the same run"
    )
    what = p.add_subparsers(dest="bench_target", required=True, metavar="{tracker,detector,train}")
    _add_bench_tracker(what)
    _add_bench_detector(what)
    _add_bench_train(what)


def _add_bench_tracker(what: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = what.add_parser("tracker", help="SORT on MOT15: MOTA/IDF1 and speed against a PyPI SORT")
    p.add_argument("--data", metavar="DIR", help="folder of MOT sequences (default ../shared/data/mot15)")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="speed runs per case, best kept (3)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(handler=_cmd_bench_tracker)


def _cmd_bench_tracker(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from edgepipe.bench.tracker import SortParams, default_data_dir, format_report, run_benchmark

    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: expected N >= 1")
    report = run_benchmark(Path(args.data) if args.data else default_data_dir(), SortParams(), args.repeats)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _add_bench_detector(what: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = what.add_parser("detector", help="detector FPS against OpenVINO's own throughput; COCO mAP")
    p.add_argument("--model", action="append", metavar="M", help="model file; repeat for several (--coco)")
    p.add_argument(
        "--video", metavar="V", help="video for the speed runs (default ../shared/data/video/vtest.mp4)"
    )
    p.add_argument(
        "--frames", type=int, default=200, metavar="N", help="frames per speed round (default 200)"
    )
    p.add_argument(
        "--rounds", type=int, default=3, metavar="N", help="alternating limit/stage rounds (default 3)"
    )
    p.add_argument("--precision", default="auto", choices=("auto", "f32", "bf16", "f16"))
    p.add_argument("--hint", default="throughput", choices=("throughput", "latency"))
    p.add_argument("--in-flight", type=int, metavar="N", help="requests in flight (default: optimal + 1)")
    p.add_argument(
        "--coco", metavar="DIR", help="also evaluate mAP on a COCO folder (e.g. ../shared/data/coco)"
    )
    p.add_argument("--no-speed", action="store_true", help="skip the speed runs (with --coco)")
    p.set_defaults(handler=_cmd_bench_detector)


def _cmd_bench_detector(args: argparse.Namespace) -> int:
    from edgepipe.bench.detector import bench_command

    return bench_command(args)


def _add_bench_train(what: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgepipe.bench.train import add_arguments

    p = what.add_parser("train", help="fine-tune on COCO images, person AP against the official weights")
    add_arguments(p)
    p.set_defaults(handler=_cmd_bench_train)


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from edgepipe.bench.train import run

    return run(args)


# ---------------------------------------------------------------- models (issue 2)
def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list known models; fetch one into models/")
    what = p.add_subparsers(dest="models_action", required=True, metavar="{list,fetch}")
    lst = what.add_parser("list", help="list the models in the manifest and whether they are present")
    lst.set_defaults(handler=_cmd_models_list)
    fetch = what.add_parser("fetch", help="copy or download a model, verify its sha256, place it in models/")
    fetch.add_argument("name")
    fetch.add_argument(
        "--from", dest="from_dir", metavar="DIR", help="copy from this folder instead of downloading"
    )
    fetch.add_argument("--dest", metavar="DIR", help="target folder (default: models/ of this checkout)")
    fetch.set_defaults(handler=_cmd_models_fetch)


def _cmd_models_list(args: argparse.Namespace) -> int:
    from edgepipe.models import list_command

    return list_command(args)


def _cmd_models_fetch(args: argparse.Namespace) -> int:
    from edgepipe.models import fetch_command

    return fetch_command(args)


# ---------------------------------------------------------------- export (issue 6)
def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path

    from edgepipe.export.arch import ARCHS, SIZES

    p = sub.add_parser(
        "export",
        help="NanoDet-Plus checkpoint → ONNX → OpenVINO IR (FP16, optional INT8)",
        description="Export a NanoDet-Plus checkpoint and check the IR against PyTorch on real images; "
        "nothing is written unless the check passes. Needs `pip install edgepipe[export]`.",
    )
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="NanoDet .ckpt/.pth/state dict, or a BN-folded official-format .onnx",
    )
    weights.add_argument("--random-init", action="store_true", help="random weights (smoke tests)")
    p.add_argument("--arch", required=True, choices=sorted(ARCHS))
    p.add_argument("--size", required=True, type=int, choices=SIZES, help="square input side in pixels")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--name", help="file stem (default: ARCH_SIZE)")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names, one a line (default: COCO 80)")
    p.add_argument("--int8", action="store_true", help="also write an INT8 IR (NNCF quantization)")
    p.add_argument("--calib", type=Path, metavar="IMAGES_DIR", help="calibration images for --int8")
    p.add_argument(
        "--verify-images",
        type=Path,
        default=Path("../shared/models/samples"),
        metavar="DIR",
        help="images for the parity check (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from edgepipe.export import COCO_LABELS, ExportRequest, export
    from edgepipe.export.convert import read_labels

    try:
        import nncf  # noqa: F401
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise EdgepipeError(f"edgepipe export needs {error.name}: pip install 'edgepipe[export]'") from None
    request = ExportRequest(
        checkpoint=None if args.random_init else args.checkpoint,
        arch=args.arch,
        size=args.size,
        out_dir=args.out,
        verify_dir=args.verify_images,
        labels=read_labels(args.labels, COCO_LABELS),
        name=args.name,
        int8=args.int8,
        calib_dir=args.calib,
        seed=args.seed,
    )
    result = export(request)
    print(f"FP32 ONNX vs PyTorch: max |Δ| {result.onnx.raw_max:.2e}")
    print(f"FP16 IR vs PyTorch: max |Δ| {result.fp16.raw_max:.2e} (scores {result.fp16.score_max:.2e}, "
          f"box sides {result.fp16.side_max:.2e} bins)")  # fmt: skip
    if result.int8_recall is not None:
        found, total = result.int8_matched
        print(f"INT8 finds {found} of {total} FP16 detections ({result.int8_recall:.1%})")
    for path in result.files:
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- train (issue 16)
def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgepipe.train.command import add_arguments

    p = sub.add_parser(
        "train",
        help="fine-tune NanoDet-Plus on a COCO-format data set (needs `pip install edgepipe[train]`)",
        description="Fine-tune NanoDet-Plus from the official COCO weights or a checkpoint; checkpoints "
        "loadable by `edgepipe export`; --export writes the IR at the end.",
    )
    add_arguments(p)
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from edgepipe.train.command import run

    return run(args)


# ---------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgepipe",
        description="Edge video analytics: detect (NanoDet-Plus/OpenVINO) → track (SORT) → events → MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edgepipe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_run,
        _add_check,
        _add_detect,
        _add_track,
        _add_bench,
        _add_models,
        _add_export,
        _add_train,
    ):
        add(sub)
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
        print(f"edgepipe: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`edgepipe track ... | head`): not an error; silence the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
