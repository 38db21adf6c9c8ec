"""`effnet experiments training-length`: the one-epoch runs are compound-vs-single's, the longer ones stretch the
whole schedule, Tc follows its rule, each stage is planned only once the results it needs exist, the estimate's
decision is made once, and the quick experiment runs end to end with a report whose numbers are results.json's."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from effnet.experiments import strategies, suite, tables
from effnet.experiments import training_length as tl
from effnet.experiments import training_length_grid as tlg
from effnet.experiments import training_length_plan as tlp
from effnet.experiments.runner import Run
from tests.test_experiments import _effnet

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "experiments"


@pytest.fixture()
def folder(tmp_path) -> Path:
    """An experiment folder beside copies of the records it reads (the one-epoch grid, compound-vs-single's
    results) and of its solved candidates, so nothing is solved and nothing under docs/ is written."""
    out = tmp_path / "training-length"
    out.mkdir()
    (tmp_path / "coefficients").mkdir()
    shutil.copy(DOCS / "coefficients" / "search.json", tmp_path / "coefficients" / "search.json")
    shutil.copy(DOCS / "compound-vs-single" / "candidates.json", out / "candidates.json")
    return out


def _rows(runs, val) -> list[dict]:
    """Finished-run rows (results.json rows: record fields and labels) with val_top1 = val(run)."""
    return [{"key": r.key, "seed": r.seed, "val_top1": val(r), "test_top1": val(r), **r.label_dict()} for r in runs]


def test_one_epoch_runs_are_compound_vs_singles_and_longer_ones_stretch_the_schedule(folder):
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    groups, state = planner.groups([])
    recorded = {r["key"] for r in json.loads((DOCS / "compound-vs-single" / "results.json").read_text())["runs"]}
    one_epoch = [r for g in groups if g.length == 1 for r in g.runs]
    assert one_epoch and all(r.key in recorded for r in one_epoch)
    assert {r.label_dict()["method"] for r in one_epoch} == {"baseline", "width", "depth", "resolution",
                                                             "compound (paper)", "compound (grid)"}
    four = tlp.recipe_at(False, 4)
    assert (four["steps"], four["warmup_epochs"], four["decay_epochs"]) == (4 * 430, 4 * 0.3, 4 * 0.1)
    assert four == strategies.longer_recipe(tlp.recipe_at(False, 1), strategies.LONGER)  # strategies' 4x runs
    assert [g.length for g in groups] == [1, 1, 4, 4, 16]  # T = 4 before 16; nothing at Tc before Tc is known
    assert state.tc is None
    widest = [r for r in groups[2].runs if r.label_dict()["method"] == "width"]
    assert {r.label_dict()["budget"] for r in widest} == {8.0}


def test_the_grid_is_the_one_epoch_searchs_22_points():
    grid = tlp.Setup(False, 3).grid
    held = json.loads((DOCS / "coefficients" / "search.json").read_text())
    assert len(grid) == 22 == held["grid_points"]
    assert tlp.PAPER_POINT not in grid  # step 0.1: planned beside the grid (`Planner.points`)
    assert {(r["alpha"], r["beta"], r["gamma"]) for r in held["rows"]} <= {(c.alpha, c.beta, c.gamma) for c in grid}


def _length_rows(gains: dict[str, dict[int, float]], seeds=3, lengths=(1, 4, 16, 32)) -> list[dict]:
    """Rows of the convergence part: per model and length, val top-1 = gains[model][T] + a seed-dependent wobble."""
    rows = []
    for method, by_length in gains.items():
        for t in lengths:
            if t in by_length:
                rows += [{"key": f"{method}{t}{s}", "seed": s, "part": "length", "method": method, "length": t,
                          "val_top1": by_length[t] + (0.3, -0.2, 0.1, 0.25, -0.15)[(s + t) % 5]}
                         for s in range(seeds)]
    return rows


@pytest.mark.parametrize(("gains", "expected"), [
    # both models flat from 4 on: Tc = 4
    ({"baseline": {1: 80, 4: 85, 16: 85.1, 32: 85}, "width": {1: 79, 4: 86, 16: 86, 32: 86.1}}, 4),
    # width still gains from 4 to 16: Tc = 16 (the cap), even though the baseline is flat
    ({"baseline": {1: 80, 4: 85, 16: 85.1}, "width": {1: 79, 4: 84, 16: 86}}, 16),
    # flat from the first epoch for both: Tc = 1
    ({"baseline": {1: 85, 4: 85.1}, "width": {1: 86, 4: 86}}, 1),
    # still gaining at 16 → 32: capped at 16
    ({"baseline": {1: 80, 4: 83, 16: 85, 32: 87}, "width": {1: 79, 4: 83, 16: 85, 32: 88}}, 16),
    # 16 missing and 4 not within the noise of 16 unknown: not decided
    ({"baseline": {1: 80, 4: 85}, "width": {1: 79, 4: 86}}, None),
])
def test_tc_is_the_shortest_length_within_the_noise_of_the_next_for_both_models(gains, expected):
    checks = tlp.length_checks(_length_rows(gains), tlp.LENGTHS, ("baseline", "width"), 3)
    assert tlp.converged_length(checks, tlp.LENGTHS, 16) == expected


def test_one_seed_never_counts_as_within_the_noise():
    rows = _length_rows({"baseline": {1: 85, 4: 85, 16: 85}, "width": {1: 85, 4: 85, 16: 85}}, seeds=1)
    checks = tlp.length_checks(rows, tlp.LENGTHS, ("baseline", "width"), 1)
    assert tlp.converged_length(checks, tlp.LENGTHS, 16) == 16 and not any(c["within_noise"] for c in checks)


def _finish(planner, rows, score):
    """Every planned run of the stages `rows` unlock, finished with val top-1 `score(run)`: the next rows."""
    groups, state = planner.groups(rows)
    done = {r["key"] for r in rows}
    return rows + _rows([r for r in tlp.runs_of(groups) if r.key not in done], score), groups, state


def test_each_stage_is_planned_once_the_results_it_needs_exist(folder):
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    flat = {1: 80.0, 4: 85.0, 16: 85.0}  # converged at 4 epochs for both models: Tc = 4 (the early length)
    best = tlp.Coefficients(1.0, 1.2, 1.2)  # the best grid point, a point the compound methods do not use

    def score(run: Run) -> float:
        labels = run.label_dict()
        if labels["part"] == "length":
            return flat.get(labels["length"], 85.0) + (0.3, -0.2, 0.1)[run.seed]
        if labels["part"] == "grid":
            point = labels["point"]
            return 86.0 if point == tlp.point_label(best) else 84.0 - 0.1 * (hash(point) % 20) + 0.05 * run.seed
        return 84.0

    rows, groups, state = _finish(planner, [], score)
    assert state.tc is None and max(g.length for g in groups) == 16
    rows, groups, state = _finish(planner, rows, score)  # T = 1, 4, 16 done: Tc = 4, the grid's first seed
    assert state.tc == 4
    assert [g.what for g in groups][-1] == "grid at Tc: every point, one seed"
    assert {r.seed for r in groups[-1].runs} == {0} and len(groups[-1].runs) == 23  # and the paper's point
    assert not any(g.what == "compound vs single at Tc" for g in groups)  # Tc = 4: those are the T = 4 runs
    rows, groups, state = _finish(planner, rows, score)  # the top 5 and the paper's point get seeds 1 and 2
    more = groups[-1].runs
    points = {r.label_dict()["point"] for r in more}
    assert {r.seed for r in more} == {1, 2} and len(points) == 6 and tlp.point_label(tlp.PAPER_POINT) in points
    assert tlp.point_label(best) in points and state.top is not None and state.best is None
    rows, groups, state = _finish(planner, rows, score)  # then compound with the Tc grid's best, at T = Tc
    assert state.best == [best.alpha, best.beta, best.gamma]
    tc_grid = groups[-1].runs
    assert {r.label_dict()["method"] for r in tc_grid} == {tlp.TC_GRID}
    assert {r.label_dict()["length"] for r in tc_grid} == {4} and {r.seed for r in tc_grid} == {0, 1, 2}
    rows, groups, state = _finish(planner, rows, score)  # last: T = 32
    assert groups[-1].length == 32 and not any(g.assumed for g in groups)
    again, _ = planner.groups(rows)
    assert [r.key for r in tlp.runs_of(again)] == [r.key for r in tlp.runs_of(groups)]  # nothing more


def test_seeds_are_added_right_after_each_comparison_stage_and_the_grids_best_waits_for_them(folder):
    """A comparison within the noise gets seeds 3 and 4 as a stage of its own right after its comparison stage
    (before the longer stages); the grid's best is chosen only once its close points have them, on all five; the
    last stage waits for every added seed."""
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None, compare=tl.comparisons, target=5)
    a, b = tlp.Coefficients(1.0, 1.2, 1.2), tlp.Coefficients(1.0, 1.1, 1.3)  # close on 3 seeds, b ahead on 5
    method_val = {"baseline": 80.0, "depth": 70.0, "width": 82.0, "resolution": 86.0, "compound (paper)": 83.0,
                  "compound (grid)": 84.0, tlp.TC_GRID: 84.0}

    def score(run: Run) -> float:
        labels, seed = run.label_dict(), run.seed
        if labels["part"] == "length":  # converged at 4 epochs: Tc = 4
            return {1: 80.0, 4: 85.0}.get(labels["length"], 85.0) + (0.3, -0.2, 0.1)[seed]
        if labels["part"] == "grid":
            point = labels["point"]
            if point in (tlp.point_label(a), tlp.point_label(b)):
                return {tlp.point_label(a): (86.0, 86.2, 85.9, 84.0, 84.0),
                        tlp.point_label(b): (85.9, 86.1, 86.0, 87.0, 87.0)}[point][seed]
            return 80.0 + 0.01 * seed
        noise = (0.0, 2.0, -2.0, 0.5, -0.5)[seed] if labels["method"] == "compound (paper)" \
            and labels["budget"] == 2.0 else 0.01 * seed  # paper's at 2x: within the noise of resolution
        return method_val[labels["method"]] + (3.0 if labels["method"] == "compound (paper)" and
                                              labels["budget"] == 2.0 else 0.0) + noise

    rows, groups, state = [], [], None
    for _ in range(12):
        rows, groups, state = _finish(planner, rows, score)
    whats = [g.what for g in groups]
    added_at_4 = next(i for i, g in enumerate(groups) if g.length == 4 and g.what.startswith("more seeds where"))
    assert whats[added_at_4 - 1] == "compound vs single" and groups[added_at_4].length == 4
    assert groups[added_at_4 + 1].length == 16  # before the longer stages
    extra = groups[added_at_4].runs
    assert {r.seed for r in extra} == {3, 4}
    assert {(r.label_dict()["method"], r.label_dict()["budget"]) for r in extra} == {
        ("compound (paper)", 2.0), ("resolution", 2.0)}
    grid_more = next(g for g in groups if g.what == "grid at Tc: more seeds where within the noise of the best")
    assert {(r.label_dict()["point"], r.seed) for r in grid_more.runs} == {
        (tlp.point_label(p), seed) for p in (a, b) for seed in (3, 4)}
    assert state.best == [b.alpha, b.beta, b.gamma]  # on five seeds; on the planned three it was a
    assert whats.index(grid_more.what) < whats.index("compound with the Tc grid's (α, β, γ)")
    assert groups[-1].length == 32
    again, _ = planner.groups(rows)
    assert [r.key for r in tlp.runs_of(again)] == [r.key for r in tlp.runs_of(groups)]  # nothing more


@pytest.mark.parametrize(("second", "says"), [((86.0, 86.4, 85.8), "no move away from α = 1 shown"),
                                              ((80.0, 80.1, 79.9), "it **moves away from α = 1**")])
def test_the_grid_at_tc_claims_a_move_from_alpha_1_only_beyond_the_noise(second, says):
    best, other = "(1.2, 1.1, 1.15)", "(1, 1.3, 1.1)"
    rows = [{"key": f"{p}{s}", "seed": s, "part": "grid", "point": p, "length": 16, "val_top1": v, "macs": 5e6}
            for p, vals in ((best, (86.2, 86.3, 86.1)), (other, second)) for s, v in enumerate(vals)]
    results = {"runs": rows, "tc": 16, "grid_points": [best, other], "grid_best": [1.2, 1.1, 1.15],
               "grid_top": [best, other], "grid_top_count": 2, "one_epoch_grid": None, "tc_grid_same_as": None}
    text = "\n".join(tl._grid_section(results))
    assert says in text


def test_the_tc_grids_search_record_puts_the_chosen_best_first_and_pairs_the_others_with_it():
    """A one-seed point whose mean is higher than the chosen best's (chosen on the seeds the best points share)
    stays below it; every row's score is the mean of its seeds and its vs_best the paired difference."""
    best, lucky, other = "(1, 1.3, 1.1)", "(1.1, 1.1, 1.2)", "(1.2, 1.1, 1.15)"
    scores = {best: (86.0, 85.0, 85.5), lucky: (87.0,), other: (85.0, 84.0, 84.5)}
    rows = [{"key": f"{p}{s}", "seed": s, "part": "grid", "point": p, "length": 16, "val_top1": v,
             "final_val_top1": v - 0.1, "macs": 5e6, "params": 4e5, "resolution": 20, "wall_s": 100.0}
            for p, vals in scores.items() for s, v in enumerate(vals)]
    results = {"runs": rows, "tc": 16, "grid_points": [other, lucky, best], "grid_best": [1.0, 1.3, 1.1]}
    out = tlg.search_rows(results)
    assert [r.coefficients for r in out] == [tlp.Coefficients(1.0, 1.3, 1.1), tlp.Coefficients(1.1, 1.1, 1.2),
                                             tlp.Coefficients(1.2, 1.1, 1.15)]
    assert out[0].vs_best is None and out[0].top1 == pytest.approx(85.5) and out[0].wall_s == 300.0
    assert out[1].vs_best.n == 1 and out[1].vs_best.mean == pytest.approx(1.0)
    assert out[2].vs_best.n == 3 and out[2].vs_best.mean == pytest.approx(-1.0)
    assert out[2].to_dict()["top1_by_seed"] == {"0": 85.0, "1": 84.0, "2": 84.5}
    assert tlg.search_rows({**results, "tc": None}) == []


