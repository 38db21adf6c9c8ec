"""EfficientNetV2 S, M, L, XL and B0–B3 as specs (Tan & Le, "EfficientNetV2: Smaller Models and Faster Training",
ICML 2021).

The stage tables are the V2 reference's (`automl/efficientnetv2/effnetv2_configs.py`, ``v2_s_block`` …
``v2_base_block``): early stages of Fused-MBConv, later ones of MBConv with squeeze-excitation, all 3x3 kernels.
S, M, L and XL are separate searched/scaled designs, each written out; B0–B3 scale ``v2_base_block`` by the same
(width, depth) multipliers as V1's B0–B3 ("for fair comparison to EfficientNetV1, using the same scaling"), so
those multipliers are read from V1's variant table (`effnet.families.efficientnet.VARIANTS`), not repeated.  The
reference rounds channels without V1's 90% floor (``round_limit`` 0: 16 × 1.2 stays 16 in B3) and repeats up.

Each model has two resolutions: training images are smaller than evaluation images (the paper's progressive
learning ends at the train size; Table 7 evaluates at the eval size).  The spec's `resolution` is the eval size,
`VARIANTS_V2[name].train_resolution` the train size.

Padding and BN: BN eps 1e-3 and PyTorch momentum 0.1 (TF's 0.9) throughout.  S, M and L use symmetric padding,
as torchvision's weights for them were trained; XL and B0–B3 exist only as TF-trained weights (timm's
``tf_efficientnetv2_*``, Keras), which need TF "same" padding.  Converted weights set padding and eps themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from effnet.families import efficientnet as v1
from effnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from effnet.scaling import scale
from effnet.spec import HeadSpec, NetSpec, ScalingRules, StageSpec, StemSpec

_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # stage strides of every V2 table (the seventh stage exists in M, L, XL)
_FUSED, _MB = "fused_mbconv", "mbconv"

# (kind, repeats, expand ratio, out channels, SE ratio) per stage; kernel 3 and the strides above everywhere.
_Row = tuple[str, int, int, int, float]
_TABLES: dict[str, tuple[int, tuple[_Row, ...]]] = {  # name: (stem channels, stages)
    "efficientnetv2_base": (32, (
        (_FUSED, 1, 1, 16, 0.0), (_FUSED, 2, 4, 32, 0.0), (_FUSED, 2, 4, 48, 0.0),
        (_MB, 3, 4, 96, 0.25), (_MB, 5, 6, 112, 0.25), (_MB, 8, 6, 192, 0.25))),
    "efficientnetv2_s": (24, (
        (_FUSED, 2, 1, 24, 0.0), (_FUSED, 4, 4, 48, 0.0), (_FUSED, 4, 4, 64, 0.0),
        (_MB, 6, 4, 128, 0.25), (_MB, 9, 6, 160, 0.25), (_MB, 15, 6, 256, 0.25))),
    "efficientnetv2_m": (24, (
        (_FUSED, 3, 1, 24, 0.0), (_FUSED, 5, 4, 48, 0.0), (_FUSED, 5, 4, 80, 0.0),
        (_MB, 7, 4, 160, 0.25), (_MB, 14, 6, 176, 0.25), (_MB, 18, 6, 304, 0.25), (_MB, 5, 6, 512, 0.25))),
    "efficientnetv2_l": (32, (
        (_FUSED, 4, 1, 32, 0.0), (_FUSED, 7, 4, 64, 0.0), (_FUSED, 7, 4, 96, 0.0),
        (_MB, 10, 4, 192, 0.25), (_MB, 19, 6, 224, 0.25), (_MB, 25, 6, 384, 0.25), (_MB, 7, 6, 640, 0.25))),
    "efficientnetv2_xl": (32, (
        (_FUSED, 4, 1, 32, 0.0), (_FUSED, 8, 4, 64, 0.0), (_FUSED, 8, 4, 96, 0.0),
        (_MB, 16, 4, 192, 0.25), (_MB, 24, 6, 256, 0.25), (_MB, 32, 6, 512, 0.25), (_MB, 8, 6, 640, 0.25))),
}


def v2_stages(name: str) -> tuple[StageSpec, ...]:
    """The stages of a V2 table (`efficientnetv2_base`, `_s`, `_m`, `_l`, `_xl`)."""
    _, rows = _TABLES[name]
    return tuple(StageSpec(kind, repeats, 3, stride, out, expand_ratio=expand, se_ratio=se, activation="silu")
                 for (kind, repeats, expand, out, se), stride in zip(rows, _STRIDES))


def _base_spec(table: str, name: str, padding: str) -> NetSpec:
    stem, _ = _TABLES[table]
    return NetSpec(
        name=name,
        stem=StemSpec(channels=stem, kernel=3, stride=2, activation="silu"),
        stages=v2_stages(table),
        head=HeadSpec(channels=1280, activation="silu"),
        drop_path_rate=0.2,  # the reference's survival probability 0.8
        bn_eps=1e-3,
        bn_momentum=0.1,  # TF's 0.9 moving-average decay, in PyTorch's convention
        padding=padding,
        scaling=ScalingRules(round_limit=0.0),
    )


@dataclass(frozen=True)
class VariantV2:
    """One V2 model: its table, the train and eval image sizes and the dropout of the reference's
    ``efficientnetv2_params``, the padding and input normalisation of its weights; B0–B3 also name the V1 row whose
    (width, depth) they are scaled by.

    Normalisation: torchvision's S/M/L and the B0–B3 (V1's preprocessing, in the reference and Keras) take ImageNet
    mean/std; TF's XL takes x/128 − 1 on 0–255 pixels, i.e. mean = std = 0.5 on [0, 1] pixels."""

    table: str
    train_resolution: int
    resolution: int
    dropout: float
    padding: str
    v1_multipliers: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


