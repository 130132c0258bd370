"""PyTorch NanoDet-Plus → ONNX → OpenVINO IR FP16 (→ INT8), written only if the IR matches PyTorch.

Everything is built in a temporary folder inside the output folder and moved into place after the
parity checks pass, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import ConfigError, ModelError
from edgepipe.export.arch import ARCHS, SIZES
from edgepipe.modelcard import NANODET_MEAN_BGR, NANODET_STD_BGR, ModelCard, card_path, write_card
from edgepipe.modelcard import read_labels as read_label_file
from edgepipe.models import sha256_of

log = logging.getLogger(__name__)

OPSET = 11  # as RangiLyu/nanodet tools/export_onnx.py
ONNX_TOLERANCE = 1e-3  # max |Δ| of the whole output, FP32 ONNX vs PyTorch
# FP16 IR vs PyTorch. The raw output cannot be held to one absolute bound: FP16 weights move the
# unbounded GFL bin logits of the official 416 weights by up to 0.19. So the gate is on what a
# detection is made of: class scores (the official 416 weights reach 0.0105 on samples/parking.jpg)
# and the expected box sides, in bins, of anchors that could become detections (up to 0.34 there).
FP16_SCORE_TOLERANCE = 2e-2
FP16_SIDE_TOLERANCE = 1.0  # bins; one bin is `stride` pixels
SIDE_MIN_SCORE = 0.05  # anchors below the official eval threshold never become detections
INT8_MIN_RECALL = 0.8  # share of FP16 detections that INT8 must find again (same class, IoU >= 0.5)
INT8_SCORE, INT8_NMS_IOU, MATCH_IOU = 0.4, 0.5, 0.5  # official C++ demo thresholds
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU here would run bf16 by default


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export; `checkpoint=None` exports deterministic random weights (tests, smoke runs)."""

    checkpoint: Path | None
    arch: str
    size: int
    out_dir: Path
    verify_dir: Path
    labels: tuple[str, ...]
    name: str | None = None
    int8: bool = False
    calib_dir: Path | None = None
    seed: int = 0

    @property
    def stem(self) -> str:
        return self.name or f"{self.arch}_{self.size}"


@dataclass(frozen=True, slots=True)
class Parity:
    """How far one model file is from the PyTorch model on the verification images."""

    raw_max: float  # max |Δ| over the whole output
    score_max: float  # max |Δ| over the class-score columns
    side_max: float  # max |Δ| of the expected box side Σ i·softmax(bins), in bins, score > SIDE_MIN_SCORE


@dataclass(frozen=True, slots=True)
class ExportResult:
    files: tuple[Path, ...]
    onnx: Parity
    fp16: Parity
    int8_recall: float | None = None  # of FP16 detections, on the verification images
    int8_matched: tuple[int, int] = (0, 0)  # (found again, FP16 detections)


def export(request: ExportRequest) -> ExportResult:
    """Run the whole export; raises ModelError (nothing written) when a parity check fails."""
    import torch

    from edgepipe.export.checkpoint import load_weights
    from edgepipe.export.model import NanoDetPlus, randomize

    _check_request(request)
    images = read_images(request.verify_dir, "--verify-images")
    calib = read_images(request.calib_dir, "--calib") if request.int8 and request.calib_dir else []
    model = NanoDetPlus(ARCHS[request.arch], num_classes=len(request.labels))
    if request.checkpoint is None:
        randomize(model, request.seed)
        source = {"checkpoint": "random-init", "seed": str(request.seed)}
    else:
        part = load_weights(model, request.checkpoint)
        source = {
            "checkpoint": request.checkpoint.name,
            "sha256": sha256_of(request.checkpoint),
            "weights": part,
        }
    model.eval()
    inputs = [preprocess(image, request.size) for image in images]
    with torch.no_grad():
        reference = [model(torch.from_numpy(x)).numpy() for x in inputs]

    request.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{request.stem}-", dir=request.out_dir))
    try:
        result = _build(request, model, inputs, reference, [preprocess(i, request.size) for i in calib],
                        source, work)  # fmt: skip
        files = tuple(_move_into_place(work, request.out_dir))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return replace(result, files=files)


