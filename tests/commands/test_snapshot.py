"""`edgepipe snapshot` on the shared videos: the rules are drawn where the config says, relative rules
land on the same pixels, a rule outside the frame is an error that still leaves the picture."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOOR = REPO / "pipelines" / "door.yml"  # 768x432, 10 fps


def snapshot(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["snapshot", *args])
    out, err = capsys.readouterr()
    return code, out, err


def read(path: Path) -> NDArray[np.uint8]:
    image = cv2.imread(str(path))
    assert image is not None, f"no image at {path}"
    return np.asarray(image, np.uint8)


def along(start: tuple[float, float], end: tuple[float, float], n: int = 20) -> list[tuple[int, int]]:
    t = np.linspace(0.1, 0.9, n)
    return [(round(start[0] + s * (end[0] - start[0])), round(start[1] + s * (end[1] - start[1]))) for s in t]


def magenta(pixel: NDArray[np.uint8]) -> bool:
    b, g, r = pixel.astype(int)
    return b > 170 and r > 170 and g < 110  # JPEG moves the exact (255, 0, 255) a little


def cyan(pixel: NDArray[np.uint8]) -> bool:
    b, g, r = pixel.astype(int)
    return b > 170 and g > 170 and r < 110


def door_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DOOR.read_text()
    assert old in text
    path = tmp_path / "door.yml"
    path.write_text(
        text.replace(old, new)
        .replace("../../shared/", str(REPO.parent / "shared") + "/")
        .replace("../models/", str(REPO / "models") + "/")
    )
    return path


def test_the_door_snapshot_has_each_rule_where_the_config_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    out_path = tmp_path / "x.jpg"
    code, out, _ = snapshot(capsys, "pipelines/door.yml", "-o", str(out_path))
    assert code == 0
    assert out == f"{out_path}: 768x432 frame 0 at 0.00 s, 3 rules\n"
    picture = read(out_path)
    assert picture.shape == (432, 768, 3)
    for x, y in along((250, 402), (560, 402)) + along((600, 300), (600, 432)):  # entry and exit
        assert magenta(picture[y, x]), (x, y, picture[y, x])
    for x, y in along((300, 160), (300, 380)) + along((320, 150), (580, 150)):  # the table zone's edges
        assert cyan(picture[y, x]), (x, y, picture[y, x])
    assert not magenta(picture[200, 100]) and not cyan(picture[200, 100])  # the frame elsewhere


def test_at_takes_a_later_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = snapshot(capsys, str(DOOR), "-o", str(tmp_path / "later.png"), "--at", "2.5")
    assert code == 0
    assert out.endswith(": 768x432 frame 25 at 2.50 s, 3 rules\n")


def test_a_rule_in_relative_units_lands_on_the_same_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, relative = tmp_path / "pixels.png", tmp_path / "relative.png"
    assert snapshot(capsys, str(DOOR), "-o", str(pixels))[0] == 0
    # entry (250, 402) → (560, 402) as fractions of 768x432; the exact binary fractions give the same pixels
    config = door_with(
        tmp_path,
        "    points: [[250, 402], [560, 402]]",
        "    units: relative\n    points: [[0.32552083333333333, 0.9305555555555556], [0.7291666666666666, 0.9305555555555556]]",
    )
    assert snapshot(capsys, str(config), "-o", str(relative))[0] == 0
    assert np.array_equal(read(pixels), read(relative))


def test_a_rule_outside_the_frame_is_an_error_and_the_picture_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = door_with(
        tmp_path, "    points: [[600, 300], [600, 432]]", "    points: [[600, 300], [600, 5000]]"
    )
    out_path = tmp_path / "x.jpg"
    code, _, err = snapshot(capsys, str(config), "-o", str(out_path))
    assert code == 2
    assert err == (
        f"edgepipe: error: {config}:24: rules[1].points: [600, 5000] is outside the 768x432 frame (x 0..768, y 0..432); "
        "`edgepipe snapshot` draws the frame with a pixel grid\n"
        "(the picture is written all the same, to place them with its grid)\n"
    )
    assert read(out_path).shape == (432, 768, 3)


def test_detect_draws_the_boxes_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "people.png"
    code, out, _ = snapshot(capsys, str(DOOR), "-o", str(out_path), "--at", "15", "--detect")
    assert code == 0
    found = re.fullmatch(r".*: 768x432 frame 150 at 15.00 s, 3 rules, (\d+) detections\n", out)
    assert found is not None and int(found.group(1)) >= 1  # a woman stands at the table then
    plain = tmp_path / "plain.png"
    assert snapshot(capsys, str(DOOR), "-o", str(plain), "--at", "15")[0] == 0
    assert not np.array_equal(read(out_path), read(plain))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "-1"], "edgepipe: error: --at -1: expected 0 <= SECONDS <= 86400\n"),
        (["--grid", "2"], "edgepipe: error: --grid 2: expected 5 <= PX <= 10000\n"),
        (
            ["--at", "1000"],
            "edgepipe: error: one-by-one-person-detection.mp4: the source ended before 1000 s (state: ended)\n",
        ),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = snapshot(capsys, str(DOOR), "-o", str(tmp_path / "x.jpg"), *args)
    assert (code, err) == (2 if "expected" in message else 1, message)
