"""models/manifest.json and `edgepipe models fetch`: copies, sha256 checks, model cards."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from edgepipe.errors import ConfigError, ModelError
from edgepipe.modelcard import card_path, read_card
from edgepipe.models import fetch, load_manifest, sha256_of


def test_manifest_lists_the_default_models_with_their_files() -> None:
    default, entries = load_manifest()
    assert default == "nanodet-plus-m-416"
    entry = entries["nanodet-plus-m-416"]
    assert entry.input_size == 416
    assert entry.model_file == "nanodet-plus-m_416_fp16.xml"
    assert set(entry.files) == {"nanodet-plus-m_416_fp16.xml", "nanodet-plus-m_416_fp16.bin"}
    assert (
        entry.download_url
        == "https://github.com/RangiLyu/nanodet/releases/download/v1.0.0-alpha-1/nanodet-plus-m_416.onnx"
    )
    assert entries["nanodet-416-int8"].input_kind == "uint8_nhwc"


def test_manifest_hashes_match_the_shared_files(shared_models: Path) -> None:
    _, entries = load_manifest()
    for entry in entries.values():
        for name, sha in entry.files.items():
            assert sha256_of(shared_models / name) == sha, name


def test_fetch_copies_verifies_and_writes_a_card(tmp_path: Path, shared_models: Path) -> None:
    _, entries = load_manifest()
    model = fetch(entries["nanodet-plus-m-320"], tmp_path / "models", shared_models)
    assert model == tmp_path / "models" / "nanodet-plus-m_320_fp16.xml"
    assert model.with_suffix(".bin").is_file()
    card = read_card(card_path(model))
    assert card.input_size == 320
    assert card.labels[:3] == ("person", "bicycle", "car") and len(card.labels) == 80
    assert card.source["sha256"] == entries["nanodet-plus-m-320"].files["nanodet-plus-m_320_fp16.xml"]
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".fetch-")]


def test_fetch_refuses_a_corrupt_file_and_writes_nothing(tmp_path: Path, shared_models: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("nanodet-plus-m_320_fp16.xml", "nanodet-plus-m_320_fp16.bin"):
        shutil.copyfile(shared_models / name, source / name)
    with (source / "nanodet-plus-m_320_fp16.bin").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    _, entries = load_manifest()
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match=r"nanodet-plus-m_320_fp16\.bin: sha256 [0-9a-f]{64} does not match"):
        fetch(entries["nanodet-plus-m-320"], dest, source)
    assert list(dest.iterdir()) == []


def test_fetch_names_the_missing_file(tmp_path: Path) -> None:
    _, entries = load_manifest()
    with pytest.raises(
        ModelError, match=r"nanodet-plus-m_416_fp16\.xml is missing: nanodet-plus-m-416 needs"
    ):
        fetch(entries["nanodet-plus-m-416"], tmp_path / "models", tmp_path)
    with pytest.raises(ConfigError, match=r"--from .*nowhere: no such folder"):
        fetch(entries["nanodet-plus-m-416"], tmp_path / "models", tmp_path / "nowhere")


def test_download_without_network_says_what_to_do(tmp_path: Path) -> None:
    _, entries = load_manifest()
    # a closed local port: the test never depends on (or sends anything to) the internet
    entry = replace(entries["nanodet-plus-m-416"], download_url="http://127.0.0.1:9/nanodet.onnx")
    with pytest.raises(
        ModelError, match=r"cannot download http://127\.0\.0\.1:9/nanodet\.onnx: .*--from DIR"
    ):
        fetch(entry, tmp_path / "models", None)
