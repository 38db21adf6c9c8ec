"""The experiment runner: an experiment is a list of training runs (`Run`), each trained once with the project's
trainer (`effnet.train.train`), recorded in `results.json`, and turned into `report.md` and plots.

- **Identity.** A run is its spec, its training settings and its seed; `Run.key` hashes the three, so the same
  model with the same budget and seed is one run even when two experiments (or two curves of one) plan it.
- **Once, even when killed.** The runs are the grid of an Optuna study (`effnet.search.study`: atomic claims;
  `effnet.search.leases`: heartbeats, stale trials re-queued), so `--jobs N` processes here and processes on other
  machines given the same `--storage` share one experiment without training a run twice.  Each run trains in its
  own folder (`RUNS/<key>/`) with checkpoints every `CHECKPOINT_EVERY` steps and `resume=True`: a run killed
  mid-way continues from its last checkpoint, bit for bit.  A finished run leaves `record.json` there
  (`effnet.experiments.records`); a rerun reads it and trains nothing.
- **Validation, then test.** Every run validates on images held out from the training set (Fashion-MNIST: its
  last 5,000) and chooses its weights there; the test split is evaluated once, at the end, and only reported.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.experiments.records import (
    RECORD,
    RECORD_FIELDS,
    RESULTS,
    completed_record,
    end_of_training_accuracy,
    known_records,
    machine,
    measured_spec_dict,
    now,
    recorded_rows,
    run_facts,
    study_records,
    train_wall,
    with_classes,
)
from effnet.files import atomic_write_text
from effnet.report import format_duration
from effnet.spec import NetSpec
from effnet.stats import SEEDS_WITHIN_NOISE

CHECKPOINT_EVERY = 200


class ExperimentError(EffnetError):
    """An experiment cannot run as asked (unknown name, missing prerequisite, unusable output folder)."""


class StoppedBeforePlanning(Exception):  # noqa: N818 - a stop asked for, not an error
    """`--until` came before an experiment's first step (nas: its search) had finished, so it has no runs to
    plan yet; the message says where it stands.  Not an error: the same command continues."""


@dataclass(frozen=True)
class Run:
    """One training run of an experiment: `spec` trained with `train` (TrainConfig fields) and `seed`.

    `labels` place it in the experiment's tables (method, budget, setting…); they are not part of its identity.
    `pretrained` is a bundled-weights flag or a weights file, as `TrainConfig.pretrained`.
    """

    spec: NetSpec | str
    seed: int
    train: tuple[tuple[str, Any], ...]
    labels: tuple[tuple[str, Any], ...] = ()
    data: str = "fashion-mnist"

    @staticmethod
    def make(spec: NetSpec | str, seed: int, train: dict[str, Any], data: str = "fashion-mnist",
             **labels: Any) -> Run:
        return Run(spec, seed, tuple(sorted(train.items())), tuple(labels.items()), data)

    @property
    def identity(self) -> dict[str, Any]:
        spec = self.spec.to_dict() if isinstance(self.spec, NetSpec) else self.spec
        return {"spec": spec, "seed": self.seed, "train": dict(self.train), "data": self.data}

    @property
    def key(self) -> str:
        text = json.dumps(self.identity, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:  # a study grid point's unique name
        return self.key

    @property
    def name(self) -> str:
        return self.spec.name if isinstance(self.spec, NetSpec) else str(self.spec)

    def label_dict(self) -> dict[str, Any]:
        return dict(self.labels)

    def trial_attributes(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.name, "seed": self.seed, **self.label_dict()}

    def describe(self) -> str:
        tags = " ".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.name} seed {self.seed}" + (f" ({tags})" if tags else "")


def training_cost(run: Run) -> float | None:
    """A run's relative training time: activations per image x images trained (steps x batch), the cost that
    predicts CPU training time best in docs/experiments/latency; None for a run budgeted in epochs.  `--until`
    compares it with the finished runs' seconds per unit to tell whether the next run ends in time."""
    settings = dict(run.train)
    if settings.get("steps") is None:
        return None
    from effnet.train import TrainConfig

    model = (json.dumps(run.identity["spec"], sort_keys=True, default=list), settings.get("resolution"))
    if model not in _ACTIVATIONS:
        from effnet.profile import count_activations
        from effnet.registry import get_spec

        _ACTIVATIONS[model] = count_activations(get_spec(run.spec), settings.get("resolution"))
    return float(_ACTIVATIONS[model] * settings["steps"] * settings.get("batch_size", TrainConfig.batch_size))


# per model (spec, resolution): count_activations builds the model, so once per process, not once per seed or length
_ACTIVATIONS: dict[tuple[str, int | None], int] = {}