def test_the_estimate_is_made_once_and_drops_3x_beyond_the_early_length_when_over_the_limit(folder):
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    slow = tlp.Rates(1e-3, {}, "test")  # seconds per unit of cost: every run takes far too long
    machine = {"cpu": "test", "isa": [], "cores": 2}
    decision = tlp.decide(folder, planner, [], set(), slow, machine)
    assert decision["drop_budget"] == 3.0 and decision["wall_h"] > tlp.WALL_LIMIT_H
    assert decision["wall_h_after_drop"] < decision["wall_h"]
    held = json.loads((folder / tlp.PLAN_FILE).read_text())
    assert held == decision
    assert tlp.decide(folder, planner, [], set(), tlp.Rates(1e-12, {}, "fast"), machine) == decision  # kept
    replanned = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    assert replanned.budgets_at(4) == (2.0, 3.0, 8.0) and replanned.budgets_at(16) == (2.0, 8.0)


def test_still_over_the_limit_defers_the_largest_budget_at_tc_and_the_32_epoch_check(folder):
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    machine = {"cpu": "test", "isa": [], "cores": 2}
    decision = tlp.decide(folder, planner, [], set(), tlp.Rates(1e-3, {}, "test"), machine)
    assert decision["defer_budget"] == 8.0 and decision["defer_check"] == 32 and decision["defer_after"] == 4
    assert decision["wall_h_within"] + decision["wall_h_beyond"] == pytest.approx(decision["wall_h_after_drop"],
                                                                                 abs=0.15)
    rows = decision["estimate_deferred"]
    beyond = [i for i, r in enumerate(rows) if r["beyond"]]
    assert beyond == [len(rows) - 2, len(rows) - 1] and rows[-1]["length"] == 32  # last, 8x at Tc then T = 32
    assert tlp.BEYOND in rows[-2]["what"] and rows[-2]["to_train"] > 0

    just_over = tlp.Rates(1e-3 * tlp.WALL_LIMIT_H / ((decision["wall_h"] + decision["wall_h_after_drop"]) / 2), {},
                          "test")  # over the limit with every budget, under it once 3x is dropped
    other = folder.parent / "other"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns(tlp.PLAN_FILE))
    dropped = tlp.decide(other, tlp.Planner(other, tlp.Setup(False, 3), log=lambda m: None), [], set(), just_over,
                         machine)
    assert dropped["drop_budget"] == 3.0 and "defer_budget" not in dropped


