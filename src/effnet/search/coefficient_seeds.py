"""Seeds of the α/β/γ grid search: every grid point trained with `seeds` seeds, then more for the close ones.

One study per seed: the first seed's keeps the search's own name (so a one-seed search made earlier is the first
seed of a longer one and is not trained again), seed S's is named `NAME-seedS` and holds the same grid with
`seed` = S in its budget.  Once every planned seed is done, the points whose paired difference with the best point
(the highest mean score, which is validation top-1) has a 95% interval including zero get seeds up to
`seeds_within_noise`, in studies of their own that hold only those points; the decision reads the planned seeds
alone, so every worker makes the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState

from effnet.search import coefficients
from effnet.search.coefficients import SearchConfig, open_coefficient_study
from effnet.search.grid import Coefficients
from effnet.search.leases import finished
from effnet.search.study import PARAM, make_storage, run_worker
from effnet.stats import Interval, paired_difference


@dataclass(frozen=True)
class SeedStudy:
    """The study of one seed: its name, the config whose budget holds that seed, and its grid points."""

    seed: int
    name: str
    config: SearchConfig
    grid: tuple[Coefficients, ...]
    added: bool = False

    def identity(self) -> dict:
        """What the study is checked against when joined: the budget, and the points of an added seed."""
        identity = self.config.identity()
        return {**identity, "points": [c.label for c in self.grid]} if self.added else identity


def first_seed(config: SearchConfig) -> int:
    return int(config.train.get("seed", 0))


def _study(config: SearchConfig, name: str, seed: int, grid: tuple[Coefficients, ...], added: bool) -> SeedStudy:
    if seed == first_seed(config):
        return SeedStudy(seed, name, config, grid, added)
    return SeedStudy(seed, f"{name}-seed{seed}", replace(config, train={**config.train, "seed": seed}), grid, added)


def planned(config: SearchConfig, name: str) -> list[SeedStudy]:
    """The studies of the planned seeds, first to last, each over the whole grid."""
    first = first_seed(config)
    return [_study(config, name, first + i, config.grid(), False) for i in range(config.seeds)]


def scores(storage: str | None, studies: Sequence[SeedStudy]) -> dict[Coefficients, dict[int, float]]:
    """Per grid point, {seed: score} of the completed trials of those of `studies` that exist in `storage`."""
    out: dict[Coefficients, dict[int, float]] = {}
    for s, study in existing(storage, studies):
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            out.setdefault(Coefficients.from_label(t.params[PARAM]), {})[s.seed] = float(t.value)
    return out


def existing(storage: str | None, studies: Sequence[SeedStudy]) -> list[tuple[SeedStudy, optuna.Study]]:
    """The studies of `studies` that `storage` holds, opened (a missing one is not created)."""
    store = make_storage(storage)
    if store is None:
        return []
    names = {s.study_name for s in store.get_all_studies()}
    return [(s, optuna.load_study(study_name=s.name, storage=store)) for s in studies if s.name in names]


def _done(storage: str | None, studies: Sequence[SeedStudy]) -> bool:
    """Every point of every one of `studies` has a result (a completed trial, or an error such as divergence)."""
    held = existing(storage, studies)
    if len(held) < len(studies):
        return False
    for s, study in held:
        results = {t.params.get(PARAM) for t in study.get_trials(deepcopy=False) if finished(t)}
        if any(c.label not in results for c in s.grid):
            return False
    return True


def best_and_close(per_point: dict[Coefficients, dict[int, float]], seeds: Sequence[int]
                   ) -> tuple[Coefficients | None, list[Coefficients]]:
    """The point with the highest mean score over `seeds`, and every point (the best included) whose paired
    difference with it over those seeds has a 95% interval including zero."""
    kept = {c: {s: v for s, v in by_seed.items() if s in seeds} for c, by_seed in per_point.items()}
    kept = {c: v for c, v in kept.items() if v}
    if not kept:
        return None, []
    best = max(sorted(kept), key=lambda c: sum(kept[c].values()) / len(kept[c]))
    close = [c for c in sorted(kept) if c == best or _within_noise(paired_difference(kept[c], kept[best]))]
    return best, close


def _within_noise(diff: Interval) -> bool:
    return diff.n >= 2 and not diff.excludes_zero()


def added(config: SearchConfig, name: str, storage: str | None) -> list[SeedStudy]:
    """The studies of the added seeds (empty until every planned seed is done, or when none is asked for)."""
    plan = planned(config, name)
    if config.seeds < 2 or config.seeds_within_noise <= config.seeds or not _done(storage, plan):
        return []
    _, close = best_and_close(scores(storage, plan), [s.seed for s in plan])
    if len(close) < 2:
        return []
    first = first_seed(config)
    return [_study(config, name, first + i, tuple(close), True)
            for i in range(config.seeds, config.seeds_within_noise)]


def all_studies(config: SearchConfig, name: str, storage: str | None) -> list[SeedStudy]:
    return planned(config, name) + added(config, name, storage)


def run_worker_process(config: SearchConfig, storage: str | None, study_name: str, *, heartbeat_s: float = 10.0,
                       grace_s: float = 60.0, poll_s: float = 5.0, log: Callable[[str], None] = print,
                       until: float | None = None):
    """One worker: the study of each seed in turn (the planned seeds, then the added ones), training grid points
    until each is done, or until `until` (`leases.work`); returns the last study and its summary."""
    from effnet.train import TrainingDiverged

    def work_on(s: SeedStudy):
        if config.seeds > 1:
            log(f"seed {s.seed}{' (added: within the noise of the best)' if s.added else ''}: study {s.name!r}, "
                f"{len(s.grid)} points")
        study = open_coefficient_study(storage, s.name, s.config, s.grid, s.identity())
        return study, run_worker(study, s.grid, coefficients.make_evaluator(s.config), heartbeat_s=heartbeat_s,
                                 grace_s=grace_s, poll_s=poll_s, log=log, error_types=(TrainingDiverged,),
                                 progress=True, until=until)

    done = []
    # the added seeds are decided once the planned ones are done
    for studies in (lambda: planned(config, study_name), lambda: added(config, study_name, storage)):
        for s in studies():
            done.append(work_on(s))
            if done[-1][1].stopped_at_deadline:
                return done[-1]
    return done[-1]


__all__ = ["SeedStudy", "added", "all_studies", "best_and_close", "existing", "first_seed", "planned",
           "run_worker_process", "scores"]
