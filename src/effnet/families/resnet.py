"""ResNet-50, -101 and -152 (He et al. 2016) as specs: ResNet-50 is the third baseline of the EfficientNet paper's
Table 3; ResNet-152 is the model Table 4 times EfficientNet-B1 against (0.554 s vs 0.098 s on one Xeon core).

torchvision's layout (v1.5: the stride sits on the 3x3 conv of a bottleneck): a 7x7/2 stem conv with a 3x3/2
max-pool, four stages of bottlenecks with outputs 256, 512, 1024, 2048 and inner width out/4, no head conv, no
dropout, and a 2048 → 1000 classifier.  The three differ only in their block counts (He et al., Table 1):

    resnet50    3-4-6-3     25,557,032 parameters
    resnet101   3-4-23-3    44,549,160
    resnet152   3-8-36-3    60,192,808      (each exactly torchvision's model of that name)

A bottleneck's inner width is stored as `out_channels / expand_ratio` (expand_ratio = 4), so width scaling of
`out_channels` scales the inner 1x1/3x3 convs with it.
"""

from __future__ import annotations

from effnet.spec import HeadSpec, NetSpec, StageSpec, StemSpec


def _bottleneck(repeats: int, stride: int, out: int) -> StageSpec:
    return StageSpec("bottleneck", repeats, 3, stride, out, expand_ratio=4, activation="relu")


def _resnet(name: str, repeats: tuple[int, int, int, int]) -> NetSpec:
    return NetSpec(
        name=name,
        stem=StemSpec(channels=64, kernel=7, stride=2, activation="relu", max_pool=True),
        stages=tuple(
            _bottleneck(n, 1 if i == 0 else 2, out) for i, (n, out) in enumerate(zip(repeats, (256, 512, 1024, 2048)))
        ),
        head=HeadSpec(channels=0, activation="relu"),
        resolution=224,
        dropout=0.0,
    )


RESNET50 = _resnet("resnet50", (3, 4, 6, 3))
RESNET101 = _resnet("resnet101", (3, 4, 23, 3))
RESNET152 = _resnet("resnet152", (3, 8, 36, 3))

SPECS: dict[str, NetSpec] = {spec.name: spec for spec in (RESNET50, RESNET101, RESNET152)}


def resnet(name: str) -> NetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown ResNet {name!r}; known: {sorted(SPECS)}") from None
