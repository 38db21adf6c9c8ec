"""Reading, checking, converting and writing weights.

`load_pretrained(model, "efficientnet_lite0")` loads the bundled ImageNet weights (`bundled.py`);
`load_pretrained(model, "file.safetensors" | "file.pth")` loads a file in effnet's layout.  Every load is strict:
`check_state` compares names and shapes first and raises `WeightsError` with a short list of what does not fit, so
a model is never left half loaded.

effnet's own files are safetensors with string metadata (`format`, `model`, `padding`, `bn_eps`, `source`,
`spec`, and for converted files `preprocessing`: the input mean/std the weights were trained with, read by
`preprocessing_config`).  Padding and BN eps are part of what weights mean (TF-trained weights need TF-SAME
padding; torchvision's were trained with eps 1e-5, the TF reference used 1e-3), so `load_pretrained` sets both on
the model from the metadata and records them in `model.spec`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from effnet.layers import make_conv
from effnet.network import ConvNet
from effnet.preprocessing import ModelConfig, check_interpolation
from effnet.spec import PADDINGS, NetSpec
from effnet.weights.bundled import BUNDLED, has_bundled, load_bundled
from effnet.weights.convert import SOURCES, from_lukemelas, get_source
from effnet.weights.layout import meta_model
from effnet.weights.safe_load import (
    SAFETENSORS_SUFFIXES,
    UnsafeCheckpointError,
    WeightsError,
    check_writable,
    read_pth,
    read_safetensors,
    read_safetensors_metadata,
    write_safetensors,
)

State = dict[str, torch.Tensor]
_LIST_LIMIT = 6


# -- files ------------------------------------------------------------------------------------------------------------


def load_file(path: str | Path) -> tuple[State, dict[str, str]]:
    """Tensors and metadata of a `.safetensors` or `.pth`/`.pt`/`.bin` file (the latter read with weights_only)."""
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    return read_pth(path), {}


def save_file(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write a `.safetensors` file; a `ConvNet` also records its spec, padding and BN eps in the metadata."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        raise WeightsError(f"{path}: effnet writes .safetensors files; got suffix {path.suffix!r}")
    meta = {"format": "effnet"}
    if isinstance(model_or_state, ConvNet):
        meta.update(spec_metadata(model_or_state.spec))
    meta.update(metadata or {})
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    write_safetensors(state, path, meta)


def spec_metadata(spec: NetSpec) -> dict[str, str]:
    return {"model": spec.name, "padding": spec.padding, "bn_eps": repr(spec.bn_eps),
            "spec": spec.to_json(indent=None)}


# -- checking and loading -------------------------------------------------------------------------------------------


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listing(items: list[str]) -> str:
    more = f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return ", ".join(items[:_LIST_LIMIT]) + more


def _group(key: str) -> str:
    """The block (``stages.3.1``) or module (``stem.bn``) a tensor belongs to, to keep listings short."""
    parts = key.split(".")
    return ".".join(parts[:3]) if parts[0] == "stages" and len(parts) > 3 else ".".join(parts[:-1]) or key


def _grouped(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """``name (shape)`` per tensor, or ``block.* (n tensors)`` where a whole group is listed."""
    groups: dict[str, list[str]] = {}
    for key in tensors:
        groups.setdefault(_group(key), []).append(key)
    return [f"{keys[0]} {_shape(tensors[keys[0]])}" if len(keys) == 1 else f"{group}.* ({len(keys)} tensors)"
            for group, keys in groups.items()]


def mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Short descriptions of missing, unexpected and wrongly shaped tensors (empty if `state` fits)."""
    missing = _grouped({k: v for k, v in expected.items() if k not in state})
    extra = _grouped({k: v for k, v in state.items() if k not in expected})
    wrong = [f"{k}: file {_shape(state[k])}, model {_shape(v)}" for k, v in expected.items()
             if k in state and _shape(state[k]) != _shape(v)]
    out = []
    for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if items:
            out.append(f"{label}: {_listing(items)}")
    return out


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str = "weights",
                expected: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise `WeightsError` listing every name/shape that does not fit `model` (or `expected`, names → tensors
    of the right shapes); return quietly if all fit."""
    problems = mismatches(model.state_dict() if expected is None else expected, state)
    if problems:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        subject = origin if origin.endswith("weights") else f"{origin}: the weights"
        raise WeightsError(f"{subject} do not fit {name}: " + "; ".join(problems) + ". Nothing was loaded")


def check_finite(state: Mapping[str, torch.Tensor], origin: str = "weights") -> None:
    """Raise `WeightsError` when a floating-point tensor holds NaN or infinity (the weights of a diverged training,
    or a damaged file): such a model would print NaN scores rather than fail."""
    bad = [(key, int((~torch.isfinite(t)).sum())) for key, t in state.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        named = ", ".join(f"{key} ({count} of {state[key].numel()})" for key, count in bad[:3])
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise WeightsError(f"{origin}: the weights contain non-finite values (NaN or infinity) in {named}{more}; "
                           "they cannot give meaningful predictions: use the weights of an earlier checkpoint or "
                           "another file. Nothing was loaded")


def _fill_batch_counters(model: nn.Module, state: Mapping[str, torch.Tensor]) -> State:
    """BN `num_batches_tracked` is bookkeeping some sources (Keras) lack: take the model's own where absent."""
    out = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros_like(value)
    return out


