"""An architecture search's trials as rows, the accuracy–MACs Pareto front, the best-reward spec and a plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from effnet.search.leases import trial_counts


@dataclass(frozen=True)
class ArchitectureRow:
    """One completed trial: its point (the Optuna parameters), both objectives and the reward."""

    trial: int
    point: dict[str, Any]
    architecture: str
    top1: float
    macs: int
    params: int
    reward: float
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "top1": self.top1, "macs": self.macs, "params": self.params,
                "reward": self.reward, "wall_s": self.wall_s, "architecture": self.architecture,
                "point": self.point}


def architecture_rows(study: optuna.Study) -> list[ArchitectureRow]:
    """Completed trials, best reward first."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        rows.append(ArchitectureRow(t.number, dict(t.params), str(a.get("architecture", "")), float(a["top1"]),
                                    int(a["macs"]), int(a.get("params", 0)), float(t.value),
                                    float(a.get("trial_wall_s", 0.0))))
    return sorted(rows, key=lambda r: (-r.reward, r.macs, r.trial))


def pareto_front(rows: list[ArchitectureRow]) -> list[ArchitectureRow]:
    """The rows no other row beats on both objectives (higher top-1 and fewer MACs, one of them strictly),
    cheapest first; of equal (top-1, MACs) pairs only the first trial is kept."""
    front, seen = [], set()
    for r in sorted(rows, key=lambda r: (r.macs, -r.top1, r.trial)):
        if (r.macs, r.top1) in seen:
            continue
        dominated = any(o.top1 >= r.top1 and o.macs <= r.macs and (o.top1 > r.top1 or o.macs < r.macs)
                        for o in rows)
        if not dominated:
            front.append(r)
            seen.add((r.macs, r.top1))
    return front


TABLE_HEADERS = ["trial", "MMACs", "x T", "top-1 %", "reward", "params (M)", "wall s", "architecture (per stage)"]
TABLE_FORMATS = {"trial": "d", "MMACs": ".2f", "x T": ".2f", "top-1 %": ".2f", "reward": ".4f", "params (M)": ".3f",
                 "wall s": ".0f"}


def table_rows(rows: list[ArchitectureRow], target_macs: float) -> list[tuple]:
    """One row of values per trial, in the order of `TABLE_HEADERS` (printed with `TABLE_FORMATS`)."""
    return [(r.trial, r.macs / 1e6, r.macs / target_macs, r.top1, r.reward, r.params / 1e6, r.wall_s, r.architecture)
            for r in rows]


def plot_architectures(rows: list[ArchitectureRow], path: str | Path, *, title: str, target_macs: float) -> Path:
    """Top-1 against MACs for every completed trial, the Pareto front joined and highlighted, the best reward
    starred and the target T marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    front = pareto_front(rows)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter([r.macs / 1e6 for r in rows], [r.top1 for r in rows], s=28, c="0.6", edgecolors="k", linewidths=0.3,
               label=f"all trials ({len(rows)})")
    ax.plot([r.macs / 1e6 for r in front], [r.top1 for r in front], "-o", c="tab:blue", ms=7, zorder=3,
            label=f"Pareto front ({len(front)})")
    if rows:
        best = rows[0]
        ax.scatter([best.macs / 1e6], [best.top1], marker="*", s=320, c="red", edgecolors="k", zorder=4,
                   label=f"best reward: trial {best.trial} ({best.reward:.4f})")
    ax.axvline(target_macs / 1e6, ls="--", c="0.4", lw=1, label=f"target T = {target_macs / 1e6:g} MMACs")
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("validation top-1 % (held out from the training set)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["ArchitectureRow", "TABLE_FORMATS", "TABLE_HEADERS", "architecture_rows", "pareto_front",
           "plot_architectures", "table_rows", "trial_counts"]
