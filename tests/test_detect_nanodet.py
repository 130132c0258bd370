"""NanoDet-Plus decode (edgepipe/detect/nanodet.py): priors, GFL integral, boxes, NMS, model facts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgepipe.detect.nanodet import NanoDetDecoder, center_priors, num_anchors, resolve_card
from edgepipe.errors import ModelError
from edgepipe.modelcard import ModelCard, write_card

C = 80  # classes
R = 7  # reg_max


def raw_for(
    size: int, hits: dict[tuple[int, int], float], bins: dict[int, np.ndarray] | None = None
) -> np.ndarray:
    """A raw head output with scores 0 except `hits` {(anchor, class): score}; uniform bins unless given."""
    raw = np.zeros((num_anchors(size, (8, 16, 32, 64)), C + 4 * (R + 1)), np.float32)
    for (anchor, class_id), score in hits.items():
        raw[anchor, class_id] = score
    for anchor, logits in (bins or {}).items():
        raw[anchor, C:] = logits
    return raw


def peaked(distances_in_bins: tuple[int, int, int, int]) -> np.ndarray:
    """Bin logits whose softmax is (almost) one-hot at the given bin for each side."""
    logits = np.full((4, R + 1), -30.0, np.float32)
    for side, b in enumerate(distances_in_bins):
        logits[side, b] = 30.0
    return logits.ravel()


def reference_decode(raw: np.ndarray, size: int, frame_hw: tuple[int, int], threshold: float) -> list[tuple]:
    """One anchor at a time, plain Python, as the official C++ demo: (class, score, x1, y1, x2, y2)."""
    out = []
    height, width = frame_hw
    index = 0
    for stride in (8, 16, 32, 64):
        side = math.ceil(size / stride)
        for y in range(side):
            for x in range(side):
                row = raw[index]
                index += 1
                class_id = int(np.argmax(row[:C]))
                if row[class_id] <= threshold:
                    continue
                dist = []
                for k in range(4):
                    logits = [float(v) for v in row[C + k * (R + 1) : C + (k + 1) * (R + 1)]]
                    top = max(logits)
                    e = [math.exp(v - top) for v in logits]
                    dist.append(sum(i * w for i, w in enumerate(e)) / sum(e) * stride)
                cx, cy = x * stride, y * stride
                box = [cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]]
                box = [min(max(v, 0.0), size) for v in box]
                scale = [width / size, height / size] * 2
                out.append(
                    (class_id, float(row[class_id]), *(b * s for b, s in zip(box, scale, strict=True)))
                )
    return out


def test_center_priors_run_stride_by_stride_row_major_without_half_pixel_offset() -> None:
    priors = center_priors(320, (8, 16, 32, 64))
    assert priors.shape == (40 * 40 + 20 * 20 + 10 * 10 + 5 * 5, 3) == (2125, 3)
    np.testing.assert_array_equal(priors[0], [0, 0, 8])
    np.testing.assert_array_equal(priors[1], [8, 0, 8])
    np.testing.assert_array_equal(priors[40], [0, 8, 8])
    np.testing.assert_array_equal(priors[1600], [0, 0, 16])
    np.testing.assert_array_equal(priors[-1], [256, 256, 64])


@pytest.mark.parametrize(("size", "expected"), [(320, 2125), (416, 3598), (32, 22)])
def test_num_anchors_rounds_each_level_up(size: int, expected: int) -> None:
    assert num_anchors(size, (8, 16, 32, 64)) == expected


def test_uniform_bins_give_the_mean_distance_times_stride() -> None:
    # anchor 5*40+10 of stride 8 is the grid point (80, 40); uniform bins → distance 3.5·8 = 28
    anchor = 5 * 40 + 10
    decoder = NanoDetDecoder(320, C)
    found = decoder.decode(raw_for(320, {(anchor, 2): 0.9}), (320, 320), score_threshold=0.4, nms_iou=0.5)
    np.testing.assert_allclose(found.xyxy, [[52, 12, 108, 68]], atol=1e-4)
    np.testing.assert_allclose(found.score, [0.9])
    assert found.class_id.tolist() == [2]
    assert (
        found.xyxy.dtype == np.float32
        and found.score.dtype == np.float32
        and found.class_id.dtype == np.int32
    )


def test_boxes_are_clamped_to_the_input_then_scaled_to_the_frame() -> None:
    # stride-16 level starts at anchor 1600; its grid point (0, 0) with distances 2, 1, 3, 4 bins
    decoder = NanoDetDecoder(320, C)
    raw = raw_for(320, {(1600, 0): 0.8}, {1600: peaked((2, 1, 3, 4))})
    found = decoder.decode(raw, (640, 160), score_threshold=0.4, nms_iou=0.5)  # frame h=640, w=160
    # input box [-32, -16, 48, 64] → clamped [0, 0, 48, 64] → x · 160/320, y · 640/320
    np.testing.assert_allclose(found.xyxy, [[0, 0, 24, 128]], atol=1e-3)


def test_score_must_be_strictly_above_the_threshold() -> None:
    decoder = NanoDetDecoder(320, C)
    raw = raw_for(320, {(0, 0): 0.4, (100, 1): 0.41})
    found = decoder.decode(raw, (320, 320), score_threshold=0.4, nms_iou=0.5)
    assert found.class_id.tolist() == [1]


def test_one_class_per_anchor_unless_multi_label() -> None:
    decoder = NanoDetDecoder(320, C)
    raw = raw_for(320, {(300, 18): 0.49, (300, 19): 0.41})  # sheep and cow on the same anchor
    single = decoder.decode(raw, (320, 320), score_threshold=0.4, nms_iou=0.5)
    multi = decoder.decode(raw, (320, 320), score_threshold=0.4, nms_iou=0.5, multi_label=True)
    assert single.class_id.tolist() == [18]
    assert multi.class_id.tolist() == [18, 19]
    np.testing.assert_array_equal(multi.xyxy[0], multi.xyxy[1])


def test_class_mask_drops_other_classes_after_choosing_the_best_class() -> None:
    decoder = NanoDetDecoder(320, C)
    raw = raw_for(320, {(10, 0): 0.5, (500, 16): 0.7, (600, 16): 0.6, (600, 0): 0.45})
    mask = np.zeros(C, bool)
    mask[0] = True
    found = decoder.decode(raw, (320, 320), score_threshold=0.4, nms_iou=0.5, class_mask=mask)
    # anchor 600 is a dog (its best class), so the person score under it does not count
    assert found.class_id.tolist() == [0]
    np.testing.assert_allclose(found.score, [0.5])


def test_nms_is_per_class_and_keeps_the_higher_score() -> None:
    decoder = NanoDetDecoder(320, C)
    # anchors 41 and 42 are neighbours 8 px apart with 28 px half-size boxes: IoU ≈ 0.75
    raw = raw_for(320, {(41, 0): 0.6, (42, 0): 0.7, (43, 5): 0.5})
    found = decoder.decode(raw, (320, 320), score_threshold=0.4, nms_iou=0.5)
    assert found.class_id.tolist() == [0, 5]
    np.testing.assert_allclose(found.score, [0.7, 0.5])


def test_max_detections_keeps_the_best() -> None:
    decoder = NanoDetDecoder(320, C)
    hits = {(anchor, 0): 0.5 + anchor / 10000 for anchor in range(0, 1600, 200)}  # far apart: no NMS
    found = decoder.decode(raw_for(320, hits), (320, 320), score_threshold=0.4, nms_iou=0.5, max_detections=3)
    np.testing.assert_allclose(found.score, [0.64, 0.62, 0.6], atol=1e-6)


def test_nothing_above_threshold_gives_empty_detections() -> None:
    found = NanoDetDecoder(320, C).decode(raw_for(320, {}), (320, 320), score_threshold=0.4, nms_iou=0.5)
    assert len(found) == 0 and found.xyxy.shape == (0, 4)


def test_matches_a_plain_python_decode_on_random_outputs() -> None:
    rng = np.random.default_rng(7)
    size = 320
    raw = rng.normal(0.0, 3.0, (2125, C + 32)).astype(np.float32)
    raw[:, :C] = rng.uniform(0.0, 0.43, (2125, C))  # sparse hits above 0.42, like a real frame
    expected = reference_decode(raw, size, (480, 640), 0.42)
    found = NanoDetDecoder(size, C).decode(
        raw, (480, 640), score_threshold=0.42, nms_iou=1.0, max_detections=10_000
    )  # IoU 1.0: NMS keeps everything except exact duplicates
    assert len(expected) > 50
    assert len(found) == len(expected)
    order = np.lexsort((found.xyxy[:, 0], -found.score))
    ref = sorted(expected, key=lambda r: (-r[1], r[2]))
    np.testing.assert_array_equal(found.class_id[order], [r[0] for r in ref])
    np.testing.assert_allclose(found.xyxy[order], [r[2:] for r in ref], atol=1e-3)


# ---------------------------------------------------------------- model facts
OUT_320 = [[1, 2125, 112]]


def write_names(folder: Path, count: int = C) -> None:
    (folder / "coco.names").write_text("".join(f"name{i}\n" for i in range(count)), encoding="utf-8")


def test_defaults_take_labels_from_coco_names_and_size_from_the_input(tmp_path: Path) -> None:
    write_names(tmp_path)
    card = resolve_card(tmp_path / "m.onnx", {}, (1, 3, 320, 320), "f32", OUT_320)
    assert card.input_size == 320 and card.input_kind == "float_nchw"
    assert card.labels[:2] == ("name0", "name1") and len(card.labels) == C
    assert card.reg_max == 7 and card.strides == (8, 16, 32, 64)


def test_uint8_nhwc_input_is_the_preprocessed_kind(tmp_path: Path) -> None:
    write_names(tmp_path)
    card = resolve_card(tmp_path / "m.xml", {}, (1, 320, 320, 3), "u8", OUT_320)
    assert card.input_kind == "uint8_nhwc" and card.input_size == 320


def test_card_beside_the_model_wins_over_coco_names(tmp_path: Path) -> None:
    write_names(tmp_path)
    write_card(
        ModelCard(arch="nanodet-plus-m", input_size=320, labels=tuple(f"c{i}" for i in range(C))),
        tmp_path / "m.json",
    )
    card = resolve_card(tmp_path / "m.xml", {}, (1, 3, 320, 320), "f32", OUT_320)
    assert card.labels[0] == "c0"


def test_rt_info_wins_over_the_card(tmp_path: Path) -> None:
    write_card(
        ModelCard(arch="x", input_size=320, labels=tuple(f"c{i}" for i in range(C))), tmp_path / "m.json"
    )
    info = {"labels": " ".join(f"r{i}" for i in range(C)), "reg_max": "7", "strides": "8 16 32 64"}
    assert resolve_card(tmp_path / "m.xml", info, (1, 3, 320, 320), "f32", OUT_320).labels[0] == "r0"
    whole = {"card": json.dumps({"arch": "y", "input_size": 320, "labels": [f"j{i}" for i in range(C)]})}
    assert resolve_card(tmp_path / "m.xml", whole, (1, 3, 320, 320), "f32", OUT_320).labels[0] == "j0"


def test_fewer_classes_in_the_card_than_in_the_model_is_a_model_error(tmp_path: Path) -> None:
    write_names(tmp_path, count=79)
    with pytest.raises(ModelError) as error:
        resolve_card(tmp_path / "m.onnx", {}, (1, 3, 320, 320), "f32", OUT_320)
    assert str(error.value) == (
        f"{tmp_path / 'm.onnx'}: expected 1 output [1, N, C+4·(reg_max+1)] = [1, 2125, 111] "
        "(N for strides [8, 16, 32, 64], C = 79 labels, reg_max 7), found [[1, 2125, 112]]"
    )


@pytest.mark.parametrize(
    "outputs",
    [[[1, 3598, 112]], [[1, 2125, 112], [1, 2125, 4]], [[2125, 112]]],
    ids=["wrong-anchor-count", "two-outputs", "rank-2"],
)
def test_unexpected_output_shapes_are_model_errors(tmp_path: Path, outputs: list[list[int]]) -> None:
    write_names(tmp_path)
    with pytest.raises(
        ModelError, match=r"expected 1 output \[1, N, C\+4·\(reg_max\+1\)\] = \[1, 2125, 112\]"
    ):
        resolve_card(tmp_path / "m.onnx", {}, (1, 3, 320, 320), "f32", outputs)


def test_unexpected_input_shape_is_a_model_error(tmp_path: Path) -> None:
    write_names(tmp_path)
    with pytest.raises(
        ModelError,
        match=r"expected input float \[1,3,S,S\] or uint8 \[1,S,S,3\], found f32 \[1, 3, 320, 240\]",
    ):
        resolve_card(tmp_path / "m.onnx", {}, (1, 3, 320, 240), "f32", OUT_320)


def test_card_size_disagreeing_with_the_model_is_a_model_error(tmp_path: Path) -> None:
    write_card(
        ModelCard(arch="x", input_size=416, labels=tuple(f"c{i}" for i in range(C))), tmp_path / "m.json"
    )
    with pytest.raises(ModelError, match="model card says input size 416, the model has 320"):
        resolve_card(tmp_path / "m.xml", {}, (1, 3, 320, 320), "f32", OUT_320)


def test_no_labels_anywhere_is_a_model_error_that_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model card m\.json, no rt_info model_info and no coco\.names"):
        resolve_card(tmp_path / "m.xml", {}, (1, 3, 320, 320), "f32", OUT_320)
