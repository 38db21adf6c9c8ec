"""`effnet search coefficients`: the α/β/γ grid search of compound scaling, shared through an Optuna study."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields, replace

from effnet.errors import EffnetError
from effnet.report import format_table

# TrainConfig fields the search sets itself; `--set` may not touch them.
_RESERVED = {"model", "data", "out_dir", "progress", "workers", "threads", "resume", "device", "pretrained"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="searches: the alpha/beta/gamma grid of compound scaling")
    kinds = p.add_subparsers(dest="search", metavar="SEARCH", required=True)
    c = kinds.add_parser(
        "coefficients", help="grid-search alpha, beta, gamma at phi=1 (step 1 of the paper's method)",
        description="Train the phi=1 model of every (alpha, beta, gamma) on a grid with alpha*beta^2*gamma^2 close to "
                    "2 for a fixed budget, and report the best. Several processes (or machines) can share one "
                    "study through --storage; rerunning the command resumes an interrupted search.")
    c.add_argument("--base", required=True, help="registered model name or spec .json of the baseline")
    c.add_argument("--dataset", default="fashion-mnist", help="'fashion-mnist' or a folder with train/ and val/")
    c.add_argument("--step", type=float, default=None, help="grid step for alpha, beta, gamma (default 0.05)")
    c.add_argument("--tolerance", type=float, default=None,
                   help="keep points with |alpha*beta^2*gamma^2 - 2| <= this (default 0.1)")
    c.add_argument("--phi", type=float, default=1.0, help="phi of the candidate models (default 1, as the paper)")
    c.add_argument("--storage", default=None,
                   help="shared study: an RDB URL (sqlite:///search.db, postgresql://...) or a journal file path "
                        "(default: STUDY.journal in the current folder)")
    c.add_argument("--study", default=None, help="study name (default: coefficients-BASE-DATASET)")
    c.add_argument("--jobs", type=int, default=1, help="worker processes to start on this machine (default 1)")
    budget = c.add_argument_group("training budget per grid point (effnet.train settings)")
    budget.add_argument("--epochs", type=float, default=None, help="epochs per trial (default 1)")
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps per trial (instead of --epochs)")
    budget.add_argument("--batch-size", type=int, default=None, help="default 64")
    budget.add_argument("--train-subset", type=int, default=None, help="train on this many images (fixed subset)")
    budget.add_argument("--val-subset", type=int, default=None, help="evaluate on this many test images")
    budget.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's 0.016 x B/256)")
    budget.add_argument("--optimizer", default=None, help="rmsproptf (default) or sgd")
    budget.add_argument("--augment", default=None, help="autoaugment, randaugment or none (default none)")
    budget.add_argument("--seed", type=int, default=None, help="training seed, the same for every trial")
    budget.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other effnet.train.TrainConfig field, e.g. --set warmup_epochs=0.2")
    speed = c.add_argument_group("speed only (not part of the study's identity)")
    speed.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    speed.add_argument("--loader-workers", type=int, default=0, help="data-loading processes per worker")
    lease = c.add_argument_group("sharing")
    lease.add_argument("--heartbeat", type=float, default=10.0, help="seconds between a worker's heartbeats")
    lease.add_argument("--grace", type=float, default=60.0,
                       help="a running trial whose heartbeat is older than this is re-queued (seconds)")
    lease.add_argument("--poll", type=float, default=5.0, help="seconds between looks while others finish")
    out = c.add_argument_group("output")
    out.add_argument("--plot", default=None, help="PNG of the results (default: STUDY.png)")
    out.add_argument("--report-only", action="store_true", help="print what the study holds now; train nothing")
    out.add_argument("--no-report", action="store_true", help="train, but leave the report to another process")
    out.add_argument("--list-grid", action="store_true", help="print the grid points and exit")
    out.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(func=run_coefficients)


def _parse_set(items: list[str]) -> dict:
    from effnet.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known or key in _RESERVED:
            allowed = ", ".join(sorted(known - _RESERVED))
            raise EffnetError(f"--set {item!r}: expected KEY=VALUE with KEY one of {allowed}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _config(args: argparse.Namespace):
    from effnet.registry import get_spec
    from effnet.scaling import CONSTRAINT_TOLERANCE
    from effnet.search.coefficients import SEARCH_TRAIN_DEFAULTS, SearchConfig
    from effnet.search.grid import DEFAULT_STEP
    from effnet.train import TrainConfig, check_config

    train = dict(SEARCH_TRAIN_DEFAULTS)
    given = {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size,
             "train_subset": args.train_subset, "val_subset": args.val_subset, "lr": args.lr,
             "optimizer": args.optimizer, "augment": args.augment, "seed": args.seed}
    train.update({k: v for k, v in given.items() if v is not None})
    train.update(_parse_set(args.set))
    if "steps" in train:
        train.pop("epochs", None)
    base = get_spec(args.base)
    check_config(TrainConfig(model=base, data=args.dataset, **train))  # bad budgets fail before any study exists
    config = SearchConfig(base=base, base_ref=args.base, dataset=args.dataset,
                          step=DEFAULT_STEP if args.step is None else args.step,
                          tolerance=CONSTRAINT_TOLERANCE if args.tolerance is None else args.tolerance,
                          phi=args.phi, train=train, threads=args.threads, loader_workers=args.loader_workers)
    config.grid()  # a grid error is reported here, before any work
    return config


def _child_argv(args: argparse.Namespace, storage: str, study: str) -> list[str]:
    argv = ["search", "coefficients", "--base", args.base, "--dataset", args.dataset, "--phi", repr(args.phi),
            "--storage", storage, "--study", study, "--jobs", "1", "--no-report",
            "--heartbeat", repr(args.heartbeat), "--grace", repr(args.grace), "--poll", repr(args.poll),
            "--loader-workers", str(args.loader_workers)]
    for flag in ("step", "tolerance", "epochs", "steps", "batch_size", "train_subset", "val_subset", "lr",
                 "optimizer", "augment", "seed", "threads"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    for item in args.set:
        argv += ["--set", item]
    return argv


def run_coefficients(args: argparse.Namespace) -> int:
    from effnet.search.coefficients import run_worker_process, spawn_workers, study_name_for
    from effnet.search.grid import coefficient_grid

    config = _config(args)
    grid = config.grid()
    if args.list_grid:
        rows = [(c.alpha, c.beta, c.gamma, f"{c.product:.4f}") for c in grid]
        print(format_table(["alpha", "beta", "gamma", "a*b^2*g^2"], rows,
                           title=f"{len(grid)} grid points (step {config.step:g}, |product - 2| <= "
                                 f"{config.tolerance:g})"))
        return 0
    study_name = args.study or study_name_for(config)
    storage = args.storage or f"{study_name}.journal"
    if args.jobs < 1:
        raise EffnetError(f"--jobs: got {args.jobs}, expected at least 1")
    if not args.report_only:
        if not os.environ.get("EFFNET_SEARCH_CHILD"):
            print(f"study {study_name!r} in {storage}: {len(grid)} grid points, phi={config.phi:g}, budget per point "
                  f"{json.dumps(config.train, sort_keys=True)}", flush=True)
        if args.jobs > 1:
            codes = spawn_workers(_child_argv(args, storage, study_name), args.jobs)
            if any(codes):
                print(f"effnet search: worker exit codes {codes}", file=sys.stderr)
                return 1
        else:
            run_worker_process(config, storage, study_name, heartbeat_s=args.heartbeat, grace_s=args.grace,
                               poll_s=args.poll, log=lambda m: print(m, flush=True))
    if args.no_report:
        return 0
    return _report(args, config, storage, study_name, coefficient_grid(config.step, config.tolerance))


def _report(args, config, storage: str, study_name: str, grid) -> int:
    from effnet.profile import profile
    from effnet.search.report import (
        TABLE_HEADERS,
        plot_search,
        scale_command,
        search_rows,
        table_rows,
        trial_counts,
    )
    from effnet.search.study import open_study

    study = open_study(storage, study_name, grid, config.identity())
    rows = search_rows(study)
    num_classes = next((t.user_attrs.get("num_classes") for t in study.trials if "num_classes" in t.user_attrs), None)
    base_macs = profile(replace(config.base, num_classes=num_classes or config.base.num_classes)).macs
    if args.format == "json":
        command = scale_command(config.base_ref, rows[0].coefficients, config.phi) if rows else None
        print(json.dumps({"study": study_name, "storage": storage, "grid_points": len(grid),
                          "counts": trial_counts(study), "base_macs": base_macs,
                          "rows": [r.to_dict() for r in rows], "command": command}, indent=2))
        return 0
    print(format_table(TABLE_HEADERS, table_rows(rows, base_macs),
                       title=f"alpha/beta/gamma grid search of {config.base.name} at phi={config.phi:g} on "
                             f"{config.dataset} ({len(rows)} of {len(grid)} grid points trained)"))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(trial_counts(study).items()))
    print(f"\ntrials in the study: {counts}")
    if not rows:
        return 0
    best = rows[0].coefficients
    print(f"best: alpha={best.alpha:g}, beta={best.beta:g}, gamma={best.gamma:g} (top-1 {rows[0].top1:.2f}%, "
          f"{rows[0].macs / 1e6:.2f} MMACs, alpha*beta^2*gamma^2 = {best.product:.3f})")
    plot = plot_search(rows, args.plot or f"{study_name}.png",
                       title=f"{config.base.name}: alpha/beta/gamma at phi={config.phi:g} on {config.dataset}",
                       base_macs=base_macs)
    print(f"plot: {plot}")
    print(f"scale with it: {scale_command(config.base_ref, best, config.phi)}")
    return 0


__all__ = ["register"]
