"""`effnet search coefficients`: the α/β/γ grid search of compound scaling, shared through an Optuna study."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

from effnet.cli import _search_args as shared
from effnet.cli._args import add_data_source, data_source, option_defaults, positive_float, positive_int
from effnet.errors import EffnetError
from effnet.report import format_table
from effnet.stats import SEEDS_WITHIN_NOISE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="searches: the alpha/beta/gamma grid, a baseline architecture")
    kinds = p.add_subparsers(dest="search", metavar="SEARCH", required=True)
    c = kinds.add_parser(
        "coefficients", help="grid-search alpha, beta, gamma at phi=1 (step 1 of the paper's method)",
        description="Train the phi=1 model of every (alpha, beta, gamma) on a grid with alpha*beta^2*gamma^2 close to "
                    "2 for a fixed budget, and report the best. Several processes (or machines) can share one "
                    "study through --storage; rerunning the command resumes an interrupted search.")
    c.add_argument("--base", required=True, help="registered model name or spec .json of the baseline")
    add_data_source(c, "'fashion-mnist' or a folder with train/ and val/", default="fashion-mnist")
    c.add_argument("--step", type=float, default=None, help="grid step for alpha, beta, gamma (default 0.05)")
    c.add_argument("--tolerance", type=float, default=None,
                   help="keep points with |alpha*beta^2*gamma^2 - 2| <= this (default 0.1)")
    c.add_argument("--phi", type=positive_float, default=1.0,
                   help="phi of the candidate models, > 0 (default 1, as the paper; at phi 0 every candidate is the "
                        "base)")
    c.add_argument("--storage", default=None,
                   help="shared study: an RDB URL (sqlite:///search.db, postgresql://...) or a journal file path "
                        "(default: STUDY.journal in the current folder)")
    c.add_argument("--study", default=None, help="study name (default: coefficients-BASE-DATASET)")
    shared.add_budget_group(c, "training budget per grid point (effnet.train settings)",
                     val_help="validate on this many of the images held out from the training set",
                     set_example="warmup_epochs=0.2")
    seeds = c.add_argument_group("seeds")
    seeds.add_argument("--seeds", type=positive_int, default=1,
                       help="seeds per grid point, from --seed on (default 1), one study per seed; a point's score "
                            "is its mean, and the table gives its 95%% interval and paired difference with the best")
    seeds.add_argument("--seeds-within-noise", type=positive_int, default=None, metavar="N",
                       help="with --seeds 2 or more: once those are done, the points whose paired difference with "
                            f"the best includes zero (95%% interval) get N seeds (default {SEEDS_WITHIN_NOISE})")
    shared.add_worker_groups(c, stale_help="a running trial whose heartbeat is older than this is re-queued (seconds)")
    out = c.add_argument_group("output")
    out.add_argument("--plot", default=None, help="PNG of the results (default: STUDY.png)")
    out.add_argument("--report-only", action="store_true", help="print what the study holds now; train nothing")
    out.add_argument("--no-report", action="store_true", help="train, but leave the report to another process")
    out.add_argument("--list-grid", action="store_true", help="print the grid points and exit")
    out.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(func=run_coefficients, option_defaults=option_defaults(c))
    from effnet.cli.search_architecture import register as register_architecture

    register_architecture(kinds)


def _config(args: argparse.Namespace):
    from effnet.registry import get_spec
    from effnet.scaling import CONSTRAINT_TOLERANCE
    from effnet.search.coefficients import SEARCH_TRAIN_DEFAULTS, SearchConfig
    from effnet.search.grid import DEFAULT_STEP
    from effnet.train import TrainConfig, plan_run
    from effnet.train.config import ConfigError

    args.dataset = data_source(args, default="fashion-mnist")
    train = shared.budget_settings(args, SEARCH_TRAIN_DEFAULTS)
    base = get_spec(args.base)
    if args.dataset != "fashion-mnist" and not os.path.isdir(args.dataset):
        raise EffnetError(f"--dataset {args.dataset}: not found; expected 'fashion-mnist' or a folder with train/ "
                          "(and val/) of class folders")
    try:  # bad budgets (or a subset larger than the data) fail before any study exists; no model is built
        plan_run(TrainConfig(model=base, data=args.dataset, **{"test": False, **train}))
    except ConfigError as exc:
        raise shared.setting_error(args, exc) from None
    config = SearchConfig(base=base, base_ref=args.base, dataset=args.dataset,
                          step=DEFAULT_STEP if args.step is None else args.step,
                          tolerance=CONSTRAINT_TOLERANCE if args.tolerance is None else args.tolerance,
                          phi=args.phi, train=train, threads=args.threads, loader_workers=args.loader_workers,
                          seeds=args.seeds, seeds_within_noise=args.seeds_within_noise or SEEDS_WITHIN_NOISE)
    try:
        config.grid()  # a grid error is reported here, before any work
    except EffnetError as exc:
        raise EffnetError(f"--step/--tolerance: {exc}") from None
    return config


def _child_argv(args: argparse.Namespace, storage: str, study: str) -> list[str]:
    return ["search", "coefficients", "--base", args.base, "--dataset", args.dataset, "--phi", repr(args.phi),
            "--storage", storage, "--study", study, "--jobs", "1", "--no-report",
            *shared.worker_flags(args, ("step", "tolerance", "epochs", "steps", "batch_size", "train_subset",
                                        "val_subset", "lr", "optimizer", "augment", "seed", "threads",
                                        "seeds", "seeds_within_noise"))]


def run_coefficients(args: argparse.Namespace) -> int:
    from effnet.search.coefficient_seeds import run_worker_process
    from effnet.search.coefficients import study_name_for
    from effnet.search.grid import coefficient_grid

    shared.refuse_report_only_without_report(args)
    shared.check_leases(args)
    shared.check_outputs(args)
    if args.seeds_within_noise is not None and args.seeds == 1:
        raise EffnetError(f"--seeds-within-noise {args.seeds_within_noise} adds seeds to the points within the noise "
                          "of the best, which takes --seeds 2 or more to tell; add --seeds N or drop it")
    config = _config(args)
    grid = config.grid()
    if args.list_grid:
        shared.refuse_with_a_listing(args, "--list-grid", "the grid points of --step, --tolerance and --phi",
                                     {"base", "step", "tolerance", "phi", "list_grid", "format"})
        rows = [(c.alpha, c.beta, c.gamma, c.product) for c in grid]
        if args.format == "json":
            points = [{"alpha": a, "beta": b, "gamma": g, "product": round(p, 6)} for a, b, g, p in rows]
            print(json.dumps({"step": config.step, "tolerance": config.tolerance, "phi": config.phi,
                              "points": points}, indent=2))
            return 0
        print(format_table(["alpha", "beta", "gamma", "a*b^2*g^2"], rows, formats={"a*b^2*g^2": ".4f"},
                           title=f"{len(grid)} grid points (step {config.step:g}, |product - 2| <= "
                                 f"{config.tolerance:g})"))
        return 0
    study_name = args.study or study_name_for(config)
    storage = args.storage or f"{study_name}.journal"
    if not args.report_only:
        from effnet.search.study import make_storage

        make_storage(storage)  # a storage that is not one is refused before the banner and any work
        seeds = "" if config.seeds == 1 else f" x {config.seeds} seeds (a study each)"
        header = (f"study {study_name!r} in {storage}: {len(grid)} grid points{seeds}, phi={config.phi:g}, budget "
                  f"per point {json.dumps(config.train, sort_keys=True)}")

        def work() -> None:
            run_worker_process(config, storage, study_name, heartbeat_s=args.heartbeat, grace_s=args.grace,
                               poll_s=args.poll, log=lambda m: print(m, flush=True), until=args.until)

        if shared.run_workers(args, "effnet search", header, _child_argv(args, storage, study_name), work):
            return 1
    if args.no_report:
        return 0
    return _report(args, config, storage, study_name, coefficient_grid(config.step, config.tolerance))


def _report(args, config, storage: str, study_name: str, grid) -> int:
    from effnet.profile import profile
    from effnet.search import report as grid_report

    study, rows, names = _rows(config, storage, study_name, create=not args.report_only)
    num_classes = next((t.user_attrs.get("num_classes") for t in study.trials if "num_classes" in t.user_attrs), None)
    base_macs = profile(replace(config.base, num_classes=num_classes or config.base.num_classes)).macs
    plot = None
    if rows:
        plot = grid_report.plot_search(rows, args.plot or f"{study_name}.png", base_macs=base_macs,
                                       title=f"{config.base.name}: alpha/beta/gamma at phi={config.phi:g} on "
                                             f"{config.dataset}")
    if args.format == "json":
        command = grid_report.scale_command(config.base_ref, rows[0].coefficients, config.phi) if rows else None
        print(json.dumps({"study": study_name, "studies": names, "seeds": config.seeds, "storage": storage,
                          "grid_points": len(grid),
                          "counts": grid_report.trial_counts(study), "base_macs": base_macs,
                          "rows": [r.to_dict() for r in rows], "command": command,
                          "plot": str(plot) if plot else None}, indent=2))
        return 0
    headers = grid_report.SEEDED_HEADERS if config.seeds > 1 else grid_report.TABLE_HEADERS
    seeds = "" if config.seeds == 1 else (f"; {config.seeds} seeds per point, up to {config.seeds_within_noise} "
                                          f"where close to the best: studies {', '.join(names)}")
    shared.print_table(study, headers, grid_report.table_rows(rows, base_macs), grid_report.TABLE_FORMATS,
                       f"alpha/beta/gamma grid search of {config.base.name} at phi={config.phi:g} on "
                       f"{config.dataset} ({len(rows)} of {len(grid)} grid points trained{seeds})")
    if not rows:
        return 0
    best = rows[0].coefficients
    mean = "mean " if config.seeds > 1 else ""
    print(f"best: alpha={best.alpha:g}, beta={best.beta:g}, gamma={best.gamma:g} ({mean}top-1 {rows[0].top1:.2f}%, "
          f"{rows[0].macs / 1e6:.2f} MMACs, alpha*beta^2*gamma^2 = {best.product:.3f})")
    if config.seeds > 1:
        tied = [r for r in rows[1:] if r.vs_best is not None and r.vs_best.n > 1 and not r.vs_best.excludes_zero()]
        print(f"within the noise of the best (paired 95% interval including zero): "
              f"{', '.join(r.coefficients.label for r in tied) or 'none'}")
    print(f"plot: {plot}")
    print(f"scale with it: {grid_report.scale_command(config.base_ref, best, config.phi)}")
    return 0


def _rows(config, storage: str, study_name: str, *, create: bool):
    """The first seed's study (joined or created), the report's rows and the names of the studies they come from:
    one study's trials as they are, or with several seeds one row per point over every seed's study."""
    from effnet.search import coefficient_seeds
    from effnet.search import report as grid_report
    from effnet.search.coefficients import open_coefficient_study

    study = open_coefficient_study(storage, study_name, config, create=create)
    if config.seeds == 1:
        return study, grid_report.search_rows(study), [study_name]
    studies = coefficient_seeds.all_studies(config, study_name, storage)
    held = coefficient_seeds.existing(storage, studies)
    rows = grid_report.combine({s.seed: grid_report.search_rows(st) for s, st in held})
    return study, rows, [s.name for s, _ in held]


__all__ = ["register"]
