"""ResNet-50 (He et al. 2016) as a spec: the third baseline of the EfficientNet paper's Table 3.

torchvision's layout (v1.5: the stride sits on the 3x3 conv of a bottleneck): a 7x7/2 stem conv with a 3x3/2
max-pool, four stages of 3, 4, 6, 3 bottlenecks with outputs 256, 512, 1024, 2048 and inner width out/4, no head
conv, no dropout, and a 2048 → 1000 classifier: 25,557,032 parameters, exactly torchvision's `resnet50`.

A bottleneck's inner width is stored as `out_channels / expand_ratio` (expand_ratio = 4), so width scaling of
`out_channels` scales the inner 1x1/3x3 convs with it.
"""

from __future__ import annotations

from effnet.spec import HeadSpec, NetSpec, StageSpec, StemSpec


def _bottleneck(repeats: int, stride: int, out: int) -> StageSpec:
    return StageSpec("bottleneck", repeats, 3, stride, out, expand_ratio=4, activation="relu")


RESNET50 = NetSpec(
    name="resnet50",
    stem=StemSpec(channels=64, kernel=7, stride=2, activation="relu", max_pool=True),
    stages=(
        _bottleneck(3, 1, 256),
        _bottleneck(4, 2, 512),
        _bottleneck(6, 2, 1024),
        _bottleneck(3, 2, 2048),
    ),
    head=HeadSpec(channels=0, activation="relu"),
    resolution=224,
    dropout=0.0,
)

SPECS: dict[str, NetSpec] = {"resnet50": RESNET50}


def resnet(name: str) -> NetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown ResNet {name!r}; known: {sorted(SPECS)}") from None
