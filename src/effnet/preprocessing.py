"""What a model's input preprocessing is, as plain data: `ModelConfig`, the normalisation constants and the rules
for the eval crop and the resize interpolation.

A leaf module (no torch, no other effnet module): the registry gives each model name a `ModelConfig`, a weights file
may record its own (`effnet.weights.preprocessing_config`), and `effnet.transforms` turns either into torchvision
operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-trained Lite checkpoints take (x·255 − 127) / 128, i.e. mean 127/255 and std 128/255 on [0, 1] pixels.
INCEPTION_MEAN = (127 / 255,) * 3
INCEPTION_STD = (128 / 255,) * 3

# The resize interpolations a config may name (torchvision's InterpolationMode values of the same names).
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class ModelConfig:
    """How to feed a model at evaluation: resize the shorter side to resolution / crop_fraction, centre-crop
    `resolution`, scale to [0, 1], normalise with mean/std."""

    resolution: int
    crop_fraction: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def default_crop_fraction(resolution: int) -> float:
    """The TF reference's eval crop: resize to resolution + 32 and centre-crop (CROP_PADDING = 32)."""
    return resolution / (resolution + 32)


def resize_size(config: ModelConfig) -> int:
    """Shorter side before the centre crop: floor(resolution / crop_fraction), as timm does; the small epsilon
    keeps float error from losing a pixel (res / (res / (res + 32)) must give res + 32, not res + 31)."""
    return int(math.floor(config.resolution / config.crop_fraction + 1e-6))


def check_interpolation(name: str) -> str:
    """`name` if it is one of `INTERPOLATIONS`, else a `ValueError` naming the choices."""
    if name not in INTERPOLATIONS:
        raise ValueError(f"interpolation: got {name!r}, expected one of {sorted(INTERPOLATIONS)}")
    return name


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "INTERPOLATIONS", "ModelConfig",
    "check_interpolation", "default_crop_fraction", "resize_size",
]
