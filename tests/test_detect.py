"""The Detector end to end on the real NanoDet-Plus files, and `edgepipe detect` / `bench detector`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.cli import main
from edgepipe.detect import Detector, ModelPool
from edgepipe.errors import ConfigError, ModelError
from edgepipe.geometry import box_iou
from edgepipe.types import Detections, Frame
from tests.fixtures.model import SAMPLE_IMAGES
from tests.test_detect_openvino import tiny_onnx

pytestmark = pytest.mark.integration

EXPECTED = json.loads((Path(__file__).parent / "data" / "detect" / "expected_320_t035.json").read_text())[
    "images"
]
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
    allowed = expected["objects"] + expected["known_false"]
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
def test_int8_irs_run_through_the_same_path(
    model: str, shared_models: Path, model_pool: ModelPool, sample_images: dict[str, NDArray[np.uint8]]
) -> None:
    detector = Detector(shared_models / model, pool=model_pool, precision="f32", score_threshold=0.35)
    assert detector.card.input_kind == "uint8_nhwc"
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
    streamed = list(detector_320_ir.stream(iter(frames)))
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
        for f, _ in detector_320_ir.stream(frames):
            seen.append(f.index)
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
    people = Detector(path, pool=model_pool, precision="f32", score_threshold=0.35, classes=["person"])
    assert people.detect(image).class_id.tolist() == [0, 0, 0]
    big = Detector(path, pool=model_pool, precision="f32", score_threshold=0.35, min_box_area=100_000)
    assert [big.labels[c] for c in big.detect(image).class_id] == ["bus"]  # people are < 95k px²
    # the bus centre is (407, 472); the left person's is (137, 649)
    roi = Detector(path, pool=model_pool, precision="f32", score_threshold=0.35, roi_xyxy=(0, 500, 200, 1080))
    found = roi.detect(image)
    assert found.class_id.tolist() == [0]
    assert box_iou(found.xyxy, np.array([[46, 394, 229, 904]]))[0, 0] > 0.9


def test_unknown_class_name_is_a_config_error_listing_valid_names(
    shared_models: Path, model_pool: ModelPool
) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown class name\(s\) persn; valid names: person, bicycle, car, "
    ):
        Detector(shared_models / "nanodet-plus-m_320_fp16.xml", pool=model_pool, classes=["persn"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"score_threshold": 1.5}, r"score_threshold must be in \[0, 1\), got 1.5"),
        ({"nms_iou": 0.0}, r"nms_iou must be in \(0, 1\], got 0.0"),
        ({"roi_xyxy": (10, 10, 5, 20)}, r"roi_xyxy must be \(x1, y1, x2, y2\) with x1 < x2 and y1 < y2"),
        ({"in_flight": 0}, "in_flight must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_config_errors(shared_models: Path, option: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Detector(shared_models / "nanodet-plus-m_320_fp16.xml", **option)  # type: ignore[arg-type]


def test_model_with_unexpected_output_shape_is_a_model_error(tmp_path: Path, shared_models: Path) -> None:
    (tmp_path / "coco.names").write_text((shared_models / "coco.names").read_text())
    model = tiny_onnx(tmp_path / "tiny.onnx", (1, 22, 100))  # S=32: 22 anchors, but 100 != 80 + 32
    with pytest.raises(ModelError) as error:
        Detector(model)
    assert str(error.value) == (
        f"{model}: expected 1 output [1, N, C+4·(reg_max+1)] = [1, 22, 112] "
        "(N for strides [8, 16, 32, 64], C = 80 labels, reg_max 7), found [[1, 22, 100]]"
    )


def test_a_model_of_the_right_shape_loads_with_labels_beside_it(tmp_path: Path, shared_models: Path) -> None:
    (tmp_path / "coco.names").write_text((shared_models / "coco.names").read_text())
    detector = Detector(tiny_onnx(tmp_path / "tiny.onnx", (1, 22, 112)), precision="f32")
    assert detector.input_size == 32 and detector.labels[0] == "person"
    assert len(detector.detect(frame(np.zeros((50, 60, 3), np.uint8)))) == 0  # all scores 0


# ---------------------------------------------------------------- CLI
MODEL_320 = "../shared/models/nanodet-plus-m_320_fp16.xml"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], shared_dir: Path) -> tuple[int, str, str]:
    model = str(shared_dir / "models" / "nanodet-plus-m_320_fp16.xml")
    code = main([a.replace(MODEL_320, model) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_detect_prints_json_boxes(capsys: pytest.CaptureFixture[str], shared_dir: Path) -> None:
    image = str(shared_dir / "models" / "samples" / "bus.jpg")
    code, out, _ = run_cli(
        ["detect", image, "--model", MODEL_320, "--threshold", "0.35", "--precision", "f32", "--json"],
        capsys,
        shared_dir,
    )
    assert code == 0
    found = json.loads(out)
    assert [d["label"] for d in found] == ["bus", "person", "person", "person"]
    assert set(found[0]) == {"label", "score", "bbox"}
    assert box_iou(np.array([found[0]["bbox"]]), np.array([[6, 221, 808, 724]]))[0, 0] > 0.95


def test_cli_detect_writes_an_annotated_image(
    capsys: pytest.CaptureFixture[str], shared_dir: Path, tmp_path: Path
) -> None:
    import cv2

    image = shared_dir / "models" / "samples" / "person.jpg"
    out_path = tmp_path / "annotated.png"
    code, out, _ = run_cli(
        ["detect", str(image), "--model", MODEL_320, "--classes", "person", "--out", str(out_path)],
        capsys,
        shared_dir,
    )
    assert code == 0 and out.startswith("person 0.")
    drawn = cv2.imread(str(out_path))
    original = cv2.imread(str(image))
    assert drawn.shape == original.shape
    changed = np.any(drawn != original, axis=2)
    assert changed[100:378, 191].any() and not changed[:, 450:].any()  # the person's box, not the horse's


def test_cli_detect_on_a_video_prints_one_object_per_frame(
    capsys: pytest.CaptureFixture[str], shared_dir: Path
) -> None:
    video = str(shared_dir / "data" / "video" / "vtest.mp4")
    code, out, _ = run_cli(
        ["detect", video, "--model", MODEL_320, "--json", "--max-frames", "3"], capsys, shared_dir
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    assert sum(d["label"] == "person" for d in lines[0]["detections"]) >= 3  # vtest: people walking


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["detect", "missing.jpg"],
            1,
            "edgepipe: error: input missing.jpg does not exist: give an image or a video file",
        ),
        (["detect", "EMPTY", "--model", MODEL_320], 1, "the file is empty or not an image"),
        (["detect", "BUS", "--model", "nope.xml"], 1, "model file nope.xml does not exist"),
        (["detect", "BUS", "--model", MODEL_320, "--device", "NPU"], 2, "device 'NPU' is not available"),
    ],
    ids=["missing-input", "empty-image", "missing-model", "absent-device"],
)
def test_cli_detect_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
    shared_dir: Path,
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    bus = str(shared_dir / "models" / "samples" / "bus.jpg")
    got, _, err = run_cli([{"EMPTY": str(empty), "BUS": bus}.get(a, a) for a in args], capsys, shared_dir)
    assert got == code
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_bench_detector_prints_fps_and_ratios(
    capsys: pytest.CaptureFixture[str], shared_dir: Path
) -> None:
    code, out, _ = run_cli(
        ["bench", "detector", "--model", MODEL_320, "--frames", "6", "--rounds", "2"], capsys, shared_dir
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("nanodet-plus-m_320_fp16.xml (auto, throughput, 6 frames x 2 rounds")
    assert lines[1].lstrip().startswith("OpenVINO limit   median")
    assert "FPS ratio" in lines[2] and "CPU ratio" in lines[2]
    assert lines[3].lstrip().startswith("video decode+det")


@pytest.mark.slow
def test_coco_subset_map_matches_the_provenance_table(shared_dir: Path, model_pool: ModelPool) -> None:
    from edgepipe.bench.detector import coco_eval

    scores = coco_eval(
        shared_dir / "models" / "nanodet-plus-m_320_fp16.xml",
        shared_dir / "data" / "coco",
        pool=model_pool,
        precision="f32",
    )
    # PROVENANCE.md §4 (onnxruntime, cv2.resize): 0.313 / 0.456; our resize runs inside OpenVINO
    assert scores["images"] == 80
    assert scores["mAP"] == pytest.approx(0.313, abs=0.01)
    assert scores["AP50"] == pytest.approx(0.456, abs=0.01)
