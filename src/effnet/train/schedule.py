"""The learning-rate schedule of the reference code (`efficientnet/utils.py`, `build_learning_rate`):

    lr(step) = base · rate^⌊step / decay_steps⌋           (staircase exponential decay, 0.97 every 2.4 epochs)
    lr(step) = base · step / warmup_steps  while step < warmup_steps   (linear warm-up from 0)

with base = 0.016 × global batch / 256 (the paper's 0.256 at batch 4096).  The schedule is a pure function of the
global step, so resuming needs only the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float
    warmup_steps: int
    decay_steps: int
    decay_rate: float

    def __post_init__(self) -> None:
        if self.decay_steps < 1:
            raise ValueError(f"decay_steps: got {self.decay_steps}, expected >= 1")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        return self.base_lr * self.decay_rate ** math.floor(step / self.decay_steps)


def scaled_lr(lr_base: float, global_batch: int, reference_batch: int = 256) -> float:
    """The linear scaling rule the paper's recipe uses: lr ∝ batch size."""
    return lr_base * global_batch / reference_batch


def make_schedule(
    *, base_lr: float, steps_per_epoch: int, warmup_epochs: float, decay_epochs: float, decay_rate: float
) -> LRSchedule:
    return LRSchedule(
        base_lr=base_lr,
        warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
        decay_steps=max(1, int(round(decay_epochs * steps_per_epoch))),
        decay_rate=decay_rate,
    )
