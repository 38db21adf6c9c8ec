"""Real photos that ship with scikit-image and scikit-learn (no download), as H×W×3 uint8 arrays.

12 colour and 10 greyscale images — people, a cat, coffee, a rocket, a horse, a camera man, coins, a clock,
textures, micrographs, a palace, a flower — in a fixed order (`PHOTO_NAMES`).  They feed the int8 calibration and
agreement sets (`effnet.data.calibration`), `effnet demo` and the class-activation-map experiment.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from effnet.errors import EffnetError

_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "colorwheel", "stereo_motorcycle", "logo")
_GREY = ("horse", "camera", "coins", "page", "grass", "gravel", "brick", "moon", "clock", "text")
_SKLEARN = ("china", "flower")
PHOTO_NAMES = _COLOUR + _GREY + tuple(f"sklearn_{n}" for n in _SKLEARN)


class PhotosUnavailable(EffnetError, ImportError):
    """scikit-image / scikit-learn are not installed."""


def photos(names: str | Iterable[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) for every bundled photo (or those in `names`, see PHOTO_NAMES), in a fixed order."""
    wanted = PHOTO_NAMES if names is None else (names,) if isinstance(names, str) else tuple(names)
    unknown = sorted(set(wanted) - set(PHOTO_NAMES))
    if unknown:
        raise EffnetError(f"photos: unknown photo(s) {unknown}; expected names from {list(PHOTO_NAMES)}")
    try:  # optional packages (the `photos` extra)
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


__all__ = ["PHOTO_NAMES", "PhotosUnavailable", "photos"]
