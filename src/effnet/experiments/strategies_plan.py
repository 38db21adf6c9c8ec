"""The candidates of `effnet experiments strategies`: every scaling strategy at each MACs budget and at each latency
budget, solved and measured once and kept in the experiment's `candidates.json` (latencies depend on the machine
and its load, so they are measured by the first process that plans the experiment and read back by the others and
by every rerun, with the machine and the load they were measured under).

At matched MACs, depth, width, resolution and the paper's compound are `compound-vs-single`'s models
(`design.candidate`, which solves φ): the same specs, hence the same run keys, so those runs are reused.  `uniform`
and `fast` at matched MACs, and every strategy at matched latency, are solved on the nominal multiplier s with
`scaling.solve_scale` (through `budget.solve_scale_for_macs` / `solve_scale_for_latency`).  A latency candidate that
is the same model as one already planned takes that model's name, so it is trained once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from effnet.experiments import design
from effnet.files import atomic_write_text
from effnet.spec import NetSpec

CANDIDATES = "candidates.json"
MACS_LOG2_RANGE = (-1.0, 6.0)
"""s from 1/2 to 64 times the baseline's nominal MACs: far beyond the 8× budget, for `uniform` and `fast`."""


@dataclass(frozen=True)
class Strategy:
    """A strategy of the comparison: `name` labels its runs (compound-vs-single's labels for the four it shares),
    `strategy` is its `scaling.STRATEGIES` name, `shared` the compound-vs-single method whose models it reuses at
    matched MACs."""

    name: str
    strategy: str
    shared: design.Method | None = None


