"""`torch.compile` of the training step: whether a run compiles (`compile_mode`), and the step's forward and
backward through the compiled model, falling back to eager with one warning line if compiling fails.

A compiled step's numbers differ from an eager step's in the last bits (other kernels, other dropout masks), so
a run keeps the mode it started in: the checkpoint records it (`compiled`) and a resume follows it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from effnet.train.config import COMPILE_MIN_STEPS, ConfigError, TrainConfig


def compile_mode(config: TrainConfig, total_steps: int, resume_state: dict[str, Any] | None) -> bool:
    """Whether the run compiles: the mode its checkpoint was trained in when resuming, else `config.compile`, else
    (None) whether the run has `COMPILE_MIN_STEPS` steps."""
    if resume_state is not None:
        recorded = bool(resume_state.get("compiled", False))
        if config.compile is not None and config.compile != recorded:
            raise ConfigError(f"compile: got {config.compile}, but {resume_state.get('path', 'the checkpoint')} was "
                              f"trained {'compiled' if recorded else 'eager'} and a run resumes in the mode it "
                              "started in (their numbers differ); drop the flag to resume")
        return recorded
    if config.compile is not None:
        return config.compile
    return COMPILE_MIN_STEPS is not None and total_steps >= COMPILE_MIN_STEPS


class CompiledStep:
    """forward → loss → backward through `torch.compile(module)` (or `module` itself when not `enabled`).
    `compile_s` is the first compiled step's wall time, compiling included (None before it, or when eager)."""

    def __init__(self, module: nn.Module, *, enabled: bool) -> None:
        self.module = module
        self.compiled: Callable | None = torch.compile(module) if enabled else None
        self.compile_s: float | None = None
        self.failed: str | None = None  # why compiling failed, if it did

    @property
    def enabled(self) -> bool:
        return self.compiled is not None

    def __call__(self, images: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor],
                 before: Callable[[], None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, loss) after `loss.backward()`; `before` (zeroing the gradients, seeding the step's RNG) runs
        before the forward, and again before the eager retry if compiling fails."""
        if self.compiled is None:
            return _forward_backward(self.module, images, loss_of, before)
        if self.compile_s is not None:
            return _forward_backward(self.compiled, images, loss_of, before)
        start = time.perf_counter()
        try:
            out = _forward_backward(self.compiled, images, loss_of, before)
        except Exception as exc:  # a compiler's failure of any kind: train on, eagerly
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.failed, self.compiled = reason, None
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {reason}); training in eager mode",
                          stacklevel=2)
            return _forward_backward(self.module, images, loss_of, before)
        self.compile_s = time.perf_counter() - start
        return out


def _forward_backward(module, images, loss_of, before) -> tuple[torch.Tensor, torch.Tensor]:
    before()
    logits = module(images)
    loss = loss_of(logits)
    loss.backward()
    return logits, loss


__all__ = ["COMPILE_MIN_STEPS", "CompiledStep", "compile_mode"]
