"""NanoDet-Plus variants the export knows: widths per architecture name, and the COCO labels.

No torch here, so the CLI can list the choices without the export extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass

# ShuffleNetV2 stage output channels (stage2, stage3, stage4) per width multiplier.
SHUFFLENET_WIDTHS: dict[str, tuple[int, int, int]] = {
    "0.5x": (48, 96, 192),
    "1.0x": (116, 232, 464),
    "1.5x": (176, 352, 704),
}

SIZES = (320, 416)


@dataclass(frozen=True, slots=True)
class ArchSpec:
    """One NanoDet-Plus configuration, as in RangiLyu/nanodet `config/nanodet-plus-*.yml`."""

    backbone_width: str  # key of SHUFFLENET_WIDTHS
    channels: int  # Ghost-PAN out_channels = head input_channel = feat_channels
    kernel_size: int = 5  # depthwise kernels of the PAN and the head
    stacked_convs: int = 2  # head convs per level
    reg_max: int = 7
    strides: tuple[int, ...] = (8, 16, 32, 64)  # the last level is the PAN's extra level


ARCHS: dict[str, ArchSpec] = {
    "nanodet-plus-m": ArchSpec(backbone_width="1.0x", channels=96),
    "nanodet-plus-m-1.5x": ArchSpec(backbone_width="1.5x", channels=128),
}

# The 80 COCO category names in model output order (NanoDet's `class_names`, `_` written as a space).
COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