def _file_classes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of a file's classifier when it differs from the model's (a fine-tuned checkpoint loads into
    a model built for another count: its classifier is re-made), else None."""
    weight = state.get("classifier.weight")
    if (not isinstance(model, ConvNet) or not isinstance(model.classifier, nn.Linear) or weight is None
            or weight.ndim != 2 or weight.shape[1] != model.num_features
            or weight.shape[0] == model.classifier.out_features):
        return None
    return int(weight.shape[0])


def _expected(model: nn.Module, classes: int | None) -> dict[str, torch.Tensor]:
    expected = dict(model.state_dict())
    if classes is not None:
        expected["classifier.weight"] = torch.empty(classes, model.num_features, device="meta")
        expected["classifier.bias"] = torch.empty(classes, device="meta")
    return expected


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str = "weights",
               metadata: Mapping[str, str] | None = None) -> nn.Module:
    """Strict load after a full check: either every tensor loads or none does, and the model is only changed
    (classifier size, padding and BN eps from `metadata`) once everything is known to fit."""
    state = _fill_batch_counters(model, state)
    classes = _file_classes(model, state)
    check_state(model, state, origin, _expected(model, classes))
    check_finite(state, origin)
    settings = _settings(metadata or {}, origin)
    if isinstance(model, ConvNet):
        if classes is not None:
            model.reset_classifier(classes)
            model.spec = replace(model.spec, num_classes=classes)
        if "padding" in settings:
            set_padding(model, settings["padding"])
        if "bn_eps" in settings:
            set_bn_eps(model, settings["bn_eps"])
    model.load_state_dict(state, strict=True)
    return model


def set_padding(model: ConvNet, padding: str) -> None:
    """Rebuild the model's kxk convs with `padding` ('same' = TF SAME), keeping their weights."""
    if padding not in PADDINGS:
        raise WeightsError(f"padding: got {padding!r}, expected one of {PADDINGS}")
    if model.spec.padding == padding:
        return
    for parent in list(model.modules()):
        for child_name, conv in list(parent.named_children()):
            # Every kxk conv of a ConvNet comes from make_conv, whatever its class (plain, SAME, depthwise): remake it
            # with the other padding, keeping its weights and its training path.
            if not isinstance(conv, nn.Conv2d) or conv.kernel_size == (1, 1):
                continue
            new = make_conv(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.groups,
                            bias=conv.bias is not None, padding=padding)
            new.to(device=conv.weight.device, dtype=conv.weight.dtype)
            new.load_state_dict(conv.state_dict())
            if hasattr(conv, "training_path") and hasattr(new, "training_path"):
                new.training_path = conv.training_path
            setattr(parent, child_name, new)
    model.spec = replace(model.spec, padding=padding)


