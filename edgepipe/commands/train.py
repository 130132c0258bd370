"""`edgepipe train`: fine-tune NanoDet-Plus on a COCO-format data set, then optionally export it.

The options need no torch (so `edgepipe --help` works without the extra); `main` checks the data
completely first, then imports torch. The training itself: edgepipe/train/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.export.arch import ARCHS, SIZES
from edgepipe.train.recipe import Recipe

if TYPE_CHECKING:
    from edgepipe.train.dataset import DetectionSet

log = logging.getLogger(__name__)

DEFAULTS = Recipe()
VERIFY_IMAGES = 8  # images for the export's parity check
CALIB_IMAGES = 300  # NNCF's default subset size
CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".onnx")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "train",
        help="fine-tune NanoDet-Plus on a COCO-format data set (needs `pip install edgepipe[train]`)",
        description="Fine-tune NanoDet-Plus from the official COCO weights or a checkpoint; checkpoints "
        "loadable by `edgepipe export`; --export writes the IR at the end.",
    )
    parser.set_defaults(handler=main)
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR_OR_COCO_JSON",
        help="COCO instances .json, or the folder holding it (CVAT, Label Studio, Roboflow exports)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="folder the file names (of --data and --val) are relative to (default: found)",
    )
    parser.add_argument("--arch", default="nanodet-plus-m", choices=sorted(ARCHS))
    parser.add_argument("--size", required=True, type=int, choices=SIZES, help="square input side in pixels")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="checkpoints (and --export files) go here"
    )
    parser.add_argument("--init", metavar="NAME_OR_CKPT",
                        help="official weights by name (nanodet-plus-m-416, nanodet-plus-m-320) or a .ckpt/.pth/.onnx "
                        "(default: nanodet-plus-m-SIZE)")  # fmt: skip
    parser.add_argument("--weights-dir", type=Path, metavar="DIR",
                        help="folder with the official weights for --init NAME (default: the models folder: $EDGEPIPE_MODELS, else ./models)")  # fmt: skip
    parser.add_argument(
        "--classes", metavar="NAMES", help="comma-separated category names to learn (default: all)"
    )
    parser.add_argument("--val", metavar="DIR_OR_COCO_JSON|SHARE",
                        help="validation set, or a share (0..1) of the images to hold out; mAP each epoch picks the best checkpoint")  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=DEFAULTS.epochs, metavar="N", help="default %(default)s"
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULTS.batch, metavar="N", help="images per step (default %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=DEFAULTS.lr, metavar="F", help="AdamW learning rate (default %(default)s)"
    )
    parser.add_argument(
        "--no-augment", action="store_true", help="plain resize, no random flips/shifts/colours"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        metavar="N",
        help="same seed, same weights (default %(default)s)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument(
        "--export", action="store_true", help="at the end, export the best checkpoint to ONNX and FP16 IR"
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="with --export: also an INT8 IR, calibrated on the training images",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (a GPU if torch has one), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")


def main(args: argparse.Namespace) -> int:
    recipe = _recipe(args)
    classes = _classes(args.classes)
    train_set, val_set = _datasets(args, classes, recipe.seed)
    print(f"train: {len(train_set.samples)} images, {train_set.num_boxes} boxes of {', '.join(train_set.labels)}"
          + (f"; val: {len(val_set.samples)} images, {val_set.num_boxes} boxes" if val_set else "; no validation set"))  # fmt: skip
    torch = _import_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    from edgepipe.train import checkpoint, loop
    from edgepipe.train.progress import Progress, scores_text

    device = _device(torch, args.device)
    last = args.out / checkpoint.LAST
    if args.resume:
        job_info, resume = _resumed(last, args, train_set.labels, recipe)
        model = _model_from(job_info, resume.model)
        print(f"resuming {last} after epoch {resume.epoch}/{recipe.epochs}")
    else:
        if last.exists():
            raise ConfigError(f"--out {args.out} already holds a run ({last.name}): pass --resume to continue it, or choose another --out")  # fmt: skip
        model, job_info = _start(args, train_set.labels, recipe)
        resume = None
        if val_set is not None:
            print(
                f"start ({job_info.init}): val {scores_text(loop.evaluate(model, val_set, args.size, device))}"
            )
    progress = Progress(sys.stderr, recipe.epochs, sys.stderr.isatty() and not args.no_progress)
    job = loop.Run(job_info, train_set, val_set, args.out, device)
    try:
        result = loop.run(job, model, resume, on_step=progress.step, on_epoch=progress.epoch)
    except KeyboardInterrupt:
        if last.is_file():
            print(f"\ninterrupted: {last} holds the last finished epoch; repeat the command with --resume to go on",
                  file=sys.stderr)  # fmt: skip
        raise
    print(f"last checkpoint: {result.last}")
    if result.best is not None:
        print(f"best checkpoint: {result.best} (val mAP {result.best_map:.3f})")
    if args.export:
        _export(args, result.best or result.last, train_set, val_set)
    return 0


def _recipe(args: argparse.Namespace) -> Recipe:
    if args.int8 and not args.export:
        raise ConfigError("--int8 needs --export")
    try:
        return Recipe(
            epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, augment=not args.no_augment
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(f"--{first['loc'][0]} {first['input']}: {first['msg']}") from None


def _classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise ConfigError(f"--classes {text!r}: an empty name; write e.g. person,car")
    return names


def _datasets(
    args: argparse.Namespace, classes: list[str] | None, seed: int
) -> tuple[DetectionSet, DetectionSet | None]:
    from edgepipe.train.dataset import check_images, check_same_classes, load_coco, split

    train_set = load_coco(args.data, classes, args.images)
    val_set = None
    if args.val is not None:
        share = _share(args.val)
        if share is not None:
            train_set, val_set = split(train_set, share, seed)
        else:
            val_set = load_coco(Path(args.val), classes or list(train_set.labels), args.images)
            check_same_classes(train_set, val_set)
    for dataset in (train_set, val_set):
        if dataset is not None:
            check_images(dataset)
    return train_set, val_set


def _share(text: str) -> float | None:
    try:
        share = float(text)
    except ValueError:
        return None
    if not 0 < share < 1:
        raise ConfigError(f"--val {text}: a share of the images must be between 0 and 1, e.g. 0.2")
    return share


def _import_torch() -> Any:
    try:
        import pycocotools  # noqa: F401
        import torch
    except ImportError as error:
        raise EdgepipeError(f"edgepipe train needs {error.name}: pip install 'edgepipe[train]'") from None
    return torch


def _device(torch: Any, name: str) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a torch device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: this torch has no CUDA GPU; use --device cpu")
    return device


def _start(args: argparse.Namespace, labels: tuple[str, ...], recipe: Recipe) -> tuple[Any, Any]:
    from edgepipe.train.checkpoint import RunInfo
    from edgepipe.train.start import build_model, read_start, resolve_official

    init = args.init or f"{args.arch}-{args.size}"
    as_file = Path(init)
    if as_file.suffix.lower() in CHECKPOINT_SUFFIXES:
        if not as_file.is_file():
            raise ConfigError(f"--init {init}: no such file")
        path = as_file
    else:
        path = resolve_official(init, args.weights_dir)
    start = read_start(path, args.arch)
    model, new = build_model(start, args.arch, labels, recipe.seed)
    kept = [label for label in labels if label not in new]
    print(f"start weights: {start.origin}; class outputs kept: {', '.join(kept) or 'none'}; new: {', '.join(new) or 'none'}"
          + ("" if start.has_agm else "; AGM new (aux_fpn copied from fpn)"))  # fmt: skip
    info = RunInfo(args.arch, args.size, labels, recipe, start.origin, agm_is_new=not start.has_agm)
    return model, info


def _resumed(
    last: Path, args: argparse.Namespace, labels: tuple[str, ...], recipe: Recipe
) -> tuple[Any, Any]:
    from edgepipe.train import checkpoint
    from edgepipe.train.checkpoint import RunInfo

    if not last.is_file():
        raise ConfigError(f"--resume: {last} does not exist: nothing to resume in --out {args.out}")
    saved, state = checkpoint.load(last)
    checkpoint.check_resumable(
        saved, RunInfo(args.arch, args.size, labels, recipe, saved.init, saved.agm_is_new), last
    )
    return saved, state


def _model_from(info: Any, weights: dict[str, Any]) -> Any:
    from edgepipe.train.model import TrainingModel

    model = TrainingModel(ARCHS[info.arch], len(info.labels))
    model.load_state_dict(weights, strict=True)
    return model


def _export(
    args: argparse.Namespace, ckpt: Path, train_set: DetectionSet, val_set: DetectionSet | None
) -> None:
    """The export path of `edgepipe export`: ONNX → FP16 IR (→ INT8), each checked against PyTorch."""
    from edgepipe.export import ExportRequest, export

    verify = (val_set or train_set).samples[:VERIFY_IMAGES]
    with tempfile.TemporaryDirectory(prefix=".export-images-", dir=args.out) as work:
        verify_dir, calib_dir = _linked(Path(work) / "verify", verify), None
        if args.int8:
            calib_dir = _linked(Path(work) / "calib", train_set.samples[:CALIB_IMAGES])
        request = ExportRequest(checkpoint=ckpt, arch=args.arch, size=args.size, out_dir=args.out,
                                verify_dir=verify_dir, labels=train_set.labels, int8=args.int8, calib_dir=calib_dir)  # fmt: skip
        result = export(request)
    print(f"export of {ckpt.name}: FP32 ONNX vs PyTorch max |Δ| {result.onnx.raw_max:.2e}; FP16 IR scores "
          f"{result.fp16.score_max:.2e}, box sides {result.fp16.side_max:.2e} bins")  # fmt: skip
    if result.int8_recall is not None:
        print(f"INT8 finds {result.int8_matched[0]} of {result.int8_matched[1]} FP16 detections")
    for path in result.files:
        print(f"wrote {path}")


def _linked(folder: Path, samples: Any) -> Path:
    """A folder of links to the samples' images (the export reads every image of a folder)."""
    folder.mkdir(parents=True)
    for i, sample in enumerate(samples):
        os.symlink(sample.path.resolve(), folder / f"{i:04d}{sample.path.suffix.lower()}")
    return folder