@dataclass
class Progress:
    """Runs done of the plan, and an ETA for the runs still to train (those without a record when the worker
    started, less those finished since, here or by another worker): with `cost` (a run's label -> its
    `training_cost`), their cost at the seconds per unit of cost of the runs trained so far, otherwise their number
    times the mean wall time of those.  Runs reused from earlier records take no time and do not count."""

    total: int
    to_train: frozenset[str] = frozenset()
    cost: Callable[[str], float | None] | None = None
    done: int = 0
    finished: set[str] = field(default_factory=set)
    trained: dict[str, float] = field(default_factory=dict)  # label -> wall seconds, of the runs trained here

    def update(self, study, running: str | None = None) -> None:
        """Read the runs finished so far from `study` (also those of other workers), counting `running` as one."""
        from optuna.trial import TrialState

        from effnet.search.study import PARAM

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.finished = {t.params[PARAM] for t in complete if PARAM in t.params}
        self.done = len(complete)
        if running is not None and running not in self.finished:
            self.finished.add(running)
            self.done += 1

    def line(self, jobs: int) -> str:
        left = self.to_train - self.finished
        if not self.trained or not left:
            return f"[{self.done}/{self.total} runs]"
        eta = self._work_left(left) / min(max(jobs, 1), len(left))
        return f"[{self.done}/{self.total} runs, ETA {format_duration(eta)}]"

    def _work_left(self, left: frozenset[str]) -> float:
        """Seconds of training the runs `left` need, one after another."""
        costs = {label: self.cost(label) for label in (*left, *self.trained)} if self.cost else {}
        if costs and all(costs.values()):
            per_unit = sum(self.trained.values()) / sum(costs[label] for label in self.trained)
            return per_unit * sum(costs[label] for label in left)
        return len(left) * sum(self.trained.values()) / len(self.trained)


# -- one run -------------------------------------------------------------------------------------------------------

def starting(folder: Path) -> str:
    """How a run that has no record yet starts in `folder`: from scratch, or from its newest step checkpoint."""
    from effnet.train.checkpoint import step_checkpoints

    found = step_checkpoints(folder)
    return f"resuming from step {found[-1][0]} in {folder}" if found else f"training in {folder}"


