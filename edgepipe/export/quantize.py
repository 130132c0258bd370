"""`edgepipe models quantize`: an INT8 IR of a fetched float model, by NNCF post-training quantisation.

For Intel edge boxes without bf16, where INT8 is the fast path. The calibration frames should look
like what the cameras see (folders of images or videos from them), not like COCO: the model is then
evaluated on COCO images it was not calibrated on. The INT8 IR is written only if it finds again
most of what the float model finds on the calibration frames (the export's INT8 gate), with its
card (precision int8) beside it; its COCO mAP and speed come from `edgepipe bench detector`.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import ConfigError, ModelError
from edgepipe.export.convert import (
    F32,
    INT8_MIN_RECALL,
    detection_recall,
    preprocess,
    quantize_int8,
    read_images,
)

CALIB_FRAMES = 300  # NNCF's default subset size; more moved the COCO-subset mAP by < 0.1


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    path: Path  # the INT8 IR written
    calib_frames: int
    matched: tuple[int, int]  # (float-model detections the INT8 model found again, all of them)

    @property
    def recall(self) -> float:
        found, total = self.matched
        return found / total if total else 1.0


def int8_path_for(model: Path, dest: Path) -> Path:
    """nanodet-plus-m_416_fp16.xml → DEST/nanodet-plus-m_416_int8.xml."""
    stem = model.stem.removesuffix("_fp16").removesuffix("_fp32")
    return dest / f"{stem}_int8.xml"


def calibration_frames(
    paths: Sequence[Path], size: int, most: int = CALIB_FRAMES
) -> list[NDArray[np.float32]]:
    """Up to `most` network inputs, shared evenly by the sources: from a folder of images (the
    first ones) or a video (frames spread evenly over it), preprocessed as the official NanoDet input.

    Several sources calibrate better than one: on the 416 model, 300 frames over four of the shared
    videos (people, a campus, traffic) kept its COCO-subset mAP within 0.3 points, 300 of vtest.mp4
    alone within 1.3 (2026-12-01)."""
    images: list[NDArray[np.uint8]] = []
    for number, path in enumerate(paths):
        share = most // len(paths) + (1 if number < most % len(paths) else 0)
        if path.is_dir():
            images += read_images(path, "--calib")[:share]
        elif path.is_file():
            images += video_frames(path, share)
        else:
            raise ConfigError(f"--calib {path}: no such folder of images or video file")
    return [preprocess(image, size) for image in images]


def video_frames(path: Path, most: int) -> list[NDArray[np.uint8]]:
    """`most` frames spread evenly over a video (every frame if it has fewer)."""
    from edgepipe.config import FileSourceConfig
    from edgepipe.errors import SourceError
    from edgepipe.sources import FileSource

    try:
        source = FileSource(FileSourceConfig.model_construct(path=path, loop=False, realtime=False))
    except SourceError as error:
        raise ConfigError(f"--calib {path}: {error}") from None
    with source:
        step = max(1, (source.frame_count or most) // most)
        frames = [f.image for f in itertools.islice(source.frames(), 0, None, step) if f is not None]
    return frames[:most]


def quantize(model: Path, calib: Sequence[Path], dest: Path, *, most: int = CALIB_FRAMES) -> QuantizeResult:
    """Quantise `model` (a float NanoDet-Plus IR or ONNX with its card) into DEST; nothing is
    written unless the INT8 model passes the recall gate."""
    import openvino as ov

    from edgepipe.detect import ModelPool

    pool = ModelPool()
    card = pool.card(model)
    if card.input_kind != "float_nchw" or card.precision == "int8":
        raise ConfigError(
            f"{model}: quantize needs a float model (fp16/fp32 IR or ONNX with float NCHW input); "
            f"this one is {card.precision}, {card.input_kind}"
        )
    inputs = calibration_frames(calib, card.input_size, most)
    target = int8_path_for(model, dest)
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=dest))
    try:
        staged = work / target.name
        quantize_int8(pool.read(model).clone(), inputs, staged, replace(card, precision="int8"))
        core = ov.Core()
        float_model = core.compile_model(pool.read(model), "CPU", F32)
        found, total = detection_recall(float_model, core.compile_model(staged, "CPU", F32), inputs, card)
        if total and found / total < INT8_MIN_RECALL:
            raise ModelError(
                f"the INT8 model finds only {found} of {total} detections of {model.name} ({found / total:.0%}) "
                f"on the calibration frames, below {INT8_MIN_RECALL:.0%}: calibrate on more, or more typical, "
                "frames, or keep the float model. Nothing was written"
            )
        for item in sorted(work.iterdir()):
            item.replace(dest / item.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return QuantizeResult(target, len(inputs), (found, total))
