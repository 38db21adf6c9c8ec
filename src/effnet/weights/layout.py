"""effnet's layout of an MBConv network as data: names, shapes and which optional parts each block has.

Converters need it to place other libraries' flat or differently-nested tensors; the model is built on the meta
device, so this costs no memory and no initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effnet.network import build_meta as meta_model  # re-exported for the converters
from effnet.spec import NetSpec
from effnet.weights.safe_load import WeightsError

State = dict[str, torch.Tensor]

_MBCONV_PARTS = ("expand", "depthwise", "se", "project")


@dataclass(frozen=True)
class BlockLayout:
    """Where a block sits and which of its optional parts exist (``parts`` in forward order)."""

    stage: int
    index: int
    parts: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return f"stages.{self.stage}.{self.index}"


def block_layouts(spec: NetSpec) -> list[BlockLayout]:
    """Every block of an MBConv network in order, with the parts it has (expand is absent when expand_ratio 1)."""
    model = meta_model(spec)
    layouts = []
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            if spec.stages[i].kind != "mbconv":
                raise WeightsError(f"stages[{i}].kind: got {spec.stages[i].kind!r}; the converters handle EfficientNet "
                                   f"(mbconv) networks only")
            parts = tuple(p for p in _MBCONV_PARTS if not isinstance(getattr(block, p), nn.Identity))
            layouts.append(BlockLayout(i, j, parts))
    return layouts
