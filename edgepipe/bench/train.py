"""`edgepipe bench train`: fine-tune on a COCO folder and compare person AP with the official weights.

The first images (by id) train, the rest validate (64 / 16 of the shared 80 COCO val2017 images).
It runs the real `edgepipe train ... --export`, then scores the official and the fine-tuned model
on the held-out images both in PyTorch and as OpenVINO IR, and runs the new IR through
`edgepipe detect` and `edgepipe run`. Reports losses and mAP per epoch and the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

from edgepipe.errors import ConfigError

DEFAULT_TRAIN_IMAGES = 64
RUN_FRAMES = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coco", required=True, type=Path, metavar="DIR", help="COCO folder (annotations/ + val2017/)"
    )
    parser.add_argument(
        "--weights-dir", required=True, type=Path, metavar="DIR", help="folder with the official ONNX"
    )
    parser.add_argument(
        "--video", type=Path, metavar="V", help="video for the `edgepipe run` check (default: none)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="work folder (must not hold a run)"
    )
    parser.add_argument(
        "--train-images", type=int, default=DEFAULT_TRAIN_IMAGES, metavar="N", help="default %(default)s"
    )
    parser.add_argument("--size", type=int, default=320, choices=(320, 416))
    parser.add_argument("--classes", default="person")
    parser.add_argument("--epochs", type=int, metavar="N", help="default: edgepipe train's")
    parser.add_argument("--batch", type=int, metavar="N")
    parser.add_argument("--lr", type=float, metavar="F")
    parser.add_argument("--threads", type=int, metavar="N")
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    from edgepipe.cli import main

    train_json, val_json = write_split(args.coco, args.train_images, args.out)
    images = args.coco / "val2017"
    command = ["train", "--data", str(train_json), "--val", str(val_json), "--images", str(images),
               "--size", str(args.size), "--out", str(args.out / "run"), "--classes", args.classes,
               "--weights-dir", str(args.weights_dir), "--export", "--no-progress"]  # fmt: skip
    for flag in ("epochs", "batch", "lr", "threads"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    print("edgepipe " + " ".join(command), flush=True)
    started = time.monotonic()
    code = main(command)
    wall_s = time.monotonic() - started
    if code:
        return code
    report = _report(args, val_json, images, wall_s)
    print(format_report(report))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def write_split(coco: Path, train_images: int, out: Path) -> tuple[Path, Path]:
    """The instances file cut into the first `train_images` images (by id) and the rest."""
    source = coco / "annotations" / "instances_val2017.json"
    if not source.is_file():
        raise ConfigError(f"--coco {coco}: expected annotations/instances_val2017.json inside")
    document = json.loads(source.read_text(encoding="utf-8"))
    ids = sorted(image["id"] for image in document["images"])
    if not 0 < train_images < len(ids):
        raise ConfigError(f"--train-images {train_images}: the folder has {len(ids)} images")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, chosen in (("train", set(ids[:train_images])), ("val", set(ids[train_images:]))):
        part = {**document, "images": [i for i in document["images"] if i["id"] in chosen],
                "annotations": [a for a in document["annotations"] if a["image_id"] in chosen]}  # fmt: skip
        path = out / f"{name}.json"
        path.write_text(json.dumps(part), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def _report(args: argparse.Namespace, val_json: Path, images: Path, wall_s: float) -> dict[str, Any]:
    import torch

    from edgepipe.train import checkpoint
    from edgepipe.train.dataset import load_coco
    from edgepipe.train.evaluate import coco_scores
    from edgepipe.train.loop import evaluate
    from edgepipe.train.start import build_model, read_start, resolve_official

    classes = args.classes.split(",")
    val_set = load_coco(val_json, classes, images)
    official_onnx = resolve_official(f"nanodet-plus-m-{args.size}", args.weights_dir)
    official, _ = build_model(
        read_start(official_onnx, "nanodet-plus-m"), "nanodet-plus-m", val_set.labels, 0
    )
    _, state = checkpoint.load(args.out / "run" / checkpoint.LAST)
    run_dir = args.out / "run"
    ir = run_dir / f"nanodet-plus-m_{args.size}_fp16.xml"
    official_ir = args.weights_dir / f"nanodet-plus-m_{args.size}_fp16.xml"
    return {
        "train_images": args.train_images,
        "val_images": len(val_set.samples),
        "wall_s": round(wall_s, 1),
        "history": state.history,
        "official_pytorch": evaluate(official, val_set, args.size, torch.device("cpu")).as_dict(),
        "official_ir_f32": coco_scores(val_set, _ir_detections(official_ir, val_set, classes)).as_dict(),
        "finetuned_ir_f32": coco_scores(val_set, _ir_detections(ir, val_set, classes)).as_dict(),
        "best_map": state.best_map,
        "detect": _detect(ir, val_set.samples[0].path),
        "run": _run_pipeline(ir, args.video, args.out) if args.video else None,
    }


def _ir_detections(model: Path, val_set: Any, classes: list[str]) -> list[Any]:
    """Detections of an IR on the set with the official eval settings (f32, every class > 0.05)."""
    import cv2
    import numpy as np

    from edgepipe.config import DetectorConfig
    from edgepipe.detect import Detector
    from edgepipe.evaluate import coco
    from edgepipe.labels import class_ids
    from edgepipe.types import Detections, Frame

    settings = DetectorConfig(model=model, device="CPU", precision="f32", threshold=coco.SCORE_THRESHOLD,
                              nms_iou=coco.NMS_IOU, max_detections=coco.MAX_DETECTIONS)  # fmt: skip
    detector = Detector(settings, multi_label=True)
    index = class_ids(classes, detector.labels)
    found = []
    for i, sample in enumerate(val_set.samples):
        d = detector.detect(Frame(np.asarray(cv2.imread(str(sample.path)), np.uint8), i, 0.0, None))
        keep = np.isin(d.class_id, index)
        remap = np.array([index.index(c) for c in d.class_id[keep]], np.int32)
        found.append(Detections(d.xyxy[keep], d.score[keep], remap.reshape(-1)))
    return found


def _detect(model: Path, image: Path) -> dict[str, Any]:
    from edgepipe.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["detect", str(image), "--model", str(model), "--json"])
    return {"exit": code, "detections": json.loads(out.getvalue()) if code == 0 else None}


def _run_pipeline(model: Path, video: Path, out: Path) -> dict[str, Any]:
    """`edgepipe run` on `video` with the new model and a door line across the middle of the frame."""
    import cv2

    from edgepipe.cli import main

    capture = cv2.VideoCapture(str(video))
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    pipeline, events = out / "bench-train.yml", out / "events.jsonl"
    pipeline.write_text(
        f"name: bench-train\nsource:\n  type: file\n  path: {video.resolve()}\ndetector:\n  model: {model.resolve()}\n"
        f"  threshold: 0.4\nrules:\n  - type: line\n    name: door\n    points: [[0, {height // 2}], [{width}, {height // 2}]]\n"
        f"outputs:\n  jsonl:\n    path: {events.resolve()}\n",
        encoding="utf-8",
    )
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        code = main(["run", str(pipeline), "--max-frames", str(RUN_FRAMES), "--no-progress"])
    return {
        "exit": code,
        "summary": [line for line in printed.getvalue().splitlines() if line.startswith("bench-train:")],
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"fine-tune on {report['train_images']} images, validated on {report['val_images']}: {report['wall_s']:.0f} s"
    ]
    for row in report["history"]:
        lines.append(
            f"  epoch {int(row['epoch']):3d}: loss {row['loss']:.3f} (qfl {row['qfl']:.3f} giou {row['giou']:.3f} "
            f"dfl {row['dfl']:.3f}, aux {row['aux_qfl'] + row['aux_giou'] + row['aux_dfl']:.3f})  val mAP {row['mAP']:.3f} AP50 {row['AP50']:.3f}"
        )
    for name in ("official_pytorch", "official_ir_f32", "finetuned_ir_f32"):
        s = report[name]
        lines.append(f"{name}: mAP {s['mAP']:.3f} AP50 {s['AP50']:.3f}")
    best = report["best_map"]
    lines.append(
        f"best checkpoint (PyTorch EMA): mAP {best:.3f}, {100 * (best - report['official_pytorch']['mAP']):+.1f} points vs official"
    )
    lines.append(
        f"edgepipe detect: exit {report['detect']['exit']}, {len(report['detect']['detections'] or [])} detections"
    )
    if report["run"]:
        lines.append(f"edgepipe run: exit {report['run']['exit']}: " + " | ".join(report["run"]["summary"]))
    return "\n".join(lines)