VARIANTS_V2: dict[str, VariantV2] = {
    "efficientnetv2_s": VariantV2("efficientnetv2_s", 300, 384, 0.2, "symmetric"),
    "efficientnetv2_m": VariantV2("efficientnetv2_m", 384, 480, 0.3, "symmetric"),
    "efficientnetv2_l": VariantV2("efficientnetv2_l", 384, 480, 0.4, "symmetric"),
    "efficientnetv2_xl": VariantV2("efficientnetv2_xl", 384, 512, 0.4, "same", mean=(0.5,) * 3, std=(0.5,) * 3),
    "efficientnetv2_b0": VariantV2("efficientnetv2_base", 192, 224, 0.2, "same", "efficientnet_b0"),
    "efficientnetv2_b1": VariantV2("efficientnetv2_base", 192, 240, 0.2, "same", "efficientnet_b1"),
    "efficientnetv2_b2": VariantV2("efficientnetv2_base", 208, 260, 0.3, "same", "efficientnet_b2"),
    "efficientnetv2_b3": VariantV2("efficientnetv2_base", 240, 300, 0.3, "same", "efficientnet_b3"),
}


@dataclass(frozen=True)
class PaperFigures:
    """A model's figures as published: parameters (M), FLOPs (billions of multiply-adds), top-1 (%) trained on
    ImageNet-1k, and top-1 after ImageNet-21k pre-training (XL has only the latter); `source` names the table."""

    params_m: float
    flops_b: float
    top1: float | None
    top1_21k: float | None
    source: str = "V2 Table 7"


# Table 7 of the paper ("EfficientNetV2 Performance Results on ImageNet", ICML 2021): S 22M / 8.8B / 83.9%,
# M 54M / 24B / 85.1%, L 120M / 53B / 85.7%, and after ImageNet-21k pre-training S 84.9%, M 86.2%, L 86.8% and
# XL 87.3% with 208M / 94B.  (Figure 1(b) of the same paper gives S as 24M; Table 7's 22M is the one that fits the
# architecture, whose exact count is 21.5M.)  The reference release's checkpoint table (google/automl,
# efficientnetv2/README.md) lists the released models a little differently: S 21.5M / 8.4B, M 54.1M / 24.7B / 85.2%,
# L 119.5M / 56.3B, XL (21k) 87.2%; effnet's counts (21.5M / 8.37B, 54.1M / 24.6B, 119M / 56.1B) match it, so
# "MACs vs paper" is -5% for S and +6% for L.
PAPER_TABLE7: dict[str, PaperFigures] = {
    "efficientnetv2_s": PaperFigures(22, 8.8, 83.9, 84.9),
    "efficientnetv2_m": PaperFigures(54, 24, 85.1, 86.2),
    "efficientnetv2_l": PaperFigures(120, 53, 85.7, 86.8),
    "efficientnetv2_xl": PaperFigures(208, 94, None, 87.3),
}

# B0-B3 are not in the paper; the reference release's table of "smaller V2 models using the same scaling and
# preprocessing as V1" (google/automl, efficientnetv2/README.md) gives them, trained on ImageNet-1k only.
REFERENCE_B0_B3: dict[str, PaperFigures] = {
    "efficientnetv2_b0": PaperFigures(7.1, 0.72, 78.7, None, "V2 ref. README"),
    "efficientnetv2_b1": PaperFigures(8.1, 1.2, 79.8, None, "V2 ref. README"),
    "efficientnetv2_b2": PaperFigures(10.1, 1.7, 80.5, None, "V2 ref. README"),
    "efficientnetv2_b3": PaperFigures(14.4, 3.0, 82.1, None, "V2 ref. README"),
}

PUBLISHED: dict[str, PaperFigures] = {**PAPER_TABLE7, **REFERENCE_B0_B3}


def efficientnet_v2(name: str) -> NetSpec:
    """The spec of a named V2 model at its eval resolution; B0–B3 scaled from the base table by V1's multipliers."""
    try:
        v = VARIANTS_V2[name]
    except KeyError:
        raise KeyError(f"unknown EfficientNetV2 variant {name!r}; known: {sorted(VARIANTS_V2)}") from None
    spec = _base_spec(v.table, name, v.padding)
    if v.v1_multipliers is not None:
        m = v1.VARIANTS[v.v1_multipliers]
        spec = scale(spec, depth=m.depth, width=m.width, name=name)
    return replace(spec, resolution=v.resolution, dropout=v.dropout)


def train_resolution(name: str) -> int:
    """The image size a V2 model is trained at (smaller than its eval size, `efficientnet_v2(name).resolution`)."""
    return VARIANTS_V2[name].train_resolution


def specs() -> dict[str, NetSpec]:
    return {name: efficientnet_v2(name) for name in VARIANTS_V2}
