"""`effnet experiments NAME`: the paper's experiments — Table 3 computed, and the trained ones (Observations 1 and
2, compound vs single-dimension scaling, transfer) run on real data with seeds and confidence intervals."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from effnet.cli._args import UNTIL_HELP, deadline, device, flags_apply_only, it_or_them, positive_int
from effnet.errors import EffnetError
from effnet.report import format_table
from effnet.stats import SEEDS_WITHIN_NOISE

TRAINED = {
    "single-dims": "Figure 3 (Observation 1): one baseline scaled by width, depth or resolution alone",
    "width-at-depth-res": "Figure 4 (Observation 2): width scaling at (d, r) = (1, 1), (2, 1), (1, 1.3), (2, 1.3)",
    "compound-vs-single": "Figure 8 / Table 7: compound vs single-dimension scaling at matched MACs budgets",
    "transfer": "Table 5 / Figure 6: pretrained Lite0/1/2 fine-tuned on Fashion-MNIST, and Lite0 from scratch",
    "strategies": "compound, depth, width, resolution, uniform and fast scaling at matched MACs and latency",
    "nas": "Sec. 4.2: search a baseline in MnasNet's space, then compound-scale it and the B0-like baseline to "
           "phi = 0, 1, 2",
    "training-length": "compound vs single and the alpha, beta, gamma grid trained to convergence (T = 1, 4, 16, "
                       "32 epochs)",
    "progressive": "EfficientNetV2 Sec. 4.2: progressive learning (image size and dropout growing over 4 stages) vs "
                   "fixed-size training of the same model with the same steps",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiments", help="the paper's experiments, computed and trained")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    t3 = experiments.add_parser("table3", help="Table 3: MobileNetV1/V2 and ResNet-50 scaled by d, w, r, compound")
    t3.add_argument("--format", choices=("table", "json"), default="table")
    t3.set_defaults(func=run_table3)
    for name, help_text in TRAINED.items():
        e = experiments.add_parser(
            name, help=help_text, description=help_text + ". Every run is trained with effnet.train.train, chooses "
            "its weights on images held out from the training set and reports the test split once. Rerunning the "
            "command continues an interrupted experiment; finished runs are not trained again.",
            epilog=f"example: effnet experiments {name} --jobs 2\n         effnet experiments {name} --jobs 2 "
                   f"--until +3h\n         effnet experiments {name} --quick --out out/quick",
            formatter_class=argparse.RawDescriptionHelpFormatter)
        e.add_argument("--quick", action="store_true",
                       help="tiny budget, 1 seed, few points: the whole experiment end to end in about a minute")
        e.add_argument("--seeds", type=positive_int, default=None, help="seeds per point (default 3; 1 with --quick)")
        e.add_argument("--seeds-within-noise", type=positive_int, default=None, metavar="N",
                       help="once the planned seeds have finished, the points of every comparison whose paired "
                            "validation difference is within the noise (95%% interval including zero) are trained "
                            f"with N seeds (default {SEEDS_WITHIN_NOISE}; N at most --seeds adds none); an "
                            "experiment without such comparisons (strategies) refuses it")
        e.add_argument("--jobs", type=positive_int, default=None,
                       help="runs trained in parallel processes here (default 1)")
        e.add_argument("--out", default=None, help=f"output folder (default docs/experiments/{name}/)")
        e.add_argument("--storage", default=None,
                       help="shared record of which runs are done: a journal file or an RDB URL (sqlite:///x.db, "
                            "postgresql://...), as `effnet search`; default OUT/runs.journal")
        e.add_argument("--runs", default=None, help="folder of the runs' checkpoints (default runs/experiments)")
        e.add_argument("--threads", type=positive_int, default=None,
                       help="torch threads per run (default: the cores divided among the jobs)")
        e.add_argument("--device", type=device, default="auto",
                       help="where runs train: auto (a GPU if there is one), cpu, cuda or cuda:N; not part of a "
                            "run's identity (a run trained on a GPU is not trained again on the CPU), and each "
                            "record says where it ran")
        e.add_argument("--until", type=deadline, default=None, metavar="TIME", help=UNTIL_HELP)
        e.add_argument("--report-only", action="store_true", help="write the report of the runs finished so far")
        e.add_argument("--format", choices=("table", "json"), default="table")
        e.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
        e.set_defaults(func=run_trained)
    from effnet.cli import experiments_cam, experiments_latency

    experiments_cam.register(experiments)
    experiments_latency.register(experiments)


def run_trained(args: argparse.Namespace) -> int:
    from effnet.experiments import suite
    from effnet.experiments.runner import Options, StoppedBeforePlanning

    if args.seeds_within_noise is not None and not args.worker and not suite.adds_seeds_within_noise(args.experiment):
        adding = ", ".join(n for n in TRAINED if suite.adds_seeds_within_noise(n))
        raise EffnetError(f"{flags_apply_only(['--seeds-within-noise'])} to the experiments that add seeds where a "
                          f"comparison is within the noise ({adding}); {args.experiment} trains --seeds seeds at every "
                          "point: drop it, or give --seeds N")
    out = Path(args.out or Path("docs/experiments") / args.experiment)
    if args.report_only and not args.worker:
        _check_report_only(args, out)
    jobs = args.jobs or 1
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    options = Options(quick=args.quick, seeds=args.seeds, jobs=jobs, out=out,
                      storage=args.storage or str(out / "runs.journal"),
                      runs_dir=Path(args.runs or "runs/experiments"), threads=threads, device=args.device,
                      seeds_within_noise=args.seeds_within_noise or SEEDS_WITHIN_NOISE, until=args.until)
    if args.storage and not args.worker:  # refused before anything is planned or written
        from effnet.search.study import make_storage

        make_storage(args.storage, create=not args.report_only)
    command = suite.training_command(sys.argv[1:], args.experiment)
    if args.worker:
        suite.work(args.experiment, options)
        return 0
    try:
        results, table = suite.run(args.experiment, options, command=command, report_only=args.report_only,
                                   worker_argv=_child_argv(args, options))
    except StoppedBeforePlanning as stop:
        print(stop)
        return 0
    if args.format == "json":
        print(json.dumps(results, indent=2))
    else:
        print(table)
        print(f"\nresults: {out / 'results.json'}\nreport:  {out / 'report.md'}")
    return 0


def _check_report_only(args: argparse.Namespace, out: Path) -> None:
    """--report-only writes a report of runs that exist: refuse the flags that only training uses, and a folder
    with neither results nor a shared record (a mistyped --out would otherwise get an empty report)."""
    training = [f for f, v in (("--jobs", args.jobs), ("--threads", args.threads), ("--until", args.until))
                if v is not None]  # (--seeds-within-noise stays: the report's plan reads it)
    if training:
        raise EffnetError(f"{flags_apply_only(training)} to training; --report-only trains nothing: drop "
                          f"{it_or_them(training)}")
    storage = args.storage or str(out / "runs.journal")
    if out.exists() and not out.is_dir():
        return  # the output check names it
    if "://" not in storage and not (out / "results.json").is_file() and not Path(storage).exists():
        raise EffnetError(f"--report-only: {out} holds no results.json and {storage} does not exist: no run of "
                          f"{args.experiment} was recorded there; check --out and --storage, or drop --report-only")


def _child_argv(args: argparse.Namespace, options) -> list[str]:
    from effnet.search.leases import until_argv

    argv = ["experiments", args.experiment, "--worker", "--out", str(options.out), "--storage", options.storage,
            "--runs", str(options.runs_dir), "--threads", str(options.threads), "--jobs", str(options.jobs),
            "--device", options.device]
    if args.quick:
        argv.append("--quick")
    if args.seeds:
        argv += ["--seeds", str(args.seeds)]
    return argv + ["--seeds-within-noise", str(options.seeds_within_noise), *until_argv(options.until)]


def run_table3(args: argparse.Namespace) -> int:
    from effnet.experiments.table3 import EXPLAIN_ABOVE, table3_cells

    cells = table3_cells()
    if args.format == "json":
        print(json.dumps([c.to_dict() for c in cells], indent=2))
        return 0
    notes: list[str] = []
    rows = []
    for c in cells:
        diff = c.relative_difference
        mark = ""
        if c.note:
            notes.append(c.note)
            mark = f"[{len(notes)}]"
        rows.append((c.model, c.setting, c.resolution, c.params / 1e6, c.macs / 1e9, c.paper_gmacs, diff, mark))
    print(format_table(["model", "scaling", "res", "params (M)", "GMACs", "paper (B)", "diff", "note"], rows,
                       formats={"params (M)": ".2f", "GMACs": ".3f", "paper (B)": ".1f", "diff": "+.1%"},
                       title="Table 3: scaling MobileNets and ResNet-50 (paper 'FLOPS' are multiply-adds)"))
    print(f"\nCells more than {100 * EXPLAIN_ABOVE:.0f}% from the paper, and why:")
    for i, note in enumerate(notes, 1):
        print(textwrap.fill(note, 116, initial_indent=f"[{i}] ", subsequent_indent="    "))
    print(textwrap.fill(
        "Compound setting: the paper states d=1.4, w=1.2, r=1.3 for MobileNetV1 only (= phi=2 of alpha=1.2, beta=1.1, "
        "gamma=1.15, rounded); it is assumed for MobileNetV2 and ResNet-50. Depth rounds up per stage, widths to "
        "multiples of 8, resolution to the nearest pixel.", 120))
    return 0


def demo_section() -> None:
    """`effnet demo`: Table 3 computed, and the budget solver on B0 (MACs only: latency depends on the machine)."""
    from effnet.budget import solve_for_macs

    run_table3(argparse.Namespace(format="table"))
    sol = solve_for_macs("efficientnet_b0", 1.8e9)
    print(f"\nBudget solver: `effnet scale efficientnet_b0 --target-macs 1.8G` -> phi={sol.phi:.4f}, "
          f"{sol.cost / 1e9:.3f} GMACs ({100 * sol.relative_error:+.2f}%, {sol.evaluations} models evaluated)")


__all__ = ["demo_section", "register"]
