"""What the trained experiments share: the baseline, the training recipe, the scaling methods, and the scaled
candidate of each method at a MACs budget (found with the budget solver and measured with the profiler).

The baseline is small enough for two CPU cores and sized so that rounding does not decide the comparison: B0's
stages at width 0.25 (channels rounded to multiples of 4), a stride-1 stem and B0's sixth stage without its
stride, so the network's total stride is 8 and an 18 px input ends in 3×3 feature maps.  Fashion-MNIST's images
are 28 px: the baseline sees them downsampled, so resolution scaling up to 28 px adds real detail; beyond 28 px
the images are upsampled (the reports mark those points).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from effnet.scaling import compound, scale
from effnet.spec import NetSpec

NATIVE_RESOLUTION = 28  # Fashion-MNIST's own image size
BUDGET_TOLERANCE = 0.05
BASELINE_FILE = Path(__file__).with_name("baseline.json")


def baseline() -> NetSpec:
    """The experiments' baseline spec (also saved as `effnet/experiments/baseline.json` for `effnet search`)."""
    return NetSpec.from_json(BASELINE_FILE.read_text())


def build_baseline() -> NetSpec:
    """How baseline.json was made from B0 (kept so that it can be re-derived and checked in a test)."""
    from effnet.registry import get_spec

    b0 = get_spec("efficientnet_b0")
    stages = tuple(replace(s, stride=1) if i == 5 else s for i, s in enumerate(b0.stages))
    spec = replace(b0, name="b0_w025_s8", stages=stages, stem=replace(b0.stem, stride=1), resolution=18,
                   num_classes=10, bn_momentum=0.1, bn_eps=1e-5, dropout=0.1, drop_path_rate=0.1,
                   scaling=replace(b0.scaling, divisor=4))
    return scale(spec, 1.0, 0.25, 1.0, name="b0_w025_s8")


# -- the training recipe ---------------------------------------------------------------------------------------

RECIPE: dict[str, Any] = {
    "steps": 430, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "warmup_epochs": 0.3,
    "decay_epochs": 0.1, "decay_rate": 0.8, "weight_decay": 5e-5, "label_smoothing": 0.1, "ema_decay": 0.995,
    "augment": "none", "crop_scale": (1.0, 1.0), "hflip": True,
}
"""Every trained point of the scaling experiments: 430 steps of 128 images (one epoch of the 55,000 training
images), SGD with Nesterov momentum, lr 0.1 after a linear warm-up (capped at 10% of the budget), ×0.8 every 0.1
epoch (to 0.011 at the end), weight decay 5e-5, label smoothing 0.1, EMA 0.995 (the EMA weights are validated and
chosen), dropout 0.1 and drop-path 0.1 from the baseline spec, horizontal flips only.  Short, because two cores
train every model of every experiment (the 8x models run at 60-200 images/s); the reports show each model's
training accuracy beside its validation accuracy, so that under-training is visible rather than hidden."""

QUICK_TEST_IMAGES = 500
QUICK_RECIPE: dict[str, Any] = {**RECIPE, "steps": 12, "batch_size": 32, "train_subset": 640, "val_subset": 256,
                                "test_subset": QUICK_TEST_IMAGES, "warmup_epochs": 0.1}
"""`--quick`: the same recipe on 12 steps of 32 images, validated on 256 held-out images and tested on a fixed 500
of the test images (a smoke test of the whole pipeline, not a measurement)."""


def recipe(quick: bool) -> dict[str, Any]:
    return dict(QUICK_RECIPE if quick else RECIPE)


def recipe_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in sorted(settings.items()))


# -- scaling methods -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A scaling rule d = α^φ, w = β^φ, r = γ^φ: single dimensions are the rules with one base of 2."""

    name: str
    alpha: float
    beta: float
    gamma: float

    def multipliers(self, phi: float):
        with warnings.catch_warnings():  # a single dimension is off the α·β²·γ² = 2 constraint on purpose
            warnings.simplefilter("ignore")
            return compound(phi, self.alpha, self.beta, self.gamma)


