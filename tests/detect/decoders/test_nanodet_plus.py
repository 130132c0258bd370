"""NanoDet-Plus decode (edgepipe/detect/decoders/nanodet_plus.py): priors, GFL integral, boxes,
letterbox, NMS, the output shapes it accepts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edgepipe.detect.decoders import DecodeSettings, NanoDetPlusDecoder, decoder_for
from edgepipe.detect.decoders.nanodet_plus import center_priors, num_anchors
from edgepipe.errors import ModelError
from edgepipe.modelcard import ModelCard
from edgepipe.types import Detections

C = 80  # classes
R = 7  # reg_max


def card(size: int = 320, classes: int = C, letterbox: bool = False) -> ModelCard:
    return ModelCard(arch="nanodet-plus-m", input_size=size, labels=tuple(f"c{i}" for i in range(classes)),
                     letterbox=letterbox)  # fmt: skip


def graph_decoded(
    core: Any,
    decoder: NanoDetPlusDecoder,
    raw: np.ndarray,
    frame_hw: tuple[int, int],
    settings: DecodeSettings,
) -> Detections:
    """The decoder's operations after a network whose output is `raw`, run by OpenVINO at f32."""
    import openvino as ov
    import openvino.opset13 as ops

    network = ops.parameter([1, *raw.shape], np.float32)
    graph_decode = decoder.graph_decode(decoder.card.resized_hw(frame_hw), settings)
    model = graph_decode.append_to(ov.Model([ops.result(network)], [network]))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    request.infer({0: raw[None]})
    outputs = [request.get_output_tensor(i).data for i in range(len(compiled.outputs))]
    return graph_decode.detections(outputs, frame_hw)


Decode = Callable[..., Detections]


@pytest.fixture(scope="module")
def core() -> Any:
    import openvino as ov

    return ov.Core()


@pytest.fixture(params=["numpy", "openvino"])
def decode(request: pytest.FixtureRequest, core: Any) -> Decode:
    """Decode one raw output with the 320 decoder and these settings: in Python (`decode`), or by
    the operations the runtime appends to the network (`graph_decode`); both must agree."""

    def run(
        raw: np.ndarray,
        frame_hw: tuple[int, int],
        threshold: float = 0.4,
        nms_iou: float = 0.5,
        *,
        letterbox: bool = False,
        **more: Any,
    ) -> Detections:
        settings = DecodeSettings(threshold, nms_iou, more.pop("max_detections", 100), **more)
        decoder = NanoDetPlusDecoder(card(320, letterbox=letterbox))
        if request.param == "numpy":
            return decoder.decode((raw[None],), frame_hw, settings)
        return graph_decoded(core, decoder, raw, frame_hw, settings)

    return run


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


def test_uniform_bins_give_the_mean_distance_times_stride(decode: Decode) -> None:
    # anchor 5*40+10 of stride 8 is the grid point (80, 40); uniform bins → distance 3.5·8 = 28
    anchor = 5 * 40 + 10
    found = decode(raw_for(320, {(anchor, 2): 0.9}), (320, 320))
    np.testing.assert_allclose(found.xyxy, [[52, 12, 108, 68]], atol=1e-4)
    np.testing.assert_allclose(found.score, [0.9])
    assert found.class_id.tolist() == [2]
    assert (
        found.xyxy.dtype == np.float32
        and found.score.dtype == np.float32
        and found.class_id.dtype == np.int32
    )


def test_boxes_are_clamped_to_the_input_then_scaled_to_the_frame(decode: Decode) -> None:
    # stride-16 level starts at anchor 1600; its grid point (0, 0) with distances 2, 1, 3, 4 bins
    raw = raw_for(320, {(1600, 0): 0.8}, {1600: peaked((2, 1, 3, 4))})
    found = decode(raw, (640, 160))  # frame h=640, w=160
    # input box [-32, -16, 48, 64] → clamped [0, 0, 48, 64] → x · 160/320, y · 640/320
    np.testing.assert_allclose(found.xyxy, [[0, 0, 24, 128]], atol=1e-3)


def test_score_must_be_strictly_above_the_threshold(decode: Decode) -> None:
    raw = raw_for(320, {(0, 0): 0.4, (100, 1): 0.41})
    found = decode(raw, (320, 320))
    assert found.class_id.tolist() == [1]


def test_one_class_per_anchor_unless_multi_label(decode: Decode) -> None:
    raw = raw_for(320, {(300, 18): 0.49, (300, 19): 0.41})  # sheep and cow on the same anchor
    single = decode(raw, (320, 320))
    multi = decode(raw, (320, 320), multi_label=True)
    assert single.class_id.tolist() == [18]
    assert multi.class_id.tolist() == [18, 19]
    np.testing.assert_array_equal(multi.xyxy[0], multi.xyxy[1])


def test_class_mask_drops_other_classes_after_choosing_the_best_class(decode: Decode) -> None:
    raw = raw_for(320, {(10, 0): 0.5, (500, 16): 0.7, (600, 16): 0.6, (600, 0): 0.45})
    mask = np.zeros(C, bool)
    mask[0] = True
    found = decode(raw, (320, 320), class_mask=mask)
    # anchor 600 is a dog (its best class), so the person score under it does not count
    assert found.class_id.tolist() == [0]
    np.testing.assert_allclose(found.score, [0.5])


