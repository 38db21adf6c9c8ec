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

from effnet.experiments import design
from effnet.experiments import training_length_plan as tlp
from effnet.files import atomic_write_text
from effnet.search import report as grid_report
from effnet.search.grid import Coefficients

SEARCH = "search.json"
PLOT = "grid.png"


def _coefficients(label: str) -> Coefficients:
    """A grid point from its label in the experiment's rows, "(1, 1.3, 1.1)"."""
    return Coefficients(*(float(x) for x in label.strip("()").split(",")))


def search_rows(results: dict[str, Any]) -> list[grid_report.SearchRow]:
    """One row per grid point trained at Tc (none before Tc is decided), the experiment's best first once chosen
    (`grid_report.combine` over the seeds' runs)."""
    tc = results.get("tc")
    if tc is None:
        return []
    by_seed: dict[int, list[grid_report.SearchRow]] = {}
    for trial, point in enumerate(results["grid_points"]):
        for r in {r["key"]: r for r in results["runs"] if r.get("part") == "grid" and r.get("point") == point
                  and r.get("length") == tc and r.get("val_top1") is not None}.values():
            by_seed.setdefault(r["seed"], []).append(grid_report.SearchRow(
                trial, _coefficients(point), float(r["val_top1"]), r.get("final_val_top1"), int(r["macs"]),
                int(r["params"]), int(r["resolution"]), float(r.get("wall_s") or 0.0)))
    if not results.get("grid_best"):  # no best chosen yet: no row is compared with one
        return [replace(r, vs_best=None) for r in grid_report.combine(by_seed)]
    return grid_report.combine(by_seed, best=Coefficients(*results["grid_best"]))


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
