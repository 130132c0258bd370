"""The model card: what a model file means (architecture, labels, input size and layout, channel
order, letterbox, GFL settings, normalisation), and the one place that finds it for a model file.

Written next to an IR as `<stem>.json` by `edgepipe export` and `edgepipe models fetch`, and also
into the IR's `rt_info` under `model_info` by the export, so a pipeline YAML never repeats it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edgepipe.errors import ModelError

InputKind = Literal["float_nchw", "uint8_nhwc"]
ChannelOrder = Literal["bgr", "rgb"]

NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)
DEFAULT_ARCH = "nanodet-plus"  # a model that brings no card: the family edgepipe was built for
DEFAULT_LABELS_FILE = "coco.names"  # read from beside a model that brings no card


@dataclass(frozen=True, slots=True)
class ModelCard:
    """Facts about one detector model file."""

    arch: str  # e.g. "nanodet-plus-m"; picks the decoder (detect/decoders)
    input_size: int  # square input side S in pixels
    labels: tuple[str, ...]  # class names in model output order
    # float_nchw: plain float model, edgepipe adds resize/layout/normalisation;
    # uint8_nhwc: preprocessing is inside the IR (the nanodet-*-int8 files)
    input_kind: InputKind = "float_nchw"
    # the channel order the network was trained on; frames arrive BGR and are swapped inside the
    # compiled model when this says rgb (the third-party INT8 IRs reverse channels internally)
    channel_order: ChannelOrder = "bgr"
    # False: stretch the frame to SxS (NanoDet-Plus's keep_ratio: false); True: keep the aspect
    # ratio, scale the longer side to S and pad the bottom/right
    letterbox: bool = False
    reg_max: int = 7
    strides: tuple[int, ...] = (8, 16, 32, 64)
    mean_bgr: tuple[float, float, float] = NANODET_MEAN_BGR
    std_bgr: tuple[float, float, float] = NANODET_STD_BGR
    precision: str = "fp16"  # fp32 | fp16 | int8: weights as stored
    source: dict[str, str] = field(default_factory=dict)  # checkpoint name, sha256, url, licence

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, object], origin: str) -> ModelCard:
        try:
            values: dict[str, Any] = dict(data)
            for key in ("labels", "strides", "mean_bgr", "std_bgr"):
                if key in values:
                    values[key] = tuple(values[key])
            card = cls(**values)
        except TypeError as error:
            raise ModelError(f"{origin}: not a valid model card: {error}") from None
        if card.channel_order not in ("bgr", "rgb"):
            raise ModelError(f"{origin}: channel_order must be 'bgr' or 'rgb', not {card.channel_order!r}")
        return card

    def resized_hw(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the frame has inside the SxS input: SxS, or with letterbox the frame
        scaled so that its longer side is S (the rest is padding at the bottom/right)."""
        if not self.letterbox:
            return self.input_size, self.input_size
        height, width = frame_hw
        scale = self.input_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))


def card_path(model_path: Path) -> Path:
    """The card that belongs to a model file: `nanodet.xml` → `nanodet.json`."""
    return model_path.with_suffix(".json")


def read_card(path: Path) -> ModelCard:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"cannot read model card {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        line = f":{error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise ModelError(f"{path}{line}: model card is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model card must be a JSON object")
    return ModelCard.from_dict(data, str(path))


def write_card(card: ModelCard, path: Path) -> None:
    path.write_text(card.to_json(), encoding="utf-8")


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names, one a line; blank lines are skipped."""
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ModelError(f"cannot read label file {path}: {reason}") from None
    return tuple(name for name in names if name)


def _card_from_rt_info(info: dict[str, str], origin: str) -> ModelCard | None:
    """model_api-style `model_info` in the IR: a whole card as JSON under "card", or separate keys."""
    if "card" in info:
        try:
            data = json.loads(info["card"])
        except json.JSONDecodeError as error:
            raise ModelError(f"{origin}: rt_info model_info/card is not valid JSON: {error.msg}") from None
        return ModelCard.from_dict(data, f"{origin} rt_info") if isinstance(data, dict) else None
    if "labels" not in info:
        return None
    defaults = ModelCard(arch=DEFAULT_ARCH, input_size=0, labels=())
    try:
        numbers = {
            k: tuple(float(v) for v in info[k].split()) for k in ("mean_values", "scale_values") if k in info
        }
        return ModelCard(
            arch=info.get("arch", info.get("model_type", DEFAULT_ARCH)),
            input_size=int(info.get("input_size", "0")),
            labels=tuple(info["labels"].split()),
            reg_max=int(info.get("reg_max", defaults.reg_max)),
            strides=tuple(int(s) for s in info["strides"].split()) if "strides" in info else defaults.strides,
            mean_bgr=numbers.get("mean_values", defaults.mean_bgr),  # type: ignore[arg-type]
            std_bgr=numbers.get("scale_values", defaults.std_bgr),  # type: ignore[arg-type]
        )
    except ValueError as error:
        raise ModelError(f"{origin}: rt_info model_info has a bad value: {error}") from None


def _default_card(model_path: Path, input_size: int) -> ModelCard:
    names = model_path.parent / DEFAULT_LABELS_FILE
    if not names.is_file():
        raise ModelError(
            f"{model_path}: no model card {card_path(model_path).name}, no rt_info model_info and no "
            f"{DEFAULT_LABELS_FILE} beside it, so the class names are unknown; add one of them"
        )
    return ModelCard(arch=DEFAULT_ARCH, input_size=input_size, labels=read_labels(names))


def _input_kind(model_path: Path, shape: tuple[int, ...], input_type: str) -> tuple[InputKind, int]:
    """The kind of input and its side S, from the shape the network really has."""
    if (
        len(shape) == 4
        and shape[0] == 1
        and shape[1] == 3
        and shape[2] == shape[3]
        and input_type.startswith("f")
    ):
        return "float_nchw", shape[2]
    if len(shape) == 4 and shape[0] == 1 and shape[3] == 3 and shape[1] == shape[2] and input_type == "u8":
        return "uint8_nhwc", shape[1]
    raise ModelError(
        f"{model_path}: expected input float [1,3,S,S] or uint8 [1,S,S,3], found {input_type} {list(shape)}"
    )


def resolve_card(
    model_path: Path, rt_info: dict[str, str], input_shape: Sequence[int], input_type: str
) -> ModelCard:
    """What the model means, from (in order) the IR's rt_info, `<stem>.json`, or NanoDet-Plus
    defaults with labels from `coco.names` — checked against the input the file really has.
    (The outputs are the decoder's to check: their layout is the architecture's.)"""
    kind, size = _input_kind(model_path, tuple(input_shape), input_type)
    card = _card_from_rt_info(rt_info, str(model_path))
    if card is None and card_path(model_path).is_file():
        card = read_card(card_path(model_path))
    if card is None:
        card = _default_card(model_path, size)
    if card.input_size not in (0, size):
        raise ModelError(f"{model_path}: model card says input size {card.input_size}, the model has {size}")
    if not card.labels:
        raise ModelError(f"{model_path}: the model card has no labels")
    return replace(card, input_size=size, input_kind=kind)
