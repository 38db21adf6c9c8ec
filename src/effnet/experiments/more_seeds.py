"""More seeds where a comparison is within the noise.

An experiment trains every point with its planned seeds (3 by default).  Once all of those runs have finished,
every paired comparison its report states (the module's `comparisons(results)`: pairs of label sets, A against B)
is checked on the **validation** split: where the 95% interval of the paired difference A − B includes zero, the
runs of A and of B get more seeds, up to `target` (`effnet.stats.SEEDS_WITHIN_NOISE`, 5).  The test split plays
no part in the decision.

The decision reads only the planned seeds' records, so every process that plans the experiment (the parent, its
workers, a worker on another machine sharing the storage) adds the same runs, and the decision does not move as
the added runs finish.  An experiment planned in stages (training-length) calls `decide` on each comparison stage
as soon as that stage's planned seeds have finished, so that its added seeds come before the longer stages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from effnet.experiments import tables
from effnet.experiments.runner import Run
from effnet.stats import SEEDS_WITHIN_NOISE

Labels = dict[str, Any]
Comparisons = Callable[[dict[str, Any]], list[tuple[Labels, Labels]]]


@dataclass(frozen=True)
class Decision:
    """What the check added: `runs` (new seeds of the points in a close comparison) and, per comparison, its
    paired validation difference.  `waiting` counts planned runs not finished yet (no decision while any is)."""

    target: int
    seeds: int
    runs: tuple[Run, ...] = ()
    checked: tuple[dict[str, Any], ...] = ()
    waiting: int = 0

    def to_meta(self) -> dict[str, Any]:
        """What results.json keeps of it (`more_seeds`)."""
        return {"target": self.target, "planned_seeds": self.seeds, "waiting_for": self.waiting,
                "added_runs": len(self.runs), "comparisons": list(self.checked)}


def decide(comparisons: Comparisons, runs: Sequence[Run], rows: Sequence[dict[str, Any]], meta: dict[str, Any],
           seeds: int, target: int = SEEDS_WITHIN_NOISE) -> Decision:
    """The runs to add to `runs` (the planned ones, seeds 0..`seeds`−1) given `rows`, the finished runs' records
    with their labels (results.json rows).  Nothing while a planned run is unfinished, or when `target` ≤ `seeds`
    (a paired interval needs two seeds, so one planned seed never adds any)."""
    planned_keys = {r.key for r in runs}
    finished = [row for row in rows if row["key"] in planned_keys and row["seed"] < seeds]
    waiting = len(planned_keys - {row["key"] for row in finished})
    if target <= seeds or seeds < 2:
        return Decision(target, seeds)
    if waiting:
        return Decision(target, seeds, waiting=waiting)
    checked, close = [], []
    for a, b in comparisons({**meta, "runs": finished}):
        diff = tables.compare(finished, a, b, metric="val_top1")
        within = None if diff.n < 2 else not diff.excludes_zero()  # None: no paired seeds (a point out of reach)
        checked.append({"a": a, "b": b, "val_difference": diff.to_dict(), "within_noise": within})
        if within:
            close += [a, b]
    return Decision(target, seeds, tuple(_more(runs, close, seeds, target)), tuple(checked))


def _more(runs: Sequence[Run], points: list[Labels], seeds: int, target: int) -> list[Run]:
    """Seeds `seeds`..`target`−1 of every planned run (one per point, seed 0) whose labels include a point's."""
    added: dict[str, Run] = {}
    for run in runs:
        labels = run.label_dict()
        if run.seed == 0 and any(all(labels.get(k) == v for k, v in p.items()) for p in points):
            for seed in range(seeds, target):
                extra = dataclasses.replace(run, seed=seed)
                added.setdefault(extra.key, extra)
    return list(added.values())


def summary(more: dict[str, Any] | None) -> str | None:
    """One sentence for a report's header, or None when the check added nothing and found nothing close."""
    if not more or more["target"] <= more["planned_seeds"] or more["planned_seeds"] < 2:
        return None
    staged = " (decided stage by stage: each comparison stage, once its planned seeds have finished, is followed " \
             "by a stage of the seeds it adds, before the longer stages)" if more.get("staged") else ""
    if more.get("staged") and not more["comparisons"]:
        return (f"More seeds: every comparison within the noise on validation gets seeds up to {more['target']}"
                f"{staged}; no comparison stage has finished its planned seeds yet.")
    if more["waiting_for"] and not more.get("staged"):
        return (f"More seeds: once the {more['waiting_for']} planned runs still missing have finished, every "
                f"comparison within the noise on validation gets seeds up to {more['target']}.")
    measured = [c for c in more["comparisons"] if _measured(c)]
    close = [c for c in measured if c["within_noise"]]
    empty = len(more["comparisons"]) - len(measured)
    unmeasured = (f" ({empty} more compare{'s' if empty == 1 else ''} nothing: a side without paired runs)"
                  if empty else "")
    if not close:
        which = ("the one comparison of this report with paired runs differs" if len(measured) == 1 else
                 f"all {len(measured)} comparisons of this report with paired runs differ")
        return f"More seeds: none needed; {which} by more than the noise on validation{unmeasured}{staged}."
    return (f"More seeds: {len(close)} of the {len(measured)} comparisons of this report with paired runs were "
            "within the noise on validation (95% interval of the paired difference including zero) after "
            f"{more['planned_seeds']} seeds, so both sides of each get {more['target']} seeds "
            f"({more['added_runs']} runs added; the test split plays no part in this choice){unmeasured}{staged}.")


def _measured(comparison: dict[str, Any]) -> bool:
    """Whether a checked comparison had paired seeds (results.json written before kept False where it had none)."""
    return (comparison["val_difference"].get("n") or 0) >= 2


__all__ = ["Decision", "decide", "summary"]
