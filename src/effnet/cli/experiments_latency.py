"""`effnet experiments latency`: Table 4 re-run — inference latency of B0–B3 (B4–B7 with --full) and
ResNet-50/101/152 on this CPU, in torch eager and the fastest fp32 engine here, and which cost (MACs, params,
activations) predicts time, and EfficientNetV2's Table 3 (Fused-MBConv in B4's early stages; V2-S against B4/B5)
(`effnet.experiments.latency`, `effnet.experiments.costs`, `effnet.experiments.fused`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from effnet.errors import EffnetError

PARTS = ("latency", "costs", "fused")


def register(experiments: argparse._SubParsersAction) -> None:
    help_text = ("Table 4: inference latency of EfficientNet-B0..B3 and ResNet-50/101/152 on this CPU (1 and all "
                 "threads, batch 1 and 32, torch eager and the fastest fp32 engine), and which cost (MACs, params, "
                 "activations) predicts inference and training time; and EfficientNetV2's Table 3 on this CPU: B4 with "
                 "Fused-MBConv in stages 1-3, 1-5, 1-7 or none, V2-S and B5 (params, MACs, activations, batch-1 "
                 "latency on one thread, training images/s on one thread)")
    e = experiments.add_parser(
        "latency", help=help_text,
        description=help_text + ". Measure on a quiet machine: every record notes the load average. Rerunning the "
                    "command continues an interrupted measurement; finished records are not measured again.",
        epilog="example: effnet experiments latency\n         effnet experiments latency --quick --out out/latency"
               "\n         effnet experiments latency --part fused",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    size = e.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="B0 and ResNet-50 at 64 px, batch 1 and 2, 3 timed runs (the fused part: B0 with 0 and 3 "
                           "fused stages and V2-B0 at 32 px, 2 rounds): end to end in under a minute")
    size.add_argument("--full", action="store_true",
                      help="B4..B7 too: hours more, and the costs part trains B7 at 600 px on batches of 8 (tens "
                           "of GB of memory)")
    e.add_argument("--part", choices=(*PARTS, "all"), default="all",
                   help="latency: Table 4's measurements; costs: which cost predicts time, on these models and "
                        "those of compound-vs-single; fused: V2's Table 3 (B4 with 0, 3, 5, 7 fused stages, V2-S, "
                        "B5, and stages 1-3 fused with 3x3 kernels; 26 interleaved rounds, tens of minutes on one "
                        "core) (default all)")
    e.add_argument("--source", default=None,
                   help="output folder of `effnet experiments compound-vs-single`, whose models join the costs "
                        "part (default docs/experiments/compound-vs-single)")
    e.add_argument("--out", default=None, help="output folder (default docs/experiments/latency/)")
    e.add_argument("--report-only", action="store_true", help="write report.md from results.json, measure nothing")
    e.set_defaults(func=run_latency_experiment)


def run_latency_experiment(args: argparse.Namespace) -> int:
    from effnet.experiments.latency import Options, run, summary_lines

    experiments_dir = Path("docs/experiments")
    out = Path(args.out or experiments_dir / "latency")
    if out.exists() and not out.is_dir():
        raise EffnetError(f"--out: got {out}, a file; expected a folder (new or existing) for results.json and "
                          "report.md")
    if not args.report_only:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EffnetError(f"--out: got {out}, which cannot be made a folder ({exc.strerror}); expected a "
                              "writable folder path") from None
    source = Path(args.source) if args.source else experiments_dir / "compound-vs-single"
    if args.source and not (source / "results.json").is_file():
        raise EffnetError(f"--source: got {source}, which holds no results.json; expected the output folder of "
                          "`effnet experiments compound-vs-single` (run it first, or leave --source out)")
    options = Options(out=out, source=source, quick=args.quick, full=args.full)
    command = "effnet " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--report-only") \
        if sys.argv[1:] and sys.argv[1] == "experiments" else "effnet experiments latency"
    results = run(options, PARTS if args.part == "all" else (args.part,), command=command,
                  report_only=args.report_only)
    for line in summary_lines(results):
        print(line)
    print(f"\nresults: {out / 'results.json'}\nreport:  {out / 'report.md'}")
    return 0


__all__ = ["register", "run_latency_experiment"]
