"""Training augmentation (the paper's recipe); evaluation preprocessing is `effnet.transforms.eval_transform`.

Training, as in the reference code: random-resized ("Inception") crop with area in [0.08, 1] → horizontal flip →
AutoAugment (ImageNet policy) or RandAugment → [0, 1] → normalise.  Grey sources (Fashion-MNIST) are repeated to
3 channels so that pretrained RGB models apply unchanged.  `eval_transform` and `GreyToRGB` are re-exported here
for the data pipeline's callers.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from effnet.preprocessing import ModelConfig
from effnet.transforms import GreyToRGB, eval_transform, interpolation_mode, normalize

AUGMENTATIONS = ("autoaugment", "randaugment", "none")

__all__ = ["AUGMENTATIONS", "GreyToRGB", "eval_transform", "train_transform"]


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
    ops.append(normalize(config))
    return v2.Compose(ops)
