"""NanoDet-Plus in PyTorch, deploy form: ShuffleNetV2 → Ghost-PAN → NanoDet-Plus head.

Module and parameter names follow RangiLyu/nanodet (Apache-2.0), so the `state_dict` of an official
checkpoint loads with strict key checking; the training-only AGM (`aux_fpn`, `aux_head`) is left out.
`forward` returns the official export layout `[B, N, C + 4·(reg_max+1)]` with sigmoid class scores.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgepipe.export.arch import SHUFFLENET_WIDTHS, ArchSpec

LEAKY_SLOPE = 0.1  # NanoDet's act_layers("LeakyReLU")


def _act() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def _dw_conv(channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, stride, kernel_size // 2, groups=channels, bias=False)


def _pw_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


# ---------------------------------------------------------------- backbone
class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 unit: split (stride 1) or two-branch downsample (stride 2), concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw_conv(in_channels, 3, stride),
                nn.BatchNorm2d(in_channels),
                _pw_conv(in_channels, half),
                nn.BatchNorm2d(half),
                _act(),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            _pw_conv(in_channels if stride > 1 else half, half),
            nn.BatchNorm2d(half),
            _act(),
            _dw_conv(half, 3, stride),
            nn.BatchNorm2d(half),
            _pw_conv(half, half),
            nn.BatchNorm2d(half),
            _act(),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 backbone returning the stride 8, 16 and 32 feature maps (stages 2, 3, 4)."""

    stage_repeats = (4, 8, 4)

    def __init__(self, width: str) -> None:
        super().__init__()
        stem = 24
        self.conv1 = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), _act())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem
        stages: list[nn.Sequential] = []
        for repeats, out_channels in zip(self.stage_repeats, SHUFFLENET_WIDTHS[width], strict=True):
            blocks = [ShuffleV2Block(in_channels, out_channels, 2)]
            blocks += [ShuffleV2Block(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.stage2, self.stage3, self.stage4 = stages

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c2 = self.stage2(self.maxpool(self.conv1(x)))
        c3 = self.stage3(c2)
        return c2, c3, self.stage4(c3)


# ---------------------------------------------------------------- neck
class ConvModule(nn.Module):
    """1x1 conv, BN, LeakyReLU (mmdet-style names `conv`, `bn`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _pw_conv(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = _act()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.bn(self.conv(x)))
        return out


class DepthwiseConvModule(nn.Module):
    """Depthwise kxk conv, BN, act, pointwise 1x1 conv, BN, act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = _dw_conv(in_channels, kernel_size, stride)
        self.pointwise = _pw_conv(in_channels, out_channels)
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = _act()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        out: Tensor = self.act(self.pwnorm(self.pointwise(x)))
        return out


class GhostModule(nn.Module):
    """GhostNet module: a 1x1 conv makes half the channels, a cheap 3x3 depthwise conv the rest."""

    def __init__(self, in_channels: int, out_channels: int, act: bool) -> None:
        super().__init__()
        self.out_channels = out_channels
        init_channels = -(-out_channels // 2)
        self.trim = 2 * init_channels != out_channels  # an odd out_channels makes one channel too many
        self.primary_conv = nn.Sequential(
            _pw_conv(in_channels, init_channels),
            nn.BatchNorm2d(init_channels),
            _act() if act else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            _dw_conv(init_channels, 3),
            nn.BatchNorm2d(init_channels),
            _act() if act else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        out = torch.cat((x1, self.cheap_operation(x1)), dim=1)
        return out[:, : self.out_channels] if self.trim else out


class GhostBottleneck(nn.Module):
    """Ghost bottleneck (stride 1, no SE) with a depthwise + pointwise projection shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, act=True)
        self.ghost2 = GhostModule(mid_channels, out_channels, act=False)
        if in_channels == out_channels:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                _dw_conv(in_channels, kernel_size),
                nn.BatchNorm2d(in_channels),
                _pw_conv(in_channels, out_channels),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.ghost2(self.ghost1(x)) + self.shortcut(x)
        return out


class GhostBlocks(nn.Module):
    """One GhostBottleneck that fuses a concatenated pair of levels back to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(GhostBottleneck(in_channels, out_channels, out_channels, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.blocks(x)
        return out


class GhostPAN(nn.Module):
    """Path aggregation with Ghost blocks: top-down, bottom-up, plus one extra stride-64 level."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, kernel_size: int) -> None:
        super().__init__()
        n = len(in_channels)
        c = out_channels
        self.reduce_layers = nn.ModuleList(ConvModule(i, c) for i in in_channels)
        self.top_down_blocks = nn.ModuleList(GhostBlocks(2 * c, c, kernel_size) for _ in range(n - 1))
        self.downsamples = nn.ModuleList(DepthwiseConvModule(c, c, kernel_size, 2) for _ in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(GhostBlocks(2 * c, c, kernel_size) for _ in range(n - 1))
        self.extra_lvl_in_conv = nn.ModuleList([DepthwiseConvModule(c, c, kernel_size, 2)])
        self.extra_lvl_out_conv = nn.ModuleList([DepthwiseConvModule(c, c, kernel_size, 2)])

    def forward(self, features: tuple[Tensor, ...]) -> list[Tensor]:
        inputs = [reduce(x) for x, reduce in zip(features, self.reduce_layers, strict=True)]
        # top-down: from the coarsest level, upsample and fuse with the next finer one
        inner = [inputs[-1]]
        for i, block in zip(range(len(inputs) - 1, 0, -1), self.top_down_blocks, strict=True):
            upsampled = F.interpolate(inner[0], scale_factor=2.0, mode="bilinear")
            inner.insert(0, block(torch.cat((upsampled, inputs[i - 1]), dim=1)))
        # bottom-up: downsample the finer output and fuse with the top-down map of the next level
        outs = [inner[0]]
        for i, (down, block) in enumerate(zip(self.downsamples, self.bottom_up_blocks, strict=True)):
            outs.append(block(torch.cat((down(outs[-1]), inner[i + 1]), dim=1)))
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv, strict=True):
            outs.append(conv_in(inputs[-1]) + conv_out(outs[-1]))
        return outs


# ---------------------------------------------------------------- head
class NanoDetPlusHead(nn.Module):
    """Per-level depthwise conv towers, then one 1x1 conv giving C class logits and 4·(reg_max+1) bins."""

    def __init__(self, num_classes: int, spec: ArchSpec) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = spec.reg_max
        c = spec.channels
        self.cls_convs = nn.ModuleList(
            nn.ModuleList(DepthwiseConvModule(c, c, spec.kernel_size) for _ in range(spec.stacked_convs))
            for _ in spec.strides
        )
        out_channels = num_classes + 4 * (spec.reg_max + 1)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for _ in spec.strides)

    def forward(self, features: list[Tensor]) -> Tensor:
        outputs = []
        for x, convs, gfl_cls in zip(features, self.cls_convs, self.gfl_cls, strict=True):
            for conv in cast(nn.ModuleList, convs):
                x = conv(x)
            cls_logits, reg_bins = gfl_cls(x).split([self.num_classes, 4 * (self.reg_max + 1)], dim=1)
            outputs.append(torch.cat((cls_logits.sigmoid(), reg_bins), dim=1).flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)


class NanoDetPlus(nn.Module):
    """The deploy model: image `[B, 3, S, S]` (normalised BGR) → `[B, N, C + 4·(reg_max+1)]`."""

    def __init__(self, spec: ArchSpec, num_classes: int = 80) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.backbone = ShuffleNetV2(spec.backbone_width)
        self.fpn = GhostPAN(SHUFFLENET_WIDTHS[spec.backbone_width], spec.channels, spec.kernel_size)
        self.head = NanoDetPlusHead(num_classes, spec)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.fpn(self.backbone(x)))
        return out


def randomize(model: NanoDetPlus, seed: int) -> None:
    """Deterministic random weights, with non-trivial BN statistics so BN folding is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                cast(Tensor, module.running_mean).copy_(0.1 * torch.randn(n, generator=generator))
                cast(Tensor, module.running_var).copy_(1 + 0.1 * torch.rand(n, generator=generator))


def folded_conv_parameters(model: nn.Module) -> int:
    """Parameters of the model after BN folding: every conv weight plus one bias per output channel."""
    return sum(m.weight.numel() + m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
