"""`effnet experiments NAME`: plan an experiment's runs, train the missing ones (here with `--jobs` processes, or
with workers on other machines sharing `--storage`), then write results.json, report.md and the plots.

Each experiment module declares `NAME`, `plan(out, quick, seeds) -> (runs, meta)`, `report(results) -> (markdown,
table)` and `plots(results, out) -> [paths]`, and may declare `prepare(options)`, a step the parent process runs
before planning (never a worker, never `--report-only`), and `comparisons(results)`, the paired comparisons its
report states: once the planned seeds have finished, those within the noise on validation get more seeds
(`effnet.experiments.more_seeds`).  An experiment whose later runs depend on earlier results declares
`grow(out, runs, meta, rows, seeds, log) -> (runs, meta)`: given the finished runs' rows it returns the plan with
every run those results unlock (or the same plan), so the queue is recomputed from the records each time and
`--until`, `--jobs`, resuming and a killed worker behave as for any plan.  Everything else (claiming, resuming,
recording) is the runner's.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

from effnet.experiments import more_seeds, runner
from effnet.experiments.runner import ExperimentError, Options
from effnet.files import atomic_write_text
from effnet.report import format_local_time

MODULES = {
    "single-dims": "effnet.experiments.single_dims",
    "width-at-depth-res": "effnet.experiments.width_at_depth_res",
    "compound-vs-single": "effnet.experiments.compound_vs_single",
    "transfer": "effnet.experiments.transfer",
    "strategies": "effnet.experiments.strategies",
    "nas": "effnet.experiments.nas",
    "training-length": "effnet.experiments.training_length",
    "progressive": "effnet.experiments.progressive",
}
DEFAULT_SEEDS = 3


def module(name: str):
    if name not in MODULES:
        raise ExperimentError(f"experiment: got {name!r}, expected one of {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])


def adds_seeds_within_noise(name: str) -> bool:
    """Whether experiment `name` adds seeds to its comparisons within the noise (it defines `comparisons`)."""
    return hasattr(module(name), "comparisons")


def seeds_of(options: Options) -> int:
    return options.seeds or (1 if options.quick else DEFAULT_SEEDS)


def _plan(name: str, options: Options, log=print):
    """The experiment's runs: its planned seeds, and more seeds for the points of the comparisons found within
    the noise once those have all finished (the same list in every process: see `more_seeds`); a module with
    `STAGED_SEEDS` plans those itself, stage by stage."""
    mod = module(name)
    seeds = seeds_of(options)
    staged = getattr(mod, "STAGED_SEEDS", False)  # the module adds seeds stage by stage itself
    target = {"target": options.seeds_within_noise} if staged else {}
    runs, meta = mod.plan(options.out, options.quick, seeds, log=log, **target)
    grow = getattr(mod, "grow", None)
    while grow is not None:  # the runs that the finished ones unlock, stage after stage
        rows = runner.collect(name, runs, options, options.storage)
        grown, meta = grow(options.out, runs, meta, rows, seeds, log=log, **target)
        if len(grown) == len(runs):
            break
        runs = grown
    comparisons = getattr(mod, "comparisons", None)
    if comparisons is not None and not staged:
        rows = runner.collect(name, runs, options, options.storage)
        decision = more_seeds.decide(comparisons, runs, rows, meta, seeds, options.seeds_within_noise)
        runs = [*runs, *decision.runs]
        meta = {**meta, "more_seeds": decision.to_meta()}
    return mod, runs, meta


def work(name: str, options: Options) -> None:
    """A worker process (`--jobs` children, or a worker on another machine): train runs until all are done."""
    _, runs, _ = _plan(name, options, log=lambda m: None)
    runner.run_worker(name, runs, options, options.storage, log=lambda m: print(m, flush=True))


def run(name: str, options: Options, *, command: str, report_only: bool = False,
        worker_argv: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """Train what is missing (unless `report_only`), then write and return the results and the table."""
    _check_out(options.out)
    start = time.perf_counter()
    prepare = getattr(module(name), "prepare", None)  # a step before planning (nas: the search)
    if prepare is not None and not report_only:
        prepare(options, log=lambda m: print(m, flush=True))
    mod, runs, meta = _plan(name, options, log=lambda m: print(m, flush=True))
    print(f"{name}: {len(runs)} runs planned ({len(runner.unique_runs(runs))} distinct), {seeds_of(options)} "
          f"seed(s); run folders in {options.runs_dir}; shared record {options.storage}", flush=True)
    stopped = False
    if not report_only:
        stopped = _train(name, runs, options, worker_argv)
        _, more, meta = _plan(name, options, log=lambda m: None)  # where the runs stand now: any close pair?
        while not stopped and len(more) > len(runs):  # runs unlocked by those just finished (grow, more seeds)
            added = more_seeds.summary(meta.get("more_seeds"))
            print(f"{name}: {len(more) - len(runs)} runs added by the results so far"
                  + (f"; {added}" if added else ""), flush=True)
            runs = more
            stopped = _train(name, runs, options, worker_argv)
            _, more, meta = _plan(name, options, log=lambda m: None)
    rows = runner.collect(name, runs, options, options.storage)
    if report_only:  # a report written again names the command that trained the runs, not --report-only
        command = _recorded_command(options.out / runner.RESULTS) or command
    results = runner.write_results(options.out / runner.RESULTS, name, command, options, runs, rows,
                                   {**meta, "seeds": seeds_of(options)})
    markdown, table = write_report(mod, results, options.out)
    if stopped:
        total = len(runner.unique_runs(runs))
        finished = len({row["key"] for row in rows})  # a run serving several comparisons has a row in each
        print(f"{name}: --until {format_local_time(options.until)}: {finished} of {total} runs finished, report "
              "written for those; the same command continues", flush=True)
    elif not report_only:
        finished = {row["key"] for row in rows}
        missing = [run for run in runner.unique_runs(runs) if run.key not in finished]
        if missing:  # a diverged loss or an error: the comparisons or stages that need these runs cannot be made
            print(f"{name}: {len(missing)} planned run(s) did not finish (a diverged loss or an error, in the log "
                  f"above): {'; '.join(run.describe() for run in missing[:3])}{' ...' if len(missing) > 3 else ''}; "
                  "what needs them is not decided", flush=True)
        print(f"{name}: finished in {runner.elapsed(start)}", flush=True)
    return results, table


def _train(name: str, runs: list[runner.Run], options: Options, worker_argv: list[str] | None) -> bool:
    """Train the runs of `runs` not finished yet, here or in `options.jobs` worker processes; returns whether
    `options.until` left some of them untrained."""
    todo = runner.unique_runs(runs)
    runner.open_experiment_study(name, runs, options, options.storage)  # queued once, before any worker
    done = runner.finished_before(todo, options, options.storage)
    print(f"{name}: {len(done)} of {len(todo)} runs finished before (run folders, the shared record or "
          f"results.json: reused, not trained again); {len(todo) - len(done)} to train", flush=True)
    if options.jobs > 1 and worker_argv is not None:
        codes = runner.spawn(worker_argv, options.jobs)
        if any(codes):
            raise ExperimentError(f"worker exit codes {codes}; rerun the same command to continue")
    else:
        runner.run_worker(name, runs, options, options.storage, log=lambda m: print(m, flush=True))
    return options.until is not None and len(runner.finished_before(todo, options, options.storage)) < len(todo)


def _recorded_command(path: Path) -> str | None:
    """The training command results.json names (as `training_command` states it), or None."""
    try:
        command = json.loads(path.read_text()).get("command")
        words = shlex.split(command)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return training_command(words[1:], words[2] if len(words) > 2 else "") if words[:1] == ["effnet"] else None


def training_command(argv: list[str], experiment: str) -> str:
    """The command that trains the experiment, as the report states it: without the flags that only choose
    what is printed (--report-only, --format) or when this sitting stops (--until)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--report-only" or a.startswith(("--format=", "--until=")):
            continue
        elif a in ("--format", "--until"):
            skip = True
        else:
            kept.append(a)
    return "effnet " + " ".join(shlex.quote(a) for a in kept) if kept else f"effnet experiments {experiment}"