def train_run(run: Run, runs_dir: Path, *, threads: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Train `run` in `runs_dir/<key>/` (resuming from its checkpoint if it was interrupted) on `device` (not part
    of the run's identity: a run trained on a GPU is the same run), or read its record if it already finished;
    returns the record (what results.json holds for it).  A run whose loss diverges ends there with the weights
    validation chose before it, and its record says where (`diverged`); one that diverges before its first
    validation raises `TrainingDiverged` (no weights to score)."""
    from effnet.profile import profile
    from effnet.registry import get_spec
    from effnet.train import TrainConfig, train

    folder = runs_dir / run.key
    record_path = folder / RECORD
    if record_path.is_file():
        return completed_record(folder, json.loads(record_path.read_text()))
    settings = dict(run.train)
    config = TrainConfig(model=run.spec, data=run.data, out_dir=str(folder), seed=run.seed, resume=True,
                         checkpoint_every=CHECKPOINT_EVERY, keep_last=1, progress=False, workers=0, threads=threads,
                         device=device, diverged_as_result=True, **settings)
    result = train(config)
    spec = get_spec(run.spec)
    plan = run_facts(folder)
    measured = profile(with_classes(spec, plan, settings))
    history = [{k: row.get(k) for k in ("step", "epoch_float", "train_loss", "val_top1", "ema_top1")}
               for row in result.history]
    record = {
        "key": run.key, "model": run.name, "seed": run.seed, "data": run.data, "train": settings,
        "spec": measured_spec_dict(spec, plan, settings), "macs": measured.macs, "params": measured.params,
        "resolution": plan["resolution"], "blocks": sum(s.repeats for s in spec.stages),
        "training": {"steps": result.steps, "batch_size": plan["batch_size"],
                   "images": result.steps * plan["batch_size"], "epochs": round(result.epochs, 4)},
        "val_top1": result.best_top1, "val_images": plan["val_images"], "val_split": plan["val_split"],
        "selected_step": result.selected_step, "selected_weights": result.selected_weights,
        "test_top1": result.test_top1, "test_top5": result.test_top5, "test_images": result.test_images,
        "test_split": plan["test_split"], "final_val_top1": result.ema_top1 if result.ema_top1 is not None
        else result.top1, "train_loss": result.train_loss, "train_acc": result.train_acc,
        "train_acc_end": end_of_training_accuracy(folder),
        "wall_s": round(train_wall(folder, result.wall_s), 2), "images_per_s": round(result.images_per_s, 1),
        "history": history, "machine": machine(), "device": device_used(device), "finished": now(),
        **({"diverged": result.diverged} if result.diverged else {}),
    }
    atomic_write_text(json.dumps(record, indent=2) + "\n", record_path)
    return record


def device_used(device: str) -> str:
    """Where a run with `--device` `device` trains: "cpu", or "cuda (GPU name)"."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    index = int(device.split(":")[1]) if ":" in device else 0
    return f"cuda ({torch.cuda.get_device_name(index)})"


def run_of_record(record: dict[str, Any]) -> Run:
    """The run a record (or a results.json row) was made by: the same key, so training it again reproduces it."""
    train = {k: (tuple(v) if k == "crop_scale" else v) for k, v in record["train"].items()}
    spec = NetSpec.from_dict(record["spec"]) if isinstance(record["spec"], dict) else record["spec"]
    run = Run.make(spec, record["seed"], train, record["data"])
    if run.key != record["key"]:
        raise ExperimentError(f"run {record['key']}: its record does not rebuild the same run (got key {run.key}); "
                              "it was written by another version of effnet")
    return run


# -- an experiment -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """How to run an experiment: `effnet experiments NAME` flags."""

    quick: bool = False
    seeds: int | None = None
    jobs: int = 1
    out: Path | None = None
    storage: str | None = None
    runs_dir: Path | None = None
    threads: int | None = None
    device: str = "auto"  # where runs train (TrainConfig.device); not part of a run's identity
    seeds_within_noise: int = SEEDS_WITHIN_NOISE  # seeds of the points of a comparison within the noise
    until: float | None = None  # no run starts that would end after it (seconds since the epoch; `leases.work`)
    heartbeat_s: float = 10.0
    grace_s: float = 60.0
    poll_s: float = 5.0


def study_name(experiment: str, runs: Sequence[Run], quick: bool) -> str:
    digest = hashlib.sha256("".join(sorted(r.key for r in runs)).encode()).hexdigest()[:10]
    return f"experiment-{experiment}{'-quick' if quick else ''}-{digest}"


def unique_runs(runs: Sequence[Run]) -> list[Run]:
    """One run per key, in plan order (a base model planned in several curves is trained once)."""
    seen: dict[str, Run] = {}
    for r in runs:
        seen.setdefault(r.key, r)
    return list(seen.values())


def open_experiment_study(experiment: str, runs: Sequence[Run], options: Options, storage: str):
    """The experiment's study (created on first use, with every run queued in plan order, so that workers take
    them seed by seed and an interrupted experiment holds whole seeds)."""
    from effnet.search.study import PARAM, open_study

    todo = unique_runs(runs)
    study = open_study(storage, study_name(experiment, todo, options.quick), todo,
                       {"experiment": experiment, "quick": options.quick, "runs": len(todo)})
    if not study.get_trials(deepcopy=False):
        for run in todo:
            study.enqueue_trial({PARAM: run.label})
    return study


def run_worker(experiment: str, runs: Sequence[Run], options: Options, storage: str,
               log: Callable[[str], None] = print) -> bool:
    """One worker process: claim runs of the experiment's study and train them until all are done, or until
    `options.until`; returns whether that deadline stopped it."""
    from effnet.search.study import run_worker as study_worker
    from effnet.train import TrainingDiverged

    todo = unique_runs(runs)
    study = open_experiment_study(experiment, runs, options, storage)
    runs_dir = options.runs_dir
    known = known_records(storage, options.out)
    by_label = {r.label: r for r in todo}
    progress = Progress(total=len(todo), to_train=frozenset(r.label for r in todo if not _recorded(r, known, runs_dir)),
                        cost=lambda label: training_cost(by_label[label]))

    def evaluate(run: Run) -> tuple[float, dict[str, Any]]:
        cached = (runs_dir / run.key / RECORD).is_file()
        reused = not cached and run.key in known
        if not (cached or reused):
            progress.update(study)  # also the runs finished before, or by another worker meanwhile
            log(f"{progress.line(options.jobs)} {run.describe()}: {starting(runs_dir / run.key)}")
        record = known[run.key] if reused else train_run(run, runs_dir, threads=options.threads,
                                                         device=options.device)
        progress.update(study, running=run.label)
        if not (cached or reused):
            progress.trained[run.label] = record["wall_s"]
        test = record["test_top1"]
        how = "cached" if cached else (f"reused (trained {record.get('finished', 'earlier')})" if reused
                                       else format_duration(record["wall_s"]))
        log(f"{progress.line(options.jobs)} {run.describe()}: val {record['val_top1']:.2f}%, test "
            f"{'-' if test is None else f'{test:.2f}%'}, {record['macs'] / 1e6:.2f} MMACs, {how}")
        return float(record["val_top1"]), {"record": record}

    summary = study_worker(study, todo, evaluate, heartbeat_s=options.heartbeat_s, grace_s=options.grace_s,
                           poll_s=options.poll_s, log=lambda m: None if "->" in m or m.endswith("...") else log(m),
                           error_types=(TrainingDiverged,), until=options.until, cost=training_cost,
                           prior_rate=None if options.until is None else prior_rate(todo, known))
    return summary.stopped_at_deadline


def prior_rate(runs: Sequence[Run], known: dict[str, dict[str, Any]]) -> float | None:
    """Seconds per unit of `training_cost` of the runs of `runs` already recorded on this CPU model (an earlier
    stage of a plan, or the same runs in another experiment), for `--until` before any run of a new study has
    finished here: otherwise its first run would start however long it is.  None when there is none."""
    cpu = machine()["cpu"]
    rates = []
    for run in runs:
        record = known.get(run.key)
        if record and (record.get("machine") or {}).get("cpu") == cpu and record.get("device", "cpu") == "cpu" \
                and (record.get("wall_s") or 0) >= 1 and (cost := training_cost(run)):
            rates.append(record["wall_s"] / cost)
    return sorted(rates)[len(rates) // 2] if rates else None


def finished_before(runs: Sequence[Run], options: Options, storage: str) -> list[str]:
    """Keys of `runs` that finished before this call: in their run folders, or in the shared record and the
    results.json files that `known_records` reads (what a rerun or a fresh checkout reuses)."""
    known = known_records(storage, options.out)
    return [r.key for r in runs if _recorded(r, known, options.runs_dir)]


def _recorded(run: Run, known: dict[str, Any], runs_dir: Path) -> bool:
    """Whether `run` has a record: in `known` (`known_records`) or in its run folder."""
    return run.key in known or (runs_dir / run.key / RECORD).is_file()


def collect(experiment: str, runs: Sequence[Run], options: Options, storage: str) -> list[dict[str, Any]]:
    """Every planned run with its record (labels first), from the run folders here or, for runs trained on
    another machine or by another experiment, from the shared studies and results (`known_records`); a run
    already recorded in a results.json keeps that row; runs not finished yet are left out."""
    records = study_records(storage)
    for run in runs:
        path = options.runs_dir / run.key / RECORD
        if path.is_file():
            records[run.key] = completed_record(path.parent, json.loads(path.read_text()))
    # A recorded row wins over a run folder: a run trained again later (for its checkpoint, on another machine)
    # does not change the numbers that every experiment sharing it has reported.
    records.update(recorded_rows(options.out))
    return [{**records[run.key], **run.label_dict()} for run in runs if run.key in records]


def distinct_runs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: a run that serves several comparisons of a report has a row in each."""
    return list({r["key"]: r for r in rows}.values())


def write_results(path: Path, experiment: str, command: str, options: Options, runs: Sequence[Run],
                  rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    distinct = distinct_runs(rows)
    results = {
        "experiment": experiment, "command": command, "quick": options.quick,
        "planned_runs": len({run.key for run in runs}), "finished_runs": len(distinct),
        "training_wall_s": round(sum(r["wall_s"] for r in distinct), 1),
        "machine": machine(), "updated": now(), **meta, **_written_by_hand(path), "runs": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(results, indent=2) + "\n", path)
    return results


def _written_by_hand(path: Path) -> dict[str, Any]:
    """What results.json at `path` holds that no run computes (its "discussion"), kept when it is written again."""
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {"discussion": held["discussion"]} if isinstance(held, dict) and held.get("discussion") else {}


def spawn(argv: Sequence[str], jobs: int) -> list[int]:
    """`effnet <argv>` in `jobs` child processes (one worker each); their exit codes."""
    from effnet.search.leases import spawn_workers  # imports optuna: the `search` extra, needed only here

    return spawn_workers(argv, jobs, child_flag="EFFNET_EXPERIMENT_CHILD")


def elapsed(start: float) -> str:
    return format_duration(time.perf_counter() - start)


__all__ = ["CHECKPOINT_EVERY", "ExperimentError", "Options", "Progress", "RECORD", "RECORD_FIELDS", "RESULTS", "Run",
           "collect", "distinct_runs", "finished_before", "known_records", "machine", "recorded_rows", "run_of_record",
           "run_worker", "spawn", "study_name", "train_run", "training_cost", "unique_runs", "write_results"]
