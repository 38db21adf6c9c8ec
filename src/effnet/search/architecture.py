"""The baseline architecture search (MnasNet, Tan et al. CVPR 2019, as the EfficientNet paper used it in Sec. 4.2):
sample a point of the space (`effnet.search.space`), train it briefly, and score it with the paper's reward

    ACC(m) × (MACs(m) / T)^w          (MnasNet Eq. 2 with α = β = w; EfficientNet: FLOPS in place of latency)

so one scalar trades accuracy against cost around a target T: with w = −0.07 a model of twice the MACs must be
about 5% (2^0.07) more accurate to score the same.  ACC is top-1 (a fraction) on images held out from the
training set after a short proxy training (`effnet.train.train`, test split never read); MACs come from
`effnet.profile`.  Both are recorded on every trial, so the accuracy–MACs Pareto front can be read afterwards.

**Sampler.**  The paper trained an RL controller over thousands of candidates; a proxy budget of tens of trials
suits a sample-efficient model-based sampler better.  We use Optuna's TPE with `multivariate=True` (it models the
35 choices jointly, so stage choices that only pay together are found) on the single reward, as the paper
optimised a single reward; `constant_liar=True` keeps parallel workers from proposing the same point.  NSGA-II on
the two objectives would need generations of a 50-candidate population before it improves on random sampling.

**Sharing and resuming** use the leases of the coefficient grid (`effnet.search.leases`): each trial records its
host, pid and a heartbeat; a trial whose process is gone (or silent past the grace period) is marked FAIL
(`fail_reason` "stale") and its point queued again, so a rerun or a surviving worker finishes it.  The budget is
counted in the storage, not per process: `trials` finished trials in all (a trial started beyond it by a race is
pruned before training, the lowest-numbered trials win), and `timeout` seconds of trial time summed over workers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from effnet.errors import EffnetError
from effnet.report import format_duration
from effnet.search import leases
from effnet.search.leases import LIVE, Move, claim, finished, recover_stale, requeue, run_leased, work
from effnet.search.space import SearchSpace, describe_point
from effnet.search.study import open_checked_study

DEFAULT_W = -0.07
"""MnasNet's soft-constraint exponent (α = β = −0.07), also the EfficientNet paper's."""

SEARCH_TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 1.0, "batch_size": 64, "augment": "none"}
"""Proxy-training budget per candidate when the command line gives none (short runs: no augmentation)."""


def reward(top1: float, macs: float, target_macs: float, w: float = DEFAULT_W) -> float:
    """ACC × (MACs / T)^w, with ACC the top-1 accuracy as a fraction (`top1` is in percent)."""
    if target_macs <= 0 or macs <= 0:
        raise EffnetError(f"reward: MACs and target MACs must be > 0, got {macs!r} and {target_macs!r}")
    return (top1 / 100.0) * (macs / target_macs) ** w


def check_w(w: Any) -> float:
    ok = isinstance(w, (int, float)) and not isinstance(w, bool) and -1.0 <= w <= 0.0
    if not ok:
        raise EffnetError(f"--w: got {w!r}, expected a number in [-1, 0] (the paper's -0.07 is a soft MACs "
                          "constraint; 0 ignores MACs; -1 makes accuracy per MAC)")
    return float(w)


@dataclass(frozen=True)
class ArchitectureSearch:
    """What makes a search: the space, data, proxy resolution and budget, target and exponent.  `threads` and
    `loader_workers` only change speed, so they are not part of a study's identity."""

    space: SearchSpace
    target_macs: float
    dataset: str = "fashion-mnist"
    num_classes: int = 10
    resolution: int = 32
    w: float = DEFAULT_W
    holdout: int | None = None
    train: dict[str, Any] = field(default_factory=lambda: dict(SEARCH_TRAIN_DEFAULTS))
    threads: int | None = None
    loader_workers: int = 0

    def identity(self) -> dict[str, Any]:
        return {"kind": "architecture", "space": self.space.to_dict(), "dataset": self.dataset,
                "resolution": self.resolution, "target_macs": self.target_macs, "w": self.w,
                "holdout": self.holdout, "train": dict(sorted(self.train.items()))}

    def spec(self, point: dict[str, Any], name: str | None = None):
        return self.space.spec(point, resolution=self.resolution, num_classes=self.num_classes, name=name)

    def study_name(self) -> str:
        return f"architecture-{self.space.name}-{self.dataset.strip('/').replace('/', '_')}-{self.resolution}px"


