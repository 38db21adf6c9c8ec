"""Top-1 / top-5 of a model on a loader (summed over processes), and `evaluate_checkpoint` for `effnet eval`:
raw and EMA weights of a training checkpoint, with the model's eval preprocessing, in eager PyTorch or on any
`effnet.runtime` backend and precision (the lossy ones int8-calibrated on images of the data's own train split)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from effnet.data import check_usable, open_source
from effnet.data.batches import eval_batches
from effnet.data.loader import fixed_subset
from effnet.errors import EffnetError
from effnet.network import ConvNet
from effnet.registry import ModelConfig
from effnet.spec import NetSpec
from effnet.train import distributed
from effnet.train.checkpoint import CheckpointError, load_checkpoint
from effnet.train.config import RESUME_KEYS, check_resolution


@dataclass(frozen=True)
class EvalMetrics:
    top1: float
    top5: float
    loss: float
    images: int
    skipped: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}top1": self.top1, f"{prefix}top5": self.top5, f"{prefix}loss": self.loss}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device, channels_last: bool = False,
             strict: bool = False, progress: Callable[[int], None] | None = None) -> EvalMetrics:
    """Accuracy in percent; loss is plain cross-entropy (no smoothing).  `model` is put in eval mode.
    `progress(images)` is called with 0 first, then after each batch with the images read so far (unreadable ones
    included)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # loss, top1, top5, images, skipped
    read = 0
    if progress is not None:
        progress(0)  # starting: a caller's clock starts here
    for images, labels, skipped in loader:
        if skipped and strict:
            raise _unreadable_error(skipped[0])
        sums[4] += len(skipped)
        read += len(skipped) + (0 if images is None else len(labels))
        if images is None:
            if progress is not None:
                progress(read)
            continue
        images, labels = images.to(device), labels.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(labels[:, None])
        sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        sums[1] += hit[:, 0].sum().item()
        sums[2] += hit.any(dim=1).sum().item()
        sums[3] += len(labels)
        if progress is not None:
            progress(read)
    distributed.all_reduce_sum(sums)
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    return EvalMetrics(100 * sums[1].item() / n, 100 * sums[2].item() / n, sums[0].item() / n, int(sums[3].item()),
                       int(sums[4].item()))


def _unreadable_error(item: Any) -> EffnetError:
    from effnet.data import DataError

    return DataError(f"{item.path}: unreadable image ({item.reason}); fix or remove it, or run without --strict "
                     "to skip and count unreadable images")


