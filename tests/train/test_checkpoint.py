"""Training checkpoints: official keys, strict loading by `edgepipe export`, resume state."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the export extra: pip install 'edgepipe[train]'")

from edgepipe.errors import ConfigError, ModelError  # noqa: E402
from edgepipe.export.arch import ARCHS  # noqa: E402
from edgepipe.export.checkpoint import load_weights, read_state_dict  # noqa: E402
from edgepipe.export.model import NanoDetPlus, randomize  # noqa: E402
from edgepipe.train import checkpoint  # noqa: E402
from edgepipe.train.checkpoint import RunInfo, TrainingState  # noqa: E402
from edgepipe.train.model import TrainingModel  # noqa: E402
from edgepipe.train.recipe import Recipe  # noqa: E402

pytestmark = pytest.mark.slow  # needs torch
M = ARCHS["nanodet-plus-m"]
INFO = RunInfo("nanodet-plus-m", 320, ("person", "door"), Recipe(epochs=3), "test", agm_is_new=True)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, TrainingModel, TrainingModel]:
    trained, averaged = TrainingModel(M, 2), TrainingModel(M, 2)
    randomize(trained, seed=1)  # type: ignore[arg-type]
    randomize(averaged, seed=2)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-3)
    state = TrainingState(epoch=2, step=14, model=trained.state_dict(), ema=averaged.state_dict(),
                          optimizer=optimizer.state_dict(), best_map=0.25, history=[{"epoch": 1.0, "mAP": 0.25}])  # fmt: skip
    path = tmp_path / checkpoint.LAST
    checkpoint.save(path, INFO, state, M.reg_max)
    return path, trained, averaged


def test_layout_is_a_lightning_nanodet_checkpoint(saved: tuple[Path, TrainingModel, TrainingModel]) -> None:
    path, _, _ = saved
    raw = torch.load(path, weights_only=True)  # nothing but tensors and plain values: loads safely
    keys = raw["state_dict"].keys()
    assert sum(k.startswith("model.") for k in keys) == sum(k.startswith("avg_model.") for k in keys) == 887
    assert {"model.aux_head.gfl_cls.weight", "avg_model.aux_fpn.reduce_layers.0.conv.weight",
            "avg_model.head.distribution_project.project"} <= keys  # fmt: skip
    assert (raw["epoch"], raw["global_step"]) == (2, 14)
    assert not list(path.parent.glob(".*partial"))


def test_export_loads_the_ema_weights_with_strict_keys_and_without_the_agm(
    saved: tuple[Path, TrainingModel, TrainingModel],
) -> None:
    path, _, averaged = saved
    state, part = read_state_dict(path)
    assert part == "avg_model" and any(k.startswith("aux_head.") for k in state)
    deploy = NanoDetPlus(M, num_classes=2)
    assert load_weights(deploy, path) == "avg_model"  # strict: every deploy key, no AGM key
    assert not any(k.startswith(("aux_fpn.", "aux_head.")) for k in deploy.state_dict())
    expected = averaged.deploy_model().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in deploy.state_dict().items())


def test_export_refuses_a_checkpoint_of_another_class_count(
    saved: tuple[Path, TrainingModel, TrainingModel],
) -> None:
    with pytest.raises(
        ModelError, match=r"8 tensors have the wrong shape .*Check --arch and the number of labels"
    ):
        load_weights(NanoDetPlus(M, num_classes=80), saved[0])


def test_resume_state_round_trips(saved: tuple[Path, TrainingModel, TrainingModel]) -> None:
    path, trained, averaged = saved
    info, state = checkpoint.load(path)
    assert info == INFO
    assert (state.epoch, state.step, state.best_map, state.history) == (
        2,
        14,
        0.25,
        [{"epoch": 1.0, "mAP": 0.25}],
    )
    assert all(torch.equal(v, state.model[k]) for k, v in trained.state_dict().items())
    assert all(torch.equal(v, state.ema[k]) for k, v in averaged.state_dict().items())
    assert state.optimizer["param_groups"][0]["lr"] == 1e-3


def test_resuming_another_run_is_refused(saved: tuple[Path, TrainingModel, TrainingModel]) -> None:
    path, _, _ = saved
    other = RunInfo("nanodet-plus-m", 416, ("person", "door"), Recipe(epochs=5), "test", agm_is_new=True)
    with pytest.raises(
        ConfigError,
        match=r"--resume: .*model_last\.ckpt is another run \(--size 320 vs 416; epochs 3 vs 5, saved vs asked\)",
    ):
        checkpoint.check_resumable(checkpoint.load(path)[0], other, path)


def test_a_foreign_checkpoint_cannot_be_resumed(tmp_path: Path) -> None:
    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, path)
    with pytest.raises(ModelError, match=r"not a checkpoint of `edgepipe train`"):
        checkpoint.load(path)
