"""Statistics of repeated runs: mean with a 95% Student-t interval, and the paired difference of two methods
trained with the same seeds (the seed fixes initial weights, data order and augmentation, so the pairs share
their noise and the difference is measured far more precisely than either mean)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

SEEDS_WITHIN_NOISE = 5
"""Seeds for the points of a comparison whose paired difference is within the noise (its 95% interval includes
zero) after the planned seeds: the experiments' `--seeds-within-noise` and the grid search's default."""

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom (beyond 30 the normal 1.96 is within 4%).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (the 95% two-sided interval's factor)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df  # 2.4/df: the large-df expansion, to 3 digits


@dataclass(frozen=True)
class Interval:
    """Mean of `n` values and the half-width of its 95% t-interval (nan for a single value)."""

    mean: float
    half_width: float
    n: int
    std: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 2) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def to_dict(self) -> dict[str, float | None]:
        """The fields, with null where a value is undefined (no runs, or one: strict JSON has no NaN)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval of `values` (sample standard deviation, n − 1 degrees of freedom)."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t_critical(n - 1) * std / math.sqrt(n), n, std)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Interval:
    """a − b over the seeds both have: mean difference and its 95% t-interval (a paired t-test at 5% is
    "the interval excludes zero")."""
    seeds = sorted(set(a) & set(b))
    return interval([a[s] - b[s] for s in seeds])


__all__ = ["SEEDS_WITHIN_NOISE", "Interval", "interval", "paired_difference", "t_critical"]