DEPTH = Method("depth", 2.0, 1.0, 1.0)
WIDTH = Method("width", 1.0, 2.0, 1.0)
RESOLUTION = Method("resolution", 1.0, 1.0, 2.0)
PAPER_COMPOUND = Method("compound (paper)", 1.2, 1.1, 1.15)
SINGLE_DIMENSIONS = (DEPTH, WIDTH, RESOLUTION)


def grid_compound(path: str | Path) -> Method | None:
    """The α, β, γ that the grid search found for the baseline (`effnet search coefficients ... --format json`
    output saved at `path`), or None if that file is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    best = data["rows"][0]
    return Method("compound (grid)", float(best["alpha"]), float(best["beta"]), float(best["gamma"]))


@dataclass(frozen=True)
class Candidate:
    """The model one method gives at one budget: its φ, multipliers, and what it measures."""

    method: str
    target_ratio: float
    phi: float | None
    spec: NetSpec | None
    macs: int | None
    base_macs: int
    depth: float | None
    width: float | None
    resolution: float | None
    nearest: tuple[float | None, float | None] = (None, None)
    """Where no model lands within the budget: the nearest reachable MACs ratios below and above it."""

    @property
    def ratio(self) -> float | None:
        return None if self.macs is None else self.macs / self.base_macs

    @property
    def within(self) -> bool:
        return self.ratio is not None and abs(self.ratio / self.target_ratio - 1) <= BUDGET_TOLERANCE


def candidate(base: NetSpec, method: Method, target_ratio: float) -> Candidate:
    """`base` scaled by `method` to `target_ratio` × its MACs (±5%), with the budget solver."""
    from effnet.budget import solve_for_macs
    from effnet.profile import count_macs

    base_macs = count_macs(base)
    if target_ratio == 1:
        return Candidate(method.name, 1.0, 0.0, base, base_macs, base_macs, 1.0, 1.0, 1.0)
    sol = solve_for_macs(base, target_ratio * base_macs, alpha=method.alpha, beta=method.beta, gamma=method.gamma,
                         tolerance=BUDGET_TOLERANCE, phi_range=(0.0, 6.0))
    if not sol.within_tolerance:
        nearest = tuple(None if side is None else side[1] / base_macs for side in (sol.below, sol.above))
        return Candidate(method.name, target_ratio, None, None, None, base_macs, None, None, None, nearest)
    m = method.multipliers(sol.phi)
    name = f"{base.name}_{method.name.split()[0]}{'_grid' if 'grid' in method.name else ''}_x{target_ratio:g}"
    return Candidate(method.name, target_ratio, sol.phi, replace(sol.spec, name=name), int(sol.cost), base_macs,
                     m.depth, m.width, m.resolution)


def shape_of(spec: NetSpec, base: NetSpec) -> dict[str, Any]:
    """The effective (d, w, r) of a rounded model against the base: blocks, head width and input size ratios."""
    blocks = sum(s.repeats for s in spec.stages)
    base_blocks = sum(s.repeats for s in base.stages)
    return {"blocks": blocks, "depth_eff": blocks / base_blocks,
            "width_eff": spec.head.channels / base.head.channels, "resolution": spec.resolution,
            "resolution_eff": spec.resolution / base.resolution,
            "upsampled": spec.resolution > NATIVE_RESOLUTION}


__all__ = ["BASELINE_FILE", "BUDGET_TOLERANCE", "Candidate", "DEPTH", "Method", "NATIVE_RESOLUTION",
           "PAPER_COMPOUND", "QUICK_RECIPE", "QUICK_TEST_IMAGES", "RECIPE", "RESOLUTION", "SINGLE_DIMENSIONS", "WIDTH",
           "baseline", "build_baseline", "candidate", "grid_compound", "recipe", "recipe_text", "shape_of"]
