"""Keras ``keras.applications.EfficientNetB*`` / ``EfficientNetV1``-style HDF5 weights → effnet.

Two file layouts are read with h5py (Keras itself is not needed):

- Keras 3 ``.weights.h5``: ``layers/{class}_{k}/vars/{0,1,...}``.  Layers are named by class and a counter in the
  model's layer order (``conv2d``, ``conv2d_1``, ...), not by their Keras names, and variables by position
  (Conv2D: kernel, bias; BatchNormalization: gamma, beta, moving_mean, moving_variance; Dense: kernel, bias).
- Keras 2 / legacy ``.h5`` (what ``keras.applications`` downloads): groups per layer name (``block2a_dwconv``) with
  a ``layer_names`` attribute in model order and ``weight_names`` such as ``block2a_dwconv/depthwise_kernel:0``.

Either way the layers come out in model order, and within each kind (conv, depthwise conv, BN, dense) Keras'
order is effnet's order (stem, then per block expand → depthwise → SE reduce/expand → project, then head,
classifier), so they are matched kind by kind.  Layouts: conv kernels HWIO → OIHW, depthwise (H, W, C, 1) →
(C, 1, H, W), dense (in, out) → (out, in); BN gamma/beta/moving_* → weight/bias/running_*; Keras has no
``num_batches_tracked`` (filled with 0).

Preprocessing lives *inside* the Keras model (Rescaling 1/255 → Normalization(mean, variance), and for
``weights="imagenet"`` a further Rescaling by 1/sqrt(std) that corrects the stored variance); effnet keeps it
outside, in `get_config`.  The Normalization layer's mean/variance are recorded in the converted file's metadata
(``preprocessing``).  Keras also ends with softmax unless built with ``classifier_activation=None``; effnet
returns logits.  Padding is TF SAME (Keras pads stride-2 convs with ``correct_pad``: SAME when the model has a
fixed input shape; with ``input_shape=None`` it assumes even sizes, still SAME wherever they are even), BN eps 1e-3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.spec import NetSpec
from effnet.weights.layout import State, meta_model
from effnet.weights.safe_load import WeightsError

_KERAS3_VARS = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("depthwise_kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "normalization": ("mean", "variance", "count"),
}


def read_keras_h5(path: Path) -> State:
    """Every variable as ``"{layer}/{variable}"`` (canonical variable names), layers in model order."""
    try:
        import h5py
    except ImportError:
        raise WeightsError("reading Keras .h5 files needs h5py: `pip install h5py`") from None
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            if "layers" in f and isinstance(f["layers"], h5py.Group) and "layer_names" not in f.attrs:
                return _read_keras3(f["layers"])
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in root.attrs:
                return _read_legacy(root)
    except OSError as exc:
        raise WeightsError(f"{path}: not a readable HDF5 file ({exc})") from None
    raise WeightsError(f"{path}: not a Keras weights file (no 'layers' group or 'layer_names' attribute)")


def _counter(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    return m.group(1), int(m.group(2) or 0)


def _read_keras3(layers) -> State:
    out: State = {}
    groups = sorted(layers, key=_counter)
    for name in groups:
        kind, _ = _counter(name)
        variables = layers[name].get("vars")
        if variables is None or not len(variables):
            continue
        names = _KERAS3_VARS.get(kind)
        if names is None:
            raise WeightsError(f"Keras layer {name!r}: unknown layer class {kind!r} holding weights")
        for index in sorted(variables, key=int):
            label = names[int(index)] if int(index) < len(names) else index
            out[f"{name}/{label}"] = _tensor(variables[index])
    return out


def _tensor(dataset) -> torch.Tensor:
    return torch.from_numpy(np.array(dataset[()], copy=True)).reshape(dataset.shape)


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(root) -> State:
    out: State = {}
    for layer in map(_decode, root.attrs["layer_names"]):
        group = root[layer]
        for weight in map(_decode, group.attrs.get("weight_names", [])):
            variable = weight.rsplit("/", 1)[-1].split(":")[0]
            if variable == "kernel" and ("dwconv" in layer or "depthwise" in layer):
                variable = "depthwise_kernel"  # Keras 3's legacy writer calls a depthwise kernel just "kernel"
            out[f"{layer}/{variable}"] = _tensor(group[weight])
    return out


def _layers(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        layer, _, variable = key.rpartition("/")
        layers.setdefault(layer, {})[variable] = value
    return layers


def _kind(variables: Mapping[str, torch.Tensor]) -> str:
    if "depthwise_kernel" in variables:
        return "depthwise"
    if "moving_mean" in variables or "gamma" in variables:
        return "bn"
    if "mean" in variables and "variance" in variables:
        return "normalization"
    kernel = variables.get("kernel")
    if kernel is not None and kernel.ndim == 4:
        return "conv"
    if kernel is not None and kernel.ndim == 2:
        return "dense"
    return "unknown"


def _targets(spec: NetSpec) -> dict[str, list[tuple[str, nn.Module]]]:
    """effnet's parametrised modules by kind, in forward order."""
    out: dict[str, list[tuple[str, nn.Module]]] = {"conv": [], "depthwise": [], "bn": [], "dense": []}
    for name, module in meta_model(spec).named_modules():
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
            out["depthwise" if depthwise else "conv"].append((name, module))
        elif isinstance(module, nn.BatchNorm2d):
            out["bn"].append((name, module))
        elif isinstance(module, nn.Linear):
            out["dense"].append((name, module))
    return out


