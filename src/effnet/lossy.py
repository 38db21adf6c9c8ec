"""Real photos for the lossy paths: int8 calibration images and the top-1 agreement test.

The photos are the ones scikit-image and scikit-learn ship (no download): 12 colour and 10 greyscale images —
people, a cat, coffee, a rocket, a horse, a camera man, coins, a clock, textures, micrographs, a palace, a flower.
They are split by photo, never by crop: calibration uses one half, evaluation the other, so the quantization
ranges are never fitted to the images they are judged on.  Each photo gives several views (the centre crop of
the model's eval transform plus seeded random crops and flips), so a few hundred inputs come from ~11 photos.

The measure: top-1 of the lossy path equals top-1 of eager fp32 (same weights) on each view.  No ImageNet
labels exist for these photos, so accuracy *change* is bounded by disagreement: if the paths agree on a view,
that view's correctness cannot differ, so |Δ top-1| ≤ 100 % − agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from effnet.errors import EffnetError
from effnet.spec import NetSpec

_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "colorwheel", "stereo_motorcycle", "logo")
_GREY = ("horse", "camera", "coins", "page", "grass", "gravel", "brick", "moon", "clock", "text")


class PhotosUnavailable(EffnetError, ImportError):
    """scikit-image / scikit-learn are not installed."""


_SKLEARN = ("china", "flower")
PHOTO_NAMES = _COLOUR + _GREY + tuple(f"sklearn_{n}" for n in _SKLEARN)


def photos(names: str | Iterable[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) for every bundled photo (or those in `names`, see PHOTO_NAMES), in a fixed order."""
    wanted = PHOTO_NAMES if names is None else (names,) if isinstance(names, str) else tuple(names)
    unknown = sorted(set(wanted) - set(PHOTO_NAMES))
    if unknown:
        raise EffnetError(f"photos: unknown photo(s) {unknown}; expected names from {list(PHOTO_NAMES)}")
    try:
        import skimage.data as data
        from sklearn.datasets import load_sample_image
    except ImportError:
        raise PhotosUnavailable("real photos need scikit-image and scikit-learn: pip install 'effnet[photos]'") \
            from None
    out = []
    for name in (n for n in PHOTO_NAMES if n in wanted):
        if name.startswith("sklearn_"):
            out.append((name, load_sample_image(name.removeprefix("sklearn_") + ".jpg").copy()))  # writable
            continue
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image
        if image.dtype != np.uint8:
            image = (255 * (image.astype(np.float64) / max(image.max(), 1))).astype(np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        out.append((name, np.ascontiguousarray(image[..., :3])))
    return out


def _views(image: np.ndarray, config, count: int, seed: int) -> torch.Tensor:
    from torchvision.transforms import v2

    from effnet.transforms import eval_transform, interpolation_mode

    tensor = torch.from_numpy(image).permute(2, 0, 1)
    views = [eval_transform(config)(tensor)]
    random_crop = v2.Compose([
        v2.RandomResizedCrop(config.resolution, scale=(0.2, 1.0),
                             interpolation=interpolation_mode(config.interpolation), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(config.mean), std=list(config.std)),
    ])
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        views += [random_crop(tensor) for _ in range(count - 1)]
    finally:
        torch.random.set_rng_state(generator_state)
    return torch.stack(views)


def photo_batch(
    model_name: str | NetSpec, split: str, views_per_photo: int = 16, resolution: int | None = None
) -> torch.Tensor:
    """Preprocessed views of the `split` ("calibration": even-numbered photos, "evaluation": odd) photos."""
    from effnet.registry import get_config

    if split not in ("calibration", "evaluation"):
        raise EffnetError(f"photo_batch: split got {split!r}, expected 'calibration' or 'evaluation'")
    config = get_config(model_name, resolution)
    chosen = photos()[0 if split == "calibration" else 1::2]
    return torch.cat([_views(img, config, views_per_photo, seed=i) for i, (_, img) in enumerate(chosen)])


def calibration_images(model_name: str | NetSpec, count: int = 64, resolution: int | None = None) -> torch.Tensor:
    """`count` real-photo views for int8 calibration, disjoint (by photo) from the evaluation views."""
    per_photo = max(1, -(-count // (len(_COLOUR + _GREY) // 2 + 1)))
    return photo_batch(model_name, "calibration", per_photo, resolution)[:count]


@dataclass(frozen=True)
class Agreement:
    path: str
    images: int
    top1_agreement: float  # fraction of views whose top-1 equals fp32's
    top5_contains_fp32_top1: float
    max_abs_logit_error: float
    bound_top1_change_pp: float  # |Δ top-1| ≤ this, in percentage points
    confident_images: int  # views where fp32's top-1 probability is at least CONFIDENT
    confident_top1_agreement: float


CONFIDENT = 0.5


def agreement(reference: torch.Tensor, logits: torch.Tensor, path: str) -> Agreement:
    """Agreement overall, and on the views fp32 is confident about (p(top-1) ≥ 0.5): photos far from ImageNet
    (micrographs, textures, text) have near-ties among classes that any rounding can swap."""
    ref_top1 = reference.argmax(1)
    same = logits.argmax(1) == ref_top1
    top5 = (logits.topk(5, dim=1).indices == ref_top1[:, None]).any(1).float().mean().item()
    err = (logits - reference).abs().max().item()
    confident = reference.softmax(1).max(1).values >= CONFIDENT
    n_conf = int(confident.sum())
    conf_agree = same[confident].float().mean().item() if n_conf else float("nan")
    agree = same.float().mean().item()
    return Agreement(path, len(reference), agree, top5, err, 100 * (1 - agree), n_conf, conf_agree)


def measure_agreement(
    fp32: Callable[[torch.Tensor], torch.Tensor],
    paths: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    images: torch.Tensor,
    batch: int = 32,
) -> list[Agreement]:
    """Top-1 agreement of each lossy path with the fp32 reference on `images`."""

    def run(fn):
        with torch.inference_mode():
            return torch.cat([torch.as_tensor(fn(images[i:i + batch])).float() for i in range(0, len(images), batch)])

    reference = run(fp32)
    return [agreement(reference, run(fn), name) for name, fn in paths.items()]


__all__ = ["PHOTO_NAMES", "Agreement", "PhotosUnavailable", "agreement", "calibration_images", "measure_agreement",
           "photo_batch", "photos"]
