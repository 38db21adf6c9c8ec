"""A finished (or partial) coefficient search as a table, the best (α, β, γ), a plot and the `effnet scale` command."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from effnet.search.grid import TARGET_PRODUCT, Coefficients
from effnet.search.leases import trial_counts
from effnet.search.study import PARAM
from effnet.stats import Interval, interval, paired_difference


@dataclass(frozen=True)
class SearchRow:
    """One grid point: its score (top-1 on the held-out images; with several seeds, their mean), what it costs,
    and with several seeds the score per seed, its 95% half-width and its paired difference with the best point."""

    trial: int
    coefficients: Coefficients
    top1: float
    ema_top1: float | None
    macs: int
    params: int
    resolution: int
    wall_s: float
    by_seed: tuple[tuple[int, float], ...] = ()
    half_width: float | None = None
    vs_best: Interval | None = None

    @property
    def seeds(self) -> int:
        return max(1, len(self.by_seed))

    def to_dict(self) -> dict[str, Any]:
        c = self.coefficients
        out = {"trial": self.trial, "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "product": c.product,
               "top1": self.top1, "ema_top1": self.ema_top1, "macs": self.macs, "params": self.params,
               "resolution": self.resolution, "wall_s": self.wall_s}
        if self.by_seed:
            out.update({"seeds": self.seeds, "top1_by_seed": {str(k): v for k, v in self.by_seed},
                        "top1_half_width": self.half_width,
                        "vs_best": None if self.vs_best is None else self.vs_best.to_dict()})
        return out


def search_rows(study: optuna.Study) -> list[SearchRow]:
    """Completed trials, best first (accuracy, then fewer MACs)."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        rows.append(SearchRow(t.number, Coefficients.from_label(t.params[PARAM]), float(t.value),
                              a.get("ema_top1"), int(a.get("macs", 0)), int(a.get("params", 0)),
                              int(a.get("resolution", 0)), float(a.get("trial_wall_s", 0.0))))
    return sorted(rows, key=lambda r: (-r.top1, r.macs, r.trial))


def combine(rows_by_seed: dict[int, list[SearchRow]], best: Coefficients | None = None) -> list[SearchRow]:
    """The rows of several seeds' studies as one row per grid point: mean score and 95% interval over its seeds,
    and its paired difference with the best point over the seeds both have; best first.  The best is `best` when
    given (a point chosen by another rule, e.g. on the seeds the best points share), else the highest mean."""
    points: dict[Coefficients, dict[int, SearchRow]] = {}
    for seed, rows in sorted(rows_by_seed.items()):
        for r in rows:
            points.setdefault(r.coefficients, {})[seed] = r
    merged = []
    for by_seed in points.values():
        first = next(iter(by_seed.values()))
        score = interval([r.top1 for r in by_seed.values()])
        emas = [r.ema_top1 for r in by_seed.values() if r.ema_top1 is not None]
        merged.append(replace(first, top1=score.mean, ema_top1=sum(emas) / len(emas) if emas else None,
                              wall_s=sum(r.wall_s for r in by_seed.values()),
                              by_seed=tuple((s, r.top1) for s, r in by_seed.items()),
                              half_width=None if score.n < 2 else score.half_width))
    merged.sort(key=lambda r: (r.coefficients != best, -r.top1, r.macs, r.trial))
    if not merged:
        return merged
    top = dict(merged[0].by_seed)
    return [replace(r, vs_best=None if r is merged[0] else paired_difference(dict(r.by_seed), top)) for r in merged]


def table_rows(rows: list[SearchRow], base_macs: int | None = None) -> list[tuple]:
    """One row of values per trial, in the order of `TABLE_HEADERS` (printed with `TABLE_FORMATS`); with several
    seeds, `SEEDED_HEADERS` (`seeded=True`)."""
    out = []
    for r in rows:
        row = (r.coefficients.alpha, r.coefficients.beta, r.coefficients.gamma, r.coefficients.product, r.resolution,
               r.params / 1e6, r.macs / 1e6, r.macs / base_macs if base_macs else None, r.top1)
        if r.by_seed:
            diff = "best" if r.vs_best is None else ("-" if r.vs_best.n < 2 else
                                                     f"{r.vs_best.mean:+.2f} [{r.vs_best.low:+.2f}, "
                                                     f"{r.vs_best.high:+.2f}]")
            row += ("-" if r.half_width is None else f"{r.half_width:.2f}", r.seeds, diff)
        out.append(row + (r.ema_top1, r.wall_s, r.trial))
    return out


