"""Where the model runs (edgepipe/detect/runtime.py): reading files, devices, preprocessing, async order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from edgepipe.detect.runtime import ModelPool, Preprocess, check_image, frame_into, infer_one, infer_stream
from edgepipe.errors import FieldError, ModelError

T = TypeVar("T")
FLOAT_PRE = Preprocess(layout="NCHW", normalize=True, mean_bgr=(1.0, 2.0, 3.0), std_bgr=(2.0, 2.0, 2.0))


def tiny_onnx(path: Path, output_shape: tuple[int, ...], size: int = 32) -> Path:
    """A model whose output is the per-channel mean (output (1, 3)) or the mean of its [1,3,S,S]
    input, broadcast to output_shape by adding zeros — enough to check preprocessing and shapes without a real network."""
    import onnx
    from onnx import TensorProto, helper

    zeros = helper.make_tensor(
        "zeros", TensorProto.FLOAT, output_shape, np.zeros(output_shape).ravel().tolist()
    )
    reduce = [2, 3] if output_shape == (1, 3) else [1, 2, 3]  # per-channel means, or one mean
    axes = helper.make_tensor("axes", TensorProto.INT64, [len(reduce)], reduce)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["data", "axes"], ["mean"], keepdims=0),
            helper.make_node("Add", ["zeros", "mean"], ["output"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output_shape))],
        [zeros, axes],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.fixture
def pool() -> ModelPool:
    return ModelPool()


def test_missing_model_file_says_which(pool: ModelPool, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as error:
        pool.read(tmp_path / "nope.xml")
    assert (
        str(error.value)
        == f"model file {tmp_path / 'nope.xml'} does not exist: give an OpenVINO IR (.xml) or ONNX path"
    )


def test_ir_without_weights_file_is_a_model_error(pool: ModelPool, tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text("<net/>", encoding="utf-8")
    with pytest.raises(ModelError, match=r"has no weights file m\.bin beside it"):
        pool.read(tmp_path / "m.xml")


@pytest.mark.parametrize("name", ["m.xml", "m.onnx"])
def test_corrupt_model_file_is_a_model_error(pool: ModelPool, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x00garbage\xff" * 10)
    (tmp_path / "m.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(
        ModelError, match=rf"cannot read model .*{name}: Unable to read the model: .* Is it a complete"
    ):
        pool.read(tmp_path / name)


def test_other_suffix_is_a_model_error(pool: ModelPool, tmp_path: Path) -> None:
    (tmp_path / "m.pth").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"m\.pth is not \.xml \(OpenVINO IR\) or \.onnx"):
        pool.read(tmp_path / "m.pth")


@pytest.mark.parametrize("device", ["GPU", "NPU", "GPU.1", "AUTO:GPU,CPU"])
def test_absent_device_is_a_config_error_listing_the_available_ones(
    pool: ModelPool, tmp_path: Path, device: str
) -> None:
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    with pytest.raises(FieldError) as error:  # a config field: the pipeline file's line is added by build()
        pool.compile(model, FLOAT_PRE, device=device, precision="f32", performance_hint="latency")
    wanted = device.split(":")[-1].split(",")[0]
    assert error.value.field == ("device",)
    assert error.value.message == (
        f"device {wanted!r} is not available on this machine; available: CPU (or AUTO). Set device to one of them."
    )


def test_pool_compiles_once_per_settings_for_frames_of_every_size_normalising_bgr_in_the_model(
    pool: ModelPool, tmp_path: Path
) -> None:
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    first = pool.compile(model, FLOAT_PRE, device="CPU", precision="f32", performance_hint="latency")
    again = pool.compile(model, FLOAT_PRE, device="CPU", precision="f32", performance_hint="latency")
    hint = pool.compile(model, FLOAT_PRE, device="CPU", precision="f32", performance_hint="throughput")
    assert first is again
    assert hint is not first
    # the network's size: frames are resized into it
    assert list(first.inputs[0].get_shape()) == [1, 32, 32, 3]
    request = first.create_infer_request()
    for height, width in [(32, 32), (480, 640), (7, 1000)]:  # one compiled model takes them all
        # B, G, R: a flat colour survives any resize; the network sees channel c as (x - mean_c) / std_c
        image = np.full((height, width, 3), (11, 22, 33), np.uint8)
        np.testing.assert_allclose(
            infer_one(request, check_image(image, "test"))[0], [[5.0, 10.0, 15.0]], atol=1e-4
        )


def test_shapes_report_the_network_before_preprocessing(pool: ModelPool, tmp_path: Path) -> None:
    shapes = pool.shapes(tiny_onnx(tmp_path / "t.onnx", (1, 22, 112)))
    assert shapes.input_shape == (1, 3, 32, 32)
    assert shapes.input_type == "f32"
    assert shapes.output_shapes == ((1, 22, 112),)
    assert shapes.rt_info == {}


def test_rgb_preprocessing_reverses_the_channels(pool: ModelPool, tmp_path: Path) -> None:
    rgb = Preprocess(layout="NCHW", normalize=True, rgb=True)
    compiled = pool.compile(
        tiny_onnx(tmp_path / "t.onnx", (1, 3)),
        rgb,
        device="CPU",
        precision="f32",
        performance_hint="latency",
    )
    image = np.full((20, 30, 3), (11, 22, 33), np.uint8)
    out = infer_one(compiled.create_infer_request(), check_image(image, "test"))[0]
    np.testing.assert_allclose(out, [[33.0, 22.0, 11.0]], atol=1e-4)


@dataclass(frozen=True)
class Scaled:
    """A decoder's graph part for the test: output 0 times `factor`, and its row sums beside it."""

    factor: float

    def append_to(self, model: Any) -> Any:
        import openvino.opset13 as ops

        raw_result = model.get_results()[0]
        scaled = ops.multiply(raw_result.input_value(0), ops.constant(np.float32(self.factor)))
        model.remove_result(raw_result)
        model.add_results([ops.result(scaled), ops.result(ops.reduce_sum(scaled, ops.constant([2]), False))])
        return model

    def detections(self, outputs: Any, frame_hw: tuple[int, int]) -> Any:
        raise AssertionError("the runtime never decodes: the detector does")


