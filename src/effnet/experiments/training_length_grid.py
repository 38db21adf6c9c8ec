"""The α, β, γ grid at Tc as a search record: `grid-at-tc/search.json`, in the format of `effnet search
coefficients --format json` (the one-epoch grid's `coefficients/search.json`), and its plot, both from
training-length's results.json.

The rows are the grid's points at Tc, best first: the best is the experiment's choice (`grid_best`: the best of the
points with the planned seeds, compared on the seeds they share), then the others by mean validation top-1 over
their seeds (one seed for most points, 3-5 for the best ones).  Each row's `vs_best` is its paired validation
difference with the best.  The runs themselves are in the experiment's shared record (`runs.journal`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments import training_length_plan as tlp
from effnet.files import atomic_write_text
from effnet.search import report as grid_report
from effnet.search.grid import Coefficients
from effnet.stats import interval, paired_difference

SEARCH = "search.json"
PLOT = "grid.png"


def _coefficients(label: str) -> Coefficients:
    """A grid point from its label in the experiment's rows, "(1, 1.3, 1.1)"."""
    return Coefficients(*(float(x) for x in label.strip("()").split(",")))


def search_rows(results: dict[str, Any]) -> list[grid_report.SearchRow]:
    """One row per grid point trained at Tc (none before Tc is decided), the experiment's best first once chosen."""
    tc = results.get("tc")
    if tc is None:
        return []
    runs = results["runs"]
    rows = []
    for trial, point in enumerate(results["grid_points"]):
        where = {"part": "grid", "point": point, "length": tc}
        scores = tables.by_seed(runs, "val_top1", **where)
        if not scores:
            continue
        first = tables.first(runs, **where)
        score = interval(list(scores.values()))
        emas = list(tables.by_seed(runs, "final_val_top1", **where).values())
        wall = sum(r.get("wall_s") or 0.0 for r in {r["key"]: r for r in runs
                                                   if all(r.get(k) == v for k, v in where.items())}.values())
        rows.append(grid_report.SearchRow(
            trial, _coefficients(point), score.mean, sum(emas) / len(emas) if emas else None, int(first["macs"]),
            int(first["params"]), int(first["resolution"]), round(wall, 1), tuple(sorted(scores.items())),
            None if score.n < 2 else score.half_width))
    if not rows:
        return rows
    best = next((r for r in rows if results.get("grid_best")
                 and r.coefficients == Coefficients(*results["grid_best"])), None)
    rows.sort(key=lambda r: (r is not best, -r.top1, r.macs, r.trial))
    if best is None:
        return rows
    return [r if r is best else _versus(r, best) for r in rows]


def _versus(row: grid_report.SearchRow, best: grid_report.SearchRow) -> grid_report.SearchRow:
    return replace(row, vs_best=paired_difference(dict(row.by_seed), dict(best.by_seed)))


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """search.json and grid.png of the Tc grid under `out`/grid-at-tc (nothing before a point has trained at Tc);
    returns the plot's path, for the report."""
    rows = search_rows(results)
    if not rows:
        return []
    folder = out / tlp.TC_GRID_FOLDER
    base_macs = next((c["base_macs"] for c in results["candidates"] if c.get("base_macs")), None)
    chosen = bool(results.get("grid_best"))
    record = {
        "study": f"training-length grid at Tc = {results['tc']} epochs", "seeds": results["seeds"],
        "storage": "runs.journal (the experiment's shared record)", "grid_points": len(results["grid_points"]),
        "trained_points": len(rows), "length": results["tc"], "score": "validation top-1 (EMA weights), %",
        "best_chosen": chosen, "base_macs": base_macs, "rows": [r.to_dict() for r in rows],
        "command": grid_report.scale_command(_relative(design.BASELINE_FILE), rows[0].coefficients) if chosen
        else None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(record, indent=2) + "\n", folder / SEARCH)
    title = (f"{results['baseline']['name']}: alpha/beta/gamma at phi=1 trained {results['tc']} epochs "
             "(validation top-1" + ("" if chosen else "; best not chosen yet: the highest mean so far") + ")")
    return [grid_report.plot_search(rows, folder / PLOT, title=title, base_macs=base_macs)]


def _relative(path: Path) -> str:
    """`path` from the repository's root (src/effnet/...), as the one-epoch search's command names it."""
    parts = path.parts
    return str(Path(*parts[parts.index("src"):])) if "src" in parts else path.name


__all__ = ["PLOT", "SEARCH", "search_rows", "write"]