def write_report(mod, results: dict[str, Any], out: Path) -> tuple[str, str]:
    """report.md and the plots from `results` (a results.json), and the terminal table."""
    body, table = mod.report(results)
    plots = mod.plots(results, out) if results["runs"] else []
    header = render_header(results)
    images = "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    markdown = f"{header}\n{images}\n{body}\n"
    atomic_write_text(markdown, out / "report.md")
    return markdown, table


def machines_text(results: dict[str, Any]) -> str:
    """The machines the runs trained on (each run records its own), with how many runs each trained."""
    counts: dict[str, int] = {}
    for r in runner.distinct_runs(results["runs"]):
        m = r.get("machine") or results["machine"]
        name = f"{m['cpu']} ({', '.join(m['isa']) or 'no AVX-512'}), {m['cores']} cores, torch {m['torch']}"
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        m = results["machine"]
        return f"{m['cpu']} ({', '.join(m['isa']) or 'no AVX-512'}), {m['cores']} cores, torch {m['torch']}"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{name}: {n} runs" for name, n in counts.items())


def render_header(results: dict[str, Any]) -> str:
    wall = results["training_wall_s"]
    more = more_seeds.summary(results.get("more_seeds"))
    return "\n".join([
        f"# {results['experiment']}{' (quick)' if results['quick'] else ''}",
        "",
        "Generated from `results.json` by `effnet experiments`; do not edit by hand.",
        "",
        f"- Command: `{results['command']}`",
        f"- Runs: {results['finished_runs']} of {results['planned_runs']} planned finished{_shared_rows(results)}; "
        f"{results['seeds']} seed(s) per point (the seed fixes initial weights, data order and augmentation)"
        f"{_more_seeds_per_point(results)}.",
        f"- Budget and recipe, the same for every run: {results.get('recipe', '-')}",
        "- Validation: the last 5,000 Fashion-MNIST training images (held out; each run chooses its weights "
        "there). Test: the 10,000-image test split, evaluated once per run and only reported.",
        *([f"- {more}"] if more else []),
        *_diverged_lines(results),
        f"- Training time: {wall / 3600:.2f} h summed over runs; trained on {machines_text(results)}; updated "
        f"{results['updated']}.",
    ])


