"""The scaled candidates an experiment trains, solved once and kept in its output folder (`candidates.json`):
the budget solver builds and profiles dozens of models per candidate, and every worker process needs the same
list, so it is computed by the first process and read by the others and by every rerun."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effnet.experiments import design
from effnet.experiments.design import Candidate, Method, candidate, shape_of
from effnet.experiments.runner import Run
from effnet.files import atomic_write_text
from effnet.spec import NetSpec

CANDIDATES = "candidates.json"


def candidates(out: Path, base: NetSpec, methods: Sequence[Method], budgets: Sequence[float],
               log=print) -> list[dict[str, Any]]:
    """One entry per (method, budget): φ, multipliers, measured MACs and the spec (None where no model of that
    method lands within 5% of the budget)."""
    wanted = {"base": base.to_dict(), "methods": [m.__dict__ for m in methods], "budgets": list(budgets)}
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    path = out / CANDIDATES
    if path.is_file():
        held = json.loads(path.read_text())
        if held.get("digest") == digest:
            return held["candidates"]
    entries = []
    for m in methods:
        for b in budgets:
            log(f"solving: {m.name} at {b:g}x the baseline's MACs ...")
            entries.append(_entry(candidate(base, m, b), base))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"digest": digest, **wanted, "candidates": entries}, indent=2) + "\n", path)
    return entries


def budget_plan(out: Path, methods: Sequence[Method], budgets: Sequence[float], quick: bool, seeds: int,
                log=print) -> tuple[list[Run], dict[str, Any]]:
    """The runs (and results.json's plan) of an experiment that scales the baseline by each of `methods` to each
    of `budgets` × its MACs: per seed the baseline, then every candidate that reaches its budget.  Seed-major, so
    an interrupted experiment holds whole seeds."""
    base = design.baseline()
    found = candidates(out, base, methods, budgets, log=log)
    train = design.recipe(quick)
    runs = []
    for seed in range(seeds):
        runs.append(Run.make(base, seed, train, method="baseline", budget=1.0))
        runs += [Run.make(NetSpec.from_dict(c["spec"]), seed, train, method=c["method"], budget=c["budget"])
                 for c in found if c["spec"] is not None]
    meta = {"baseline": base.to_dict(), "budgets": list(budgets), "candidates": found, "seeds": seeds,
            "recipe": design.recipe_text(train)}
    return runs, meta


def _entry(c: Candidate, base: NetSpec) -> dict[str, Any]:
    entry = {"method": c.method, "budget": c.target_ratio, "phi": c.phi, "d": c.depth, "w": c.width,
             "r": c.resolution, "macs": c.macs, "base_macs": c.base_macs, "ratio": c.ratio, "within": c.within,
             "spec": c.spec.to_dict() if c.spec else None}
    if c.spec is not None:
        entry.update(shape_of(c.spec, base))
    else:
        entry["nearest_below"], entry["nearest_above"] = c.nearest
    return entry


__all__ = ["CANDIDATES", "budget_plan", "candidates"]
