"""NanoDet-Plus for training: the deploy model plus the Assign Guidance Module (AGM).

The AGM is `aux_fpn` (a second Ghost-PAN, a copy of `fpn`) and `aux_head` (SimpleConvHead on both
PANs' features concatenated). It only exists in training: it predicts boxes and scores that steer
the label assigner, and is dropped at export. Parameter names are the official ones
(RangiLyu/nanodet `NanoDetPlus`, `SimpleConvHead`), so a state dict of this module is an official
checkpoint's `model.*` part.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import cast

import torch
from torch import Tensor, nn

from edgepipe.export.arch import ArchSpec
from edgepipe.export.model import LEAKY_SLOPE, NanoDetPlus

PRIOR_PROBABILITY = 0.01  # class logits start at sigmoid⁻¹(0.01) = -4.595 (focal-loss init)
AUX_STACKED_CONVS = 4  # aux_head in config/nanodet-plus-m_*.yml
AUX_GROUPS = 32  # SimpleConvHead's default norm: GroupNorm(32)
INIT_STD = 0.01


def class_bias() -> float:
    return -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)


class Scale(nn.Module):
    """A learnable scalar (mmdet `Scale`), one per level of the aux head's box branch."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class ConvGN(nn.Module):
    """3x3 conv, GroupNorm, LeakyReLU, with mmdet's names `conv`, `gn`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(AUX_GROUPS, out_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.gn(self.conv(x)))
        return out


class SimpleConvHead(nn.Module):
    """The AGM head: separate class and box towers of 3x3 convs shared over levels."""

    def __init__(self, num_classes: int, channels: int, spec: ArchSpec) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_convs = nn.ModuleList(ConvGN(channels, channels) for _ in range(AUX_STACKED_CONVS))
        self.reg_convs = nn.ModuleList(ConvGN(channels, channels) for _ in range(AUX_STACKED_CONVS))
        self.gfl_cls = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(channels, 4 * (spec.reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in spec.strides)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """SimpleConvHead.init_weights: N(0, 0.01) convs, class bias for a 1% prior, GN 1/0."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.copy_(INIT_STD * torch.randn(module.weight.shape, generator=generator))
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.GroupNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                elif isinstance(module, Scale):
                    module.scale.fill_(1.0)
            cast(Tensor, self.gfl_cls.bias).fill_(class_bias())

    def forward(self, features: Iterator[Tensor]) -> Tensor:
        """Logits `[B, N, C + 4·(reg_max+1)]` in the main head's anchor order."""
        outputs = []
        for x, scale in zip(features, self.scales, strict=True):
            cls_x, reg_x = x, x
            for cls_conv, reg_conv in zip(self.cls_convs, self.reg_convs, strict=True):
                cls_x, reg_x = cls_conv(cls_x), reg_conv(reg_x)
            out = torch.cat((self.gfl_cls(cls_x), scale(self.gfl_reg(reg_x))), dim=1)
            outputs.append(out.flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)


class TrainingModel(nn.Module):
    """backbone → fpn → head (the deploy model), and the AGM (aux_fpn, aux_head) beside them."""

    def __init__(self, spec: ArchSpec, num_classes: int) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        deploy = NanoDetPlus(spec, num_classes)
        self.backbone = deploy.backbone
        self.fpn = deploy.fpn
        self.head = deploy.head
        self.aux_fpn = copy.deepcopy(self.fpn)
        self.aux_head = SimpleConvHead(num_classes, 2 * spec.channels, spec)

    def forward(self, x: Tensor, detach_agm: bool) -> tuple[Tensor, Tensor]:
        """Main and AGM logits, each `[B, N, C + 4·(reg_max+1)]` (no sigmoid).

        With `detach_agm` (official: from `detach_epoch` on) the AGM learns from the features but
        no longer changes the backbone or the main PAN (NanoDetPlus.forward_train)."""
        features = self.backbone(x)
        pan = self.fpn(features)
        if detach_agm:
            aux_pan = self.aux_fpn(tuple(f.detach() for f in features))
            dual = (torch.cat((p.detach(), a), dim=1) for p, a in zip(pan, aux_pan, strict=True))
        else:
            aux_pan = self.aux_fpn(features)
            dual = (torch.cat((p, a), dim=1) for p, a in zip(pan, aux_pan, strict=True))
        return head_logits(self.head, pan), self.aux_head(dual)

    def deploy_forward(self, x: Tensor) -> Tensor:
        """What the exported model computes: `[B, N, C + 4·(reg_max+1)]` with sigmoid scores."""
        out: Tensor = self.head(self.fpn(self.backbone(x)))
        return out

    def deploy_model(self) -> NanoDetPlus:
        """A NanoDetPlus (no AGM) holding a copy of these weights, loaded with strict keys."""
        from edgepipe.export.checkpoint import load_strict

        model = NanoDetPlus(self.spec, self.num_classes)
        load_strict(model, self.state_dict(), "training model")
        return model


def head_logits(head: nn.Module, features: list[Tensor]) -> Tensor:
    """NanoDetPlusHead.forward without the sigmoid: `[B, N, C + 4·(reg_max+1)]` logits."""
    outputs = []
    for x, convs, gfl_cls in zip(
        features, cast(nn.ModuleList, head.cls_convs), cast(nn.ModuleList, head.gfl_cls), strict=True
    ):
        for conv in cast(nn.ModuleList, convs):
            x = conv(x)
        outputs.append(gfl_cls(x).flatten(start_dim=2))
    return torch.cat(outputs, dim=2).permute(0, 2, 1)


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (use and keep its running statistics); call after `train()`."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
