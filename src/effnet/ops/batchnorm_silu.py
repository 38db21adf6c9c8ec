"""silu(batch_norm(x)) in training mode as two operators, `effnet::batch_norm_silu` and
`effnet::batch_norm_silu_backward`.

Why: a small mobile ConvNet's training step on a CPU is mostly the memory traffic of its elementwise layers, and
batch norm followed by SiLU is the largest of them.  ATen computes the forward pass in four or five passes over the
tensor (the batch statistics, the normalisation, SiLU) and, for `effnet.optimize`'s fused BN+SiLU that saves only
BN's input, the backward in three kernels (recompute the normalised tensor, SiLU's backward into a new tensor,
batch norm's backward reading it twice).  effnet's C kernels (`batchnorm_silu.c`) take two passes each way and
write nothing but the output (forward) or the input gradient (backward).  They run for channels-last float32 CPU
tensors where they could be built; everything else takes ATen's kernels.
"""

from __future__ import annotations

import torch

from effnet.ops import native

KERNEL = "batchnorm_silu"
CHUNK = 64  # rows per chunk of the kernels' sums (`CHUNK` in batchnorm_silu.c)
_aten = torch.ops.aten


def _entry(function: str, pointers: int, longs: int, doubles: int = 0):
    return native.entry(KERNEL, function, pointers, longs, doubles)


def _kernel():
    """The library's first entry, or None where it cannot be built here."""
    return _entry("bn_stats_nhwc", 3, 5)


def aten_batch_norm_silu(x, weight, bias, running_mean, running_var, momentum, eps):
    """The same forward pass from ATen's kernels: (output, batch mean, batch invstd); updates the running stats."""
    y, mean, invstd = _aten.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
    return torch.nn.functional.silu(y, inplace=True), mean, invstd


def aten_batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, eps):
    """The same gradients from ATen's kernels (differentiable, any device and dtype)."""
    shape = (1, -1, 1, 1)
    scale = invstd * weight
    # y = (x − μ)·γ/σ + β recomputed in one pass (addcmul keeps x's memory format), then ATen's SiLU backward
    y = torch.addcmul((bias - mean * scale).view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))
    dy = _aten.silu_backward(grad.to(x.dtype), y)
    del y
    return _aten.native_batch_norm_backward(dy, x, weight, None, None, mean, invstd, True, eps, [True, True, True])