def set_bn_eps(model: ConvNet, eps: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps
    model.spec = replace(model.spec, bn_eps=eps)


def _settings(metadata: Mapping[str, str], origin: str) -> dict:
    """Padding and BN eps recorded in an effnet file, validated."""
    settings: dict = {}
    if "padding" in metadata:
        if metadata["padding"] not in PADDINGS:
            raise WeightsError(f"{origin}: metadata padding: got {metadata['padding']!r}, expected one of {PADDINGS}")
        settings["padding"] = metadata["padding"]
    if "bn_eps" in metadata:
        try:
            settings["bn_eps"] = float(metadata["bn_eps"])
        except ValueError:
            raise WeightsError(f"{origin}: metadata bn_eps: got {metadata['bn_eps']!r}, expected a number") from None
    return settings


def load_pretrained(model: nn.Module, name_or_path: str | Path) -> nn.Module:
    """Load bundled weights by model name (Lite0–2), or a `.safetensors` / `.pth` file in effnet's layout."""
    if isinstance(name_or_path, str) and has_bundled(name_or_path) and not Path(name_or_path).is_file():
        if not isinstance(model, ConvNet):
            raise WeightsError(f"bundled weights load into an effnet ConvNet, got {type(model).__name__}")
        spec = model.spec
        if spec.padding != "same" or spec.bn_eps != 1e-3:
            raise WeightsError(f"{name_or_path} weights were trained with TF-SAME padding and BN eps 1e-3; the "
                               f"model has padding={spec.padding!r}, bn_eps={spec.bn_eps}: keep the registry's spec")
        state = from_lukemelas(load_bundled(name_or_path), spec)
        return load_state(model, state, f"bundled {name_or_path} weights")
    path = Path(name_or_path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; expected a weights file (.safetensors or .pth), or one of "
                           f"{', '.join(BUNDLED)}")
    if not path.is_file():
        if str(name_or_path) == getattr(getattr(model, "spec", None), "name", None):  # the model's own name
            raise WeightsError(f"no bundled pretrained weights for {name_or_path!r} (bundled: {', '.join(BUNDLED)}); "
                               f"convert a checkpoint with `effnet convert` and load that file (pretrained=PATH; "
                               f"--weights PATH on the command line)")
        raise WeightsError(f"{path}: no such weights file (expected a .safetensors or .pth path, or one of "
                           f"{', '.join(BUNDLED)})")
    state, metadata = load_file(path)
    return load_state(model, state, str(path), metadata)


# -- conversion -------------------------------------------------------------------------------------------------------


def _with_file_classes(spec: NetSpec, state: Mapping[str, torch.Tensor]) -> NetSpec:
    """A checkpoint fine-tuned for N classes converts to the same model with an N-class classifier."""
    weight = state.get("classifier.weight")
    if weight is not None and weight.ndim == 2 and weight.shape[0] != spec.num_classes:
        return replace(spec, num_classes=int(weight.shape[0]))
    return spec


def convert_state(state: Mapping[str, torch.Tensor], source: str, spec: NetSpec,
                  path: str | Path | None = None) -> State:
    """`state` from library `source` in effnet's names, checked against `spec` (raises on any mismatch; the
    classifier may have any number of classes)."""
    out = dict(get_source(source).convert(state, spec))
    expected = meta_model(_with_file_classes(spec, out)).state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros((), dtype=value.dtype)
    problems = mismatches(expected, out)
    if problems:
        where = f"{path}: " if path is not None else ""
        raise WeightsError(f"{where}{source} weights do not fit {spec.name}: " + "; ".join(problems) +
                           ". Is --model the same variant as the checkpoint? Nothing was written")
    return out


def convert_file(src: str | Path, source: str, spec: NetSpec, out: str | Path, *, padding: str | None = None,
                 bn_eps: float | None = None, preprocessing: Mapping | None = None,
                 num_classes: int | None = None) -> NetSpec:
    """Convert checkpoint `src` from library `source` to an effnet `.safetensors` file; returns the spec the
    weights need (the source's padding and BN eps unless overridden, the file's class count, which must be
    `num_classes` when that is given: a spec file that names its classes).

    The file's ``preprocessing`` metadata is the source's convention (`Source.preprocessing`) with the keys of
    `preprocessing` (mean, std, interpolation, crop_fraction) replacing it."""
    src_path = Path(src)
    out = check_writable(out)
    info = get_source(source)
    if source == "timm" and src_path.name.startswith("tf_") and (padding is None or bn_eps is None):
        raise WeightsError(
            f"{src_path}: looks like a timm tf_efficientnet_* checkpoint (ported TF weights: TF-SAME padding, BN eps "
            f"1e-3), but --from timm assumes symmetric padding and eps 1e-5; use --from timm-tf (or pass both "
            f"--padding and --bn-eps if the file really is a non-TF timm model)")
    if source == "timm-tf" and src_path.name.startswith(("efficientnet_", "efficientnetv2_")):
        warnings.warn(f"{src_path}: named like a timm efficientnet_* checkpoint (trained in PyTorch: symmetric "
                      "padding, BN eps 1e-5), but --from timm-tf converts it for TF-SAME padding and eps 1e-3 "
                      "(timm's tf_efficientnet_*); if it is not a tf_ model, convert with --from timm", stacklevel=2)
    state = info.read(src_path) if info.read else load_file(src_path)[0]
    converted = convert_state(state, source, spec, src_path)
    spec = _with_file_classes(spec, converted)
    if num_classes is not None and spec.num_classes != num_classes:
        raise WeightsError(f"{src_path}: its classifier has {spec.num_classes} classes, the spec file states "
                           f"{num_classes}; convert with a spec of {spec.num_classes} classes and fine-tune for "
                           f"{num_classes} (effnet train --pretrained), or give the checkpoint trained for them. "
                           "Nothing was written")
    spec = replace(spec, padding=padding or info.padding,
                   bn_eps=info.eps_for(spec) if bn_eps is None else bn_eps)
    pre = {**info.preprocessing(state, spec, src_path), **(preprocessing or {})}
    extra = {"source": source, "source_file": src_path.name}
    if pre:
        _parse_preprocessing(pre, f"{source} preprocessing")  # validate before writing
        extra["preprocessing"] = json.dumps(pre)
    save_file(converted, out, {"format": "effnet", **spec_metadata(spec), **extra})
    return spec


# -- preprocessing ------------------------------------------------------------------------------------------------


def _parse_preprocessing(pre: Mapping, origin: str) -> dict:
    """mean/std (3 finite numbers; std > 0), interpolation and crop_fraction, validated; unknown keys ignored."""
    out: dict = {}
    for key in ("mean", "std"):
        if key not in pre:
            continue
        value = pre[key]
        if (not isinstance(value, (list, tuple)) or len(value) != 3
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                or (key == "std" and min(value) <= 0)):
            need = "3 positive finite numbers" if key == "std" else "3 finite numbers"
            raise WeightsError(f"{origin}: {key}: got {value!r}, expected {need}")
        out[key] = tuple(float(v) for v in value)
    if "interpolation" in pre:
        try:
            check_interpolation(pre["interpolation"])
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"{origin}: {exc}") from None
        out["interpolation"] = pre["interpolation"]
    if "crop_fraction" in pre:
        value = pre["crop_fraction"]
        if not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise WeightsError(f"{origin}: crop_fraction: got {value!r}, expected a number in (0, 1]")
        out["crop_fraction"] = float(value)
    return out