TABLE_HEADERS = ["alpha", "beta", "gamma", "a*b^2*g^2", "res", "params (M)", "MMACs", "x base", "top-1 %",
                 "EMA top-1 %", "wall s", "trial"]
SEEDED_HEADERS = [*TABLE_HEADERS[:9], "± 95%", "seeds", "vs best (paired, 95% CI)", *TABLE_HEADERS[9:]]
TABLE_FORMATS = {"alpha": ".2f", "beta": ".2f", "gamma": ".2f", "a*b^2*g^2": ".3f", "res": "d", "params (M)": ".3f",
                 "MMACs": ".2f", "x base": ".2f", "top-1 %": ".2f", "EMA top-1 %": ".2f", "wall s": ".0f",
                 "trial": "d"}


def scale_command(base_ref: str, best: Coefficients, phi: float = 1.0) -> str:
    return f"effnet scale {base_ref} --phi {phi:g} --alpha {best.alpha:g} --beta {best.beta:g} --gamma {best.gamma:g}"


def plot_search(rows: list[SearchRow], path: str | Path, *, title: str, base_macs: int | None = None) -> Path:
    """Left: accuracy vs MACs of every φ=1 model (best marked).  Right: the constraint surface α·β²·γ² = 2 in
    (α, β, γ) space with every trained grid point on it, coloured by accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    fig = plt.figure(figsize=(13, 5.5))
    ax = fig.add_subplot(1, 2, 1)
    acc = np.array([r.top1 for r in rows])
    macs = np.array([r.macs / 1e6 for r in rows])
    sc = ax.scatter(macs, acc, c=acc, cmap="viridis", s=40, edgecolors="k", linewidths=0.3, zorder=2)
    if any(r.half_width is not None for r in rows):  # several seeds: the mean's 95% interval
        ax.errorbar(macs, acc, yerr=[r.half_width or 0.0 for r in rows], fmt="none", ecolor="grey", elinewidth=0.8,
                    capsize=2, zorder=1, label=f"95% CI over seeds ({min(r.seeds for r in rows)}-"
                                               f"{max(r.seeds for r in rows)} per point)")
    best = rows[0]
    ax.scatter([best.macs / 1e6], [best.top1], marker="*", s=300, c="red", edgecolors="k", zorder=3,
               label=f"best: α={best.coefficients.alpha:g} β={best.coefficients.beta:g} γ={best.coefficients.gamma:g}")
    if base_macs:
        ax.axvline(base_macs / 1e6, color="grey", ls=":", lw=1, label=f"baseline ({base_macs / 1e6:.2f} MMACs)")
        ax.axvline(TARGET_PRODUCT * base_macs / 1e6, color="grey", ls="--", lw=1, label="2 x baseline")
    ax.set_xlabel("MMACs of the φ=1 model")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy vs MACs")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)

    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    b, g = np.meshgrid(np.linspace(1.0, 1.45, 30), np.linspace(1.0, 1.45, 30))
    a = TARGET_PRODUCT / (b**2 * g**2)
    a[a < 1.0] = np.nan
    ax3.plot_surface(b, g, a, alpha=0.18, color="tab:blue", linewidth=0)
    bs = [r.coefficients.beta for r in rows]
    gs = [r.coefficients.gamma for r in rows]
    as_ = [r.coefficients.alpha for r in rows]
    ax3.scatter(bs, gs, as_, c=acc, cmap="viridis", s=35, edgecolors="k", linewidths=0.3, depthshade=False)
    ax3.scatter([best.coefficients.beta], [best.coefficients.gamma], [best.coefficients.alpha], marker="*", s=250,
                c="red", depthshade=False)
    ax3.set_xlabel("β (width)")
    ax3.set_ylabel("γ (resolution)")
    ax3.set_zlabel("α (depth)")
    ax3.set_title("grid on the constraint surface α·β²·γ² = 2")
    fig.colorbar(sc, ax=[ax, ax3], shrink=0.8, label="top-1 %")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["SEEDED_HEADERS", "SearchRow", "TABLE_FORMATS", "TABLE_HEADERS", "combine", "plot_search",
           "scale_command", "search_rows", "table_rows", "trial_counts"]