def eval_loader(source, config: ModelConfig, *, batch_size: int, workers: int, crop_fraction: float | None,
                rank: int = 0, world_size: int = 1, batched: bool = True) -> Iterable:
    """(images, labels, skipped) batches of `source` preprocessed for evaluation (`effnet.data.batches`)."""
    return eval_batches(source, config, batch_size=batch_size, workers=workers, crop_fraction=crop_fraction,
                        rank=rank, world_size=world_size, batched=batched)


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    *,
    split: str = "val",
    batch_size: int = 128,
    workers: int = 2,
    resolution: int | None = None,
    crop_fraction: float | None = None,
    subset: int | None = None,
    strict: bool = False,
    device: str = "auto",
    runtime: str = "torch",
    precision: str = "fp32",
    calibration: int = 64,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """{'raw': EvalMetrics, 'ema': EvalMetrics | None, 'checkpoint', 'images', ...} for a training checkpoint
    (a file, or a run folder: its latest checkpoint).  `device` "auto" is the GPU when there is one, as in training.
    `progress(weights, images, total)` is called after each batch ("raw" or "ema" weights).

    `runtime`/`precision` pick an `effnet.runtime` engine (torch fp32 is eager PyTorch).  int8 is calibrated on
    `calibration` images drawn (fixed seed) from the train split of `data` — never from the images evaluated."""
    from effnet.runtime import check_runtime

    check_runtime(runtime, precision)
    if device == "auto":  # as training: the GPU when there is one (an exported engine runs on the CPU)
        device = "cuda" if runtime == "torch" and torch.cuda.is_available() else "cpu"
    if runtime != "torch" and torch.device(device).type != "cpu":
        raise EffnetError(f"evaluate: --runtime {runtime} runs on the CPU; got --device {device}")
    if calibration < 1:
        raise EffnetError(f"evaluate: calibration got {calibration}, expected a positive number of images")
    if precision == "int8" and split == "train":
        raise EffnetError("evaluate: int8 calibrates on the train split; evaluating that split would judge the "
                          "quantization on its own calibration images — evaluate val or test")
    state = _load(checkpoint)
    spec = NetSpec.from_dict(state["spec"])
    classes = tuple(state["classes"])
    source = open_source(data, split, classes=None if _is_fmnist(data) else classes)
    if tuple(source.classes) != classes:
        raise EffnetError(f"{data}: classes {list(source.classes)} differ from the checkpoint's {list(classes)}")
    check_usable(source, min_classes=1)
    if subset:
        if subset > len(source):
            raise EffnetError(f"subset: got {subset}, expected at most the {len(source)} images of {source.name}; "
                              "drop it to evaluate them all")
        source = fixed_subset(source, subset, 0)
    cfg = ModelConfig(**state["preprocess"])
    if resolution is not None:
        cfg = ModelConfig(check_resolution(resolution), cfg.crop_fraction, cfg.interpolation, cfg.mean, cfg.std)
    crop = crop_fraction if crop_fraction is not None else cfg.crop_fraction
    loader = eval_loader(source, cfg, batch_size=batch_size, workers=workers, crop_fraction=crop)
    dev = torch.device(device)
    results: dict[str, Any] = {"checkpoint": state["path"], "step": state["step"], "data": source.name,
                               "resolution": cfg.resolution, "runtime": runtime, "precision": precision}
    calibration_batch = None
    if precision == "int8":
        calibration_batch = train_split_calibration(data, classes, cfg, calibration, crop_fraction=crop)
        results["calibration_images"] = len(calibration_batch)
    for kind, weights in (("raw", state["model"]), ("ema", (state.get("ema") or {}).get("model"))):
        if weights is None:
            results[kind] = None
            continue
        model = ConvNet(spec)
        model.load_state_dict(weights)
        model.to(dev).to(memory_format=torch.channels_last)
        if (runtime, precision) != ("torch", "fp32"):
            from effnet.runtime import runtime_module

            model = runtime_module(model.eval(), runtime, precision, calibration=calibration_batch,
                                   resolution=cfg.resolution, batch=batch_size)
        counted = None if progress is None else (lambda done, kind=kind: progress(kind, done, len(source)))
        results[kind] = evaluate(model, loader, device=dev, channels_last=True, strict=strict, progress=counted)
    return results


def _load(checkpoint: str) -> dict[str, Any]:
    """A checkpoint file, or a run folder's newest good step checkpoint: the check a resume makes, without moving
    the bad ones aside (the run's own trainer does that)."""
    from pathlib import Path

    from effnet.train import run_folder

    if not Path(checkpoint).is_dir():
        return load_checkpoint(checkpoint)
    state = run_folder.choose_checkpoint(checkpoint, RESUME_KEYS, rename=False)
    if state is None:
        raise CheckpointError(f"{checkpoint}: no checkpoints/step-*.pt in this run folder; nothing to evaluate")
    return state


def train_split_calibration(data: str, classes: tuple[str, ...], config: ModelConfig, count: int, *,
                            crop_fraction: float, seed: int = 0) -> torch.Tensor:
    """`count` images of `data`'s train split (a fixed random subset), preprocessed exactly as for evaluation:
    the int8 calibration set for a model trained on `data`."""
    from effnet.data import DataError

    try:
        source = open_source(data, "train", classes=None if _is_fmnist(data) else classes)
        check_usable(source, min_classes=1)
    except DataError as exc:
        raise DataError(f"int8 calibration draws images from the train split: {exc}") from None
    loader = eval_loader(fixed_subset(source, count, seed), config, batch_size=count, workers=0,
                         crop_fraction=crop_fraction)
    batches = [images for images, _, _ in loader if images is not None]
    if not batches:
        raise EffnetError(f"{data}: none of the {count} calibration images of the train split could be read")
    return torch.cat(batches)


def _is_fmnist(data: str) -> bool:
    from effnet.data import is_fashion_mnist

    return is_fashion_mnist(str(data))