def test_a_deferred_budget_trains_after_the_tc_grids_compound_and_before_the_32_epoch_check(folder):
    (folder / tlp.PLAN_FILE).write_text(json.dumps({"drop_budget": 3.0, "defer_budget": 8.0, "defer_check": True}))
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None, compare=tl.comparisons, target=5)

    def score(run: Run) -> float:  # every length better than the one before: Tc = 16 (the cap); the paper's
        # point is the Tc grid's best (it has an 8x model)
        labels = run.label_dict()
        return 70.0 + labels.get("length", 1) + run.seed * 0.1 + (5.0 if labels["part"] == "grid"
                                                                    and labels["point"] == "(1.2, 1.1, 1.15)" else 0.0)

    rows, groups = [], []
    for _ in range(12):
        rows, groups, state = _finish(planner, rows, score)
    assert state.tc == 16
    whats = [g.what for g in groups]

    def budgets(what: str) -> set[float]:
        return {r.label_dict()["budget"] for r in groups[whats.index(what)].runs}

    assert budgets("compound vs single at Tc") == {1.0, 2.0}
    assert budgets("compound with the Tc grid's (α, β, γ)") == {2.0}
    deferred = next(i for i, g in enumerate(groups) if g.beyond and g.length == 16)
    assert deferred > whats.index("compound with the Tc grid's (α, β, γ)")
    assert {r.label_dict()["budget"] for r in groups[deferred].runs} == {1.0, 8.0}
    assert tlp.TC_GRID in {r.label_dict()["method"] for r in groups[deferred].runs}
    assert groups[-1].length == 32 and groups[-1].beyond and deferred < len(groups) - 1
    assert all(not g.beyond for g in groups[:deferred])


