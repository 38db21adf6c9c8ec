"""Labelled image sources: an image folder (torchvision's ImageFolder layout) and Fashion-MNIST from Debian's
`dataset-fashion-mnist` package.  A source only *reads* samples; augmentation lives in `effnet.data.transforms`.

Every problem a user can fix (missing folder, no images, one class, missing package) raises `DataError` here,
before any training work starts.  An image that cannot be decoded is not an error at scan time: `load` raises
`UnreadableImage` (`effnet.data.images.load_image`), which the loader turns into "skip and count" (or a stop, with
`strict`).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effnet.data.images import IMAGE_SUFFIXES, has_image_suffix, load_image
from effnet.errors import EffnetError

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # this module's name for the one suffix list
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "EFFNET_FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataError(EffnetError, ValueError):
    """A dataset cannot be used as given (missing, empty, one class, bad file)."""


class ImageSource:
    """What a source offers: `len`, `load(i) -> (image, label)`, `classes`, `targets`, `grayscale`, `name`."""

    name: str
    classes: tuple[str, ...]
    targets: list[int]
    grayscale: bool

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> tuple[Any, int]:
        raise NotImplementedError


class ImageFolderSource(ImageSource):
    """`root/<class>/<image>`; classes are the sorted sub-folder names (as torchvision's ImageFolder)."""

    grayscale = False

    def __init__(self, root: str | Path, classes: tuple[str, ...] | None = None) -> None:
        root = Path(root)
        self.name = str(root)
        if not root.is_dir():
            raise DataError(f"{root}: folder not found; expected an image folder with one sub-folder per class")
        found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is None:
            classes = tuple(found)
        else:
            extra = sorted(set(found) - set(classes))
            if extra:
                raise DataError(
                    f"{root}: class folder(s) {extra} are not among the training classes {list(classes)}; "
                    "rename or remove them"
                )
        self.classes = tuple(classes)
        self.paths: list[str] = []
        self.targets = []
        index = {c: i for i, c in enumerate(self.classes)}
        for cls in found:
            for dirpath, _, files in sorted(os.walk(root / cls, followlinks=True)):
                for f in sorted(files):
                    if has_image_suffix(f):
                        self.paths.append(os.path.join(dirpath, f))
                        self.targets.append(index[cls])

    def load(self, index: int) -> tuple[Any, int]:
        return load_image(self.paths[index]), self.targets[index]


class FashionMNISTSource(ImageSource):
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images, 10 classes; 'train' (60 000) or 'test' (10 000)."""

    grayscale = True
    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str = "train", root: str | Path | None = None) -> None:
        if split not in _FASHION_FILES:
            raise DataError(f"fashion-mnist split: got {split!r}, expected 'train' or 'test'")
        root = Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
        images_file, labels_file = (root / f for f in _FASHION_FILES[split])
        for f in (images_file, labels_file):
            if not f.is_file():
                raise DataError(
                    f"{f}: Fashion-MNIST not found; install it with `sudo apt-get install dataset-fashion-mnist` "
                    f"(or point {FASHION_MNIST_ENV} at a folder holding the four .gz files)"
                )
        self.name = f"fashion-mnist/{split}"
        self.images = _read_idx(images_file, 0x803)
        labels = _read_idx(labels_file, 0x801)
        if len(labels) != len(self.images):
            raise DataError(f"{labels_file}: {len(labels)} labels for {len(self.images)} images in {images_file}")
        self.targets = labels.tolist()

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].unsqueeze(0), self.targets[index]


def _read_idx(path: Path, magic: int) -> torch.Tensor:
    """The IDX format (LeCun's MNIST files): big-endian magic, one uint32 per dimension, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); reinstall dataset-fashion-mnist") from None
    got = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if got != magic:
        raise DataError(f"{path}: IDX magic number {got!r}, expected {magic:#x}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    count = 1
    for d in dims:
        count *= d
    if len(body) != count:
        raise DataError(f"{path}: {len(body)} bytes of data, expected {count} for shape {dims}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


@dataclass(frozen=True)
class SourcePair:
    train: ImageSource
    val: ImageSource


def is_fashion_mnist(data: str) -> bool:
    return str(data).lower().replace("_", "-") in ("fashion-mnist", "fashionmnist")


def open_source(data: str | Path, split: str, classes: tuple[str, ...] | None = None) -> ImageSource:
    """One split of `data` ("fashion-mnist" or a folder).  For a folder, split 'train' is `data/train`; 'val' or
    'test' is `data/<split>` if it exists, else `data` itself when it holds class folders directly."""
    if is_fashion_mnist(str(data)):
        if split not in ("train", "val", "test"):
            raise DataError(f"fashion-mnist: split {split!r}; expected train, val or test (val and test are both its "
                            "10,000-image test split)")
        return FashionMNISTSource("train" if split == "train" else "test")
    root = Path(data)
    if not root.is_dir():
        import difflib

        what = "is a file, not a data folder" if root.exists() else "data folder not found"
        close = difflib.get_close_matches(str(data).lower(), ["fashion-mnist"], n=1, cutoff=0.75)
        hint = "; did you mean fashion-mnist?" if close and not root.exists() else ""
        raise DataError(f"{root}: {what}; expected 'fashion-mnist' or a folder with train/ and val/{hint}")
    sub = root / split
    if split == "train" and not sub.is_dir():
        raise DataError(f"{root}: no train/ sub-folder; expected {root}/train/<class>/<image> and {root}/val/...")
    if not sub.is_dir():
        if split == "val" and not (root / "train").is_dir():
            sub = root  # a folder of class folders, evaluated as a whole
        else:
            raise DataError(f"{root}: no {split}/ sub-folder; expected {root}/{split}/<class>/<image>")
    return ImageFolderSource(sub, classes)


def open_sources(data: str | Path) -> SourcePair:
    """Train and validation splits, checked for use: non-empty, at least two classes, matching class lists."""
    train = open_source(data, "train")
    check_usable(train, min_classes=2)
    val = open_source(data, "val", classes=train.classes)
    check_usable(val, min_classes=1)
    return SourcePair(train, val)


def check_usable(source: ImageSource, *, min_classes: int) -> None:
    if len(source) == 0:
        raise DataError(
            f"{source.name}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} under one folder per class)"
        )
    present = sorted(set(source.targets))
    if len(present) < min_classes:
        names = [source.classes[i] for i in present]
        raise DataError(
            f"{source.name}: images of {len(present)} class(es) {names}, expected at least {min_classes}; "
            "a classifier needs one sub-folder per class with images in each"
        )