def _build(
    request: ExportRequest,
    model: Any,
    inputs: list[NDArray[np.float32]],
    reference: list[NDArray[np.float32]],
    calib: list[NDArray[np.float32]],
    source: dict[str, str],
    work: Path,
) -> ExportResult:
    import openvino as ov

    stem = request.stem
    card = ModelCard(arch=request.arch, input_size=request.size, labels=request.labels, source=source)
    onnx_path = work / f"{stem}.onnx"
    export_onnx(model, request.size, onnx_path)
    core = ov.Core()
    onnx_parity = compare(core.compile_model(onnx_path, "CPU", F32), inputs, reference, len(request.labels))
    _gate(onnx_parity.raw_max < ONNX_TOLERANCE, "FP32 ONNX", onnx_parity, f"whole output < {ONNX_TOLERANCE}")
    write_card(replace(card, precision="fp32"), card_path(onnx_path))

    fp32_model = ov.convert_model(onnx_path)
    fp16_path = work / f"{stem}_fp16.xml"
    save_ir(fp32_model, fp16_path, replace(card, precision="fp16"))
    fp16 = core.compile_model(core.read_model(fp16_path), "CPU", F32)
    fp16_parity = compare(fp16, inputs, reference, len(request.labels))
    ok = fp16_parity.score_max < FP16_SCORE_TOLERANCE and fp16_parity.side_max < FP16_SIDE_TOLERANCE
    _gate(
        ok, "FP16 IR", fp16_parity, f"scores < {FP16_SCORE_TOLERANCE}, box sides < {FP16_SIDE_TOLERANCE} bin"
    )
    (work / f"{stem}.names").write_text("".join(f"{label}\n" for label in request.labels), encoding="utf-8")
    result = ExportResult(files=(), onnx=onnx_parity, fp16=fp16_parity)
    if request.int8:
        int8_path = work / f"{stem}_int8.xml"
        quantize_int8(ov.convert_model(onnx_path), calib, int8_path, replace(card, precision="int8"))
        found, total = detection_recall(fp16, core.compile_model(int8_path, "CPU", F32), inputs, card)
        recall = found / total if total else 1.0
        if recall < INT8_MIN_RECALL:
            raise ModelError(
                f"INT8 model finds only {found} of {total} FP16 detections ({recall:.0%}) on "
                f"{request.verify_dir}, below {INT8_MIN_RECALL:.0%}: use more or more typical --calib "
                "images, or ship the FP16 model"
            )
        result = replace(result, int8_recall=recall, int8_matched=(found, total))
    return result


def export_onnx(model: Any, size: int, path: Path) -> None:
    """The official export: opset 11, input `data` [1,3,S,S], output `output` [1,N,C+4·(reg_max+1)]."""
    import torch

    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but it is the one the official export used and
        # needs no onnxscript; its output is checked against PyTorch right after.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(path), opset_version=OPSET, input_names=["data"], output_names=["output"],
            do_constant_folding=True, dynamo=False,
        )  # fmt: skip


def save_ir(model: Any, path: Path, card: ModelCard) -> None:
    """Save an IR (weights compressed to FP16) carrying the card in rt_info `model_info`."""
    import openvino as ov

    set_model_info(model, card)
    ov.save_model(model, path, compress_to_fp16=True)
    write_card(card, card_path(path))


def set_model_info(model: Any, card: ModelCard) -> None:
    """model_api-style rt_info: the whole card as JSON under `card`, plus the usual single keys."""
    info = {
        "card": json.dumps(json.loads(card.to_json()), separators=(",", ":")),
        "model_type": "nanodet-plus",
        "arch": card.arch,
        "input_size": str(card.input_size),
        "reg_max": str(card.reg_max),
        "strides": " ".join(str(s) for s in card.strides),
        "mean_values": " ".join(str(v) for v in card.mean_bgr),
        "scale_values": " ".join(str(v) for v in card.std_bgr),
        "precision": card.precision,
    }
    for key, value in info.items():
        model.set_rt_info(value, ["model_info", key])


def quantize_int8(model: Any, calib: list[NDArray[np.float32]], path: Path, card: ModelCard) -> None:
    """NNCF post-training quantization on calibration images preprocessed like the detector does."""
    import nncf

    if not calib:
        raise ConfigError("--int8 needs calibration images: pass --calib IMAGES_DIR")
    quantized = nncf.quantize(model, nncf.Dataset(calib), subset_size=len(calib))
    save_ir(quantized, path, card)


def compare(
    compiled: Any, inputs: list[NDArray[np.float32]], reference: list[NDArray[np.float32]], num_classes: int
) -> Parity:
    """Run `compiled` on `inputs` and measure its distance to `reference` (PyTorch outputs)."""
    raw = score = side = 0.0
    for x, ref in zip(inputs, reference, strict=True):
        out = np.asarray(compiled(x)[0], dtype=np.float32)
        if out.shape != ref.shape:
            raise ModelError(f"exported model gives output {list(out.shape)}, PyTorch {list(ref.shape)}")
        raw = max(raw, float(np.abs(out - ref).max()))
        score = max(score, float(np.abs(out[..., :num_classes] - ref[..., :num_classes]).max()))
        candidates = ref[0, :, :num_classes].max(axis=1) > SIDE_MIN_SCORE
        if candidates.any():
            sides = np.abs(_sides(out, num_classes) - _sides(ref, num_classes))[0, candidates]
            side = max(side, float(sides.max()))
    return Parity(raw, score, side)


