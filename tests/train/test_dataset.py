"""COCO data sets: loading, class choice, image folders, splits, and every bad-data error message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgepipe.errors import DatasetError
from edgepipe.train.dataset import check_images, check_same_classes, find_annotation_file, load_coco, split


def _coco(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 4, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [30, 10, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 1},
            {"id": 13, "image_id": 2, "category_id": 3, "bbox": [10.5, 2, 5, 5], "area": 25},
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
    }  # fmt: skip
    document.update(changes)
    return document


def _write(
    folder: Path, document: dict[str, Any], name: str = "instances.json", images: Path | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = images or folder
    images.mkdir(parents=True, exist_ok=True)
    for image in document.get("images", []):
        if isinstance(image, dict) and "file_name" in image:
            cv2.imwrite(str(images / image["file_name"]), np.zeros((48, 64, 3), np.uint8))
    path = folder / name
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def test_loads_boxes_as_xyxy_with_classes_in_category_id_order(tmp_path: Path) -> None:
    dataset = load_coco(_write(tmp_path, _coco()))
    assert dataset.labels == ("person", "car")  # sorted by category id, as NanoDet's cat2label
    assert dataset.category_ids == (1, 3)
    a, b = dataset.samples
    assert (a.path, a.width, a.height) == (tmp_path / "a.jpg", 64, 48)
    assert a.xyxy.tolist() == [[4, 4, 24, 34], [30, 10, 40, 20]]
    assert a.class_id.tolist() == [1, 0]
    assert b.xyxy.tolist() == [[10.5, 2, 15.5, 7]] and b.crowd_xyxy.tolist() == [[0, 0, 64, 48]]
    assert dataset.num_boxes == 3


def test_classes_keep_their_order_and_drop_the_others(tmp_path: Path) -> None:
    dataset = load_coco(_write(tmp_path, _coco()), ["car"])
    assert dataset.labels == ("car",)
    assert [s.class_id.tolist() for s in dataset.samples] == [[0], [0]]
    assert dataset.samples[0].xyxy.tolist() == [[4, 4, 24, 34]]


def test_coco_truth_renumbers_categories_to_class_indices(tmp_path: Path) -> None:
    truth = load_coco(_write(tmp_path, _coco()), ["car"]).coco_truth()
    assert truth["categories"] == [{"id": 0, "name": "car"}]
    assert [(a["image_id"], a["bbox"], a["iscrowd"]) for a in truth["annotations"]] == [
        (1, [4.0, 4.0, 20.0, 30.0], 0), (2, [10.5, 2.0, 5.0, 5.0], 0), (2, [0.0, 0.0, 64.0, 48.0], 1)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("layout", "json_at", "images_at"),
    [
        ("beside", "export/_annotations.coco.json", "export"),  # Roboflow
        ("images folder", "task/annotations/instances_default.json", "task/images"),  # CVAT
        ("label studio", "ls/result.json", "ls/images"),
        ("coco", "coco/annotations/instances_val2017.json", "coco/val2017"),
    ],
)
def test_finds_the_image_folder_of_common_exports(
    tmp_path: Path, layout: str, json_at: str, images_at: str
) -> None:
    path = _write((tmp_path / json_at).parent, _coco(), Path(json_at).name, tmp_path / images_at)
    assert load_coco(path).samples[0].path == tmp_path / images_at / "a.jpg"
    assert load_coco(path.parent).source == path  # the folder holding the only .json works too


def test_annotations_subfolder_is_searched(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "coco" / "annotations", _coco(), "instances_val2017.json", tmp_path / "coco" / "val2017"
    )
    assert find_annotation_file(tmp_path / "coco") == path


def test_images_option_overrides_the_search(tmp_path: Path) -> None:
    path = _write(tmp_path / "a", _coco(), images=tmp_path / "elsewhere")
    assert (
        load_coco(path, images_dir=tmp_path / "elsewhere").samples[1].path == tmp_path / "elsewhere" / "b.jpg"
    )


def _ann(**changes: Any) -> list[dict[str, Any]]:
    return [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], **changes}]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_coco(annotations=[]), r"instances\.json: no annotations: the annotation file is empty"),
        (_coco(images=[]), r"instances\.json: no images: the annotation file is empty"),
        ({"images": []}, r"instances\.json: 'annotations' is missing or not a list"),
        (_coco(annotations=_ann(category_id=99)),
         r"instances\.json: annotation 7 \(a\.jpg\): category_id 99 is not in categories \(ids 1, 3\)"),
        (_coco(annotations=_ann(image_id=5)), r"instances\.json: annotation 7: image_id 5 is not in images"),
        (_coco(annotations=_ann(bbox=[60, 10, 10, 10])),
         r"instances\.json: annotation 7 \(a\.jpg, 64x48\): bbox \[60, 10, 10, 10\] reaches outside the image \(x 60\.\.70, y 10\.\.20\)"),
        (_coco(annotations=_ann(bbox=[-3, 10, 10, 10])), r"annotation 7 \(a\.jpg, 64x48\): bbox .* reaches outside the image"),
        (_coco(annotations=_ann(bbox=[1, 1, 0, 5])), r"annotation 7 \(a\.jpg, 64x48\): bbox \[1, 1, 0, 5\] has no area"),
        (_coco(annotations=_ann(bbox=[1, 1, 5])), r"annotation 7 .*: bbox \[1, 1, 5\] is not \[x, y, width, height\] numbers"),
        (_coco(annotations=_ann(bbox="1 1 5 5")), r"annotations\[0\]: 'bbox' is '1 1 5 5', expected a list"),
        (_coco(annotations=[*_ann(), *_ann()]), r"instances\.json: annotation 7 appears twice"),
        (_coco(categories=[{"id": 1, "name": "person"}, {"id": 1, "name": "car"}]), r"category id 1 appears twice"),
        (_coco(images=[{"id": 1, "file_name": "a.jpg", "width": 64}]), r"images\[0\]: 'height' is None, expected an integer"),
    ],
)  # fmt: skip
def test_bad_data_is_one_line_naming_the_file_and_the_item(
    tmp_path: Path, document: dict[str, Any], message: str
) -> None:
    with pytest.raises(DatasetError, match=message) as error:
        load_coco(_write(tmp_path, document))
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_a_box_a_hair_outside_is_clipped(tmp_path: Path) -> None:
    dataset = load_coco(_write(tmp_path, _coco(annotations=_ann(bbox=[-0.4, 40, 64.6, 8.5]))))
    assert dataset.samples[0].xyxy.tolist() == [[0, 40, 64, 48]]


def test_missing_image_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _coco())
    (tmp_path / "b.jpg").unlink()
    with pytest.raises(
        DatasetError, match=rf"instances\.json: image {tmp_path}/b\.jpg does not exist: check"
    ):
        load_coco(path)


def test_no_image_found_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_coco()), encoding="utf-8")
    with pytest.raises(
        DatasetError, match=r"x\.json: cannot find image a\.jpg: looked in .*; pass --images DIR"
    ):
        load_coco(path)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "images": [\n  oops\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.json:3: not valid JSON"):
        load_coco(path)


def test_unknown_class_lists_the_categories(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError,
        match=r"--classes door: not a category of .*instances\.json; its categories: person, car",
    ):
        load_coco(_write(tmp_path, _coco()), ["person", "door"])


def test_classes_without_a_single_box_are_refused(tmp_path: Path) -> None:
    document = _coco(categories=[*_coco()["categories"], {"id": 5, "name": "dog"}])
    with pytest.raises(DatasetError, match=r"no boxes of the classes dog: label some images first"):
        load_coco(_write(tmp_path, document), ["dog"])


def test_folder_with_several_annotation_files_asks_for_one(tmp_path: Path) -> None:
    _write(tmp_path, _coco(), "train.json")
    _write(tmp_path, _coco(), "val.json")
    with pytest.raises(
        DatasetError, match=r"2 \.json files \(train\.json, val\.json\) .*pass the annotation file itself"
    ):
        load_coco(tmp_path)


def test_image_of_another_size_than_annotated(tmp_path: Path) -> None:
    dataset = load_coco(_write(tmp_path, _coco()))
    cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((64, 48, 3), np.uint8))
    with pytest.raises(
        DatasetError, match=r"image .*b\.jpg \(id 2\) is 48x64, the annotation file says 64x48"
    ):
        check_images(dataset)


def test_mismatched_class_lists_are_refused(tmp_path: Path) -> None:
    train = load_coco(_write(tmp_path / "t", _coco()))
    val = load_coco(
        _write(tmp_path / "v", _coco(categories=[{"id": 3, "name": "car"}, {"id": 1, "name": "bike"}]))
    )
    with pytest.raises(DatasetError, match=r"classes bike, car differ from .*'s person, car: pass --classes"):
        check_same_classes(train, val)


def test_split_is_seeded_and_disjoint(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "coco", ["person"])
    train, val = split(dataset, 0.2, seed=3)
    ids = lambda d: [s.image_id for s in d.samples]  # noqa: E731
    assert (len(train.samples), len(val.samples)) == (64, 16)
    assert not set(ids(train)) & set(ids(val))
    assert ids(split(dataset, 0.2, seed=3)[1]) == ids(val) != ids(split(dataset, 0.2, seed=4)[1])


def test_the_shared_coco_subset_loads(shared_data: Path) -> None:
    everything = load_coco(shared_data / "coco")
    assert (len(everything.samples), len(everything.labels), everything.labels[0]) == (80, 80, "person")
    person = load_coco(shared_data / "coco", ["person"])
    assert person.num_boxes == 209 and sum(len(s.crowd_xyxy) for s in person.samples) == 7
