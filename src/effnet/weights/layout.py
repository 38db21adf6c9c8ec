"""effnet's layout of an MBConv / Fused-MBConv network as data: names, shapes and which optional parts each block
has.

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

_PARTS = {
    "mbconv": ("expand", "depthwise", "se", "project"),
    # With an expansion: conv_exp, se, project; without (expand ratio 1): se, conv.  Forward order either way.
    "fused_mbconv": ("conv_exp", "se", "project", "conv"),
}


@dataclass(frozen=True)
class BlockLayout:
    """Where a block sits, its kind and which of its optional parts exist (``parts`` in forward order)."""

    stage: int
    index: int
    parts: tuple[str, ...]
    kind: str = "mbconv"

    @property
    def prefix(self) -> str:
        return f"stages.{self.stage}.{self.index}"


def block_layouts(spec: NetSpec) -> list[BlockLayout]:
    """Every block of an (Fused-)MBConv network in order, with the parts it has (an MBConv's expand is absent when
    expand_ratio is 1, a Fused-MBConv then has one kxk `conv` instead of `conv_exp` and `project`; SE when asked)."""
    model = meta_model(spec)
    layouts = []
    for i, stage in enumerate(model.stages):
        kind = spec.stages[i].kind
        if kind not in _PARTS:
            raise WeightsError(f"{spec.name}: stages[{i}].kind: got {kind!r}; the converters handle EfficientNet "
                               f"V1/V2 ({' and '.join(_PARTS)}) networks only: pass an EfficientNet as --model")
        for j, block in enumerate(stage):
            parts = tuple(p for p in _PARTS[kind] if not isinstance(getattr(block, p, nn.Identity()), nn.Identity))
            layouts.append(BlockLayout(i, j, parts, kind))
    return layouts
