"""`ConvNet(spec)`: the one builder that turns any `NetSpec` into an `nn.Module`.

Layout (and state-dict prefixes): `stem` → `stages[i][j]` (block j of stage i) → `head` → global average pool →
dropout → `classifier`.  `forward_features` stops after the head; `feature_info` describes the feature map at
every reduction, for detection/segmentation backbones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.blocks import BlockContext, make_block
from effnet.layers import ConvNormAct
from effnet.spec import NetSpec


@dataclass(frozen=True)
class FeatureInfo:
    """A feature map a backbone exposes: which module produces it, its channels and its stride."""

    module: str
    channels: int
    reduction: int


class ConvNet(nn.Module):
    """The model of a `NetSpec`. `feature_info` lists one feature map per reduction: the last module at it."""

    def __init__(self, spec: NetSpec, *, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.grad_checkpointing = grad_checkpointing
        self.stem = ConvNormAct(
            spec.in_channels, spec.stem.channels, spec.stem.kernel, spec.stem.stride, activation=spec.stem.activation,
            bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum, padding=spec.padding,
        )
        if spec.stem.max_pool:
            self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))

        self.stages = nn.ModuleList()
        self.feature_info: list[FeatureInfo] = []
        channels, reduction, block_index = spec.stem.channels, spec.total_stride // _stage_strides(spec), 0
        if reduction > 1 and spec.stages[0].stride > 1:  # else the first stage's output replaces it at this stride
            self.feature_info.append(FeatureInfo("stem", channels, reduction))
        for i, stage in enumerate(spec.stages):
            blocks = []
            for j in range(stage.repeats):
                ctx = BlockContext(
                    in_channels=channels,
                    stride=stage.stride if j == 0 else 1,
                    drop_path_rate=spec.drop_path_rate * block_index / spec.num_blocks,
                    bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum, padding=spec.padding,
                )
                blocks.append(make_block(stage, ctx))
                channels, block_index = stage.out_channels, block_index + 1
            self.stages.append(nn.Sequential(*blocks))
            reduction *= stage.stride
            # A stage's output is a feature map when the next stage downsamples (or it is the last one).
            next_stride = spec.stages[i + 1].stride if i + 1 < len(spec.stages) else 2
            if next_stride > 1:
                self.feature_info.append(FeatureInfo(f"stages.{i}", channels, reduction))

        if spec.head.channels:
            self.head = ConvNormAct(
                channels, spec.head.channels, 1, activation=spec.head.activation,
                bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum, padding=spec.padding,
            )
            channels = spec.head.channels
        else:
            self.head = nn.Identity()
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(channels, spec.num_classes) if spec.num_classes else nn.Identity()
        if self.stem.conv.weight.device.type != "meta":  # a meta model (for counting) has no values to set
            _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        checkpointing = self.grad_checkpointing and torch.is_grad_enabled()
        for stage in self.stages:
            x = checkpoint(_Recomputed(stage), x, use_reentrant=False) if checkpointing else stage(x)
        return self.head(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per stage: keep only each stage's input and recompute the stage in backward
        (Chen et al. 2016), trading about one extra forward for most of the activation memory."""
        self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` (0: none, the model returns pooled features)."""
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            _init_linear(self.classifier)


class _Recomputed:
    """Calls a stage; on the second call (checkpoint's recompute) BatchNorm running statistics are restored
    afterwards, so a checkpointed step updates them exactly once, as an ordinary step does."""

    def __init__(self, stage: nn.Module) -> None:
        self.stage, self.calls = stage, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.stage(x)
        norms = [m for m in self.stage.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [[b.clone() for b in m.buffers()] for m in norms]
        try:  # checkpoint may stop a recompute early by raising, once it has what backward needs
            return self.stage(x)
        finally:
            with torch.no_grad():
                for m, buffers in zip(norms, saved):
                    for b, old in zip(m.buffers(), buffers):
                        b.copy_(old)


def build_meta(spec: NetSpec) -> ConvNet:
    """The model of `spec` on the meta device: names, shapes and MACs without storage or initialisation."""
    with torch.device("meta"):
        return ConvNet(spec)


def _stage_strides(spec: NetSpec) -> int:
    return math.prod(s.stride for s in spec.stages)


def _init_linear(linear: nn.Linear) -> None:
    bound = 1.0 / math.sqrt(linear.out_features)
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.zeros_(linear.bias)


def _init_weights(model: nn.Module) -> None:
    """The TF reference's initialisers: conv ~ N(0, 2/fan_out), dense ~ U(±1/sqrt(out)), BN = identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            _init_linear(m)
