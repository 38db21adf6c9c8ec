"""Other libraries' EfficientNet state dicts → effnet's names, one mapping function per source.

effnet names (DESIGN.md): ``stem.conv.weight``, ``stages.{i}.{j}.{expand|depthwise|project}.{conv|bn}.*``,
``stages.{i}.{j}.se.{reduce|expand}.*``, ``head.{conv|bn}.*``, ``classifier.*``; block j of stage i.  V2's
Fused-MBConv blocks hold ``conv_exp`` (the kxk expansion) and ``project``, or one kxk ``conv`` when they do not
expand (`effnet.blocks.FusedMBConv`).

Each converter is given the target `NetSpec` (so flat block lists can be split into stages) and returns a new dict.
A name it cannot place is passed through unchanged, so the strict check in `effnet.weights.check_state` lists it
as unexpected instead of silently dropping it.  Besides names, the sources differ in what the weights *mean*:

| source | padding | BN eps | notes |
|---|---|---|---|
| timm ``efficientnet_b*`` | symmetric | 1e-5 | first stage is a DepthwiseSeparable block (``conv_pw`` = projection) |
| timm ``tf_efficientnet_b*``, ``tf_efficientnetv2_*`` (``--from timm-tf``) | TF SAME | 1e-3 | ported TF weights |
| torchvision ``efficientnet_b*``, ``_v2_*`` | symmetric | 1e-5 (B5-B7, V2: 1e-3) | ``features.{i+1}.{j}.block.{k}`` |
| lukemelas ``efficientnet-pytorch`` | TF SAME | 1e-3 | flat ``_blocks.{n}``; also the bundled Lite files |
| Keras ``EfficientNetB*``, ``EfficientNetV2*`` | TF SAME | 1e-3 | HWIO kernels; see `effnet.weights.keras_h5` |

`SOURCES` records those facts; `effnet.weights.convert_file` writes them into the output file's metadata and
`load_pretrained` sets padding and eps on the model from it, so converted weights compute what they computed before.

Input normalisation also belongs to the weights, not to the model name: timm's ``efficientnet_lite0`` was trained
on ImageNet mean/std while the TF Lite checkpoints take (x·255 − 127) / 128.  Each source's `preprocessing` gives
the convention of its checkpoints (timm's pretrained cfgs; torchvision's and efficientnet-pytorch's ImageNet
mean/std; the Lite files' Inception values; Keras' own Normalization layer), recorded as ``preprocessing`` metadata
and applied by `effnet.weights.preprocessing_config` ahead of the registry's `get_config`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from effnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD
from effnet.spec import NetSpec
from effnet.weights.keras_h5 import from_keras, keras_preprocessing, read_keras_h5
from effnet.weights.layout import State, block_layouts
from effnet.weights.safe_load import WeightsError


def _rename(state: Mapping[str, torch.Tensor], rename: Callable[[str], str | None]) -> State:
    out: State = {}
    for key, value in state.items():
        new = rename(key)
        out[key if new is None else new] = value
    return out


def _sub(key: str, table: Mapping[str, str], old_prefix: str, new_prefix: str) -> str | None:
    """``old_prefix + part + rest`` → ``new_prefix + table[part] + rest`` for the longest matching part."""
    if not key.startswith(old_prefix):
        return None
    rest = key[len(old_prefix):]
    for part in sorted(table, key=len, reverse=True):
        if rest.startswith(part + "."):
            return new_prefix + table[part] + rest[len(part):]
    return None


# -- lukemelas (efficientnet-pytorch) and the bundled Lite files ---------------------------------------------------

_LUKE_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
             "_fc": "classifier"}
_LUKE_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_se_reduce": "se.reduce", "_se_expand": "se.expand",
               "_project_conv": "project.conv", "_bn2": "project.bn"}


def from_lukemelas(state: Mapping[str, torch.Tensor], spec: NetSpec) -> State:
    """``_blocks.{n}`` (one flat list) → ``stages.{i}.{j}`` by counting the spec's repeats."""
    layouts = block_layouts(spec)
    block_re = re.compile(r"_blocks\.(\d+)\.")

    def rename(key: str) -> str | None:
        m = block_re.match(key)
        if m is None:
            return _sub(key, _LUKE_TOP, "", "")
        n = int(m.group(1))
        if n >= len(layouts):
            return None
        return _sub(key, _LUKE_BLOCK, m.group(0), layouts[n].prefix + ".")

    return _rename(state, rename)


# -- timm ------------------------------------------------------------------------------------------------------------

_TIMM_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn",
             "classifier": "classifier"}
