"""The compiled-model cache on disk (edgepipe/detect/model_cache.py): folders marked when used, the
least recently used removed beyond the bound, and nothing that is not edgepipe's."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from edgepipe.detect import model_cache
from edgepipe.detect.model_cache import IN_USE_S, evict, folder_for

NOW = 1_800_000_000.0
DAY = 86400.0


def model_folder(root: Path, name: str, megabytes: int, used_days_ago: float) -> Path:
    folder = folder_for(root, name, "m.xml")
    assert folder is not None
    (folder / "1234.blob").write_bytes(b"\0" * (megabytes << 20))
    os.utime(folder, (NOW - used_days_ago * DAY, NOW - used_days_ago * DAY))
    return folder


def test_a_folder_is_named_by_what_makes_the_model_and_marked_when_used(tmp_path: Path) -> None:
    first = folder_for(tmp_path, "model A, bf16", "a.xml")
    assert first is not None and first.is_dir() and model_cache.MODEL_FOLDER_NAME.fullmatch(first.name)
    assert folder_for(tmp_path, "model A, f32", "a.xml") != first
    month_ago = time.time() - 30 * DAY
    os.utime(first, (month_ago, month_ago))
    assert folder_for(tmp_path, "model A, bf16", "a.xml") == first  # the same settings: the same folder
    assert first.stat().st_mtime > time.time() - 60  # ... and it counts as used now


def test_beyond_the_bound_the_least_recently_used_go_first(tmp_path: Path) -> None:
    old = model_folder(tmp_path, "old", 3, used_days_ago=30)
    older = model_folder(tmp_path, "older", 3, used_days_ago=60)
    recent = model_folder(tmp_path, "recent", 3, used_days_ago=2)
    new = model_folder(tmp_path, "new", 3, used_days_ago=0)
    removed = evict(tmp_path, keep=new, max_bytes=7 << 20, now=NOW)
    assert removed == [older, old]  # 12 MB → 6 MB: the two least recently used, oldest first
    assert recent.is_dir() and new.is_dir()
    assert evict(tmp_path, keep=new, max_bytes=7 << 20, now=NOW) == []  # within the bound: nothing


def test_the_model_just_compiled_and_folders_in_use_stay_whatever_the_size(tmp_path: Path) -> None:
    just = model_folder(tmp_path, "just compiled", 4, used_days_ago=90)
    busy = model_folder(tmp_path, "another process's", 4, used_days_ago=0)
    os.utime(busy, (NOW - IN_USE_S / 2, NOW - IN_USE_S / 2))
    idle = model_folder(tmp_path, "idle", 4, used_days_ago=1)
    assert evict(tmp_path, keep=just, max_bytes=1 << 20, now=NOW) == [idle]
    assert just.is_dir() and busy.is_dir()


def test_only_edgepipe_folders_are_ever_removed(tmp_path: Path) -> None:
    """A cache place shared with other files (EDGEPIPE_MODEL_CACHE pointing at a busy folder)."""
    mine = model_folder(tmp_path, "mine", 2, used_days_ago=10)
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "a.jpg").write_bytes(b"\0" * (8 << 20))
    os.utime(theirs, (NOW - 400 * DAY, NOW - 400 * DAY))
    (tmp_path / "notes.txt").write_text("keep me")
    new = model_folder(tmp_path, "new", 2, used_days_ago=0)
    assert evict(tmp_path, keep=new, max_bytes=1 << 20, now=NOW) == [mine]
    assert (theirs / "a.jpg").exists() and (tmp_path / "notes.txt").exists()


def test_a_cache_that_cannot_be_listed_evicts_nothing(tmp_path: Path) -> None:
    assert evict(tmp_path / "gone", keep=tmp_path / "gone" / "x", max_bytes=0, now=NOW) == []


@pytest.mark.integration
def test_the_pool_keeps_its_cache_within_the_bound(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two settings of one model (latency and throughput hints) compiled through a cache bounded
    below one compiled model: the second compile removes the first's folder (unused for a day),
    keeps its own, and says so."""
    from edgepipe.detect import ModelPool
    from edgepipe.detect.runtime import Preprocess

    model = shared_models / "nanodet-plus-m_320_fp16.xml"
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPIPE_MODEL_CACHE", str(cache))
    monkeypatch.setattr(model_cache, "MAX_CACHE_BYTES", 1 << 20)
    pool = ModelPool()
    preprocess = Preprocess(layout="NCHW", normalize=True)
    pool.compile(model, preprocess, device="CPU", precision="f32", performance_hint="latency")
    (first,) = list(cache.iterdir())
    os.utime(first, (first.stat().st_mtime - DAY, first.stat().st_mtime - DAY))
    with caplog.at_level(logging.INFO, logger="edgepipe.detect.model_cache"):
        compiled = pool.compile(
            model, preprocess, device="CPU", precision="f32", performance_hint="throughput"
        )
    (second,) = list(cache.iterdir())
    assert second != first and list(second.glob("*.blob"))
    assert any("removed 1 compiled model(s)" in r.getMessage() for r in caplog.records)
    request = compiled.create_infer_request()
    request.get_input_tensor(0).data[:] = np.zeros_like(request.get_input_tensor(0).data)
    request.infer()  # the model compiled beside the eviction runs
