"""Where a model runs: read IR/ONNX, fold preprocessing into it, compile for a device, infer async.

Knows nothing about GFL or NanoDet: it turns a raw BGR uint8 frame into the model's output arrays
(the decoder's own, when the decoder appended its operations: decoders/base.GraphDecode).
A frame is resized into the request's input on the host (`frame_into`, OpenCV: measured far cheaper
than OpenVINO's Interpolate); layout, channel order and mean/std are part of the compiled model
(PrePostProcessor). `ModelPool` keeps one `ov.Core` and one compiled model per (path, device,
precision, hint, preprocessing, decode, frame size) for the whole process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from edgepipe.config import MODEL_SUFFIXES, PerformanceHint, Precision
from edgepipe.detect import model_cache
from edgepipe.detect.decoders.base import GraphDecode
from edgepipe.errors import ConfigError, FieldError, ModelError
from edgepipe.modelcard import ModelCard, resolve_card
from edgepipe.models import sha256_of
from edgepipe.paths import model_cache_directory

log = logging.getLogger(__name__)

# "auto" leaves the precision to OpenVINO: bf16 on CPUs that have it, f32 elsewhere. Measured on this
# 2-core AVX512-BF16 EPYC with nanodet-plus-m_416 (edgepipe bench detector): bf16 ran ~1.7x faster
# than f32 and COCO-subset mAP moved by +0.002 (416) / -0.005 (320); exactness tests ask for "f32".
MAX_COMPILED = 16  # compiled models kept per pool (one per model file and settings; letterbox: aspect ratio)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Preprocess:
    """What the compiled model does to a BGR uint8 NHWC image of the network's size (a frame
    resized into its input by `frame_into`) before the network sees it."""

    layout: Literal["NCHW", "NHWC"]  # the network input's layout
    normalize: bool  # float network: convert to f32, subtract mean_bgr, divide by std_bgr
    mean_bgr: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgb: bool = False  # the network wants RGB order: reverse the channels


@dataclass(frozen=True, slots=True)
class ModelShapes:
    """The network's own input and outputs, as read from the file (before preprocessing)."""

    input_shape: tuple[int, ...]
    input_type: str  # "f32", "f16", "u8", ...
    output_shapes: tuple[tuple[int, ...], ...]
    rt_info: dict[str, str]  # rt_info["model_info"] entries, empty if none


def _resolve_device(core: Any, device: str) -> str:
    """Check that the device (or every device in AUTO:/MULTI:/HETERO: lists) exists here."""
    available = list(core.available_devices)
    base, _, listed = device.partition(":")
    wanted = [d for d in listed.split(",") if d] if base in ("AUTO", "MULTI", "HETERO") else [device]
    if base == "AUTO" and not wanted:
        return device
    for name in wanted:
        if name not in available and name.split(".")[0] not in {a.split(".")[0] for a in available}:
            raise FieldError(
                ("device",),
                f"device {name!r} is not available on this machine; available: "
                f"{', '.join(available) or 'none'} (or AUTO). Set device to one of them.",
            )
    return device


def _compile_config(device: str, precision: Precision, hint: PerformanceHint) -> dict[str, str]:
    config = {"PERFORMANCE_HINT": hint.upper()}
    if precision != "auto" and device.split(".")[0] in ("CPU", "GPU"):  # AUTO/NPU reject this key
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def _rt_model_info(model: Any) -> dict[str, str]:
    if not model.has_rt_info(["model_info"]):
        return {}
    info = model.get_rt_info(["model_info"])
    try:
        items = info.astype(dict) if hasattr(info, "astype") else dict(info)
    except Exception:  # an rt_info node that is not a map: ignore it like an absent one
        return {}
    return {str(k): str(v.astype(str) if hasattr(v, "astype") else v) for k, v in items.items()}


