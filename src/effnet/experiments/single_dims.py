"""Figure 3 (Observation 1): the baseline scaled by width, depth or resolution alone, at 2×…8× its MACs; the
accuracy gained at each step, and whether the gains shrink as a single dimension grows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments.plan import budget_plan
from effnet.experiments.runner import Run

NAME = "single-dims"
TARGETS = (2.0, 3.0, 4.0, 6.0, 8.0)
QUICK_TARGETS = (2.0,)
_DIMENSION_OF = {"depth": "blocks", "width": "width_eff", "resolution": "resolution"}


def plan(out: Path, quick: bool, seeds: int, log=print) -> tuple[list[Run], dict[str, Any]]:
    return budget_plan(out, design.SINGLE_DIMENSIONS, QUICK_TARGETS if quick else TARGETS, quick, seeds, log=log)


def _steps(results: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [c for c in results["candidates"] if c["method"] == method and c["spec"] is not None]


def _step_pairs(results: dict[str, Any], method: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(step, previous step) label pairs along one dimension, the first step's previous being the baseline."""
    points = [{"method": "baseline", "budget": 1.0}]
    points += [{"method": method, "budget": c["budget"]} for c in _steps(results, method)]
    return list(zip(points[1:], points[:-1]))


def comparisons(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The report's paired comparisons: each step of each dimension against the step before it."""
    return [pair for m in design.SINGLE_DIMENSIONS for pair in _step_pairs(results, m.name)]


def report(results: dict[str, Any]) -> tuple[str, str]:
    rows = results["runs"]
    md = ["The baseline sees Fashion-MNIST at 18 px, downsampled from the native 28 px, so resolution scaling up to "
          "28 px adds real detail; inputs above 28 px (marked `*`) are upsampled and add none.", ""]
    text = []
    base = tables.summary(rows, method="baseline")
    base_row = tables.first(rows, method="baseline") or {}
    base_value = {"depth": base_row.get("blocks", "?"), "width": "1.00", "resolution": base_row.get("resolution", "?")}
    for m in design.SINGLE_DIMENSIONS:
        out_rows = [(f"{base_value[m.name]} (baseline)", "1.00x", "-", tables.pct(base), "-", base.n)]
        gains = []
        for c, (here, previous) in zip(_steps(results, m.name), _step_pairs(results, m.name)):
            test = tables.summary(rows, **here)
            gain = tables.compare(rows, here, previous)
            gains.append((c["budget"], gain))
            value = c[_DIMENSION_OF[m.name]]
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            out_rows.append((f"{shown}{'*' if m.name == 'resolution' and c['upsampled'] else ''}",
                             f"{c['ratio']:.2f}x", f"{c['phi']:.3f}", tables.pct(test),
                             "-" if gain.n == 0 else tables.pct(gain), test.n))
        label = {"depth": "blocks", "width": "width (head channels / baseline's)", "resolution": "input px"}[m.name]
        md.append(f"### {m.name} only\n")
        md.append(tables.markdown_table([label, "MACs", "phi", "test top-1", "gain over previous step (paired)",
                                         "seeds"], out_rows))
        md.append("")
        md.append(f"- {_saturation(m.name, gains)}")
        md.append("")
        text.append(f"{m.name}: " + ", ".join(f"{r[0]} {r[1]} {r[3]}" for r in out_rows))
    return "\n".join(md), "\n".join(text)


def _saturation(method: str, gains: list[tuple[float, Any]]) -> str:
    """Compare the gain of the first and last steps (per doubling of MACs, as the paper's log-scale plot)."""
    import math

    done = [(b, g) for b, g in gains if g.n > 0]
    if len(done) < 2:
        return f"{method}: not enough finished steps to judge saturation."
    first_budget, first = done[0]
    prev_budget = done[-2][0]
    last_budget, last = done[-1]
    per_first = first.mean / math.log2(first_budget)
    per_last = last.mean / math.log2(last_budget / prev_budget)
    trend = "shrink" if per_last < per_first else "do not shrink"
    return (f"{method}: {per_first:+.2f} pp per doubling of MACs from 1x to {first_budget:g}x, {per_last:+.2f} pp "
            f"per doubling from {prev_budget:g}x to {last_budget:g}x: the gains {trend}"
            + (" (the last step's interval includes zero)." if last.n > 1 and not last.excludes_zero() else "."))


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows = results["runs"]
    base_row = tables.first(rows, method="baseline")
    base = tables.summary(rows, method="baseline")
    curves: dict[str, list] = {}
    for m in design.SINGLE_DIMENSIONS:
        points = [(base_row["macs"] / 1e6, base, False)] if base_row else []
        for c in _steps(results, m.name):
            points.append((c["macs"] / 1e6, tables.summary(rows, method=m.name, budget=c["budget"]),
                           bool(c.get("upsampled"))))
        curves[f"{m.name} only"] = points
    return [tables.plot_curves(out / "single_dims.png", curves,
                               title="Scaling one dimension (Fashion-MNIST, mean and 95% CI over seeds; hollow: "
                                     "input upsampled above 28 px)", xlabel="MMACs per image")]


__all__ = ["NAME", "TARGETS", "comparisons", "plan", "plots", "report"]
