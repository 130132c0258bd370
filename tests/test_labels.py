"""Class names found among a model's labels in either COCO spelling, with one error for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.errors import FieldError
from edgepipe.export.arch import COCO_LABELS
from edgepipe.labels import COCO_SPELLINGS, class_ids, label_index, spelt_as_in
from edgepipe.modelcard import DEFAULT_LABELS_FILE
from tests.fixtures.model import make_detector

DARKNET = ("person", "bicycle", "car", "motorbike", "aeroplane")  # how coco.names starts


@pytest.mark.parametrize(
    ("name", "labels", "index"),
    [
        ("motorbike", DARKNET, 3),
        ("motorcycle", DARKNET, 3),  # COCO's spelling in a Darknet-spelt model
        ("aeroplane", COCO_LABELS, 4),  # and the other way round
        ("person", DARKNET, 0),
        ("unicorn", DARKNET, None),
        ("tv", DARKNET, None),  # a known spelling, but the model has neither
    ],
)
def test_a_name_is_found_in_either_coco_spelling(
    name: str, labels: tuple[str, ...], index: int | None
) -> None:
    assert label_index(name, labels) == index


def test_a_name_is_spelt_as_the_model_spells_it() -> None:
    assert [spelt_as_in(n, DARKNET) for n in ("motorcycle", "airplane", "person", "unicorn")] == [
        "motorbike",
        "aeroplane",
        "person",
        "unicorn",
    ]


def test_the_spellings_are_the_ones_that_differ_between_the_two_coco_lists(shared_models: Path) -> None:
    darknet = (shared_models / DEFAULT_LABELS_FILE).read_text().split("\n")[:80]
    differ = {(coco, dark) for coco, dark in zip(COCO_LABELS, darknet, strict=True) if coco != dark}
    assert differ == set(COCO_SPELLINGS)


def test_class_ids_keep_the_order_given_and_name_every_unknown_one() -> None:
    assert class_ids(["car", "motorcycle", "person"], DARKNET) == [2, 3, 0]
    with pytest.raises(FieldError) as error:
        class_ids(["persn", "car", "unicorn"], DARKNET)
    assert error.value.field == ("classes",)
    assert error.value.message == (
        "unknown class name(s) persn, unicorn; valid names: person, bicycle, car, motorbike, aeroplane"
    )


def test_the_default_model_takes_coco_spellings_in_classes(shared_models: Path) -> None:
    detector = make_detector(
        shared_models / "nanodet-plus-m_320_fp16.xml", classes=["motorcycle", "airplane"]
    )
    assert "motorbike" in detector.labels  # the fetched IR's card is spelt as coco.names
    mask = detector.decode_settings.class_mask
    assert mask is not None
    assert [detector.labels[i] for i in mask.nonzero()[0]] == ["motorbike", "aeroplane"]
