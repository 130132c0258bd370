"""The Detector (edgepipe/detect/__init__.py) end to end on the real NanoDet-Plus files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.detect import Detector, ModelPool
from edgepipe.errors import ConfigError, ModelError
from edgepipe.geometry import box_iou
from edgepipe.types import Detections, Frame
from tests.detect.test_runtime import tiny_onnx
from tests.fixtures.model import SAMPLE_IMAGES, make_detector

pytestmark = pytest.mark.integration

EXPECTED = json.loads(
    (Path(__file__).parent.parent / "data" / "detect" / "expected_320_t035.json").read_text()
)["images"]
GOLDEN_IOU = 0.7


def frame(image: NDArray[np.uint8], index: int = 0) -> Frame:
    return Frame(image, index, 0.0, None)


def labelled(detector: Detector, found: Detections) -> list[tuple[str, list[float]]]:
    return [
        (detector.labels[c], box) for c, box in zip(found.class_id.tolist(), found.xyxy.tolist(), strict=True)
    ]


def assert_matches_golden(detector: Detector, found: Detections, image: str) -> None:
    """Every hand-checked object found (same label, IoU ≥ 0.7); every detection explained."""
    expected = EXPECTED[image]
    got = labelled(detector, found)
    for obj in expected["objects"]:
        ious = [
            box_iou(np.array([box]), np.array([obj["bbox"]]))[0, 0]
            for label, box in got
            if label == obj["label"]
        ]
        assert ious and max(ious) >= GOLDEN_IOU, (
            f"{image}: {obj} not found (best IoU {max(ious, default=0):.2f})"
        )
    allowed = expected["objects"] + expected["known_false"] + expected.get("also_real", [])
    for label, box in got:
        ious = [box_iou(np.array([box]), np.array([a["bbox"]]))[0, 0] for a in allowed if a["label"] == label]
        assert ious and max(ious) >= GOLDEN_IOU, f"{image}: unexpected {label} {np.round(box)}"


@pytest.mark.parametrize("image", SAMPLE_IMAGES)
@pytest.mark.parametrize("which", ["onnx", "ir"])
def test_320_finds_the_hand_checked_objects(
    which: str,
    image: str,
    detector_320_onnx: Detector,
    detector_320_ir: Detector,
    sample_images: dict[str, NDArray[np.uint8]],
) -> None:
    detector = detector_320_onnx if which == "onnx" else detector_320_ir
    assert_matches_golden(detector, detector.detect(frame(sample_images[image])), image)


@pytest.mark.parametrize("image", SAMPLE_IMAGES)
def test_onnx_and_fp16_ir_give_the_same_detections(
    image: str,
    detector_320_onnx: Detector,
    detector_320_ir: Detector,
    sample_images: dict[str, NDArray[np.uint8]],
) -> None:
    a = detector_320_onnx.detect(frame(sample_images[image]))
    b = detector_320_ir.detect(frame(sample_images[image]))
    assert a.class_id.tolist() == b.class_id.tolist()
    np.testing.assert_allclose(a.score, b.score, atol=0.01)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=2.0)


def test_labels_and_input_size_come_from_the_model(detector_320_ir: Detector) -> None:
    assert detector_320_ir.input_size == 320
    assert len(detector_320_ir.labels) == 80
    assert detector_320_ir.labels[:3] == ("person", "bicycle", "car")


@pytest.mark.parametrize(
    "model", ["nanodet-320-int8.xml", "nanodet-416-int8.xml", "nanodet-1.5x-416-int8.xml"]
)
@pytest.mark.slow
def test_int8_irs_run_through_the_same_path(
    model: str, fetched_models: Path, model_pool: ModelPool, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    detector = make_detector(fetched_models / model, model_pool, threshold=0.35)
    assert detector.card.input_kind == "uint8_nhwc" and detector.card.channel_order == "rgb"
    person = next(o["bbox"] for o in EXPECTED["person.jpg"]["objects"] if o["label"] == "person")
    found = detector.detect(frame(sample_images["person.jpg"]))
    people = found.xyxy[found.class_id == 0]
    assert box_iou(people, np.array([person])).max() >= GOLDEN_IOU
    # the INT8 files are weaker (PROVENANCE.md): 2 of the 3 people on bus.jpg are enough
    bus_people = np.array([o["bbox"] for o in EXPECTED["bus.jpg"]["objects"] if o["label"] == "person"])
    found = detector.detect(frame(sample_images["bus.jpg"]))
    iou = box_iou(found.xyxy[found.class_id == 0], bus_people)
    assert int((iou.max(axis=0) >= GOLDEN_IOU).sum()) >= 2


def test_stream_gives_the_same_results_as_detect_in_frame_order(
    detector_320_ir: Detector, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    frames = [frame(sample_images[name], i) for i, name in enumerate(SAMPLE_IMAGES * 3)]  # sizes vary
    streamed = [item for item in detector_320_ir.stream(iter(frames)) if item is not None]
    assert [f.index for f, _ in streamed] == list(range(len(frames)))
    for f, found in streamed:
        alone = detector_320_ir.detect(f)
        assert found.class_id.tolist() == alone.class_id.tolist()
        np.testing.assert_allclose(found.xyxy, alone.xyxy, atol=1e-3)


def test_stream_reraises_a_bad_frame_after_yielding_the_ones_before(
    detector_320_ir: Detector, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    good = sample_images["bus.jpg"]
    frames = [frame(good, 0), frame(good, 1), frame(good[:, :, 0], 2), frame(good, 3)]
    seen = []
    with pytest.raises(ValueError, match=r"frame 2: image is grayscale \(1080, 810\); convert it to BGR"):
        for item in detector_320_ir.stream(frames):
            assert item is not None
            seen.append(item[0].index)
    assert seen == [0, 1]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), r"frame 0: image is empty \(size 0x0\)"),
        (np.zeros((480, 0, 3), np.uint8), r"frame 0: image is empty \(size 0x480\)"),
        (np.zeros((48, 64), np.uint8), r"frame 0: image is grayscale \(48, 64\)"),
        (
            np.zeros((48, 64, 4), np.uint8),
            r"frame 0: image has shape \(48, 64, 4\); expected BGR \(H, W, 3\)",
        ),
    ],
    ids=["empty", "zero-width", "grayscale", "bgra"],
)
def test_malformed_frames_are_value_errors(
    detector_320_ir: Detector, image: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        detector_320_ir.detect(frame(image))


def test_class_filter_area_and_roi(
    shared_models: Path, model_pool: ModelPool, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    path = shared_models / "nanodet-plus-m_320_fp16.xml"
    image = frame(sample_images["bus.jpg"])
    people = make_detector(path, model_pool, threshold=0.35, classes=["person"])
    assert people.detect(image).class_id.tolist() == [0, 0, 0]
    big = make_detector(path, model_pool, threshold=0.35, min_box_area=100_000)
    assert [big.labels[c] for c in big.detect(image).class_id] == ["bus"]  # people are < 95k px²
    # the bus centre is (407, 472); the left person's is (137, 649)
    roi = make_detector(path, model_pool, threshold=0.35, roi=(0, 500, 200, 1080))
    found = roi.detect(image)
    assert found.class_id.tolist() == [0]
    assert box_iou(found.xyxy, np.array([[46, 394, 229, 904]]))[0, 0] > 0.9


def test_unknown_class_name_is_a_config_error_listing_valid_names(
    shared_models: Path, model_pool: ModelPool
) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown class name\(s\) persn; valid names: person, bicycle, car, "
    ):
        make_detector(shared_models / "nanodet-plus-m_320_fp16.xml", model_pool, classes=["persn"])


def test_model_with_unexpected_output_shape_is_a_model_error(tmp_path: Path, shared_models: Path) -> None:
    (tmp_path / "coco.names").write_text((shared_models / "coco.names").read_text())
    model = tiny_onnx(tmp_path / "tiny.onnx", (1, 22, 100))  # S=32: 22 anchors, but 100 != 80 + 32
    with pytest.raises(ModelError) as error:
        make_detector(model)
    assert str(error.value) == (
        f"{model}: expected 1 output [1, N, C+4·(reg_max+1)] = [1, 22, 112] "
        "(N for strides [8, 16, 32, 64], C = 80 labels, reg_max 7), found [[1, 22, 100]]"
    )


def test_a_model_of_the_right_shape_loads_with_labels_beside_it(tmp_path: Path, shared_models: Path) -> None:
    (tmp_path / "coco.names").write_text((shared_models / "coco.names").read_text())
    detector = make_detector(tiny_onnx(tmp_path / "tiny.onnx", (1, 22, 112)))
    assert detector.input_size == 32 and detector.labels[0] == "person"
    assert len(detector.detect(frame(np.zeros((50, 60, 3), np.uint8)))) == 0  # all scores 0


@pytest.mark.slow
def test_coco_subset_map_matches_the_provenance_table(shared_dir: Path, model_pool: ModelPool) -> None:
    from edgepipe.bench.detector import coco_eval

    scores = coco_eval(
        shared_dir / "models" / "nanodet-plus-m_320_fp16.xml",
        shared_dir / "data" / "coco",
        pool=model_pool,
        precision="f32",
    )
    # PROVENANCE.md §4 (onnxruntime, cv2.resize): 0.313 / 0.456; edgepipe resizes with cv2.resize too
    assert scores["images"] == 80
    assert scores["mAP"] == pytest.approx(0.313, abs=0.01)
    assert scores["AP50"] == pytest.approx(0.456, abs=0.01)


def test_the_model_is_compiled_once_for_frames_of_every_size(
    shared_models: Path, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    """No extra compile at construction (only to learn settings); the first frame is the one compile,
    and frames of other sizes use it too (the decode in the network works in input pixels)."""
    pool = ModelPool()
    detector = make_detector(shared_models / "nanodet-plus-m_320_fp16.xml", pool)
    assert len(pool._compiled) == 0
    with pytest.raises(RuntimeError, match="known once the model is compiled"):
        _ = detector.in_flight
    detector.prepare((1080, 810))
    assert len(pool._compiled) == 1
    assert detector.in_flight >= 2
    sizes = {image.shape[:2] for image in sample_images.values()}
    assert len(sizes) >= 2
    for image in sample_images.values():
        detector.detect(frame(image))
    assert len(pool._compiled) == 1


def test_letterbox_from_the_card_finds_the_same_boxes_on_a_padded_frame(
    tmp_path: Path, shared_models: Path, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    """bus.jpg stretched vs. letterboxed into the square input: with letterbox the boxes still land on
    the same objects in frame pixels (a wrong scale or offset would move them by the padding)."""
    from edgepipe.modelcard import ModelCard, write_card
    from edgepipe.models import load_manifest

    labels = tuple((shared_models / "coco.names").read_text().split("\n")[:80])
    for name in ("nanodet-plus-m_320_fp16.xml", "nanodet-plus-m_320_fp16.bin"):
        (tmp_path / name).symlink_to(shared_models / name)
    write_card(ModelCard(arch="nanodet-plus-m", input_size=320, labels=labels, letterbox=True),
               tmp_path / "nanodet-plus-m_320_fp16.json")  # fmt: skip
    assert load_manifest()  # the manifest still loads beside a hand-written card
    stretched = make_detector(shared_models / "nanodet-plus-m_320_fp16.xml", threshold=0.35)
    pool = ModelPool()
    letterboxed = make_detector(tmp_path / "nanodet-plus-m_320_fp16.xml", pool, threshold=0.35)
    assert letterboxed.card.letterbox
    image = frame(sample_images["bus.jpg"])
    a, b = stretched.detect(image), letterboxed.detect(image)
    people_a, people_b = a.xyxy[a.class_id == 0], b.xyxy[b.class_id == 0]
    assert len(people_a) == 3 and len(people_b) >= 2
    assert box_iou(people_b, people_a).max(axis=1).min() > 0.75
    # Half the size, the same aspect ratio: the frame fills the same part of the input, so the same
    # compiled model, and the same boxes at half the scale. Another aspect ratio compiles once more.
    half = cv2.resize(sample_images["bus.jpg"], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert letterboxed.card.resized_hw(half.shape[:2]) == letterboxed.card.resized_hw(image.image.shape[:2])
    c = letterboxed.detect(frame(half))
    assert len(pool._compiled) == 1
    people_c = c.xyxy[c.class_id == 0]
    assert len(people_c) == len(people_b) and box_iou(people_c * 2, people_b).max(axis=1).min() > 0.85
    letterboxed.detect(frame(np.ascontiguousarray(sample_images["bus.jpg"][:540])))  # 810x540: wider
    assert len(pool._compiled) == 2


def raw_decoded(detector: Detector, image: NDArray[np.uint8]) -> Detections:
    """The network's raw output for `image` (no decode operations appended), decoded in Python."""
    from edgepipe.detect.runtime import check_image, infer_one

    frame_hw = (image.shape[0], image.shape[1])
    raw = detector.pool.compile(
        detector.model_path,
        detector.preprocess,
        device="CPU",
        precision="f32",
        performance_hint="latency",
    )
    outputs = infer_one(raw.create_infer_request(), check_image(image, "test"))
    return detector.decoder.decode(outputs, frame_hw, detector.decode_settings)


