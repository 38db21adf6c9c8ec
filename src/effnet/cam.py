"""Class activation maps: where a model finds the evidence for a class (the paper's Figure 7).

`cam(model, images)` returns one heat map per image, in the coordinates of the model's input and scaled to
[0, 1], for the predicted class (or `target`), computed on the last feature map (the head's output, which the
classifier pools) or on any stage named in `layer_names(model)`.

The maps come from **torchcam** (`pip install 'effnet[cam]'`), not from a re-implementation.  torchcam was chosen
over pytorch-grad-cam (`grad-cam`) because it needs nothing beyond what effnet already depends on (torch, numpy,
pillow, matplotlib) and ships as a wheel, while grad-cam installs from a source archive and pulls in OpenCV,
scikit-learn, SciPy and ttach; both offer the methods used here.  Methods (`METHODS`):

- ``gradcam`` (Selvaraju et al. 2017): feature maps weighted by the spatial mean of the class score's gradient;
- ``gradcam++`` and ``layercam``: gradient weightings that keep more than one object region;
- ``scorecam`` (Wang et al. 2020): gradient-free — each feature map, upsampled and used as a mask on the input,
  is weighted by the class score the masked input gets.  One forward pass per channel of the layer: slow on a
  wide layer (1,280 passes per image on a Lite model's head).

torchcam normalises each map to [0, 1] at the feature map's size (after a ReLU, so only positive evidence
counts); here it is upsampled bilinearly to the input size and normalised again, so every map spans [0, 1]
unless the layer holds no positive evidence at all (then it is all zeros).

`effnet.cam` is the function `cam`; the other names of this module are imported with `from effnet.cam import ...`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from effnet.errors import EffnetError
from effnet.registry import ModelConfig

METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMpp", "layercam": "LayerCAM", "scorecam": "ScoreCAM"}
GRADIENT_FREE = frozenset({"scorecam"})


class CamError(EffnetError):
    """Bad input to a class activation map: unknown layer or method, class out of range, unreadable image."""


class CamUnavailable(CamError, ImportError):
    """torchcam is not installed."""


def _torchcam_methods():
    try:
        import torchcam.methods as methods
    except ImportError:
        raise CamUnavailable("class activation maps need torchcam: pip install 'effnet[cam]'") from None
    return methods


# -- layers ------------------------------------------------------------------------------------------------------

def layer_names(model: nn.Module) -> list[str]:
    """The layers a map can be computed on, shallowest first: ``stem``, every ``stages.i``, and ``head`` (the
    last feature map, the default) when the model has a head convolution."""
    names = [name for name, _ in model.named_children() if name == "stem"]
    stages = getattr(model, "stages", None)
    if isinstance(stages, nn.ModuleList):
        names += [f"stages.{i}" for i in range(len(stages))]
    head = getattr(model, "head", None)
    if head is not None and not isinstance(head, nn.Identity):
        names.append("head")
    return names


def default_layer(model: nn.Module) -> str:
    names = layer_names(model)
    if not names:
        raise CamError(f"layer: {type(model).__name__} has no stem/stages/head; name a module of "
                       "model.named_modules() with layer=")
    return names[-1]


def _check_layer(model: nn.Module, layer: str | None) -> str:
    layer = default_layer(model) if layer is None else layer
    if layer not in dict(model.named_modules()) or layer == "":
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise CamError(f"layer: got {layer!r}, expected one of {layer_names(model)} for {name} (or a module name "
                       "of model.named_modules())")
    return layer


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise CamError(f"method: got {method!r}, expected one of {sorted(METHODS)}")
    return method


# -- inputs ------------------------------------------------------------------------------------------------------

def load_images(images: Sequence[str | Path | Image.Image]) -> list[Image.Image]:
    """RGB PIL images from paths or PIL images; `CamError` naming the file that is not an image."""
    from effnet.predict import ImageError, load_image

    out = []
    for item in images:
        if isinstance(item, Image.Image):
            out.append(item.convert("RGB"))
            continue
        if not isinstance(item, (str, Path)):
            raise CamError(f"images: got a {type(item).__name__}, expected image file paths, PIL images or a "
                           "normalised N×3×H×W tensor")
        path = Path(item)
        if not path.is_file():
            raise CamError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}; expected an image file "
                           "(give the images themselves, e.g. photos/*.jpg)")
        try:
            out.append(load_image(path))
        except ImageError as exc:
            raise CamError(str(exc)) from None
    return out


def preprocess(images: Sequence[str | Path | Image.Image], config: ModelConfig) -> torch.Tensor:
    """The model's eval preprocessing (`effnet.transforms.eval_transform`) of each image, as one batch."""
    from effnet.transforms import eval_transform

    if not images:
        raise CamError("images: got none, expected at least one image")
    transform = eval_transform(config)
    return torch.stack([transform(image) for image in load_images(images)])


