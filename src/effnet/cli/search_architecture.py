"""`effnet search architecture`: the MnasNet-style search for a baseline, on a shared Optuna study."""

from __future__ import annotations

import argparse
import json

from effnet.cli import _search_args as shared
from effnet.cli._args import add_data_source, data_source, macs, option_defaults, positive_float, positive_int
from effnet.errors import EffnetError
from effnet.report import format_table

PROG = "effnet search architecture"


def register(kinds: argparse._SubParsersAction) -> None:
    a = kinds.add_parser(
        "architecture", help="search a baseline ConvNet: MnasNet's space and reward ACC x (MACs/T)^w",
        description="Sample architectures from MnasNet's factorised space over EfficientNet-B0's skeleton (per "
                    "stage: block kind, kernel, SE, repeats, width), train each briefly, and score it with the "
                    "paper's reward ACC x (MACs/T)^w: top-1 on images held out from the training set (the test "
                    "split is never read) and MACs from the profiler. Prints the accuracy-MACs Pareto front and "
                    "the best-reward spec, saved as JSON for `effnet train --model` and `effnet scale`. "
                    "Sampler: Optuna's TPE (multivariate, constant liar) on the single reward, as the paper "
                    "optimised one reward; it is sample-efficient at tens of trials, where NSGA-II on the two "
                    "objectives would still be sampling its first population. Several processes (or machines) "
                    "share one study through --storage; rerunning the command resumes it, and a trial whose "
                    "process died is run again.",
        epilog="example: effnet search architecture --dataset fashion-mnist --target-macs 8M --trials 40 "
               "--storage arch.journal --jobs 2 -o best.json --plot arch.png")
    add_data_source(a, "'fashion-mnist' or a folder with train/", default="fashion-mnist")
    a.add_argument("--space", default=None, metavar="FILE",
                   help="search-space JSON (default: the shipped MnasNet space on B0's skeleton; --list-space shows "
                        "it and where the file is, to copy and edit)")
    a.add_argument("--target-macs", type=macs, default=None, metavar="MACS",
                   help="T of the reward, in MACs per image at --resolution, e.g. 8M (required unless --list-space)")
    a.add_argument("--w", type=float, default=None,
                   help="exponent w of the reward, in [-1, 0] (default -0.07, the paper's soft constraint)")
    a.add_argument("--resolution", type=int, default=32,
                   help="input size of every candidate, for training and MACs (default 32)")
    a.add_argument("--trials", type=positive_int, default=None,
                   help="finished trials in the study, all workers together")
    a.add_argument("--timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="trial time of the study, summed over all workers and reruns; no trial starts after it")
    a.add_argument("--storage", default=None,
                   help="shared study: an RDB URL (sqlite:///arch.db, postgresql://...) or a journal file path "
                        "(default: STUDY.journal in the current folder)")
    a.add_argument("--study", default=None, help="study name (default: architecture-SPACE-DATASET-RESpx)")
    budget = shared.add_budget_group(a, "proxy training per candidate (effnet.train settings)",
                              val_help="score on this many of the images held out from the training set",
                              set_example="bn_momentum=0.1")
    budget.add_argument("--holdout", type=positive_int, default=None,
                        help="images held out from the end of the training set for scoring (default 5000 for "
                             "Fashion-MNIST, a tenth of train/ for a folder)")
    shared.add_worker_groups(a, stale_help="a running trial whose heartbeat is older than this is run again (seconds)")
    out = a.add_argument_group("output")
    out.add_argument("-o", "--output", default=None, metavar="JSON",
                     help="where to save the best-reward spec (default: STUDY.best.json)")
    out.add_argument("--plot", default=None, metavar="PNG", help="top-1 vs MACs of every trial (default: STUDY.png)")
    out.add_argument("--report-only", action="store_true", help="print what the study holds now; train nothing")
    out.add_argument("--no-report", action="store_true", help="train, but leave the report to another process")
    out.add_argument("--list-space", action="store_true", help="print the search space and its MACs range, and exit")
    out.add_argument("--format", choices=("table", "json"), default="table",
                     help="the report as a table (default) or as JSON")
    a.set_defaults(func=run_architecture, option_defaults=option_defaults(a))


def _config(args: argparse.Namespace, space):
    from effnet.data import open_sources
    from effnet.data.sources import is_fashion_mnist
    from effnet.search.architecture import DEFAULT_W, SEARCH_TRAIN_DEFAULTS, ArchitectureSearch, check_w
    from effnet.train import TrainConfig, plan_run
    from effnet.train.config import ConfigError, check_resolution

    args.dataset = data_source(args, default="fashion-mnist")
    if args.target_macs is None:
        raise EffnetError("--target-macs: missing; give the reward's target T in MACs per image at --resolution, "
                          "e.g. --target-macs 8M (--list-space shows the space's MACs range)")
    w = check_w(DEFAULT_W if args.w is None else args.w)
    try:
        check_resolution(args.resolution, "--resolution")
    except ConfigError as exc:
        raise EffnetError(str(exc)) from None
    if args.trials is None and args.timeout is None and not args.report_only:
        raise EffnetError("no budget: give --trials N (finished trials in all) and/or --timeout SECONDS")
    try:
        train = open_sources(args.dataset).train  # an unknown dataset fails here, before any study exists
    except EffnetError as exc:
        raise EffnetError(f"--dataset: {exc}") from None
    holdout = args.holdout
    if holdout is None and not is_fashion_mnist(args.dataset):
        holdout = max(1, len(train) // 10)  # a folder's val/ may be its test set: score on a holdout instead
    settings = shared.budget_settings(args, SEARCH_TRAIN_DEFAULTS)
    for key in ("holdout", "test", "resolution"):
        if key in settings:
            raise EffnetError(f"--set {key}=...: not allowed here; the search sets it (use --{key} if offered)")
    config = ArchitectureSearch(space=space, target_macs=float(args.target_macs), dataset=args.dataset,
                                num_classes=len(train.classes), resolution=args.resolution, w=w, holdout=holdout,
                                train=settings, threads=args.threads, loader_workers=args.loader_workers)
    try:  # a bad budget (or a holdout as large as the data) fails before any study exists; no model is built
        plan_run(TrainConfig(model=config.spec(space.extreme(False)), data=args.dataset, holdout=holdout,
                             test=False, **settings))
    except ConfigError as exc:
        raise shared.setting_error(args, exc) from None
    return config


def _child_argv(args: argparse.Namespace, storage: str, study: str) -> list[str]:
    return ["search", "architecture", "--dataset", args.dataset, "--target-macs", repr(args.target_macs),
            "--resolution", str(args.resolution), "--storage", storage, "--study", study, "--jobs", "1",
            "--no-report",
            *shared.worker_flags(args, ("space", "w", "trials", "timeout", "epochs", "steps", "batch_size",
                                        "train_subset", "val_subset", "holdout", "lr", "optimizer", "augment", "seed",
                                        "threads"))]


def run_architecture(args: argparse.Namespace) -> int:
    from effnet.search.architecture import Budget, make_evaluator, open_architecture_study, run_worker
    from effnet.search.space import load_space
    from effnet.train import TrainingDiverged

    shared.refuse_report_only_without_report(args)
    shared.check_leases(args)
    shared.check_outputs(args)
    space = load_space(args.space)
    if args.list_space:
        shared.refuse_with_a_listing(args, "--list-space", "the search space and its MACs range at --resolution",
                                     {"space", "resolution", "list_space", "format"})
        return _list_space(args, space)
    config = _config(args, space)
    study_name = args.study or config.study_name()
    storage = args.storage or f"{study_name}.journal"
    budget = Budget(args.trials, args.timeout)
    if not args.report_only:
        study = open_architecture_study(storage, study_name, config)  # refuses other settings before any work
        limits = " and ".join(x for x in (f"{args.trials} trials" if args.trials else "",
                                          f"{args.timeout:g} s of trial time" if args.timeout else "") if x)
        header = (f"study {study_name!r} in {storage}: {space.name} space ({space.size:.3g} points), "
                  f"T={config.target_macs / 1e6:g} MMACs, w={config.w:g}, {config.resolution} px, budget {limits}, "
                  f"per trial {json.dumps(config.train, sort_keys=True)}")

        def work() -> None:
            run_worker(study, config, make_evaluator(config), budget, heartbeat_s=args.heartbeat, grace_s=args.grace,
                       poll_s=args.poll, log=lambda m: print(m, flush=True), error_types=(TrainingDiverged,),
                       until=args.until)

        if shared.run_workers(args, PROG, header, _child_argv(args, storage, study_name), work):
            return 1
    if args.no_report:
        return 0
    return _report(args, config, storage, study_name)


def _report(args: argparse.Namespace, config, storage: str, study_name: str) -> int:
    from effnet.search import architecture_report as arch_report
    from effnet.search.architecture import open_architecture_study
    from effnet.spec import save_spec

    study = open_architecture_study(storage, study_name, config, create=not args.report_only)
    rows = arch_report.architecture_rows(study)
    front = arch_report.pareto_front(rows)
    best_spec = config.spec(rows[0].point, f"{config.space.name}_t{rows[0].trial}") if rows else None
    output = args.output or f"{study_name}.best.json"
    if best_spec is not None:
        save_spec(best_spec, output)
    plot = None
    if rows:
        plot = arch_report.plot_architectures(
            rows, args.plot or f"{study_name}.png", target_macs=config.target_macs,
            title=f"{config.space.name} on {config.dataset} at {config.resolution} px: top-1 vs MACs "
                  f"(T={config.target_macs / 1e6:g}M, w={config.w:g})")
    if args.format == "json":
        print(json.dumps({"study": study_name, "storage": storage, "counts": arch_report.trial_counts(study),
                          "target_macs": config.target_macs, "w": config.w,
                          "trial_wall_s": round(sum(r.wall_s for r in rows), 1),
                          "front": [r.to_dict() for r in front], "best": rows[0].to_dict() if rows else None,
                          "spec": output if rows else None, "plot": str(plot) if plot else None}, indent=2))
        return 0
    shared.print_table(study, arch_report.TABLE_HEADERS, arch_report.table_rows(front, config.target_macs),
                       arch_report.TABLE_FORMATS,
                       f"Pareto front (top-1 vs MACs) of {len(rows)} trained candidates, {config.space.name} space "
                       f"on {config.dataset} at {config.resolution} px")
    if not rows:
        return 0
    best = rows[0]
    print(f"best reward: trial {best.trial}, {best.reward:.4f} = {best.top1 / 100:.4f} x ({best.macs / 1e6:.2f}M / "
          f"{config.target_macs / 1e6:g}M)^{config.w:g}; {best.architecture}")
    print(f"spec: {output}  (effnet train --model {output}; effnet scale {output} --phi 1)")
    print(f"plot: {plot}")
    return 0


def _list_space(args: argparse.Namespace, space) -> int:
    from effnet.profile import profile
    from effnet.search.space import default_space_path

    source = str(args.space or default_space_path())
    low, high = (profile(space.spec(space.extreme(x), resolution=args.resolution, num_classes=10)).macs
                 for x in (False, True))
    if args.format == "json":
        stages = [{"stage": i + 1, "stride": stage.stride, "width": stage.out_channels, "repeats": stage.repeats,
                   "choices": stage.options()} for i, stage in enumerate(space.stages)]
        print(json.dumps({"space": space.name, "file": source, "description": space.description or None,
                          "points": space.size, "resolution": args.resolution, "cheapest_macs": low,
                          "dearest_macs": high, "stages": stages}, indent=2))
        return 0
    rows = []
    for i, stage in enumerate(space.stages):
        o = stage.options()
        rows.append((i + 1, stage.stride, stage.out_channels, stage.repeats, ", ".join(o["block"]),
                     ", ".join(map(str, o["kernel"])), ", ".join(f"{v:g}" for v in o["se_ratio"]),
                     ", ".join(map(str, o["repeats"])), ", ".join(f"{v:g}" for v in o["width"])))
    print(format_table(["stage", "stride", "width", "repeats", "block", "kernel", "SE", "repeats choices",
                        "width x"], rows, title=f"search space {space.name!r} ({source})"))
    if space.description:
        print(space.description)
    print(f"{space.size:,} points; MACs per image at {args.resolution} px (10 classes): cheapest point "
          f"{low / 1e6:.2f}M, dearest {high / 1e6:.2f}M")
    return 0


__all__ = ["register"]
