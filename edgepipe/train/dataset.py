"""Read and check a COCO-format detection data set (CVAT, Label Studio, Roboflow all export one).

Everything a training run needs from the data is checked here, before any training starts: every
problem is one `DatasetError` line naming the file and the image or annotation id. No torch here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import DatasetError

# A box may reach this far past the image border (label tools round); it is clipped to the image.
OUTSIDE_TOLERANCE_PX = 1.0
IMAGE_FOLDER_NAMES = ("images", "imgs", "data")


@dataclass(frozen=True, slots=True, eq=False)
class Sample:
    """One labelled image: boxes in its own pixels, as parallel arrays."""

    path: Path
    image_id: int
    width: int
    height: int
    xyxy: NDArray[np.float32]  # (K, 4) boxes to learn
    class_id: NDArray[np.int64]  # (K,) index into DetectionSet.labels
    crowd_xyxy: NDArray[np.float32]  # (M, 4) `iscrowd` regions: neither positives nor false positives


@dataclass(frozen=True, slots=True, eq=False)
class DetectionSet:
    """The images of one annotation file, restricted to the chosen classes."""

    source: Path  # the annotation file
    labels: tuple[str, ...]  # class names in model output order
    category_ids: tuple[int, ...]  # COCO category id of each label
    samples: tuple[Sample, ...]

    @property
    def num_boxes(self) -> int:
        return sum(len(s.xyxy) for s in self.samples)

    def subset(self, indices: Sequence[int], what: str) -> DetectionSet:
        return replace(
            self, source=Path(f"{self.source} ({what})"), samples=tuple(self.samples[i] for i in indices)
        )

    def coco_truth(self) -> dict[str, Any]:
        """The ground truth as a COCO dict for pycocotools (category ids are the class indices)."""
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for sample in self.samples:
            images.append({"id": sample.image_id, "width": sample.width, "height": sample.height})
            boxes = [
                (b, int(c), 0) for b, c in zip(sample.xyxy.tolist(), sample.class_id.tolist(), strict=True)
            ]
            boxes += [(b, 0, 1) for b in sample.crowd_xyxy.tolist()]
            for (x1, y1, x2, y2), class_id, crowd in boxes:
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": sample.image_id,
                                    "category_id": class_id, "bbox": [x1, y1, w, h], "area": w * h,
                                    "iscrowd": crowd})  # fmt: skip
        categories = [{"id": i, "name": name} for i, name in enumerate(self.labels)]
        return {"images": images, "annotations": annotations, "categories": categories}


def find_annotation_file(data: Path) -> Path:
    """`data` itself if it is a file, else the one .json in `data` or `data/annotations`."""
    if data.is_file():
        return data
    if not data.is_dir():
        raise DatasetError(f"--data {data}: no such file or folder")
    found = sorted(
        p for folder in (data, data / "annotations") if folder.is_dir() for p in folder.glob("*.json")
    )
    if len(found) != 1:
        what = (
            "no COCO .json" if not found else f"{len(found)} .json files ({', '.join(p.name for p in found)})"
        )
        raise DatasetError(f"--data {data}: {what} in it or in annotations/: pass the annotation file itself")
    return found[0]


def load_coco(
    data: Path, classes: Sequence[str] | None = None, images_dir: Path | None = None
) -> DetectionSet:
    """Read a COCO instances file (or the folder holding it), keep `classes` (default: all), check it."""
    path = find_annotation_file(data)
    document = _read_json(path)
    categories = _categories(document, path)
    labels, category_ids = _choose_classes(categories, classes, path)
    images = _images(document, path)
    folder = images_dir or _image_folder(path, next(iter(images.values()))["file_name"])
    boxes = _boxes_per_image(
        document, path, images, categories, dict(zip(category_ids, range(len(labels)), strict=True))
    )
    samples = tuple(
        _sample(info, folder, *boxes.get(image_id, ([], [], []))) for image_id, info in sorted(images.items())
    )
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(
            f"{path}: image {missing[0]} does not exist{more}: check the file names or pass --images DIR"
        )
    result = DetectionSet(path, labels, category_ids, samples)
    if result.num_boxes == 0:
        raise DatasetError(f"{path}: no boxes of the classes {', '.join(labels)}: label some images first")
    return result


def check_images(dataset: DetectionSet) -> None:
    """Decode every image once and compare its size with the annotation file's."""
    import cv2

    for sample in dataset.samples:
        image = cv2.imread(str(sample.path))
        if image is None:
            raise DatasetError(f"{dataset.source}: image {sample.path} (id {sample.image_id}) cannot be read")
        height, width = image.shape[:2]
        if (width, height) != (sample.width, sample.height):
            raise DatasetError(
                f"{dataset.source}: image {sample.path} (id {sample.image_id}) is {width}x{height}, the "
                f"annotation file says {sample.width}x{sample.height} (rotated by EXIF?): export it again"
            )


