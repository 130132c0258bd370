"""Read NanoDet-Plus weights into our PyTorch model with strict key checking.

Accepted: a Lightning `.ckpt` (`state_dict` with `model.*` and EMA `avg_model.*` keys: the EMA
weights are used, as NanoDet's own `.pth` export does), a `.pth` (`{"state_dict": EMA weights}`),
a bare state dict, and a BN-folded official-format ONNX file (weights taken from its initializers).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from edgepipe.errors import ModelError

PREFIXES = ("avg_model.", "model.")  # preferred first: the EMA weights are the released ones
TRAINING_ONLY = ("aux_fpn.", "aux_head.")  # NanoDet-Plus AGM, unused at inference
# Constant buffers holding linspace(0, reg_max): the head computes nothing from them at export.
PROJECT_BUFFERS = ("head.distribution_project.project", "head.project")


def read_checkpoint(path: Path) -> Any:
    """The whole checkpoint object (Lightning dict, `.pth` dict or bare state dict), loaded safely."""
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist: check --checkpoint")
    return _torch_load(path)


def read_state_dict(path: Path) -> tuple[dict[str, Tensor], str]:
    """The raw tensors of a checkpoint and which part was taken (`avg_model`, `model`, `state_dict`)."""
    raw = read_checkpoint(path)
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ModelError(
            f"{path}: not a NanoDet checkpoint: expected a state dict of tensors, "
            "or a dict with one under 'state_dict'"
        )
    state = {str(k): v for k, v in raw.items()}
    for prefix in PREFIXES:
        chosen = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if chosen:
            return chosen, prefix.rstrip(".")
    return state, "state_dict"


def load_weights(model: nn.Module, path: Path) -> str:
    """Load a checkpoint (`.ckpt`, `.pth`, state dict, or BN-folded `.onnx`) into `model`; say what was used."""
    if path.suffix.lower() == ".onnx":
        load_onnx_weights(model, path)
        return "onnx initializers (BN folded)"
    state, part = read_state_dict(path)
    load_strict(model, state, str(path))
    return part


def load_strict(model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
    """Copy `state` into `model`; every key must match in name and shape (AGM keys are dropped)."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
    reg_max = int(getattr(model, "spec").reg_max)  # noqa: B009 - nn.Module hides attributes from mypy
    for key in PROJECT_BUFFERS:
        if key in state and key not in expected:
            project = state.pop(key)
            if project.shape != (reg_max + 1,) or not torch.equal(project, torch.arange(reg_max + 1.0)):
                raise ModelError(f"{origin}: {key} is not 0..{reg_max}: the checkpoint has another reg_max")
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ModelError(
            f"{origin}: checkpoint does not fit {model.__class__.__name__} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys): "
            f"missing {_some(missing)}; unexpected {_some(unexpected)}. Check --arch and the number of labels"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if v.shape != state[k].shape
    ]
    if wrong:
        raise ModelError(
            f"{origin}: {len(wrong)} tensors have the wrong shape (checkpoint vs model): {_some(wrong)}. "
            "Check --arch and the number of labels"
        )
    model.load_state_dict(state, strict=True)


def load_onnx_weights(model: nn.Module, path: Path) -> None:
    """Weights from an official-format ONNX with BN folded into the convolutions.

    The convs are matched in execution order (the exporter writes nodes in that order); each BN is
    set to the identity and the folded bias goes to it, so the PyTorch output equals the ONNX one.
    """
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # onnx raises DecodeError, OSError, ... for a damaged file
        raise ModelError(f"{path}: cannot read the ONNX file: {error}") from None
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    onnx_convs = [n for n in graph.node if n.op_type == "Conv"]
    convs = _convs_in_execution_order(model)
    if len(onnx_convs) != len(convs):
        raise ModelError(f"{path}: {len(onnx_convs)} convolutions, the model has {len(convs)}: check --arch")
    with torch.no_grad():
        for i, (node, (conv, bn)) in enumerate(zip(onnx_convs, convs, strict=True)):
            weight = initializers.get(node.input[1])
            bias = initializers.get(node.input[2]) if len(node.input) > 2 else None
            if weight is None or tuple(weight.shape) != tuple(conv.weight.shape):
                got = None if weight is None else tuple(weight.shape)
                raise ModelError(f"{path}: conv {i} ({node.name}) has weight {got}, model wants "
                                 f"{tuple(conv.weight.shape)}: check --arch")  # fmt: skip
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            folded_bias = torch.zeros(conv.out_channels) if bias is None else torch.from_numpy(bias.copy())
            if bn is None:
                if conv.bias is None:
                    raise ModelError(f"{path}: conv {i} ({node.name}) has a bias the model has no place for")
                conv.bias.copy_(folded_bias)
            else:
                bn.weight.fill_(1.0)
                cast(Tensor, bn.running_mean).zero_()
                cast(Tensor, bn.running_var).fill_(1.0 - bn.eps)  # so that sqrt(var + eps) is exactly 1
                bn.bias.copy_(folded_bias)


def _convs_in_execution_order(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each conv with the BN that directly follows it in its block (None for the output convs)."""
    follower: dict[int, nn.BatchNorm2d] = {}
    for module in model.modules():
        children = list(module.named_children())
        names = dict(children)
        for name, child in children:
            if not isinstance(child, nn.Conv2d):
                continue
            bn = {"depthwise": "dwnorm", "pointwise": "pwnorm", "conv": "bn"}.get(name)
            if bn is None and name.isdigit():
                bn = str(int(name) + 1)  # nn.Sequential: conv at i, BN at i + 1
            if bn is not None and isinstance(names.get(bn), nn.BatchNorm2d):
                follower[id(child)] = names[bn]  # type: ignore[assignment]
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda m, _i, _o: order.append(m))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    size = 2 * max(getattr(model, "spec").strides)  # noqa: B009
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return [(conv, follower.get(id(conv))) for conv in order]


def _some(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# ---------------------------------------------------------------- safe loading
def _torch_load(path: Path) -> Any:
    """torch.load without running pickled code.

    Lightning checkpoints also pickle training objects (NanoDet's config, callbacks) that PyTorch's
    weights-only loader refuses. For those, a second pass replaces every class outside PyTorch's own
    weights-only allowlist with an inert stand-in, so nothing named in the file is imported or run.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise _corrupt(path, error) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise _corrupt(path, error) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_InertPickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError) as error:
        raise _corrupt(path, error) from None


class _StandIn(dict):  # type: ignore[type-arg]  # a dict so that pickled dict subclasses can fill it
    """Accepts any construction, state, items and appends, and does nothing with them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()

    def __setstate__(self, state: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = _get_allowed_globals()
        qualified = f"{module}.{name}"
        if qualified in allowed:
            return allowed[qualified]
        return type(f"StandIn[{qualified}]", (_StandIn,), {})


class _InertPickle:
    """A `pickle_module` for torch.load whose unpickling never imports what the file names."""

    Unpickler = _InertUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:  # torch's legacy format reads its header with this
        return _InertUnpickler(file, **kwargs).load()


def _corrupt(path: Path, error: BaseException) -> ModelError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelError(
        f"{path}: cannot read the checkpoint ({first_line}): the file is damaged or not a PyTorch "
        "checkpoint; download it again"
    )
