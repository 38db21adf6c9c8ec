"""The flags both searches share: the training budget of a trial, and the workers' speed and sharing settings."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from effnet.cli._args import (
    UNTIL_HELP,
    check_output_file,
    deadline,
    flags_apply_only,
    given_flags,
    it_or_them,
    non_negative_int,
    positive_float,
    positive_int,
)


def add_budget_group(parser: argparse.ArgumentParser, title: str, *, val_help: str, set_example: str):
    """The trainer settings of every trial (they are part of the study's identity); returns the group."""
    budget = parser.add_argument_group(title)
    budget.add_argument("--epochs", type=float, default=None, help="epochs per trial (default 1)")
    budget.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps per trial (instead of --epochs)")
    budget.add_argument("--batch-size", type=positive_int, default=None, help="default 64")
    budget.add_argument("--train-subset", type=positive_int, default=None,
                        help="train on this many images (fixed subset)")
    budget.add_argument("--val-subset", type=positive_int, default=None, help=val_help)
    budget.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's 0.016 x B/256)")
    budget.add_argument("--optimizer", default=None, help="rmsproptf (default) or sgd")
    budget.add_argument("--augment", default=None, help="autoaugment, randaugment or none (default none)")
    budget.add_argument("--seed", type=int, default=None, help="training seed, the same for every trial")
    budget.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"any other effnet.train.TrainConfig field, e.g. --set {set_example}")
    return budget


# TrainConfig fields a search sets itself; `--set` may not touch them.
_RESERVED = {"model", "data", "out_dir", "progress", "workers", "threads", "resume", "device", "pretrained"}

# TrainConfig fields that do nothing in a search's trials, and why.
_NO_EFFECT = {
    **dict.fromkeys(("test", "test_subset"), "trials are scored on validation and never evaluate the test split"),
    **dict.fromkeys(("checkpoint_every", "keep_last", "overwrite", "tensorboard", "log_every"),
                    "trials write no run folder"),
}

# The budget flags, by the TrainConfig field each sets.
_BUDGET_FLAGS = ("epochs", "steps", "batch_size", "train_subset", "val_subset", "lr", "optimizer", "augment", "seed")


def _parse_set(items: list[str]) -> dict:
    import json
    from dataclasses import fields

    from effnet.errors import EffnetError
    from effnet.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known or key in _RESERVED:
            allowed = ", ".join(sorted(known - _RESERVED - set(_NO_EFFECT)))
            raise EffnetError(f"--set {item!r}: expected KEY=VALUE with KEY one of {allowed}")
        if key in _NO_EFFECT:
            raise EffnetError(f"--set {key}=...: {_NO_EFFECT[key]}, so it would do nothing; drop it")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def setting_name(args: argparse.Namespace, field: str) -> str:
    """A trainer setting as this search's command line gave it: `--set lr_base=...`, or its budget flag."""
    if any(item.partition("=")[0] == field for item in args.set):
        return f"--set {field}=..."
    flag = "--" + field.replace("_", "-")
    return flag if field in _BUDGET_FLAGS or (field == "holdout" and hasattr(args, "holdout")) else \
        f"--set {field}=..."


def setting_error(args: argparse.Namespace, exc: Exception):
    """A trainer setting's error (`epochs: got -1, ...`) as the flag or --set that gave it (`--epochs: got -1`)."""
    from dataclasses import fields

    from effnet.errors import EffnetError
    from effnet.train import TrainConfig

    field, sep, rest = str(exc).partition(": ")
    named = setting_name(args, field) if sep and field in {f.name for f in fields(TrainConfig)} else None
    return EffnetError(f"{named}: {rest}" if named else str(exc))


def budget_settings(args: argparse.Namespace, defaults: dict) -> dict:
    """The trainer settings of every trial: `defaults`, then the budget flags given, then every --set; --steps
    replaces the epochs.  A setting that another one would turn into nothing is one line (`check_settings`)."""
    from dataclasses import fields

    from effnet.cli._train_settings import check_settings
    from effnet.data import is_fashion_mnist
    from effnet.errors import EffnetError
    from effnet.train import TrainConfig

    settings = dict(defaults)
    given = {field: getattr(args, field) for field in _BUDGET_FLAGS}

    if args.epochs is not None and args.steps is not None:
        raise EffnetError(f"--epochs {args.epochs:g} and --steps {args.steps}: give one budget (--steps replaces the "
                          "epochs)")
    settings.update({k: v for k, v in given.items() if v is not None})
    extra = _parse_set(args.set)
    twice = sorted(k for k in extra if given.get(k) is not None)
    if twice:
        raise EffnetError(f"--set {twice[0]}=... and --{twice[0].replace('_', '-')}: the same setting twice; give it "
                          "once")
    settings.update(extra)
    if "steps" in settings:
        settings.pop("epochs", None)
    every = {f.name: f.default for f in fields(TrainConfig)} | {"data": args.dataset} | settings
    check_settings({k: v for k, v in given.items() if v is not None} | extra, every,
                   lambda field: setting_name(args, field), data_is_a_folder=not is_fashion_mnist(args.dataset))
    return settings