def make_evaluator(config: ArchitectureSearch) -> Callable[[dict[str, Any], str], tuple[float, dict[str, Any]]]:
    """`evaluate(point, name) -> (reward, attributes)`: build the candidate, count its MACs, train it, score it."""
    from effnet.profile import profile
    from effnet.train import TrainConfig, train

    def evaluate(point: dict[str, Any], name: str) -> tuple[float, dict[str, Any]]:
        spec = config.spec(point, name)
        p = profile(spec)
        settings = {**config.train, "test": False}  # scored on the holdout; the test split is never read
        result = train(TrainConfig(model=spec, data=config.dataset, out_dir=None, progress=False,
                                   holdout=config.holdout, workers=config.loader_workers, threads=config.threads,
                                   **settings))
        value = reward(result.top1, p.macs, config.target_macs, config.w)
        return value, {"top1": result.top1, "macs": p.macs, "params": p.params, "ema_top1": result.ema_top1,
                       "val_loss": result.val_loss, "train_loss": result.train_loss, "steps": result.steps,
                       "train_wall_s": result.wall_s}

    return evaluate


def open_architecture_study(storage: str | None, study_name: str, config: ArchitectureSearch,
                            seed: int | None = None, *, create: bool = True) -> optuna.Study:
    """Create the study, or join it after checking it was made with the same settings (`config.identity()`);
    with ``create=False`` only an existing one, writing nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)
    return open_checked_study(storage, study_name, sampler, config.identity(), create=create)


# -- the worker --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """Stop starting trials once `trials` have finished in the storage, or `timeout` trial-seconds are spent."""

    trials: int | None = None
    timeout: float | None = None


@dataclass
class Standing:
    """The study now: finished trials (complete, or failed with an error of their own), live ones, time spent."""

    done: int = 0
    running: int = 0
    waiting: int = 0
    spent_s: float = 0.0
    mean_s: float | None = None
    timed: int = 0
    workers: int = 0
    recovered: list[int] = field(default_factory=list)


@dataclass
class WorkerSummary(leases.WorkerSummary):
    """What one worker did (`leases.WorkerSummary`) and the trials it pruned before training (beyond the budget, or
    a point another trial holds)."""

    pruned: list[int] = field(default_factory=list)


def survey(study: optuna.Study, grace_s: float) -> Standing:
    """Recover trials whose worker is gone (FAIL "stale", their point queued again), then count the study."""
    storage, now = study._storage, time.time()
    trials = storage.get_all_trials(study._study_id, deepcopy=False)
    out = Standing()
    out.recovered = recover_stale(study, trials, grace_s, lambda t: requeue(study, t.params, "stale", t.number))
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:  # recovered or interrupted, but the worker that was to queue it again died first
        if (t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") in ("stale", "interrupted")
                and t.number not in retried):
            requeue(study, t.params, "lost", t.number)
            out.recovered.append(t.number)
    if out.recovered:
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
    walls, pids = [], set()
    for t in trials:
        if finished(t) or (t.state == TrialState.RUNNING and "reward" in t.user_attrs):  # (scored, returning)
            out.done += 1
            wall = t.user_attrs.get("trial_wall_s")
            if wall is not None:
                walls.append(float(wall))
        elif t.state == TrialState.RUNNING:
            out.running += 1
            pids.add((t.user_attrs.get("host"), t.user_attrs.get("pid")))
            if t.datetime_start is not None:
                out.spent_s += max(0.0, now - t.datetime_start.timestamp())
        elif t.state == TrialState.WAITING:
            out.waiting += 1
    out.spent_s += sum(walls)
    out.mean_s = sum(walls) / len(walls) if walls else None
    out.timed = len(walls)
    out.workers = len(pids)
    return out


def _ahead_and_twin(study: optuna.Study, number: int, point: dict[str, Any]) -> tuple[int, int | None]:
    """How many trials count before trial `number` (finished, or live with a lower number), and the trial that
    already holds the same point (finished, or live with a lower number), if any."""
    ahead, twin = 0, None
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
        if t.number == number:
            continue
        counts = finished(t) or (t.state in LIVE and t.number < number)
        ahead += counts
        if counts and twin is None and t.params == point:
            twin = t.number
    return ahead, twin


def run_worker(study: optuna.Study, config: ArchitectureSearch, evaluate, budget: Budget, *,
               heartbeat_s: float = 10.0, grace_s: float = 60.0, poll_s: float = 5.0,
               log: Callable[[str], None] = print, error_types: tuple[type[BaseException], ...] = (EffnetError,),
               max_repeats: int = 25, until: float | None = None) -> WorkerSummary:
    """Evaluate sampled points until the budget is spent in the storage; returns what this worker did.

    Before training, a trial that the budget no longer covers, or whose point another trial already holds, is
    PRUNED (`fail_reason` "surplus" / "duplicate").  Errors of `error_types` (a diverged model) are that point's
    result: FAIL with `fail_reason` "error", counted, not retried.  A KeyboardInterrupt queues the point again.
    With `until` (seconds since the epoch), no trial starts that would, by the study's typical trial, end after it.
    """
    if budget.trials is None and budget.timeout is None:
        raise EffnetError("give a budget: --trials N and/or --timeout SECONDS")
    summary = WorkerSummary()
    repeats = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal repeats
        claim(trial)
        point = config.space.sample(trial)
        code = describe_point(config.space, point)
        trial.set_user_attr("architecture", code)
        ahead, twin = _ahead_and_twin(study, trial.number, point)
        reason = ("surplus" if budget.trials is not None and ahead >= budget.trials
                  else "duplicate" if twin is not None else None)
        if reason:
            trial.set_user_attr("fail_reason", reason)
            if twin is not None:
                trial.set_user_attr("duplicate_of", twin)
            summary.pruned.append(trial.number)
            repeats += reason == "duplicate"
            raise optuna.TrialPruned()
        repeats = 0
        value, attrs, wall = run_leased(study, trial, lambda: evaluate(point, f"{config.space.name}_t{trial.number}"),
                                        what=code, heartbeat_s=heartbeat_s, error_types=error_types, log=log,
                                        errors=summary.errors)
        trial.set_user_attr("reward", value)
        summary.trained.append(trial.number)
        standing = survey(study, grace_s)  # counts this trial (scored) and any other worker's scored one
        log(progress_line(standing, budget, trial.number, value, attrs, wall))
        return value

    def next_move() -> Move:
        standing = survey(study, grace_s)
        summary.recovered += standing.recovered
        for number in standing.recovered:
            log(f"trial {number}: its worker is gone; queued its point again")
        out_of_trials = budget.trials is not None and standing.done >= budget.trials
        out_of_time = budget.timeout is not None and standing.spent_s >= budget.timeout
        if out_of_trials or (out_of_time and not standing.running):
            return "stop"
        if repeats >= max_repeats:
            log(f"the sampler proposed {repeats} points in a row that were already evaluated; stopping "
                "(the space is nearly exhausted: widen it, or lower --trials)")
            return "stop"
        covered = budget.trials is not None and standing.done + standing.running >= budget.trials
        return "wait" if out_of_time or (covered and not standing.waiting) else "claim"

    summary.stopped_at_deadline = work(study, objective, next_move, poll_s=poll_s, error_types=error_types,
                                       until=until, log=log)
    return summary


def progress_line(standing: Standing, budget: Budget, number: int, value: float, attrs: dict[str, Any],
                  wall: float) -> str:
    """`[n/N] trial k: reward R, top-1 A%, M MMACs (S s), ETA T` after a finished trial."""
    total = str(budget.trials) if budget.trials is not None else "?"
    eta = []
    workers = max(1, standing.workers)
    if budget.trials is not None and standing.mean_s:
        eta.append(max(0, budget.trials - standing.done) * standing.mean_s / workers)
    if budget.timeout is not None:
        eta.append(max(0.0, budget.timeout - standing.spent_s) / workers)
    left = f"ETA {format_duration(min(eta))}" if eta else "ETA ?"
    return (f"[{standing.done}/{total}] trial {number}: reward {value:.4f}, top-1 {attrs['top1']:.2f}%, "
            f"{attrs['macs'] / 1e6:.2f} MMACs ({wall:.0f} s), {left}")


__all__ = ["ArchitectureSearch", "Budget", "DEFAULT_W", "SEARCH_TRAIN_DEFAULTS", "Standing", "WorkerSummary",
           "check_w", "make_evaluator", "open_architecture_study", "progress_line", "reward", "run_worker", "survey"]