def _uses_own_kernel(x, *tensors) -> bool:
    """float32 CPU tensors, x channels-last with more than one value per channel, and the kernel built."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, *tensors)) and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last) and x.numel() // x.shape[1] > 1
            and _kernel() is not None)


def _forward(x, weight, bias, running_mean, running_var, momentum, eps):
    if running_mean is None or running_var is None or not _uses_own_kernel(x, weight, bias, running_mean,
                                                                           running_var):
        return aten_batch_norm_silu(x, weight, bias, running_mean, running_var, momentum, eps)
    n, c, h, w = x.shape
    rows = n * h * w
    chunks = -(-rows // CHUNK)
    weight, bias = weight.contiguous(), bias.contiguous()
    part, shift = torch.empty(chunks * 2 * c), torch.empty(c)
    _entry("bn_shift_nhwc", 2, 2)(x.data_ptr(), shift.data_ptr(), rows, c)
    native.over_chunks(chunks, lambda k0, k1, threads: _entry("bn_stats_nhwc", 3, 5)(
        x.data_ptr(), shift.data_ptr(), part.data_ptr(), rows, c, k0, k1, threads), "batch norm statistics", CHUNK * c)
    mean, invstd, scale_offset = torch.empty(c), torch.empty(c), torch.empty(2 * c)
    _entry("bn_stats_finish", 9, 3, 2)(part.data_ptr(), shift.data_ptr(), weight.data_ptr(), bias.data_ptr(),
                                       mean.data_ptr(), invstd.data_ptr(), scale_offset.data_ptr(),
                                       running_mean.data_ptr(), running_var.data_ptr(), rows, c, chunks, eps, momentum)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    native.over_chunks(chunks, lambda k0, k1, threads: _entry("bn_silu_apply_nhwc", 3, 5)(
        x.data_ptr(), scale_offset.data_ptr(), out.data_ptr(), rows, c, k0, k1, threads), "BN+SiLU", CHUNK * c)
    return out, mean, invstd


def _backward(grad, x, weight, bias, mean, invstd, eps):
    if not _uses_own_kernel(x, grad, weight, bias):
        return tuple(t.contiguous() if t.dim() == 1 else t
                     for t in aten_batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, eps))
    grad = grad.contiguous(memory_format=torch.channels_last)  # (a global pool's backward hands over NCHW)
    n, c, h, w = x.shape
    rows = n * h * w
    chunks = -(-rows // CHUNK)
    gx = torch.empty_like(x, memory_format=torch.channels_last)
    part = torch.empty(chunks * 2 * c)
    weight, bias, mean, invstd = weight.contiguous(), bias.contiguous(), mean.contiguous(), invstd.contiguous()
    native.over_chunks(chunks, lambda k0, k1, threads: _entry("bn_silu_grad_sums_nhwc", 8, 5)(
        grad.data_ptr(), x.data_ptr(), mean.data_ptr(), invstd.data_ptr(), weight.data_ptr(), bias.data_ptr(),
        gx.data_ptr(), part.data_ptr(), rows, c, k0, k1, threads), "BN+SiLU backward", CHUNK * c)
    gw, gb, k = torch.empty(c), torch.empty(c), torch.empty(2 * c)
    _entry("bn_silu_grad_finish", 4, 3)(part.data_ptr(), gw.data_ptr(), gb.data_ptr(), k.data_ptr(), rows, c, chunks)
    native.over_chunks(chunks, lambda k0, k1, threads: _entry("bn_silu_grad_input_nhwc", 6, 5)(
        gx.data_ptr(), x.data_ptr(), mean.data_ptr(), invstd.data_ptr(), weight.data_ptr(), k.data_ptr(), rows, c,
        k0, k1, threads), "BN+SiLU backward", CHUNK * c)
    return gx, gw, gb


@torch.library.custom_op("effnet::batch_norm_silu", mutates_args=("running_mean", "running_var"))
def _batch_norm_silu_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                        running_var: torch.Tensor, momentum: float,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out, mean, invstd = _forward(x, weight, bias, running_mean, running_var, momentum, eps)
    return out, mean, invstd


@_batch_norm_silu_op.register_fake
def _(x, weight, bias, running_mean, running_var, momentum, eps):
    return torch.empty_like(x), weight.new_empty(weight.shape), weight.new_empty(weight.shape)


@torch.library.custom_op("effnet::batch_norm_silu_backward", mutates_args=())
def _batch_norm_silu_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                 mean: torch.Tensor, invstd: torch.Tensor,
                                 eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx, gw, gb = _backward(grad, x, weight, bias, mean, invstd, eps)
    return gx, gw, gb


@_batch_norm_silu_backward_op.register_fake
def _(grad, x, weight, bias, mean, invstd, eps):
    return torch.empty_like(x), weight.new_empty(weight.shape), bias.new_empty(bias.shape)


def batch_norm_silu(x, weight, bias, running_mean, running_var, momentum: float, eps: float):
    """silu(batch_norm(x)) in training mode: (output, batch mean, batch invstd), the running statistics updated in
    place as `nn.BatchNorm2d` does.  Eager calls skip the operator's dispatch (about 13 µs a call, a few percent of
    a small model's step); `torch.compile` and `torch.export` see the operator `effnet::batch_norm_silu`."""
    if torch.compiler.is_compiling():
        return _batch_norm_silu_op(x, weight, bias, running_mean, running_var, momentum, eps)
    return _forward(x, weight, bias, running_mean, running_var, momentum, eps)


def batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, eps: float):
    """Gradients (input, weight, bias) of silu(batch_norm(x, weight, bias)) in training mode, given the batch
    statistics `mean` and `invstd` the forward pass computed (`effnet::batch_norm_silu_backward` when compiled)."""
    if torch.compiler.is_compiling():
        return _batch_norm_silu_backward_op(grad, x, weight, bias, mean, invstd, eps)
    return _backward(grad, x, weight, bias, mean, invstd, eps)


__all__ = ["aten_batch_norm_silu", "aten_batch_norm_silu_backward", "batch_norm_silu", "batch_norm_silu_backward"]