def _diverged_lines(results: dict[str, Any]) -> list[str]:
    """The runs whose loss diverged: each ended there, scored with the weights validation chose before it."""
    rows = [r for r in runner.distinct_runs(results["runs"]) if r.get("diverged")]
    if not rows:
        return []
    each = "; ".join(f"{r['model']} seed {r['seed']}: {r['diverged']}, weights of step {r['selected_step']}"
                     for r in rows)
    return [f"- Diverged: {len(rows)} run{'s' if len(rows) > 1 else ''} ended where the loss diverged, scored (as "
            f"every run) with the weights validation chose, before the divergence: {each}."]


def _shared_rows(results: dict[str, Any]) -> str:
    rows = len(results["runs"])
    if rows == results["finished_runs"]:
        return ""
    return f" ({rows} table rows: a run that serves several comparisons is listed in each, and counted once)"


def _more_seeds_per_point(results: dict[str, Any]) -> str:
    more = results.get("more_seeds") or {}
    if not more.get("added_runs"):
        return ""
    return f", {more['target']} for the points of a comparison within the noise (below)"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out}: is a file; expected a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExperimentError(f"--out {out}: cannot create the folder ({exc.strerror}); choose a writable place") \
            from None
    if not os.access(out, os.W_OK):
        raise ExperimentError(f"--out {out}: not writable; choose another folder")


__all__ = ["DEFAULT_SEEDS", "MODULES", "module", "run", "training_command", "work", "write_report"]
