"""How worker processes share one Optuna study without losing or repeating work: the leases of `effnet.search.study`
(the α/β/γ grid and the experiments' runs) and of `effnet.search.architecture` (sampled architectures).

- **Lease.** A worker that claims a trial writes its host, pid and a heartbeat timestamp into the trial's user
  attributes (`claim`) and refreshes the heartbeat from a thread while the trial runs (`run_leased`).
- **Stale.** A RUNNING trial is stale when its worker's process is gone (same host) or its heartbeat is older than
  the grace period (any host).  `recover_stale` marks it FAIL (`fail_reason` "stale"; the storage lets exactly one
  process do so) and queues its point again, for the next free worker.
- **Results.** An error of the caller's `error_types` (a diverged model) is the point's result: FAIL with
  `fail_reason` "error", not retried.  A KeyboardInterrupt fails the trial as "interrupted" and queues its point
  again.  A worker whose trial was declared stale meanwhile discards its result.
- **Loop.** `work` claims one trial at a time while the caller's survey of the study says there is work, and waits
  while the rest runs elsewhere (so a killed worker's point is never left behind).
- **Deadline.** With `until` (a time), a worker claims no trial after it, nor one that would end after it: a machine
  lent until a known time stops with whole runs instead of being killed in the middle of one, and the same command
  continues later.  How long the next trial takes is the study's typical trial (the median wall time of its
  completed ones) or, given each trial's relative cost (`cost_of`), the next queued trial's cost times the completed
  trials' median seconds per unit of cost: a run four times as long as the rest is seen as such.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from effnet.errors import EffnetError

LIVE = (TrialState.WAITING, TrialState.RUNNING)


@dataclass
class WorkerSummary:
    """What one worker did: the trials it trained, those whose point failed with an error of its own, and the
    stale trials it recovered (their points queued again)."""

    trained: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    stopped_at_deadline: bool = False


def finished(t: optuna.trial.FrozenTrial) -> bool:
    """A trial whose point needs no more work: complete, or failed with an error of its own (not retried)."""
    return t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == "error")


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state; failed and pruned ones by their reason too (`fail (stale)`, `pruned (duplicate)`)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        if t.state in (TrialState.FAIL, TrialState.PRUNED):
            key += f" ({t.user_attrs.get('fail_reason', 'error')})"
        counts[key] = counts.get(key, 0) + 1
    return counts


def requeue(study: optuna.Study, params: Mapping[str, Any], reason: str, number: int | None) -> None:
    """Queue the point `params` again, noting which trial it replaces and why, *ahead* of the points queued but not
    started yet (the taken-back point's run folder usually holds a checkpoint to resume from, and a machine that is
    lent for a while should finish that first): the oldest waiting trial that is not itself a retry takes `params`,
    each later one the point of the one before, and the last point goes to the end of the queue, so the queue
    keeps its order.  Without such trials, `params` goes to the end.

    A worker that pops one of those trials meanwhile may still run its old point; the grid's own checks heal that
    (a duplicate is pruned before training, a point with no live trial is queued again)."""
    storage = study._storage
    waiting = [t for t in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
               if "retry_of" not in t.user_attrs and set(t.system_attrs.get("fixed_params", {})) == set(params)]
    retry = {"retry_of": number, "retry_reason": reason}
    if not waiting:
        study.enqueue_trial(dict(params), user_attrs=retry)
        return
    carried = dict(params)
    for t in waiting:
        point, carried = carried, dict(t.system_attrs["fixed_params"])
        storage.set_trial_system_attr(t._trial_id, "fixed_params", point)
    for key, value in retry.items():
        storage.set_trial_user_attr(waiting[0]._trial_id, key, value)
    study.enqueue_trial(carried)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(t: optuna.trial.FrozenTrial, grace_s: float, now: float) -> bool:
    attrs = t.user_attrs
    if attrs.get("host") == socket.gethostname() and isinstance(attrs.get("pid"), int):
        if not _pid_alive(attrs["pid"]):
            return True
    beat = attrs.get("heartbeat")
    if beat is None and t.datetime_start is not None:
        beat = t.datetime_start.timestamp()
    return beat is not None and now - beat > grace_s


def recover_stale(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial], grace_s: float,
                  requeue_point: Callable[[optuna.trial.FrozenTrial], None]) -> list[int]:
    """Mark every stale RUNNING trial of `trials` FAIL ("stale") and `requeue_point` it; the numbers recovered."""
    storage, now, recovered = study._storage, time.time(), []
    for t in trials:
        if t.state == TrialState.RUNNING and is_stale(t, grace_s, now):
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", "stale")
                if storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                    requeue_point(t)
                    recovered.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker recovered it, or it just finished
    return recovered


class _Heartbeat:
    """Refreshes the trial's `heartbeat` user attribute every `interval` seconds until stopped."""

    def __init__(self, storage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial_id}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                self.lost = True  # another worker declared this trial stale; its result will be discarded
                return
            except Exception:  # a transient storage error: try again at the next beat
                continue

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


class _Lost(Exception):
    """The trial was declared stale by another worker while it ran: its result is discarded."""


def claim(trial: optuna.Trial) -> None:
    """The lease's first beat: this host, this process, now (before the trial's point is even chosen)."""
    for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}.items():
        trial.set_user_attr(key, value)


