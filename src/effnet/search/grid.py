"""Step 1 of the compound scaling method (Tan & Le 2019, Sec. 3.3): the candidate (α, β, γ) for a grid search.

With φ fixed to 1 the paper searches α, β, γ ≥ 1 under α·β²·γ² ≈ 2, so every candidate model costs about twice the
baseline's FLOPs and the search compares *how* to spend that budget, not how much.  This module only enumerates
the grid (pure, no torch, no Optuna).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.errors import EffnetError
from effnet.scaling import CONSTRAINT_TOLERANCE

TARGET_PRODUCT = 2.0
"""α·β²·γ² of the paper's constraint: doubling the resources at each step of φ."""

DEFAULT_STEP = 0.05


class GridError(EffnetError, ValueError):
    """A grid setting is out of range (the message names it)."""


@dataclass(frozen=True, order=True)
class Coefficients:
    """One grid point: depth base α, width base β, resolution base γ."""

    alpha: float
    beta: float
    gamma: float

    @property
    def product(self) -> float:
        """α·β²·γ²: the MACs growth per unit of φ, ideally 2."""
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def label(self) -> str:
        return f"alpha={self.alpha:g} beta={self.beta:g} gamma={self.gamma:g}"

    def trial_attributes(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "product": self.product}

    def describe(self) -> str:
        return f"{self.label} (product {self.product:.3f})"

    @classmethod
    def from_label(cls, label: str) -> Coefficients:
        try:
            parts = dict(item.split("=") for item in label.split())
            return cls(float(parts["alpha"]), float(parts["beta"]), float(parts["gamma"]))
        except (KeyError, ValueError):
            raise GridError(f"grid point label: got {label!r}, expected 'alpha=A beta=B gamma=G'") from None


def _values(step: float, high: float) -> list[float]:
    """1, 1+step, 1+2·step, ... up to `high`, rounded so that 1.15 is 1.15 and not 1.1500000000000001."""
    digits = max(0, -math.floor(math.log10(step)) + 2)
    count = int(math.floor((high - 1.0) / step + 1e-9))
    return [round(1.0 + i * step, digits) for i in range(count + 1)]


def coefficient_grid(
    step: float = DEFAULT_STEP, tolerance: float = CONSTRAINT_TOLERANCE, target: float = TARGET_PRODUCT
) -> tuple[Coefficients, ...]:
    """Every (α, β, γ) on a `step` grid from 1 with |α·β²·γ² − target| <= tolerance, sorted.

    The default tolerance is `scaling.CONSTRAINT_TOLERANCE` (0.1), the same bound `scaling.compound` warns
    beyond; it keeps the paper's own B0 result (1.2, 1.1, 1.15: product 1.92) on the grid.
    """
    for name, value, low, high in (("step", step, 0.001, 1.0), ("tolerance", tolerance, 0.0, 1.0),
                                   ("target", target, 1.0, 16.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise GridError(f"grid {name}: got {value!r}, expected a number in [{low}, {high}]")
    high = target + tolerance
    alphas = _values(step, high)
    others = _values(step, math.sqrt(high))
    points = tuple(
        Coefficients(a, b, g)
        for a in alphas for b in others for g in others
        if abs(a * b * b * g * g - target) <= tolerance + 1e-12
    )
    if not points:
        raise GridError(f"grid: no (alpha, beta, gamma) with step {step} lies within {tolerance} of "
                        f"alpha*beta^2*gamma^2 = {target}; use a finer --step or a larger --tolerance")
    return points


__all__ = ["Coefficients", "DEFAULT_STEP", "GridError", "TARGET_PRODUCT", "coefficient_grid"]
