"""The runs of `effnet experiments training-length`, in the stages that earlier results unlock, and the plan's
estimate of their hours.

Stages, in queue order (within a stage, seed by seed):

1. At one epoch, compound-vs-single's models (recorded there: the same specs, recipe and seeds, so the same run
   keys, reused rather than trained); then the baseline and the widest model (width at 8x the MACs) at T = 4,
   compound-vs-single's candidates at T = 4, and the two models at T = 16.  Every length T trains the recipe's
   steps x T with its warm-up and decay interval stretched by T (`strategies.longer_recipe`: the 4x runs of
   `strategies` are the same runs).
2. Once T = 1, 4, 16 have finished with the planned seeds: Tc, the shortest length whose validation top-1 is within
   the noise of the next longer one for both models (at most 16); then the candidates at Tc, and the grid of
   (α, β, γ) at φ = 1 (the same 22 points as the one-epoch search, and the paper's point, which a grid of step 0.1
   does not hold) at Tc, one seed each.
3. Once every grid point has its seed: the five best and the paper's (1.2, 1.1, 1.15) get the other planned seeds;
   then the points within the noise of the best of them get seeds up to 5.
4. Once those have finished: compound scaling with the best of them on all their seeds (the Tc grid's α, β, γ) at
   2x, 3x, 8x, at Tc.
5. Last, the two models at T = 32: they only tell whether 16 has converged (Tc is capped at 16).

When the plan is over `WALL_LIMIT_H` hours of wall time on 2 cores, the 3x budget is dropped beyond the early length;
when it is still over, the largest budget beyond the early length (compound vs single and the Tc grid's compound at
8x, at Tc) and the T = 32 check are **deferred**: planned after every other stage, marked beyond the limit, so the
runs within the limit answer every question of the experiment at the smaller budget first.

Each comparison stage (compound vs single at a length, the Tc grid's compound against the best) is followed, once
its planned seeds have finished, by a stage of the seeds its comparisons within the noise add (`more_seeds`, on
validation): cheap, informative runs before the longer stages.  Every decision reads finished runs only (the
planned seeds' validation top-1, and the added seeds' once all of them have finished), so every process (the
parent, its workers, a worker on another machine) plans the same runs.

The estimate (`estimate`) multiplies each run's training cost (`runner.training_cost`) by the seconds per unit of
cost measured on this machine; it is made once, before the first run, and kept in `plan.json` with the decision it
implies (dropping the 3x budget beyond T = 4 when it exceeds `WALL_LIMIT_H` hours of wall time on 2 cores, then
deferring as above), so that every process and every rerun plans the same runs.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effnet.experiments import compound_vs_single, design, more_seeds, plan, tables
from effnet.experiments.more_seeds import Comparisons
from effnet.experiments.runner import Run, training_cost
from effnet.experiments.strategies import longer_recipe
from effnet.files import atomic_write_text
from effnet.report import format_duration
from effnet.search.coefficient_seeds import best_and_close
from effnet.search.coefficients import trial_spec
from effnet.search.grid import Coefficients, coefficient_grid
from effnet.spec import NetSpec
from effnet.stats import SEEDS_WITHIN_NOISE

LENGTHS = (1, 4, 16, 32)
QUICK_LENGTHS = (1, 2, 3, 4)
"""Training lengths in epochs (the recipe's steps x T).  The second is the early length (compound vs single first
runs there), the third the cap on Tc, the last only checks the cap."""
WIDEST = 8.0
"""The largest model of the convergence part: width alone at this many times the baseline's MACs (the largest
budget of the plan with --quick)."""
GRID_STEP, GRID_TOLERANCE = 0.1, 0.1  # the one-epoch search's grid: 22 points
QUICK_GRID = (Coefficients(1.0, 1.0, 1.4), Coefficients(1.0, 1.3, 1.1), Coefficients(1.2, 1.1, 1.15),
              Coefficients(2.0, 1.0, 1.0))
PAPER_POINT = Coefficients(1.2, 1.1, 1.15)
TOP_POINTS, QUICK_TOP_POINTS = 5, 2
TC_GRID = "compound (grid at Tc)"
TC_GRID_FOLDER = "grid-at-tc"  # its candidates.json (solved once the Tc grid's best is known)
PLAN_FILE = "plan.json"
WALL_LIMIT_H = 40.0
CORES = 2
DROPPED_BUDGET = 3.0
BEYOND = "beyond the limit"  # the mark of a deferred stage
ONE_EPOCH_GRID = Path("coefficients") / "search.json"  # beside this experiment's folder


@dataclass(frozen=True)
class Setup:
    quick: bool
    seeds: int

    @property
    def lengths(self) -> tuple[int, ...]:
        return QUICK_LENGTHS if self.quick else LENGTHS

    @property
    def early(self) -> int:
        return self.lengths[1]

    @property
    def cap(self) -> int:
        return self.lengths[2]

    @property
    def budgets(self) -> tuple[float, ...]:
        return compound_vs_single.QUICK_BUDGETS if self.quick else compound_vs_single.BUDGETS

    @property
    def grid(self) -> tuple[Coefficients, ...]:
        return QUICK_GRID if self.quick else coefficient_grid(GRID_STEP, GRID_TOLERANCE)

    @property
    def top(self) -> int:
        return QUICK_TOP_POINTS if self.quick else TOP_POINTS

    @property
    def widest(self) -> float:
        return min(WIDEST, max(self.budgets))


def recipe_at(quick: bool, length: int) -> dict[str, Any]:
    """The recipe trained for `length` epochs (warm-up and decay stretched by the same factor); length 1 is the
    recipe itself (compound-vs-single's runs)."""
    train = design.recipe(quick)
    return train if length == 1 else longer_recipe(train, length)


def point_label(c: Coefficients) -> str:
    return f"({c.alpha:g}, {c.beta:g}, {c.gamma:g})"


@dataclass
class Group:
    """Runs of one stage of the plan, for the printed plan and the queue order."""

    what: str
    length: int
    runs: list[Run]
    assumed: bool = False  # planned on an assumption, for the estimate only (the results do not say it yet)
    beyond: bool = False  # deferred past the plan's wall-time limit (trained after every stage within it)


@dataclass
class State:
    """What the finished runs have decided so far (None: not yet)."""

    tc: int | None = None
    tc_checks: list[dict[str, Any]] = field(default_factory=list)
    top: list[str] | None = None
    best: list[float] | None = None
    tc_grid_same_as: str | None = None
    more_checked: list[dict[str, Any]] = field(default_factory=list)  # comparisons checked for more seeds
    more_added: int = 0
    more_waiting: bool = False  # a comparison stage whose planned seeds have not all finished

    def to_meta(self) -> dict[str, Any]:
        return {"tc": self.tc, "tc_checks": self.tc_checks, "grid_top": self.top, "grid_best": self.best,
                "tc_grid_same_as": self.tc_grid_same_as}


def within_noise(diff) -> bool:
    return diff.n >= 2 and not diff.excludes_zero()


def length_checks(rows: Sequence[dict[str, Any]], lengths: Sequence[int], models: Sequence[str],
                  seeds: int) -> list[dict[str, Any]]:
    """Per pair of consecutive lengths whose runs have all finished (the planned seeds), each model's paired
    validation difference longer − shorter and whether it is within the noise."""
    out = []
    for short, long_ in zip(lengths, lengths[1:]):
        diffs = {m: tables.compare(rows, {"part": "length", "method": m, "length": long_},
                                   {"part": "length", "method": m, "length": short}, metric="val_top1")
                 for m in models}
        if any(d.n < seeds for d in diffs.values()):
            break
        out.append({"short": short, "long": long_, "models": {m: {"val_difference": d.to_dict(),
                                                                  "within_noise": within_noise(d)}
                                                              for m, d in diffs.items()},
                    "within_noise": all(within_noise(d) for d in diffs.values())})
    return out


def converged_length(checks: Sequence[dict[str, Any]], lengths: Sequence[int], cap: int) -> int | None:
    """Tc: the shortest length within the noise of the next longer one for every model, at most `cap`; None while
    the lengths it needs have not all finished."""
    for check in checks:
        if check["short"] >= cap:
            break
        if check["within_noise"]:
            return check["short"]
    decided = {c["short"] for c in checks}
    return cap if all(t in decided for t in lengths if t < cap) else None


def _planned(rows: Sequence[dict[str, Any]], seeds: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["seed"] < seeds]


def _finished(runs: Sequence[Run], rows: Sequence[dict[str, Any]]) -> bool:
    done = {r["key"] for r in rows}
    return all(run.key in done for run in runs)


def one_epoch_grid(out: Path) -> dict[str, Any] | None:
    """The one-epoch search's best point and the points within its noise (from coefficients/search.json), or
    None when that file is missing."""
    path = out.parent / ONE_EPOCH_GRID
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["rows"]

    def entry(r):
        vs = r.get("vs_best")
        return {"point": point_label(Coefficients(r["alpha"], r["beta"], r["gamma"])), "top1": r["top1"],
                "half_width": r.get("top1_half_width"), "seeds": r["seeds"], "vs_best": vs}

    close = [entry(r) for r in rows[1:] if r.get("vs_best") and (r["vs_best"].get("n") or 0) >= 2
             and r["vs_best"]["mean"] - r["vs_best"]["half_width"] <= 0 <= r["vs_best"]["mean"]
             + r["vs_best"]["half_width"]]
    return {"best": entry(rows[0]), "close": close, "ranking": [entry(r)["point"] for r in rows]}


class Planner:
    """The plan of one experiment folder: candidates (solved once, `plan.candidates`), the stages and the runs."""

    def __init__(self, out: Path, setup: Setup, log=print, compare: Comparisons | None = None,
                 target: int = SEEDS_WITHIN_NOISE):
        """`compare`: the comparisons the report states (pairs of label sets, `training_length.comparisons`),
        which decide the seeds added after each comparison stage; `target`: the seeds a comparison within the
        noise gets."""
        self.out, self.setup, self.log = out, setup, log
        self.compare, self.target = compare, target
        self.base = design.baseline()
        self.methods = compound_vs_single.methods(out)
        self.found = plan.candidates(out, self.base, self.methods, setup.budgets, log=log)
        self.decision = read_decision(out)

    # -- runs of each part --------------------------------------------------------------------------------------

    def widest(self) -> dict[str, Any]:
        return next(c for c in self.found if c["method"] == design.WIDTH.name and c["budget"] == self.setup.widest)

    def length_runs(self, length: int) -> list[Run]:
        train, wide = recipe_at(self.setup.quick, length), self.widest()
        return [run for seed in range(self.setup.seeds) for run in (
            Run.make(self.base, seed, train, part="length", method="baseline", budget=1.0, length=length),
            Run.make(NetSpec.from_dict(wide["spec"]), seed, train, part="length", method="width",
                     budget=wide["budget"], length=length))]

    def budgets_at(self, length: int) -> tuple[float, ...]:
        """The budgets trained at `length`: all but the dropped one beyond the early length (a deferred one
        included)."""
        drop = self.decision.get("drop_budget") if length > self.setup.early else None
        return tuple(b for b in self.setup.budgets if b != drop)

    def deferred_at(self, length: int) -> float | None:
        """The budget deferred past the limit at `length` (only beyond the early length), or None."""
        return self.decision.get("defer_budget") if length > self.setup.early else None

    def compare_runs(self, length: int, found: Sequence[dict[str, Any]], with_base: bool = True,
                     seeds: Sequence[int] | None = None, budgets: Sequence[float] | None = None) -> list[Run]:
        """Compound vs single's runs of `found` at `length` (the baseline's too with `with_base`), at `budgets`
        (default: every budget trained at `length`)."""
        train = recipe_at(self.setup.quick, length)
        budgets = self.budgets_at(length) if budgets is None else budgets
        runs = []
        for seed in range(self.setup.seeds) if seeds is None else seeds:
            if with_base:
                runs.append(Run.make(self.base, seed, train, part="compare", method="baseline", budget=1.0,
                                     length=length))
            runs += [Run.make(NetSpec.from_dict(c["spec"]), seed, train, part="compare", method=c["method"],
                              budget=c["budget"], length=length)
                     for c in found if c["spec"] is not None and c["budget"] in budgets]
        return runs

    def grid_runs(self, points: Sequence[Coefficients], length: int, seeds: Sequence[int]) -> list[Run]:
        train = recipe_at(self.setup.quick, length)
        return [Run.make(trial_spec(self.base, c), seed, train, part="grid", method="grid", point=point_label(c),
                         length=length) for seed in seeds for c in points]

    def tc_grid_candidates(self, best: Coefficients) -> tuple[list[dict[str, Any]], str | None]:
        """Compound scaling with the Tc grid's best at every budget: the candidates of a method with the same
        coefficients when there is one (the same models, trained once), else solved and kept in
        TC_GRID_FOLDER/candidates.json.  Also the name of that method, or None."""
        for m in self.methods:
            if (m.alpha, m.beta, m.gamma) == (best.alpha, best.beta, best.gamma):
                return [{**c, "method": TC_GRID} for c in self.found if c["method"] == m.name], m.name
        method = design.Method(TC_GRID, best.alpha, best.beta, best.gamma)
        solved = plan.candidates(self.out / TC_GRID_FOLDER, self.base, [method], self.setup.budgets, log=self.log)
        return [_same_model(c, self.found) for c in solved], None

    # -- the stages ---------------------------------------------------------------------------------------------

    def groups(self, rows: Sequence[dict[str, Any]], assume: bool = False) -> tuple[list[Group], State]:
        """The stages that `rows` (finished runs with their labels) unlock; with `assume`, also those they do not
        unlock yet, planned on assumptions (Tc at the cap, the grid ranked as at one epoch) for the estimate."""
        s, every, rows = self.setup, list(rows), _planned(rows, self.setup.seeds)
        state = State()
        one_epoch = Group("compound vs single (compound-vs-single's runs where the same)", 1,
                          self.compare_runs(1, self.found))
        early = Group("compound vs single", s.early, self.compare_runs(s.early, self.found))
        groups = [one_epoch, *self._more_seeds(one_epoch, rows, state),
                  Group("convergence: baseline and widest", 1, self.length_runs(1)),
                  Group("convergence: baseline and widest", s.early, self.length_runs(s.early)),
                  early, *self._more_seeds(early, rows, state),
                  Group("convergence: baseline and widest", s.cap, self.length_runs(s.cap))]
        state.tc_checks = length_checks(rows, s.lengths, ("baseline", "width"), s.seeds)
        state.tc = converged_length(state.tc_checks, s.lengths, s.cap)
        tc, assumed = state.tc, False
        if tc is None:
            if not assume:
                return groups, state
            tc, assumed = s.cap, True
        later = self.deferred_at(tc)
        now = tuple(b for b in self.budgets_at(tc) if b != later)
        at_tc = Group("compound vs single at Tc", tc, self.compare_runs(tc, self.found, budgets=now), assumed)
        if tc not in (1, s.early):
            groups += [at_tc, *self._more_seeds(at_tc, rows, state)]
        seed0 = self.grid_runs(self.points(), tc, [0])
        groups.append(Group("grid at Tc: every point, one seed", tc, seed0, assumed))
        top = self._top(seed0, rows, tc) if not assumed else None
        if top is None:
            if not assume:
                return groups, state
            top, assumed = self._assumed_top(), True
        else:
            state.top = [point_label(c) for c in top]
        more = self.grid_runs(top, tc, range(1, s.seeds))
        groups.append(Group("grid at Tc: the best points and the paper's, more seeds", tc, more, assumed))
        planned_top = self.grid_runs(top, tc, range(s.seeds))
        close = self._close_points(top, rows, tc) if not assumed and _finished(planned_top, rows) else []
        added = self.grid_runs(close, tc, range(s.seeds, self.target)) if len(close) > 1 else []
        if added:
            groups.append(Group("grid at Tc: more seeds where within the noise of the best", tc, added, assumed))
            state.more_added += len(added)
        best = self._best(top, every, tc, range(max(s.seeds, self.target) if added else s.seeds)) \
            if not assumed and _finished(planned_top + added, every) else None
        if best is None:
            if not assume:
                return groups, state
            best, assumed = self._assumed_best(), True
        else:
            state.best = [best.alpha, best.beta, best.gamma]
        found, same = self.tc_grid_candidates(best)
        if not assumed:
            state.tc_grid_same_as = same
        tc_grid = Group("compound with the Tc grid's (α, β, γ)", tc,
                        self.compare_runs(tc, found, with_base=False, budgets=now), assumed)
        compared_at_tc = {1: one_epoch, s.early: early}.get(tc, at_tc)  # the stage the Tc grid's compound joins
        both = Group(tc_grid.what, tc, compared_at_tc.runs + tc_grid.runs, assumed)
        groups += [tc_grid, *self._more_seeds(both, rows, state, involving=TC_GRID)]
        if later is not None:
            deferred = Group(f"compound vs single at Tc, {later:g}x, and the Tc grid's compound ({BEYOND})", tc,
                             self.compare_runs(tc, [*self.found, *found], budgets=(later,)), assumed, beyond=True)
            groups += [deferred, *self._more_seeds(deferred, rows, state)]
        waiting = not _finished(runs_of(groups), every)
        if waiting and not assume:
            return groups, state
        check = bool(self.decision.get("defer_check"))
        groups.append(Group("convergence: baseline and widest (checks the cap)" + (f" ({BEYOND})" if check else ""),
                            s.lengths[-1], self.length_runs(s.lengths[-1]), assumed or waiting, beyond=check))
        return groups, state

    def points(self) -> list[Coefficients]:
        """The grid's points and the paper's (1.2, 1.1, 1.15), which a grid of step 0.1 does not hold."""
        return [*self.setup.grid, *([PAPER_POINT] if PAPER_POINT not in self.setup.grid else [])]

    def _top(self, seed0: Sequence[Run], rows, tc: int) -> list[Coefficients] | None:
        """The `top` best grid points on seed 0 at Tc, and the paper's point; None until every point has its seed."""
        if not _finished(seed0, rows):
            return None
        scores = {c: tables.by_seed(rows, "val_top1", part="grid", point=point_label(c), length=tc).get(0)
                  for c in self.setup.grid}
        ranked = sorted((c for c in scores if scores[c] is not None), key=lambda c: (-scores[c], c))
        top = ranked[:self.setup.top]
        return top + ([PAPER_POINT] if PAPER_POINT not in top else [])

    def _best(self, top: Sequence[Coefficients], rows, tc: int, seeds: Sequence[int]) -> Coefficients | None:
        """The best of the `top` points on validation over `seeds` (the planned ones, and the added ones where
        points were within the noise of the best)."""
        per_point = {c: tables.by_seed(rows, "val_top1", part="grid", point=point_label(c), length=tc) for c in top}
        best, _ = best_and_close(per_point, list(seeds))
        return best

    def _close_points(self, top: Sequence[Coefficients], rows, tc: int) -> list[Coefficients]:
        """The best of the `top` points on the planned seeds and those within its noise (paired, validation)."""
        per_point = {c: tables.by_seed(rows, "val_top1", part="grid", point=point_label(c), length=tc) for c in top}
        _, close = best_and_close(per_point, list(range(self.setup.seeds)))
        return close

    def _more_seeds(self, group: Group, rows, state: State, involving: str | None = None) -> list[Group]:
        """Right after a comparison stage, once its planned seeds have finished: seeds up to `target` for both
        sides of every comparison of `group`'s length (`comparisons`) that is within the noise on validation,
        as a stage of its own (so that a stage's added seeds come before the longer, costlier stages).
        `involving`: only the comparisons with that method (the Tc grid's, compared once it has trained)."""
        if self.compare is None or group.assumed:
            return []
        s, length = self.setup, group.length
        meta = {"early": s.early, "budgets": list(s.budgets), "plan": self.decision,
                "tc": None if length in (1, s.early) else length}

        def pairs(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
            return [(a, b) for a, b in self.compare(results) if a.get("part") == "compare"
                    and a.get("length") == length and (involving is None or involving in (a["method"], b["method"]))]

        decision = more_seeds.decide(pairs, group.runs, rows, meta, s.seeds, self.target)
        state.more_checked += decision.checked
        state.more_added += len(decision.runs)
        state.more_waiting = state.more_waiting or bool(decision.waiting)
        return [Group("more seeds where within the noise (the stage above)", length, list(decision.runs))] \
            if decision.runs else []

    def _assumed_top(self) -> list[Coefficients]:
        held = one_epoch_grid(self.out)
        ranking = [Coefficients(*(float(x) for x in p.strip("()").split(","))) for p in held["ranking"]] \
            if held else []
        top = [c for c in ranking if c in self.setup.grid][:self.setup.top] or list(self.setup.grid[:self.setup.top])
        return top + ([PAPER_POINT] if PAPER_POINT not in top else [])

    def _assumed_best(self) -> Coefficients:
        """For the estimate only: the last compound method's coefficients (the one-epoch grid's when it is known),
        whose models cost about what a grid winner's do, and need no solving."""
        m = self.methods[-1]
        return Coefficients(m.alpha, m.beta, m.gamma)


def _same_model(entry: dict[str, Any], found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`entry` with the spec of an already planned candidate that is the same model under another name (rounding
    makes different coefficients land on one model), so that model is trained once."""
    if entry["spec"] is None:
        return entry
    mine = {**entry["spec"], "name": None}
    twin = next((c for c in found if c["spec"] is not None and {**c["spec"], "name": None} == mine), None)
    return entry if twin is None else {**entry, "spec": twin["spec"], "same_model_as": twin["method"]}


def runs_of(groups: Sequence[Group]) -> list[Run]:
    return [run for g in groups for run in g.runs]


# -- the estimate ----------------------------------------------------------------------------------------------

def read_decision(out: Path) -> dict[str, Any]:
    path = out / PLAN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Rates:
    """Seconds of training per unit of `training_cost` on this machine: per model (spec and resolution) where it
    was trained here before, else `typical`; `source` says where the numbers come from."""

    typical: float
    per_model: dict[str, float]
    source: str

    def of(self, run: Run) -> float:
        return self.per_model.get(_model_key(run), self.typical)


def _model_key(run: Run) -> str:
    return json.dumps([run.identity["spec"], dict(run.train).get("resolution")], sort_keys=True, default=list)


def measured_rates(records: dict[str, dict[str, Any]], runs: Sequence[Run], cpu: str,
                   measure: Callable[[], float] | None = None) -> Rates:
    """Rates from the finished runs of the same models on this CPU model (`records`, e.g. `known_records`): per
    model the most recent run's (the code's speed changes; the newest run measured the code that will train), the
    median over those for the other models; `measure()` (seconds per unit, from a few timed steps) where no run
    was trained on this CPU model."""
    from effnet.experiments.runner import run_of_record

    models = {_model_key(r) for r in runs}
    per: dict[str, list[tuple[str, float]]] = {}
    for record in records.values():
        if (record.get("machine") or {}).get("cpu") != cpu or record.get("device", "cpu") != "cpu":
            continue
        try:
            run = run_of_record(record)
        except Exception:  # noqa: BLE001 - a record of another effnet version is simply not used
            continue
        key = _model_key(run)
        if key in models and (cost := training_cost(run)) and record.get("wall_s"):
            per.setdefault(key, []).append((record.get("finished") or "", record["wall_s"] / cost))
    per_model = {k: max(v)[1] for k, v in per.items()}  # "finished" is "YYYY-MM-DD HH:MM UTC": newest last
    if per_model:
        n = sum(len(v) for v in per.values())
        return Rates(statistics.median(per_model.values()), per_model,
                     f"the newest of {n} runs of {len(per_model)} of the planned models trained on this CPU model "
                     f"({cpu}); the median of those rates for the others")
    if measure is None:
        raise ValueError("no run trained on this CPU model and nothing to measure with")
    return Rates(measure(), {}, f"timed training steps of the baseline on this machine ({cpu}; no evaluation, "
                                "so somewhat low)")


def step_rate(quick: bool, threads: int = 1) -> float:
    """Seconds per unit of training cost of a few timed SGD steps of the baseline (one thread)."""
    from effnet.experiments.costs import train_step_times

    train, base = design.recipe(quick), design.baseline()
    batch = train["batch_size"]
    times = train_step_times(base, batch=batch, steps=2 if quick else 10, warmup=1, threads=threads)
    run = Run.make(base, 0, {**train, "steps": 1})
    return statistics.median(times) / training_cost(run)


def estimate(groups: Sequence[Group], done: set[str], rates: Rates) -> list[dict[str, Any]]:
    """Per group, in queue order: runs, runs still to train (a run planned earlier is counted there) and hours."""
    seen = set(done)
    out = []
    for g in groups:
        todo = []
        for run in g.runs:
            if run.key not in seen:
                seen.add(run.key)
                todo.append(run)
        hours = sum(training_cost(r) * rates.of(r) for r in todo) / 3600
        out.append({"what": g.what, "length": g.length, "runs": len({r.key for r in g.runs}), "to_train": len(todo),
                    "hours": round(hours, 3), "assumed": g.assumed, "beyond": g.beyond})
    return out


def wall_hours(rows: Sequence[dict[str, Any]]) -> float:
    """Wall time of the estimate's single-thread hours with two runs at a time on `CORES` cores."""
    return sum(r["hours"] for r in rows) / CORES


def decide(out: Path, planner: Planner, rows: Sequence[dict[str, Any]], done: set[str], rates: Rates,
           machine: dict[str, Any], finished_at: dict[str, str] | None = None) -> dict[str, Any]:
    """The plan's estimate and what it implies, made once (before the first run) and kept in plan.json: the
    hours with every budget; when their wall time exceeds WALL_LIMIT_H, the 3x budget dropped beyond the early
    length and the hours left; when those still exceed it, the deferred stages (`_defer`).

    A plan.json made before deferring existed, over the limit after the drop, gets its deferral added, estimated
    from the runs that had finished when that plan was made (`finished_at`: run key -> its record's "finished"
    time; runs without one count as finished) with the rates of now, and kept."""
    held = read_decision(out)
    if held and "defer_budget" not in held and held.get("wall_h_after_drop", 0.0) > held["wall_limit_h"]:
        made, times = held["made"], finished_at or {}
        then = [r for r in rows if (r.get("finished") or "") < made]
        _defer(held, planner, then, {k for k in done if times.get(k, "") < made}, rates)
        planner.decision = held
        atomic_write_text(json.dumps(held, indent=2) + "\n", out / PLAN_FILE)
        return held
    if held:
        return held
    from effnet.experiments.records import now

    planner.decision = {}
    full = estimate(planner.groups(rows, assume=True)[0], done, rates)
    decision: dict[str, Any] = {"made": now(), "machine": machine, "rate_source": rates.source,
                                "seconds_per_unit": rates.typical, "wall_limit_h": WALL_LIMIT_H, "cores": CORES,
                                "estimate": full, "wall_h": round(wall_hours(full), 1), "drop_budget": None}
    if wall_hours(full) > WALL_LIMIT_H and DROPPED_BUDGET in planner.setup.budgets:
        planner.decision = {"drop_budget": DROPPED_BUDGET}
        kept = estimate(planner.groups(rows, assume=True)[0], done, rates)
        decision.update(drop_budget=DROPPED_BUDGET, estimate_after_drop=kept,
                        wall_h_after_drop=round(wall_hours(kept), 1))
        if wall_hours(kept) > WALL_LIMIT_H:
            _defer(decision, planner, rows, done, rates)
    planner.decision = decision
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(decision, indent=2) + "\n", out / PLAN_FILE)
    return decision


def _defer(decision: dict[str, Any], planner: Planner, rows: Sequence[dict[str, Any]], done: set[str],
           rates: Rates) -> None:
    """Still over the limit after the drop: defer the largest budget beyond the early length (`defer_after`) and
    the check of the cap (`defer_check`: its length) past every other stage; `decision` gets the estimate in the
    new order and its hours within and beyond the limit."""
    from effnet.experiments.records import now

    later = max(b for b in planner.setup.budgets if b != decision.get("drop_budget"))
    check, after = planner.setup.lengths[-1], planner.setup.early
    planner.decision = {**decision, "defer_budget": later, "defer_check": check}
    rows_ = estimate(planner.groups(rows, assume=True)[0], done, rates)
    decision.update(defer_budget=later, defer_after=after, defer_check=check, defer_made=now(),
                    defer_rate_source=rates.source,
                    estimate_deferred=rows_, wall_h_within=round(wall_hours([r for r in rows_ if not r["beyond"]]), 1),
                    wall_h_beyond=round(wall_hours([r for r in rows_ if r["beyond"]]), 1))


def plan_lines(rows: Sequence[dict[str, Any]], title: str) -> list[str]:
    """The printed plan: one line per group, in queue order, and the totals."""
    whats = [r["what"] + (" (assumed)" if r["assumed"] else "") for r in rows]
    w = max([len("what"), *map(len, whats)])
    lines = [title, f"  {'#':>2}  {'what':<{w}} {'T':>3} {'runs':>5} {'to train':>8} {'time':>7}"]
    for i, (what, r) in enumerate(zip(whats, rows), 1):
        lines.append(f"  {i:>2}  {what:<{w}} {r['length']:>3} {r['runs']:>5} {r['to_train']:>8} "
                     f"{format_duration(r['hours'] * 3600):>7}")
    total = sum(r["hours"] for r in rows)
    beyond = sum(r["hours"] for r in rows if r.get("beyond"))
    lines.append(f"  total: {sum(r['to_train'] for r in rows)} runs to train, {total:.1f} h of training on one "
                 f"thread each, about {total / CORES:.1f} h of wall time with --jobs {CORES} on {CORES} cores"
                 + (f" ({beyond / CORES:.1f} h of it in the stages {BEYOND})" if beyond else "")
                 + " (more seeds where a comparison is within the noise come on top)")
    return lines


__all__ = ["BEYOND", "CORES", "Group", "LENGTHS", "PAPER_POINT", "PLAN_FILE", "Planner", "QUICK_LENGTHS", "Rates",
           "Setup", "State", "TC_GRID", "WALL_LIMIT_H", "converged_length", "decide", "estimate", "length_checks",
           "measured_rates", "one_epoch_grid", "plan_lines", "point_label", "read_decision", "recipe_at", "runs_of",
           "step_rate", "wall_hours", "within_noise"]
