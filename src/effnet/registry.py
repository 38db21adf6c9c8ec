"""Names → specs → models, and each model's default preprocessing.

`create_model("efficientnet_b3")` and `create_model("path/to/spec.json")` both go spec → `ConvNet`; options
(`num_classes`, `in_chans`, `drop_rate`, `drop_path_rate`, `padding`) replace the spec's fields before building.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from effnet.errors import EffnetError
from effnet.families import efficientnet, efficientnet_v2, mobilenet, resnet
from effnet.features import FeatureExtractor
from effnet.network import ConvNet

# The preprocessing facts live in effnet.preprocessing; ModelConfig and the constants are importable from here too.
from effnet.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    ModelConfig,
    default_crop_fraction,
)
from effnet.spec import NetSpec, SpecError, load_spec, with_options
from effnet.weights import load_pretrained


@dataclass(frozen=True)
class _Entry:
    make_spec: Callable[[], NetSpec]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    family: str


_MODELS: dict[str, _Entry] = {}


def register_model(
    name: str,
    make_spec: Callable[[], NetSpec],
    *,
    family: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> None:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = _Entry(make_spec, mean, std, family)


def _register_builtin() -> None:
    for name in efficientnet.VARIANTS:
        lite = "lite" in name
        register_model(
            name,
            lambda name=name: efficientnet.efficientnet(name),
            family="efficientnet-lite" if lite else "efficientnet",
            mean=INCEPTION_MEAN if lite else IMAGENET_MEAN,
            std=INCEPTION_STD if lite else IMAGENET_STD,
        )
    for name, v in efficientnet_v2.VARIANTS_V2.items():
        register_model(name, lambda name=name: efficientnet_v2.efficientnet_v2(name), family="efficientnet-v2",
                       mean=v.mean, std=v.std)
    for family, family_specs in (("mobilenet", mobilenet.SPECS), ("resnet", resnet.SPECS)):
        for name, spec in family_specs.items():
            register_model(name, lambda spec=spec: spec, family=family)


_register_builtin()


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names (optionally those containing `pattern`), in registration order."""
    return [n for n in _MODELS if pattern is None or pattern in n]


def is_spec_path(name: str) -> bool:
    """Whether `get_spec(name)` reads a spec file: `name` is not a registered model's and is a .json path or a file
    that exists (one that is not JSON gets a clear error there)."""
    return name not in _MODELS and (name.endswith(".json") or Path(name).is_file())


def get_spec(name_or_path: str | NetSpec) -> NetSpec:
    """A registered model's spec, or the spec in a JSON file."""
    if isinstance(name_or_path, NetSpec):
        return name_or_path
    if name_or_path in _MODELS:
        return _MODELS[name_or_path].make_spec()
    if is_spec_path(name_or_path):
        return load_spec(name_or_path)
    raise SpecError(_unknown_model_message(name_or_path))


def _close_model_names(name: str, n: int = 3) -> list[str]:
    """Registered names `name` probably meant: the family's short form (`b0`, `lite0`, `v2_s`), a prefix
    (`efficientnet_lite` → lite0, lite1, ...), a letter typed for a digit (`efficientnet_bo`), then difflib's
    nearest spellings."""
    import difflib

    names, key = list(_MODELS), name.strip().lower()
    digits = key[:-1] + {"o": "0", "l": "1", "i": "1"}.get(key[-1:], key[-1:]) if key else key
    found = [m for m in names if key and (m.endswith("_" + key) or m.endswith("net" + key))]
    found += sorted(m for m in names if len(key) >= 4 and m.startswith(key))
    found += [m for m in names if digits != key and m == digits]
    found += difflib.get_close_matches(key, names, n=n)
    return list(dict.fromkeys(found))[:n]


def _unknown_model_message(name: str) -> str:
    close = _close_model_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `effnet models`"
    if Path(name).is_dir():
        return f"model {name!r} is a folder; expected a registered name or a .json spec file{hint}"
    return f"unknown model {name!r} (not a registered name or a .json spec file){hint}"


def get_config(name_or_spec: str | NetSpec, resolution: int | None = None) -> ModelConfig:
    """Default preprocessing; `resolution` overrides the native one (the crop fraction follows it)."""
    spec = get_spec(name_or_spec)
    entry = _MODELS.get(spec.name)
    mean, std = (entry.mean, entry.std) if entry else (IMAGENET_MEAN, IMAGENET_STD)
    res = resolution or spec.resolution
    return ModelConfig(res, default_crop_fraction(res), "bicubic", mean, std)


def family_of(name: str) -> str:
    entry = _MODELS.get(name)
    return entry.family if entry else "custom"


def create_model(
    name_or_path: str | NetSpec,
    *,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    padding: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    grad_checkpointing: bool = False,
    **spec_options: Any,
) -> nn.Module:
    """Build a model by registered name, spec-file path or `NetSpec`.

    pretrained: False; True for the bundled weights of the name (Lite0–2); or a path to a `.safetensors` /
    `.pth` file in effnet's layout.  With pretrained weights and a different `num_classes`, the backbone is
    loaded and a fresh classifier is made.  grad_checkpointing: recompute each stage in backward to save memory.
    """
    if out_indices is not None and not features_only:
        raise EffnetError("out_indices selects feature maps and needs features_only=True")
    spec = get_spec(name_or_path)
    base_classes = spec.num_classes
    spec = with_options(
        spec, in_channels=in_chans, dropout=drop_rate, drop_path_rate=drop_path_rate, padding=padding, **spec_options
    )
    if pretrained:
        model = ConvNet(with_options(spec, num_classes=base_classes))
        load_pretrained(model, spec.name if pretrained is True else pretrained)
        if num_classes is not None and num_classes != model.spec.num_classes:
            model.reset_classifier(num_classes)
            model.spec = with_options(model.spec, num_classes=num_classes)
    else:
        model = ConvNet(with_options(spec, num_classes=num_classes))
    model.set_grad_checkpointing(grad_checkpointing)
    if features_only:
        return FeatureExtractor(model, out_indices)
    return model
