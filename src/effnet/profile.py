"""Parameters, MACs and a per-stage table for any spec or model.

MACs are multiply-accumulates, the paper's "FLOPS".  They are counted by PyTorch's own
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products; it reports 2 FLOPs per MAC, so
MACs = counted FLOPs / 2).  Counting runs on the "meta" device, so even L2 at 800 px costs no memory or time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effnet.network import build_meta
from effnet.spec import NetSpec


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _counted_macs(fn, *args) -> tuple[int, torch.Tensor]:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = fn(*args)
    return counter.get_total_flops() // 2, out


def _meta_input(spec: NetSpec, resolution: int | None, batch: int = 1) -> torch.Tensor:
    res = resolution or spec.resolution
    return torch.empty(batch, spec.in_channels, res, res, device="meta")


def count_macs(spec_or_model: NetSpec | nn.Module, resolution: int | None = None) -> int:
    """MACs of one forward pass of one image at `resolution` (default: the spec's)."""
    if isinstance(spec_or_model, NetSpec):
        model, spec = build_meta(spec_or_model), spec_or_model
        x = _meta_input(spec, resolution)
    else:
        model = spec_or_model
        spec = getattr(model, "spec", None)
        if spec is None and resolution is None:
            raise ValueError("count_macs: a model without a spec needs an explicit resolution")
        param = next(model.parameters())
        in_ch = spec.in_channels if spec is not None else 3
        res = resolution or spec.resolution
        x = torch.zeros(1, in_ch, res, res, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        return _counted_macs(model, x)[0]
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class StageProfile:
    """One row of `profile_stages`: a stage (or the stem/head/classifier) and what it costs."""

    name: str
    operator: str
    kernel: int | None
    repeats: int
    in_channels: int
    out_channels: int
    output_size: tuple[int, int]
    params: int
    macs: int


def profile_stages(spec: NetSpec, resolution: int | None = None) -> list[StageProfile]:
    """Per-stage table in the shape of the paper's Table 1: operator, resolution, channels, layers, plus cost."""
    model = build_meta(spec).eval()
    x = _meta_input(spec, resolution)
    rows: list[StageProfile] = []

    def add(name: str, op: str, kernel: int | None, repeats: int, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        macs, out = _counted_macs(module, x)
        shape = tuple(out.shape[-2:]) if out.ndim == 4 else (1, 1)
        params = count_params(module)
        rows.append(StageProfile(name, op, kernel, repeats, x.shape[1], out.shape[1], shape, params, macs))
        return out

    stem_op = f"conv{spec.stem.kernel}x{spec.stem.kernel}" + ("+maxpool" if spec.stem.max_pool else "")
    x = add("stem", stem_op, spec.stem.kernel, 1, model.stem, x)
    for i, (stage, module) in enumerate(zip(spec.stages, model.stages)):
        op = stage.kind + (f"{stage.expand_ratio:g}" if stage.kind == "mbconv" else "")
        if stage.se_ratio:
            op += f"+se{stage.se_ratio:g}"
        x = add(f"stages.{i}", op, stage.kernel, stage.repeats, module, x)
    if spec.head.channels:
        x = add("head", "conv1x1", 1, 1, model.head, x)
    pooled = x.mean((2, 3))
    if spec.num_classes:
        add("classifier", "pool+fc", None, 1, model.classifier, pooled)
    return rows


@dataclass(frozen=True)
class ModelProfile:
    name: str
    params: int
    macs: int
    resolution: int


def profile(spec: NetSpec, resolution: int | None = None) -> ModelProfile:
    model = build_meta(spec)
    res = resolution or spec.resolution
    return ModelProfile(spec.name, count_params(model), count_macs(model, res), res)
