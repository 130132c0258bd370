"""The model card: what a model file means (labels, input size, GFL settings, normalisation).

Written next to an IR as `<stem>.json` by `edgepipe export` and `edgepipe models fetch`, and also
into the IR's `rt_info` under `model_info` by the export, so a pipeline YAML never repeats it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgepipe.errors import ModelError

InputKind = Literal["float_nchw", "uint8_nhwc"]

NANODET_MEAN_BGR = (103.53, 116.28, 123.675)
NANODET_STD_BGR = (57.375, 57.12, 58.395)


@dataclass(frozen=True, slots=True)
class ModelCard:
    """Facts about one detector model file."""

    arch: str  # e.g. "nanodet-plus-m"
    input_size: int  # square input side S in pixels
    labels: tuple[str, ...]  # class names in model output order
    # float_nchw: plain float model, edgepipe adds resize/layout/normalisation;
    # uint8_nhwc: preprocessing is inside the IR (the nanodet-*-int8 files)
    input_kind: InputKind = "float_nchw"
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
            return cls(**values)
        except TypeError as error:
            raise ModelError(f"{origin}: not a valid model card: {error}") from None


def card_path(model_path: Path) -> Path:
    """The card that belongs to a model file: `nanodet.xml` → `nanodet.json`."""
    return model_path.with_suffix(".json")


def read_card(path: Path) -> ModelCard:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"cannot read model card {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ModelError(f"{path}:{error.lineno}: model card is not valid JSON: {error.msg}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model card must be a JSON object")
    return ModelCard.from_dict(data, str(path))


def write_card(card: ModelCard, path: Path) -> None:
    path.write_text(card.to_json(), encoding="utf-8")
