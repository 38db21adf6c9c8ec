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
from collections.abc import Callable
from dataclasses import dataclass, replace

from effnet.spec import NetSpec, SpecError

CONSTRAINT_TOLERANCE = 0.1
"""`compound` warns when α·β²·γ² is further than this from 2 (the paper's constraint)."""

# Far beyond any real model (L2 has 5,504 head channels, 800 px, 12 blocks a stage), yet small enough that a typo
# such as --phi 500 fails at once instead of building a model of millions of blocks.
MAX_CHANNELS = 65_536
MAX_REPEATS = 1_000
MAX_RESOLUTION = 16_384


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


def _check_scaled(what: str, base: float, multiplier_name: str, multiplier: float, limit: int) -> float:
    _check_multiplier(multiplier_name, multiplier)
    scaled = base * multiplier
    if not math.isfinite(scaled) or scaled > limit:
        raise SpecError(f"{multiplier_name} multiplier {multiplier:g}: {what} {base:g} would become {scaled:.3g}, "
                        f"above the limit of {limit:,}; use a smaller multiplier")
    return scaled


def round_filters(channels: float, width: float = 1.0, divisor: int = 8) -> int:
    """Scale a channel count by `width` and round to a multiple of `divisor`, never dropping below 90% of the
    scaled value (TF reference `round_filters`; timm `round_channels`)."""
    scaled = _check_scaled("channels", channels, "width", width, MAX_CHANNELS)
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Scale a stage's block count by `depth`, rounding up (TF reference `round_repeats`)."""
    return max(1, int(math.ceil(_check_scaled("repeats", repeats, "depth", depth, MAX_REPEATS))))


def round_resolution(resolution: int, multiplier: float = 1.0) -> int:
    """Scale an input size by `multiplier`, rounding to the nearest pixel."""
    return max(8, int(round(_check_scaled("resolution", resolution, "resolution", multiplier, MAX_RESOLUTION))))


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
    try:
        return Multipliers(depth=alpha**phi, width=beta**phi, resolution=gamma**phi)
    except (OverflowError, SpecError):
        raise SpecError(f"phi={phi:g} with alpha={alpha:g}, beta={beta:g}, gamma={gamma:g} gives multipliers out of "
                        "range (overflow or zero); use |phi| of at most a few tens") from None


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


# -- budget solver -------------------------------------------------------------------------------------------------

DEFAULT_PHI_RANGE = (-3.0, 8.0)


@dataclass(frozen=True)
class PhiSolution:
    """What `solve_phi` found.  `within_tolerance` False means no φ lands close enough: `below` / `above` are the
    nearest reachable (φ, cost) on either side of the target (None where the φ range ends first)."""

    target: float
    tolerance: float
    phi: float | None
    spec: NetSpec | None
    cost: float | None
    within_tolerance: bool
    below: tuple[float, float] | None
    above: tuple[float, float] | None
    evaluations: int

    @property
    def relative_error(self) -> float | None:
        return None if self.cost is None else self.cost / self.target - 1.0


def solve_phi(
    spec: NetSpec,
    target: float,
    cost: Callable[[NetSpec], float],
    *,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    tolerance: float = 0.03,
    phi_range: tuple[float, float] = DEFAULT_PHI_RANGE,
    min_step: float = 1e-4,
) -> PhiSolution:
    """The φ (continuous) whose *rounded* model `scale_compound(spec, φ, α, β, γ)` costs within `tolerance` of
    `target`, by bisection on φ.

    `cost` maps a spec to a number that grows with the model (MACs, measured latency); this module never builds
    one, so it stays free of torch (`effnet.budget` passes torch-side costs).  Rounding makes the cost a step
    function of φ: bisection keeps cost(lo) < target <= cost(hi) and stops at the first φ within tolerance, or
    when the bracket is narrower than `min_step`: then the target falls in a jump between two rounded models and
    the result names both (`below`, `above`).  Costs are cached per rounded spec, so each distinct model is
    evaluated once (this matters when the cost is a latency measurement).
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) or target <= 0:
        raise SpecError(f"target: got {target!r}, expected a finite number > 0")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise SpecError(f"tolerance: got {tolerance!r}, expected a fraction in (0, 1), e.g. 0.03 for 3%")
    lo, hi = phi_range
    if not lo < hi:
        raise SpecError(f"phi_range: got {phi_range!r}, expected (low, high) with low < high")
    cache: dict[NetSpec, float] = {}

    def evaluate(phi: float) -> tuple[NetSpec, float]:
        with warnings.catch_warnings():  # the constraint warning is the caller's business, said once
            warnings.simplefilter("ignore")
            scaled = scale_compound(spec, phi, alpha, beta, gamma)
        if scaled not in cache:
            cache[scaled] = float(cost(scaled))
        return scaled, cache[scaled]

    def done(phi: float | None, scaled: NetSpec | None, value: float | None, ok: bool, below, above) -> PhiSolution:
        return PhiSolution(target, tolerance, phi, scaled, value, ok, below, above, len(cache))

    def close(value: float) -> bool:
        return abs(value / target - 1.0) <= tolerance

    spec_lo, cost_lo = evaluate(lo)
    if cost_lo >= target:
        ok = close(cost_lo)
        return done(lo if ok else None, spec_lo if ok else None, cost_lo if ok else None, ok, None, (lo, cost_lo))
    spec_hi, cost_hi = evaluate(hi)
    if cost_hi < target:
        ok = close(cost_hi)
        return done(hi if ok else None, spec_hi if ok else None, cost_hi if ok else None, ok, (hi, cost_hi), None)
    # Invariant: cost(lo) < target <= cost(hi).  Either end may already be close enough.
    best = min(((lo, spec_lo, cost_lo), (hi, spec_hi, cost_hi)), key=lambda t: abs(t[2] / target - 1.0))
    while not close(best[2]) and hi - lo > min_step:
        mid = 0.5 * (lo + hi)
        spec_mid, cost_mid = evaluate(mid)
        if close(cost_mid):
            best = (mid, spec_mid, cost_mid)
            break
        if cost_mid < target:
            lo, cost_lo = mid, cost_mid
        else:
            hi, cost_hi = mid, cost_mid
    if close(best[2]):
        return done(best[0], best[1], best[2], True, None, None)
    return done(None, None, None, False, (lo, cost_lo), (hi, cost_hi))
