"""The evaluation steps of a run: validation after every epoch (raw weights and EMA), the epoch's metrics row,
and the test split, evaluated once after training with the weights validation chose."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from effnet.train.evaluate import EvalMetrics, evaluate


def validate(model: nn.Module, ema_module: nn.Module | None, loader: Iterable, *, device: torch.device,
             channels_last: bool, strict: bool) -> tuple[EvalMetrics, EvalMetrics | None]:
    """(raw weights, EMA weights or None) on the validation split."""
    raw = evaluate(model, loader, device=device, channels_last=channels_last, strict=strict)
    ema = (evaluate(ema_module, loader, device=device, channels_last=channels_last, strict=strict)
           if ema_module is not None else None)
    return raw, ema


def epoch_row(epoch: int, step: int, steps_per_epoch: int, sums: torch.Tensor, lr: float, raw: EvalMetrics,
              ema: EvalMetrics | None, *, images_per_s: float, seconds: float, skipped: int) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl (and of `TrainResult.history`); `sums` are the epoch's (loss·n, correct,
    n) of the training batches."""
    seen = max(sums[2].item(), 1)
    row: dict[str, Any] = {
        "epoch": epoch + 1, "step": step, "epoch_float": round(step / steps_per_epoch, 4),
        "train_loss": sums[0].item() / seen, "train_acc": 100 * sums[1].item() / seen,
        "lr": lr, "val_top1": raw.top1, "val_top5": raw.top5, "val_loss": raw.loss,
    }
    if ema is not None:
        row.update(ema_top1=ema.top1, ema_top5=ema.top5, ema_loss=ema.loss)
    row.update(img_per_s=images_per_s, epoch_s=seconds, skipped_train=skipped, skipped_val=raw.skipped)
    return row


def test_with(module: nn.Module, weights: dict[str, torch.Tensor], loader: Iterable, *, device: torch.device,
              channels_last: bool, strict: bool) -> EvalMetrics:
    """`module` with the chosen `weights` on the test split; its own weights are put back afterwards."""
    current = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(weights)
    try:
        return evaluate(module, loader, device=device, channels_last=channels_last, strict=strict)
    finally:
        module.load_state_dict(current)


__all__ = ["epoch_row", "test_with", "validate"]