def test_a_plan_made_before_deferring_gets_its_deferral_from_the_runs_finished_when_it_was_made(folder):
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    machine = {"cpu": "test", "isa": [], "cores": 2}
    made = tlp.decide(folder, planner, [], set(), tlp.Rates(1e-3, {}, "test"), machine)
    old = {k: v for k, v in made.items() if not k.startswith(("defer", "estimate_deferred", "wall_h_within",
                                                               "wall_h_beyond"))}
    (folder / tlp.PLAN_FILE).write_text(json.dumps(old))
    later = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    runs = tlp.runs_of(later.groups([])[0])
    after = [{**row, "finished": "9999-01-01 00:00 UTC"} for row in _rows(runs, lambda r: 80.0)]
    again = tlp.decide(folder, later, after, {r["key"] for r in after}, tlp.Rates(1e-3, {}, "test"), machine,
                       finished_at={r["key"]: r["finished"] for r in after})
    assert again["made"] == old["made"] and again["defer_budget"] == 8.0  # the runs finished since do not count
    assert again["wall_h_within"] + again["wall_h_beyond"] == pytest.approx(old["wall_h_after_drop"], abs=0.15)
    assert json.loads((folder / tlp.PLAN_FILE).read_text()) == again
    assert later.deferred_at(16) == 8.0 and later.deferred_at(4) is None


