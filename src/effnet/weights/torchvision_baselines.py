"""torchvision's MobileNetV2 and ResNet state dicts → effnet's names, so torchvision's pretrained weights load
into the `mobilenet_v2` / `resnet50` / `resnet101` / `resnet152` specs (any ResNet built from bottleneck stages).

Only names change; tensors are passed through untouched, which is why the converted model's output equals
torchvision's exactly (tests/test_baselines.py checks this with random weights).

    torchvision mobilenet_v2                 effnet
    features.0.{0,1}                         stem.{conv,bn}
    features.k.conv.0.{0,1}  (t > 1)         stages.i.j.expand.{conv,bn}
    features.k.conv.{0|1}.{0,1}              stages.i.j.depthwise.{conv,bn}    (first index 0 when t = 1)
    features.k.conv.{1,2}|{2,3}              stages.i.j.project.{conv,bn}
    features.18.{0,1}                        head.{conv,bn}
    classifier.1                             classifier

    torchvision resnet50/101/152             effnet
    conv1, bn1                               stem.conv, stem.bn
    layerN.j.conv1/bn1, conv2/bn2, conv3/bn3 stages.(N-1).j.reduce, .spatial, .expand
    layerN.j.downsample.{0,1}                stages.(N-1).j.shortcut.{conv,bn}
    fc                                       classifier
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.families.mobilenet import MOBILENET_V2
from effnet.spec import NetSpec


class TorchvisionMappingError(EffnetError, KeyError):
    """A state dict has a key the torchvision → effnet mapping does not know; nothing was converted."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def _block_positions(spec: NetSpec) -> list[tuple[int, int, bool]]:
    """(stage, index in stage, has an expansion conv) for each MBConv block in torchvision's flat order."""
    positions, channels = [], spec.stem.channels
    for i, stage in enumerate(spec.stages):
        for j in range(stage.repeats):
            positions.append((i, j, round(channels * stage.expand_ratio) != channels))
            channels = stage.out_channels
    return positions


def _bn_or_conv(part: str, rest: str) -> str:
    return f"{part}.{'conv' if rest.startswith('0.') else 'bn'}.{rest[2:]}"


def mobilenet_v2_key(key: str, spec: NetSpec = MOBILENET_V2) -> str:
    """The effnet name of one torchvision `mobilenet_v2` key (for `spec`'s stage layout)."""
    blocks = _block_positions(spec)
    last = len(blocks) + 1
    if m := re.fullmatch(r"features\.0\.([01]\..+)", key):
        return _bn_or_conv("stem", m[1])
    if m := re.fullmatch(rf"features\.{last}\.([01]\..+)", key):
        return _bn_or_conv("head", m[1])
    if m := re.fullmatch(r"classifier\.1\.(weight|bias)", key):
        return f"classifier.{m[1]}"
    if (m := re.fullmatch(r"features\.(\d+)\.conv\.(\d)\.(.+)", key)) and 1 <= int(m[1]) <= len(blocks):
        stage, j, expands = blocks[int(m[1]) - 1]
        prefix, index, rest = f"stages.{stage}.{j}", int(m[2]), m[3]
        parts = ["expand", "depthwise"] if expands else ["depthwise"]
        if index < len(parts) and rest[:2] in ("0.", "1."):
            return f"{prefix}.{_bn_or_conv(parts[index], rest)}"
        tail = index - len(parts)  # the projection: a bare conv, then a bare BN
        if tail in (0, 1):
            return f"{prefix}.project.{'conv' if tail == 0 else 'bn'}.{rest}"
    raise TorchvisionMappingError(f"torchvision mobilenet_v2 key {key!r}: not part of the mapping; "
                                  "expected features.*, classifier.1.* of torchvision.models.mobilenet_v2")


_RESNET_PARTS = {"conv1": "reduce.conv", "bn1": "reduce.bn", "conv2": "spatial.conv", "bn2": "spatial.bn",
                 "conv3": "expand.conv", "bn3": "expand.bn", "downsample.0": "shortcut.conv",
                 "downsample.1": "shortcut.bn"}


def resnet_key(key: str) -> str:
    """The effnet name of one torchvision bottleneck-ResNet key (resnet50/101/152, wide_resnet50_2)."""
    if m := re.fullmatch(r"(conv1|bn1)\.(.+)", key):
        return f"stem.{'conv' if m[1] == 'conv1' else 'bn'}.{m[2]}"
    if m := re.fullmatch(r"fc\.(weight|bias)", key):
        return f"classifier.{m[1]}"
    if m := re.fullmatch(r"layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(.+)", key):
        return f"stages.{int(m[1]) - 1}.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    raise TorchvisionMappingError(f"torchvision resnet key {key!r}: not part of the mapping; expected conv1, bn1, "
                                  "layer1-4.*, fc.* of a torchvision bottleneck ResNet")


def convert(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """`state_dict` with every key renamed; the tensors themselves are shared, not copied."""
    return {rename(k): v for k, v in state_dict.items()}


def from_torchvision_mobilenet_v2(state_dict: Mapping[str, torch.Tensor], spec: NetSpec = MOBILENET_V2):
    return convert(state_dict, lambda k: mobilenet_v2_key(k, spec))


def from_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return convert(state_dict, resnet_key)


def load_torchvision(model: nn.Module, torchvision_model: nn.Module) -> nn.Module:
    """Copy a torchvision `mobilenet_v2` or bottleneck `resnet*` into the effnet `model` of the same layout."""
    state = torchvision_model.state_dict()
    if "conv1.weight" in state:
        converted = from_torchvision_resnet(state)
    else:
        converted = from_torchvision_mobilenet_v2(state, getattr(model, "spec", MOBILENET_V2))
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
             if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise TorchvisionMappingError(
            f"torchvision weights do not fit {getattr(getattr(model, 'spec', None), 'name', 'the model')}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, shapes (theirs vs ours) {wrong[:3]}; build the "
            "matching spec (mobilenet_v2, resnet50/101/152, or one scaled to the torchvision width) before loading"
        )
    model.load_state_dict(converted)
    return model


__all__ = ["TorchvisionMappingError", "from_torchvision_mobilenet_v2", "from_torchvision_resnet", "load_torchvision",
           "mobilenet_v2_key", "resnet_key"]
