"""The block kinds a stage can repeat, each built from that stage's settings.

Child names are chosen so state-dict keys read as what they hold (`stages.3.1.expand.conv.weight`,
`stages.3.1.se.reduce.weight`, `stages.1.0.conv_exp.conv.weight`); converters in `effnet.weights` map other
libraries' names onto these.  A name means one kind of tensor in every block: `expand` is always a 1x1 expansion,
`project` always a linear 1x1 projection, which is why Fused-MBConv's kxk convs have names of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effnet.layers import ConvNormAct, DropPath, SqueezeExcite, make_activation, make_conv
from effnet.spec import StageSpec


@dataclass(frozen=True)
class BlockContext:
    """What a block needs beyond its stage: where it sits and the network-wide norm/padding settings."""

    in_channels: int
    stride: int
    drop_path_rate: float
    bn_eps: float
    bn_momentum: float
    padding: str

    def conv(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str | None = None):
        return ConvNormAct(
            in_ch, out_ch, kernel, stride, groups, act,
            bn_eps=self.bn_eps, bn_momentum=self.bn_momentum, padding=self.padding,
        )


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) with optional squeeze-excitation (EfficientNet, Table 1).

    expand 1x1 (absent when expand_ratio == 1) → depthwise kxk (carries the stride) → SE → linear 1x1 project,
    plus an identity skip with stochastic depth when input and output shapes match.  SE reduces to
    `se_ratio` × the block's *input* channels, as in the reference implementation.
    """

    def __init__(self, stage: StageSpec, ctx: BlockContext) -> None:
        super().__init__()
        in_ch, out_ch, act = ctx.in_channels, stage.out_channels, stage.activation
        mid_ch = _expanded(in_ch, stage.expand_ratio)
        self.expand = ctx.conv(in_ch, mid_ch, 1, act=act) if mid_ch != in_ch else nn.Identity()
        self.depthwise = ctx.conv(mid_ch, mid_ch, stage.kernel, ctx.stride, groups=mid_ch, act=act)
        self.se = _squeeze_excite(mid_ch, in_ch, stage)
        self.project = ctx.conv(mid_ch, out_ch, 1, act=None)
        self.has_skip = ctx.stride == 1 and in_ch == out_ch
        self.drop_path = DropPath(ctx.drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + self.drop_path(out) if self.has_skip else out


class FusedMBConv(nn.Module):
    """Fused-MBConv (EfficientNetV2, Tan & Le 2021, Fig. 2): MBConv's 1x1 expansion and depthwise kxk replaced by one
    full kxk conv, which runs faster on accelerators in the early, high-resolution stages.

    expand_ratio > 1: `conv_exp` (kxk, carries the stride) + norm + act → SE → `project` (linear 1x1) + norm.
    expand_ratio 1:   SE → `conv` (kxk, carries the stride) + norm + act.
    As in the V2 reference (`effnetv2_model.FusedMBConvBlock`) and Keras: SE sits after the expansion (before the
    only conv when there is none) and reduces to `se_ratio` × the block's *input* channels; identity skip with
    stochastic depth when input and output shapes match.
    """

    def __init__(self, stage: StageSpec, ctx: BlockContext) -> None:
        super().__init__()
        in_ch, out_ch, act = ctx.in_channels, stage.out_channels, stage.activation
        mid_ch = _expanded(in_ch, stage.expand_ratio)
        expands = mid_ch != in_ch
        if expands:
            self.conv_exp = ctx.conv(in_ch, mid_ch, stage.kernel, ctx.stride, act=act)
        self.se = _squeeze_excite(mid_ch, in_ch, stage)
        if expands:
            self.project = ctx.conv(mid_ch, out_ch, 1, act=None)
        else:
            self.conv = ctx.conv(in_ch, out_ch, stage.kernel, ctx.stride, act=act)
        self.expands = expands
        self.has_skip = ctx.stride == 1 and in_ch == out_ch
        self.drop_path = DropPath(ctx.drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.conv_exp(x))) if self.expands else self.conv(self.se(x))
        return x + self.drop_path(out) if self.has_skip else out


class SeparableConv(nn.Module):
    """MobileNetV1's depthwise-separable conv: depthwise kxk + norm + act, pointwise 1x1 + norm + act."""

    def __init__(self, stage: StageSpec, ctx: BlockContext) -> None:
        super().__init__()
        in_ch, act = ctx.in_channels, stage.activation
        self.depthwise = ctx.conv(in_ch, in_ch, stage.kernel, ctx.stride, groups=in_ch, act=act)
        self.pointwise = ctx.conv(in_ch, stage.out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (He et al. 2016; stride on the kxk conv as in torchvision): 1x1 reduce to
    out/expand_ratio, kxk, 1x1 expand to out; projection shortcut when the shape changes; act after the sum."""

    def __init__(self, stage: StageSpec, ctx: BlockContext) -> None:
        super().__init__()
        in_ch, out_ch, act = ctx.in_channels, stage.out_channels, stage.activation
        mid_ch = max(1, round(out_ch / stage.expand_ratio))
        self.reduce = ctx.conv(in_ch, mid_ch, 1, act=act)
        self.spatial = ctx.conv(mid_ch, mid_ch, stage.kernel, ctx.stride, act=act)
        self.expand = ctx.conv(mid_ch, out_ch, 1, act=None)
        self.shortcut = ctx.conv(in_ch, out_ch, 1, ctx.stride) if ctx.stride != 1 or in_ch != out_ch else nn.Identity()
        self.drop_path = DropPath(ctx.drop_path_rate)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.spatial(self.reduce(x)))
        return self.act(self.shortcut(x) + self.drop_path(out))


BLOCKS: dict[str, type[nn.Module]] = {"mbconv": MBConv, "fused_mbconv": FusedMBConv, "separable": SeparableConv,
                                      "bottleneck": Bottleneck}


def _squeeze_excite(channels: int, in_ch: int, stage: StageSpec) -> nn.Module:
    """SE on `channels` features, reduced to `se_ratio` × the block's input channels (the reference's sizing)."""
    if stage.se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcite(channels, max(1, int(in_ch * stage.se_ratio)), stage.activation)


def _expanded(in_ch: int, ratio: float) -> int:
    """Inner width of an inverted bottleneck. Integer ratios are exact; fractional ones round."""
    return max(1, int(round(in_ch * ratio)))


def make_block(stage: StageSpec, ctx: BlockContext) -> nn.Module:
    return BLOCKS[stage.kind](stage, ctx)


__all__ = ["BLOCKS", "BlockContext", "Bottleneck", "FusedMBConv", "MBConv", "SeparableConv", "make_block", "make_conv"]
