"""Training augmentation (the paper's recipe) and evaluation preprocessing for any source.

Training, as in the reference code: random-resized ("Inception") crop with area in [0.08, 1] → horizontal flip →
AutoAugment (ImageNet policy) or RandAugment → [0, 1] → normalise.  Evaluation reuses `effnet.transforms`, the one
place that defines a model's eval preprocessing.  Grey sources (Fashion-MNIST) are repeated to 3 channels first so
that pretrained RGB models apply unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torchvision.transforms import v2

from effnet.registry import ModelConfig
from effnet.transforms import eval_transform as model_eval_transform
from effnet.transforms import interpolation_mode

AUGMENTATIONS = ("autoaugment", "randaugment", "none")


class GreyToRGB(torch.nn.Module):
    """(1, H, W) → (3, H, W) by repetition; 3-channel input passes through."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.repeat(3, 1, 1) if img.shape[-3] == 1 else img


def train_transform(
    config: ModelConfig,
    *,
    augment: str = "autoaugment",
    randaugment_n: int = 2,
    randaugment_m: int = 9,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    grayscale: bool = False,
) -> v2.Compose:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment: got {augment!r}, expected one of {AUGMENTATIONS}")
    # Grey images are cropped and flipped on their one channel and repeated to three after (the same pixels as
    # repeating first, at a third of the cost); the colour augmentations below need three channels.
    ops: list[torch.nn.Module] = [v2.ToImage()]
    ops.append(v2.RandomResizedCrop(
        config.resolution, scale=crop_scale, interpolation=interpolation_mode(config.interpolation), antialias=True
    ))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if grayscale:
        ops.append(GreyToRGB())
    if augment == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=randaugment_n, magnitude=randaugment_m))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(config.mean), std=list(config.std))]
    return v2.Compose(ops)


def eval_transform(config: ModelConfig, *, grayscale: bool = False, crop_fraction: float | None = None) -> v2.Compose:
    """The model's eval preprocessing; `crop_fraction` overrides the config's (1.0 = resize the whole image)."""
    if crop_fraction is not None:
        config = replace(config, crop_fraction=crop_fraction)
    ops: list[torch.nn.Module] = [v2.ToImage()]
    if grayscale:
        ops.append(GreyToRGB())
    ops.append(model_eval_transform(config))
    return v2.Compose(ops)
