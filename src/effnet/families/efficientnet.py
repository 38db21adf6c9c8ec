"""EfficientNet B0–B8, L2 and EfficientNet-Lite0–4 as specs.

B0 is Table 1 of the paper.  The scaled variants come from the official TensorFlow variant table
(`efficientnet_builder.py`, `efficientnet_params`), which is the single source of truth here:

    Note: the released B1–B7 do *not* follow α^φ, β^φ, γ^φ with (α, β, γ) = (1.2, 1.1, 1.15) exactly.  The paper's
    Eq. 3 with those coefficients gives, e.g. for φ=1, depth 1.2 / width 1.1 / 258 px, while B1 is depth 1.1 /
    width 1.0 / 240 px.  The authors hand-picked the table below; effnet reproduces it, and offers the pure
    Eq. 3 models through `effnet.scaling.scale_compound` / `effnet scale --phi`.

Lite (TF `efficientnet_lite_builder.py`): no squeeze-excitation, ReLU6, stem (32) and head (1280) widths and the
first and last stages' repeats kept fixed when scaling; weights come from TensorFlow, so padding is "same".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from effnet.scaling import scale
from effnet.spec import HeadSpec, NetSpec, ScalingRules, StageSpec, StemSpec


def _mbconv(repeats: int, kernel: int, stride: int, expand: int, out: int, se: float, act: str) -> StageSpec:
    return StageSpec("mbconv", repeats, kernel, stride, out, expand_ratio=expand, se_ratio=se, activation=act)


def b0_stages(se_ratio: float = 0.25, activation: str = "silu") -> tuple[StageSpec, ...]:
    """Table 1 of the paper, stages 2–8 (stage 1 is the stem, stage 9 the head)."""
    rows = [  # repeats, kernel, stride, expand (MBConvN), out channels
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ]
    return tuple(_mbconv(*row, se=se_ratio, act=activation) for row in rows)


EFFICIENTNET_B0 = NetSpec(
    name="efficientnet_b0",
    stem=StemSpec(channels=32, kernel=3, stride=2, activation="silu"),
    stages=b0_stages(),
    head=HeadSpec(channels=1280, activation="silu"),
    resolution=224,
    dropout=0.2,
    drop_path_rate=0.2,
    bn_eps=1e-3,
    bn_momentum=0.01,  # TF's 0.99 moving-average decay, in PyTorch's convention
)

EFFICIENTNET_LITE0 = replace(
    EFFICIENTNET_B0,
    name="efficientnet_lite0",
    stem=StemSpec(channels=32, kernel=3, stride=2, activation="relu6"),
    stages=b0_stages(se_ratio=0.0, activation="relu6"),
    head=HeadSpec(channels=1280, activation="relu6"),
    padding="same",
    scaling=ScalingRules(fix_stem=True, fix_head=True, fix_first_last_repeats=True),
)


@dataclass(frozen=True)
class Variant:
    """One row of the official variant table."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, Variant] = {
    "efficientnet_b0": Variant(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Variant(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Variant(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Variant(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": Variant(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": Variant(1.6, 2.2, 456, 0.4),
    "efficientnet_b6": Variant(1.8, 2.6, 528, 0.5),
    "efficientnet_b7": Variant(2.0, 3.1, 600, 0.5),
    "efficientnet_b8": Variant(2.2, 3.6, 672, 0.5),
    "efficientnet_l2": Variant(4.3, 5.3, 800, 0.5),
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": Variant(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": Variant(1.4, 1.8, 300, 0.3),
}

PAPER_TABLE2: dict[str, tuple[float, float]] = {
    # Table 2 of the paper: (parameters in millions, FLOPs — multiply-adds — in billions)
    "efficientnet_b0": (5.3, 0.39),
    "efficientnet_b1": (7.8, 0.70),
    "efficientnet_b2": (9.2, 1.0),
    "efficientnet_b3": (12.0, 1.8),
    "efficientnet_b4": (19.0, 4.2),
    "efficientnet_b5": (30.0, 9.9),
    "efficientnet_b6": (43.0, 19.0),
    "efficientnet_b7": (66.0, 37.0),
}

PAPER_TABLE2_TOP1: dict[str, float] = {
    # Table 2 of the paper: ImageNet top-1 (%) of B0-B7
    "efficientnet_b0": 77.1, "efficientnet_b1": 79.1, "efficientnet_b2": 80.1, "efficientnet_b3": 81.6,
    "efficientnet_b4": 82.9, "efficientnet_b5": 83.6, "efficientnet_b6": 84.0, "efficientnet_b7": 84.3,
}


def efficientnet(name: str) -> NetSpec:
    """The spec of a named variant, scaled from B0 (or Lite0) by its row of `VARIANTS`."""
    try:
        v = VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown EfficientNet variant {name!r}; known: {sorted(VARIANTS)}") from None
    base = EFFICIENTNET_LITE0 if "lite" in name else EFFICIENTNET_B0
    spec = scale(base, depth=v.depth, width=v.width, resolution=v.resolution / base.resolution, name=name)
    return replace(spec, dropout=v.dropout)


def specs() -> dict[str, NetSpec]:
    return {name: efficientnet(name) for name in VARIANTS}
