"""PyTorch itself as a runtime: fp32 folded and channels_last, bf16 weights, or either through torch.compile
(the paths of `effnet.optimize`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from effnet.runtime.base import Runtime


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(self, model: nn.Module, precision: str, compile: bool) -> None:
        from effnet.optimize import compile_for_inference, optimize_for_inference, to_bf16

        self.precision = precision
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if compile:
            self.module = compile_for_inference(model, dtype=dtype)
        else:
            self.module = to_bf16(model) if precision == "bf16" else optimize_for_inference(model)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.__call__(x).numpy()

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        with torch.inference_mode():
            return self.module(x).float()


__all__ = ["TorchRuntime"]
