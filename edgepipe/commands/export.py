"""`edgepipe export`: a NanoDet-Plus checkpoint → ONNX → OpenVINO IR, written only if it matches PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgepipe.errors import ConfigError, EdgepipeError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgepipe.export.arch import ARCHS, SIZES  # plain tables: no torch

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
        metavar="DIR",
        help="real images for the parity check (default: the --calib images; one of the two is needed)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from edgepipe.export import COCO_LABELS, ExportRequest, export
    from edgepipe.export.convert import read_labels

    try:
        import nncf  # noqa: F401
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise EdgepipeError(f"edgepipe export needs {error.name}: pip install 'edgepipe[export]'") from None
    verify_dir = args.verify_images or args.calib
    if verify_dir is None:
        raise ConfigError("--verify-images DIR: give real images to compare the IR with PyTorch on")
    request = ExportRequest(
        checkpoint=None if args.random_init else args.checkpoint,
        arch=args.arch,
        size=args.size,
        out_dir=args.out,
        verify_dir=verify_dir,
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
