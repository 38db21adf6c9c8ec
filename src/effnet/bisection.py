"""The bisection behind every budget solver of `effnet.scaling` (`solve_phi`, `solve_scale`): the scaling
parameter t (φ, or log2 s) whose *rounded* model costs within a tolerance of a target.  No torch here: the cost is
any function of a spec.

Rounding makes the cost a step function of t: bisection keeps cost(lo) < target <= cost(hi) and stops at the first
t within tolerance, or when the bracket is narrower than `min_step`: then the target falls in a jump between two
rounded models and the result names both (`below`, `above`).  Costs are cached per rounded spec, so each distinct
model is evaluated once (this matters when the cost is a latency measurement).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from effnet.spec import NetSpec, SpecError


@dataclass(frozen=True)
class BudgetSolution:
    """What a budget solver found: the rounded model (`spec`) and its `cost`, within `tolerance` of `target`.
    `within_tolerance` False means no model lands close enough: `below` / `above` are the nearest reachable
    (parameter, cost) on either side of the target (None where the range, or the builder's, ends first)."""

    target: float
    tolerance: float
    spec: NetSpec | None
    cost: float | None
    within_tolerance: bool
    below: tuple[float, float] | None
    above: tuple[float, float] | None
    evaluations: int

    @property
    def relative_error(self) -> float | None:
        return None if self.cost is None else self.cost / self.target - 1.0


def bisect_budget(make: Callable[[float], NetSpec], target: float, cost: Callable[[NetSpec], float], tolerance: float,
                  bounds: tuple[float, float], min_step: float, bounds_name: str,
                  guess_from: float | None = None) -> tuple[float | None, BudgetSolution]:
    """Bisection on the scaling parameter t of `make` (φ, or log2 s) for the rounded model nearest `target`.

    Returns t (None on a miss) and what was found, with `below` / `above` as (t, cost).  A t whose model `make`
    refuses (multipliers beyond the builder's range) costs +inf above 0 and 0 below it; such an end is never
    reported as a nearest value.  With `guess_from` (t is log2 of a cost multiplier), the bracket is first
    narrowed around t₀ = guess_from + log2(target / cost(guess_from)).
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) or target <= 0:
        raise SpecError(f"target: got {target!r}, expected a finite number > 0")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise SpecError(f"tolerance: got {tolerance!r}, expected a fraction in (0, 1), e.g. 0.03 for 3%")
    lo, hi = bounds
    if not lo < hi:
        raise SpecError(f"{bounds_name}: got {bounds!r}, expected (low, high) with low < high")
    cache: dict[NetSpec, float] = {}

    def evaluate(t: float) -> tuple[NetSpec | None, float]:
        try:
            scaled = make(t)
        except SpecError:  # multipliers beyond the builder's range: this end is too big (or too small)
            return None, (math.inf if t > 0 else 0.0)
        if scaled not in cache:
            cache[scaled] = float(cost(scaled))
        return scaled, cache[scaled]

    def reachable(t: float, scaled: NetSpec | None, value: float) -> tuple[float, float] | None:
        return None if scaled is None else (t, value)

    def done(t: float | None, scaled: NetSpec | None, value: float | None, ok: bool, below, above):
        return t, BudgetSolution(target, tolerance, scaled, value, ok, below, above, len(cache))

    def close(value: float) -> bool:
        return abs(value / target - 1.0) <= tolerance

    if guess_from is not None:
        lo, hi = _bracket(evaluate, target, guess_from, (lo, hi))
    spec_lo, cost_lo = evaluate(lo)
    if cost_lo >= target:
        ok = close(cost_lo)
        return done(lo if ok else None, spec_lo if ok else None, cost_lo if ok else None, ok, None,
                    reachable(lo, spec_lo, cost_lo))
    spec_hi, cost_hi = evaluate(hi)
    if cost_hi < target:
        ok = close(cost_hi)
        return done(hi if ok else None, spec_hi if ok else None, cost_hi if ok else None, ok,
                    reachable(hi, spec_hi, cost_hi), None)
    # Invariant: cost(lo) < target <= cost(hi).  Either end may already be close enough.
    best = min(((lo, spec_lo, cost_lo), (hi, spec_hi, cost_hi)), key=lambda t: abs(t[2] / target - 1.0))
    while not close(best[2]) and hi - lo > min_step:
        mid = 0.5 * (lo + hi)
        spec_mid, cost_mid = evaluate(mid)
        if close(cost_mid):
            best = (mid, spec_mid, cost_mid)
            break
        if cost_mid < target and spec_hi is None:
            # Near the builder's limit: cost only the largest model it builds, not every model on the way there.
            hi = _last_buildable(make, mid, hi, min_step)
            spec_hi, cost_hi = evaluate(hi)
            if cost_hi < target:
                ok = close(cost_hi)
                return done(hi if ok else None, spec_hi if ok else None, cost_hi if ok else None, ok,
                            reachable(hi, spec_hi, cost_hi), None)
        if cost_mid < target:
            lo, spec_lo, cost_lo = mid, spec_mid, cost_mid
        else:
            hi, spec_hi, cost_hi = mid, spec_mid, cost_mid
    if close(best[2]):
        return done(best[0], best[1], best[2], True, None, None)
    return done(None, None, None, False, reachable(lo, spec_lo, cost_lo), reachable(hi, spec_hi, cost_hi))


def _bracket(evaluate: Callable[[float], tuple[NetSpec | None, float]], target: float, origin: float,
             bounds: tuple[float, float]) -> tuple[float, float]:
    """A sub-range of `bounds` with cost(lo) < target <= cost(hi), found by stepping out from the guess of an ideal
    cost model; an end of `bounds` is kept where the target lies beyond it (so misses report the range's end)."""
    low, high = bounds
    reference = evaluate(origin)[1]
    ratio = target / reference if 0 < reference < math.inf else 1.0
    t = min(max(origin + math.log2(ratio), low), high)
    step, below = 0.5, evaluate(t)[1] < target
    while True:
        nxt = min(t + step, high) if below else max(t - step, low)
        if nxt == t:  # the target lies beyond an end of the range
            return bounds
        if (evaluate(nxt)[1] >= target) == below:
            return (t, nxt) if below else (nxt, t)
        t, step = nxt, 2 * step


def _last_buildable(make: Callable[[float], NetSpec], lo: float, hi: float, min_step: float) -> float:
    """The largest t in [lo, hi) (to `min_step`) whose model `make` builds, given that lo's does and hi's does not:
    a bisection on the builder's limits alone, which costs no model."""
    while hi - lo > min_step:
        mid = 0.5 * (lo + hi)
        try:
            make(mid)
            lo = mid
        except SpecError:
            hi = mid
    return lo