def refuse_report_only_without_report(args: argparse.Namespace) -> None:
    """--report-only with --no-report asks for nothing at all: one line.  (The training flags of the command that
    ran the search may stay: rerunning that command with --report-only is how its report is written again; so may
    the report's flags beside --no-report, for the same one command line.)"""
    from effnet.errors import EffnetError

    if args.report_only and args.no_report:
        raise EffnetError("--report-only and --no-report: one writes only the report, the other none; drop one")


def refuse_with_a_listing(args: argparse.Namespace, flag: str, what: str, used: set[str]) -> None:
    """`flag` prints `what` and exits: the flags it does not read (all but `used`, dests) are one line."""
    from effnet.errors import EffnetError

    ignored = (["DATA"] if args.data is not None else []) + given_flags(args, but=used)
    if ignored:
        raise EffnetError(f"{flags_apply_only(ignored)} to a search that runs, not to {flag}, which prints {what} "
                          f"and exits; drop {it_or_them(ignored)}")


def add_worker_groups(parser: argparse.ArgumentParser, *, stale_help: str) -> None:
    """--jobs, speed (not part of the study's identity) and the leases of workers sharing one study."""
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="worker processes to start on this machine (default 1)")
    speed = parser.add_argument_group("speed only (not part of the study's identity)")
    speed.add_argument("--threads", type=positive_int, default=None, help="torch threads per worker")
    speed.add_argument("--workers", dest="loader_workers", type=non_negative_int, default=0, metavar="N",
                       help="data-loading processes per worker (default 0)")
    speed.add_argument("--loader-workers", dest="loader_workers", type=non_negative_int, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # older spelling
    lease = parser.add_argument_group("sharing")
    lease.add_argument("--heartbeat", type=positive_float, default=10.0, help="seconds between a worker's heartbeats")
    lease.add_argument("--grace", type=positive_float, default=60.0, help=stale_help)
    lease.add_argument("--poll", type=positive_float, default=5.0, help="seconds between looks while others finish")
    lease.add_argument("--until", type=deadline, default=None, metavar="TIME", help=UNTIL_HELP)


def check_outputs(args: argparse.Namespace) -> None:
    """The report's files (--plot PNG, -o JSON where the search has one), checked before any training."""
    if args.plot is not None:
        check_output_file(args.plot, "--plot", suffixes=(".png",))
    if getattr(args, "output", None) is not None:
        check_output_file(args.output, suffixes=(".json",))


def check_leases(args: argparse.Namespace) -> None:
    """--grace must leave room for a late heartbeat: a worker that is busy, not dead, must not be declared stale."""
    from effnet.errors import EffnetError

    if any(getattr(args, flag, False) for flag in ("report_only", "list_grid", "list_space")):
        return  # nothing trains, nothing beats
    if args.grace <= 2 * args.heartbeat:
        raise EffnetError(f"--grace {args.grace:g} must be more than twice --heartbeat {args.heartbeat:g}: a running "
                          "trial beats every --heartbeat seconds and is re-queued after --grace seconds without a "
                          "beat, so a live worker's trial would be trained twice; raise --grace or lower --heartbeat")


def worker_flags(args: argparse.Namespace, given: Sequence[str]) -> list[str]:
    """The flags a spawned worker repeats from its parent's `args`: the leases and loader workers, each of `given`
    (dest names) that was set, and every --set."""
    from effnet.search.leases import until_argv

    argv = ["--heartbeat", repr(args.heartbeat), "--grace", repr(args.grace), "--poll", repr(args.poll),
            "--workers", str(args.loader_workers), *until_argv(args.until)]
    for flag in given:
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    for item in args.set:
        argv += ["--set", item]
    return argv


def run_workers(args: argparse.Namespace, prog: str, header: str, child_argv: Sequence[str],
                work: Callable[[], object]) -> int:
    """The training part of a search command: print `header` (a spawned worker leaves it to its parent), then run
    `work()` here, or with --jobs N run N workers (`effnet <child_argv>`) in child processes and wait.  Returns 0,
    or 1 when a worker process failed."""
    from effnet.search.leases import spawn_workers

    if not os.environ.get("EFFNET_SEARCH_CHILD"):
        print(header, flush=True)
    if args.jobs > 1:
        codes = spawn_workers(child_argv, args.jobs)
        if any(codes):
            print(f"{prog}: worker exit codes {codes}", file=sys.stderr)
            return 1
    else:
        work()
    return 0


def print_table(study, headers: Sequence[str], rows: Sequence[Sequence], formats: dict[str, str], title: str) -> None:
    """The report's table, then the study's trials by state."""
    from effnet.report import format_table
    from effnet.search.leases import trial_counts

    print(format_table(headers, rows, formats=formats, title=title))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(trial_counts(study).items()))
    print(f"\ntrials in the study: {counts or 'none'}")
