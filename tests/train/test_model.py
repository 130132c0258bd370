"""The training model: official parameter names and sizes, AGM beside the deploy model, frozen BN."""

from __future__ import annotations

from collections import Counter

import pytest

torch = pytest.importorskip("torch", reason="training needs the export extra: pip install 'edgepipe[train]'")

from edgepipe.export.arch import ARCHS  # noqa: E402
from edgepipe.export.model import NanoDetPlus, randomize  # noqa: E402
from edgepipe.train.model import TrainingModel, class_bias, freeze_batchnorm_statistics  # noqa: E402

pytestmark = pytest.mark.slow  # needs torch
M = ARCHS["nanodet-plus-m"]


def _params(model: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix))


def test_keys_and_sizes_are_the_official_ones() -> None:
    # ../shared/models/PROVENANCE.md: an official checkpoint has 887 keys under backbone, fpn, head,
    # aux_fpn and aux_head (with the head's Integral buffer, which the checkpoint adds); 1.198 M
    # deploy parameters, 0.28 M in aux_fpn and 2.85 M in aux_head.
    model = TrainingModel(M, 80)
    keys = model.state_dict().keys()
    assert len(keys) + 1 == 887
    assert Counter(k.split(".")[0] for k in keys) == {
        "backbone": 330,
        "fpn": 210,
        "aux_fpn": 210,
        "head": 104,
        "aux_head": 32,
    }
    assert _params(model, "aux_fpn.") == _params(model, "fpn.") == 282_048
    assert (
        _params(model, "aux_head."),
        _params(model, "backbone.") + _params(model, "fpn.") + _params(model, "head."),
    ) == (2_850_932, 1_197_924)
    assert {"aux_head.cls_convs.3.gn.weight", "aux_head.gfl_reg.bias", "aux_head.scales.3.scale"} <= keys


def test_the_deploy_part_is_the_export_model() -> None:
    model = TrainingModel(M, 2).eval()
    randomize(model, seed=4)  # type: ignore[arg-type]  # same module names: randomize walks modules
    deploy = model.deploy_model().eval()
    assert isinstance(deploy, NanoDetPlus)
    assert not any(k.startswith(("aux_fpn", "aux_head")) for k in deploy.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(deploy(x), model.deploy_forward(x))


def test_training_forward_gives_logits_of_both_heads() -> None:
    model = TrainingModel(M, 3).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        main, aux = model(x, detach_agm=False)
        deployed = model.deploy_forward(x)
    anchors = 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2
    assert main.shape == aux.shape == (2, anchors, 3 + 32)
    assert torch.allclose(main[..., :3].sigmoid(), deployed[..., :3]) and torch.equal(
        main[..., 3:], deployed[..., 3:]
    )


def test_detached_agm_sends_no_gradient_into_the_backbone() -> None:
    model = TrainingModel(M, 1)
    x = torch.randn(1, 3, 128, 128)
    for detach, expect_grad in ((True, False), (False, True)):
        model.zero_grad(set_to_none=True)
        _, aux = model(x, detach_agm=detach)
        aux.sum().backward()
        assert (model.backbone.conv1[0].weight.grad is not None) is expect_grad
        assert model.aux_fpn.reduce_layers[0].conv.weight.grad is not None


def test_aux_head_starts_as_the_official_initialisation() -> None:
    head = TrainingModel(M, 4).aux_head
    head.reset_parameters(torch.Generator().manual_seed(0))
    assert torch.all(head.gfl_cls.bias == class_bias()) and abs(class_bias() + 4.595) < 1e-3
    assert float(head.cls_convs[0].conv.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert torch.all(head.gfl_reg.bias == 0) and float(head.scales[0].scale.detach()) == 1.0


def test_frozen_batchnorm_keeps_its_statistics_while_training() -> None:
    model = TrainingModel(M, 1)
    model.train()
    freeze_batchnorm_statistics(model)
    before = model.backbone.conv1[1].running_mean.clone()
    model(torch.randn(2, 3, 128, 128), detach_agm=False)
    assert torch.equal(model.backbone.conv1[1].running_mean, before)
    assert model.aux_head.training and not model.backbone.conv1[1].training
