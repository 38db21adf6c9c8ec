"""Does compound scaling win once the models have converged?  compound-vs-single trained every model for one
epoch, a budget at which extra depth (and the paper's α = 1.2) trains worst.  This experiment trains longer:

1. How long is "converged": the baseline and the widest model (width alone at 8x the MACs) at T = 1, 4, 16 and 32
   epochs, each with its whole schedule stretched to T; Tc is the shortest length whose validation top-1 (EMA
   weights) is within the noise of the next longer one for both, at most 16.
2. Compound vs single at T = 4 and T = Tc: compound-vs-single's candidates (the one-epoch runs are its own).
3. The α, β, γ grid at Tc: the 22 points at φ = 1 with one seed, then more seeds for the five best and the
   paper's (1.2, 1.1, 1.15); compound scaling with the best of them at 2x, 3x, 8x, trained at Tc.

Over the plan's wall-time limit the 3x budget is dropped beyond T = 4, then the 8x budget at Tc and the T = 32
check are deferred to the end of the queue (`training_length_plan`).

The stages, their order and the plan's estimate are `training_length_plan`'s; this module declares the runs (through
it) and writes the tables and figures from results.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from effnet.experiments import design, tables, training_length_grid
from effnet.experiments import training_length_plan as tlp
from effnet.experiments.runner import Run
from effnet.report import format_duration, format_table
from effnet.stats import SEEDS_WITHIN_NOISE, Interval

NAME = "training-length"


def _meta(planner: tlp.Planner, state: tlp.State) -> dict[str, Any]:
    s = planner.setup
    train = design.recipe(s.quick)
    held = tlp.read_decision(planner.out)
    return {"baseline": planner.base.to_dict(), "quick": s.quick, "budgets": list(s.budgets),
            "lengths": list(s.lengths), "early": s.early, "cap": s.cap, "candidates": planner.found,
            "widest": s.widest, "grid_points": [tlp.point_label(c) for c in planner.points()], "grid_top_count": s.top,
            "one_epoch_grid": tlp.one_epoch_grid(planner.out), "plan": held,
            "recipe": f"{design.recipe_text(train)}, trained for T epochs: steps, warmup_epochs and decay_epochs x T",
            "more_seeds": {"target": planner.target, "planned_seeds": s.seeds, "waiting_for": int(state.more_waiting),
                           "added_runs": state.more_added, "comparisons": state.more_checked, "staged": True},
            **state.to_meta()}


STAGED_SEEDS = True
"""The seeds added where a comparison is within the noise are planned stage by stage, right after each comparison
stage (`tlp.Planner`), not once the whole plan has finished (`suite`'s rule for the other experiments)."""


def _planner(out: Path, quick: bool, seeds: int, target: int, log) -> tlp.Planner:
    return tlp.Planner(out, tlp.Setup(quick, seeds), log=log, compare=comparisons, target=target)


def plan(out: Path, quick: bool, seeds: int, log=print, target: int = SEEDS_WITHIN_NOISE
         ) -> tuple[list[Run], dict[str, Any]]:
    """The runs that need no result yet (stage 1); `grow` adds the others as their results come in."""
    planner = _planner(out, quick, seeds, target, log)
    groups, state = planner.groups([])
    return tlp.runs_of(groups), _meta(planner, state)


def grow(out: Path, runs: list[Run], meta: dict[str, Any], rows: list[dict[str, Any]], seeds: int,
         log=print, target: int = SEEDS_WITHIN_NOISE) -> tuple[list[Run], dict[str, Any]]:
    planner = _planner(out, meta["quick"], seeds, target, log)
    groups, state = planner.groups(rows)
    return tlp.runs_of(groups), _meta(planner, state)


def prepare(options, log=print) -> None:
    """Before the first run of a sitting (the parent process only): the plan, its order and its estimated hours,
    printed; the first time, the estimate is kept in plan.json with what it implies (`tlp.decide`)."""
    from effnet.experiments import runner, suite
    from effnet.experiments.records import known_records, machine

    planner = _planner(options.out, options.quick, suite.seeds_of(options), options.seeds_within_noise, log)
    groups, _ = planner.groups([])
    while True:
        rows = runner.collect(NAME, tlp.runs_of(groups), options, options.storage)
        grown, _ = planner.groups(rows)
        if len(tlp.runs_of(grown)) == len(tlp.runs_of(groups)):
            break
        groups = grown
    assumed, _ = planner.groups(rows, assume=True)
    everything = tlp.runs_of(assumed)
    done = set(runner.finished_before(everything, options, options.storage))
    records = known_records(options.storage, options.out)
    here = machine()
    rates = tlp.measured_rates(records, everything, here["cpu"],
                               measure=lambda: tlp.step_rate(options.quick, threads=1))
    decision = tlp.decide(options.out, planner, rows, done, rates, here,
                          finished_at={k: r.get("finished") or "" for k, r in records.items()})
    assumed, _ = planner.groups(rows, assume=True)
    for line in _decision_lines(decision):
        log(f"{NAME}: {line}")
    for line in tlp.plan_lines(tlp.estimate(assumed, done, rates),
                               f"{NAME}: the plan in queue order (rates: {rates.source}; '(assumed)': a stage the "
                               "results have not unlocked yet, estimated with Tc at the cap and the grid ranked as at "
                               "one epoch):"):
        log(line)


def _decision_lines(decision: dict[str, Any]) -> list[str]:
    if not decision:
        return ["no estimate made yet (the first training command makes it)"]
    out = [f"estimate of {decision['made']}: {decision['wall_h']:.1f} h of wall time on {decision['cores']} cores "
           f"with every budget (limit {decision['wall_limit_h']:g} h)"]
    if decision.get("drop_budget"):
        after = decision["wall_h_after_drop"]
        out.append(f"over the limit: the {decision['drop_budget']:g}x budget is dropped beyond the early length, "
                   f"{after:.1f} h left" + (f", still over the limit by {after - decision['wall_limit_h']:.1f} h"
                                            if after > decision["wall_limit_h"] else ""))
    if decision.get("defer_budget"):
        out.append(f"still over: {_deferred_text(decision)}; {decision['wall_h_within']:.1f} h within the limit, "
                   f"{decision['wall_h_beyond']:.1f} h beyond it (estimated {decision['defer_made']})")
    return out


def _deferred_text(decision: dict[str, Any]) -> str:
    return (f"the {decision['defer_budget']:g}x budget beyond T = {decision['defer_after']}"
            + (f" and the T = {decision['defer_check']} check" if decision.get("defer_check") else "")
            + " are deferred (trained after every other stage)")


# -- the comparisons (more seeds where within the noise, and the report's verdicts) ------------------------------

def compare_lengths(results: dict[str, Any]) -> list[int]:
    """The lengths at which compound vs single is compared: 1, the early one and Tc (once decided)."""
    lengths = [1, results["early"]]
    if results.get("tc") is not None and results["tc"] not in lengths:
        lengths.append(results["tc"])
    return lengths


def _methods_at(rows, length: int, budget: float) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r.get("part") == "compare" and r["length"] == length and r["budget"] == budget \
                and r["method"] != "baseline" and r["method"] not in seen:
            seen.append(r["method"])
    return seen


def _budgets_at(results: dict[str, Any], length: int) -> list[float]:
    drop = (results.get("plan") or {}).get("drop_budget") if length > results["early"] else None
    return [b for b in results["budgets"] if b != drop]


def _best(rows, length: int, budget: float, *, among=None) -> tuple[str | None, str]:
    """The best method on validation at (length, budget), of `among` (default: every method with runs there)."""
    names = _methods_at(rows, length, budget)
    return tables.best_on_validation(rows, [m for m in names if among is None or among(m)], part="compare",
                                     budget=budget, length=length)


def _best_single(rows, length: int, budget: float) -> str | None:
    """The best single dimension (depth, width or resolution alone) on validation at (length, budget)."""
    return _best(rows, length, budget, among=lambda m: not _is_compound(m))[0]


def _same_model(rows, length: int, budget: float, a: str, b: str) -> bool:
    """Whether methods `a` and `b` are one model at (length, budget): a compound whose coefficients land on a
    single dimension's model (the Tc grid's (1, 1, 1.4) is resolution alone) trains the same runs, and their
    paired difference is zero by construction, not a measurement."""
    def keys(method: str) -> set[str]:
        return {r["key"] for r in rows if r.get("part") == "compare" and r["length"] == length
                and r["budget"] == budget and r["method"] == method}

    return bool(keys(a)) and keys(a) == keys(b)


def _is_compound(method: str) -> bool:
    return method.startswith("compound")


def comparisons(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each compound method against the best method (on validation) at every (budget, T), and, where a compound
    method is the best, the best single dimension against it (the paper's claim, tested); a method that is the
    same model as the best is not compared with it.  Each of the Tc grid's best points against its best."""
    rows, pairs = results["runs"], []
    for length in compare_lengths(results):
        for budget in _budgets_at(results, length):
            best, _ = _best(rows, length, budget)
            if best is None:
                continue
            where = {"part": "compare", "budget": budget, "length": length}
            pairs += [({**where, "method": m}, {**where, "method": best}) for m in _methods_at(rows, length, budget)
                      if _is_compound(m) and m != best and not _same_model(rows, length, budget, m, best)]
            single = _best_single(rows, length, budget)
            if _is_compound(best) and single is not None and not _same_model(rows, length, budget, single, best):
                pairs.append(({**where, "method": single}, {**where, "method": best}))
    if results.get("grid_best") is not None and results.get("grid_top"):
        best = tlp.point_label(tlp.Coefficients(*results["grid_best"]))
        where = {"part": "grid", "length": results["tc"]}
        pairs += [({**where, "point": p}, {**where, "point": best}) for p in results["grid_top"] if p != best]
    return pairs


# -- report ----------------------------------------------------------------------------------------------------

def report(results: dict[str, Any]) -> tuple[str, str]:
    """(report.md body, the terminal table), both from results.json alone."""
    md: list[str] = [_intro(results), ""]
    text: list[str] = []
    md += _plan_section(results)
    for section in (_length_section, _compare_section):
        body, lines = section(results)
        md, text = md + body, text + lines
    md += _grid_section(results)
    md += _where_section(results)
    md.append(tables.PAIRED_NOTE)
    md += tables.discussion(results, "all the planned runs")
    return "\n".join(md).rstrip(), "\n".join(text)


def _intro(results: dict[str, Any]) -> str:
    lengths = ", ".join(str(t) for t in results["lengths"])
    return (f"Training length: every model of this report trains for T epochs of the recipe (T = {lengths}), its "
            "warm-up and learning-rate decay stretched to T; the one-epoch runs are compound-vs-single's own. Tc is "
            "the shortest length whose validation top-1 (EMA weights) is within the noise of the next longer one "
            f"for both the baseline and the widest model (width alone at {results['widest']:g}x the MACs), at most "
            f"{results['cap']} epochs. Compound vs single is compared at T = 1, {results['early']} and Tc; the "
            "α, β, γ grid (φ = 1) is searched again at Tc, scored on validation.")


def _plan_section(results: dict[str, Any]) -> list[str]:
    held = results.get("plan") or {}
    md = ["## Plan", ""]
    if not held:
        return md + ["No estimate recorded (plan.json is made by the first training command).", ""]
    m = held["machine"]
    md.append(f"Estimated {held['made']} on {m['cpu']} ({', '.join(m['isa']) or 'no AVX-512'}), {m['cores']} cores, "
              f"before the runs it counts (rates: {held['rate_source']}): {held['wall_h']:.1f} h of wall time on "
              f"{held['cores']} cores with every budget, the stages not yet unlocked estimated with Tc at "
              f"{results['cap']} epochs.")
    if held.get("drop_budget"):
        after = held["wall_h_after_drop"]
        md.append(f"That is over the limit of {held['wall_limit_h']:g} h, so the **{held['drop_budget']:g}x budget "
                  f"is dropped** beyond T = {results['early']} (kept at T = 1 and {results['early']}, where its runs "
                  f"are recorded, shared with `strategies` or short): {after:.1f} h"
                  + (f", still over the limit by {after - held['wall_limit_h']:.1f} h." if after > held["wall_limit_h"]
                     else "."))
        rows = held["estimate_after_drop"]
        if held.get("defer_budget"):
            md.append(f"Still over it, so {_deferred_text(held)}: the stages within the limit answer every question "
                      f"of this experiment at the smaller budget first. Estimated {held['defer_made']} (rates: "
                      f"{held['defer_rate_source']}) from the runs finished when the plan was made: "
                      f"{held['wall_h_within']:.1f} h within the limit"
                      + (" (still over it)" if held["wall_h_within"] > held["wall_limit_h"] else "")
                      + f", {held['wall_h_beyond']:.1f} h beyond it, in this order:")
            rows = held["estimate_deferred"]
    else:
        md.append(f"Within the limit of {held['wall_limit_h']:g} h: every budget is kept.")
        rows = held["estimate"]
    md += ["", tables.markdown_table(["#", "stage", "T", "runs", "to train", "time (one thread)"],
                                     [(i, r["what"] + (" (assumed)" if r["assumed"] else ""), r["length"], r["runs"],
                                       r["to_train"], format_duration(r["hours"] * 3600))
                                      for i, r in enumerate(rows, 1)]), ""]
    return md


def _length_section(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    rows = results["runs"]
    md = [f"## 1. How long is converged: the baseline and width at {results['widest']:g}x\n"]
    out_rows = []
    for method in ("baseline", "width"):
        for length in results["lengths"]:
            where = {"part": "length", "method": method, "length": length}
            val, test = tables.summary(rows, "val_top1", **where), tables.summary(rows, **where)
            out_rows.append((method, length, tables.pct_of(tables.summary(rows, "train_acc_end", **where), val.n),
                             tables.pct(val), tables.pct(test), val.n))
    md += [tables.markdown_table(["model", "T (epochs)", "train acc (last 10%)", "val top-1 (EMA)", "test top-1",
                                  "seeds"], out_rows), ""]
    for check in results.get("tc_checks") or []:
        for method, c in check["models"].items():
            diff = _interval(c["val_difference"])
            md.append(f"- {method}, T = {check['long']} vs {check['short']} (validation): "
                      + tables.verdict(diff, f"T = {check['long']}", f"T = {check['short']}"))
    md += ["", f"- {_tc_sentence(results)}", ""]
    text = [format_table(["model", "T", "val top-1", "test top-1", "seeds"], [r[:2] + r[3:] for r in out_rows],
                         title=f"convergence (Tc = {results.get('tc') or 'not decided yet'})",
                         right=("T", "val top-1", "test top-1"))]
    return md, text


def _interval(d: dict[str, Any]) -> Interval:
    return Interval(*(math.nan if d[k] is None else d[k] for k in ("mean", "half_width")), d["n"],
                    math.nan if d["std"] is None else d["std"])


def _tc_sentence(results: dict[str, Any]) -> str:
    tc, cap, checks = results.get("tc"), results["cap"], results.get("tc_checks") or []
    if tc is None:
        return (f"Tc: not decided yet; it needs T = 1 to {cap} finished with the planned seeds for both models "
                f"(the plan trains compound vs single at Tc and the grid at Tc once it is).")
    last = next((c for c in checks if c["short"] == cap), None)
    if tc < cap:
        return (f"**Tc = {tc} epochs**: the shortest length within the noise of the next longer one for both models "
                "(validation, paired by seed).")
    within = {c["short"]: c["within_noise"] for c in checks}
    shorter = [t for t in results["lengths"] if t < cap and not within.get(t, False)]
    why = (f"no shorter length is within the noise of the next longer one for both models "
           f"({', '.join(str(t) for t in shorter)})" if shorter else "the cap")
    if last is None:
        end = f"whether {cap} is within the noise of {results['lengths'][-1]} is not measured yet"
    elif last["within_noise"]:
        end = f"{cap} is within the noise of {last['long']} for both models: converged by this rule"
    else:
        end = (f"**{cap} is not within the noise of {last['long']}** for both models: the models are not converged "
               f"at {cap} epochs by this rule, and the comparisons at Tc are trained at {cap} all the same (the cap)")
    return f"**Tc = {tc} epochs**: {why}; {end}."


def _compare_section(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    rows = results["runs"]
    md = ["## 2. Compound vs single at each training length\n"]
    text = []
    summary = []
    for length in compare_lengths(results):
        md.append(f"### T = {length} epoch{'s' if length > 1 else ''}{' (Tc)' if length == results.get('tc') else ''}"
                  "\n")
        where_base = {"part": "compare", "method": "baseline", "length": length}
        base = tables.summary(rows, **where_base)
        base_val = tables.summary(rows, "val_top1", **where_base)
        md.append(f"Baseline: test top-1 {tables.pct(base)} (val {tables.pct(base_val)}), {base.n} seed(s).\n")
        for budget in _budgets_at(results, length):
            body, row = _budget_table(results, length, budget)
            md += body
            summary.append(row)
        dropped = [b for b in results["budgets"] if b not in _budgets_at(results, length)]
        if dropped:
            md.append(f"- {', '.join(f'{b:g}x' for b in dropped)}: dropped at this length (see Plan).\n")
    headers = ["budget", "T", "best (val)", "best: test top-1", "compound (paper) − best", "larger than the noise?",
               "compound (grid) − best", f"{tlp.TC_GRID} − best"]
    md += ["### Every budget and length: the best method and compound's paired test difference to it\n",
           tables.markdown_table(headers, summary), ""]
    text.append(format_table(["budget", "T", "best", "test", "paper − best"],
                             [(r[0], r[1], r[2], r[3], r[4]) for r in summary], title="compound vs the best",
                             right=("T", "test")))
    md += _ranking_sentences(results)
    return md, text


def _budget_table(results: dict[str, Any], length: int, budget: float) -> tuple[list[str], tuple]:
    rows = results["runs"]
    names = _methods_at(rows, length, budget)
    out_rows = []
    for name in names:
        where = {"part": "compare", "method": name, "budget": budget, "length": length}
        c = _candidate(results, name, budget, rows)
        test = tables.summary(rows, **where)
        out_rows.append((name, c["blocks"] if c else "-", f"{c['width_eff']:.2f}" if c else "-",
                         (f"{c['resolution']}{'*' if c['upsampled'] else ''}") if c else "-",
                         f"{c['ratio']:.2f}x" if c else "-",
                         tables.pct_of(tables.summary(rows, "train_acc_end", **where), test.n),
                         tables.pct(tables.summary(rows, "val_top1", **where)), tables.pct(test), test.n))
    md = [f"#### {budget:g}x the baseline's MACs, T = {length}\n",
          tables.markdown_table(["method", "blocks", "width", "res", "MACs", "train acc (last 10%)", "val top-1",
                                 "test top-1", "seeds"], out_rows), ""]
    best, note = _best(rows, length, budget)
    cells = [f"{budget:g}x", length, "-", "-", "-", "-", "-", "-"]
    if best is None:
        deferred = length > results["early"] and (results.get("plan") or {}).get("defer_budget") == budget
        md += ["- No finished runs at this budget yet" + (f" ({tlp.BEYOND}: trained after every other stage, see "
                                                          "Plan)." if deferred else "."), ""]
        return md, tuple(cells)
    where = {"part": "compare", "budget": budget, "length": length}
    md.append(f"- Best on validation: **{best}** (test {tables.pct(tables.summary(rows, method=best, **where))})"
              f"{note}.")
    cells[2], cells[3] = best, tables.pct(tables.summary(rows, method=best, **where))
    single = _best_single(rows, length, budget)
    for i, name in ((4, "compound (paper)"), (6, "compound (grid)"), (7, tlp.TC_GRID)):
        if name not in names:
            continue
        if name == best:
            cells[i] = "(the best)"
            if single is not None and not _same_model(rows, length, budget, single, best):
                diff = tables.compare(rows, {**where, "method": single}, {**where, "method": best})
                md.append(f"- {tables.verdict(diff, single, best)}")
                cells[i] = f"(the best; {single} − it: {_diff_cell(diff)})"
                if i == 4:
                    cells[5] = _noise_word(diff)
            elif i == 4:
                cells[5] = "-"
            continue
        if _same_model(rows, length, budget, name, best):
            md.append(f"- {name} is the same model as {best} at this budget (its coefficients land on it): the "
                      "same runs, nothing to compare.")
            cells[i] = f"(the same model as {best})"
            if i == 4:
                cells[5] = "-"
            continue
        diff = tables.compare(rows, {**where, "method": name}, {**where, "method": best})
        md.append(f"- {tables.verdict(diff, name, best)}")
        cells[i] = _diff_cell(diff)
        if i == 4:
            cells[5] = _noise_word(diff)
    md.append("")
    return md, tuple(cells)


def _diff_cell(diff: Interval) -> str:
    """A paired difference in a table cell: its mean and 95% interval (one seed: the mean alone)."""
    if diff.n == 0:
        return "-"
    return f"{diff.mean:+.2f}" + (f" ({tables.ci_text(diff)})" if diff.n >= 2 else " (one seed)")


def _noise_word(diff: Interval) -> str:
    if diff.n < tables.MIN_SEEDS:
        return f"not a result ({diff.n} paired seed{'s' if diff.n != 1 else ''})"
    return "yes" if diff.excludes_zero() else "no"


def _candidate(results: dict[str, Any], name: str, budget: float, rows) -> dict[str, Any] | None:
    """The candidate entry of a method at a budget: compound-vs-single's, or the Tc grid's (from its rows)."""
    found = next((c for c in results["candidates"] if c["method"] == name and c["budget"] == budget), None)
    if found is not None:
        return found
    row = tables.first(rows, part="compare", method=name, budget=budget)
    if row is None:
        return None
    base_macs = next(c["base_macs"] for c in results["candidates"])
    spec = row["spec"]
    blocks = sum(s["repeats"] for s in spec["stages"])
    base = results["baseline"]
    return {"blocks": blocks, "width_eff": spec["head"]["channels"] / base["head"]["channels"],
            "resolution": row["resolution"], "upsampled": row["resolution"] > design.NATIVE_RESOLUTION,
            "ratio": row["macs"] / base_macs}


def _ranking_sentences(results: dict[str, Any]) -> list[str]:
    """Per budget, the best method at each length: does the ranking flip with training length?"""
    rows, out = results["runs"], []
    for budget in results["budgets"]:
        winners = [(length, _best(rows, length, budget)[0]) for length in compare_lengths(results)
                   if budget in _budgets_at(results, length)]
        winners = [(t, w) for t, w in winners if w is not None]
        if len(winners) < 2:
            continue
        names = {w for _, w in winners}
        seq = ", ".join(f"{w} at T = {t}" for t, w in winners)
        out.append(f"- {budget:g}x: best on validation {seq}: "
                   + ("the same method at every length." if len(names) == 1 else "the winner changes with the "
                      "training length (on mean validation top-1; the paired test differences above say whether "
                      "each is larger than the noise)."))
    return out + [""] if out else []


def _grid_section(results: dict[str, Any]) -> list[str]:
    rows = results["runs"]
    tc = results.get("tc")
    md = ["## 3. The α, β, γ grid (φ = 1) at one epoch and at Tc\n"]
    one = results.get("one_epoch_grid")
    if one:
        close = "; ".join(f"{c['point']} {c['top1']:.2f}" for c in one["close"]) or "none"
        best = one["best"]
        md.append(f"- One epoch (the grid search's record, coefficients/search.json): best **{best['point']}**, "
                  f"validation {best['top1']:.2f} over {best['seeds']} seeds; within its noise: {close}.")
    if tc is None:
        return md + ["- At Tc: waiting for Tc.", ""]
    out_rows = []
    best_label = tlp.point_label(tlp.Coefficients(*results["grid_best"])) if results.get("grid_best") else None
    for point in results["grid_points"]:
        where = {"part": "grid", "point": point, "length": tc}
        val = tables.summary(rows, "val_top1", **where)
        if val.n == 0:
            out_rows.append((point, "-", "-", 0, "-"))
            continue
        row = tables.first(rows, **where)
        vs = "-"
        if best_label and point != best_label:
            diff = tables.compare(rows, where, {**where, "point": best_label}, metric="val_top1")
            vs = _diff_cell(diff)
        out_rows.append((point, f"{row['macs'] / 1e6:.2f}", tables.pct(val), val.n,
                         "(best)" if point == best_label else vs))
    out_rows.sort(key=lambda r: -_mean_of(rows, r[0], tc))
    where = f"{tlp.TC_GRID_FOLDER}/{training_length_grid.SEARCH}"
    md += ["", f"At Tc = {tc} epochs, every point with one seed, then the {results['grid_top_count']} best and the "
           "paper's (1.2, 1.1, 1.15) with the planned seeds (more where within the noise of the best); as a search "
           f"record, in the format of `effnet search coefficients --format json`: [{where}]({where}) "
           f"(plot: {tlp.TC_GRID_FOLDER}/{training_length_grid.PLOT}):", "",
           tables.markdown_table(["(α, β, γ)", "MMACs", "val top-1", "seeds", "vs the best (val, paired)"], out_rows),
           ""]
    if best_label is None:
        return md + ["- The best at Tc: waiting for the best points' seeds.", ""]
    close = []
    for point in results.get("grid_top") or []:
        if point == best_label:
            continue
        where = {"part": "grid", "point": point, "length": tc}
        diff = tables.compare(rows, where, {**where, "point": best_label}, metric="val_top1")
        if tlp.within_noise(diff):
            close.append(f"{point} ({diff.mean:+.2f})")
    alpha = results["grid_best"][0]
    depthless = [p for p in close if p.startswith("(1, ")]  # α = 1 points within the best's noise
    moved = ("it stays at α = 1 (no extra depth)" if alpha <= 1 else
             f"its best has α = {alpha:g}, but {', '.join(depthless)} (α = 1) {'is' if len(depthless) == 1 else 'are'}"
             " within its noise: no move away from α = 1 shown" if depthless else
             "it **moves away from α = 1** (no α = 1 point within its noise)")
    same = results.get("tc_grid_same_as")
    md.append(f"- At Tc: best **{best_label}**; within its noise: {', '.join(close) or 'none'}. Against one epoch, "
              f"{moved}. {tlp.TC_GRID} uses it"
              + (f" (the same coefficients as {same}: the same models)." if same else "."))
    return md + [""]


def _mean_of(rows, point: str, tc: int) -> float:
    v = tables.summary(rows, "val_top1", part="grid", point=point, length=tc)
    return v.mean if v.n else -math.inf


def _where_section(results: dict[str, Any]) -> list[str]:
    counts: dict[tuple[str, str], int] = {}
    for r in _distinct(results["runs"]):
        m = r.get("machine") or results["machine"]
        key = (m["cpu"], r.get("device") or "cpu")
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return []
    return ["## Where the runs ran\n", tables.markdown_table(["machine", "device", "runs"],
                                                             [(k[0], k[1], n) for k, n in counts.items()]), ""]


def _distinct(rows):
    return list({r["key"]: r for r in rows}.values())


# -- plots -----------------------------------------------------------------------------------------------------

def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows, paths = results["runs"], []
    curves = {m: [(t, tables.summary(rows, "val_top1", part="length", method=m, length=t), False)
                  for t in results["lengths"]] for m in ("baseline", "width")}
    paths.append(tables.plot_curves(out / "convergence.png", curves, xlabel="training length (epochs)",
                                    ylabel="validation top-1, EMA (%)", integer_x=True,
                                    title=f"Validation top-1 against training length ({tables.seeds_of(curves)}, "
                                          f"95% CI; Tc = {results.get('tc') or 'not decided yet'})"))
    for length in compare_lengths(results):
        curves = {}
        base_row = tables.first(rows, part="compare", method="baseline", length=length)
        base = tables.summary(rows, part="compare", method="baseline", length=length)
        names: list[str] = []
        for budget in results["budgets"]:
            names += [m for m in _methods_at(rows, length, budget) if m not in names]
        for name in names:
            points = [(base_row["macs"] / 1e6, base, False)] if base_row else []
            for budget in _budgets_at(results, length):
                row = tables.first(rows, part="compare", method=name, budget=budget, length=length)
                if row is not None:
                    points.append((row["macs"] / 1e6, tables.summary(rows, part="compare", method=name,
                                                                     budget=budget, length=length),
                                   row["resolution"] > design.NATIVE_RESOLUTION))
            curves[name] = points
        if any(p[1].n for pts in curves.values() for p in pts):
            paths.append(tables.plot_curves(out / f"compare_T{length}.png", curves, xlabel="MMACs per image",
                                            title=f"Compound vs single-dimension scaling trained {length} epoch(s) "
                                                  f"({tables.seeds_of(curves)}, 95% CI; hollow: upsampled input)"))
    margins = {}
    for budget in results["budgets"]:
        points = []
        for length in compare_lengths(results):
            if budget not in _budgets_at(results, length):
                continue
            paper = "compound (paper)"
            other, _ = _best(rows, length, budget, among=lambda m, paper=paper: m != paper)  # the winner, or
            where = {"part": "compare", "budget": budget, "length": length}          # the runner-up to paper's
            if other is not None and paper in _methods_at(rows, length, budget) \
                    and not _same_model(rows, length, budget, other, paper):
                diff = tables.compare(rows, {**where, "method": other}, {**where, "method": paper})
                if diff.n:
                    points.append((length, diff, False))
        margins[f"{budget:g}x MACs"] = points
    if any(margins.values()):
        paths.append(_plot_margins(out / "margin.png", margins))
    return paths + training_length_grid.write(results, out)  # with the Tc grid's search.json


def _plot_margins(path: Path, margins: dict[str, list[tuple[int, Interval, bool]]]) -> Path:
    """The winner's margin over the paper's compound (paired test difference) against T, one line per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (name, points) in enumerate(margins.items()):
        if points:
            ax.errorbar([p[0] for p in points], [p[1].mean for p in points], capsize=3, marker="o", color=f"C{i}",
                        yerr=[0.0 if p[1].n < 2 else p[1].half_width for p in points], label=name)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(sorted({p[0] for points in margins.values() for p in points}))
    ax.set_xticklabels([str(t) for t in sorted({p[0] for points in margins.values() for p in points})])
    ax.minorticks_off()
    ax.set_xlabel("training length (epochs)")
    ax.set_ylabel("best other method − compound (paper), test top-1 (pp)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("The winner's margin over the paper's compound against training length\n(paired by seed, 95% CI; "
                 "below 0: the paper's compound wins, by its margin over the runner-up)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["NAME", "comparisons", "compare_lengths", "grow", "plan", "plots", "prepare", "report"]
