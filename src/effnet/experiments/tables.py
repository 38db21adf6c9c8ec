"""Tables and plots of experiment results, computed from results.json rows only (one row per finished run)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from effnet import report
from effnet.stats import Interval, interval, paired_difference


def by_seed(rows: Sequence[dict[str, Any]], metric: str = "test_top1", **match: Any) -> dict[int, float]:
    """{seed: metric} of the rows whose labels equal `match`."""
    return {r["seed"]: float(r[metric]) for r in rows if all(r.get(k) == v for k, v in match.items())
            and r.get(metric) is not None}


def summary(rows: Sequence[dict[str, Any]], metric: str = "test_top1", **match: Any) -> Interval:
    return interval(list(by_seed(rows, metric, **match).values()))


def first(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def best_on_validation(rows: Sequence[dict[str, Any]], names: Sequence[str], **where: Any) -> tuple[str | None, str]:
    """The method of `names` with the highest mean validation top-1 at `where`, and a note for the report.  The
    means are taken over the seeds every method with runs shares, so that a method's extra seeds (or missing ones,
    while a plan is under way) neither favour nor penalise it; the note says when the seed sets differ."""
    seeds = {m: by_seed(rows, "val_top1", method=m, **where) for m in names}
    seeds = {m: s for m, s in seeds.items() if s}
    if not seeds:
        return None, ""
    shared = set.intersection(*(set(s) for s in seeds.values()))
    if not shared:
        best = max(seeds, key=lambda m: sum(seeds[m].values()) / len(seeds[m]))
        return best, " (provisional: the methods share no seed yet, so their means cover different seeds)"
    best = max(seeds, key=lambda m: sum(seeds[m][s] for s in shared))
    same = all(set(s) == shared for s in seeds.values())
    listed = ", ".join(str(seed) for seed in sorted(shared))
    return best, "" if same else f" (compared on the seed{'s' if len(shared) > 1 else ''} every method has: {listed})"


PAIRED_NOTE = ("`*`: input above Fashion-MNIST's native 28 px (upsampled). Intervals: mean ± 95% t-interval over "
               "seeds; differences are paired by seed (same initial weights, data order and augmentation) and "
               "\"larger than the noise\" when their 95% interval excludes zero.\n")
"""The closing note of a report whose tables pair runs by seed."""


def discussion(results: dict[str, Any], waiting_for: str) -> list[str]:
    """A report's closing "Discussion" section: the paragraphs results.json holds under "discussion" (written by
    hand from the numbers, and kept when the results are written again), or a note saying it is `waiting_for`
    them (a full run, a quiet machine…) and how to add it."""
    paragraphs = results.get("discussion")
    if paragraphs:
        return ["## Discussion", "", *(line for paragraph in paragraphs for line in (paragraph, ""))]
    return ["## Discussion", "", f"> **Discussion: not written yet.** It is written from the numbers of {waiting_for}: "
            "add it to results.json as `\"discussion\"` (a list of paragraphs) and rerun with `--report-only`.", ""]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """`effnet.report.markdown_table` of cells as they are written (`str`): a report's numbers are formatted by the
    experiment that states them, so that report.md files written before keep their exact text."""
    return report.markdown_table(headers, [[str(c) for c in row] for row in rows])


def pct(i: Interval) -> str:
    """A mean ± 95% half-width in percent points, "-" when nothing finished."""
    return "-" if i.n == 0 else i.text(2)


def pct_of(i: Interval, seeds: int) -> str:
    """`pct(i)` for a measure that not every one of a point's `seeds` runs recorded (runs trained before it was
    kept): "(k of n seeds)" follows, so a mean over a few of them is not read as the point's."""
    return pct(i) + (f" ({i.n} of {seeds} seeds)" if 0 < i.n < seeds else "")


def compare(rows: Sequence[dict[str, Any]], a: dict[str, Any], b: dict[str, Any],
            metric: str = "test_top1") -> Interval:
    """Paired (same seed) difference a − b of `metric` between two label sets."""
    return paired_difference(by_seed(rows, metric, **a), by_seed(rows, metric, **b))


MIN_SEEDS = 3
"""Paired seeds a comparison needs before a report states it as a result."""


