"""Evaluation preprocessing from a model's `ModelConfig`: the one place that turns an image into model input.

resize the shorter side to resolution / crop_fraction → centre-crop resolution → tensor in [0, 1] → normalise.
Training augmentation lives in `effnet.data`.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2

from effnet.registry import ModelConfig

_INTERPOLATION = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "nearest": v2.InterpolationMode.NEAREST,
}


def interpolation_mode(name: str) -> v2.InterpolationMode:
    try:
        return _INTERPOLATION[name]
    except KeyError:
        raise ValueError(f"interpolation: got {name!r}, expected one of {sorted(_INTERPOLATION)}") from None


def resize_size(config: ModelConfig) -> int:
    """Shorter side before the centre crop: floor(resolution / crop_fraction), as timm does; the small epsilon
    keeps float error from losing a pixel (res / (res / (res + 32)) must give res + 32, not res + 31)."""
    return int(math.floor(config.resolution / config.crop_fraction + 1e-6))


def eval_transform(config: ModelConfig) -> v2.Compose:
    """PIL image or uint8 tensor (C, H, W) → normalised float tensor (3, res, res)."""
    resize = resize_size(config)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=interpolation_mode(config.interpolation), antialias=True),
        v2.CenterCrop(config.resolution),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(config.mean), std=list(config.std)),
    ])
