"""A ConvNet as a backbone: the feature maps at each reduction (strides 2/4/8/16/32) for detection/segmentation.

`create_model(name, features_only=True, out_indices=(1, 2, 3, 4))` wraps the model in `FeatureExtractor`.  One
map is kept per reduction: the *last* module working at that stride (for EfficientNet-B0 that is stage 0's
output at stride 2, then stages 1, 2, 4 and 6), as timm's `features_only` does.  The extractor keeps the model's
own `stem` / `stages` modules, so state-dict names are unchanged (``stages.3.1.expand.conv.weight``); stages past
the last requested map, the head and the classifier are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.network import ConvNet, FeatureInfo


class FeatureIndexError(EffnetError, IndexError):
    """An `out_indices` entry that names no feature level."""


def feature_levels(model: ConvNet) -> list[FeatureInfo]:
    """One `FeatureInfo` per reduction, the last module at that reduction, shallowest first."""
    return list(model.feature_info)


class FeatureExtractor(nn.Module):
    """`forward(x)` returns a list of feature maps, one per `out_indices` entry (default: every level)."""

    def __init__(self, model: ConvNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        levels = feature_levels(model)
        indices = tuple(range(len(levels))) if out_indices is None else tuple(out_indices)
        if not indices:
            raise FeatureIndexError("out_indices: got an empty list, expected at least one level")
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -len(levels) <= i < len(levels):
                raise FeatureIndexError(
                    f"out_indices: got {i!r}, expected integers in [0, {len(levels)}) for {model.spec.name} "
                    f"(levels at strides {[info.reduction for info in levels]})"
                )
        self.out_indices = tuple(i % len(levels) for i in indices)
        self.feature_info: list[FeatureInfo] = [levels[i] for i in self.out_indices]
        self._taps = {info.module for info in self.feature_info}
        last_stage = max((int(info.module.split(".")[1]) for info in self.feature_info if info.module != "stem"),
                         default=-1)
        self.spec = model.spec
        self.stem = model.stem
        self.stages = nn.ModuleList(list(model.stages)[: last_stage + 1])

    @property
    def channels(self) -> list[int]:
        return [info.channels for info in self.feature_info]

    @property
    def strides(self) -> list[int]:
        return [info.reduction for info in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        if "stem" in self._taps:
            maps["stem"] = x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if f"stages.{i}" in self._taps:
                maps[f"stages.{i}"] = x
        return [maps[info.module] for info in self.feature_info]
