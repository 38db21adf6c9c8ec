"""The in-memory batched path: a split that fits in memory held as one uint8 tensor (Fashion-MNIST; an image
folder whose images share one size and fit in `FOLDER_BYTES`, decoded once), its training crop, resize and flip
run on a whole batch as tensor ops, and evaluation read from the same tensor in large batches.

Each sample's crop box and flip are still drawn from its own seed, (seed, epoch, index) mixed by `mix_seed`, with
the same draws, in the same order, as torchvision's `RandomResizedCrop` and `RandomHorizontalFlip` make on the
per-sample path (`effnet.data.transforms.train_transform`); crops of one size are resized together by the same
torchvision kernel, so a batch here equals, bit for bit, the per-sample path's batch for the same keys
(tests/test_data_batched.py).  The batch therefore depends on (seed, epoch, index) only: not on worker count, not
on which path made it, and `--resume` continues exactly.

What cannot be batched exactly keeps the per-sample path (`effnet.data.batches` chooses): AutoAugment and
RandAugment (per-sample operation choices), image folders of mixed sizes, too large, or with an unreadable file
(which the per-sample path skips and counts).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from effnet.data.images import UnreadableImage, load_image
from effnet.data.loader import SubsetSource, mix_seed
from effnet.data.sources import FashionMNISTSource, ImageFolderSource, ImageSource
from effnet.preprocessing import ModelConfig, resize_size
from effnet.transforms import interpolation_mode, normalize

RATIO = (3.0 / 4.0, 4.0 / 3.0)
"""`RandomResizedCrop`'s aspect-ratio range (torchvision's default, which the per-sample path uses)."""


@dataclass(frozen=True)
class TensorImages:
    """A split in memory: `images` (N, C, H, W) uint8 and `targets` (N,) int64, in the source's order."""

    images: torch.Tensor
    targets: torch.Tensor
    grayscale: bool

    def __len__(self) -> int:
        return len(self.targets)


FOLDER_BYTES = 1 << 30
"""An image folder is held in memory when its images, decoded, take at most this many bytes."""


def in_memory(source: ImageSource) -> bool:
    """Whether `source` (or the source it is a subset of) can be held in memory as one uint8 tensor: Fashion-MNIST,
    or an image folder whose images all have one size, all open, and fit in `FOLDER_BYTES` decoded."""
    while isinstance(source, SubsetSource):
        source = source.base
    if isinstance(source, FashionMNISTSource):
        return True
    return isinstance(source, ImageFolderSource) and _folder_size(source) is not None


def _folder_size(source: ImageFolderSource) -> tuple[int, int] | None:
    """(height, width) shared by every image of the folder within `FOLDER_BYTES`, from the files' headers; None
    otherwise (kept on the source: the scan is made once)."""
    if not hasattr(source, "_common_size"):
        sizes = set()
        for path in source.paths:
            try:
                with Image.open(path) as image:
                    sizes.add(image.size)
            except Exception:  # an unreadable file: the per-sample path skips and counts it
                sizes = set()
                break
            if len(sizes) > 1:
                break
        size = next(iter(sizes)) if len(sizes) == 1 else None
        if size is not None and 3 * size[0] * size[1] * len(source.paths) > FOLDER_BYTES:
            size = None
        source._common_size = None if size is None else (size[1], size[0])
    return source._common_size


def _decoded_folder(source: ImageFolderSource) -> TensorImages | None:
    """Every image of the folder decoded once, as the per-sample path decodes it (RGB, then torchvision's
    `to_image`), in one uint8 tensor; None if the folder does not qualify or an image fails to decode."""
    if not hasattr(source, "_decoded"):
        decoded = None
        if _folder_size(source) is not None:
            try:
                images = [F.to_image(load_image(p)).as_subclass(torch.Tensor) for p in source.paths]
                decoded = TensorImages(torch.stack(images), torch.tensor(source.targets, dtype=torch.long), False)
            except (UnreadableImage, RuntimeError):  # a damaged file, or one whose pixels differ from its header
                decoded = None
        source._decoded = decoded
    return source._decoded


def batched_source(source: ImageSource) -> TensorImages | None:
    """`source` as one uint8 tensor, or None where it is not held in memory as one (`in_memory`)."""
    if isinstance(source, SubsetSource):
        base = batched_source(source.base)
        if base is None:
            return None
        index = torch.tensor(source.indices, dtype=torch.long)
        return TensorImages(base.images[index], base.targets[index], base.grayscale)
    if isinstance(source, FashionMNISTSource):
        return TensorImages(source.images.unsqueeze(1), torch.tensor(source.targets, dtype=torch.long), True)
    if isinstance(source, ImageFolderSource):
        return _decoded_folder(source)
    return None


