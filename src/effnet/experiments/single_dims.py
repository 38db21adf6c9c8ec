"""Figure 3 (Observation 1): the baseline scaled by width, depth or resolution alone, at 2×…8× its MACs; the
accuracy gained at each step, and whether the gains shrink as a single dimension grows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments.plan import budget_plan
from effnet.experiments.runner import Run
from effnet.stats import interval, paired_difference

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
    base_value = {"depth": base_row.get("blocks", "-"), "width": "1.00", "resolution": base_row.get("resolution", "-")}
    for m in design.SINGLE_DIMENSIONS:
        out_rows = [(f"{base_value[m.name]} (baseline)", "1.00x", "-", tables.pct(base), "-", base.n)]
        steps, ratio = [], 1.0  # (labels, previous step's labels, MACs ratio over the previous step's)
        for c, (here, previous) in zip(_steps(results, m.name), _step_pairs(results, m.name)):
            test = tables.summary(rows, **here)
            gain = tables.compare(rows, here, previous)
            steps.append((here, previous, c["ratio"] / ratio, f"{ratio:.2f}x to {c['ratio']:.2f}x"))
            ratio = c["ratio"]
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
        md.append(f"- {_saturation(m.name, rows, steps)}")
        md.append("")
        text.append(f"{m.name}: " + ", ".join(f"{r[0]} {r[1]} {r[3]}" for r in out_rows))
    return "\n".join(md), "\n".join(text)


def _saturation(method: str, rows: list[dict[str, Any]], steps: list[tuple[dict, dict, float, str]]) -> str:
    """Whether the gains shrink: the first and the last finished step's paired test gain per doubling of MACs (the
    paper's log-scale axis, with each step's measured MACs ratio), and their paired difference against the noise."""
    per_doubling = []
    for here, previous, ratio, span in steps:
        a, b = tables.by_seed(rows, **here), tables.by_seed(rows, **previous)
        gains = {s: (a[s] - b[s]) / math.log2(ratio) for s in sorted(set(a) & set(b))} if ratio > 1 else {}
        if gains:
            per_doubling.append((gains, span))
    if len(per_doubling) < 2:
        return f"{method}: not enough finished steps to judge saturation."
    (first, first_span), (last, last_span) = per_doubling[0], per_doubling[-1]
    said = (f"{method}: {interval(list(first.values())).mean:+.2f} pp per doubling of MACs from {first_span}, "
            f"{interval(list(last.values())).mean:+.2f} pp per doubling from {last_span}")
    change = paired_difference(last, first)
    if change.n < tables.MIN_SEEDS:
        return f"{said}: fewer than {tables.MIN_SEEDS} paired seeds, no verdict on saturation."
    ci = f"{change.mean:+.2f} pp per doubling, {tables.ci_text(change)}"
    if not change.excludes_zero():
        return f"{said}: the change ({ci}) is within the noise, so neither saturation nor growth is shown."
    return f"{said}: the gains {'shrink' if change.mean < 0 else 'grow'} ({ci}), by more than the noise."


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
