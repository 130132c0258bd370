"""The model card (edgepipe/modelcard.py): where a model's meaning is found, and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.errors import ModelError
from edgepipe.modelcard import ModelCard, read_card, resolve_card, write_card

C = 80


def write_names(folder: Path, count: int = C) -> None:
    (folder / "coco.names").write_text("".join(f"name{i}\n" for i in range(count)), encoding="utf-8")


def test_defaults_take_labels_from_coco_names_and_size_from_the_input(tmp_path: Path) -> None:
    write_names(tmp_path)
    card = resolve_card(tmp_path / "m.onnx", {}, (1, 3, 320, 320), "f32")
    assert card.input_size == 320 and card.input_kind == "float_nchw"
    assert card.labels[:2] == ("name0", "name1") and len(card.labels) == C
    assert card.reg_max == 7 and card.strides == (8, 16, 32, 64)


def test_uint8_nhwc_input_is_the_preprocessed_kind(tmp_path: Path) -> None:
    write_names(tmp_path)
    card = resolve_card(tmp_path / "m.xml", {}, (1, 320, 320, 3), "u8")
    assert card.input_kind == "uint8_nhwc" and card.input_size == 320


def test_card_beside_the_model_wins_over_coco_names(tmp_path: Path) -> None:
    write_names(tmp_path)
    write_card(
        ModelCard(arch="nanodet-plus-m", input_size=320, labels=tuple(f"c{i}" for i in range(C))),
        tmp_path / "m.json",
    )
    card = resolve_card(tmp_path / "m.xml", {}, (1, 3, 320, 320), "f32")
    assert card.labels[0] == "c0"


def test_rt_info_wins_over_the_card(tmp_path: Path) -> None:
    write_card(
        ModelCard(arch="x", input_size=320, labels=tuple(f"c{i}" for i in range(C))), tmp_path / "m.json"
    )
    info = {"labels": " ".join(f"r{i}" for i in range(C)), "reg_max": "7", "strides": "8 16 32 64"}
    assert resolve_card(tmp_path / "m.xml", info, (1, 3, 320, 320), "f32").labels[0] == "r0"
    whole = {"card": json.dumps({"arch": "y", "input_size": 320, "labels": [f"j{i}" for i in range(C)]})}
    assert resolve_card(tmp_path / "m.xml", whole, (1, 3, 320, 320), "f32").labels[0] == "j0"


def test_unexpected_input_shape_is_a_model_error(tmp_path: Path) -> None:
    write_names(tmp_path)
    with pytest.raises(
        ModelError,
        match=r"expected input float \[1,3,S,S\] or uint8 \[1,S,S,3\], found f32 \[1, 3, 320, 240\]",
    ):
        resolve_card(tmp_path / "m.onnx", {}, (1, 3, 320, 240), "f32")


def test_card_size_disagreeing_with_the_model_is_a_model_error(tmp_path: Path) -> None:
    write_card(
        ModelCard(arch="x", input_size=416, labels=tuple(f"c{i}" for i in range(C))), tmp_path / "m.json"
    )
    with pytest.raises(ModelError, match="model card says input size 416, the model has 320"):
        resolve_card(tmp_path / "m.xml", {}, (1, 3, 320, 320), "f32")


def test_no_labels_anywhere_is_a_model_error_that_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model card m\.json, no rt_info model_info and no coco\.names"):
        resolve_card(tmp_path / "m.xml", {}, (1, 3, 320, 320), "f32")


@pytest.mark.parametrize(
    ("letterbox", "frame_hw", "expected"),
    [(False, (360, 480), (320, 320)), (True, (360, 480), (240, 320)), (True, (480, 360), (320, 240)),
     (True, (320, 320), (320, 320)), (True, (1, 1000), (1, 320))],
)  # fmt: skip
def test_resized_hw_is_the_input_area_the_frame_fills(
    letterbox: bool, frame_hw: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert (
        ModelCard(arch="a", input_size=320, labels=("x",), letterbox=letterbox).resized_hw(frame_hw)
        == expected
    )


def test_a_card_round_trips_with_its_channel_order_and_letterbox(tmp_path: Path) -> None:
    original = ModelCard(arch="a", input_size=416, labels=("x", "y"), channel_order="rgb", letterbox=True)
    write_card(original, tmp_path / "m.json")
    assert read_card(tmp_path / "m.json") == original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", r"m\.json:1: model card is not valid JSON"),
        ("[1]", r"m\.json: model card must be a JSON object"),
        ('{"arch": "a", "input_size": 1, "labels": ["x"], "colour": 1}', r"not a valid model card: .*colour"),
        (
            '{"arch": "a", "input_size": 1, "labels": ["x"], "channel_order": "grb"}',
            r"channel_order must be 'bgr' or 'rgb'",
        ),
    ],
    ids=["syntax", "not-an-object", "unknown-key", "channel-order"],
)
def test_broken_cards_are_model_errors_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.json").write_text(text, encoding="utf-8")
    with pytest.raises(ModelError, match=message):
        read_card(tmp_path / "m.json")
