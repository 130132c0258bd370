"""Decoders by architecture: the model card's `arch` picks the module that knows its outputs.

A second family (PicoDet, YOLOX) is one module with a class that meets `Decoder`, one entry in
`DECODERS` and its models in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable

from edgepipe.detect.decoders.base import Decoder, DecodeSettings, GraphDecode
from edgepipe.detect.decoders.nanodet_plus import NanoDetPlusDecoder
from edgepipe.errors import ModelError
from edgepipe.modelcard import ModelCard

__all__ = ["DECODERS", "DecodeSettings", "Decoder", "GraphDecode", "NanoDetPlusDecoder", "decoder_for"]

# card.arch → the decoder of that family
DECODERS: dict[str, Callable[[ModelCard], Decoder]] = {
    "nanodet-plus": NanoDetPlusDecoder,
    "nanodet-plus-m": NanoDetPlusDecoder,
    "nanodet-plus-m-1.5x": NanoDetPlusDecoder,
}


def decoder_for(card: ModelCard, origin: str) -> Decoder:
    """The decoder for a model's card; an unknown architecture is a ModelError naming `origin`."""
    make = DECODERS.get(card.arch)
    if make is None:
        raise ModelError(
            f"{origin}: architecture {card.arch!r} (model card 'arch') has no decoder; "
            f"known: {', '.join(sorted(DECODERS))}"
        )
    return make(card)