def split(dataset: DetectionSet, val_share: float, seed: int) -> tuple[DetectionSet, DetectionSet]:
    """Hold out `val_share` of the images (at least one each side), chosen by `seed`."""
    n = len(dataset.samples)
    n_val = min(max(1, round(val_share * n)), n - 1)
    if n < 2:
        raise DatasetError(f"{dataset.source}: {n} image: --val needs at least 2 to hold some out")
    order = np.random.default_rng(seed).permutation(n)
    val, train = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    return dataset.subset(train, "train split"), dataset.subset(val, "val split")


def check_same_classes(train: DetectionSet, val: DetectionSet) -> None:
    if train.labels != val.labels:
        raise DatasetError(
            f"{val.source}: classes {', '.join(val.labels)} differ from {train.source}'s "
            f"{', '.join(train.labels)}: pass --classes"
        )


# ---------------------------------------------------------------- parsing
def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file: expected a COCO .json") from None
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: expected a COCO object with images, annotations and categories")
    keys = ("images", "annotations", "categories")
    for key in keys:
        if not isinstance(document.get(key), list):
            raise DatasetError(f"{path}: '{key}' is missing or not a list: expected a COCO instances file")
    for key in keys:
        if not document[key]:
            raise DatasetError(f"{path}: no {key}: the annotation file is empty; label and export again")
    return document


def _fields(item: object, types: dict[str, type | tuple[type, ...]], path: Path, what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DatasetError(f"{path}: {what}: expected an object, got {type(item).__name__}")
    for key, kind in types.items():
        value = item.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DatasetError(f"{path}: {what}: '{key}' is {value!r}, expected {_kind(kind)}")
    return item


def _kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {"int": "an integer", "str": "a string", "float": "a number", "list": "a list"}[k.__name__]
        for k in kinds
    )


def _categories(document: dict[str, Any], path: Path) -> dict[int, str]:
    categories: dict[int, str] = {}
    for i, item in enumerate(document["categories"]):
        c = _fields(item, {"id": int, "name": str}, path, f"categories[{i}]")
        if c["id"] in categories:
            raise DatasetError(f"{path}: category id {c['id']} appears twice")
        if c["name"] in categories.values():
            raise DatasetError(f"{path}: category name '{c['name']}' appears twice")
        categories[c["id"]] = c["name"]
    return categories


