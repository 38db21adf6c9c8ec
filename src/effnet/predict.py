"""Classify image files with a model and its own preprocessing (`effnet.transforms.eval_transform`).

Files that cannot be read as images are reported, not fatal: `classify` returns them beside the predictions so a
caller (the `effnet predict` command) can name them and go on.  Files are read by `effnet.data.images.load_image`,
the loader image-folder datasets use too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from effnet.data.images import IMAGE_SUFFIXES, Skipped, UnreadableImage, load_image
from effnet.preprocessing import ModelConfig
from effnet.registry import get_config
from effnet.transforms import eval_transform
from effnet.weights import preprocessing_config

ImageError = UnreadableImage  # this module's name for the one image error


@dataclass(frozen=True)
class Guess:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    image: str
    top: tuple[Guess, ...]

    def to_dict(self) -> dict:
        return {"image": self.image, "top": [g.__dict__ for g in self.top]}


@dataclass
class Result:
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def model_config(model_or_spec, weights: str | Path | None = None) -> ModelConfig:
    """The eval preprocessing for a model (name, spec or `ConvNet`): the registry's `get_config`, with the
    normalisation recorded in the weights file `weights` (converted files record their source's) taking
    precedence, since it belongs to the weights, not to the model name."""
    spec = getattr(model_or_spec, "spec", model_or_spec)
    config = get_config(spec)
    if weights is None:
        return config
    return preprocessing_config(weights, config) or config


def refuse_missing(inputs: Iterable[str | Path]) -> None:
    """`ImageError` for the first of `inputs` that does not exist: a mistyped path, not an input to pass over (the
    check `collect_images` makes, for a caller that wants it before any other work)."""
    missing = [item for item in map(Path, inputs) if not item.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ImageError(missing[0], f"no such file or directory{more}; check the path (inputs that exist but are "
                                     "not images are skipped)")


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Files as given, and the files of directories (sorted, non-recursive, hidden files left out).

    Inside a directory every regular file is tried, so a corrupt `.jpg` or a stray `.txt` is reported by name
    rather than ignored, and a directory with no files is reported the same way.  A path the caller named that
    does not exist is refused (`refuse_missing`).
    """
    inputs = [Path(item) for item in inputs]
    refuse_missing(inputs)
    files, skipped = [], []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                skipped.append(Skipped(str(item), "directory holds no files (hidden files and subdirectories are "
                                                  "not read)"))
            files += found
        elif item.is_file():
            files.append(item)
        else:
            skipped.append(Skipped(str(item), "not a regular file or directory"))
    return files, skipped


def classify(
    model: nn.Module,
    config: ModelConfig,
    inputs: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    top: int = 5,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Top-`top` classes for each readable image in `inputs` (files or directories), in batches.
    `progress(files, total)` is called after each batch with the files done (unreadable ones included)."""
    files, skipped = collect_images(inputs)
    result = Result(skipped=skipped)
    transform = eval_transform(config)
    model.eval()
    batch: list[tuple[Path, torch.Tensor]] = []
    for done, path in enumerate(files, 1):
        try:
            batch.append((path, transform(load_image(path))))
        except UnreadableImage as exc:
            result.skipped.append(Skipped(exc.path, exc.reason))
            continue
        if len(batch) == batch_size:
            result.predictions += _run(model, batch, labels, top)
            batch = []
            if progress is not None and done < len(files):
                progress(done, len(files))
    if batch:
        result.predictions += _run(model, batch, labels, top)
    if progress is not None and files:
        progress(len(files), len(files))
    return result


def classify_images(
    model: nn.Module,
    config: ModelConfig,
    images: Mapping[str, Image.Image],
    *,
    labels: Sequence[str] | None = None,
    top: int = 5,
) -> list[Prediction]:
    """Top-`top` classes for in-memory images (name → PIL image, converted to RGB here), as one batch."""
    transform = eval_transform(config)
    model.eval()
    return _run(model, [(name, transform(image.convert("RGB"))) for name, image in images.items()], labels, top)


def _run(model: nn.Module, batch: list[tuple[str | Path, torch.Tensor]], labels: Sequence[str] | None,
         top: int) -> list[Prediction]:
    device = next(model.parameters()).device
    with torch.inference_mode():
        probs = model(torch.stack([x for _, x in batch]).to(device)).float().softmax(-1).cpu()
    values, indices = probs.topk(min(top, probs.shape[-1]))
    out = []
    for (path, _), vs, ix in zip(batch, values, indices):
        guesses = tuple(
            Guess(int(i), labels[int(i)] if labels is not None and int(i) < len(labels) else f"class {int(i)}",
                  float(v))
            for v, i in zip(vs, ix)
        )
        out.append(Prediction(str(path), guesses))
    return out


__all__ = [
    "IMAGE_SUFFIXES", "Guess", "ImageError", "Prediction", "Result", "Skipped", "classify", "classify_images",
    "collect_images", "load_image", "model_config", "refuse_missing",
]
