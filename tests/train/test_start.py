"""Start weights: the official ONNX reproduced exactly, class outputs remapped by name, a new AGM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the export extra: pip install 'edgepipe[train]'")

from edgepipe.errors import ConfigError, ModelError  # noqa: E402
from edgepipe.export.arch import COCO_LABELS  # noqa: E402
from edgepipe.export.convert import preprocess, read_images  # noqa: E402
from edgepipe.paths import MODELS_ENV  # noqa: E402
from edgepipe.train import start  # noqa: E402
from edgepipe.train.model import class_bias, freeze_batchnorm_statistics  # noqa: E402

pytestmark = pytest.mark.slow  # needs torch
ARCH = "nanodet-plus-m"


@pytest.fixture(scope="module")
def official(shared_models: Path) -> start.StartWeights:
    return start.read_start(shared_models / "nanodet-plus-m_320.onnx", ARCH)


def test_official_onnx_start_is_exact_in_training_mode(
    official: start.StartWeights, shared_models: Path
) -> None:
    import onnxruntime

    assert official.labels == COCO_LABELS and not official.has_agm
    model, new = start.build_model(official, ARCH, COCO_LABELS, seed=0)
    assert new == ()
    session = onnxruntime.InferenceSession(str(shared_models / "nanodet-plus-m_320.onnx"))
    x = np.concatenate([preprocess(i, 320) for i in read_images(shared_models / "samples", "samples")[:2]])
    reference = np.concatenate([session.run(None, {"data": x[i : i + 1]})[0] for i in range(2)])
    model.train()
    freeze_batchnorm_statistics(model)  # as the training loop does: BN is the identity with the folded bias
    with torch.no_grad():
        main, _ = model(torch.from_numpy(x), detach_agm=False)
    ours = torch.cat((main[..., :80].sigmoid(), main[..., 80:]), dim=-1).numpy()
    assert np.abs(ours - reference).max() < 1e-4


def test_new_class_list_keeps_known_rows_and_box_outputs(official: start.StartWeights) -> None:
    labels = ("dog", "person", "door")
    model, new = start.build_model(official, ARCH, labels, seed=0)
    assert new == ("door",)
    for level in range(4):
        weight, bias = (
            official.state[f"head.gfl_cls.{level}.weight"],
            official.state[f"head.gfl_cls.{level}.bias"],
        )
        conv = model.head.gfl_cls[level]
        assert torch.equal(conv.weight[0], weight[COCO_LABELS.index("dog")])
        assert torch.equal(conv.weight[1], weight[0])
        assert torch.equal(conv.weight[3:], weight[80:]) and torch.equal(conv.bias[3:], bias[80:])  # box bins
        assert float(conv.bias[2].detach()) == pytest.approx(class_bias()) and float(
            conv.weight[2].detach().std()
        ) == pytest.approx(0.01, rel=0.2)
    assert torch.equal(model.backbone.conv1[0].weight, official.state["backbone.conv1.0.weight"])


def test_a_class_in_the_other_coco_spelling_keeps_its_trained_rows(official: start.StartWeights) -> None:
    """Labels spelt as Darknet's coco.names (the fetched IRs' cards) find NanoDet's COCO-spelt classes."""
    model, new = start.build_model(official, ARCH, ("motorbike", "tvmonitor"), seed=0)
    assert new == ()
    for level in range(4):
        weight = official.state[f"head.gfl_cls.{level}.weight"]
        conv = model.head.gfl_cls[level]
        assert torch.equal(conv.weight[0], weight[COCO_LABELS.index("motorcycle")])
        assert torch.equal(conv.weight[1], weight[COCO_LABELS.index("tv")])


def test_a_new_agm_starts_from_the_trained_pan(official: start.StartWeights) -> None:
    model, _ = start.build_model(official, ARCH, ("person",), seed=0)
    fpn, aux_fpn = model.fpn.state_dict(), model.aux_fpn.state_dict()
    assert all(torch.equal(v, aux_fpn[k]) for k, v in fpn.items())
    assert model.aux_head.gfl_cls.bias.tolist() == pytest.approx([class_bias()])


def test_a_checkpoint_with_an_agm_keeps_it(official: start.StartWeights, tmp_path: Path) -> None:
    model, _ = start.build_model(official, ARCH, ("person", "car"), seed=0)
    with torch.no_grad():
        model.aux_head.gfl_reg.bias.fill_(0.5)
        model.aux_head.gfl_cls.bias.copy_(torch.tensor([1.0, 2.0]))
    path = tmp_path / "mine.ckpt"
    torch.save({"state_dict": {f"avg_model.{k}": v for k, v in model.state_dict().items()},
                "edgepipe": {"labels": ["person", "car"]}}, path)  # fmt: skip
    weights = start.read_start(path, ARCH)
    assert (
        weights.has_agm and weights.labels == ("person", "car") and weights.origin == "mine.ckpt (avg_model)"
    )
    again, new = start.build_model(weights, ARCH, ("car",), seed=0)
    assert new == () and float(again.aux_head.gfl_cls.bias[0].detach()) == 2.0
    assert torch.all(again.aux_head.gfl_reg.bias == 0.5)


def test_official_name_resolves_in_the_weights_dir(
    shared_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        start.resolve_official("nanodet-plus-m-320", shared_models)
        == shared_models / "nanodet-plus-m_320.onnx"
    )
    monkeypatch.setenv(MODELS_ENV, str(shared_models))
    assert start.resolve_official("nanodet-plus-m-416", None) == shared_models / "nanodet-plus-m_416.onnx"
    with pytest.raises(
        ConfigError,
        match=r"--init nanodet-plus-m-416: .*nanodet-plus-m_416\.onnx does not exist: pass --weights-dir",
    ):
        start.resolve_official("nanodet-plus-m-416", tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"--init yolo: not an official model with float weights; choose nanodet-plus-m-320, nanodet-plus-m-416",
    ):
        start.resolve_official("yolo", shared_models)
    (tmp_path / "nanodet-plus-m_320.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelError, match=r"sha256 differs from the manifest's"):
        start.resolve_official("nanodet-plus-m-320", tmp_path)
