"""Exponential moving average of the weights, evaluated instead of (or beside) the raw weights.

    θ_ema ← θ_ema + (1 − d)·(θ − θ_ema),   d = min(decay, (1 + n) / (10 + n))   (n = updates so far)

The warm-up term is the reference code's (`tf.train.ExponentialMovingAverage(num_updates=...)`): without it a
0.9999 average would still be mostly the random initialisation after a short run.  Parameters are averaged;
buffers (BatchNorm running statistics, already averages) are copied.  Each update is two
`torch._foreach_*` calls over all tensors at once (a lerp of the parameters, a copy of the buffers).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay: got {decay}, expected in [0, 1)")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay_at(self.updates)
        self.updates += 1
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        ema_buffers, buffers = list(self.module.buffers()), list(model.buffers())
        torch._foreach_lerp_(ema_params, params, 1 - d)
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay, "warmup": self.warmup, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
