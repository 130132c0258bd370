"""`edgepipe detect` and `edgepipe bench detector` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepipe.cli import main
from edgepipe.geometry import box_iou

pytestmark = pytest.mark.integration

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
        (["detect", "BUS", "--model", "nope.xml"], 2, "--model nope.xml: model file nope.xml does not exist"),
        (["detect", "BUS", "--model", MODEL_320, "--device", "NPU"], 2, "device 'NPU' is not available"),
        (
            ["detect", "BUS", "--model", MODEL_320, "--threshold", "1.5"],
            2,
            "--threshold 1.5: 1.5 is not between 0 and 1",
        ),
        (
            ["detect", "BUS", "--model", MODEL_320, "--device", "TPU"],
            2,
            "--device TPU: 'TPU' does not match the pattern",
        ),
        (["detect", "FOLDER", "--model", MODEL_320], 1, "is a folder: give one image or video file"),
    ],
    ids=[
        "missing-input",
        "empty-image",
        "missing-model",
        "absent-device",
        "threshold",
        "device-name",
        "folder",
    ],
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
    names = {"EMPTY": str(empty), "BUS": bus, "FOLDER": str(tmp_path)}
    got, _, err = run_cli([names.get(a, a) for a in args], capsys, shared_dir)
    assert got == code
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_bench_detector_prints_fps_and_ratios(
    capsys: pytest.CaptureFixture[str], shared_dir: Path
) -> None:
    video = str(shared_dir / "data" / "video" / "vtest.mp4")
    code, out, _ = run_cli(
        ["bench", "detector", "--model", MODEL_320, "--video", video, "--frames", "6", "--rounds", "2"],
        capsys,
        shared_dir,
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("nanodet-plus-m_320_fp16.xml (auto, throughput, 6 frames x 2 rounds")
    assert lines[1].lstrip().startswith("OpenVINO limit   median")
    assert "FPS ratio" in lines[2] and "CPU ratio" in lines[2]
    assert lines[3].lstrip().startswith("video decode+det")


@pytest.mark.parametrize("image_kind", ["gray", "rgba", "16-bit"])
def test_cli_detect_reads_any_png_the_pipeline_reads(
    capsys: pytest.CaptureFixture[str], shared_dir: Path, tmp_path: Path, image_kind: str
) -> None:
    import cv2

    bus = cv2.imread(str(shared_dir / "models" / "samples" / "bus.jpg"))
    converted = {
        "gray": cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY),
        "rgba": cv2.cvtColor(bus, cv2.COLOR_BGR2BGRA),
        "16-bit": bus.astype(np.uint16) * 257,
    }[image_kind]
    path = tmp_path / "bus.png"
    cv2.imwrite(str(path), converted)
    code, out, err = run_cli(["detect", str(path), "--model", MODEL_320, "--json"], capsys, shared_dir)
    assert code == 0, err
    assert "person" in {d["label"] for d in json.loads(out)}