def test_a_graph_decode_replaces_the_outputs_and_is_part_of_the_cache_key(
    pool: ModelPool, tmp_path: Path
) -> None:
    model = tiny_onnx(tmp_path / "t.onnx", (1, 22, 4))
    pre = Preprocess(layout="NCHW", normalize=False)

    def compiled_with(graph_decode: Scaled | None) -> Any:
        return pool.compile(
            model,
            pre,
            device="CPU",
            precision="f32",
            performance_hint="latency",
            graph_decode=graph_decode,
        )

    image = check_image(np.full((40, 50, 3), 9, np.uint8), "test")
    plain, twice = compiled_with(None), compiled_with(Scaled(2.0))
    assert (
        compiled_with(Scaled(2.0)) is twice and twice is not plain and compiled_with(Scaled(3.0)) is not twice
    )
    (raw,) = infer_one(plain.create_infer_request(), image)
    scaled, row_sums = infer_one(twice.create_infer_request(), image)
    np.testing.assert_allclose(raw, np.full((1, 22, 4), 9.0), atol=1e-4)  # the tiny model outputs the mean
    np.testing.assert_allclose(scaled, np.full((1, 22, 4), 18.0), atol=1e-4)
    np.testing.assert_allclose(row_sums, np.full((1, 22), 72.0), atol=1e-4)
    assert len(pool.read(model).outputs) == 1  # the file's model is left as it was read


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            np.zeros((10, 10), np.uint8),
            r"frame 3: image is grayscale \(10, 10\); convert it to BGR \(H, W, 3\)",
        ),
        (np.zeros((10, 10, 1), np.uint8), r"frame 3: image is grayscale \(10, 10, 1\)"),
        (
            np.zeros((10, 10, 4), np.uint8),
            r"frame 3: image has shape \(10, 10, 4\); expected BGR \(H, W, 3\) with 3",
        ),
        (np.zeros((0, 0, 3), np.uint8), r"frame 3: image is empty \(size 0x0\)"),
        (np.zeros((0, 640, 3), np.uint8), r"frame 3: image is empty \(size 640x0\)"),
        (np.zeros((4, 4, 3), np.float32), r"frame 3: image dtype is float32; expected uint8"),
        (np.zeros(0, np.uint8), r"frame 3: image has shape \(0,\); expected BGR"),
    ],
    ids=["gray-2d", "gray-1ch", "bgra", "empty", "zero-height", "float", "flat"],
)
def test_malformed_images_are_value_errors_that_say_what_is_wrong(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_image(image, "frame 3")


def test_check_image_adds_the_batch_axis_and_makes_views_contiguous() -> None:
    image = np.zeros((20, 40, 3), np.uint8)[:, ::2]  # a strided view
    batch = check_image(image, "x")
    assert batch.shape == (1, 20, 20, 3) and batch.flags.c_contiguous


def test_stream_yields_in_input_order_and_reraises_on_the_callers_thread(
    pool: ModelPool, tmp_path: Path
) -> None:
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    plain = Preprocess(layout="NCHW", normalize=True)
    compiled = pool.compile(model, plain, device="CPU", precision="f32", performance_hint="throughput")

    def requests(in_flight: int) -> tuple[Callable[[tuple[int, int]], Any], Callable[[], int]]:
        return (lambda frame_hw: compiled), (lambda: in_flight)

    # runs of one size, then another; the value encodes the item
    items = [(v, (8 + 97 * (v // 4), 16 + 53 * (v // 4))) for v in range(12)]

    def image_of(item: tuple[int, tuple[int, int]]) -> np.ndarray:
        value, (h, w) = item
        return check_image(np.full((h, w, 3), value, np.uint8), f"item {value}")

    # outputs are views into the requests, valid until the next item is pulled: copy them
    results = [
        (item, outputs[0].copy()) for item, outputs in _delivered(infer_stream(*requests(4), items, image_of))
    ]
    assert [item[0] for item, _ in results] == list(range(12))
    np.testing.assert_allclose([out[0, 0] for _, out in results], range(12), atol=1e-4)

    def failing(item: tuple[int, tuple[int, int]]) -> np.ndarray:
        if item[0] == 5:
            return check_image(np.zeros((4, 4), np.uint8), "item 5")
        return image_of(item)

    seen = []
    with pytest.raises(ValueError, match="item 5: image is grayscale"):
        for item, _ in _delivered(infer_stream(*requests(3), items, failing)):
            seen.append(item[0])
    assert seen == [0, 1, 2, 3, 4]  # the ones before the bad item are delivered, in order


class _CountingModel:
    """A compiled model that counts the infer requests made of it and the most in flight at once."""

    def __init__(self, compiled: Any) -> None:
        self.compiled, self.made, self.running, self.most_running = compiled, 0, 0, 0
        self.other: _CountingModel | None = None  # another model whose requests must not overlap
        self.overlapped = 0  # requests started while one of the other's was running

    def create_infer_request(self) -> Any:
        self.made += 1
        return _CountedRequest(self, self.compiled.create_infer_request())


class _CountedRequest:
    def __init__(self, model: _CountingModel, request: Any) -> None:
        self.model, self.request = model, request
        self.model_outputs = request.model_outputs

    def get_input_tensor(self, index: int) -> Any:
        return self.request.get_input_tensor(index)

    def get_output_tensor(self, index: int) -> Any:
        return self.request.get_output_tensor(index)

    def start_async(self) -> None:
        self.request.start_async()
        self.model.running += 1
        self.model.most_running = max(self.model.most_running, self.model.running)
        if self.model.other is not None and self.model.other.running:
            self.model.overlapped += 1

    def wait_for(self, timeout: int) -> bool:
        return bool(self.request.wait_for(timeout))

    def wait(self) -> None:
        self.request.wait()
        self.model.running -= 1


def test_frames_of_other_sizes_keep_the_requests_of_the_model_that_takes_them(
    pool: ModelPool, tmp_path: Path
) -> None:
    """One compiled model takes frames of every size (stretched): a size change keeps its requests
    and their pipelining. Where another model takes the new size (letterbox: another aspect ratio),
    the first model's requests are finished before the other's start."""
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    plain = Preprocess(layout="NCHW", normalize=True)
    compiled = pool.compile(model, plain, device="CPU", precision="f32", performance_hint="throughput")
    sizes = [(8, 16), (24, 12), (40, 40)]
    items = [(v, sizes[v % 3]) for v in range(30)]  # a new size every frame

    def image_of(item: tuple[int, tuple[int, int]]) -> np.ndarray:
        value, (h, w) = item
        return check_image(np.full((h, w, 3), value, np.uint8), f"item {value}")

    one = _CountingModel(compiled)
    results = [
        (item[0], out[0].copy())
        for item, out in _delivered(infer_stream(lambda hw: one, lambda: 3, items, image_of))
    ]
    assert [value for value, _ in results] == list(range(30))
    np.testing.assert_allclose([out[0, 0] for _, out in results], range(30), atol=1e-4)
    assert one.made == 3 and one.most_running == 3  # made once, kept full across the size changes

    wide, tall = _CountingModel(compiled), _CountingModel(compiled)
    wide.other, tall.other = tall, wide
    runs = [(v, (8, 16) if (v // 5) % 2 == 0 else (16, 8)) for v in range(20)]  # 5 wide, 5 tall, ...
    results = [
        (item[0], out[0].copy())
        for item, out in _delivered(
            infer_stream(lambda hw: wide if hw[1] > hw[0] else tall, lambda: 2, runs, image_of)
        )
    ]
    np.testing.assert_allclose([out[0, 0] for _, out in results], range(20), atol=1e-4)
    assert wide.made == tall.made == 2 * 2  # new requests at each swap back: two runs of each
    assert wide.most_running == tall.most_running == 2
    assert wide.overlapped == tall.overlapped == 0  # none started while the other model's ran


def test_stream_delivers_each_result_before_waiting_for_a_live_frame(pool: ModelPool, tmp_path: Path) -> None:
    """A camera faster than the detector: no frame is waiting, so each result comes out before the
    next frame is taken (without frame_waiting, up to four frames could be taken first)."""
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    plain = Preprocess(layout="NCHW", normalize=True)
    compiled = pool.compile(model, plain, device="CPU", precision="f32", performance_hint="throughput")
    log: list[str] = []

    def frames() -> Iterator[int]:
        for value in range(4):
            log.append(f"take {value}")
            yield value

    def image_of(value: int) -> np.ndarray:
        return check_image(np.full((8, 8, 3), value, np.uint8), f"item {value}")

    for value, outputs in _delivered(
        infer_stream(lambda hw: compiled, lambda: 4, frames(), image_of, lambda: False)
    ):
        assert outputs[0][0, 0] == pytest.approx(value, abs=1e-4)
        log.append(f"result {value}")
    assert log == ["take 0", "result 0", "take 1", "result 1", "take 2", "result 2", "take 3", "result 3"]


def test_an_idle_tick_finishes_the_requests_in_flight_and_passes_through(
    pool: ModelPool, tmp_path: Path
) -> None:
    """None in the input (a live source had no frame for a while) comes out in its place, after
    every frame before it: the loop can feed the watchdog without holding results back."""
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    plain = Preprocess(layout="NCHW", normalize=True)
    compiled = pool.compile(model, plain, device="CPU", precision="f32", performance_hint="throughput")

    def image_of(value: int) -> np.ndarray:
        return check_image(np.full((8, 8, 3), value, np.uint8), f"item {value}")

    out = [
        None if item is None else item[0]
        for item in infer_stream(lambda hw: compiled, lambda: 4, [0, 1, None, 2, None], image_of)
    ]
    assert out == [0, 1, None, 2, None]


def _delivered(items: Iterator[tuple[T, Any] | None]) -> Iterator[tuple[T, Any]]:
    """The results of a stream without idle ticks (asserting there were none)."""
    for item in items:
        assert item is not None
        yield item


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_black(pool: ModelPool, tmp_path: Path) -> None:
    """A 16x32 frame in a 32x32 input with letterbox: the frame fills the top half, black below,
    so the per-channel means are half the frame's colour; stretched, they are the colour itself.
    The request's input is used stretched first: letterboxing after it still pads with black."""
    model = tiny_onnx(tmp_path / "t.onnx", (1, 3))
    image = check_image(np.full((16, 32, 3), (10, 20, 30), np.uint8), "test")
    pre = Preprocess(layout="NCHW", normalize=True)
    compiled = pool.compile(model, pre, device="CPU", precision="f32", performance_hint="latency")
    request = compiled.create_infer_request()
    means = {inner_hw: infer_one(request, image, inner_hw)[0].copy() for inner_hw in (None, (16, 32))}
    np.testing.assert_allclose(means[None], [[10.0, 20.0, 30.0]], atol=1e-4)
    np.testing.assert_allclose(means[(16, 32)], [[5.0, 10.0, 15.0]], atol=1e-4)


@pytest.mark.parametrize(
    ("frame_hw", "inner_hw"), [((16, 40), None), ((32, 32), None), ((90, 60), (32, 21)), ((8, 32), (8, 32))]
)
def test_frame_into_resizes_as_opencv_into_the_input(
    frame_hw: tuple[int, int], inner_hw: tuple[int, int] | None
) -> None:
    """The network input holds cv2.resize of the frame (bilinear) where the frame goes, black elsewhere,
    whatever was in it before."""
    import cv2

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    target = np.full((1, 32, 32, 3), 99, np.uint8)  # a used request: the last frame's pixels
    frame_into(check_image(image, "test"), target, inner_hw)
    inner_h, inner_w = inner_hw or (32, 32)
    expected = np.zeros((32, 32, 3), np.uint8)
    expected[:inner_h, :inner_w] = cv2.resize(image, (inner_w, inner_h), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(target[0], expected)


def test_a_second_pool_imports_the_compiled_model_from_the_cache(
    shared_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one process compiled, the next imports (LOADED_FROM_CACHE) and detects the same boxes
    with, for each of several settings: OpenVINO's own cache key gave all of these one file, so
    the one compiled first answered for the others. A damaged cache file is compiled over;
    `cache=False` and "off" leave nothing behind."""
    import cv2

    from edgepipe.config import DetectorConfig
    from edgepipe.detect import Detector
    from edgepipe.types import Frame

    model = shared_models / "nanodet-plus-m_320_fp16.xml"
    video = cv2.VideoCapture(str(shared_models.parent / "data" / "video" / "vtest.mp4"))
    frame = Frame(video.read()[1], 0, 0.0, 0.0)
    video.release()
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPIPE_MODEL_CACHE", str(cache))
    settings = [
        {"threshold": 0.5, "classes": ["person"]},
        {"threshold": 0.1, "classes": ["person"]},
        {"threshold": 0.1, "classes": ["person"], "precision": "f32"},
    ]

    def detect(pool: ModelPool, setting: dict[str, Any]) -> tuple[bool, np.ndarray]:
        detector = Detector(DetectorConfig(model=model, **setting), pool=pool)
        detections = detector.detect(frame)
        compiled = detector.compiled_for(frame.image.shape[:2])
        return bool(compiled.get_property("LOADED_FROM_CACHE")), detections.xyxy

    fresh = [detect(ModelPool(), setting) for setting in settings]
    assert not any(cached for cached, _ in fresh)
    assert [len(boxes) for _, boxes in fresh] == sorted({len(boxes) for _, boxes in fresh})  # all differ
    assert len(list(cache.glob("*/*.blob"))) == len(settings)
    for setting, (_, boxes) in zip(settings, fresh, strict=True):
        cached, again = detect(ModelPool(), setting)
        assert cached, setting
        np.testing.assert_array_equal(again, boxes)
    for blob in cache.glob("*/*.blob"):
        blob.write_bytes(blob.read_bytes()[:1000])  # cache files cut short (a full disk, say)
    cached, again = detect(ModelPool(), settings[0])
    assert not cached
    np.testing.assert_array_equal(again, fresh[0][1])
    assert detect(ModelPool(), settings[0])[0]  # written anew

    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("EDGEPIPE_MODEL_CACHE", str(elsewhere))
    assert not detect(ModelPool(cache=False), settings[0])[0] and not elsewhere.exists()
    monkeypatch.setenv("EDGEPIPE_MODEL_CACHE", "off")
    assert not detect(ModelPool(), settings[0])[0] and not elsewhere.exists()


def test_a_model_file_changed_in_place_is_compiled_again(
    shared_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrained model written over the old one (same path): its cached compile is not used (the
    cache folder is named by the files' contents)."""
    import shutil

    from edgepipe.config import DetectorConfig
    from edgepipe.detect import Detector

    monkeypatch.setenv("EDGEPIPE_MODEL_CACHE", str(tmp_path / "cache"))
    for suffix in (".xml", ".bin"):
        shutil.copy(shared_models / f"nanodet-plus-m_320_fp16{suffix}", tmp_path / f"m{suffix}")
    shutil.copy(shared_models / "coco.names", tmp_path)  # the labels, found beside the model
    model = tmp_path / "m.xml"

    def from_cache() -> bool:
        detector = Detector(DetectorConfig(model=model), pool=ModelPool())
        return bool(detector.compiled_for((360, 480)).get_property("LOADED_FROM_CACHE"))

    assert not from_cache() and from_cache()
    with open(model.with_suffix(".bin"), "ab") as weights:  # other contents, a network that still reads
        weights.write(b"\0" * 64)
    assert not from_cache()


def test_a_cache_folder_that_cannot_be_made_only_costs_the_cache(
    shared_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only or wrong cache place (here under a file): the model compiles and detects as
    without a cache, with one warning that says where; OpenVINO itself failed the compile there."""
    from edgepipe.config import DetectorConfig
    from edgepipe.detect import Detector

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EDGEPIPE_MODEL_CACHE", str(tmp_path / "a-file" / "cache"))
    detector = Detector(DetectorConfig(model=shared_models / "nanodet-plus-m_320_fp16.xml"), pool=ModelPool())
    with caplog.at_level("WARNING", logger="edgepipe.detect.runtime"):
        compiled = detector.compiled_for((360, 480))
    assert not compiled.get_property("LOADED_FROM_CACHE")
    warnings = [r.getMessage() for r in caplog.records if "without the model cache" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "a-file" / "cache") in warnings[0], warnings
