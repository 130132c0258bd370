"""`edgepipe bench train`: the 64 / 16 split of the shared COCO images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.bench.train import write_split
from edgepipe.errors import ConfigError


def test_the_first_images_by_id_train_and_the_rest_validate(shared_data: Path, tmp_path: Path) -> None:
    train, val = write_split(shared_data / "coco", 64, tmp_path)
    a, b = (json.loads(p.read_text()) for p in (train, val))
    ids_a, ids_b = sorted(i["id"] for i in a["images"]), sorted(i["id"] for i in b["images"])
    assert (len(ids_a), len(ids_b)) == (64, 16) and ids_a[-1] < ids_b[0]
    assert {x["image_id"] for x in a["annotations"]} <= set(ids_a)
    assert len(a["annotations"]) + len(b["annotations"]) == 815 and a["categories"] == b["categories"]


def test_a_split_needs_images_on_both_sides(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--train-images 80: the folder has 80 images"):
        write_split(shared_data / "coco", 80, tmp_path)