# InvertedResidual (has conv_pwl) vs DepthwiseSeparableConv (timm's first stage, where conv_pw *projects*).
_TIMM_IR = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv", "bn2": "depthwise.bn",
            "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand", "conv_pwl": "project.conv",
            "bn3": "project.bn"}
_TIMM_DS = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "se.conv_reduce": "se.reduce",
            "se.conv_expand": "se.expand", "conv_pw": "project.conv", "bn2": "project.bn"}


# EfficientNetV2's Fused-MBConv: EdgeResidual (with an expansion) and ConvBnAct (expand ratio 1).
_TIMM_ER = {"conv_exp": "conv_exp.conv", "bn1": "conv_exp.bn", "se.conv_reduce": "se.reduce",
            "se.conv_expand": "se.expand", "conv_pwl": "project.conv", "bn2": "project.bn"}
_TIMM_CN = {"conv": "conv.conv", "bn1": "conv.bn"}


def from_timm(state: Mapping[str, torch.Tensor], spec: NetSpec) -> State:
    """timm ``efficientnet_*`` / ``tf_efficientnet_*`` / ``efficientnet_lite*`` / ``tf_efficientnetv2_*``:
    ``blocks.{i}.{j}`` = stage i.  A fused stage's blocks are EdgeResidual or ConvBnAct (by the spec); an MBConv
    block is InvertedResidual or, where it has no ``conv_pwl``, DepthwiseSeparable."""
    block_re = re.compile(r"blocks\.(\d+)\.(\d+)\.")
    inverted = {m.group(0) for k in state if (m := block_re.match(k)) and k[m.end():].startswith("conv_pwl.")}
    fused = {(b.stage, b.index): b.parts for b in block_layouts(spec) if b.kind == "fused_mbconv"}

    def rename(key: str) -> str | None:
        m = block_re.match(key)
        if m is None:
            return _sub(key, _TIMM_TOP, "", "")
        parts = fused.get((int(m.group(1)), int(m.group(2))))
        if parts is not None:
            table = _TIMM_ER if "conv_exp" in parts else _TIMM_CN
        else:
            table = _TIMM_IR if m.group(0) in inverted else _TIMM_DS
        return _sub(key, table, m.group(0), f"stages.{m.group(1)}.{m.group(2)}.")

    return _rename(state, rename)


# -- torchvision -----------------------------------------------------------------------------------------------------


def from_torchvision(state: Mapping[str, torch.Tensor], spec: NetSpec) -> State:
    """``features.0`` stem, ``features.{i+1}.{j}.block.{k}`` blocks (k counts the parts present, so it shifts
    when a block has no expansion), ``features.{last}`` head, ``classifier.1`` the linear layer."""
    parts = {(b.stage, b.index): b.parts for b in block_layouts(spec)}
    head_index = len(spec.stages) + 1
    block_re = re.compile(r"features\.(\d+)\.(\d+)\.block\.(\d+)\.(.*)")
    cna = {"0": "conv", "1": "bn"}  # Conv2dNormActivation children
    se = {"fc1": "reduce", "fc2": "expand"}

    def rename(key: str) -> str | None:
        if key.startswith("classifier.1."):
            return "classifier." + key[len("classifier.1."):]
        for index, name in ((0, "stem"), (head_index, "head")):
            prefix = f"features.{index}."
            if key.startswith(prefix):
                child, _, param = key[len(prefix):].partition(".")
                return f"{name}.{cna[child]}.{param}" if child in cna else None
        m = block_re.match(key)
        if m is None:
            return None
        stage, index, k, rest = int(m.group(1)) - 1, int(m.group(2)), int(m.group(3)), m.group(4)
        present = parts.get((stage, index))
        if present is None or k >= len(present):
            return None
        part = present[k]
        child, _, param = rest.partition(".")
        table = se if part == "se" else cna
        return f"stages.{stage}.{index}.{part}.{table[child]}.{param}" if child in table else None

    return _rename(state, rename)


Preprocessing = dict  # {"mean": [r, g, b], "std": [r, g, b], optionally "interpolation", "crop_fraction"}


def _is_lite(spec: NetSpec, src: Path) -> bool:
    return "lite" in spec.name or "lite" in src.name


def _imagenet(**extra) -> Callable[[Mapping[str, torch.Tensor], NetSpec, Path], Preprocessing]:
    return lambda state, spec, src: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **extra}


def _is_v2_tf_scaled(spec: NetSpec, src: Path) -> bool:
    """V2 S, M, L or XL (not B0-B3), whose TF weights take x/128 - 1 where B0-B3 keep V1's ImageNet mean/std."""
    name = spec.name if spec.name.startswith("efficientnetv2") else src.name.removeprefix("tf_")
    return name.startswith("efficientnetv2_") and not name.startswith("efficientnetv2_b")


