"""`edgepipe models quantize`: NNCF post-training INT8 of a fetched float model, calibrated on a video,
written with its card only if it finds again what the float model finds; clear errors otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgepipe.cli import main
from edgepipe.config import DetectorConfig, FileSourceConfig
from edgepipe.detect import Detector
from edgepipe.export.quantize import int8_path_for
from edgepipe.geometry import box_iou
from edgepipe.sources import FileSource

REPO = Path(__file__).resolve().parents[2]
FLOAT_320 = "nanodet-plus-m_320_fp16"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models folder with the fetched 320 FP16 IR and its card (a copy of the checkout's)."""
    folder = tmp_path / "models"
    folder.mkdir()
    for suffix in (".xml", ".bin", ".json"):
        shutil.copy(REPO / "models" / f"{FLOAT_320}{suffix}", folder)
    return folder


def test_the_int8_name_keeps_the_stem(tmp_path: Path) -> None:
    assert (
        int8_path_for(Path("m/nanodet-plus-m_416_fp16.xml"), tmp_path)
        == tmp_path / "nanodet-plus-m_416_int8.xml"
    )
    assert (
        int8_path_for(Path("nanodet-plus-m_320.onnx"), tmp_path) == tmp_path / "nanodet-plus-m_320_int8.xml"
    )


def test_a_model_not_fetched_or_a_missing_calibration_is_a_clear_error(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["models", "quantize", "nanodet-plus-m-320", "--calib", str(tmp_path), "--dest", str(empty)])
        == 2
    )
    assert "is not there: run `edgepipe models fetch nanodet-plus-m-320` first" in capsys.readouterr().err
    pytest.importorskip("nncf", reason="quantize needs the export extra")
    missing = tmp_path / "no-such-video.mp4"
    assert (
        main(["models", "quantize", "nanodet-plus-m-320", "--calib", str(missing), "--dest", str(models_dir)])
        == 2
    )
    assert f"--calib {missing}: no such folder of images or video file" in capsys.readouterr().err
    assert sorted(p.name for p in models_dir.iterdir()) == [
        f"{FLOAT_320}{s}" for s in (".bin", ".json", ".xml")
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_quantised_on_a_video_the_int8_model_finds_the_same_people(
    models_dir: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("nncf", reason="quantize needs the export extra")
    video = shared_data / "video" / "vtest.mp4"
    args = ["models", "quantize", "nanodet-plus-m-320", "--calib", str(video), "--frames", "30"]
    assert main([*args, "--dest", str(models_dir)]) == 0
    out = capsys.readouterr().out
    int8 = models_dir / "nanodet-plus-m_320_int8.xml"
    assert f"{int8} (INT8, 30 calibration frames; finds" in out
    card = json.loads(int8.with_suffix(".json").read_text())
    assert card["precision"] == "int8" and card["input_size"] == 320 and card["labels"][0] == "person"
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".")]  # no staging folder left
    # the INT8 model through the detector finds the people the float model finds on frames it was not
    # calibrated on (the calibration took every 26th frame of the first 795)
    found = {}
    for name in (FLOAT_320, "nanodet-plus-m_320_int8"):
        detector = Detector(
            DetectorConfig(model=models_dir / f"{name}.xml", precision="f32", classes=["person"])
        )
        with FileSource(FileSourceConfig(path=video)) as source:
            frames = [f for i, f in zip(range(13), source.frames(), strict=False) if f is not None and i > 0]
        found[name] = [detector.detect(frame) for frame in frames]
    matched = total = 0
    for ours, theirs in zip(found["nanodet-plus-m_320_int8"], found[FLOAT_320], strict=True):
        total += len(theirs)
        if len(ours) and len(theirs):
            matched += int(np.count_nonzero(box_iou(theirs.xyxy, ours.xyxy).max(axis=1) >= 0.5))
    assert total > 20 and matched >= 0.8 * total, (matched, total)


def test_several_calibration_sources_share_the_frames(tmp_path: Path, shared_data: Path) -> None:
    """A folder of 4 images and a video: 11 frames at most → 6 from the folder (it has 4: all of them)
    and 5 spread over the video; each a 320 network input."""
    import cv2

    from edgepipe.export.quantize import calibration_frames

    folder = tmp_path / "camera"
    folder.mkdir()
    for number in range(4):
        cv2.imwrite(str(folder / f"{number}.jpg"), np.full((60, 80, 3), 40 * number, np.uint8))
    frames = calibration_frames([folder, shared_data / "video" / "tud-campus.mp4"], 320, 11)
    assert len(frames) == 4 + 5
    assert {f.shape for f in frames} == {(1, 3, 320, 320)}
    assert len({round(float(f.mean()), 3) for f in frames[4:]}) == 5  # five different video frames
