"""Class names: where a name a user writes (`classes:` of the detector or a rule, training labels)
is found among a model's labels.

COCO's 80 classes come spelt two ways. COCO's own spelling (`motorcycle`, `airplane`, `couch`,
`potted plant`, `dining table`, `tv`) is NanoDet's `class_names`, so models that edgepipe exports or
trains carry it; Darknet's coco.names (`motorbike`, `aeroplane`, `sofa`, `pottedplant`,
`diningtable`, `tvmonitor`) is what the fetched official IRs carry. Either spelling finds the class
in either model, so a pipeline file keeps working when its model is swapped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from edgepipe.errors import FieldError

# (COCO's spelling, Darknet's): the only six of the 80 that differ
COCO_SPELLINGS = (
    ("motorcycle", "motorbike"),
    ("airplane", "aeroplane"),
    ("couch", "sofa"),
    ("potted plant", "pottedplant"),
    ("dining table", "diningtable"),
    ("tv", "tvmonitor"),
)
_OTHER_SPELLING = {a: b for a, b in COCO_SPELLINGS} | {b: a for a, b in COCO_SPELLINGS}


def label_index(name: str, labels: Sequence[str]) -> int | None:
    """Where `name` (or its other COCO spelling) is in `labels`; None if it is not."""
    if name in labels:
        return labels.index(name)
    other = _OTHER_SPELLING.get(name)
    if other is not None and other in labels:
        return labels.index(other)
    return None


def spelt_as_in(name: str, labels: Sequence[str]) -> str:
    """`name` as `labels` spell it (e.g. `motorcycle` → `motorbike` in a coco.names model); a name
    the labels lack is returned as it is."""
    index = label_index(name, labels)
    return name if index is None else labels[index]


def class_ids(names: Iterable[str], labels: Sequence[str]) -> list[int]:
    """The indices of `names` in a model's `labels`, in the order given; a FieldError on `classes`
    that names every unknown one and the model's own names."""
    wanted = list(names)
    found = [label_index(name, labels) for name in wanted]
    unknown = [name for name, index in zip(wanted, found, strict=True) if index is None]
    if unknown:
        raise FieldError(
            ("classes",), f"unknown class name(s) {', '.join(unknown)}; valid names: {', '.join(labels)}"
        )
    return [index for index in found if index is not None]