def test_a_fast_machine_keeps_every_budget(folder):
    planner = tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None)
    decision = tlp.decide(folder, planner, [], set(), tlp.Rates(1e-12, {}, "test"), {"cpu": "x", "isa": [],
                                                                                   "cores": 2})
    assert decision["drop_budget"] is None and decision["wall_h"] < tlp.WALL_LIMIT_H
    assert tlp.Planner(folder, tlp.Setup(False, 3), log=lambda m: None).budgets_at(16) == (2.0, 3.0, 8.0)


def test_rates_come_from_the_same_models_on_the_same_cpu():
    runs = [Run.make("efficientnet_b0", 0, {"steps": 10, "batch_size": 8}),
            Run.make("efficientnet_b0", 0, {"steps": 10, "batch_size": 8, "resolution": 24})]
    from effnet.experiments.runner import training_cost

    records = {}
    made = ((runs[0], 100.0, "A", "2026-12-02"), (runs[0], 1000.0, "B", "2026-12-03"),
            (runs[0], 300.0, "A", "2026-12-01"))
    for i, (run, wall, cpu, day) in enumerate(made):
        records[f"k{i}"] = {"key": run.key, "seed": run.seed, "train": dict(run.train), "spec": run.spec,
                            "data": run.data, "wall_s": wall, "machine": {"cpu": cpu}, "finished": f"{day} 10:00 UTC"}
    rates = tlp.measured_rates(records, runs, "A")
    assert rates.of(runs[0]) == pytest.approx(100.0 / training_cost(runs[0]))  # this CPU's newest run
    assert rates.of(runs[1]) == rates.typical == rates.of(runs[0])  # no record of that model: the median
    measured = tlp.measured_rates(records, runs, "C", measure=lambda: 7.0)
    assert measured.typical == 7.0 and "timed" in measured.source