def file_preprocessing(path: str | Path) -> dict | None:
    """The validated ``preprocessing`` metadata of an effnet `.safetensors` file (mean, std, and interpolation /
    crop_fraction where recorded), or None for a file without it (a `.pth`, or a file saved by `save_file`)."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        return None
    text = read_safetensors_metadata(path).get("preprocessing")
    if not text:
        return None
    try:
        pre = json.loads(text)
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: metadata preprocessing is not JSON ({text[:80]!r})") from None
    if not isinstance(pre, dict):
        raise WeightsError(f"{path}: metadata preprocessing: expected a JSON object, got {text[:80]!r}")
    return _parse_preprocessing(pre, f"{path}: metadata preprocessing") or None


def preprocessing_config(path: str | Path, config: ModelConfig) -> ModelConfig | None:
    """`config` (a `ModelConfig`, usually `get_config(model)`) with the mean/std/interpolation/crop fraction the
    weights file `path` records, or None if it records none: the weights' own normalisation wins over the one
    the registry gives the model name."""
    pre = file_preprocessing(path)
    return None if pre is None else replace(config, **pre)


# -- labels -----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index-aligned with the classifiers of ImageNet weights."""
    text = resources.files("effnet").joinpath("resources/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise WeightsError(f"effnet/resources/imagenet_classes.txt: {len(names)} names, expected 1000")
    return names


__all__ = [
    "BUNDLED", "SOURCES", "UnsafeCheckpointError", "WeightsError", "check_state", "convert_file", "convert_state",
    "file_preprocessing", "imagenet_classes", "load_file", "load_pretrained", "load_state", "mismatches",
    "preprocessing_config", "save_file", "set_bn_eps", "set_padding",
]