def _timm_tf(state: Mapping[str, torch.Tensor], spec: NetSpec, src: Path) -> Preprocessing:
    """timm's pretrained cfgs: ``tf_efficientnet_lite*`` and ``tf_efficientnetv2_s/m/l/xl`` 0.5/0.5,
    ``tf_efficientnet_b*`` and ``tf_efficientnetv2_b*`` ImageNet mean/std (but the AdvProp ``.ap_in1k`` weights
    0.5/0.5: pass --mean/--std), bicubic."""
    half = [0.5, 0.5, 0.5]
    if _is_lite(spec, src) or _is_v2_tf_scaled(spec, src) or ".ap_" in src.name or "_ap." in src.name:
        return {"mean": half, "std": half, "interpolation": "bicubic"}
    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "interpolation": "bicubic"}


def _lukemelas(state: Mapping[str, torch.Tensor], spec: NetSpec, src: Path) -> Preprocessing:
    """efficientnet-pytorch's B0-B7: ImageNet mean/std; Lite files in its layout (the bundled ones): Inception."""
    if _is_lite(spec, src):
        return {"mean": list(INCEPTION_MEAN), "std": list(INCEPTION_STD)}
    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _keras(state: Mapping[str, torch.Tensor], spec: NetSpec, src: Path) -> Preprocessing:
    found = keras_preprocessing(state)
    if not found and spec.name.startswith("efficientnetv2_"):
        # EfficientNetV2* normalise inside the model with layers that hold no weights: S..L by Rescaling(1/128,
        # offset=-1), on [0, 1] pixels (x - 128/255) / (128/255); B0..B3 by V1's ImageNet mean and variance.
        if _is_v2_tf_scaled(spec, src):
            return {"mean": [128 / 255] * 3, "std": [128 / 255] * 3}
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if not found:
        return {}
    mean, variance = found["mean"], found["variance"]
    if all(abs(v - s) < 1e-4 for v, s in zip(variance, IMAGENET_STD)):
        # keras.applications' ImageNet weights store ImageNet's *std* as the variance and follow the layer with
        # Rescaling(1/sqrt(std)): together (x - mean) / std.
        std = list(variance)
    else:
        std = [max(v, 0.0) ** 0.5 or 1e-3 for v in variance]
    return {"mean": list(mean), "std": std, "keras_normalization": found}


# torchvision builds B5-B7 and V2 S/M/L with BatchNorm2d(eps=1e-3), B0-B4 with 1e-5.
_TORCHVISION_EPS = {**{f"efficientnet_b{i}": 1e-3 for i in (5, 6, 7)}, **{f"efficientnetv2_{v}": 1e-3 for v in "sml"}}


@dataclass(frozen=True)
class Source:
    """A library whose checkpoints effnet converts, and how its weights expect to be run."""

    name: str
    convert: Callable[[Mapping[str, torch.Tensor], NetSpec], State]
    padding: str
    bn_eps: float
    note: str
    # Input normalisation the source's checkpoints were trained with (state, target spec, source file).
    preprocessing: Callable[[Mapping[str, torch.Tensor], NetSpec, Path], Preprocessing]
    read: Callable[[Path], State] | None = None  # None: a .pth / .safetensors state dict
    bn_eps_by_model: Mapping[str, float] = field(default_factory=dict)  # variants built with another eps

    def eps_for(self, spec: NetSpec) -> float:
        return self.bn_eps_by_model.get(spec.name, self.bn_eps)


SOURCES: dict[str, Source] = {
    "timm": Source("timm", from_timm, "symmetric", 1e-5,
                   "timm efficientnet_* / efficientnet_lite* (for tf_efficientnet_* use timm-tf)",
                   _imagenet(interpolation="bicubic")),
    "timm-tf": Source("timm-tf", from_timm, "same", 1e-3,
                      "timm tf_efficientnet_* / tf_efficientnet_lite* / tf_efficientnetv2_* (ported TF weights)",
                      _timm_tf),
    "torchvision": Source("torchvision", from_torchvision, "symmetric", 1e-5,
                          "torchvision.models.efficientnet_b* / efficientnet_v2_*", _imagenet(),
                          bn_eps_by_model=_TORCHVISION_EPS),
    "lukemelas": Source("lukemelas", from_lukemelas, "same", 1e-3, "efficientnet_pytorch.EfficientNet",
                        _lukemelas),
    "keras": Source("keras", from_keras, "same", 1e-3,
                    "keras.applications.EfficientNetB* / EfficientNetV2* (.weights.h5 or legacy .h5)", _keras,
                    read=read_keras_h5),
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise WeightsError(f"--from: got {name!r}, expected one of {', '.join(SOURCES)}") from None