def run_leased(study: optuna.Study, trial: optuna.Trial, evaluate: Callable[[], tuple[float, dict[str, Any]]], *,
               what: str, heartbeat_s: float, error_types: tuple[type[BaseException], ...],
               log: Callable[[str], None], errors: list[int]) -> tuple[float, dict[str, Any], float]:
    """Run `evaluate()` under heartbeats and record its attributes and wall time on `trial`; returns
    (objective, attributes, wall seconds).  An error of `error_types` is recorded (and its trial number appended to
    `errors`) and re-raised; `what` names the point in the log."""
    with _Heartbeat(study._storage, trial._trial_id, heartbeat_s) as beat:
        start = time.perf_counter()
        try:
            value, attrs = evaluate()
        except error_types as exc:
            trial.set_user_attr("fail_reason", "error")
            trial.set_user_attr("error", str(exc))
            trial.set_user_attr("trial_wall_s", time.perf_counter() - start)
            errors.append(trial.number)
            log(f"trial {trial.number}: {what} failed: {exc}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            requeue(study, trial.params, "interrupted", trial.number)
            raise
        wall = time.perf_counter() - start
    if beat.lost:
        log(f"trial {trial.number}: declared stale by another worker while running; result discarded")
        raise _Lost()
    for key, v in attrs.items():
        trial.set_user_attr(key, v)
    trial.set_user_attr("trial_wall_s", wall)
    return value, attrs, wall


Move = Literal["claim", "wait", "stop"]


CostOf = Callable[[optuna.trial.FrozenTrial], float | None]  # a trial's relative cost; None: not known


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _timed(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, float]]:
    """The completed trials that took a second or more (a run reused from an earlier record completes at once),
    with their wall times in seconds."""
    return [(t, w) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.datetime_start and t.datetime_complete
            and (w := (t.datetime_complete - t.datetime_start).total_seconds()) >= 1.0]


def typical_wall(study: optuna.Study) -> float:
    """The median wall time of the study's completed trials that took a second or more, in seconds; 0 when there
    is none yet."""
    walls = [w for _, w in _timed(study)]
    return _median(walls) if walls else 0.0


def next_wall(study: optuna.Study, cost_of: CostOf | None = None, prior_rate: float | None = None) -> float:
    """How long the next trial should take, in seconds: with `cost_of`, the next queued trial's cost times the
    median seconds per unit of cost of the completed trials whose cost is known, or times `prior_rate` (seconds per
    unit measured before this study, e.g. by the runs of an earlier stage) while none has completed; otherwise, or
    when the cost is missing, the typical trial (`typical_wall`)."""
    if cost_of is not None:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        cost = cost_of(min(waiting, key=lambda t: t.number)) if waiting else None
        rates = [w / c for t, w in _timed(study) if (c := cost_of(t))]
        if cost and (rates or prior_rate):
            return cost * (_median(rates) if rates else prior_rate)
    return typical_wall(study)


def too_late(study: optuna.Study, until: float | None, now: float | None = None,
             cost_of: CostOf | None = None, prior_rate: float | None = None) -> bool:
    """Whether a trial claimed now would start after `until` (seconds since the epoch) or, by `next_wall`, end
    after it.  Never with `until` None."""
    if until is None:
        return False
    return (time.time() if now is None else now) + next_wall(study, cost_of, prior_rate) > until


def until_argv(until: float | None) -> list[str]:
    """The `--until` flag that hands a deadline to a worker process unchanged (`@SECONDS`, which the command-line
    parser takes as it is, even once passed); none without one."""
    return [] if until is None else ["--until", f"@{until!r}"]


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], next_move: Callable[[], Move], *,
         poll_s: float, error_types: tuple[type[BaseException], ...], until: float | None = None,
         cost_of: CostOf | None = None, log: Callable[[str], None] = print, prior_rate: float | None = None) -> bool:
    """Claim and run one trial at a time (`study.optimize(n_trials=1)`: Optuna pops the oldest WAITING trial
    atomically, or creates one) while `next_move()` says "claim"; sleep `poll_s` on "wait"; return on "stop".  With
    `until`, return instead of claiming or waiting once `too_late` (with `cost_of`) says so.  Returns whether the
    deadline stopped it."""
    while True:
        move = next_move()
        if move == "stop":
            return False
        if too_late(study, until, cost_of=cost_of, prior_rate=prior_rate):
            from effnet.report import format_duration, format_local_time

            expected = next_wall(study, cost_of, prior_rate)
            log(f"--until {format_local_time(until)}: no new run starts"
                + (f" (the next one would take about {format_duration(expected)})" if expected else "")
                + "; the same command continues later")
            return True
        if move == "wait":
            time.sleep(poll_s)  # the rest is running elsewhere: wait for it, or for it to go stale
            continue
        try:
            study.optimize(objective, n_trials=1, catch=error_types + (_Lost,))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # our trial was declared stale and finished by another worker meanwhile


def spawn_workers(argv: Sequence[str], jobs: int, child_flag: str = "EFFNET_SEARCH_CHILD") -> list[int]:
    """Run `effnet <argv>` (one worker each) in `jobs` child processes and wait; returns their exit codes.  The
    children see `child_flag`=1 in their environment (they leave the header and the report to the parent)."""
    if jobs < 1:
        raise EffnetError(f"--jobs: got {jobs}, expected at least 1")
    env = dict(os.environ, **{child_flag: "1"})
    children = [subprocess.Popen([sys.executable, "-m", "effnet", *argv], env=env) for _ in range(jobs)]
    try:
        return [child.wait() for child in children]
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(2)
        return [child.wait() for child in children]


__all__ = ["LIVE", "CostOf", "WorkerSummary", "claim", "finished", "is_stale", "next_wall", "recover_stale", "requeue",
           "run_leased", "spawn_workers", "too_late", "trial_counts", "typical_wall", "until_argv", "work"]
