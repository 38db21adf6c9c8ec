"""Building layers: conv + norm + activation, squeeze-excitation, drop-path, TensorFlow "SAME" padding.

These know nothing about specs; `blocks.py` wires them together from a stage's settings.  A depthwise convolution
trains on a CPU through effnet's own operator (`effnet.ops.depthwise_conv2d`, whose weight gradient avoids oneDNN's
slow one) and a 1x1 convolution as a matrix product; this module is the only one that knows the operator exists.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effnet import ops


class _SiLUFunction(torch.autograd.Function):
    """SiLU whose backward keeps only the input: σ(x) is recomputed, so no output or sigmoid is stored.
    d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))), computed by ATen's fused `silu_backward` kernel in one pass.

    Unlike `nn.SiLU(inplace=True)` after BatchNorm (timm's choice), which makes autograd clone the input it
    overwrites, this writes a new output and saves the input itself: one memory pass instead of two, same memory."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True (double backward): the differentiable form
            sig = torch.sigmoid(x)
            return grad * sig * (1.0 + x * (1.0 - sig))
        return torch.ops.aten.silu_backward(grad, x)


def silu_memory_efficient(x: torch.Tensor) -> torch.Tensor:
    return _SiLUFunction.apply(x)


class MemoryEfficientSiLU(nn.Module):
    """SiLU for training that saves only its input (`_SiLUFunction`); without autograd it is plain `F.silu`
    (in place when asked), so inference, export and compile see the stock op."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _SiLUFunction.apply(x)
        return F.silu(x, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": MemoryEfficientSiLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    try:
        cls = _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation: got {name!r}, expected one of {sorted(_ACTIVATIONS)}") from None
    return cls(inplace=True) if name in ("silu", "relu", "relu6", "hardswish") else cls()


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding for one spatial dim: (before, after). The extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d that pads like TensorFlow's SAME: output size ceil(in/stride), asymmetric when needed.

    With stride 1 and an odd kernel SAME is symmetric, so the pad is fixed and no per-call work is done.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, padding=0, **kwargs)
        k, s = self.kernel_size[0], self.stride[0]
        self._static = s == 1
        if self._static:
            self.padding = ((k - 1) // 2, (k - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._static:
            return super().forward(x)
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _trains_on_cpu(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Training mode, autograd recording the weight, a float32 CPU tensor: where effnet's training paths apply."""
    return (module.training and torch.is_grad_enabled() and weight.requires_grad and x.device.type == "cpu"
            and x.dtype == torch.float32)


class CpuTrainingPath:
    """Mixin for a module that trains faster on a CPU another way (same parameters, same state-dict keys, the same
    function): only in training mode with autograd on a float32 CPU tensor, and not when `training_path` is
    "aten"; otherwise it is the stock module, so inference, export, Grad-CAM and GPUs (cuDNN) see nn.Conv2d."""

    training_path: str = "auto"  # "auto" (effnet's kernels where measured faster), "effnet" (always) or "aten" (off)


class DepthwiseConv2d(CpuTrainingPath, nn.Conv2d):
    """A depthwise convolution (groups = channels) that trains on a CPU through `effnet.ops.depthwise_conv2d`:
    ATen's forward, and a weight gradient many times faster than oneDNN's for 5x5 kernels and tiny maps."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (self.training_path != "aten" and bias is None and _trains_on_cpu(self, x, weight)
                and isinstance(self.padding, tuple) and self.dilation == (1, 1) and self.stride[0] == self.stride[1]):
            return ops.depthwise_conv2d(x, weight, list(self.stride), list(self.padding), self.training_path)
        return super()._conv_forward(x, weight, bias)


class DepthwiseConv2dSame(DepthwiseConv2d, Conv2dSame):
    """A depthwise convolution with TensorFlow SAME padding, trained on a CPU through effnet's operator."""


class PointwiseConv2d(CpuTrainingPath, nn.Conv2d):
    """A 1x1 convolution that trains on a CPU, channels-last, as the matrix product it is: (N·H·W, C_in) @ W^T.
    MKL's GEMM and its backward beat oneDNN's 1x1 convolution backward on the small maps of mobile ConvNets
    (1.1–4x for fwd+bwd on 18 px and below; 4x for a 1x1 map); the output keeps the channels-last layout."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (self.training_path != "aten" and _trains_on_cpu(self, x, weight)
                and x.is_contiguous(memory_format=torch.channels_last)):
            rows = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)  # (N, H, W, C_out), contiguous
            return rows.permute(0, 3, 1, 2)
        return super()._conv_forward(x, weight, bias)


def cpu_kernels_problem() -> str | None:
    """Why effnet's C kernels for CPU training cannot be built here (then ATen's kernels run in their place), or
    None where they can."""
    if ops.kernel_available():
        return None
    return ops.native.build_problem("depthwise_weight_grad") or "effnet's C kernels could not be loaded"


def set_training_path(model: nn.Module, path: str) -> int:
    """Set how `model`'s layers train on a CPU: "auto" (effnet's paths: 1x1 convolutions as matrix products,
    depthwise ones through effnet's operator with its own weight gradient where the measured rule says it is
    faster, fused BN+SiLU and squeeze-excite by effnet's kernels), "effnet" (the depthwise operator's own weight
    gradient always) or "aten" (ATen's kernels throughout).  Returns how many modules were set."""
    if path not in ops.PATHS:
        raise ValueError(f"training path: got {path!r}, expected one of {', '.join(ops.PATHS)}")
    convs = [m for m in model.modules() if isinstance(m, CpuTrainingPath)]
    for conv in convs:
        conv.training_path = path
    return len(convs)


def make_conv(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    depthwise = groups > 1 and groups == in_ch == out_ch
    if kernel == 1 and stride == 1 and groups == 1:
        return PointwiseConv2d(in_ch, out_ch, 1, bias=bias)  # SAME and symmetric padding are both 0 here
    if padding == "same":
        cls = DepthwiseConv2dSame if depthwise else Conv2dSame
        return cls(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=bias)
    cls = DepthwiseConv2d if depthwise else nn.Conv2d
    return cls(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)


class ConvNormAct(nn.Sequential):
    """conv → BatchNorm → activation, with readable child names `conv`, `bn`, `act`."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = "silu",
        *,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, kernel, stride, groups, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = make_activation(activation) if activation else nn.Identity()


class SqueezeExcite(CpuTrainingPath, nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as EfficientNet uses it: global average → 1x1 reduce (with bias)
    → activation → 1x1 expand → sigmoid gate on the block's expanded features.

    Training on a CPU (channels-last float32, no autocast, `training_path` not "aten") it runs as effnet's operator
    `ops.squeeze_excite`: the same function and parameters, with a backward of two full-size passes."""

    # The activation modules `ops.squeeze_excite` knows, by the name it knows them by.
    _OPERATOR_ACTIVATIONS: dict[type[nn.Module], str] = {
        MemoryEfficientSiLU: "silu", nn.SiLU: "silu", nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish",
        nn.GELU: "gelu", nn.Identity: "identity",
    }

    def __init__(self, channels: int, reduced: int, activation: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def _operator_activation(self, x: torch.Tensor) -> str | None:
        """The activation's name where this call trains through `ops.squeeze_excite`, else None."""
        if (self.training_path == "aten" or not _trains_on_cpu(self, x, self.reduce.weight) or x.dim() != 4
                or not x.is_contiguous(memory_format=torch.channels_last) or torch.is_autocast_enabled("cpu")
                or self.reduce.bias is None or self.expand.bias is None):
            return None
        if isinstance(self.act, nn.GELU) and self.act.approximate != "none":
            return None
        return self._OPERATOR_ACTIVATIONS.get(type(self.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation = self._operator_activation(x)
        if activation is not None:
            return ops.squeeze_excite(x, self.reduce.weight.flatten(1), self.reduce.bias,
                                      self.expand.weight.flatten(1), self.expand.bias, activation)
        # The 1x1 convs act on a 1x1 map: run them as matrix products on the pooled N×C vector (same weights,
        # same result), which skips the convolution machinery's slow path for 1x1 spatial inputs (~10 % of B0's
        # batch-1 time) and exports as Gemm.
        pooled = x.mean((2, 3))
        scale = F.linear(pooled, self.reduce.weight.flatten(1), self.reduce.bias)
        scale = F.linear(self.act(scale), self.expand.weight.flatten(1), self.expand.bias)
        return x * scale.sigmoid()[:, :, None, None]


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): zero a whole sample's residual branch with probability `rate`,
    scaling survivors by 1/(1-rate) so the expectation is unchanged."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"
