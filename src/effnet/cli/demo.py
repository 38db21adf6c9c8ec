"""`effnet demo` (what `make demo` runs): the paper's tables, computed here, and the workflows on real data.

Sections run in order; each is a function printing to stdout.  Later workflows append their own section.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from effnet.cli._args import int_list
from effnet.cli.experiments import demo_section as section_table3
from effnet.cli.predict import demo_section as section_photos
from effnet.cli.train import demo_section as section_finetune
from effnet.experiments.family import COMPOUND_NOTE, compound_rows, model_rows
from effnet.report import format_table

B0_TO_B7 = [f"efficientnet_b{i}" for i in range(8)]


def section_family() -> None:
    rows = [
        (r.name, r.resolution, r.params / 1e6, r.paper_params_m, r.macs / 1e9, r.paper_macs_b, r.macs_vs_paper)
        for r in model_rows(B0_TO_B7)
    ]
    print(format_table(["model", "res", "params (M)", "paper (M)", "GMACs", "paper GFLOPs", "diff"], rows,
                       title="EfficientNet B0-B7 beside the paper's Table 2 (paper 'FLOPs' are multiply-adds)"))


def section_compound() -> None:
    rows = [
        (r.phi, r.depth, r.width, r.resolution, r.params / 1e6, r.macs / 1e9, r.ratio, r.ideal, r.target)
        for r in compound_rows()
    ]
    print(format_table(
        ["phi", "depth", "width", "res", "params (M)", "GMACs", "MACs/B0", "d*w^2*r^2", "2^phi"], rows,
        title="Compound scaling of B0 (Eq. 3, alpha=1.2 beta=1.1 gamma=1.15): measured MACs ratio vs 2^phi",
    ))
    print(COMPOUND_NOTE)


SECTIONS: list[tuple[str, Callable[[], None]]] = [
    ("The EfficientNet family", section_family),
    ("Compound scaling", section_compound),
    ("Pretrained EfficientNet-Lite0 on real photos", section_photos),
    ("Fine-tuning Lite0 on Fashion-MNIST", section_finetune),
    ("Scaling any ConvNet: Table 3 and the budget solver", section_table3),
]


def _section_numbers(text: str) -> set[int]:
    chosen = set(int_list(text, "section numbers"))
    outside = sorted(n for n in chosen if not 1 <= n <= len(SECTIONS))
    if outside:
        raise argparse.ArgumentTypeError(f"no section {outside}: the demo has sections 1-{len(SECTIONS)}")
    return chosen


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo (tables from the paper, workflows on real data)")
    p.add_argument("--only", type=_section_numbers, default=None,
                   help=f"comma-separated section numbers to run, 1-{len(SECTIONS)}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for i, (title, section) in enumerate(SECTIONS, 1):
        if args.only and i not in args.only:
            continue
        start = time.perf_counter()
        print(f"\n=== {i}. {title} ===\n", flush=True)
        section()
        print(f"\n({time.perf_counter() - start:.1f}s)", flush=True)
    return 0
