"""Compound scaling (Tan & Le 2019, Section 3.3) as pure functions on specs. No torch here.

The paper scales a baseline ConvNet in three dimensions at once (Eq. 3):

    depth d = α^φ,   width w = β^φ,   resolution r = γ^φ,   with α·β²·γ² ≈ 2,  α, β, γ ≥ 1

so that FLOPs, which grow like d·w²·r², grow by about 2^φ.  `compound` turns (φ, α, β, γ) into the three
multipliers; `scale` applies any three multipliers to any `NetSpec`; `round_filters` / `round_repeats` are
the two rounding rules of the TensorFlow reference (`efficientnet_model.py`), kept here and nowhere else.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

from effnet.spec import NetSpec, SpecError

CONSTRAINT_TOLERANCE = 0.1
"""`compound` warns when α·β²·γ² is further than this from 2 (the paper's constraint)."""


@dataclass(frozen=True)
class Multipliers:
    """Depth, width and resolution multipliers, each > 0 (below 1 scales down)."""

    depth: float = 1.0
    width: float = 1.0
    resolution: float = 1.0

    def __post_init__(self) -> None:
        for name in ("depth", "width", "resolution"):
            _check_multiplier(name, getattr(self, name))

    @property
    def macs_factor(self) -> float:
        """The ideal MACs growth d·w²·r² (the paper's FLOPs argument); rounding moves real models off it."""
        return self.depth * self.width**2 * self.resolution**2


def _check_multiplier(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise SpecError(f"{name} multiplier: got {value!r}, expected a finite number > 0")


def round_filters(channels: float, width: float = 1.0, divisor: int = 8) -> int:
    """Scale a channel count by `width` and round to a multiple of `divisor`, never dropping below 90% of the
    scaled value (TF reference `round_filters`; timm `round_channels`)."""
    _check_multiplier("width", width)
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Scale a stage's block count by `depth`, rounding up (TF reference `round_repeats`)."""
    _check_multiplier("depth", depth)
    return max(1, int(math.ceil(repeats * depth)))


def round_resolution(resolution: int, multiplier: float = 1.0) -> int:
    """Scale an input size by `multiplier`, rounding to the nearest pixel."""
    _check_multiplier("resolution", multiplier)
    return max(8, int(round(resolution * multiplier)))


def compound(phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15) -> Multipliers:
    """Eq. 3 of the paper: d = α^φ, w = β^φ, r = γ^φ.  φ may be negative (scaling down).

    The defaults are the paper's grid-search result for B0 (α=1.2, β=1.1, γ=1.15).  A warning is issued when
    α·β²·γ² is far from 2, since then φ no longer means "about 2^φ times the FLOPs".
    """
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not math.isfinite(phi):
        raise SpecError(f"phi: got {phi!r}, expected a finite number")
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_multiplier(name, value)
    product = alpha * beta**2 * gamma**2
    if abs(product - 2.0) > CONSTRAINT_TOLERANCE:
        warnings.warn(
            f"alpha*beta^2*gamma^2 = {product:.3f}, far from the paper's constraint of 2: "
            f"phi={phi} will not mean 2^phi times the MACs",
            stacklevel=2,
        )
    return Multipliers(depth=alpha**phi, width=beta**phi, resolution=gamma**phi)


def scale(
    spec: NetSpec,
    depth: float = 1.0,
    width: float = 1.0,
    resolution: float = 1.0,
    *,
    name: str | None = None,
    fix_stem: bool | None = None,
    fix_head: bool | None = None,
    fix_first_last_repeats: bool | None = None,
) -> NetSpec:
    """A new spec with every stage's repeats scaled by `depth`, every width (stem, stage outputs and, through
    them, inner bottleneck widths, head) by `width`, and the input size by `resolution`.

    The `fix_*` options default to the spec's own `ScalingRules` (set by a family, e.g. Lite) and override them
    when given.  Scaling with all multipliers 1 returns an equal spec.
    """
    m = Multipliers(depth, width, resolution)
    rules = spec.scaling
    fix_stem = rules.fix_stem if fix_stem is None else fix_stem
    fix_head = rules.fix_head if fix_head is None else fix_head
    fix_ends = rules.fix_first_last_repeats if fix_first_last_repeats is None else fix_first_last_repeats
    divisor = rules.divisor

    last = len(spec.stages) - 1
    stages = tuple(
        replace(
            stage,
            out_channels=round_filters(stage.out_channels, m.width, divisor),
            repeats=stage.repeats if fix_ends and i in (0, last) else round_repeats(stage.repeats, m.depth),
        )
        for i, stage in enumerate(spec.stages)
    )
    stem = spec.stem if fix_stem else replace(spec.stem, channels=round_filters(spec.stem.channels, m.width, divisor))
    head = spec.head
    if head.channels and not fix_head:
        head = replace(head, channels=round_filters(head.channels, m.width, divisor))
    return replace(
        spec,
        name=name or spec.name,
        stages=stages,
        stem=stem,
        head=head,
        resolution=round_resolution(spec.resolution, m.resolution),
    )


def scale_compound(
    spec: NetSpec, phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15, *, name: str | None = None
) -> NetSpec:
    """`scale(spec, *compound(phi, alpha, beta, gamma))`: step 2 of the method."""
    m = compound(phi, alpha, beta, gamma)
    return scale(spec, m.depth, m.width, m.resolution, name=name)
