"""The α/β/γ grid search (step 1 of compound scaling): each φ=1 model trained for a fixed budget with the project's
trainer (`effnet.train.train`, called as a library), recorded in a shared Optuna study (`effnet.search.study`).

A search is identified by its base spec, dataset, grid (step, tolerance), φ and training budget: these are stored
in the study, and a worker joining with different ones is refused, so every trial of a study is comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from effnet.profile import profile
from effnet.scaling import CONSTRAINT_TOLERANCE, compound, scale
from effnet.search.grid import DEFAULT_STEP, Coefficients, coefficient_grid
from effnet.search.leases import spawn_workers
from effnet.search.study import SearchError, open_study
from effnet.spec import NetSpec
from effnet.stats import SEEDS_WITHIN_NOISE

SEARCH_TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 1.0, "batch_size": 64, "augment": "none"}
"""Budget defaults for a trial when the command line gives none (short runs: no augmentation)."""


@dataclass(frozen=True)
class SearchConfig:
    """What makes a search: base, data, grid, φ and the per-trial training budget (`effnet.train.TrainConfig`
    fields).  `threads` and `loader_workers` only change speed, so they are not part of a study's identity;
    `seeds` and `seeds_within_noise` say how many studies there are, one per seed (`coefficient_seeds`)."""

    base: NetSpec
    base_ref: str
    dataset: str = "fashion-mnist"
    step: float = DEFAULT_STEP
    tolerance: float = CONSTRAINT_TOLERANCE
    phi: float = 1.0
    train: dict[str, Any] = field(default_factory=lambda: dict(SEARCH_TRAIN_DEFAULTS))
    threads: int | None = None
    loader_workers: int = 0
    seeds: int = 1
    seeds_within_noise: int = SEEDS_WITHIN_NOISE

    def grid(self) -> tuple[Coefficients, ...]:
        return coefficient_grid(self.step, self.tolerance)

    def identity(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "dataset": self.dataset, "step": self.step,
                "tolerance": self.tolerance, "phi": self.phi, "train": dict(sorted(self.train.items()))}


def trial_spec(base: NetSpec, c: Coefficients, phi: float = 1.0, num_classes: int | None = None) -> NetSpec:
    """The candidate model: `base` scaled by d = α^φ, w = β^φ, r = γ^φ (Eq. 3)."""
    m = compound(phi, c.alpha, c.beta, c.gamma) if abs(c.product - 2) <= CONSTRAINT_TOLERANCE else _quiet(phi, c)
    spec = scale(base, m.depth, m.width, m.resolution,
                 name=f"{base.name}_a{c.alpha:g}_b{c.beta:g}_g{c.gamma:g}")
    return replace(spec, num_classes=num_classes) if num_classes else spec


def _quiet(phi: float, c: Coefficients):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compound(phi, c.alpha, c.beta, c.gamma)


def make_evaluator(config: SearchConfig) -> Callable[[Coefficients], tuple[float, dict[str, Any]]]:
    """`evaluate(c) -> (top-1 %, attributes)`: build the φ model of `c`, train it, and measure it."""
    from effnet.data import open_sources
    from effnet.train import TrainConfig, train

    num_classes = len(open_sources(config.dataset).train.classes)

    def evaluate(c: Coefficients) -> tuple[float, dict[str, Any]]:
        spec = trial_spec(config.base, c, config.phi, num_classes)
        p = profile(spec)
        settings = {"test": False, **config.train}  # trials are scored on validation; the test split is not read
        result = train(TrainConfig(model=spec, data=config.dataset, out_dir=None, progress=False,
                                   workers=config.loader_workers, threads=config.threads, **settings))
        attrs = {
            "macs": p.macs, "params": p.params, "resolution": spec.resolution,
            "repeats": [s.repeats for s in spec.stages], "top1": result.top1, "top5": result.top5,
            "ema_top1": result.ema_top1, "val_loss": result.val_loss, "train_loss": result.train_loss,
            "train_wall_s": result.wall_s, "images_per_s": result.images_per_s, "steps": result.steps,
            "num_classes": num_classes,
        }
        return float(result.top1), attrs

    return evaluate


def study_name_for(config: SearchConfig) -> str:
    return f"coefficients-{config.base.name}-{config.dataset.replace('/', '_')}"


SCORE_ATTR = "score"
SCORE = "top-1 on images held out from the training set"
"""What a trial's value is, recorded on the study: studies made before trials were scored on validation have no
such mark, and their trials (scored on test images) must not be joined or reported as a validation search."""


def open_coefficient_study(storage: str | None, study_name: str, config: SearchConfig,
                           grid: Sequence[Coefficients] | None = None, identity: dict[str, Any] | None = None, *,
                           create: bool = True):
    """Create or join the grid-search study (`open_study`) over `grid` (default: the whole grid), refusing one
    whose trials were scored otherwise; with ``create=False`` only an existing one, writing nothing."""
    study = open_study(storage, study_name, config.grid() if grid is None else grid,
                       config.identity() if identity is None else identity, create=create)
    held = study.user_attrs.get(SCORE_ATTR)
    if held is None and study.get_trials(deepcopy=False):
        raise SearchError(f"study {study_name!r} in {storage}: its trials were scored on test images by an earlier "
                          "effnet (no validation mark); start a new search with another --storage or --study")
    if held is None and create:
        study.set_user_attr(SCORE_ATTR, SCORE)
    elif held is not None and held != SCORE:
        raise SearchError(f"study {study_name!r} in {storage}: its trials are scored as {held!r}, expected {SCORE!r}; "
                          "use another --storage or --study")
    return study


__all__ = ["SCORE", "SEARCH_TRAIN_DEFAULTS", "SearchConfig", "make_evaluator", "open_coefficient_study",
           "spawn_workers", "study_name_for", "trial_spec"]
