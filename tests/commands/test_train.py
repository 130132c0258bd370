"""`edgepipe train`: bad data and options fail before training, one line each; a real run exports an IR
that `edgepipe detect` reads; the runtime never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.cli import main

ARGS = ["--size", "320"]


def _coco_with(tmp_path: Path, shared_data: Path, images: int, **changes: object) -> Path:
    """A COCO file over the first `images` shared images that have persons."""
    source = json.loads((shared_data / "coco" / "annotations" / "instances_val2017.json").read_text())
    with_person = sorted({a["image_id"] for a in source["annotations"] if a["category_id"] == 1})[:images]
    document = {**source, "images": [i for i in source["images"] if i["id"] in with_person],
                "annotations": [a for a in source["annotations"] if a["image_id"] in with_person], **changes}  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _train(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["train", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--val", "1.5"], "--val 1.5: a share of the images must be between 0 and 1, e.g. 0.2"),
        (["--int8"], "--int8 needs --export"),
        (["--epochs", "0"], "--epochs 0: Input should be greater than or equal to 1"),
        (["--classes", "person,,car"], "--classes 'person,,car': an empty name; write e.g. person,car"),
        (
            ["--classes", "persons"],
            "--classes persons: not a category of {json}; its categories: person, bicycle,",
        ),
    ],
)
def test_bad_options_are_one_line(
    extra: list[str], message: str, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _coco_with(tmp_path, shared_data, 2)
    code, err = _train(
        [
            "--data",
            str(data),
            "--images",
            str(shared_data / "coco" / "val2017"),
            "--out",
            str(tmp_path / "o"),
            *ARGS,
            *extra,
        ],
        capsys,
    )
    assert code == 2
    assert err.startswith(f"edgepipe: error: {message.format(json=data)}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_missing_image_stops_before_training(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    data = _coco_with(tmp_path, shared_data, 2)
    first = json.loads(data.read_text())["images"][0]["file_name"]
    (images / first).symlink_to(shared_data / "coco" / "val2017" / first)
    code, err = _train(
        ["--data", str(data), "--images", str(images), "--out", str(tmp_path / "o"), *ARGS], capsys
    )
    assert code == 2
    assert err.startswith(f"edgepipe: error: {data}: image {images}/") and "does not exist" in err


@pytest.mark.slow
def test_the_runtime_never_imports_torch() -> None:
    code = (
        "import sys, edgepipe.cli, edgepipe.pipeline, edgepipe.commands, edgepipe.detect; "
        "edgepipe.cli.build_parser(); "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.integration
def test_train_export_detect(
    tmp_path: Path, shared_data: Path, shared_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch", reason="training needs the extra: pip install 'edgepipe[train]'")
    data, out = _coco_with(tmp_path, shared_data, 4), tmp_path / "run"
    args = ["--data", str(data), "--images", str(shared_data / "coco" / "val2017"), "--out", str(out), *ARGS,
            "--classes", "person", "--epochs", "1", "--batch", "4", "--val", str(data), "--export", "--threads", "2",
            "--weights-dir", str(shared_models)]  # fmt: skip
    assert main(["train", *args]) == 0
    printed = capsys.readouterr().out
    assert (
        "start weights: nanodet-plus-m_320.onnx (BN folded); class outputs kept: person; new: none; AGM new"
        in printed
    )
    assert "best checkpoint:" in printed and "FP16 IR scores" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "model_best.ckpt", "model_last.ckpt", "nanodet-plus-m_320.json", "nanodet-plus-m_320.names",
        "nanodet-plus-m_320.onnx", "nanodet-plus-m_320_fp16.bin", "nanodet-plus-m_320_fp16.json", "nanodet-plus-m_320_fp16.xml",
    ]  # fmt: skip
    card = json.loads((out / "nanodet-plus-m_320_fp16.json").read_text())
    assert (card["labels"], card["input_size"], card["source"]["checkpoint"]) == (
        ["person"],
        320,
        "model_best.ckpt",
    )
    image = shared_data / "coco" / "val2017" / json.loads(data.read_text())["images"][0]["file_name"]
    assert main(["detect", str(image), "--model", str(out / "nanodet-plus-m_320_fp16.xml"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found and {d["label"] for d in found} == {"person"}
    assert main(["train", *args]) == 2  # a finished run is not overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", *args[:-4], "--resume"]) == 0  # nothing left to do: writes the same last checkpoint
