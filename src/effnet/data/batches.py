"""Which path makes a split's batches: the in-memory batched path (`effnet.data.batched`) where the split is held
as one uint8 tensor and its augmentation can be batched exactly, else the per-sample path (`TransformedSource`
in a `DataLoader`).  Training asks here for batches and never sees which path made them: both give
(images, labels, skipped) batches, equal for the same (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Iterable

from torch.utils.data import DataLoader

from effnet.data.batched import (
    BatchedEvalLoader,
    BatchedTrainLoader,
    BatchTrainTransform,
    batched_source,
    in_memory,
)
from effnet.data.loader import ResumableSampler, ShardSampler, TransformedSource, collate
from effnet.data.sources import ImageSource
from effnet.data.transforms import eval_transform, train_transform
from effnet.preprocessing import ModelConfig

BATCHED_AUGMENTATIONS = ("none",)
"""The policies the batched path reproduces exactly (crop and flip only); AutoAugment and RandAugment keep the
per-sample path."""

EVAL_BATCH = 1000
"""Images per evaluation batch on the batched path (the per-sample path keeps the training batch)."""


def data_path(source: ImageSource, *, augment: str | None, batched: bool = True) -> str:
    """'batched' or 'per-sample': the path `train_batches` (augment given) or `eval_batches` (None) takes."""
    if not batched or (augment is not None and augment not in BATCHED_AUGMENTATIONS):
        return "per-sample"
    return "batched" if in_memory(source) else "per-sample"


def train_batches(source: ImageSource, config: ModelConfig, *, batch_size: int, seed: int, rank: int = 0,
                  world_size: int = 1, workers: int = 0, augment: str = "autoaugment", randaugment_n: int = 2,
                  randaugment_m: int = 9, crop_scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True,
                  batched: bool = True) -> tuple[Iterable, ResumableSampler]:
    """Whole training batches of this rank, in the order of the returned sampler (`set_position` chooses the
    epoch and where in it to start), and that sampler."""
    data = batched_source(source) if data_path(source, augment=augment, batched=batched) == "batched" else None
    if data is not None:
        sampler = ResumableSampler(data, num_replicas=world_size, rank=rank, seed=seed)
        transform = BatchTrainTransform(config, crop_scale=crop_scale, hflip=hflip, grayscale=source.grayscale)
        return BatchedTrainLoader(data, transform, sampler, batch_size), sampler
    transform = train_transform(config, augment=augment, randaugment_n=randaugment_n, randaugment_m=randaugment_m,
                                crop_scale=crop_scale, hflip=hflip, grayscale=source.grayscale)
    dataset = TransformedSource(source, transform)
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                        collate_fn=collate, persistent_workers=False)
    return loader, sampler


def eval_batches(source: ImageSource, config: ModelConfig, *, batch_size: int, workers: int = 0,
                 crop_fraction: float | None = None, rank: int = 0, world_size: int = 1,
                 batched: bool = True) -> Iterable:
    """This rank's shard of `source` (rank r takes r, r + world, ...), preprocessed for evaluation; in batches of
    `EVAL_BATCH` (at least `batch_size`) on the batched path."""
    shard = ShardSampler(len(source), num_replicas=world_size, rank=rank)
    data = batched_source(source) if data_path(source, augment=None, batched=batched) == "batched" else None
    if data is not None:
        return BatchedEvalLoader(data, config, indices=shard.indices, batch_size=max(batch_size, EVAL_BATCH),
                                 crop_fraction=crop_fraction)
    dataset = TransformedSource(source, eval_transform(config, grayscale=source.grayscale, crop_fraction=crop_fraction))
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=workers, collate_fn=collate)


__all__ = ["BATCHED_AUGMENTATIONS", "EVAL_BATCH", "data_path", "eval_batches", "train_batches"]
