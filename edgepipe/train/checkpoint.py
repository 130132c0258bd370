"""Training checkpoints: official NanoDet `.ckpt` layout plus what a resumed run needs.

`state_dict` holds `model.*` (the trained weights) and `avg_model.*` (their EMA, the weights that
are evaluated and exported), AGM keys included, as a Lightning checkpoint of RangiLyu/nanodet:
`edgepipe export --checkpoint` and NanoDet's own tools read it. Beside it: the epoch and step, the
optimizer state and, under `edgepipe`, the labels, architecture, recipe and history. Written to a
temporary file and renamed, so an interrupt never leaves half a checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edgepipe.errors import ConfigError, ModelError
from edgepipe.train.recipe import Recipe

FORMAT = 1
LAST = "model_last.ckpt"
BEST = "model_best.ckpt"
PROJECT_KEY = "head.distribution_project.project"  # NanoDet's Integral buffer, 0..reg_max


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a checkpoint says about its run."""

    arch: str
    input_size: int
    labels: tuple[str, ...]
    recipe: Recipe
    init: str  # where the run started
    agm_is_new: bool  # the start had no AGM weights (see Recipe.assign_guide)


@dataclass(slots=True)
class TrainingState:
    """Everything that changes while training, as saved after each epoch."""

    epoch: int  # epochs completed
    step: int  # optimiser steps completed
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]
    best_map: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def save(path: Path, info: RunInfo, state: TrainingState, reg_max: int) -> None:
    project = torch.arange(reg_max + 1, dtype=torch.float32)
    weights = {f"model.{k}": v for k, v in state.model.items()}
    weights |= {f"avg_model.{k}": v for k, v in state.ema.items()}
    weights |= {f"model.{PROJECT_KEY}": project, f"avg_model.{PROJECT_KEY}": project.clone()}
    checkpoint = {
        "state_dict": weights,
        "epoch": state.epoch,
        "global_step": state.step,
        "optimizer_states": [state.optimizer],
        "edgepipe": {
            "format": FORMAT, "arch": info.arch, "input_size": info.input_size, "labels": list(info.labels),
            "recipe": info.recipe.model_dump(mode="json"), "init": info.init, "agm_is_new": info.agm_is_new,
            "best_map": state.best_map, "history": state.history,
        },
    }  # fmt: skip
    partial = path.with_name(f".{path.name}.partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def load(path: Path) -> tuple[RunInfo, TrainingState]:
    """A checkpoint written by `save` (for --resume)."""
    from edgepipe.export.checkpoint import read_checkpoint

    raw = read_checkpoint(path)
    meta = raw.get("edgepipe") if isinstance(raw, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(
            f"{path}: not a checkpoint of `edgepipe train` (format {FORMAT}): cannot resume from it"
        )
    weights: dict[str, Tensor] = raw["state_dict"]
    info = RunInfo(
        arch=meta["arch"], input_size=int(meta["input_size"]), labels=tuple(meta["labels"]),
        recipe=Recipe.model_validate(meta["recipe"]), init=meta["init"], agm_is_new=bool(meta["agm_is_new"]),
    )  # fmt: skip
    state = TrainingState(
        epoch=int(raw["epoch"]),
        step=int(raw["global_step"]),
        model=_part(weights, "model."),
        ema=_part(weights, "avg_model."),
        optimizer=raw["optimizer_states"][0],
        best_map=meta["best_map"],
        history=list(meta["history"]),
    )
    return info, state


def check_resumable(saved: RunInfo, wanted: RunInfo, path: Path) -> None:
    """A resumed run must be the interrupted one: same model, classes and recipe."""
    differences = [
        f"{name} {a} vs {b}"
        for name, a, b in (
            ("--arch", saved.arch, wanted.arch),
            ("--size", saved.input_size, wanted.input_size),
            ("classes", ",".join(saved.labels), ",".join(wanted.labels)),
        )
        if a != b
    ]
    old, new = saved.recipe.model_dump(), wanted.recipe.model_dump()
    differences += [f"{k} {old[k]} vs {new[k]}" for k in old if old[k] != new[k]]
    if differences:
        raise ConfigError(
            f"--resume: {path} is another run ({'; '.join(differences)}, saved vs asked): "
            "repeat the interrupted command, or choose a new --out"
        )


def _part(weights: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {
        k.removeprefix(prefix): v
        for k, v in weights.items()
        if k.startswith(prefix) and not k.endswith(PROJECT_KEY)
    }
