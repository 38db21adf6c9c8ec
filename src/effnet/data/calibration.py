"""Calibration and evaluation sets of real-photo views for the lossy (int8, bf16) inference paths.

The photos (`effnet.data.photos`) are split by photo, never by crop: calibration uses the even-numbered half,
evaluation the odd, so quantization ranges are never fitted to the images they are judged on.  Each photo gives
several views (the centre crop of the eval transform plus seeded random crops and flips), so a few hundred inputs
come from ~11 photos.  The views are preprocessed with the model's `ModelConfig` — pass the config the model is run
with (e.g. a weights file's own normalisation) so that calibration sees the inputs inference will.  A model trained
on a dataset calibrates on its train split instead (`effnet.train.evaluate.train_split_calibration`).
"""

from __future__ import annotations

import numpy as np
import torch

from effnet.data.photos import PHOTO_NAMES, photos
from effnet.data.transforms import train_transform
from effnet.errors import EffnetError
from effnet.preprocessing import ModelConfig
from effnet.registry import get_config
from effnet.spec import NetSpec
from effnet.transforms import eval_transform

SPLITS = ("calibration", "evaluation")
_RANDOM_CROP_SCALE = (0.2, 1.0)  # random views keep at least a fifth of the photo


def _config(model: str | NetSpec | ModelConfig, resolution: int | None) -> ModelConfig:
    if not isinstance(model, ModelConfig):
        return get_config(model, resolution)
    if resolution is not None and resolution != model.resolution:
        raise EffnetError(f"resolution {resolution}: a ModelConfig carries its own ({model.resolution}); pass a "
                          "model name or spec to take the registry's preprocessing at another resolution")
    return model


def _views(image: np.ndarray, config: ModelConfig, count: int, seed: int) -> torch.Tensor:
    """The eval centre crop, then `count - 1` seeded random crops and flips (the global RNG is left as it was)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    views = [eval_transform(config)(tensor)]
    random_view = train_transform(config, augment="none", crop_scale=_RANDOM_CROP_SCALE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        views += [random_view(tensor) for _ in range(count - 1)]
    return torch.stack(views)


def photo_batch(
    model: str | NetSpec | ModelConfig, split: str, views_per_photo: int = 16, resolution: int | None = None
) -> torch.Tensor:
    """Preprocessed views of the `split` ("calibration": even-numbered photos, "evaluation": odd) photos.

    `model` is a model name or spec (the registry's preprocessing, at `resolution` if given) or a `ModelConfig`."""
    if split not in SPLITS:
        raise EffnetError(f"photo_batch: split got {split!r}, expected 'calibration' or 'evaluation'")
    config = _config(model, resolution)
    chosen = photos()[SPLITS.index(split)::2]
    return torch.cat([_views(img, config, views_per_photo, seed=i) for i, (_, img) in enumerate(chosen)])


def calibration_images(
    model: str | NetSpec | ModelConfig, count: int = 64, resolution: int | None = None
) -> torch.Tensor:
    """`count` real-photo views for int8 calibration, disjoint (by photo) from the evaluation views."""
    per_photo = max(1, -(-count // len(PHOTO_NAMES[0::2])))
    return photo_batch(model, "calibration", per_photo, resolution)[:count]


__all__ = ["SPLITS", "calibration_images", "photo_batch"]
