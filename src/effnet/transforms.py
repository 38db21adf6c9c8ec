"""Evaluation preprocessing from a model's `ModelConfig`: the one place that turns an image into model input.

resize the shorter side to resolution / crop_fraction → centre-crop resolution → tensor in [0, 1] → normalise.
`normalize` (the last two steps) is shared with the training augmentation in `effnet.data.transforms`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torchvision.transforms import v2

from effnet.preprocessing import ModelConfig, check_interpolation, resize_size

__all__ = ["GreyToRGB", "eval_transform", "interpolation_mode", "normalize", "resize_size"]


def interpolation_mode(name: str) -> v2.InterpolationMode:
    """torchvision's mode for an interpolation name (`effnet.preprocessing.INTERPOLATIONS`)."""
    return v2.InterpolationMode(check_interpolation(name))


class GreyToRGB(torch.nn.Module):
    """(1, H, W) → (3, H, W) by repetition; 3-channel input passes through."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.repeat(3, 1, 1) if img.shape[-3] == 1 else img


def normalize(config: ModelConfig) -> v2.Compose:
    """uint8 image → float in [0, 1] → (x − mean) / std with the config's mean and std."""
    return v2.Compose([
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(config.mean), std=list(config.std)),
    ])


def eval_transform(config: ModelConfig, *, grayscale: bool = False, crop_fraction: float | None = None) -> v2.Compose:
    """PIL image or uint8 tensor (C, H, W) → normalised float tensor (3, res, res).

    grayscale: repeat a one-channel source (Fashion-MNIST) to three channels first, so RGB models apply unchanged.
    crop_fraction: overrides the config's (1.0 = resize the whole image)."""
    if crop_fraction is not None:
        config = replace(config, crop_fraction=crop_fraction)
    return v2.Compose([
        v2.ToImage(),
        *([GreyToRGB()] if grayscale else []),
        v2.Resize(resize_size(config), interpolation=interpolation_mode(config.interpolation), antialias=True),
        v2.CenterCrop(config.resolution),
        normalize(config),
    ])