def test_comparisons_are_each_compound_against_the_best_method():
    rows = []
    for method, val in (("width", 85.0), ("resolution", 84.0), ("compound (paper)", 83.0), ("compound (grid)", 84.5)):
        rows += [{"key": f"{method}{s}", "seed": s, "part": "compare", "method": method, "budget": 2.0, "length": 4,
                  "val_top1": val + s * 0.1, "test_top1": val} for s in range(3)]
    results = {"runs": rows, "early": 4, "budgets": [2.0], "tc": None, "plan": {}}
    pairs = tl.comparisons(results)
    where = {"part": "compare", "budget": 2.0, "length": 4}
    assert pairs == [({**where, "method": "compound (paper)"}, {**where, "method": "width"}),
                     ({**where, "method": "compound (grid)"}, {**where, "method": "width"})]


def _compare_rows(vals: dict[str, float], same_as: dict[str, str] | None = None) -> list[dict]:
    """Three seeds of each method at 2x, T = 4; a method in `same_as` shares the runs (keys) of the one named."""
    rows = []
    for method, val in vals.items():
        key = (same_as or {}).get(method, method)
        rows += [{"key": f"{key}{s}", "seed": s, "part": "compare", "method": method, "budget": 2.0, "length": 4,
                  "val_top1": val + s * 0.1 + (0.05 if s == 1 and method == "width" else 0.0),
                  "test_top1": val + s * 0.2} for s in range(3)]
    return rows


