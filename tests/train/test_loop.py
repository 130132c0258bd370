"""The training loop: same seed same weights, an interrupted run resumes exactly, the loss goes down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the export extra: pip install 'edgepipe[train]'")

from edgepipe.train import checkpoint, loop  # noqa: E402
from edgepipe.train.checkpoint import RunInfo  # noqa: E402
from edgepipe.train.dataset import DetectionSet, load_coco  # noqa: E402
from edgepipe.train.model import TrainingModel  # noqa: E402
from edgepipe.train.recipe import Recipe  # noqa: E402
from edgepipe.train.reports import EpochReport  # noqa: E402
from edgepipe.train.start import StartWeights, build_model, read_start  # noqa: E402

pytestmark = pytest.mark.slow  # trains (briefly) with torch
ARCH, SIZE = "nanodet-plus-m", 128  # a small input keeps these runs to seconds


@pytest.fixture(scope="module")
def images(shared_data: Path) -> DetectionSet:
    person = load_coco(shared_data / "coco", ["person"])
    return person.subset([i for i, s in enumerate(person.samples) if len(s.xyxy)][:3], "3 images")


@pytest.fixture(scope="module")
def official(shared_models: Path) -> StartWeights:
    return read_start(shared_models / "nanodet-plus-m_320.onnx", ARCH)


def _train(
    official: StartWeights, images: DetectionSet, out: Path, seed: int, **hooks: object
) -> TrainingModel:
    recipe = Recipe(epochs=2, batch=2, seed=seed, lr=3e-4)
    model, _ = build_model(official, ARCH, ("person",), seed)
    job = loop.Run(
        RunInfo(ARCH, SIZE, ("person",), recipe, "official", True), images, None, out, torch.device("cpu")
    )
    loop.run(job, model, **hooks)  # type: ignore[arg-type]
    return model


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_same_seed_same_weights(official: StartWeights, images: DetectionSet, tmp_path: Path) -> None:
    a = _train(official, images, tmp_path / "a", seed=0).state_dict()
    b = _train(official, images, tmp_path / "b", seed=0).state_dict()
    c = _train(official, images, tmp_path / "c", seed=1).state_dict()
    assert _same(a, b)
    assert not _same(a, c)


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(report: EpochReport) -> None:
    raise Interrupt


def test_an_interrupted_run_resumes_exactly(
    official: StartWeights, images: DetectionSet, tmp_path: Path
) -> None:
    straight = _train(official, images, tmp_path / "straight", seed=0)
    with pytest.raises(Interrupt):
        _train(official, images, tmp_path / "cut", seed=0, on_epoch=_stop_after_first_epoch)
    info, state = checkpoint.load(tmp_path / "cut" / checkpoint.LAST)
    assert (state.epoch, state.step) == (1, 2)
    model = TrainingModel(straight.spec, 1)
    model.load_state_dict(state.model)
    loop.run(loop.Run(info, images, None, tmp_path / "cut", torch.device("cpu")), model, state)
    assert _same(model.state_dict(), straight.state_dict())
    _, resumed = checkpoint.load(tmp_path / "cut" / checkpoint.LAST)
    _, uninterrupted = checkpoint.load(tmp_path / "straight" / checkpoint.LAST)
    assert _same(resumed.ema, uninterrupted.ema)
    assert resumed.history == uninterrupted.history and resumed.step == 4
