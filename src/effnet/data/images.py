"""Reading one image file: the loader behind image-folder datasets, `effnet predict` and `effnet cam`.

`load_image` gives an RGB PIL image or raises `UnreadableImage` (path and reason); callers that go on past a bad
file record it as a `Skipped` (the training loader counts them, `effnet predict` names them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from effnet.errors import EffnetError

# What an image folder's scan picks up (`effnet predict` tries every file it is given).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class UnreadableImage(EffnetError):
    """An input file is missing or not a readable image; carries the path so it can be counted or named."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable (DataLoader workers), though __init__ takes two arguments
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class Skipped:
    """An input that was passed over, and why."""

    path: str
    reason: str

    @property
    def image(self) -> str:
        """The path, under the name `effnet predict`'s reports give it (as `Prediction.image`)."""
        return self.path

    def to_dict(self) -> dict:
        return {"image": self.path, "reason": self.reason}


def has_image_suffix(name: str | Path) -> bool:
    return str(name).lower().endswith(IMAGE_SUFFIXES)


def load_image(path: str | Path) -> Image.Image:
    """An RGB image (grey, palette, CMYK and alpha images are converted); `UnreadableImage` if unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image file (format not recognised)") from None
    except Exception as exc:  # PIL raises many types for a damaged file (OSError, ValueError, SyntaxError, ...)
        raise UnreadableImage(path, f"cannot read image ({exc or type(exc).__name__})") from None


__all__ = ["IMAGE_SUFFIXES", "Skipped", "UnreadableImage", "has_image_suffix", "load_image"]
