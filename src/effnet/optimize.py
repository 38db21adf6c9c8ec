"""Fast inference paths in PyTorch itself: BatchNorm folded into convolutions, channels_last, torch.compile with
freezing, bf16 on AMX; and for training, BN+SiLU that keeps one activation fewer (`fuse_bn_silu_for_training`).

Every path returns a module that computes what the eager fp32 model computes; the fp32 paths agree to ≤ 1e-4
relative (tests/test_optimize.py), bf16 is lossy and its accuracy change is measured, not assumed
(`effnet.agreement.measure_agreement`).  Each path returns a new module; the model passed in is left unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from effnet import ops
from effnet.errors import EffnetError
from effnet.ops import aten_batch_norm_silu, aten_batch_norm_silu_backward


class OptimizeError(EffnetError, ValueError):
    """An inference path that cannot be built for this model or machine."""


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing bn(conv(x)) with BN's running statistics:  w' = w·γ/√(σ²+ε),  b' = (b − μ)·γ/√(σ²+ε) + β."""
    if bn.running_mean is None or bn.running_var is None:
        raise OptimizeError("fold_batchnorm: BatchNorm has no running statistics (track_running_stats=False); "
                            "it normalises with batch statistics at inference and cannot be folded")
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1), requires_grad=False)
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
    return fused


def fold_all_batchnorms(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d in a module with `conv` and `bn`
    children (effnet's `ConvNormAct`) or in an `nn.Sequential`.  Returns how many were folded."""
    folded = 0
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv, module.bn = fold_batchnorm(conv, bn), nn.Identity()
            folded += 1
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                first, second = module._modules[a], module._modules[b]
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    module._modules[a], module._modules[b] = fold_batchnorm(first, second), nn.Identity()
                    folded += 1
    return folded


def optimize_for_inference(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy with BatchNorm folded into the convolutions and weights in channels_last (NHWC), the
    layout oneDNN's convolutions run natively on CPU.  Feed it any NCHW tensor; the output is identical to
    `model.eval()(x)` up to float rounding (≤ 1e-4 relative)."""
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_all_batchnorms(fast)
    return _ChannelsLast(fast) if channels_last else fast


class _ChannelsLast(nn.Module):
    """Runs the wrapped model with weights and input in channels_last."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class _Cast(nn.Module):
    """Runs a reduced-precision model on float input and returns float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def to_bf16(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """A folded (and channels_last) copy with bf16 weights that takes and returns float32.  Lossy: 8 bits of
    mantissa; fast only with AMX or AVX512-BF16."""
    fast = optimize_for_inference(model, channels_last=channels_last).to(torch.bfloat16)
    return _Cast(fast, torch.bfloat16)


class _Compiled(nn.Module):
    """torch.compile'd inference with inductor's freezing: weights become constants, so conv+bias+activation
    fuse and oneDNN weight prepacking happens once.  Freezing is switched on only around this module's calls."""

    def __init__(self, model: nn.Module, freezing: bool) -> None:
        super().__init__()
        self.model = model
        self.freezing = freezing
        self.compiled = torch.compile(model, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._inductor import config

        with torch.no_grad(), config.patch(freezing=self.freezing):
            return self.compiled(x)


def compile_for_inference(
    model: nn.Module, *, freezing: bool = True, channels_last: bool = True, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """optimize_for_inference + torch.compile (inductor, static shapes, one compile per input shape on first
    call).  dtype=torch.bfloat16 gives the bf16 AMX path (lossy)."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise OptimizeError(f"compile_for_inference: dtype got {dtype}, expected torch.float32 or torch.bfloat16")
    fast = optimize_for_inference(model, channels_last=channels_last)
    if dtype is torch.bfloat16:
        fast = _Cast(fast.to(torch.bfloat16), torch.bfloat16)
    return _Compiled(fast, freezing)




# --- training memory: BatchNorm + SiLU that keeps only the BN input -----------------------------------------------


class _BatchNormSiLU(torch.autograd.Function):
    """silu(batch_norm(x)) in training mode, saving x and the batch statistics only: the normalised tensor (what
    SiLU would save) is recomputed in backward.  One activation-sized tensor fewer per conv-BN-SiLU."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, own: bool = True):
        # effnet's operator: two passes on CPU (channels-last float32) where ATen's batch norm and SiLU take four
        forward = ops.batch_norm_silu if own else aten_batch_norm_silu
        out, mean, invstd = forward(x, weight, bias, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.own = eps, own
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        # The normalised tensor is recomputed from x: one pass more than the stock BN → SiLU pair, one saved
        # activation fewer.  effnet's operator does it all in two passes on CPU (channels-last float32); ATen's
        # three kernels otherwise, and always under create_graph=True, where they are differentiable.
        if ctx.own and not torch.is_grad_enabled():
            gx, gw, gb = ops.batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, ctx.eps)
        else:
            gx, gw, gb = aten_batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, ctx.eps)
        return gx, gw, gb, None, None, None, None, None


def _conv_bn_silu_forward(self, x: torch.Tensor) -> torch.Tensor:
    bn = self.bn
    if not (isinstance(bn, nn.BatchNorm2d) and bn.training and torch.is_grad_enabled() and bn.affine
            and bn.running_mean is not None):
        return nn.Sequential.forward(self, x)
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    return _BatchNormSiLU.apply(self.conv(x), bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps,
                                self.training_path != "aten")


def fuse_bn_silu_for_training(model: nn.Module) -> int:
    """In place: every effnet conv-BN-SiLU (`ConvNormAct`) computes BN+SiLU with `_BatchNormSiLU` when training.
    Parameters, buffers and state-dict keys are unchanged; eval and no-grad forwards are the stock ones.
    Returns how many modules were switched."""
    from effnet.layers import ConvNormAct, MemoryEfficientSiLU

    switched = 0
    for module in model.modules():
        if (type(module) is ConvNormAct and isinstance(module.bn, nn.BatchNorm2d)
                and isinstance(module.act, (MemoryEfficientSiLU, nn.SiLU)) and len(module) == 3):
            module.__class__ = _FusedConvNormAct
            switched += 1
    return switched


def _fused_class():
    from effnet.layers import ConvNormAct, CpuTrainingPath

    return type("FusedConvNormAct", (CpuTrainingPath, ConvNormAct), {"forward": _conv_bn_silu_forward,
                                                                      "__module__": __name__})


_FusedConvNormAct = _fused_class()


__all__ = [
    "OptimizeError", "compile_for_inference", "fold_all_batchnorms", "fold_batchnorm", "fuse_bn_silu_for_training",
    "optimize_for_inference", "to_bf16",
]
