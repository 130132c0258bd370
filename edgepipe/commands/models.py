"""`edgepipe models list|fetch`: the models edgepipe knows, and placing one where pipelines find it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list known models; fetch one")
    what = p.add_subparsers(dest="models_action", required=True, metavar="{list,fetch}")
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
