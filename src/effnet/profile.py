"""Parameters, MACs, activations and a per-stage table for any spec or model.

MACs are multiply-accumulates, the paper's "FLOPS".  They are counted by PyTorch's own
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products; it reports 2 FLOPs per MAC, so
MACs = counted FLOPs / 2).  Counting runs on the "meta" device, so even L2 at 800 px costs no memory; a spec is
counted block by block and each distinct block (structure and input shape) is traced once per process, which is
what keeps a budget solver's hundreds of counts cheap.

Activations are Dollár, Singh & Girshick's third cost ("Fast and Accurate Model Scaling", CVPR 2021, Section 3):
the number of elements of every convolution's and linear layer's output, per image; they found it predicts a
model's runtime on memory-bound hardware better than its FLOPs.  It is counted in the same forward pass as the
MACs and on the same operators, by watching the ATen calls the flop counter counts (`aten.convolution`,
`aten.mm`, `aten.addmm` …): squeeze-excite's reduce/expand, which run as matrix products on the pooled vector,
are counted like any linear layer, and a module that calls an operator twice is counted twice.  Elementwise ops,
norms, pooling and additions are not counted, as in the paper's definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from effnet.network import ConvNet, build_meta
from effnet.spec import NetSpec


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _ActivationCounter(TorchDispatchMode):
    """Adds up the output elements of each ATen operator that `FlopCounterMode` counts (the same set, so MACs and
    activations always describe the same layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket in flop_registry:
            self.total += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def _counted(fn, *args) -> tuple[int, int, torch.Tensor]:
    """(MACs, activations, output) of one call, counted in one pass."""
    flops, activations = FlopCounterMode(display=False), _ActivationCounter()
    with flops, activations, torch.no_grad():
        out = fn(*args)
    return flops.get_total_flops() // 2, activations.total, out


_PART_COSTS: dict[tuple[str, tuple[int, ...]], tuple[int, int, tuple[int, ...]]] = {}
_PART_COSTS_MAX = 20_000


def _counted_part(module: nn.Module, x: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """`_counted` for one part of a meta model, remembered by what decides its cost: the module's structure (its
    repr names every layer with its channels, kernel, stride, groups and bias) and the input's shape.  Budget
    solvers count hundreds of specs that share most of their blocks; each distinct block is traced once."""
    key = (repr(module), tuple(x.shape))
    known = _PART_COSTS.get(key)
    if known is not None:
        return known[0], known[1], torch.empty(known[2], device="meta")
    macs, activations, out = _counted(module, x)
    if len(_PART_COSTS) >= _PART_COSTS_MAX:
        _PART_COSTS.clear()
    _PART_COSTS[key] = (macs, activations, tuple(out.shape))
    return macs, activations, out


def _counted_by_parts(model: ConvNet, x: torch.Tensor) -> tuple[int, int]:
    """(MACs, activations) of a meta `ConvNet`'s forward pass, part by part in the order `forward` runs them: stem,
    each block, head, then the classifier on the pooled features (pooling and dropout count nothing)."""
    macs = activations = 0
    parts = [model.stem, *(block for stage in model.stages for block in stage), model.head]
    for part in parts:
        m, a, x = _counted_part(part, x)
        macs, activations = macs + m, activations + a
    m, a, _ = _counted_part(model.classifier, x.mean((2, 3)))
    return macs + m, activations + a


def _meta_input(spec: NetSpec, resolution: int | None, batch: int = 1) -> torch.Tensor:
    res = resolution or spec.resolution
    return torch.empty(batch, spec.in_channels, res, res, device="meta")


def _costs(spec_or_model: NetSpec | nn.Module, resolution: int | None, caller: str) -> tuple[int, int]:
    """(MACs, activations) of one forward pass of one image at `resolution` (default: the spec's)."""
    if isinstance(spec_or_model, NetSpec):
        model, spec = build_meta(spec_or_model), spec_or_model
        x = _meta_input(spec, resolution)
    else:
        model = spec_or_model
        spec = getattr(model, "spec", None)
        if spec is None and resolution is None:
            raise ValueError(f"{caller}: a model without a spec needs an explicit resolution")
        param = next(model.parameters())
        in_ch = spec.in_channels if spec is not None else 3
        res = resolution or spec.resolution
        x = torch.zeros(1, in_ch, res, res, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        if x.device.type == "meta" and type(model) is ConvNet:
            return _counted_by_parts(model, x)
        macs, activations, _ = _counted(model, x)
        return macs, activations
    finally:
        model.train(was_training)


def count_macs(spec_or_model: NetSpec | nn.Module, resolution: int | None = None) -> int:
    """MACs of one forward pass of one image at `resolution` (default: the spec's)."""
    return _costs(spec_or_model, resolution, "count_macs")[0]


def count_activations(spec_or_model: NetSpec | nn.Module, resolution: int | None = None) -> int:
    """Activations (output elements of every convolution and matrix product) of one forward pass of one image at
    `resolution` (default: the spec's)."""
    return _costs(spec_or_model, resolution, "count_activations")[1]


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
    activations: int


def profile_stages(spec: NetSpec, resolution: int | None = None) -> list[StageProfile]:
    """Per-stage table in the shape of the paper's Table 1: operator, resolution, channels, layers, plus cost."""
    model = build_meta(spec).eval()
    x = _meta_input(spec, resolution)
    rows: list[StageProfile] = []

    def add(name: str, op: str, kernel: int | None, repeats: int, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        macs, activations, out = _counted(module, x)
        shape = tuple(out.shape[-2:]) if out.ndim == 4 else (1, 1)
        params = count_params(module)
        rows.append(StageProfile(name, op, kernel, repeats, x.shape[1], out.shape[1], shape, params, macs,
                                 activations))
        return out

    stem_op = f"conv{spec.stem.kernel}x{spec.stem.kernel}" + ("+maxpool" if spec.stem.max_pool else "")
    x = add("stem", stem_op, spec.stem.kernel, 1, model.stem, x)
    for i, (stage, module) in enumerate(zip(spec.stages, model.stages)):
        op = stage.kind + (f"{stage.expand_ratio:g}" if stage.kind in ("mbconv", "fused_mbconv") else "")
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
    activations: int


def profile(spec: NetSpec, resolution: int | None = None) -> ModelProfile:
    """Params, and MACs and activations per image at `resolution` (default: the spec's), in one forward pass."""
    model = build_meta(spec)
    res = resolution or spec.resolution
    macs, activations = _costs(model, res, "profile")
    return ModelProfile(spec.name, count_params(model), macs, res, activations)