def verdict(diff: Interval, what: str, against: str) -> str:
    """One sentence: is `what` better than `against`, and is the difference larger than the seed noise?  Fewer than
    `MIN_SEEDS` paired seeds give the numbers but no verdict."""
    if diff.n == 0:
        return f"{what} vs {against}: no paired seeds (nothing to compare yet)."
    if diff.n == 1:
        return f"{what} vs {against}: {diff.mean:+.2f} pp on one seed (no interval; not a result)."
    ci = ci_text(diff)
    if diff.n < MIN_SEEDS:
        return f"{what} vs {against}: {diff.mean:+.2f} pp ({ci}): fewer than {MIN_SEEDS} seeds, not a result yet."
    if diff.excludes_zero():
        sign = "better" if diff.mean > 0 else "worse"
        return f"{what} is {sign} than {against} by {abs(diff.mean):.2f} pp ({ci}): larger than the noise."
    return f"{what} vs {against}: {diff.mean:+.2f} pp ({ci}): within the noise, no difference shown."


def ci_text(diff: Interval) -> str:
    """A paired difference's 95% interval and seed count, as every verdict of a report states it."""
    return f"95% CI {_bound(diff.low)} to {_bound(diff.high)}, {diff.n} paired seeds"


def _bound(x: float) -> str:
    """An interval bound in points: 2 decimals, more when those would round it to zero (the verdict must read true)."""
    if x == 0 or abs(x) >= 0.005:
        return f"{x:+.2f}"
    return f"{x:+.{-math.floor(math.log10(abs(x)))}f}"


ZOOM_SPREAD = 8.0
"""When some curve's mean lies more than this many points below the best one, a second panel shows the top range
(the best mean − ZOOM_SPREAD and up), where the curves that work are told apart."""


def seeds_of(curves: dict[str, list[tuple[float, Interval, bool]]]) -> str:
    """"3 seeds" or "3-5 seeds": how many seeds the plotted points have (more where a comparison needed them)."""
    counts = sorted({p[1].n for points in curves.values() for p in points if p[1].n > 0})
    if not counts:
        return "no seeds"
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{span} seed{'' if counts == [1] else 's'}"


def plot_curves(path: Path, curves: dict[str, list[tuple[float, Interval, bool]]], *, title: str, xlabel: str,
                ylabel: str = "test top-1 (%)", logx: bool = True,
                annotate: Callable[[str, float, Interval], str | None] | None = None,
                integer_x: bool = False) -> Path:
    """One line per curve of (x, interval, hollow?) points with 95% error bars; hollow markers flag points the
    caller marks (e.g. upsampled inputs).  A curve far below the others (a model that failed to train) gets the
    full range in a left panel and the others a zoomed right panel.  `integer_x`: ticks at the points' x values
    only, written as integers (training lengths), rather than a log axis's decades."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    drawn = {name: sorted((p for p in points if p[1].n > 0), key=lambda p: p[0]) for name, points in curves.items()}
    means = [p[1].mean for points in drawn.values() for p in points]
    zoom = bool(means) and min(means) < max(means) - ZOOM_SPREAD
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12 if zoom else 7.5, 5), squeeze=False)
    for ax in axes[0]:
        _draw_curves(ax, drawn, annotate)
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(ScalarFormatter())
            ax.tick_params(axis="x", which="minor", labelsize=7)
        if integer_x:
            ticks = sorted({p[0] for points in drawn.values() for p in points})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    low, high = axes[0][0].get_ylim()
    axes[0][0].set_ylim(max(low, 0.0), min(high, 100.0))
    axes[0][0].legend(fontsize=8)
    if zoom:
        top = max(means)
        axes[0][1].set_ylim(top - ZOOM_SPREAD, top + 3)
        axes[0][1].set_title(f"zoom: {top - ZOOM_SPREAD:.0f}-{top + 3:.0f}%", fontsize=9)
        axes[0][0].set_title("full range", fontsize=9)
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_curves(ax, drawn: dict[str, list[tuple[float, Interval, bool]]],
                 annotate: Callable[[str, float, Interval], str | None] | None) -> None:
    for i, (name, points) in enumerate(drawn.items()):
        if not points:
            continue
        color = f"C{i}"
        xs = [p[0] for p in points]
        ys = [p[1].mean for p in points]
        err = [0.0 if p[1].n < 2 else p[1].half_width for p in points]
        ax.errorbar(xs, ys, yerr=err, color=color, marker="o", ms=5, capsize=3, lw=1.5, label=name)
        hollow = [(x, y) for (x, _, h), y in zip(points, ys) if h]
        if hollow:
            ax.scatter([h[0] for h in hollow], [h[1] for h in hollow], s=60, facecolors="white", edgecolors=color,
                       zorder=3)
        if annotate:
            for x, iv, _ in points:
                text = annotate(name, x, iv)
                if text:
                    ax.annotate(text, (x, iv.mean), textcoords="offset points", xytext=(4, -10), fontsize=7,
                                color=color, annotation_clip=True)


__all__ = ["by_seed", "compare", "first", "markdown_table", "pct", "plot_curves", "summary", "verdict"]
