"""A grid of (α, β, γ) as one Optuna study that many processes (or machines) work on together.

How each grid point is trained exactly once, even when a worker is killed:

- **Assignment.** The study's sampler is Optuna's `GridSampler` over one categorical parameter, the grid point's
  label, with a fixed seed, so every process holds the same grid.  Trial numbers are unique in the storage and
  `GridSampler` gives trial k < N grid point k; later trials get a point nobody has started.
- **Claim.** A worker takes work through `study.optimize(n_trials=1)`: Optuna pops a WAITING trial atomically (one
  process wins) or creates a new one.  Inside the objective, before any training, the worker checks the point's
  other trials: if one already completed (or failed with an error of its own), or a live one has a lower number,
  this trial is a duplicate from a race and is PRUNED at once.  The lowest-numbered live trial always wins.
- **Leases** (`effnet.search.leases`). The claiming worker writes host, pid and a heartbeat timestamp into the
  trial's user attributes and refreshes the heartbeat from a thread.  A RUNNING trial is *stale* when its worker's
  process is gone (same host) or its heartbeat is older than the grace period (any host).  Any worker that sees a
  stale trial marks it FAIL (`fail_reason` "stale"; the storage lets exactly one process do so) and adds a WAITING
  copy for the same grid point (like Optuna's `RetryFailedTrialCallback`), which the next free worker picks up.
  Optuna's own heartbeat is not used because `JournalStorage` has none; this works the same on SQLite/PostgreSQL
  and on journal files.
- **Reconcile.** A point whose trials all failed for stale/interrupted reasons and has no live copy (the recovering
  worker died between the two steps) gets a new copy; a race here makes a duplicate, which the claim check prunes.
- **Done.** When every point has a COMPLETE trial (or an error FAIL: a diverged model is a result, not retried),
  every worker returns.  Workers with nothing left to claim wait while others still run, so a killed worker's
  point is never left behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from effnet.errors import EffnetError
from effnet.search import leases
from effnet.search.leases import LIVE, Move, claim, finished, recover_stale, requeue, run_leased, work

PARAM = "point"
CONFIG_ATTR = "effnet_search"


class SearchError(EffnetError):
    """The study cannot be opened or joined (bad storage, or a different grid/budget than the one it holds)."""


_SCHEMA_ATTEMPTS = 6


def _lost_schema_race(exc: Exception) -> bool:
    """Two processes that open a new database at once both try to create Optuna's tables: the loser's CREATE fails
    with a duplicate (PostgreSQL: a unique violation on pg_type, or "already exists"). Opening again then finds the
    tables the winner made."""
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text or "uniqueviolation" in text


def _driver_says(exc: Exception) -> str:
    """The first line of what the database driver said: SQLAlchemy wraps it in lines of its own (a hint, a link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_URL_LIKE = re.compile(r"^(sqlite|postgres|postgresql|mysql|mariadb|oracle|mssql)(\+\w+)?:", re.IGNORECASE)
"""`sqlite:x.db`, `postgresql:/db`: a database URL missing its `//`, which would otherwise be taken for a file name."""

_RECORD_START = b'{"op_code":'
"""How every record of an Optuna journal starts (compact JSON, `op_code` first)."""

_EMPTY_JOURNAL_SUFFIXES = (".journal", ".log")


def make_storage(storage: str | None, *, create: bool = True) -> optuna.storages.BaseStorage | None:
    """An RDB URL (``sqlite:///search.db``, ``postgresql://...``) or a path to a journal file (anything else).

    An existing file must be a journal (every complete line one of Optuna's journal records): any other file is
    refused untouched. With ``create=False`` (reports) nothing is ever written: a journal or SQLite file that does
    not exist yet is an error instead of a new empty one."""
    if storage is None:
        return None
    if "://" not in storage and _URL_LIKE.match(storage):
        raise SearchError(f"--storage {storage!r}: looks like a database URL without '//'; write it as "
                          "sqlite:///search.db (three slashes: a relative path) or postgresql://user@host/db, or give "
                          "a journal file path")
    if "://" in storage:
        return _database(storage, create=create)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(storage)
    if path.is_dir():
        raise SearchError(f"--storage {storage!r} is a folder; expected a journal file path such as "
                          f"{os.path.join(storage, 'search.journal')} or a database URL")
    if path.exists():
        _check_journal(path, storage)
    elif not create:
        raise SearchError(f"--storage {storage!r}: no such journal file, so nothing is recorded there; check the path, "
                          "or run without --report-only first")
    folder = os.path.dirname(os.path.abspath(storage))
    if not os.path.isdir(folder):
        raise SearchError(f"--storage {storage!r}: folder {folder} does not exist; create it or give an RDB URL")
    try:
        return JournalStorage(JournalFileBackend(storage))
    except OSError as exc:
        raise SearchError(f"--storage {storage!r}: cannot create the journal file ({exc.strerror}); give a path in a "
                          "folder you can write to") from None


def _database(storage: str, *, create: bool) -> optuna.storages.RDBStorage:
    if not create and storage.startswith("sqlite:///"):
        file = storage[len("sqlite:///"):]
        if file and file != ":memory:" and not Path(file).is_file():
            raise SearchError(f"--storage {storage!r}: no such SQLite file, so nothing is recorded there; check the "
                              "path, or run without --report-only first")
        if file and file != ":memory:" and not _has_optuna_tables(Path(file)):
            raise SearchError(f"--storage {storage!r}: not an Optuna database (no studies table); it was left "
                              "untouched. Give the database the search or experiment wrote")
    engine_kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
        except Exception as exc:  # SQLAlchemy raises many kinds; say which URL failed
            if attempt + 1 < _SCHEMA_ATTEMPTS and _lost_schema_race(exc):
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            raise SearchError(f"--storage {storage!r}: cannot open the database ({_driver_says(exc)}); expected a "
                              "reachable database URL such as sqlite:///search.db or postgresql://user@host/db, "
                              "or a journal file path") from None
    raise AssertionError("unreachable")


def _has_optuna_tables(path: Path) -> bool:
    """Whether a SQLite file holds Optuna's tables, read without writing (a report must not create them)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone()
            return found is not None
    except sqlite3.Error:
        return False


def _check_journal(path: Path, storage: str) -> None:
    """Refuse a file that is not an Optuna journal before anything is appended to it. A last line without its
    newline is a record still being written by another process, and allowed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SearchError(f"--storage {storage!r}: cannot read it ({exc.strerror})") from None
    if not data and path.suffix not in _EMPTY_JOURNAL_SUFFIXES:
        raise SearchError(f"--storage {storage!r} is an empty file not named *.journal; give a new path (it is "
                          "created) or a journal file, so that no other file is turned into one")
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if number == len(lines):  # the part after the last newline: empty, or a record being written
            record = {"op_code": None} if not line or line.startswith(_RECORD_START) else None
        else:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
        if not isinstance(record, dict) or "op_code" not in record:
            what = "is not an Optuna journal" if number == 1 else f"is damaged: line {number} is not a journal record"
            raise SearchError(f"--storage {storage!r} {what}; it was left untouched. Give a new path (it is created) "
                              "or an existing journal file" + (", or restore it from a copy" if number > 1 else ""))


def _sampler(labels: Sequence[str]) -> optuna.samplers.GridSampler:
    """Seeded, so every process shuffles the grid the same way (grid_id k means the same point everywhere)."""
    return optuna.samplers.GridSampler({PARAM: list(labels)}, seed=0)


class GridPoint(Protocol):
    """What a study's grid is made of: the α/β/γ of the grid search, or one training run of an experiment."""

    label: str

    def trial_attributes(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...


def open_study(storage: str | None, study_name: str, grid: Sequence[GridPoint], config: dict[str, Any], *,
               create: bool = True):
    """Create the study, or join it after checking it holds the same grid and budget (`config`)."""
    return open_checked_study(storage, study_name, _sampler([c.label for c in grid]), config, create=create)


def open_checked_study(storage: str | None, study_name: str, sampler: optuna.samplers.BaseSampler,
                       config: dict[str, Any], *, create: bool = True) -> optuna.Study:
    """Create a maximising study with `sampler`, or join it after checking it was made with the same settings
    (`config`, kept in the study's attributes): a worker with other settings would make its trials incomparable.
    With ``create=False`` (a report) the study must exist, and nothing is written."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = make_storage(storage, create=create)
    if create or store is None:
        study = optuna.create_study(storage=store, study_name=study_name, direction="maximize", sampler=sampler,
                                    load_if_exists=True)
    else:
        names = [s.study_name for s in store.get_all_studies()]
        if study_name not in names:
            held = f"it holds {', '.join(map(repr, names[:4]))}" if names else "it holds no study"
            raise SearchError(f"--storage {storage!r}: no study {study_name!r} ({held}); give the --study name and "
                              "options it was made with, or run without --report-only first")
        study = optuna.load_study(storage=store, study_name=study_name, sampler=sampler)
    wanted = json.loads(json.dumps(config))
    held = study.user_attrs.get(CONFIG_ATTR)
    if held is None and create:
        study.set_user_attr(CONFIG_ATTR, wanted)
        held = study.user_attrs.get(CONFIG_ATTR, wanted)
    if held is not None and held != wanted:
        diff = sorted(k for k in set(held) | set(wanted) if held.get(k) != wanted.get(k))
        details = "; ".join(f"{k}: study has {_short(held.get(k))}, got {_short(wanted.get(k))}" for k in diff[:4])
        raise SearchError(f"study {study_name!r} in {storage} was made with other settings ({details}); rerun with "
                          "the original options, or use another --study name")
    return study


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the grid's workers (leases: effnet.search.leases) ---------------------------------------------------------

def _point(trial: optuna.trial.FrozenTrial, labels: Sequence[str]) -> str | None:
    if PARAM in trial.params:
        return trial.params[PARAM]
    fixed = trial.system_attrs.get("fixed_params", {})
    if PARAM in fixed:
        return fixed[PARAM]
    grid_id = trial.system_attrs.get("grid_id")
    return None if grid_id is None else _shuffled(labels)[grid_id]


@functools.lru_cache(maxsize=8)
def _shuffled_order(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(g[0] for g in _sampler(labels)._all_grids)


def _shuffled(labels: Sequence[str]) -> tuple[str, ...]:
    """The grid in `GridSampler`'s own (seeded, shuffled) order: grid_id indexes this list."""
    return _shuffled_order(tuple(labels))


@dataclass
class GridStatus:
    """Where a study stands, per grid point."""

    total: int
    complete: int = 0
    errors: int = 0
    running: int = 0
    waiting: int = 0
    unstarted: int = 0
    recovered: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.complete + self.errors == self.total

    @property
    def claimable(self) -> bool:
        return self.waiting > 0 or self.unstarted > 0


def survey(study: optuna.Study, labels: Sequence[str], grace_s: float) -> GridStatus:
    """Recover stale trials and lost points, then count the grid points by state."""
    storage = study._storage
    trials = storage.get_all_trials(study._study_id, deepcopy=False)
    status = GridStatus(total=len(labels))

    def requeue_point(t: optuna.trial.FrozenTrial) -> None:
        point = _point(t, labels)
        if point is not None:
            requeue(study, {PARAM: point}, "stale", t.number)

    status.recovered = recover_stale(study, trials, grace_s, requeue_point)
    if status.recovered:
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
    by_point: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        point = _point(t, labels)
        if point is not None:
            by_point.setdefault(point, []).append(t)
    for label in labels:
        ts = by_point.get(label, [])
        states = {t.state for t in ts}
        if TrialState.COMPLETE in states:
            status.complete += 1
        elif any(finished(t) for t in ts):
            status.errors += 1
        elif TrialState.RUNNING in states:
            status.running += 1
        elif TrialState.WAITING in states:
            status.waiting += 1
        elif not ts:
            status.unstarted += 1
        else:  # only stale/interrupted/duplicate failures and no live copy: the recovering worker died mid-way
            requeue(study, {PARAM: label}, "lost", max(t.number for t in ts))
            status.waiting += 1
    return status


@dataclass
class WorkerSummary(leases.WorkerSummary):
    """What one worker did (`leases.WorkerSummary`), the trials it pruned as duplicates of a point another trial
    holds, and the grid's state when it returned."""

    duplicates: list[int] = field(default_factory=list)
    status: GridStatus | None = None


def run_worker(
    study: optuna.Study,
    grid: Sequence[GridPoint],
    evaluate: Callable[[Any], tuple[float, dict[str, Any]]],
    *,
    heartbeat_s: float = 10.0,
    grace_s: float = 60.0,
    poll_s: float = 5.0,
    log: Callable[[str], None] = print,
    error_types: tuple[type[BaseException], ...] = (EffnetError,),
    progress: bool = False,
    until: float | None = None,
    cost: Callable[[Any], float | None] | None = None,
    prior_rate: float | None = None,
) -> WorkerSummary:
    """Train grid points until every point of the study is done; returns what this worker did.

    Each grid point has a unique `label`, `trial_attributes()` (recorded on its trial before it runs) and
    `describe()` (its progress line); `evaluate(point) -> (objective, attributes)`; errors of `error_types` (a
    diverged model, say) are that point's result: the trial fails with `fail_reason` "error" and is not retried.
    A KeyboardInterrupt fails the running trial with reason "interrupted", queues it again for the next worker,
    and propagates.  With `progress`, each trained point is followed by the grid's state and an ETA (the points
    left × this worker's mean time per point, shared among the workers running now).  With `until` (seconds
    since the epoch), no point starts that would end after it (`leases.work`): by the study's typical point or,
    with `cost(point)` (a relative cost, such as the work of its training), by the next point's cost (at
    `prior_rate` seconds per unit while no point of this study has finished: `leases.next_wall`).
    """
    labels = [c.label for c in grid]
    by_label = {c.label: c for c in grid}
    summary = WorkerSummary()
    walls: list[float] = []
    logged = 0

    def objective(trial: optuna.Trial) -> float:
        claim(trial)
        label = trial.suggest_categorical(PARAM, labels)
        c = by_label[label]
        for key, value in c.trial_attributes().items():
            trial.set_user_attr(key, value)
        taken_by = _taken_by(study, trial, label, labels, grace_s)
        if taken_by is not None:
            trial.set_user_attr("fail_reason", "duplicate")
            trial.set_user_attr("duplicate_of", taken_by)
            summary.duplicates.append(trial.number)
            log(f"trial {trial.number}: {label} is already taken by trial {taken_by}; pruned")
            raise optuna.TrialPruned()
        log(f"trial {trial.number}: {c.describe()} ...")
        value, _, wall = run_leased(study, trial, lambda: evaluate(c), what=label, heartbeat_s=heartbeat_s,
                                    error_types=error_types, log=log, errors=summary.errors)
        summary.trained.append(trial.number)
        walls.append(wall)
        log(f"trial {trial.number}: {label} -> {value:.2f} ({wall:.0f}s)")
        return value

    def next_move() -> Move:
        nonlocal logged
        status = survey(study, labels, grace_s)
        summary.recovered += status.recovered
        for number in status.recovered:
            log(f"trial {number}: its worker is gone; queued its grid point again")
        if progress and len(walls) > logged:  # a point trained since the last look
            logged = len(walls)
            log(progress_line(status, sum(walls) / len(walls)))
        summary.status = status
        return "stop" if status.done else "claim" if status.claimable else "wait"

    def cost_of(trial: optuna.trial.FrozenTrial) -> float | None:
        point = _point(trial, labels)
        return None if cost is None or point not in by_label else cost(by_label[point])

    summary.stopped_at_deadline = work(study, objective, next_move, poll_s=poll_s, error_types=error_types,
                                       until=until, cost_of=None if cost is None else cost_of, log=log,
                                       prior_rate=prior_rate)
    return summary


def progress_line(status: GridStatus, mean_wall_s: float) -> str:
    """`[done/total points, N running, ETA …]`: the points not done × `mean_wall_s`, shared among the workers
    running now and this one."""
    from effnet.report import format_duration

    done = status.complete + status.errors
    left = status.total - done
    eta = "" if not left else f", ETA {format_duration(left * mean_wall_s / (status.running + 1))}"
    return f"[{done}/{status.total} points, {status.running} running{eta}]"


def _taken_by(study: optuna.Study, trial: optuna.Trial, label: str, labels: Sequence[str], grace_s: float,
              poll_s: float = 0.25) -> int | None:
    """The trial that owns grid point `label` if not `trial`: one already done with it, or a live one with a lower
    number (the lowest-numbered live trial of a point always wins a race).

    A lower-numbered trial that is running but has no point yet (created; its grid id or queued point not read
    yet) may be about to take this one: wait until it has one, is stale (its worker died first) or no longer runs,
    keeping `trial`'s own lease fresh meanwhile. Without the wait, both would pass this check and train the same
    point."""
    while True:
        undecided = False
        now = time.time()
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if t.number == trial.number:
                continue
            point = _point(t, labels)
            if point is None and t.number < trial.number and t.state == TrialState.RUNNING:
                undecided = undecided or not leases.is_stale(t, grace_s, now)
            elif point == label and (finished(t) or (t.state in LIVE and t.number < trial.number)):
                return t.number
        if not undecided:
            return None
        time.sleep(poll_s)
        trial.set_user_attr("heartbeat", time.time())


__all__ = ["CONFIG_ATTR", "GridPoint", "GridStatus", "PARAM", "SearchError", "WorkerSummary", "make_storage",
           "open_study", "progress_line", "run_worker", "survey"]