def _choose_classes(
    categories: dict[int, str], classes: Sequence[str] | None, path: Path
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Labels in model order: `classes` as given, else every category sorted by id (NanoDet's cat2label)."""
    by_name = {name: cat_id for cat_id, name in categories.items()}
    if classes is None:
        ids = tuple(sorted(categories))
        return tuple(categories[i] for i in ids), ids
    repeated = sorted({c for c in classes if list(classes).count(c) > 1})
    if repeated:
        raise DatasetError(f"--classes: {', '.join(repeated)} given twice")
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise DatasetError(
            f"--classes {', '.join(unknown)}: not a category of {path}; its categories: "
            f"{', '.join(categories[i] for i in sorted(categories))}"
        )
    return tuple(classes), tuple(by_name[c] for c in classes)


def _images(document: dict[str, Any], path: Path) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(document["images"]):
        image = _fields(
            item, {"id": int, "file_name": str, "width": int, "height": int}, path, f"images[{i}]"
        )
        if image["id"] in images:
            raise DatasetError(f"{path}: image id {image['id']} appears twice")
        if image["width"] <= 0 or image["height"] <= 0:
            raise DatasetError(
                f"{path}: image {image['id']} ({image['file_name']}): size {image['width']}x{image['height']}"
            )
        images[image["id"]] = image
    return images


def _image_folder(path: Path, first_file: str) -> Path:
    """Where the file names are relative to: the annotation file's folder, its parent, an images/
    folder in either, or COCO's own layout (annotations/instances_val2017.json → val2017/)."""
    here = path.parent
    candidates = [
        here,
        *(here / n for n in IMAGE_FOLDER_NAMES),
        here.parent,
        *(here.parent / n for n in IMAGE_FOLDER_NAMES),
    ]
    if path.stem.startswith("instances_"):
        candidates.insert(0, here.parent / path.stem.removeprefix("instances_"))
    for folder in candidates:
        if (folder / first_file).is_file():
            return folder
    raise DatasetError(
        f"{path}: cannot find image {first_file}: looked in {', '.join(str(c) for c in candidates)}; "
        "pass --images DIR"
    )


BoxLists = tuple[list[list[float]], list[int], list[list[float]]]


def _boxes_per_image(
    document: dict[str, Any],
    path: Path,
    images: dict[int, dict[str, Any]],
    categories: dict[int, str],
    class_of_category: dict[int, int],
) -> dict[int, BoxLists]:
    """Every annotation checked; those of the chosen classes grouped by image as (boxes, classes, crowd)."""
    boxes: dict[int, BoxLists] = {}
    seen: set[int] = set()
    for i, item in enumerate(document["annotations"]):
        ann = _fields(
            item, {"id": int, "image_id": int, "category_id": int, "bbox": list}, path, f"annotations[{i}]"
        )
        where = f"{path}: annotation {ann['id']}"
        if ann["id"] in seen:
            raise DatasetError(f"{where} appears twice")
        seen.add(ann["id"])
        image = images.get(ann["image_id"])
        if image is None:
            raise DatasetError(f"{where}: image_id {ann['image_id']} is not in images")
        if ann["category_id"] not in categories:
            raise DatasetError(
                f"{where} ({image['file_name']}): category_id {ann['category_id']} is not in categories "
                f"(ids {', '.join(map(str, sorted(categories)))})"
            )
        xyxy = _checked_box(ann["bbox"], image, where)
        class_id = class_of_category.get(ann["category_id"])
        if class_id is None:
            continue
        entry = boxes.setdefault(ann["image_id"], ([], [], []))
        if ann.get("iscrowd", 0):
            entry[2].append(xyxy)
        else:
            entry[0].append(xyxy)
            entry[1].append(class_id)
    return boxes


def _checked_box(bbox: list[Any], image: dict[str, Any], where: str) -> list[float]:
    """COCO [x, y, w, h] → [x1, y1, x2, y2] inside the image, or a DatasetError saying what is wrong."""
    name = f"{where} ({image['file_name']}, {image['width']}x{image['height']})"
    if len(bbox) != 4 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
    ):
        raise DatasetError(f"{name}: bbox {bbox} is not [x, y, width, height] numbers")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise DatasetError(f"{name}: bbox {bbox} has no area (width {w:g}, height {h:g})")
    width, height, tol = image["width"], image["height"], OUTSIDE_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise DatasetError(
            f"{name}: bbox {bbox} reaches outside the image (x {x:g}..{x + w:g}, y {y:g}..{y + h:g})"
        )
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    return [x1, y1, x2, y2]


def _sample(
    info: dict[str, Any], folder: Path, xyxy: list[list[float]], class_id: list[int], crowd: list[list[float]]
) -> Sample:
    return Sample(
        path=folder / info["file_name"],
        image_id=info["id"],
        width=info["width"],
        height=info["height"],
        xyxy=np.array(xyxy, np.float32).reshape(-1, 4),
        class_id=np.array(class_id, np.int64),
        crowd_xyxy=np.array(crowd, np.float32).reshape(-1, 4),
    )
