"""The model a run trains: built from the plan (or from the spec a resumed checkpoint records), optionally from
pretrained weights with a fresh classifier, a frozen backbone, fused BN+SiLU and channels-last memory."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from effnet.layers import set_training_path
from effnet.network import ConvNet
from effnet.optimize import fuse_bn_silu_for_training
from effnet.registry import create_model
from effnet.spec import NetSpec, with_options
from effnet.train.config import ConfigError, Plan, TrainConfig


def build_model(c: TrainConfig, p: Plan, spec: NetSpec, resume_state: dict[str, Any] | None,
                device: torch.device) -> nn.Module:
    """The run's model on `device`; its initial weights depend on `c.seed` only (the same in every process and on
    every rerun)."""
    torch.manual_seed(c.seed)
    if resume_state is not None:
        model = ConvNet(NetSpec.from_dict(resume_state["spec"]))
    else:
        options = dict(num_classes=p.num_classes, drop_rate=p.dropout, drop_path_rate=p.drop_path,
                       resolution=p.resolution, bn_momentum=p.bn_momentum)
        if c.pretrained:
            try:
                model = create_model(c.model, pretrained=c.pretrained, **options)
            except ImportError as exc:
                raise ConfigError(f"pretrained: weights for {spec.name!r} need effnet.weights ({exc})") from None
            model.spec = with_options(model.spec, **{k: v for k, v in options.items() if k != "drop_rate"},
                                      dropout=p.dropout)
            # A fresh head starting at zero gives uniform predictions (loss ln C) instead of large random
            # logits whose gradients would first scramble the pretrained backbone (as in BiT's fine-tuning).
            if isinstance(model.classifier, nn.Linear):
                nn.init.zeros_(model.classifier.weight)
                nn.init.zeros_(model.classifier.bias)
        else:
            model = create_model(c.model, **options)
    if c.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("classifier."))
    if c.fused_bn_silu:
        fuse_bn_silu_for_training(model)
    set_training_path(model, "auto" if c.own_kernels else "aten")
    model.to(device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def train_mode(model: nn.Module, freeze_backbone: bool) -> None:
    """Training mode; a frozen backbone keeps its BatchNorm statistics too."""
    model.train()
    if freeze_backbone:
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith("classifier"):
                m.eval()


__all__ = ["build_model", "train_mode"]
