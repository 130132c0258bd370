"""`edgepipe models list|fetch|quantize`: the models edgepipe knows, placing one where pipelines find
it, and an INT8 IR of one for CPUs without bf16."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgepipe.export.quantize import CALIB_FRAMES  # no NNCF or torch at import

    p = sub.add_parser("models", help="list known models; fetch one")
    what = p.add_subparsers(dest="models_action", required=True, metavar="{list,fetch,quantize}")
    lst = what.add_parser("list", help="list the models in the manifest and whether they are present")
    lst.add_argument(
        "--dest", metavar="DIR", help="models folder to look in (default: $EDGEPIPE_MODELS or ./models)"
    )
    lst.set_defaults(handler=list_models)
    fetch = what.add_parser("fetch", help="copy or download a model, verify its sha256, write its card")
    fetch.add_argument("name")
    fetch.add_argument(
        "--from", dest="from_dir", metavar="DIR", help="copy from this folder instead of downloading"
    )
    fetch.add_argument(
        "--dest",
        metavar="DIR",
        help="target folder (default: $EDGEPIPE_MODELS, $STATE_DIRECTORY/models or ./models)",
    )
    fetch.set_defaults(handler=fetch_model)
    quantize = what.add_parser(
        "quantize",
        help="an INT8 IR of a fetched model (NNCF post-training quantisation; needs edgepipe[export])",
        description="Quantise a fetched float model to INT8 on calibration frames from your cameras: a "
        "folder of images or a video, or several. Written beside it (or in --dest) only if the INT8 model finds at least "
        "80%% of the float model's detections on those frames. Measure it with `edgepipe bench detector "
        "--model INT8.xml --model FLOAT.xml --coco DIR --video V`.",
    )
    quantize.add_argument("name", help="a model of `edgepipe models list`, fetched")
    quantize.add_argument(
        "--calib",
        required=True,
        type=Path,
        action="append",
        metavar="PATH",
        help="folder of images, or a video; repeat for several (the frames are shared evenly)",
    )
    quantize.add_argument(
        "--frames",
        type=int,
        default=CALIB_FRAMES,
        metavar="N",
        help=f"calibration frames at most ({CALIB_FRAMES}), shared by the --calib sources, spread over a video",
    )
    quantize.add_argument(
        "--dest",
        metavar="DIR",
        help="models folder (default: $EDGEPIPE_MODELS, $STATE_DIRECTORY/models or ./models)",
    )
    quantize.set_defaults(handler=quantize_model)


def list_models(args: argparse.Namespace) -> int:
    from edgepipe.models import load_manifest
    from edgepipe.paths import models_directory

    folder = Path(args.dest) if args.dest else models_directory()
    default, entries = load_manifest()
    for entry in entries.values():
        present = "present" if (folder / entry.model_file).is_file() else "not fetched"
        mark = "*" if entry.name == default else " "
        official = f"COCO mAP {entry.coco_map_official}" if entry.coco_map_official else "third-party"
        print(f"{mark} {entry.name:24} {entry.input_size:4d}px {entry.precision:5} {official:16} {present}")
    print(f"(* default; models folder {folder.resolve()})")
    return 0


def fetch_model(args: argparse.Namespace) -> int:
    from edgepipe.modelcard import card_path
    from edgepipe.models import fetch, get_entry
    from edgepipe.paths import models_directory

    entry = get_entry(args.name)
    dest = Path(args.dest) if args.dest else models_directory()
    model_path = fetch(entry, dest, Path(args.from_dir) if args.from_dir else None)
    print(f"{entry.name}: {model_path} (sha256 verified, card {card_path(model_path).name})")
    return 0


def quantize_model(args: argparse.Namespace) -> int:
    from edgepipe.errors import ConfigError, EdgepipeError
    from edgepipe.models import get_entry
    from edgepipe.paths import models_directory

    entry = get_entry(args.name)
    folder = Path(args.dest) if args.dest else models_directory()
    model = folder / entry.model_file
    if not model.is_file():
        raise ConfigError(
            f"{model} is not there: run `edgepipe models fetch {entry.name}` first (or give --dest)"
        )
    if args.frames < 10:
        raise ConfigError(f"--frames {args.frames}: expected at least 10")
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise EdgepipeError("edgepipe models quantize needs nncf: pip install 'edgepipe[export]'") from None
    from edgepipe.export.quantize import quantize

    result = quantize(model, args.calib, folder, most=args.frames)
    found, total = result.matched
    print(
        f"{entry.name}: {result.path} (INT8, {result.calib_frames} calibration frames; finds {found} of "
        f"{total} float-model detections on them, {result.recall:.1%})"
    )
    return 0