def _candidates(rows) -> list[dict]:
    return [{"method": m, "budget": 2.0, "blocks": 16, "width_eff": 1.0, "resolution": 18, "upsampled": False,
             "ratio": 2.0, "base_macs": 2.6e6} for m in dict.fromkeys(r["method"] for r in rows)]


def test_a_compound_that_wins_is_tested_against_the_best_single_dimension():
    rows = _compare_rows({"width": 84.0, "resolution": 85.0, "compound (paper)": 86.0, "compound (grid)": 84.5})
    results = {"runs": rows, "early": 4, "budgets": [2.0], "tc": None, "plan": {}}
    assert [(a["method"], b["method"]) for a, b in tl.comparisons(results)] == [
        ("compound (grid)", "compound (paper)"), ("resolution", "compound (paper)")]
    body, cells = tl._budget_table({**results, "candidates": _candidates(rows)}, 4, 2.0)
    assert cells[4].startswith("(the best; resolution − it: -1.00") and cells[5] == "yes"
    assert any(line.startswith("- resolution is worse than compound (paper) by 1.00 pp") for line in body)


def test_a_compound_that_is_a_single_dimensions_model_is_not_compared_with_it():
    rows = _compare_rows({"width": 84.0, "resolution": 85.0, "compound (paper)": 83.0, "compound (grid)": 85.0},
                         same_as={"compound (grid)": "resolution"})
    results = {"runs": rows, "early": 4, "budgets": [2.0], "tc": None, "plan": {}}
    pairs = tl.comparisons(results)
    assert [(a["method"], b["method"]) for a, b in pairs] == [("compound (paper)", "resolution")]  # not grid's zero
    body, cells = tl._budget_table({**results, "candidates": _candidates(rows)}, 4, 2.0)
    assert cells[6] == "(the same model as resolution)"
    assert any("compound (grid) is the same model as resolution" in line for line in body)


