"""The weights a training run starts from: official COCO weights by name, or any checkpoint.

The official weights come as the BN-folded official-format ONNX; loading it sets every BatchNorm to
the identity with the folded bias (export.checkpoint.load_onnx_weights), so the start computes
exactly what the ONNX does. A new class list re-initialises only the class outputs: a label the
start model already knows keeps its row, a new label starts from the focal-loss prior, and the box
outputs are kept. Without AGM weights in the start, `aux_fpn` starts as a copy of `fpn` and
`aux_head` from its official initialisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from edgepipe.errors import ConfigError, ModelError
from edgepipe.export.arch import ARCHS, COCO_LABELS
from edgepipe.labels import label_index
from edgepipe.models import load_manifest, sha256_of
from edgepipe.train.model import INIT_STD, TrainingModel, class_bias

log = logging.getLogger(__name__)

AGM_PREFIXES = ("aux_fpn.", "aux_head.")
PROJECT_KEY = "head.distribution_project.project"


@dataclass(frozen=True, slots=True)
class StartWeights:
    """Where a run starts: the weights, what they knew, and whether the AGM came with them."""

    origin: str  # file name (and the part used)
    state: dict[str, Tensor]  # deploy keys, plus AGM keys if the file had them
    labels: tuple[str, ...] | None  # the start model's classes, None if unknown

    @property
    def has_agm(self) -> bool:
        return any(k.startswith(AGM_PREFIXES) for k in self.state)


def resolve_official(name: str, weights_dir: Path | None) -> Path:
    """The FP32 ONNX of an official model name (`nanodet-plus-m-416`) in `weights_dir`
    (default: the models folder, `paths.models_directory()`), checked against its sha256."""
    from edgepipe.paths import MODELS_ENV, models_directory

    _, entries = load_manifest()
    entry = entries.get(f"{name}-onnx") or entries.get(name)
    if entry is None or not entry.model_file.endswith(".onnx"):
        choices = sorted(
            n.removesuffix("-onnx") for n, e in entries.items() if e.model_file.endswith(".onnx")
        )
        raise ConfigError(
            f"--init {name}: not an official model with float weights; choose {', '.join(choices)} or a checkpoint file"
        )
    folder = weights_dir or models_directory()
    path = folder / entry.model_file
    if not path.is_file():
        raise ConfigError(
            f"--init {name}: {path} does not exist: pass --weights-dir DIR (or set {MODELS_ENV}) to the "
            f"folder holding {entry.model_file}, or run `edgepipe models fetch {entry.name}`"
        )
    expected = entry.files.get(entry.model_file)
    if expected and sha256_of(path) != expected:
        raise ModelError(f"{path}: sha256 differs from the manifest's: the file is damaged or another model")
    return path


def read_start(path: Path, arch: str) -> StartWeights:
    """Weights of `path`: an official-format ONNX (BN folded), or a .ckpt/.pth/state dict."""
    from edgepipe.export.checkpoint import read_checkpoint, read_state_dict

    if path.suffix.lower() == ".onnx":
        return _read_onnx(path, arch)
    state, part = read_state_dict(path)
    raw = read_checkpoint(path)
    meta = raw.get("edgepipe") if isinstance(raw, Mapping) else None
    labels = tuple(meta["labels"]) if isinstance(meta, Mapping) and "labels" in meta else None
    return StartWeights(f"{path.name} ({part})", state, labels or _coco_if_80(state, arch))


def build_model(
    start: StartWeights, arch: str, labels: tuple[str, ...], seed: int
) -> tuple[TrainingModel, tuple[str, ...]]:
    """The training model holding `start`, for `labels`; and the labels whose class outputs are new."""
    model = TrainingModel(ARCHS[arch], len(labels))
    generator = torch.Generator().manual_seed(seed)
    model.aux_head.reset_parameters(generator)
    target = model.state_dict()
    state = {k: v for k, v in start.state.items() if k != PROJECT_KEY}
    if not start.has_agm:
        state.update(
            {f"aux_fpn.{k.removeprefix('fpn.')}": v for k, v in state.items() if k.startswith("fpn.")}
        )
        state.update({k: v for k, v in target.items() if k.startswith("aux_head.")})
    source_labels = start.labels
    # a class the start weights know (either COCO spelling) keeps its trained rows; the others start new
    rows = [None if source_labels is None else label_index(label, source_labels) for label in labels]
    new = tuple(label for label, row in zip(labels, rows, strict=True) if row is None)
    for key in [k for k in state if _is_class_output(k)]:
        state[key] = _remap_rows(key, state[key], target[key], rows, len(labels), generator)
    _check_fits(state, target, start.origin)
    model.load_state_dict(state, strict=True)
    return model, new


def _is_class_output(key: str) -> bool:
    return key.startswith("head.gfl_cls.") or key.startswith("aux_head.gfl_cls.")


def _remap_rows(
    key: str,
    source: Tensor,
    target: Tensor,
    rows: list[int | None],
    num_classes: int,
    generator: torch.Generator,
) -> Tensor:
    """Output channels of a class conv for the new labels: a known label's row is copied, a new one
    is drawn like a fresh head (weights N(0, 0.01), bias for a 1% prior); box rows follow unchanged."""
    box_rows = target.shape[0] - num_classes  # 4·(reg_max+1) in the main head, 0 in aux_head.gfl_cls
    source_classes = source.shape[0] - box_rows
    if source_classes <= 0 or source.shape[1:] != target.shape[1:]:
        raise ModelError(
            f"{key}: shape {tuple(source.shape)} does not fit {tuple(target.shape)}: check --arch"
        )
    out = torch.empty_like(target)
    is_bias = key.endswith(".bias")
    for i, row in enumerate(rows):
        if row is not None and row < source_classes:
            out[i] = source[row]
        elif is_bias:
            out[i] = class_bias()
        else:
            out[i] = INIT_STD * torch.randn(target.shape[1:], generator=generator)
    out[num_classes:] = source[source_classes:]
    return out


def _check_fits(state: dict[str, Tensor], target: dict[str, Tensor], origin: str) -> None:
    missing = sorted(target.keys() - state.keys())
    unexpected = sorted(state.keys() - target.keys())
    wrong = sorted(k for k in target.keys() & state.keys() if target[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        some = ", ".join((missing + unexpected + wrong)[:4])
        raise ModelError(
            f"{origin}: weights do not fit --arch ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape: {some})"
        )


def _read_onnx(path: Path, arch: str) -> StartWeights:
    import onnx

    from edgepipe.export.checkpoint import load_onnx_weights
    from edgepipe.export.model import NanoDetPlus
    from edgepipe.modelcard import card_path, read_card

    spec = ARCHS[arch]
    try:
        output = onnx.load(str(path), load_external_data=False).graph.output[0]
        columns = output.type.tensor_type.shape.dim[-1].dim_value
    except Exception as error:  # onnx raises DecodeError, OSError, ... for a damaged file
        raise ModelError(f"{path}: cannot read the ONNX file: {error}") from None
    num_classes = columns - 4 * (spec.reg_max + 1)
    if num_classes <= 0:
        raise ModelError(
            f"{path}: output has {columns} columns, not C + {4 * (spec.reg_max + 1)}: not NanoDet-Plus"
        )
    deploy = NanoDetPlus(spec, num_classes)
    load_onnx_weights(deploy, path)
    card = card_path(path)
    labels = (
        read_card(card).labels
        if card.is_file()
        else (COCO_LABELS if num_classes == len(COCO_LABELS) else None)
    )
    log.info("start weights: %s (BN folded, BN layers set to the identity)", path)
    return StartWeights(f"{path.name} (BN folded)", dict(deploy.state_dict()), labels)


def _coco_if_80(state: Mapping[str, Tensor], arch: str) -> tuple[str, ...] | None:
    """An official checkpoint names no classes; 80 class outputs are COCO's."""
    bias = state.get("head.gfl_cls.0.bias")
    if bias is not None and bias.shape[0] - 4 * (ARCHS[arch].reg_max + 1) == len(COCO_LABELS):
        return COCO_LABELS
    return None