@dataclass(frozen=True)
class CropFlip:
    """One sample's random-resized-crop box (top, left, height, width) and whether it is flipped."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw_crop_flip(seed: int, height: int, width: int, scale: tuple[float, float], hflip: bool,
                   generator: torch.Generator | None = None) -> CropFlip:
    """The crop box and flip the per-sample path draws for a `height` x `width` image seeded with `seed`: the same
    calls on the same stream as torchvision's `RandomResizedCrop.make_params` then `RandomHorizontalFlip`."""
    g = generator if generator is not None else torch.Generator()
    g.manual_seed(seed)
    area = height * width
    log_ratio = torch.log(torch.tensor(RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            break
    else:
        i, j, h, w = _central(height, width)
    flip = bool(hflip and torch.rand(1, generator=g).item() < 0.5)
    return CropFlip(i, j, h, w, flip)


_WORDS = 23
"""32-bit draws one sample's crop and flip can use: 10 attempts of two, then two for the box's corner, one for
the flip."""


@functools.cache
def _stream_matches() -> bool:
    """Whether numpy's legacy-seeded MT19937 gives the 32-bit draws torch's CPU generator makes for the same seed
    (torch seeds its Mersenne Twister with the seed's low 32 bits; a float32 uniform is a draw's low 24 bits)."""
    seed = mix_seed(0x57EA)
    g = torch.Generator().manual_seed(seed)
    u = torch.empty(_WORDS).uniform_(0, 1, generator=g).tolist()
    rs = np.random.RandomState(seed & 0xFFFFFFFF)
    return u == ((rs.randint(0, 1 << 32, size=_WORDS, dtype=np.uint32) & 0xFFFFFF) / (1 << 24)).tolist()


def draw_crop_flips(seeds: Sequence[int], height: int, width: int, scale: tuple[float, float], hflip: bool,
                    generator: torch.Generator | None = None) -> list[CropFlip]:
    """`draw_crop_flip` for many seeds at once: each sample's 32-bit draws are taken from the same Mersenne
    Twister stream in one call, and the ten attempts evaluated together in float64.  Where torchvision's float32
    arithmetic (off by less than 1e-6, relative) could round a side the other way (one within a relative 1e-5 of
    a half pixel), the sample is drawn again by `draw_crop_flip`; so is every sample if the streams differ."""
    g = generator if generator is not None else torch.Generator()
    if not _stream_matches():
        return [draw_crop_flip(s, height, width, scale, hflip, g) for s in seeds]
    words = np.empty((len(seeds), _WORDS), dtype=np.int64)
    rs = np.random.RandomState(0)
    for k, seed in enumerate(seeds):
        rs.seed(seed & 0xFFFFFFFF)
        words[k] = rs.randint(0, 1 << 32, size=_WORDS, dtype=np.uint32)
    x = (words & 0xFFFFFF).astype(np.float64) / (1 << 24)  # a float32 uniform's 24 bits, exactly
    s0, s1 = (float(np.float32(v)) for v in scale)
    r0, r1 = (float(v) for v in torch.log(torch.tensor(RATIO)))
    target = height * width * (s0 + x[:, 0:20:2] * (s1 - s0))
    aspect = np.exp(r0 + x[:, 1:20:2] * (r1 - r0))
    wf, hf = np.sqrt(target * aspect), np.sqrt(target / aspect)
    w, h = np.round(wf).astype(np.int64), np.round(hf).astype(np.int64)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    near = (np.abs(wf - np.floor(wf) - 0.5) < 1e-5 * np.maximum(wf, 1)) | (
        np.abs(hf - np.floor(hf) - 0.5) < 1e-5 * np.maximum(hf, 1))
    first = np.where(valid.any(1), valid.argmax(1), 10)
    unsure = (near & (np.arange(10) <= first[:, None])).any(1).tolist()
    first = first.tolist()
    out = []
    for k, seed in enumerate(seeds):
        a = first[k]
        if unsure[k]:
            out.append(draw_crop_flip(seed, height, width, scale, hflip, g))
            continue
        if a < 10:
            hh, ww = int(h[k, a]), int(w[k, a])
            top, left = int(words[k, 2 * a + 2] % (height - hh + 1)), int(words[k, 2 * a + 3] % (width - ww + 1))
            flip_word = 2 * a + 4
        else:
            top, left, hh, ww = _central(height, width)
            flip_word = 20
        out.append(CropFlip(top, left, hh, ww, bool(hflip and x[k, flip_word] < 0.5)))
    return out


def _central(height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's fallback after ten failed attempts: the central crop of the clamped aspect ratio."""
    in_ratio = float(width) / float(height)
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        h, w = height, int(round(height * max(RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class BatchTrainTransform:
    """uint8 (n, C, H, W) and each sample's seed → normalised float (n, 3, res, res): random-resized crop,
    horizontal flip, grey to RGB, [0, 1], normalise — `train_transform(..., augment="none")` on a whole batch."""

    def __init__(self, config: ModelConfig, *, crop_scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True,
                 grayscale: bool = False) -> None:
        self.size = [config.resolution, config.resolution]
        self.interpolation = interpolation_mode(config.interpolation)
        self.scale, self.hflip, self.grayscale = tuple(crop_scale), hflip, grayscale
        self.normalize = normalize(config)
        self._generator = torch.Generator()

    def params(self, seeds: Sequence[int], height: int, width: int) -> list[CropFlip]:
        return draw_crop_flips(seeds, height, width, self.scale, self.hflip, self._generator)

    def __call__(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        n, channels, height, width = images.shape
        boxes = self.params(seeds, height, width)
        out = torch.empty((n, channels, *self.size), dtype=images.dtype)
        groups: dict[tuple[int, int], list[int]] = {}
        for k, b in enumerate(boxes):
            groups.setdefault((b.height, b.width), []).append(k)
        for (h, w), members in groups.items():
            if all(boxes[k].top == boxes[members[0]].top and boxes[k].left == boxes[members[0]].left
                   for k in members):
                b = boxes[members[0]]
                crops = images[members, :, b.top:b.top + h, b.left:b.left + w]
            else:
                crops = torch.stack([images[k, :, boxes[k].top:boxes[k].top + h, boxes[k].left:boxes[k].left + w]
                                     for k in members])
            out[members] = F.resize_image(crops, self.size, interpolation=self.interpolation, antialias=True)
        flips = [k for k, b in enumerate(boxes) if b.flip]
        if flips:
            out[flips] = out[flips].flip(-1)
        if self.grayscale and channels == 1:
            out = out.expand(-1, 3, -1, -1)
        return self.normalize(out.contiguous())


def batch_eval_transform(images: torch.Tensor, config: ModelConfig, *, grayscale: bool,
                         crop_fraction: float | None = None) -> torch.Tensor:
    """uint8 (n, C, H, W) → normalised float (n, 3, res, res): `eval_transform` on a whole batch (grey to RGB,
    resize the shorter side to res / crop_fraction, centre crop, [0, 1], normalise)."""
    if crop_fraction is not None:
        config = ModelConfig(config.resolution, crop_fraction, config.interpolation, config.mean, config.std)
    if grayscale and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    images = F.resize(images, resize_size(config), interpolation=interpolation_mode(config.interpolation),
                      antialias=True)
    images = F.center_crop(images, [config.resolution, config.resolution])
    return normalize(config)(images)


class BatchedTrainLoader:
    """Training batches of a `TensorImages` in the order of a `ResumableSampler` (which yields (index, seed)
    pairs), whole batches only; yields (images, labels, skipped) as the per-sample DataLoader does."""

    def __init__(self, data: TensorImages, transform: BatchTrainTransform, sampler, batch_size: int) -> None:
        self.data, self.transform, self.sampler, self.batch_size = data, transform, sampler, batch_size

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        keys = list(iter(self.sampler))
        for start in range(0, len(keys) - self.batch_size + 1, self.batch_size):
            chunk = keys[start:start + self.batch_size]
            index = torch.tensor([i for i, _ in chunk], dtype=torch.long)
            images = self.transform(self.data.images[index], [s for _, s in chunk])
            yield images, self.data.targets[index], []


class BatchedEvalLoader:
    """Evaluation batches of a `TensorImages`: the `indices` (a shard) in order, `batch_size` at a time."""

    def __init__(self, data: TensorImages, config: ModelConfig, *, indices: Sequence[int], batch_size: int,
                 crop_fraction: float | None = None) -> None:
        self.data, self.config, self.batch_size, self.crop_fraction = data, config, batch_size, crop_fraction
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        for start in range(0, len(self.indices), self.batch_size):
            index = self.indices[start:start + self.batch_size]
            images = batch_eval_transform(self.data.images[index], self.config, grayscale=self.data.grayscale,
                                          crop_fraction=self.crop_fraction)
            yield images, self.data.targets[index], []


__all__ = ["BatchTrainTransform", "BatchedEvalLoader", "BatchedTrainLoader", "CropFlip", "TensorImages",
           "batch_eval_transform", "batched_source", "in_memory", "draw_crop_flip", "draw_crop_flips"]
