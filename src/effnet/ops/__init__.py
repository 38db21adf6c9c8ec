"""effnet's own operators, each one `torch.library` custom op with its autograd formula and fake kernel.

`layers.py` decides when to call them; nothing above `layers.py` knows they exist.
"""

from effnet.ops.batchnorm_silu import (
    aten_batch_norm_silu,
    aten_batch_norm_silu_backward,
    batch_norm_silu,
    batch_norm_silu_backward,
)
from effnet.ops.depthwise import PATHS, depthwise_conv2d, kernel_available, own_weight_grad_wins, weight_grad
from effnet.ops.squeeze_excitation import squeeze_excite, squeeze_excite_backward  # noqa: F401

__all__ = ["PATHS", "aten_batch_norm_silu", "aten_batch_norm_silu_backward", "batch_norm_silu",
           "batch_norm_silu_backward", "depthwise_conv2d", "kernel_available", "own_weight_grad_wins", "weight_grad"]