def denormalise(inputs: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Normalised N×3×H×W model input → N×H×W×3 in [0, 1]: the pixels the model saw, for display."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (inputs.detach().cpu().float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1)


def from_checkpoint(path: str | Path) -> tuple[nn.Module, ModelConfig, tuple[str, ...] | None]:
    """(model in eval mode, its recorded preprocessing, its class names) of an `effnet train` checkpoint, with
    the weights training chose: the EMA ones when the checkpoint kept them (`CheckpointError` if not one)."""
    from effnet.network import ConvNet
    from effnet.spec import NetSpec
    from effnet.train.checkpoint import load_checkpoint
    from effnet.weights import check_finite

    state = load_checkpoint(path)
    model = ConvNet(NetSpec.from_dict(state["spec"]))
    ema = (state.get("ema") or {}).get("model")
    chosen = ema if ema is not None else state["model"]
    check_finite(chosen, str(path))
    model.load_state_dict(chosen)
    pre = state["preprocess"]
    config = ModelConfig(pre["resolution"], pre["crop_fraction"], pre["interpolation"], tuple(pre["mean"]),
                         tuple(pre["std"]))
    return model.eval(), config, tuple(state.get("classes") or ()) or None


# -- maps --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Maps:
    """Maps (N×H×W in [0, 1], the input's size) with the logits and class each map explains."""

    maps: torch.Tensor
    logits: torch.Tensor
    targets: tuple[int, ...]
    layer: str
    method: str

    def peaks(self) -> list[tuple[int, int]]:
        """(x, y) of each map's maximum, in model-input pixels."""
        width = self.maps.shape[-1]
        flat = self.maps.flatten(1).argmax(1).tolist()
        return [(i % width, i // width) for i in flat]


def _check_feature_map(model: nn.Module, layer: str, x: torch.Tensor, *,
                       chosen: bool = True) -> tuple[str, int]:
    """The layer to map, and its channels: a map weighs the channels of a feature map N×C×H×W of more than one
    position, so a layer whose output is anything else (the classifier's logits, the pooled features, a map shrunk
    to 1×1 at a small input) is refused before any map is computed, naming the layers that do have such a map at
    this input size; the default layer (not `chosen`) gives way to the deepest layer that has one."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...] | None] = {}

    def record(name: str):
        def hook(_module, _inputs, out) -> None:  # returns None: the output passes on unchanged
            shapes.setdefault(name, tuple(out.shape) if isinstance(out, torch.Tensor) else None)

        return hook

    candidates = layer_names(model)
    names = list(dict.fromkeys([*candidates, layer]))
    hooks = [modules[name].register_forward_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()

    def is_map(shape) -> bool:
        return shape is not None and len(shape) == 4 and shape[2] * shape[3] >= 2

    shape = shapes.get(layer)
    usable = [name for name in candidates if is_map(shapes.get(name))]
    if not is_map(shape) and usable and not chosen:
        return usable[-1], shapes[usable[-1]][1]
    if not is_map(shape) and not usable:
        raise CamError(f"layer: no layer of the model has a map larger than 1×1 at this input size "
                       f"({tuple(x.shape[-2:])}); use a larger input")
    if not is_map(shape):
        got = "no tensor" if shape is None else f"shape {shape}"
        raise CamError(f"layer: {layer!r} outputs {got}, expected a feature map N×C×H×W larger than 1×1; at this "
                       f"input size use one of {usable}")
    return layer, shape[1]


SCORECAM_CHUNK = 32
"""Masked inputs per forward pass of Score-CAM (torchcam's batch size)."""


def compute(model: nn.Module, inputs: torch.Tensor, target: int | Sequence[int] | None = None,
            method: str = "gradcam", *, layer: str | None = None, batch_size: int = 16,
            progress: Callable[[int, int], None] | None = None) -> Maps:
    """Maps of a normalised N×3×H×W batch `inputs` for `target` (None: each image's predicted class; an int:
    that class for every image; a sequence: one class per image) on `layer` (default: `default_layer`, or the
    deepest layer whose map is larger than 1×1 where the input is too small for it).  `progress(done, total)` is
    called after every forward pass of a gradient-free method (Score-CAM: two per chunk of images, then one per
    32 of its images × the layer's channels), the long ones."""
    _check_method(method)
    chosen = layer is not None
    layer = _check_layer(model, layer)
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise CamError(f"images: got a tensor of shape {shape}, expected a normalised float batch N×C×H×W")
    if target is not None and not isinstance(target, int):
        target = [int(t) for t in target]
        if len(target) != len(inputs):
            raise CamError(f"target: got {len(target)} classes for {len(inputs)} images, expected one per image")
    maps, logits, targets = [], [], []
    training = model.training
    model.eval()
    try:
        layer, channels = _check_feature_map(model, layer, inputs[:1], chosen=chosen)
        counted = _count_passes(model, inputs, batch_size, channels, progress) \
            if progress is not None and method in GRADIENT_FREE else contextlib.nullcontext()
        with counted:
            for start in range(0, len(inputs), batch_size):
                chunk_target = target[start:start + batch_size] if isinstance(target, list) else target
                m, lg, t = _compute_batch(model, inputs[start:start + batch_size], chunk_target, method, layer)
                maps.append(m)
                logits.append(lg)
                targets += t
    finally:
        model.train(training)
    return Maps(torch.cat(maps), torch.cat(logits), tuple(targets), layer, method)


@contextlib.contextmanager
def _count_passes(model: nn.Module, inputs: torch.Tensor, batch_size: int, channels: int,
                  progress: Callable[[int, int], None]):
    """Calls `progress(done, total)` after each forward pass of `model` while in the block, `total` being the
    passes of a Score-CAM over `inputs` in chunks of `batch_size`: the predictions and the baseline scores, then
    the masked inputs, SCORECAM_CHUNK at a time."""
    sizes = [min(batch_size, len(inputs) - start) for start in range(0, len(inputs), batch_size)]
    total = sum(2 + math.ceil(n * channels / SCORECAM_CHUNK) for n in sizes)
    done = 0

    def count(_module, _inputs, _out) -> None:
        nonlocal done
        done = min(done + 1, total)
        progress(done, total)

    hook = model.register_forward_hook(count)
    try:
        yield
    finally:
        hook.remove()


def _compute_batch(model: nn.Module, x: torch.Tensor, target: int | list[int] | None, method: str,
                   layer: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    methods = _torchcam_methods()
    device = next(model.parameters()).device
    x = x.to(device)
    chunk = {"batch_size": SCORECAM_CHUNK} if method == "scorecam" else {}
    extractor = getattr(methods, METHODS[method])(model, target_layer=layer, input_shape=tuple(x.shape[1:]), **chunk)
    with extractor:
        if method in GRADIENT_FREE:
            with torch.no_grad():
                logits = model(x)
        else:
            with torch.enable_grad():  # gradients reach the layer even when the weights are frozen
                logits = model(x.detach().requires_grad_(True))
        targets = _targets(target, logits)
        (raw,) = extractor(class_idx=targets, scores=logits)
    maps = F.interpolate(raw.detach().float()[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    return _unit_range(maps[:, 0]).cpu(), logits.detach().float().cpu(), targets


def _targets(target: int | list[int] | None, logits: torch.Tensor) -> list[int]:
    num_classes = logits.shape[1]
    targets = logits.argmax(1).tolist() if target is None else [target] * len(logits) if isinstance(target, int) \
        else list(target)
    for t in targets:
        if not 0 <= t < num_classes:
            raise CamError(f"target: got class {t}, expected a class index in [0, {num_classes})")
    return targets


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to [0, 1]; a constant map (no positive evidence) becomes all zeros."""
    low = maps.flatten(1).amin(1).view(-1, 1, 1)
    span = maps.flatten(1).amax(1).view(-1, 1, 1) - low
    scaled = torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))
    return scaled.clamp(0, 1)


def cam(model: nn.Module, images: Sequence[str | Path | Image.Image] | torch.Tensor,
        target: int | Sequence[int] | None = None, method: str = "gradcam", *, layer: str | None = None,
        config: ModelConfig | None = None) -> torch.Tensor:
    """One heat map per image (N×H×W, values in [0, 1], the model input's size) for the predicted class or
    `target`.  `images`: files or PIL images, preprocessed with `config` (default: the model's own,
    `effnet.predict.model_config`), or an already normalised N×3×H×W tensor."""
    return compute(model, _as_batch(model, images, config), target, method, layer=layer).maps


def _as_batch(model: nn.Module, images, config: ModelConfig | None) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if config is None:
        from effnet.predict import model_config

        config = model_config(model)
    return preprocess(images, config)


def on_object_fraction(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The share of each map's mass on the object: sum(map · mask) / sum(map), per image (nan for an all-zero
    map).  A map spread evenly over the image scores the object's area fraction, `masks.mean()`."""
    mass = maps.flatten(1).sum(1)
    inside = (maps * masks.to(maps.dtype)).flatten(1).sum(1)
    return torch.where(mass > 0, inside / mass.clamp_min(1e-12), torch.full_like(mass, math.nan))


def to_image_coords(point: tuple[int, int], size: tuple[int, int], config: ModelConfig) -> tuple[int, int]:
    """A model-input pixel (x, y) mapped back through the eval transform (shorter side resized to
    `resize_size(config)`, centre crop) onto the original image of `size` (width, height)."""
    from effnet.transforms import resize_size

    width, height = size
    short = resize_size(config)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    left = int(round((new_w - config.resolution) / 2.0))
    top = int(round((new_h - config.resolution) / 2.0))
    x = (point[0] + left + 0.5) * width / new_w - 0.5
    y = (point[1] + top + 0.5) * height / new_h - 0.5
    return min(max(int(round(x)), 0), width - 1), min(max(int(round(y)), 0), height - 1)


# -- figures -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a figure: a title, the images (N×H×W×3 in [0, 1]), their maps (N×H×W, or None for the
    plain images) and an optional caption per cell."""

    title: str
    images: torch.Tensor
    maps: torch.Tensor | None = None
    captions: Sequence[str] | None = None


def save_figure(path: str | Path, columns: Sequence[Column], *, row_titles: Sequence[str] | None = None,
                title: str | None = None, alpha: float = 0.5, dpi: int = 110) -> Path:
    """A grid, one row per image and one column per `Column`: each map drawn over its own input (columns may
    differ in resolution), with the jet colour map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(columns[0].images)
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.3 * len(columns), 2.5 * rows), squeeze=False)
    for j, column in enumerate(columns):
        for i in range(rows):
            ax = axes[i][j]
            ax.imshow(column.images[i].numpy(), interpolation="nearest")
            if column.maps is not None:
                ax.imshow(column.maps[i].numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if column.captions is not None:
                ax.set_xlabel(column.captions[i], fontsize=7)
            if i == 0:
                ax.set_title(column.title, fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    # leave the title its own band above the column titles (tight_layout ignores suptitle)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()) if title else None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


__all__ = ["GRADIENT_FREE", "METHODS", "CamError", "CamUnavailable", "Column", "Maps", "cam", "compute",
           "default_layer", "denormalise", "from_checkpoint", "layer_names", "load_images", "on_object_fraction",
           "preprocess", "save_figure", "to_image_coords"]
