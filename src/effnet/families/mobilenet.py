"""MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018) at width 1.0, 224 px, as specs.

These are two of the three baselines the EfficientNet paper scales in Table 3 to show that compound scaling works
on ConvNets it did not design.  Both are built by the same `ConvNet` builder as EfficientNet:

- MobileNetV1 is a 3x3/2 stem conv and 13 depthwise-separable blocks (Table 1 of the MobileNet paper; the last
  block keeps stride 1, as in every released implementation), global pool and a 1024 → 1000 classifier, with
  ReLU6 as in the TF-slim, Keras and timm releases (the paper writes ReLU).  Its parameter count, 4,231,976, is
  the Keras `MobileNet(alpha=1.0)` trainable count and timm's `mobilenetv1_100`.
- MobileNetV2 is the inverted-residual table (t, c, n, s) of the MobileNetV2 paper, Table 2, with ReLU6, a 1x1
  head to 1280 and dropout 0.2: exactly torchvision's `mobilenet_v2` (3,504,872 parameters); its first block
  (t = 1) has no expansion conv, which `MBConv` already skips when the expand ratio is 1.

Stages group blocks with the same output width; the first block of a stage carries its stride, so depth scaling
(more repeats per stage) never changes where the network downsamples.
"""

from __future__ import annotations

from effnet.spec import HeadSpec, NetSpec, StageSpec, StemSpec


def _separable(repeats: int, stride: int, out: int) -> StageSpec:
    return StageSpec("separable", repeats, 3, stride, out, activation="relu6")


MOBILENET_V1 = NetSpec(
    name="mobilenet_v1",
    stem=StemSpec(channels=32, kernel=3, stride=2, activation="relu6"),
    stages=(
        _separable(1, 1, 64),
        _separable(2, 2, 128),
        _separable(2, 2, 256),
        _separable(6, 2, 512),
        _separable(2, 2, 1024),
    ),
    head=HeadSpec(channels=0, activation="relu6"),
    resolution=224,
    dropout=1e-3,  # Keras applications' default
)


def _inverted(expand: int, out: int, repeats: int, stride: int) -> StageSpec:
    return StageSpec("mbconv", repeats, 3, stride, out, expand_ratio=expand, activation="relu6")


MOBILENET_V2 = NetSpec(
    name="mobilenet_v2",
    stem=StemSpec(channels=32, kernel=3, stride=2, activation="relu6"),
    stages=tuple(
        _inverted(*row)
        for row in [  # t (expand), c (out), n (repeats), s (stride): MobileNetV2 paper, Table 2
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]
    ),
    head=HeadSpec(channels=1280, activation="relu6"),
    resolution=224,
    dropout=0.2,
)

SPECS: dict[str, NetSpec] = {"mobilenet_v1": MOBILENET_V1, "mobilenet_v2": MOBILENET_V2}


def mobilenet(name: str) -> NetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown MobileNet {name!r}; known: {sorted(SPECS)}") from None