def _sides(raw: NDArray[np.float32], num_classes: int) -> NDArray[np.float32]:
    """Expected distance of each box side in bins: Σ i·softmax(bins)_i."""
    bins = raw[..., num_classes:].reshape(*raw.shape[:-1], 4, -1).astype(np.float64)
    weights = np.exp(bins - bins.max(axis=-1, keepdims=True))
    expected: NDArray[np.float64] = (weights * np.arange(bins.shape[-1])).sum(axis=-1) / weights.sum(axis=-1)
    return expected.astype(np.float32)


def detection_recall(
    reference: Any, int8: Any, inputs: list[NDArray[np.float32]], card: ModelCard
) -> tuple[int, int]:
    """(detections of the `reference` model found again by the `int8` one, all reference detections):
    same class and IoU >= MATCH_IOU, at the official demo thresholds."""
    from edgepipe.detect.decoders import DecodeSettings, decoder_for

    decoder = decoder_for(card, "the model being quantised")
    settings = DecodeSettings(score_threshold=INT8_SCORE, nms_iou=INT8_NMS_IOU, max_detections=100)
    found = total = 0
    hw = (card.input_size, card.input_size)
    for x in inputs:
        a, b = (decoder.decode((np.asarray(m(x)[0]),), hw, settings) for m in (reference, int8))
        found += count_matches(a.xyxy, a.class_id, b.xyxy, b.class_id)
        total += len(a)
    return found, total


def count_matches(
    xyxy_a: NDArray[np.float32],
    class_a: NDArray[np.int32],
    xyxy_b: NDArray[np.float32],
    class_b: NDArray[np.int32],
) -> int:
    """Greedy one-to-one matching of boxes a to boxes b of the same class with IoU >= MATCH_IOU."""
    from edgepipe.geometry import box_iou

    if len(xyxy_a) == 0 or len(xyxy_b) == 0:
        return 0
    iou = box_iou(xyxy_a, xyxy_b) * (class_a[:, None] == class_b[None, :])
    matched = 0
    for _ in range(min(iou.shape)):
        i, j = np.unravel_index(int(iou.argmax()), iou.shape)
        if iou[i, j] < MATCH_IOU:
            break
        matched += 1
        iou[i, :] = 0.0
        iou[:, j] = 0.0
    return matched


# ---------------------------------------------------------------- images
def read_images(folder: Path | None, option: str) -> list[NDArray[np.uint8]]:
    """Every image in `folder` (sorted by name), BGR."""
    import cv2

    from edgepipe.sources import IMAGE_SUFFIXES, image_files

    if folder is None or not folder.is_dir():
        raise ConfigError(f"{option}: {folder} is not a folder of images")
    # IMREAD_COLOR: 3-channel uint8 BGR whatever the file holds
    images = [
        im.astype(np.uint8, copy=False)
        for im in map(cv2.imread, map(str, image_files(folder)))
        if im is not None
    ]
    if not images:
        raise ConfigError(f"{option}: no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return images


def preprocess(image: NDArray[np.uint8], size: int) -> NDArray[np.float32]:
    """The official NanoDet input: plain resize to SxS, BGR, (x - mean) / std, NCHW float32."""
    import cv2

    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    normalised = (resized - np.array(NANODET_MEAN_BGR, np.float32)) / np.array(NANODET_STD_BGR, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


# ---------------------------------------------------------------- helpers
def _check_request(request: ExportRequest) -> None:
    if request.arch not in ARCHS:
        raise ConfigError(f"--arch {request.arch}: unknown; choose one of {', '.join(ARCHS)}")
    if request.size not in SIZES:
        raise ConfigError(f"--size {request.size}: choose one of {', '.join(map(str, SIZES))}")
    if not request.labels:
        raise ConfigError("no labels: the label file is empty")
    if request.int8 and request.calib_dir is None:
        raise ConfigError("--int8 needs calibration images: pass --calib IMAGES_DIR")


def _gate(ok: bool, what: str, parity: Parity, rule: str) -> None:
    log.info("%s vs PyTorch: max |Δ| %.2e (scores %.2e, box sides %.2e bins)", what, parity.raw_max,
             parity.score_max, parity.side_max)  # fmt: skip
    if not ok:
        raise ModelError(
            f"{what} differs from the PyTorch model: max |Δ| {parity.raw_max:.3g} (scores "
            f"{parity.score_max:.3g}, box sides {parity.side_max:.3g} bins), allowed: {rule}. "
            "Nothing was written; report this with the checkpoint and versions"
        )


def _move_into_place(work: Path, out_dir: Path) -> list[Path]:
    """Move every finished file from `work` into `out_dir` (each move is atomic: same filesystem)."""
    moved = []
    for path in sorted(work.iterdir()):
        target = out_dir / path.name
        path.replace(target)
        moved.append(target)
    return moved


def read_labels(path: Path | None, default: Sequence[str]) -> tuple[str, ...]:
    """One label per line (blank lines skipped); `default` when no file is given."""
    if path is None:
        return tuple(default)
    try:
        return read_label_file(path)
    except ModelError as error:
        raise ConfigError(f"--labels {path}: {error}") from None
