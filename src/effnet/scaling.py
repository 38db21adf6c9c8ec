"""Compound scaling (Tan & Le 2019, Section 3.3) as pure functions on specs. No torch here.

The paper scales a baseline ConvNet in three dimensions at once (Eq. 3):

    depth d = α^φ,   width w = β^φ,   resolution r = γ^φ,   with α·β²·γ² ≈ 2,  α, β, γ ≥ 1

so that FLOPs, which grow like d·w²·r², grow by about 2^φ.  `compound` turns (φ, α, β, γ) into the three
multipliers; `scale` applies any three multipliers to any `NetSpec`; `round_filters` / `round_repeats` are
the two rounding rules of the TensorFlow reference (`efficientnet_model.py`), kept here and nowhere else.

`strategy_multipliers` generalises Eq. 3 to the scaling rules compared since: given a nominal cost multiplier s,
every strategy returns (d, w, r) with d·w²·r² = s: compound (the paper's α, β, γ), one dimension alone, and the
family of Dollár, Singh & Girshick ("Fast and Accurate Model Scaling", CVPR 2021).  `solve_phi` and `solve_scale`
find the φ or s whose *rounded* model meets a budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from effnet.bisection import BudgetSolution, bisect_budget
from effnet.spec import NetSpec, SpecError

CONSTRAINT_TOLERANCE = 0.1
"""`compound` warns when α·β²·γ² is further than this from 2 (the paper's constraint)."""

# Far beyond any real model (L2 has 5,504 head channels, 800 px, 12 blocks a stage), yet small enough that a typo
# such as --phi 500 fails at once instead of building a model of millions of blocks.
MAX_CHANNELS = 65_536
MAX_REPEATS = 1_000
MAX_RESOLUTION = 16_384
MIN_RESOLUTION = 8  # the smallest input a scaled spec gets: `round_resolution` raises smaller ones to it


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


def round_filters(channels: float, width: float = 1.0, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale a channel count by `width` and round to the nearest multiple of `divisor`, never dropping below
    `round_limit` times the scaled value (V1's TF reference `round_filters` and timm's `round_channels`: 0.9;
    V2's reference `round_filters` has no floor: 0, so 16 x 1.2 = 19.2 rounds to 16 there and to 24 in V1)."""
    scaled = _check_scaled("channels", channels, "width", width, MAX_CHANNELS)
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Scale a stage's block count by `depth`, rounding up (TF reference `round_repeats`)."""
    return max(1, int(math.ceil(_check_scaled("repeats", repeats, "depth", depth, MAX_REPEATS))))


def round_resolution(resolution: int, multiplier: float = 1.0) -> int:
    """Scale an input size by `multiplier`, rounding to the nearest pixel (at least `MIN_RESOLUTION`)."""
    scaled = _check_scaled("resolution", resolution, "resolution", multiplier, MAX_RESOLUTION)
    return max(MIN_RESOLUTION, int(round(scaled)))


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
    divisor, limit = rules.divisor, rules.round_limit

    last = len(spec.stages) - 1
    stages = tuple(
        replace(
            stage,
            out_channels=round_filters(stage.out_channels, m.width, divisor, limit),
            repeats=stage.repeats if fix_ends and i in (0, last) else round_repeats(stage.repeats, m.depth),
        )
        for i, stage in enumerate(spec.stages)
    )
    stem = spec.stem if fix_stem else replace(spec.stem,
                                              channels=round_filters(spec.stem.channels, m.width, divisor, limit))
    head = spec.head
    if head.channels and not fix_head:
        head = replace(head, channels=round_filters(head.channels, m.width, divisor, limit))
    return replace(
        spec,
        name=name or spec.name,
        stages=stages,
        stem=stem,
        head=head,
        resolution=round_resolution(spec.resolution, m.resolution),
    )


def fuse_stages(spec: NetSpec, count: int, *, name: str | None = None) -> NetSpec:
    """`spec` with its first `count` stages made of Fused-MBConv blocks (EfficientNetV2, Table 3).

    Each such stage keeps its kernel, stride, output channels, repeats, expand ratio and activation: the fused
    block's kxk expansion conv stands where the 1x1 expansion and the depthwise kxk were.  Squeeze-excitation is
    dropped in the fused stages, as in V2's own tables (no Fused-MBConv stage of V2 has SE); with it dropped, B4's
    stages 1-5 and 1-7 fused count 43.5M and 132.1M parameters against Table 3's 43.4M and 132M.  `count` 0
    returns an equal spec; the default name is ``{spec.name}_fused{count}``.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(spec.stages):
        raise SpecError(f"fused stages: got {count!r}, expected an integer from 0 to {len(spec.stages)} (the "
                        f"stages of {spec.name})")
    wrong = [f"{i + 1} ({s.kind})" for i, s in enumerate(spec.stages[:count])
             if s.kind not in ("mbconv", "fused_mbconv")]
    if wrong:
        raise SpecError(f"fused stages: stage(s) {', '.join(wrong)} of {spec.name} are not MBConv; expected "
                        "inverted-bottleneck stages (mbconv) to fuse")
    stages = tuple(replace(s, kind="fused_mbconv", se_ratio=0.0) if i < count else s
                   for i, s in enumerate(spec.stages))
    return replace(spec, name=name or (f"{spec.name}_fused{count}" if count else spec.name), stages=stages)


def scale_compound(
    spec: NetSpec, phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15, *, name: str | None = None
) -> NetSpec:
    """`scale(spec, *compound(phi, alpha, beta, gamma))`: step 2 of the method."""
    m = compound(phi, alpha, beta, gamma)
    return scale(spec, m.depth, m.width, m.resolution, name=name)


# -- scaling strategies ---------------------------------------------------------------------------------------------

STRATEGIES = ("compound", "depth", "width", "resolution", "uniform", "fast", "dollar")
"""The strategies `strategy_multipliers` knows; `uniform` and `fast` are members of the `dollar` family."""

DOLLAR_A = {"uniform": 1 / 3, "fast": 0.8}
"""Dollár et al.'s parameter a of the named strategies.  1/3 gives each of d, w², r² the same share s^(1/3); 0.8 is
their *fast compound scaling*, which puts most of the cost into width: activations grow like d·w·r² = s^(1 − a/2),
so like s^0.6 instead of s^0.83 for uniform and s for depth or resolution alone (their Section 4)."""


def strategy_multipliers(
    s: float,
    strategy: str = "compound",
    *,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    a: float | None = None,
) -> Multipliers:
    """(d, w, r) that multiply the nominal cost d·w²·r² by exactly `s` under `strategy`.

    - compound: φ = ln s / ln(α·β²·γ²), then Eq. 3 (d = α^φ, w = β^φ, r = γ^φ);
    - depth, width, resolution: one dimension alone (d = s, or w = √s, or r = √s);
    - dollar: Dollár et al.'s family, d = s^((1−a)/2), w = s^(a/2), r = s^((1−a)/4) for a in [0, 1]
      (a = 1 is width alone; a = 0 grows depth and resolution only, with r = √d);
    - uniform, fast: the dollar family at a = 1/3 and a = 0.8.

    `alpha`/`beta`/`gamma` matter only to compound, `a` only to dollar.  Real models move off s by rounding.
    """
    _check_multiplier("scale s", s)
    if strategy not in STRATEGIES:
        raise SpecError(f"strategy: got {strategy!r}, expected one of {', '.join(STRATEGIES)}")
    if (a is not None) != (strategy == "dollar"):
        raise SpecError(f"strategy {strategy!r}: " + ("a is Dollár's parameter of the 'dollar' strategy only; drop it"
                                                       if a is not None else "needs a, e.g. a=0.8 (0 <= a <= 1)"))
    if strategy == "compound":
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            _check_multiplier(name, value)
        product = alpha * beta**2 * gamma**2
        if product <= 1.0 + 1e-9:
            raise SpecError(f"compound strategy: alpha*beta^2*gamma^2 = {product:g}, expected > 1 (the cost must grow "
                            "with phi); use larger alpha, beta or gamma")
        phi = math.log(s) / math.log(product)
        return _multipliers(lambda: (alpha**phi, beta**phi, gamma**phi))
    if strategy == "depth":
        return Multipliers(depth=s)
    if strategy == "width":
        return Multipliers(width=math.sqrt(s))
    if strategy == "resolution":
        return Multipliers(resolution=math.sqrt(s))
    a = DOLLAR_A.get(strategy, a)
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
        raise SpecError(f"dollar strategy a: got {a!r}, expected a number in [0, 1] (1/3 uniform, 0.8 fast)")
    return _multipliers(lambda: (s ** ((1 - a) / 2), s ** (a / 2), s ** ((1 - a) / 4)))


def _multipliers(make: Callable[[], tuple[float, float, float]]) -> Multipliers:
    try:
        return Multipliers(*make())
    except (OverflowError, SpecError):
        raise SpecError("scale s gives multipliers out of range (overflow or zero); use a multiplier between "
                        "about 1e-3 and 1e6") from None


def scale_by(spec: NetSpec, s: float, strategy: str = "compound", *, alpha: float = 1.2, beta: float = 1.1,
             gamma: float = 1.15, a: float | None = None, name: str | None = None) -> NetSpec:
    """`scale(spec, *strategy_multipliers(s, strategy, ...))`: `spec` with its nominal cost multiplied by `s`."""
    m = strategy_multipliers(s, strategy, alpha=alpha, beta=beta, gamma=gamma, a=a)
    return scale(spec, m.depth, m.width, m.resolution, name=name)


# -- budget solver -------------------------------------------------------------------------------------------------

DEFAULT_PHI_RANGE = (-3.0, 8.0)


@dataclass(frozen=True)
class PhiSolution(BudgetSolution):
    """What `solve_phi` found: `phi` and the fields of every budget solution (`effnet.bisection.BudgetSolution`;
    `below` / `above` as (φ, cost))."""

    phi: float | None


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
    function of φ: see `effnet.bisection` for how the bisection stops, caches costs and names the nearest models
    on a miss (`below`, `above`).  An end of `phi_range` whose multipliers are beyond the builder's range
    (`MAX_REPEATS`, `MAX_CHANNELS`, `MAX_RESOLUTION`) counts as above the target.
    """
    def make(phi: float) -> NetSpec:
        with warnings.catch_warnings():  # the constraint warning is the caller's business, said once
            warnings.simplefilter("ignore")
            return scale_compound(spec, phi, alpha, beta, gamma)

    phi, found = bisect_budget(make, target, cost, tolerance, phi_range, min_step, "phi_range")
    return PhiSolution(**_shared(found), phi=phi)


DEFAULT_LOG2_SCALE_RANGE = (-8.0, 12.0)
"""s from 1/256 to 4096 times the base's nominal cost (L2 costs about 1,200 times B0's MACs)."""


@dataclass(frozen=True)
class ScaleSolution(BudgetSolution):
    """What `solve_scale` found: the nominal multiplier `scale` (s) and its (d, w, r) under `strategy`, and the
    fields of every budget solution (`below` / `above` as (s, cost))."""

    strategy: str
    scale: float | None
    multipliers: Multipliers | None


def solve_scale(
    spec: NetSpec,
    target: float,
    cost: Callable[[NetSpec], float],
    *,
    strategy: str = "compound",
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    a: float | None = None,
    tolerance: float = 0.03,
    log2_range: tuple[float, float] = DEFAULT_LOG2_SCALE_RANGE,
    min_step: float = 1e-4,
) -> ScaleSolution:
    """The nominal multiplier s whose *rounded* model `scale_by(spec, s, strategy, ...)` costs within `tolerance`
    of `target`: the budget solver of every strategy.  It bisects log2 s the way `solve_phi` bisects φ (same
    caching, same nearest values on a miss); a multiplier beyond the builder's range counts as above the target,
    so a depth-only budget is reached however far the range reaches.

    The search starts at s₀ = target / cost(spec), where an ideal model would land, and widens a bracket around it
    (steps of 0.5, 1, 2 … in log2 s) before bisecting, so it seldom builds a model far from the answer (a
    depth-only B0 at s = 128 has 2,000 blocks).
    """
    strategy_multipliers(1.0, strategy, alpha=alpha, beta=beta, gamma=gamma, a=a)  # a bad strategy fails here

    def make(log2_s: float) -> NetSpec:
        return scale_by(spec, 2.0**log2_s, strategy, alpha=alpha, beta=beta, gamma=gamma, a=a)

    t, found = bisect_budget(make, target, cost, tolerance, log2_range, min_step, "log2_range", guess_from=0.0)
    two = lambda side: None if side is None else (2.0 ** side[0], side[1])
    s = None if t is None else 2.0**t
    m = None if s is None else strategy_multipliers(s, strategy, alpha=alpha, beta=beta, gamma=gamma, a=a)
    return ScaleSolution(**{**_shared(found), "below": two(found.below), "above": two(found.above)}, strategy=strategy,
                         scale=s, multipliers=m)


def _shared(found: BudgetSolution) -> dict[str, Any]:
    """The fields every budget solution has, by name, to make a solver's own solution type of them."""
    return {f.name: getattr(found, f.name) for f in fields(BudgetSolution)}
