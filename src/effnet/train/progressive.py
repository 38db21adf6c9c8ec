"""Progressive learning (EfficientNetV2, Tan & Le 2021, Sec. 4.2, Algorithm 1) as data: the run's stage plan.

Training is split into M stages of (nearly) equal numbers of steps; stage i (0-based) trains at an image size and
with a regularisation (classifier dropout, RandAugment magnitude, mixup alpha) interpolated linearly from the
first stage's (S0, Φ0) to the last one's (Se, Φe), at ratio i / (M - 1).  The weights, optimizer and EMA carry
over from stage to stage; validation always runs at the final size Se (the run's resolution).

The plan is computed once from the config (`stage_plan`), recorded in the run (run.json, recipe.txt) and asked by
the training loop per step (`stage_at`), so a run resumed at any step, a stage boundary included, trains exactly
as the uninterrupted run would.  A run without progressive learning has a plan of one stage: the run's own
resolution, dropout and RandAugment magnitude, and no mixup.

Ends by default (`V2_S`, Table 6 of the paper for EfficientNetV2-S): size 128 → 300, RandAugment magnitude
5 → 15, mixup alpha 0 → 0, dropout 0.1 → 0.3.  The sizes are scaled to the run's resolution: S0 = Se × 128/300,
rounded half up to a whole pixel and at least `MIN_START_SIZE`; each stage's size is rounded the same way (whole
pixels rather than multiples of 8, so that small images such as Fashion-MNIST's 28 px get distinct sizes).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Ends:
    """One model's progressive settings from Table 6: (first, last) of each."""

    size: tuple[int, int]
    randaugment: tuple[int, int]
    mixup: tuple[float, float]
    dropout: tuple[float, float]


V2_S = Ends(size=(128, 300), randaugment=(5, 15), mixup=(0.0, 0.0), dropout=(0.1, 0.3))
V2_M = Ends(size=(128, 380), randaugment=(5, 20), mixup=(0.0, 0.2), dropout=(0.1, 0.4))
V2_L = Ends(size=(128, 380), randaugment=(5, 25), mixup=(0.0, 0.4), dropout=(0.1, 0.5))
"""Table 6 of the paper (min and max of each setting while training EfficientNetV2-S, -M, -L on ImageNet)."""

PAPER_STAGES = 4
"""The paper splits training into four stages."""

MIN_START_SIZE = 8
"""The smallest first-stage size the default rule gives (the smallest resolution a run accepts)."""


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def default_start_size(final_size: int, ends: Ends = V2_S) -> int:
    """S0 for a run at `final_size`: the paper's ratio of first to last size, rounded half up, at least
    `MIN_START_SIZE` and at most `final_size`."""
    return min(final_size, max(MIN_START_SIZE, round_half_up(final_size * ends.size[0] / ends.size[1])))


@dataclass(frozen=True)
class Stage:
    """One stage: from `first_step` (0-based, inclusive) until the next stage's first step."""

    index: int
    first_step: int
    size: int
    dropout: float
    randaugment_m: int
    mixup: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, last_step: int) -> str:
        """'steps 0-24: 12 px, dropout 0.1, RandAugment m=5, mixup 0' (`last_step`: the stage's last step)."""
        return (f"steps {self.first_step}-{last_step}: {self.size} px, dropout {self.dropout:g}, "
                f"RandAugment m={self.randaugment_m}, mixup {self.mixup:g}")


def _lerp(a: float, b: float, t: float) -> float:
    return round(a + (b - a) * t, 6)


def stage_plan(*, stages: int | None, total_steps: int, final_size: int, dropout: float, randaugment_m: int,
               start_size: int | None = None, dropout_ends: Sequence[float] = V2_S.dropout,
               randaugment_ends: Sequence[int] = V2_S.randaugment,
               mixup_ends: Sequence[float] = V2_S.mixup) -> tuple[Stage, ...]:
    """The run's stages.  `stages` None: one stage with the run's own `dropout` and `randaugment_m` at
    `final_size`, no mixup.  Otherwise `stages` stages (checked by the caller: 1 <= stages <= total_steps,
    start_size <= final_size), stage i starting at step floor(i × total_steps / stages)."""
    if stages is None:
        return (Stage(0, 0, final_size, dropout, randaugment_m, 0.0),)
    s0 = default_start_size(final_size) if start_size is None else start_size
    out = []
    for i in range(stages):
        t = i / (stages - 1) if stages > 1 else 1.0
        out.append(Stage(index=i, first_step=i * total_steps // stages,
                         size=round_half_up(s0 + (final_size - s0) * t),
                         dropout=_lerp(dropout_ends[0], dropout_ends[1], t),
                         randaugment_m=round_half_up(randaugment_ends[0] + (randaugment_ends[1] - randaugment_ends[0])
                                                     * t),
                         mixup=_lerp(mixup_ends[0], mixup_ends[1], t)))
    return tuple(out)


def stage_at(plan: Sequence[Stage], step: int) -> Stage:
    """The stage that trains step `step` (0-based)."""
    return plan[bisect.bisect_right([s.first_step for s in plan], step) - 1]


def stage_end(plan: Sequence[Stage], stage: Stage, total_steps: int) -> int:
    """The first step after `stage` (the next stage's first step, or the run's total)."""
    return plan[stage.index + 1].first_step if stage.index + 1 < len(plan) else total_steps


def describe_plan(plan: Sequence[Stage], total_steps: int) -> list[str]:
    """One line per stage, as `--recipe` prints them."""
    return [s.describe(stage_end(plan, s, total_steps) - 1) for s in plan]


__all__ = ["Ends", "MIN_START_SIZE", "PAPER_STAGES", "Stage", "V2_L", "V2_M", "V2_S", "default_start_size",
           "describe_plan", "round_half_up", "stage_at", "stage_end", "stage_plan"]
