"""Figure 8 / Table 7: the baseline scaled to matched MACs budgets by depth, width or resolution alone and by
compound scaling (the paper's α=1.2, β=1.1, γ=1.15, and the α, β, γ the grid search found for this baseline),
every model trained with the same recipe and seeds; per budget, the paired difference of compound against the
best single dimension (chosen on validation accuracy, reported on test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments.plan import budget_plan
from effnet.experiments.runner import Run
from effnet.report import format_table

NAME = "compound-vs-single"
BUDGETS = (2.0, 3.0, 8.0)
QUICK_BUDGETS = (2.0,)
GRID_RESULT = Path("coefficients") / "search.json"  # beside this experiment's folder: docs/experiments/coefficients


def methods(out: Path) -> list[design.Method]:
    found = design.grid_compound(out.parent / GRID_RESULT)
    return [*design.SINGLE_DIMENSIONS, design.PAPER_COMPOUND] + ([found] if found else [])


def plan(out: Path, quick: bool, seeds: int, log=print) -> tuple[list[Run], dict[str, Any]]:
    return budget_plan(out, methods(out), QUICK_BUDGETS if quick else BUDGETS, quick, seeds, log=log)


def _method_names(results: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for c in results["candidates"]:
        if c["method"] not in seen:
            seen.append(c["method"])
    return seen


def report(results: dict[str, Any]) -> tuple[str, str]:
    """(report.md body, the terminal table), both from results.json alone."""
    rows = results["runs"]
    names = _method_names(results)
    md, text = [], []
    base = tables.summary(rows, method="baseline")
    base_val = tables.summary(rows, "val_top1", method="baseline")
    base_fit = tables.summary(rows, "train_acc_end", method="baseline")
    md.append(f"Baseline ({results['baseline']['name']}, 1.00x): test top-1 {tables.pct(base)} "
              f"(val {tables.pct(base_val)}, train acc {tables.pct_of(base_fit, base.n)}), {base.n} seed(s).\n")
    for budget in results["budgets"]:
        out_rows = []
        for name in names:
            c = next(c for c in results["candidates"] if c["method"] == name and c["budget"] == budget)
            test = tables.summary(rows, method=name, budget=budget)
            val = tables.summary(rows, "val_top1", method=name, budget=budget)
            fit = tables.summary(rows, "train_acc_end", method=name, budget=budget)
            if c["spec"] is None:
                out_rows.append((name, "-", "-", "-", "-", _unreachable(c), "-", "-", "-", 0))
                continue
            out_rows.append((name, f"{c['phi']:.3f}", c["blocks"], f"{c['width_eff']:.2f}",
                             f"{c['resolution']}{'*' if c['upsampled'] else ''}", f"{c['ratio']:.2f}x",
                             tables.pct_of(fit, test.n), tables.pct(val), tables.pct(test), test.n))
        headers = ["method", "phi", "blocks", "width", "res", "MACs", "train acc (last 10% of steps)", "val top-1",
                   "test top-1", "seeds"]
        md.append(f"### Budget {budget:g}x the baseline's MACs\n")
        md.append(tables.markdown_table(headers, out_rows))
        md.append("")
        for sentence in _verdicts(rows, names, budget):
            md.append(f"- {sentence}")
        md.append("")
        reached = [r[1] != "-" for r in out_rows]  # an unreachable budget's MACs cell says why: a note here
        text.append(format_table(["method", "MACs", "res", "blocks", "val top-1", "test top-1", "seeds", "note"],
                                 [(r[0], r[5] if ok else "-", r[4], r[2], r[7], r[8], r[9], "" if ok else r[5])
                                  for r, ok in zip(out_rows, reached)], title=f"budget {budget:g}x",
                                 right=("MACs", "res", "blocks", "val top-1", "test top-1")))
    md.append("`*`: input above Fashion-MNIST's native 28 px (upsampled). Intervals: mean ± 95% t-interval over "
              "seeds; differences are paired by seed (same initial weights, data order and augmentation).")
    return "\n".join(md), "\n".join(text)


def _unreachable(c: dict[str, Any]) -> str:
    """'no model within 5%', with the nearest MACs the method reaches on either side when they are known."""
    sides = [f"{c[k]:.2f}x" for k in ("nearest_below", "nearest_above") if c.get(k) is not None]
    return "no model within 5%" + (f" (nearest: {' and '.join(sides)})" if sides else "")


def comparisons(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The report's paired comparisons: at each budget, each compound method against the best single dimension."""
    return [pair for budget in results["budgets"] for pair in _pairs(results["runs"], _method_names(results), budget)]


def _pairs(rows, names: list[str], budget: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(compound, best single dimension) label pairs at `budget`, the best chosen by mean validation accuracy."""
    best, _ = tables.best_on_validation(rows, [m.name for m in design.SINGLE_DIMENSIONS], budget=budget)
    if best is None:
        return []
    return [({"method": name, "budget": budget}, {"method": best, "budget": budget}) for name in names
            if name.startswith("compound")]


def _verdicts(rows, names: list[str], budget: float) -> list[str]:
    out = []
    for a, b in _pairs(rows, names, budget):
        diff = tables.compare(rows, a, b)
        if diff.n:
            out.append(tables.verdict(diff, a["method"], f"{b['method']}-only (best single dimension on validation)"))
    return out


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows = results["runs"]
    base = tables.summary(rows, method="baseline")
    base_row = tables.first(rows, method="baseline")
    curves: dict[str, list] = {}
    for name in _method_names(results):
        points = []
        if base_row is not None:
            points.append((base_row["macs"] / 1e6, base, False))
        for c in results["candidates"]:
            if c["method"] == name and c["spec"] is not None:
                points.append((c["macs"] / 1e6, tables.summary(rows, method=name, budget=c["budget"]),
                               bool(c.get("upsampled"))))
        curves[name] = points
    path = tables.plot_curves(out / "compound_vs_single.png", curves,
                              title="Compound vs single-dimension scaling at matched MACs (Fashion-MNIST, "
                                    f"{tables.seeds_of(curves)}, 95% CI; hollow: upsampled input)",
                              xlabel="MMACs per image")
    return [path]


__all__ = ["BUDGETS", "NAME", "comparisons", "plan", "plots", "report"]