@pytest.mark.parametrize("settings", [{"threshold": 0.1, "classes": ["person"]}, {"threshold": 0.3}])
def test_the_network_decodes_as_the_python_decoder_on_real_frames(
    shared_models: Path, shared_dir: Path, model_pool: ModelPool, settings: dict[str, Any]
) -> None:
    """At f32 the decode operations appended to the network give the Python decoder's detections."""
    import cv2

    detector = make_detector(shared_models / "nanodet-plus-m_320_fp16.xml", model_pool, **settings)
    video = cv2.VideoCapture(str(shared_dir / "data" / "video" / "vtest.mp4"))
    images = [video.read()[1] for _ in range(40)][::8]
    video.release()
    found_any = 0
    for image in images:
        in_graph, in_python = detector.detect(frame(image)), raw_decoded(detector, image)
        # it did decode in the graph
        assert detector._graph_decodes[detector.card.resized_hw(image.shape[:2])] is not None
        found_any += len(in_graph)
        assert in_graph.class_id.tolist() == in_python.class_id.tolist()
        np.testing.assert_allclose(in_graph.score, in_python.score, atol=1e-6)
        np.testing.assert_allclose(in_graph.xyxy, in_python.xyxy, atol=1e-3)
    assert found_any > 20


class NoGraphDecodePool(ModelPool):
    """A device that cannot compile the decode operations (an NPU without dynamic-shape NMS, say)."""

    def compile(self, *args: Any, graph_decode: Any = None, **kwargs: Any) -> Any:
        if graph_decode is not None:
            raise ConfigError("cannot compile m.xml for NPU: NonMaxSuppression is not supported")
        return super().compile(*args, **kwargs)


def test_a_device_that_cannot_run_the_decode_operations_decodes_in_python(
    shared_models: Path, sample_images: dict[str, NDArray[np.uint8]], caplog: pytest.LogCaptureFixture
) -> None:
    model = shared_models / "nanodet-plus-m_320_fp16.xml"
    image = frame(sample_images["bus.jpg"])
    with caplog.at_level("WARNING", logger="edgepipe.detect"):
        fallback = make_detector(model, NoGraphDecodePool(), threshold=0.35).detect(image)
    assert "decoding in Python, the device does not compile the decode operations" in caplog.text
    assert "NonMaxSuppression is not supported" in caplog.text
    usual = make_detector(model, threshold=0.35).detect(image)
    assert fallback.class_id.tolist() == usual.class_id.tolist() and len(usual) >= 4
    np.testing.assert_allclose(fallback.xyxy, usual.xyxy, atol=1e-3)
