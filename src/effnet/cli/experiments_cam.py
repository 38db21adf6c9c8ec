"""`effnet experiments cam`: Figure 7 re-made — maps of the pretrained Lite models on real photos, and of the
compound-vs-single models on Fashion-MNIST with the share of each map on the object (`effnet.experiments.cam`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from effnet.cli._args import flags_apply_only, it_or_them, positive_float, positive_int
from effnet.report import format_table


def register(experiments: argparse._SubParsersAction) -> None:
    from effnet.cam import METHODS
    from effnet.experiments.cam import PARTS, SOURCE

    help_text = ("Figure 7: class activation maps of the pretrained Lite0/1/2 on real photos, and of the "
                 f"{SOURCE} models at one MACs budget on Fashion-MNIST, with the maps' mass on the object")
    e = experiments.add_parser("cam", help=help_text, description=help_text + ".",
                               epilog="example: effnet experiments cam\n         effnet experiments cam --quick "
                                      "--source quick/cvs --runs quick/runs --out quick/cam",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--part", choices=(*PARTS, "all"), default=None, help="which figure(s) to make (default all)")
    e.add_argument("--source", default=None,
                   help=f"output folder of `effnet experiments {SOURCE}` (default docs/experiments/{SOURCE})")
    e.add_argument("--runs", default=None, help="folder of its runs' checkpoints (default runs/experiments)")
    e.add_argument("--out", default=None, help="output folder (default docs/experiments/cam/)")
    e.add_argument("--budget", type=positive_float, default=None,
                   help="MACs budget of the models compared (default 3, else the middle one run)")
    e.add_argument("--method", choices=sorted(METHODS), default=None, help="map method (default gradcam)")
    e.add_argument("--layer", default=None, help="stem, stages.I or head (default head, the last feature map)")
    e.add_argument("--quick", action="store_true", help="few photos and test images: end to end in a minute")
    e.add_argument("--retrain", action="store_true",
                   help="train again the runs whose checkpoints are missing (run folders are not committed; the "
                        "same spec, settings and seed give the same run), and report how their accuracy compares "
                        "with the recorded one")
    e.add_argument("--jobs", type=positive_int, default=None,
                   help="with --retrain: runs trained in parallel processes, one torch thread each (default 1)")
    e.add_argument("--report-only", action="store_true",
                   help="write report.md again from the results.json in --out, computing nothing")
    e.set_defaults(func=run_cam_experiment)


FASHION_MNIST_ONLY = (("--source", "source"), ("--runs", "runs"), ("--budget", "budget"), ("--retrain", "retrain"),
                      ("--jobs", "jobs"))


def _given(args: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> list[str]:
    return [flag for flag, name in flags if getattr(args, name) not in (None, False)]


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that would do nothing in this call are refused, one line naming them (never silently ignored).  With
    --report-only the command that computed the maps may be given again as it was."""
    from effnet.errors import EffnetError

    if args.part == "photos" and (unused := _given(args, FASHION_MNIST_ONLY)):
        raise EffnetError(f"{flags_apply_only(unused)} to the Fashion-MNIST part (--part fashion-mnist or all), not "
                          f"--part photos; drop {it_or_them(unused)} or change --part")
    if args.jobs is not None and not args.retrain:
        raise EffnetError(f"{flags_apply_only(['--jobs'])} to --retrain (the runs trained again in parallel); add "
                          "--retrain or drop it")


def run_cam_experiment(args: argparse.Namespace) -> int:
    from effnet.experiments.cam import PARTS, SOURCE, Options, run, summary_rows, write_report

    _check_flags(args)
    part = args.part or "all"
    experiments_dir = Path("docs/experiments")
    if args.report_only:
        out = Path(args.out or experiments_dir / "cam")
        write_report(out)
        print(f"report: {out / 'report.md'}")
        return 0
    options = Options(out=Path(args.out or experiments_dir / "cam"),
                      source=Path(args.source or experiments_dir / SOURCE),
                      runs_dir=Path(args.runs or "runs/experiments"), quick=args.quick, method=args.method or "gradcam",
                      layer=args.layer, budget=args.budget, retrain=args.retrain, jobs=args.jobs or 1)
    command = "effnet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else \
        "effnet experiments cam"
    results = run(options, PARTS if part == "all" else (part,), command=command)
    fashion = results.get("fashion_mnist") if part != "photos" else None
    if fashion:
        print()
        print(format_table(["method", "res", "on object (%)", "object area (%)", "seeds"],
                           [(method, res, share, area, n) for method, res, share, area, _, n in summary_rows(fashion)],
                           title=f"mass of the maps on the object, models at {fashion['budget']:g}x MACs",
                           right=("res", "on object (%)", "object area (%)")))
    print(f"\nresults: {options.out / 'results.json'}\nreport:  {options.out / 'report.md'}")
    return 0


__all__ = ["register", "run_cam_experiment"]