def _convert_layer(kind: str, prefix: str, v: Mapping[str, torch.Tensor], origin: str) -> State:
    out: State = {}
    if kind == "conv":
        out[f"{prefix}.weight"] = v["kernel"].permute(3, 2, 0, 1)
    elif kind == "depthwise":
        k = v["depthwise_kernel"]  # (H, W, C, multiplier)
        out[f"{prefix}.weight"] = k.permute(2, 3, 0, 1).reshape(k.shape[2] * k.shape[3], 1, k.shape[0], k.shape[1])
    elif kind == "dense":
        out[f"{prefix}.weight"] = v["kernel"].t()
    if kind == "bn":
        names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
        missing = sorted(set(names) - set(v))
        if missing:
            raise WeightsError(f"Keras layer {origin}: BatchNormalization without {missing} (center/scale off?)")
        out.update({f"{prefix}.{names[n]}": v[n] for n in names})
    elif "bias" in v:
        out[f"{prefix}.bias"] = v["bias"]
    return {k: t.contiguous() for k, t in out.items()}


def from_keras(state: Mapping[str, torch.Tensor], spec: NetSpec) -> State:
    """Match Keras layers to effnet modules kind by kind, in order, and convert the layouts."""
    by_kind: dict[str, list[tuple[str, dict[str, torch.Tensor]]]] = {}
    for layer, variables in _layers(state).items():
        by_kind.setdefault(_kind(variables), []).append((layer, variables))
    if "unknown" in by_kind:
        raise WeightsError(f"Keras layers of unknown kind: {[name for name, _ in by_kind['unknown']][:6]}")
    out: State = {}
    for kind, targets in _targets(spec).items():
        sources = by_kind.get(kind, [])
        if len(sources) != len(targets):
            raise WeightsError(
                f"Keras file has {len(sources)} {kind} layers, {spec.name} has {len(targets)}; is --model the same "
                f"variant as the Keras model? (first {kind} layers in the file: {[n for n, _ in sources[:3]]})"
            )
        for (layer, variables), (prefix, _) in zip(sources, targets):
            out.update(_convert_layer(kind, prefix, variables, layer))
    return out


def keras_preprocessing(state: Mapping[str, torch.Tensor]) -> dict:
    """The Normalization layer's statistics, as found (effnet applies preprocessing outside the model)."""
    for layer, variables in _layers(state).items():
        if _kind(variables) == "normalization":
            return {"layer": layer, "rescale": 1 / 255, "mean": variables["mean"].flatten().tolist(),
                    "variance": variables["variance"].flatten().tolist()}
    return {}