# -- end to end (--quick) ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("training-length")
    done = _effnet("experiments", "training-length", "--quick", "--out", str(root / "training-length"), "--runs",
                   str(root / "runs"), "--threads", "1", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "training-length", done.stdout


@pytest.mark.slow
def test_quick_prints_its_plan_before_the_first_run_and_trains_every_stage(quick):
    out, stdout = quick
    plan_at = stdout.index("the plan in queue order")
    first_run = re.search(r"^\[\d+/\d+ runs.*\]", stdout, re.M)
    assert first_run and plan_at < first_run.start()
    assert re.search(r"total: \d+ runs to train, .* h of wall time", stdout)
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "training-length" and results["quick"] is True
    assert results["tc"] == 3  # one seed: never within the noise, so the cap
    parts = {(r["part"], r["length"]) for r in results["runs"]}
    assert {("length", t) for t in tlp.QUICK_LENGTHS} <= parts
    assert {("compare", 1), ("compare", 2), ("compare", 3), ("grid", 3)} <= parts
    assert any(r["method"] == tlp.TC_GRID for r in results["runs"])
    assert results["finished_runs"] == results["planned_runs"]
    assert json.loads((out / tlp.PLAN_FILE).read_text()) == results["plan"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["compare_T1.png", "compare_T2.png", "compare_T3.png", "convergence.png", "margin.png"]


@pytest.mark.slow
def test_quick_report_numbers_are_those_of_results_json(quick, tmp_path):
    out, _ = quick
    results = json.loads((out / "results.json").read_text())
    markdown, _ = suite.write_report(suite.module(tl.NAME), results, tmp_path)
    assert markdown == (out / "report.md").read_text()
    rows = results["runs"]
    table = markdown[markdown.index("## 1. How long"):markdown.index("## 2.")]
    for method in ("baseline", "width"):
        for t in tlp.QUICK_LENGTHS:
            val = tables.summary(rows, "val_top1", part="length", method=method, length=t)
            test = tables.summary(rows, part="length", method=method, length=t)
            assert re.search(rf"^\| {method} \| {t} \| [^|]+ \| {re.escape(tables.pct(val))} \| "
                             rf"{re.escape(tables.pct(test))} \| {val.n} \|$", table, re.M), (method, t)
    for line in re.findall(r"^\| \d+(?:\.\d+)?x \| \d+ \|.*$", markdown, re.M):  # the summary of every (budget, T)
        budget, length, best, test = (c.strip() for c in line.strip("|").split("|")[:4])
        where = {"part": "compare", "budget": float(budget.rstrip("x")), "length": int(length)}
        assert best == tl._best(rows, where["length"], where["budget"])[0]
        assert test == tables.pct(tables.summary(rows, method=best, **where))
    tampered = json.loads(json.dumps(results))
    row = next(r for r in tampered["runs"] if r["part"] == "length" and r["method"] == "width")
    row["val_top1"] = 12.34
    changed, _ = suite.write_report(suite.module(tl.NAME), tampered, tmp_path)
    assert "12.34" in changed and changed != markdown


@pytest.mark.slow
def test_quick_writes_the_tc_grid_as_a_search_record(quick):
    out, _ = quick
    results = json.loads((out / "results.json").read_text())
    record = json.loads((out / tlp.TC_GRID_FOLDER / tlg.SEARCH).read_text())
    assert (out / tlp.TC_GRID_FOLDER / tlg.PLOT).is_file() and record["length"] == results["tc"]
    rows = record["rows"]
    assert [rows[0][k] for k in ("alpha", "beta", "gamma")] == results["grid_best"] and record["best_chosen"]
    assert record["command"].startswith("effnet scale src/effnet/experiments/baseline.json --phi 1 --alpha ")
    trained = {r["point"] for r in results["runs"] if r["part"] == "grid" and r["length"] == results["tc"]}
    assert len(rows) == len(trained)
    for row in rows:
        label = tlp.point_label(tlp.Coefficients(row["alpha"], row["beta"], row["gamma"]))
        val = tables.summary(results["runs"], "val_top1", part="grid", point=label, length=results["tc"])
        assert row["top1"] == pytest.approx(val.mean)


@pytest.mark.slow
def test_quick_rerun_trains_nothing(quick):
    out, _ = quick
    again = _effnet("experiments", "training-length", "--quick", "--out", str(out), "--runs",
                    str(out.parent / "runs"), "--threads", "1", cwd=out.parent)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"(\d+) of \1 runs finished before .*; 0 to train", again.stdout), again.stdout
    assert "training in" not in again.stdout


@pytest.mark.slow
def test_a_device_this_machine_lacks_is_one_clear_line_and_status_2(tmp_path):
    done = _effnet("experiments", "training-length", "--quick", "--device", "cuda:9", "--out",
                   str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert done.stderr.strip().splitlines()[-1].startswith("effnet experiments training-length: error: argument "
                                                            "--device: got 'cuda:9', but this machine has")


def test_until_weighs_a_new_stages_first_run_at_the_rate_measured_before(tmp_path):
    """A stage's runs are a new study: before any of them finishes, `--until` prices the next run at the rate of
    the runs recorded before (`prior_rate`), instead of starting it however long it is."""
    import optuna

    from effnet.search import leases

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="stage")
    study.enqueue_trial({"point": "a"})
    cost_of = lambda trial: 3600.0  # noqa: E731 - one unit of cost per second of an hour
    assert leases.next_wall(study, cost_of) == 0.0  # nothing timed in this study: no estimate
    assert leases.next_wall(study, cost_of, prior_rate=2.0) == 7200.0
    now = 1_000_000.0
    assert not leases.too_late(study, now + 3600, now=now, cost_of=cost_of)
    assert leases.too_late(study, now + 3600, now=now, cost_of=cost_of, prior_rate=2.0)
    assert not leases.too_late(study, now + 9000, now=now, cost_of=cost_of, prior_rate=2.0)
