"""The backward pass of silu(batch_norm(x)) in training mode as one operator, `effnet::batch_norm_silu_backward`.

Why: `effnet.optimize`'s fused BN+SiLU saves only BN's input for backward, and its backward was three ATen kernels
(recompute the normalised tensor, SiLU's backward into a new tensor, batch norm's backward reading it twice), which
took 1.1–3× the time of effnet's C kernel (`batchnorm_silu_backward.c`) on the channels-last maps of the
experiments' models.  The kernel makes two passes and writes only the input gradient (dy is kept there between
them).  It runs for
channels-last float32 CPU tensors where it could be built; everything else takes ATen's three kernels.
"""

from __future__ import annotations

import torch

from effnet.ops import native

KERNEL = "batchnorm_silu_backward"
_aten = torch.ops.aten


def _kernel():
    return native.entry(KERNEL, "batchnorm_silu_backward_nhwc", 9, 4)


def aten_batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, eps):
    """The same gradients from ATen's kernels (differentiable, any device and dtype)."""
    shape = (1, -1, 1, 1)
    scale = invstd * weight
    # y = (x − μ)·γ/σ + β recomputed in one pass (addcmul keeps x's memory format), then ATen's SiLU backward
    y = torch.addcmul((bias - mean * scale).view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))
    dy = _aten.silu_backward(grad.to(x.dtype), y)
    del y
    return _aten.native_batch_norm_backward(dy, x, weight, None, None, mean, invstd, True, eps, [True, True, True])


def _uses_own_kernel(grad, x, weight, bias) -> bool:
    tensors = (grad, x, weight, bias)
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and grad.is_contiguous(memory_format=torch.channels_last) and _kernel() is not None)


@torch.library.custom_op("effnet::batch_norm_silu_backward", mutates_args=())
def batch_norm_silu_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             mean: torch.Tensor, invstd: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (input, weight, bias) of silu(batch_norm(x, weight, bias)) in training mode, given the batch
    statistics `mean` and `invstd` the forward pass computed."""
    if not _uses_own_kernel(grad, x, weight, bias):
        return tuple(t.contiguous() if t.dim() == 1 else t
                     for t in aten_batch_norm_silu_backward(grad, x, weight, bias, mean, invstd, eps))
    kernel_fn = _kernel()
    n, c, h, w = x.shape
    gx = torch.empty_like(x, memory_format=torch.channels_last)
    gw, gb = torch.empty(c), torch.empty(c)
    weight, bias, mean, invstd = (t.detach().contiguous() for t in (weight, bias, mean, invstd))
    native.over_channels(c, lambda c0, c1: kernel_fn(
        grad.data_ptr(), x.data_ptr(), weight.data_ptr(), bias.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
        gx.data_ptr(), gw.data_ptr(), gb.data_ptr(), n * h * w, c, c0, c1), "BN+SiLU backward")
    return gx, gw, gb


@batch_norm_silu_backward.register_fake
def _(grad, x, weight, bias, mean, invstd, eps):
    return torch.empty_like(x), weight.new_empty(weight.shape), bias.new_empty(bias.shape)


__all__ = ["aten_batch_norm_silu_backward", "batch_norm_silu_backward"]
