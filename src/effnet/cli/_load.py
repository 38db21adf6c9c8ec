"""The model a command that classifies or explains images runs (`effnet predict`, `effnet cam`): the bundled
weights, a weights file, or a training checkpoint with the weights it chose and the preprocessing and class names
it was trained with."""

from __future__ import annotations

from pathlib import Path

from effnet.errors import EffnetError


def load_model(name: str, *, pretrained: bool = False, weights: str | None = None):
    """(model in eval mode, its preprocessing, its class names or None) for the bundled weights, a weights file
    or a training checkpoint (its chosen weights: EMA when it kept them)."""
    from effnet.predict import model_config
    from effnet.registry import create_model

    if weights and Path(weights).suffix.lower() in (".pt", ".pth") and Path(weights).is_file():
        trained = _training_checkpoint(name, weights)
        if trained is not None:
            return trained
    model = create_model(name, pretrained=True if pretrained else weights)
    config = model_config(model.spec, None if pretrained else weights)
    return model.eval(), config, _imagenet_labels(model.spec.num_classes)


def _training_checkpoint(name: str, path: str):
    from effnet.cam import from_checkpoint
    from effnet.train.checkpoint import CheckpointError

    try:
        model, config, classes = from_checkpoint(path)
    except CheckpointError:
        return None  # a plain state dict: create_model reads it
    if name != model.spec.name and not _same_network(name, model.spec):
        raise EffnetError(f"--weights {path}: a training checkpoint of {model.spec.name!r}, not {name!r}; pass "
                          f"MODEL {model.spec.name} (or the spec file it was trained from)")
    return model, config, classes


def _same_network(name: str, trained) -> bool:
    """Whether model `name` (a registered name or a spec file; its own error if it is neither) has the stem, stages
    and head of the `trained` spec: the spec file a run was trained from names the same network whatever its file
    is called."""
    from effnet.registry import get_spec

    spec = get_spec(name)
    return (spec.stem, spec.stages, spec.head) == (trained.stem, trained.stages, trained.head)


def _imagenet_labels(num_classes: int) -> tuple[str, ...] | None:
    if num_classes != 1000:
        return None
    from effnet.weights import imagenet_classes

    return imagenet_classes()


__all__ = ["load_model"]
