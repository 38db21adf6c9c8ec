"""effnet's depthwise convolution for CPU training: one `torch.library` operator, `effnet::depthwise_conv2d`.

Why: oneDNN's depthwise convolution computes its forward pass and its input gradient fast, but its *weight*
gradient can take 7–70× the forward's time: with 5×5 kernels at any map size, and with 3×3 kernels on 1×1 and
2×2 maps (channels-last, batch 128: 480 channels at 3×3 with a 5×5 kernel, 0.3 ms forward and 13–20 ms for the
weight gradient; `benchmarks/` and docs/RESULTS.md "Training speed" have the measurements).  Those are exactly
the deep stages of a small EfficientNet, where the weight gradient alone was two thirds of a training step.

What: the forward pass and the input gradient are ATen's (nothing measured beat them); the weight gradient is
`weight_grad`, which runs effnet's C kernel (`depthwise_weight_grad.c`, built for this CPU on first use by
`effnet.ops.native`) where the measured rule `own_weight_grad_wins` says it is faster, and ATen's elsewhere.  The
operator has an autograd formula and a fake kernel, so `torch.compile` and `torch.export` see one op; inference,
ONNX export and GPUs never reach it (`layers.DepthwiseConv2d` calls it only while training on a CPU).

The C kernel sums in float32 (per kernel tap over every image and output column of one output row, then over the
rows): it agrees with ATen to ~1e-6 relative and is closer than ATen to a float64 reference on every shape
measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from effnet.ops import native

KERNEL = "depthwise_weight_grad"
PATHS = ("auto", "effnet", "aten")  # weight gradient: the measured rule, always effnet's kernel, always ATen's
_aten = torch.ops.aten


def own_weight_grad_wins(kernel: int, out_h: int, out_w: int) -> bool:
    """The measured rule: effnet's kernel computes the weight gradient faster than oneDNN's for kernels of 5 and
    more (2–22× at every map size measured) and for any kernel on maps of at most 4 output pixels (up to 350× on a
    1×1 map); oneDNN is faster for 3×3 kernels on larger maps (its own kernel then runs near the forward's speed)."""
    return kernel >= 5 or out_h * out_w <= 4


def _kernel():
    return native.entry(KERNEL, "depthwise_weight_grad_nhwc", 3, 13)


def kernel_available() -> bool:
    """Whether effnet's C kernel could be built and loaded here (`effnet.ops.native.build_problem` says why not)."""
    return _kernel() is not None


def _own_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int]) -> torch.Tensor:
    """effnet's C kernel on channels-last copies of `x` and `grad` (no copy when they already are); the channels
    are split over torch's threads in multiples of 16 by the kernel itself (`native.over_channels`)."""
    kernel_fn = _kernel()
    xn = x.detach().permute(0, 2, 3, 1).contiguous()
    gn = grad.detach().permute(0, 2, 3, 1).contiguous()
    n, h, w, c = xn.shape
    ho, wo = gn.shape[1:3]
    k = kernel[0]
    out = torch.empty(c, 1, k, k, dtype=torch.float32)
    native.over_channels(c, lambda c0, c1, threads: kernel_fn(
        xn.data_ptr(), gn.data_ptr(), out.data_ptr(), n, h, w, c, ho, wo, k, stride[0], padding[0], padding[1], c0, c1,
        threads), "depthwise weight-gradient")
    return out


def _aten_weight_grad(x, grad, weight_shape, stride, padding) -> torch.Tensor:
    w = torch.empty(weight_shape, dtype=x.dtype, device=x.device)
    return _aten.convolution_backward(grad, x, w, None, list(stride), list(padding), [1, 1], False, [0, 0],
                                      x.shape[1], [False, True, False])[1]


def _uses_own_kernel(x: torch.Tensor, grad: torch.Tensor, kernel: Sequence[int], path: str) -> bool:
    if path == "aten" or x.dtype != torch.float32 or x.device.type != "cpu" or kernel[0] != kernel[1]:
        return False
    if path == "auto" and not own_weight_grad_wins(kernel[0], grad.shape[2], grad.shape[3]):
        return False
    return kernel_available()


@torch.library.custom_op("effnet::depthwise_weight_grad", mutates_args=())
def weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], path: str) -> torch.Tensor:
    """d(loss)/d(weight) of a depthwise convolution (groups = channels, no dilation), shape (C, 1, kh, kw)."""
    if _uses_own_kernel(x, grad, kernel, path):
        return _own_weight_grad(x, grad, kernel, stride, padding)
    return _aten_weight_grad(x, grad, (x.shape[1], 1, kernel[0], kernel[1]), stride, padding)


@weight_grad.register_fake
def _(x, grad, kernel, stride, padding, path):
    return x.new_empty((x.shape[1], 1, kernel[0], kernel[1]))


def _forward(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    return F.conv2d(x, weight, None, list(stride), list(padding), 1, x.shape[1])


@torch.library.custom_op("effnet::depthwise_conv2d", mutates_args=())
def _depthwise_conv2d_op(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                         path: str = "auto") -> torch.Tensor:
    return _forward(x, weight, stride, padding)


@_depthwise_conv2d_op.register_fake
def _(x, weight, stride, padding, path="auto"):
    return _forward(x, weight, stride, padding)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, stride, padding, path = inputs
    ctx.save_for_backward(x, weight)
    ctx.conv = (list(stride), list(padding), path)


def _backward(ctx, grad: torch.Tensor):
    x, weight = ctx.saved_tensors
    stride, padding, path = ctx.conv
    need_x, need_w = ctx.needs_input_grad[:2]
    if torch.is_grad_enabled():  # create_graph=True (double backward): ATen's differentiable formula throughout
        gx, gw, _ = _aten.convolution_backward(grad, x, weight, None, stride, padding, [1, 1], False, [0, 0],
                                               x.shape[1], [need_x, need_w, False])
        return gx, gw, None, None, None
    gx = gw = None
    if need_x:
        gx = _aten.convolution_backward(grad, x, weight, None, stride, padding, [1, 1], False, [0, 0], x.shape[1],
                                        [True, False, False])[0]
    if need_w:
        gw = weight_grad(x, grad, list(weight.shape[2:]), stride, padding, path)
    return gx, gw, None, None, None


_depthwise_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


class _DepthwiseConv2d(torch.autograd.Function):
    """The operator's forward and autograd formula as a plain autograd function, for eager calls: the custom op's
    dispatch cost about 0.1 ms a call, more than the convolution itself on the small maps of deep stages."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, path):
        _setup_context(ctx, (x, weight, stride, padding, path), None)
        return _forward(x, weight, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        return _backward(ctx, grad)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                     path: str = "auto") -> torch.Tensor:
    """A depthwise convolution (groups = channels of `x`, no bias, no dilation): ATen's forward pass, effnet's
    weight gradient where it is faster (`path`: "auto" by the measured rule, "effnet" or "aten" always).
    `torch.compile` and `torch.export` see one operator, `effnet::depthwise_conv2d`."""
    if torch.compiler.is_compiling():
        return _depthwise_conv2d_op(x, weight, stride, padding, path)
    return _DepthwiseConv2d.apply(x, weight, stride, padding, path)


__all__ = ["PATHS", "depthwise_conv2d", "kernel_available", "own_weight_grad_wins", "weight_grad"]