def _ov_message(error: Exception) -> str:
    """The useful line of an OpenVINO error, whose text starts with lines of C++ source locations."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception from ")]
    text = (useful or lines or [type(error).__name__])[0]
    return text if len(text) <= 300 else text[:297] + "..."


class ModelPool:
    """One `ov.Core` and its compiled models, one for every pipeline of a process.

    With `cache` (the default) OpenVINO keeps what it compiles under `paths.model_cache_directory()`
    and a later process imports it instead of compiling (the same network, the same results), and
    compiles again over a damaged or unwritable cache; beyond its bound the least recently used
    models are removed (model_cache.evict). Each compiled model has a folder of its own,
    named by everything that makes it (`_cache_folder`): OpenVINO's own key for a model built in
    Python did not tell apart networks that differ in a decode threshold, nor f32 from the
    default bf16 (2026.4: it handed one the other's)."""

    def __init__(self, *, cache: bool = True) -> None:
        self._cache = cache
        self._core: Any = None
        self._read: dict[Path, Any] = {}
        self._digests: dict[Path, str] = {}  # model file → sha256 of its contents, for the cache
        self._compiled: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    @property
    def core(self) -> Any:
        if self._core is None:
            import openvino as ov

            self._core = ov.Core()
        return self._core

    def available_devices(self) -> list[str]:
        return list(self.core.available_devices)

    def check_device(self, device: str) -> None:
        """ConfigError unless the device (or each device of an AUTO:/MULTI:/HETERO: list) is here."""
        _resolve_device(self.core, device)

    def read(self, path: Path) -> Any:
        """The ov.Model of a file, read once; a missing or unreadable file is a ModelError."""
        path = Path(path)
        with self._lock:
            if path not in self._read:
                self._read[path] = self._read_file(path)
            return self._read[path]

    def _read_file(self, path: Path) -> Any:
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist: give an OpenVINO IR (.xml) or ONNX path")
        if path.suffix not in MODEL_SUFFIXES:
            raise ModelError(f"model file {path} is not .xml (OpenVINO IR) or .onnx")
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise ModelError(
                f"model file {path} has no weights file {path.with_suffix('.bin').name} beside it"
            )
        try:
            return self.core.read_model(str(path))
        except Exception as error:
            raise ModelError(
                f"cannot read model {path}: {_ov_message(error)} Is it a complete OpenVINO IR (.xml + .bin) "
                "or ONNX file?"
            ) from None

    def shapes(self, path: Path) -> ModelShapes:
        model = self.read(path)
        if len(model.inputs) != 1:
            raise ModelError(f"{path}: expected 1 input, found {len(model.inputs)}")
        inp = model.inputs[0]
        if inp.get_partial_shape().is_dynamic:
            raise ModelError(
                f"{path}: input shape {inp.get_partial_shape()} is dynamic; export with a fixed size"
            )
        return ModelShapes(
            input_shape=tuple(int(d) for d in inp.get_shape()),
            input_type=inp.get_element_type().get_type_name(),
            output_shapes=tuple(
                tuple(int(d) for d in o.get_partial_shape().get_min_shape()) for o in model.outputs
            ),
            rt_info=_rt_model_info(model),
        )

    def card(self, path: Path) -> ModelCard:
        """What the model file means (labels, input, architecture), read without compiling it."""
        shapes = self.shapes(path)
        return resolve_card(path, shapes.rt_info, shapes.input_shape, shapes.input_type)

    def _cache_folder(self, path: Path, settings: tuple[Any, ...]) -> Path | None:
        """The cache folder of one compiled model: named by the model file's contents, the compile
        settings (plain frozen dataclasses and strings, so their repr is exact) and OpenVINO's
        version (model_cache.folder_for). None where there is no cache, or the file cannot be read
        or the folder made (then the model is compiled without a cache)."""
        root = model_cache_directory()
        if root is None:
            return None
        try:
            if path not in self._digests:
                self._digests[path] = _file_digest(path)
        except OSError as error:
            log.debug("not caching %s: %s", path, error.strerror)
            return None
        import openvino as ov

        return model_cache.folder_for(
            root, repr((self._digests[path], settings, ov.get_version())), path.name
        )

    def compile(
        self,
        path: Path,
        preprocess: Preprocess,
        *,
        device: str,
        precision: Precision,
        performance_hint: PerformanceHint,
        graph_decode: GraphDecode | None = None,
    ) -> Any:
        """The compiled model for these settings, built on first use and then reused, for frames
        of any size: the input is the network's own size (frames are resized into it:
        `frame_into`); with `graph_decode` the outputs are the decoded ones (the decoder's
        operations appended), in input pixels. (A dynamic-shape input is avoided: OpenVINO
        2026.4's CPU plugin corrupted memory when async requests ran after others.)"""
        path = Path(path)
        config = _compile_config(device, precision, performance_hint)
        key = (
            path.resolve(),
            device,
            config.get("INFERENCE_PRECISION_HINT"),
            performance_hint,
            preprocess,
            graph_decode,
        )
        model = self.read(path)
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
            _resolve_device(self.core, device)
            network = model.clone()  # preprocessing and decode change the model: the pool keeps the file's
            if graph_decode is not None:
                network = graph_decode.append_to(network)
            with_pre = _add_preprocessing(network, preprocess)
            folder = self._cache_folder(path, key[1:]) if self._cache else None
            try:
                compiled = self.core.compile_model(
                    with_pre, device, config if folder is None else {**config, "CACHE_DIR": str(folder)}
                )
            except Exception as error:
                raise ConfigError(
                    f"cannot compile {path} for {device} with {config}: {_ov_message(error)}"
                ) from None
            imported = _from_cache(compiled)
            log.info(
                "compiled %s for %s, %s%s", path.name, device, config, " (from the cache)" if imported else ""
            )
            if folder is not None and not imported:  # the cache grew: keep it within its bound
                model_cache.evict(folder.parent, keep=folder)
            self._compiled[key] = compiled
            if len(self._compiled) > MAX_COMPILED:  # ever-new aspect ratios (letterbox) must not grow memory
                self._compiled.popitem(last=False)
            return compiled


def _file_digest(path: Path) -> str:
    """The sha256 of a model file and, for an IR, of its weights: a retrained model at the same
    path is another model."""
    parts = (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,)
    return "+".join(sha256_of(part) for part in parts)


def _from_cache(compiled: Any) -> bool:
    """Whether OpenVINO imported the compiled model from its cache (False where a device cannot say)."""
    try:
        return bool(compiled.get_property("LOADED_FROM_CACHE"))
    except Exception:
        return False


def _add_preprocessing(model: Any, pre: Preprocess) -> Any:
    """BGR→RGB if wanted, u8→f32 and mean/std, NHWC→layout, inside the model; its input is a u8
    NHWC BGR image of the network's own size (`frame_into` resizes frames into it)."""
    from openvino import Layout, Type
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    tensor = ppp.input().tensor()
    tensor.set_element_type(Type.u8).set_layout(Layout("NHWC"))
    tensor.set_color_format(ColorFormat.BGR)
    steps = ppp.input().preprocess()
    if pre.rgb:
        steps.convert_color(ColorFormat.RGB)
    if pre.normalize:
        # mean/std are given in BGR order; after a swap the channels are R, G, B
        mean, std = list(pre.mean_bgr), list(pre.std_bgr)
        if pre.rgb:
            mean.reverse()
            std.reverse()
        steps.convert_element_type(Type.f32).mean(mean).scale(std)
    ppp.input().model().set_layout(Layout(pre.layout))
    return ppp.build()


def frame_into(image: NDArray[np.uint8], target: NDArray[np.uint8], inner_hw: tuple[int, int] | None) -> None:
    """Resize a (1, H, W, 3) BGR frame into a request's (1, S, S, 3) input: stretched over all of
    it, or (letterbox) into its top-left `inner_hw`, the rest black.

    On the host with OpenCV (bilinear, pixel centres aligned, as the official NanoDet demos), not in
    the graph: OpenVINO 2026.4's Interpolate took 3.8 of a 22.6 ms inference of the 416 model on a
    480x360 frame (bf16, one thread; the whole preprocessing ~6 ms), cv2.resize 0.28 ms."""
    side_h, side_w = target.shape[1], target.shape[2]
    inner_h, inner_w = (side_h, side_w) if inner_hw is None else inner_hw
    region = target[0, :inner_h, :inner_w]
    if image.shape[1] == inner_h and image.shape[2] == inner_w:
        np.copyto(region, image[0])
    else:
        resized = cv2.resize(image[0], (inner_w, inner_h), dst=region, interpolation=cv2.INTER_LINEAR)
        if resized is not region:  # OpenCV could not write in place: copy what it made
            np.copyto(region, resized)
    if inner_h < side_h:
        target[0, inner_h:] = 0
    if inner_w < side_w:
        target[0, :inner_h, inner_w:] = 0


def check_image(image: NDArray[np.uint8], where: str) -> NDArray[np.uint8]:
    """A (H, W, 3) uint8 BGR image → (1, H, W, 3) C-contiguous; anything else is a ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{where}: image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(f"{where}: image is grayscale {image.shape}; convert it to BGR (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: image has shape {image.shape}; expected BGR (H, W, 3) with 3 channels")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{where}: image is empty (size {image.shape[1]}x{image.shape[0]})")
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: image dtype is {image.dtype}; expected uint8")
    return np.ascontiguousarray(image)[None]  # (1, H, W, 3): the batch axis the model input has


Outputs = tuple[NDArray[np.float32], ...]


def _outputs(request: Any) -> Outputs:
    """Views of all output tensors of a finished request: valid until it runs again."""
    return tuple(request.get_output_tensor(i).data for i in range(len(request.model_outputs)))


def infer_one(request: Any, image: NDArray[np.uint8], inner_hw: tuple[int, int] | None = None) -> Outputs:
    """Synchronous inference on one (1, H, W, 3) BGR frame with an infer request (the frame resized
    into its input: `frame_into`) → views of its outputs, valid until the request runs again."""
    frame_into(image, request.get_input_tensor(0).data, inner_hw)
    request.infer()
    return _outputs(request)


def infer_stream(
    model_for: Callable[[tuple[int, int]], Any],
    in_flight: Callable[[], int],
    items: Iterable[T | None],
    image_of: Callable[[T], NDArray[np.uint8]],
    frame_waiting: Callable[[], bool] | None = None,
    inner_hw_for: Callable[[tuple[int, int]], tuple[int, int] | None] = lambda frame_hw: None,
) -> Iterator[tuple[T, Outputs] | None]:
    """Run `image_of(item)` (1, H, W, 3) through `in_flight()` async requests of the compiled model
    `model_for((H, W))` gives; yield (item, outputs) in input order. The outputs are views into the
    request, valid until the next item is pulled (use them, or copy them, before that: this saves a
    copy per frame). A None item (nothing arrived for a while) finishes the requests in flight and
    is yielded as None.

    No Python completion callback: the caller's thread waits for the oldest request, reads its
    outputs and reuses it, so inference errors surface here. (A Python callback, as with
    AsyncInferQueue.set_callback, made interpreter exit hang: OpenVINO's executor thread waited for
    the GIL while the main thread, holding it, joined that thread in ~CompiledModel.)
    When the frame size changes to one another compiled model takes (with letterbox: another aspect
    ratio), the requests in flight are drained before the new model's take over; frames of any size
    that the same model takes keep the same requests, pipelined. When `items` ends, or
    `items`/`image_of` raise, the requests in flight are drained and their results yielded first
    (then the error is raised).

    `frame_waiting` (live sources): while it says the next item is not there yet, the oldest
    request is finished and yielded instead of blocking in next(items) with a result ready, so a
    camera faster than the detector costs no extra frame of latency; when frames are always
    waiting (a detector slower than the camera, or a file) requests stay pipelined."""
    pending: deque[tuple[T, Any]] = deque()  # (item, request), oldest first
    free: list[Any] = []
    frame_hw_now: tuple[int, int] | None = None  # the size of the frames until now
    model: Any = None  # the compiled model the requests belong to
    inner_hw: tuple[int, int] | None = None  # letterbox: where the frame goes in the input
    failure: Exception | None = None

    def finish_oldest() -> tuple[T, Outputs]:
        item, request = pending.popleft()
        request.wait()  # releases the GIL; raises here if the inference failed
        free.append(request)  # reused only by a start_async after the caller pulls the next item
        return item, _outputs(request)

    source = iter(items)
    try:
        while True:
            try:
                item = next(source)
                image = image_of(item) if item is not None else None
            except StopIteration:
                break
            except Exception as error:  # a bad frame or a failing source: first deliver the ones before it
                failure = error
                break
            if item is None or image is None:
                while pending:
                    yield finish_oldest()
                yield None
                continue
            frame_hw = (int(image.shape[1]), int(image.shape[2]))
            if frame_hw != frame_hw_now:
                takes = model_for(frame_hw)
                if takes is not model:
                    while pending:
                        yield finish_oldest()
                    model = takes
                    free[:] = [model.create_infer_request() for _ in range(in_flight())]
                frame_hw_now, inner_hw = frame_hw, inner_hw_for(frame_hw)
            if not free:
                yield finish_oldest()
            request = free.pop()
            # Resize the frame into the request's own input tensor: start_async({0: image}) took ~0.7 ms
            # per frame of main-thread CPU (a new tensor bound each time). Sharing the frame's
            # memory instead corrupted other requests' results (OpenVINO 2026.4 CPU).
            frame_into(image, request.get_input_tensor(0).data, inner_hw)
            request.start_async()
            pending.append((item, request))
            while pending and pending[0][1].wait_for(0):  # deliver what is already done
                yield finish_oldest()
            while pending and frame_waiting is not None and not frame_waiting():
                yield finish_oldest()
        while pending:
            yield finish_oldest()
        if failure is not None:
            raise failure
    finally:
        for _, request in pending:  # the caller stopped early: never leave requests running
            with contextlib.suppress(Exception):
                request.wait()
