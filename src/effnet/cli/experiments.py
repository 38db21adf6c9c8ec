"""`effnet experiments NAME`: the paper's experiments, computed (Table 3: scaling MobileNets and ResNet-50)."""

from __future__ import annotations

import argparse
import json
import textwrap

from effnet.report import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiments", help="the paper's experiments, computed")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    t3 = experiments.add_parser("table3", help="Table 3: MobileNetV1/V2 and ResNet-50 scaled by d, w, r, compound")
    t3.add_argument("--format", choices=("table", "json"), default="table")
    t3.set_defaults(func=run_table3)


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
        rows.append((c.model, c.setting, c.resolution, f"{c.params / 1e6:10.2f}", f"{c.macs / 1e9:6.3f}",
                     f"{'-':>9}" if c.paper_gmacs is None else f"{c.paper_gmacs:9.1f}",
                     "     -" if diff is None else f"{100 * diff:+6.1f}%", mark))
    print(format_table(["model", "scaling", "res", "params (M)", "GMACs", "paper (B)", "diff", "note"], rows,
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