def test_nms_is_per_class_and_keeps_the_higher_score(decode: Decode) -> None:
    # anchors 41 and 42 are neighbours 8 px apart with 28 px half-size boxes: IoU ≈ 0.75
    raw = raw_for(320, {(41, 0): 0.6, (42, 0): 0.7, (43, 5): 0.5})
    found = decode(raw, (320, 320))
    assert found.class_id.tolist() == [0, 5]
    np.testing.assert_allclose(found.score, [0.7, 0.5])


def test_max_detections_keeps_the_best(decode: Decode) -> None:
    hits = {(anchor, 0): 0.5 + anchor / 10000 for anchor in range(0, 1600, 200)}  # far apart: no NMS
    found = decode(raw_for(320, hits), (320, 320), max_detections=3)
    np.testing.assert_allclose(found.score, [0.64, 0.62, 0.6], atol=1e-6)


def test_nothing_above_threshold_gives_empty_detections(decode: Decode) -> None:
    found = decode(raw_for(320, {}), (320, 320))
    assert len(found) == 0 and found.xyxy.shape == (0, 4)


def test_matches_a_plain_python_decode_on_random_outputs(decode: Decode) -> None:
    rng = np.random.default_rng(7)
    size = 320
    raw = rng.normal(0.0, 3.0, (2125, C + 32)).astype(np.float32)
    raw[:, :C] = rng.uniform(0.0, 0.43, (2125, C))  # sparse hits above 0.42, like a real frame
    expected = reference_decode(raw, size, (480, 640), 0.42)
    found = decode(
        raw, (480, 640), 0.42, 1.0, max_detections=10_000
    )  # IoU 1.0: NMS keeps all but exact duplicates
    assert len(expected) > 50
    assert len(found) == len(expected)
    order = np.lexsort((found.xyxy[:, 0], -found.score))
    ref = sorted(expected, key=lambda r: (-r[1], r[2]))
    np.testing.assert_array_equal(found.class_id[order], [r[0] for r in ref])
    np.testing.assert_allclose(found.xyxy[order], [r[2:] for r in ref], atol=1e-3)


def test_letterbox_boxes_map_back_through_the_scale_and_ignore_the_padding(decode: Decode) -> None:
    """A 160x320 frame letterboxed into 320x320 fills the top half at scale 1 (frame pixels =
    input pixels); a box reaching into the padding is clamped at the frame's bottom edge."""
    # stride-16 grid point (0, 144) = anchor 1600 + 9*20; distances 2, 1, 3, 4 bins of 16 px
    raw = raw_for(320, {(1600 + 9 * 20, 0): 0.8}, {1600 + 9 * 20: peaked((2, 1, 3, 4))})
    found = decode(raw, (160, 320), letterbox=True)
    # input box [-32, 128, 48, 208] → clamped to the frame's area [0, 0, 320, 160] → [0, 128, 48, 160]
    np.testing.assert_allclose(found.xyxy, [[0, 128, 48, 160]], atol=1e-3)


def test_multi_label_with_a_class_mask_keeps_every_kept_class_above_the_threshold(decode: Decode) -> None:
    raw = raw_for(320, {(300, 0): 0.45, (300, 2): 0.6, (300, 5): 0.5, (900, 2): 0.3})
    mask = np.zeros(C, bool)
    mask[[0, 5]] = True
    found = decode(raw, (320, 320), multi_label=True, class_mask=mask)
    assert found.class_id.tolist() == [5, 0]  # best first; the car (2) is not asked for
    np.testing.assert_allclose(found.score, [0.5, 0.45])


# ---------------------------------------------------------------- the outputs it accepts, the registry
def test_fewer_classes_in_the_card_than_in_the_model_is_a_model_error() -> None:
    with pytest.raises(ModelError) as error:
        NanoDetPlusDecoder(card(320, classes=79)).check_outputs([[1, 2125, 112]], "m.onnx")
    assert str(error.value) == (
        "m.onnx: expected 1 output [1, N, C+4·(reg_max+1)] = [1, 2125, 111] "
        "(N for strides [8, 16, 32, 64], C = 79 labels, reg_max 7), found [[1, 2125, 112]]"
    )


@pytest.mark.parametrize(
    "outputs",
    [[[1, 3598, 112]], [[1, 2125, 112], [1, 2125, 4]], [[2125, 112]]],
    ids=["wrong-anchor-count", "two-outputs", "rank-2"],
)
def test_unexpected_output_shapes_are_model_errors(outputs: list[list[int]]) -> None:
    with pytest.raises(
        ModelError, match=r"expected 1 output \[1, N, C\+4·\(reg_max\+1\)\] = \[1, 2125, 112\]"
    ):
        NanoDetPlusDecoder(card(320)).check_outputs(outputs, "m.onnx")


def test_the_card_architecture_picks_the_decoder() -> None:
    assert isinstance(decoder_for(card(320), "m.xml"), NanoDetPlusDecoder)
    unknown = ModelCard(arch="yolox-s", input_size=640, labels=("person",))
    with pytest.raises(
        ModelError,
        match=r"m\.xml: architecture 'yolox-s' \(model card 'arch'\) has no decoder; known: nanodet-plus",
    ):
        decoder_for(unknown, "m.xml")
