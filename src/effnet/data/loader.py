"""From a source to batches: per-sample seeded augmentation, skip-and-count of unreadable images, and a
resumable distributed sampler.

Determinism is what makes `--resume` exact: the sampler's order is a function of (seed, epoch), and each sample's
augmentation is seeded from (seed, epoch, index), so a batch does not depend on worker count, on how many batches
came before it in this process, or on the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from effnet.data.images import Skipped, UnreadableImage
from effnet.data.sources import ImageSource

_MASK63 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style), so nearby (epoch, index) pairs get unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & ((1 << 64) - 1)
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK63


class TransformedSource(Dataset):
    """`source` with `transform`; keys are (index, seed) pairs from `ResumableSampler` or plain indices."""

    def __init__(self, source: ImageSource, transform: Callable[[Any], torch.Tensor]) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | Skipped:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            image, label = self.source.load(index)
        except UnreadableImage as exc:
            return Skipped(exc.path, exc.reason)
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            seed_cpu(seed)
            return self.transform(image), label


def seed_cpu(seed: int) -> None:
    """Seed the CPU generator only (the same stream as `torch.manual_seed`).  `torch.manual_seed` also schedules a
    CUDA seeding and, while CUDA is not initialised, records a stack trace for it on every call: per sample of a
    small image that was a fifth of the loading time."""
    torch.default_generator.manual_seed(seed)


def collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Skipped]]:
    """(images, labels, skipped) — images/labels are None when every sample of the batch was unreadable."""
    good = [it for it in items if not isinstance(it, Skipped)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not good:
        return None, None, skipped
    images = torch.stack([g[0] for g in good])
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    return images, labels, skipped


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (order from seed + epoch, rank r takes every world-th index) that can start part-way
    through an epoch and yields (index, augmentation seed) pairs."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True,
                 augment_seeds: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0
        self.augment_seeds = augment_seeds

    def set_position(self, epoch: int, start: int) -> None:
        """Begin epoch `epoch` at this rank's `start`-th sample (= batches done × per-rank batch size)."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.start :]
        if not self.augment_seeds:
            return iter(indices)
        return iter((i, mix_seed(self.seed, self.epoch, i)) for i in indices)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation: rank r takes indices r, r+world, ... with no padding, so summed counts are exact."""

    def __init__(self, length: int, *, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def subset_indices(length: int, size: int | None, seed: int) -> list[int] | None:
    """A fixed random subset of `size` indices (sorted), or None for all."""
    if size is None or size >= length:
        return None
    g = torch.Generator().manual_seed(mix_seed(seed, 0x5B5E7))
    return sorted(torch.randperm(length, generator=g)[:size].tolist())


class SubsetSource(ImageSource):
    """The images of `source` at `indices`, in that order."""

    def __init__(self, source: ImageSource, indices: list[int], name: str | None = None) -> None:
        self.base, self.indices = source, indices
        self.name = name or f"{source.name} (subset of {len(indices)})"
        self.classes, self.grayscale = source.classes, source.grayscale
        self.targets = [source.targets[i] for i in indices]

    def load(self, index: int) -> tuple[Any, int]:
        return self.base.load(self.indices[index])


def fixed_subset(source: ImageSource, size: int | None, seed: int) -> ImageSource:
    """`source` cut to its fixed random subset of `size` images (`subset_indices`), or `source` itself."""
    idx = subset_indices(len(source), size, seed)
    return source if idx is None else SubsetSource(source, idx)