STRATEGIES = (
    Strategy("compound (paper)", "compound", design.PAPER_COMPOUND),
    Strategy("depth", "depth", design.DEPTH),
    Strategy("width", "width", design.WIDTH),
    Strategy("resolution", "resolution", design.RESOLUTION),
    Strategy("uniform", "uniform"),
    Strategy("fast", "fast"),
)


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured (`budget.measure_latency`) and how far its solver searches: s up to 2^max_log2 times
    the baseline's nominal MACs.  At batch 1 the latency of these small models grows far slower than their MACs
    when width or resolution grows (the per-layer overhead dominates), so such a strategy may need many times the
    MACs to reach a latency budget; the limit bounds the training cost, and beyond it the strategy is reported as
    not reaching the budget, with the latency of its largest model."""

    batch: int = 1
    threads: int = 1
    repeats: int = 20
    warmup: int = 3
    statistic: str = "min"
    max_log2: float = 5.0


LATENCY = LatencySettings()
QUICK_LATENCY = LatencySettings(repeats=3, warmup=1, max_log2=3.0)


def _anonymous(spec: NetSpec) -> NetSpec:
    return replace(spec, name="model")  # the name is no part of the model


class _Timer:
    """Latency of a spec, measured once per distinct model (names aside)."""

    def __init__(self, settings: LatencySettings, measure: Callable[[NetSpec], float] | None = None):
        self.settings, self.measure, self.seconds = settings, measure, {}

    def __call__(self, spec: NetSpec) -> float:
        key = _anonymous(spec)
        if key not in self.seconds:
            if self.measure is not None:
                self.seconds[key] = float(self.measure(spec))
            else:
                from effnet.budget import measure_latency

                s = self.settings
                self.seconds[key] = measure_latency(spec, batch=s.batch, repeats=s.repeats, warmup=s.warmup,
                                                    statistic=s.statistic, threads=s.threads)
        return self.seconds[key]


def candidates(out: Path, base: NetSpec, budgets: Sequence[float], quick: bool, log=print,
               measure: Callable[[NetSpec], float] | None = None) -> dict[str, Any]:
    """{"candidates": one entry per (match, strategy, budget), "latency": how and where latency was measured},
    read from `out/candidates.json` when it was solved for the same baseline, strategies, budgets and settings."""
    settings = QUICK_LATENCY if quick else LATENCY
    wanted = {"base": base.to_dict(), "strategies": [asdict(s) for s in STRATEGIES], "budgets": list(budgets),
              "latency": asdict(settings), "tolerance": design.BUDGET_TOLERANCE, "macs_log2": list(MACS_LOG2_RANGE)}
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    path = out / CANDIDATES
    if path.is_file():
        held = json.loads(path.read_text())
        if held.get("digest") == digest:
            return {"candidates": held["candidates"], "latency": held["latency"]}
    found = macs_candidates(base, budgets, log=log)
    latency_found, info = latency_candidates(base, budgets, found, settings, log=log, measure=measure)
    out.mkdir(parents=True, exist_ok=True)
    held = {"digest": digest, **wanted, "latency": info, "candidates": found + latency_found}
    atomic_write_text(json.dumps(held, indent=2) + "\n", path)
    return {"candidates": held["candidates"], "latency": info}


def macs_candidates(base: NetSpec, budgets: Sequence[float], log=print) -> list[dict[str, Any]]:
    """Every strategy at every MACs budget (±5%): compound-vs-single's model where the strategy is one of its
    methods, `solve_scale` otherwise; an unreachable budget has no spec and the nearest MACs on either side."""
    from effnet.budget import solve_scale_for_macs
    from effnet.profile import count_macs

    base_macs = count_macs(base)
    entries = []
    for st in STRATEGIES:
        for b in budgets:
            log(f"solving: {st.name} at {b:g}x the baseline's MACs ...")
            if st.shared is not None:
                c = design.candidate(base, st.shared, b)
                entry = {"solver": "solve_phi", "phi": c.phi, "scale": None, "d": c.depth, "w": c.width,
                         "r": c.resolution, "spec": c.spec, "macs": c.macs, "nearest": c.nearest}
            else:
                sol = solve_scale_for_macs(base, b * base_macs, strategy=st.strategy,
                                           tolerance=design.BUDGET_TOLERANCE, log2_range=MACS_LOG2_RANGE)
                entry = _solved(sol, f"{base.name}_{st.strategy}_x{b:g}", base_macs)
                entry["macs"] = None if sol.spec is None else int(sol.cost)
            entries.append(_entry(st, "macs", b, entry, base, base_macs))
    return entries


def latency_candidates(base: NetSpec, budgets: Sequence[float], planned: list[dict[str, Any]],
                       settings: LatencySettings, log=print,
                       measure: Callable[[NetSpec], float] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Every strategy at `budgets` × the baseline's latency (±5%), with `solve_scale_for_latency`; also measures the
    latency of the `planned` (matched-MACs) candidates, in place.  Returns the entries and the measurement's
    conditions (settings, machine, load before and after, date)."""
    from effnet.budget import solve_scale_for_latency
    from effnet.experiments.records import machine
    from effnet.profile import count_macs

    timer = _Timer(settings, measure)
    load_before = list(os.getloadavg())
    base_macs, base_s = count_macs(base), timer(base)
    known = {_anonymous(base): base}
    for c in planned:
        if c["spec"] is not None:
            spec = NetSpec.from_dict(c["spec"])
            known.setdefault(_anonymous(spec), spec)
            c["latency_s"] = timer(spec)
            c["latency_ratio"] = c["latency_s"] / base_s
    entries = []
    for st in STRATEGIES:
        for b in budgets:
            log(f"solving: {st.name} at {b:g}x the baseline's latency ({b * base_s * 1e3:.2f} ms) ...")
            # A model smaller than the baseline is never the answer to a budget above its latency (only timing
            # noise could make it look so): the search starts at s = 1 then.
            lowest = 0.0 if b >= 1 else math.log2(b) - 1.0
            sol = solve_scale_for_latency(base, b * base_s, strategy=st.strategy, batch=settings.batch,
                                          tolerance=design.BUDGET_TOLERANCE, log2_range=(lowest, settings.max_log2),
                                          measure=timer)
            entry = _solved(sol, f"{base.name}_{st.strategy}_lat{b:g}", base_s)
            if entry["spec"] is not None:
                entry["spec"] = known.setdefault(_anonymous(entry["spec"]), entry["spec"])  # same model, same run
                entry["macs"] = count_macs(entry["spec"])
            entries.append(_entry(st, "latency", b, entry, base, base_macs, latency=(sol.cost, base_s)))
    info = {**asdict(settings), "max_scale": 2.0**settings.max_log2, "baseline_s": base_s, "machine": machine(),
            "load_before": load_before, "load_after": list(os.getloadavg()),
            "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "models_timed": len(timer.seconds)}
    return entries, info


def _solved(sol, name: str, base_cost: float) -> dict[str, Any]:
    """The fields of a `ScaleSolution` (nearest costs as ratios to the baseline's)."""
    m = sol.multipliers
    nearest = tuple(None if side is None else side[1] / base_cost for side in (sol.below, sol.above))
    return {"solver": "solve_scale", "phi": None, "scale": sol.scale, "d": m and m.depth, "w": m and m.width,
            "r": m and m.resolution, "spec": None if sol.spec is None else replace(sol.spec, name=name),
            "nearest": nearest}


def _entry(st: Strategy, match: str, budget: float, solved: dict[str, Any], base: NetSpec, base_macs: int,
           latency: tuple[float | None, float] | None = None) -> dict[str, Any]:
    spec = solved["spec"]
    entry = {"method": st.name, "strategy": st.strategy, "match": match, "budget": budget, "solver": solved["solver"],
             "phi": solved["phi"], "scale": solved["scale"], "d": solved["d"], "w": solved["w"], "r": solved["r"],
             "macs": solved["macs"] if spec is not None else None, "base_macs": base_macs,
             "ratio": None if spec is None else solved["macs"] / base_macs, "latency_s": None,
             "latency_ratio": None, "within": spec is not None, "spec": None if spec is None else spec.to_dict()}
    if latency is not None and spec is not None:
        entry["latency_s"], entry["latency_ratio"] = latency[0], latency[0] / latency[1]
    if spec is not None:
        entry.update(design.shape_of(spec, base))
    else:
        entry["nearest_below"], entry["nearest_above"] = solved["nearest"]
    return entry


__all__ = ["CANDIDATES", "LATENCY", "LatencySettings", "QUICK_LATENCY", "STRATEGIES", "Strategy", "candidates",
           "latency_candidates", "macs_candidates"]
