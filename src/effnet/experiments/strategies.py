"""Scaling strategies compared: the paper's compound scaling (α=1.2, β=1.1, γ=1.15), one dimension alone, and
Dollár, Singh & Girshick's `uniform` (a = 1/3) and `fast` (a = 0.8) scaling ("Fast and Accurate Model Scaling",
CVPR 2021), every model trained with the same recipe and seeds as `compound-vs-single`:

1. at matched MACs (2×, 3×, 8× the baseline's, ±5%);
2. at matched measured latency (2×, 3×, 8× the baseline's forward-pass time at batch 1 on one thread, ±5%);
3. at the middle MACs budget, depth, width and compound trained for the recipe's length and for 4× as long: does
   the winner between depth and width change with the training length, as Bello et al. ("Revisiting ResNets",
   2021) found (width wins short trainings, depth long ones)?

Depth, width, resolution and the paper's compound at matched MACs are `compound-vs-single`'s own models (solved on
φ by `design.candidate`), so their runs have the same keys and are reused, not trained again; `uniform` and `fast`
are solved with `scaling.solve_scale` on the nominal multiplier s.  The candidates (and every latency) are solved
and measured once and kept in `candidates.json` (`strategies_plan`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments.runner import Run
from effnet.experiments.strategies_plan import STRATEGIES, candidates
from effnet.report import format_table
from effnet.spec import NetSpec

NAME = "strategies"
BUDGETS = (2.0, 3.0, 8.0)
QUICK_BUDGETS = (2.0,)
LONGER = 4
"""The Bello part's longer training: the recipe's steps × 4, with its warm-up and decay stretched by the same
factor, so that the learning rate follows the same curve over the longer budget."""
BELLO_METHODS = ("depth", "width", "compound (paper)")


def longer_recipe(train: dict[str, Any], factor: int = LONGER) -> dict[str, Any]:
    """`train` run `factor` times as long: steps, warm-up and decay interval all × factor."""
    return {**train, "steps": train["steps"] * factor, "warmup_epochs": train["warmup_epochs"] * factor,
            "decay_epochs": train["decay_epochs"] * factor}


def bello_budget(budgets: list[float] | tuple[float, ...]) -> float:
    """The middle MACs budget (3× of 2×, 3×, 8×; the only one with --quick)."""
    return sorted(budgets)[len(budgets) // 2]


def plan(out: Path, quick: bool, seeds: int, log=print) -> tuple[list[Run], dict[str, Any]]:
    base = design.baseline()
    budgets = QUICK_BUDGETS if quick else BUDGETS
    held = candidates(out, base, budgets, quick, log=log)
    train = design.recipe(quick)
    runs = make_runs(base, held["candidates"], seeds, train, bello_budget(budgets))
    meta = {"baseline": base.to_dict(), "budgets": list(budgets), "candidates": held["candidates"],
            "latency": held["latency"], "seeds": seeds,
            "recipe": f"{design.recipe_text(train)} (the training-length part also trains {', '.join(BELLO_METHODS)} "
                      f"at {bello_budget(budgets):g}x the MACs for {LONGER}x the steps: see below)",
            "bello": {"budget": bello_budget(budgets), "methods": list(BELLO_METHODS), "factor": LONGER,
                      "steps": [train["steps"], longer_recipe(train)["steps"]],
                      "recipe": design.recipe_text(longer_recipe(train))}}
    return runs, meta


def make_runs(base: NetSpec, found: list[dict[str, Any]], seeds: int, train: dict[str, Any],
              middle: float) -> list[Run]:
    """Seed by seed: the baseline, every candidate at the recipe's length (but a budget's lone candidate: see
    `compared`), then the Bello part's longer runs."""
    longer = longer_recipe(train)
    runs = []
    for seed in range(seeds):
        runs.append(Run.make(base, seed, train, method="baseline", budget=1.0, length=1))
        for c in found:
            if compared(c, found):
                runs.append(Run.make(NetSpec.from_dict(c["spec"]), seed, train, method=c["method"],
                                     budget=c["budget"], match=c["match"], length=1))
        for c in found:
            if c["spec"] is not None and c["match"] == "macs" and c["budget"] == middle \
                    and c["method"] in BELLO_METHODS:
                runs.append(Run.make(NetSpec.from_dict(c["spec"]), seed, longer, method=c["method"],
                                     budget=c["budget"], match="macs", length=LONGER))
    return runs


def compared(candidate: dict[str, Any], found: list[dict[str, Any]]) -> bool:
    """Whether a candidate is trained: it reached its budget and so did at least one other strategy.  A budget that
    only one strategy reaches within the solver's range compares nothing, and its lone model is the most expensive
    of the plan (the search went far up in s to get there), so it is listed with its cost but not trained."""
    rivals = [c for c in found if c["match"] == candidate["match"] and c["budget"] == candidate["budget"]
              and c["spec"] is not None]
    return candidate["spec"] is not None and len(rivals) >= 2


# -- report ----------------------------------------------------------------------------------------------------

def _names(results: dict[str, Any]) -> list[str]:
    return [s.name for s in STRATEGIES if any(c["method"] == s.name for c in results["candidates"])]


def _cands(results: dict[str, Any], match: str, budget: float) -> list[dict[str, Any]]:
    return [c for c in results["candidates"] if c["match"] == match and c["budget"] == budget]


def _unreachable(c: dict[str, Any], unit: str) -> str:
    sides = [f"{c[k]:.2f}x" for k in ("nearest_below", "nearest_above") if c.get(k) is not None]
    return f"no model within 5% of the {unit}" + (f" (nearest: {' and '.join(sides)})" if sides else "")


def _how(c: dict[str, Any]) -> str:
    return f"phi {c['phi']:.3f}" if c["solver"] == "solve_phi" else f"s {c['scale']:.3f}"


def report(results: dict[str, Any]) -> tuple[str, str]:
    """(report.md body, the terminal table), both from results.json alone."""
    rows = results["runs"]
    md, text = [_intro(results), ""], []
    base = tables.summary(rows, method="baseline")
    md.append(f"Baseline ({results['baseline']['name']}, 1.00x MACs, {_ms(results['latency']['baseline_s'])}):"
              f" test top-1 {tables.pct(base)} (val {tables.pct(tables.summary(rows, 'val_top1', method='baseline'))}"
              f"), {base.n} seed(s).\n")
    for match, title in (("macs", "Matched MACs"), ("latency", "Matched latency")):
        md.append(f"## {title}\n")
        if match == "latency":
            md.append(_latency_text(results["latency"]) + "\n")
        for budget in results["budgets"]:
            body, lines = _budget_section(results, match, budget)
            md += body
            text += lines
    body, lines = _bello_section(results)
    md += body
    text += lines
    md.append(tables.PAIRED_NOTE)
    md += tables.discussion(results, "all the planned runs")
    return "\n".join(md).rstrip(), "\n".join(text)


def _intro(results: dict[str, Any]) -> str:
    return ("Strategies: the paper's compound (α=1.2, β=1.1, γ=1.15); depth, width or resolution alone; "
            "Dollár et al.'s uniform (a=1/3: d = s^(1/3), w = r = s^(1/6), so d, w² and r² each grow as s^(1/3)) "
            "and fast (a=0.8: d = s^0.1, w = s^0.4, r = s^0.05), where s is the nominal MACs multiplier. Depth, "
            "width, resolution and compound at matched MACs are the `compound-vs-single` models (φ solved on the "
            "same baseline and tolerance), so those runs are shared with it; every other candidate is solved on s "
            "with `solve_scale`. The best method at each budget is the one with the highest mean validation "
            "top-1; every other method is compared with it on test top-1, paired by seed.")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def _latency_text(info: dict[str, Any]) -> str:
    m = info["machine"]
    load = ", ".join(f"{x:.2f}" for x in info["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in info["load_after"])
    return (f"Latency: one forward pass of batch {info['batch']} at the model's resolution, {info['threads']} torch "
            f"thread, the eval-time model (`model.eval()`, `torch.inference_mode()`, dropout and drop-path off, "
            f"BatchNorm not folded, random weights), the {info['statistic']} of {info['repeats']} timed passes "
            f"after {info['warmup']} warm-up passes; {info['models_timed']} distinct models timed once each and "
            f"kept in candidates.json. Measured {info['measured']} on {m['cpu']} ({', '.join(m['isa']) or 'no AVX'})"
            f", {m['cores']} cores, torch {m['torch']}; load average (1, 5, 15 min) {load} before and {load_after} "
            f"after the measurements (a load near or above the core count means other work shared the cores). "
            f"Budgets: 2x, 3x, 8x the baseline's {_ms(info['baseline_s'])}, ±5%; the search stops at "
            f"s = {info['max_scale']:g}x the baseline's nominal MACs (beyond it a strategy is reported as not "
            "reaching the budget, with its largest latency).")


def _budget_section(results: dict[str, Any], match: str, budget: float) -> tuple[list[str], list[str]]:
    rows = results["runs"]
    unit = "MACs budget" if match == "macs" else "latency budget"
    out_rows, lines = [], []
    for c in _cands(results, match, budget):
        where = {"method": c["method"], "budget": budget, "match": match, "length": 1}
        test = tables.summary(rows, **where)
        if c["spec"] is None:
            out_rows.append((c["method"], "-", "-", "-", "-", _unreachable(c, unit), "-", "-", "-", "-", 0))
            continue
        out_rows.append((c["method"], _how(c), c["blocks"], f"{c['width_eff']:.2f}",
                         f"{c['resolution']}{'*' if c['upsampled'] else ''}", f"{c['ratio']:.2f}x",
                         f"{_ms(c['latency_s'])} ({c['latency_ratio']:.2f}x)",
                         tables.pct_of(tables.summary(rows, "train_acc_end", **where), test.n),
                         tables.pct(tables.summary(rows, "val_top1", **where)), tables.pct(test), test.n))
    headers = ["method", "found with", "blocks", "width", "res", "MACs", "latency", "train acc (last 10%)",
               "val top-1", "test top-1", "seeds"]
    what = "MACs" if match == "macs" else "latency"
    md = [f"### {budget:g}x the baseline's {what}\n", tables.markdown_table(headers, out_rows), ""]
    lone = [c["method"] for c in _cands(results, match, budget) if c["spec"] is not None
            and not compared(c, results["candidates"])]
    if lone:
        md.append(f"- Only {lone[0]} reaches this budget: nothing to compare it with, so it is not trained.")
    else:
        md += [f"- {s}" for s in _verdicts(rows, [c["method"] for c in _cands(results, match, budget)],
                                           {"budget": budget, "match": match, "length": 1})]
    md.append("")
    reached = [r[1] != "-" for r in out_rows]  # an unreachable budget's MACs cell says why: a note here
    lines.append(format_table(["method", "MACs", "latency", "val top-1", "test top-1", "seeds", "note"],
                              [(r[0], r[5] if ok else "-", r[6], r[8], r[9], r[10], "" if ok else r[5])
                               for r, ok in zip(out_rows, reached)], title=f"{what} {budget:g}x",
                              right=("MACs", "latency", "val top-1", "test top-1")))
    return md, lines


def _verdicts(rows: list[dict[str, Any]], names: list[str], where: dict[str, Any],
              stated: frozenset[str] = frozenset()) -> list[str]:
    """Which method is best on validation, and every other method's paired test difference against it (but not
    the pair `stated`, when its comparison is already written out)."""
    best, note = tables.best_on_validation(rows, names, **where)
    if best is None:
        return ["No finished runs at this budget yet."]
    val, test = (tables.summary(rows, metric, method=best, **where) for metric in ("val_top1", "test_top1"))
    out = [f"Best on validation: **{best}** (val {tables.pct(val)}, test {tables.pct(test)}){note}."]
    for name in names:
        if name != best and {name, best} != stated:
            diff = tables.compare(rows, {"method": name, **where}, {"method": best, **where})
            if diff.n:
                out.append(tables.verdict(diff, name, best))
    return out


def _length_verdict(winners: dict[int, str], clear: dict[int, bool], short: int, long_: int, factor: int) -> str:
    """Whether the winner between depth and width changes with the training length: a change is stated only when,
    at both lengths, the winner is ahead on test by more than the noise."""
    found = "Bello et al. found width better for short trainings and depth better for long ones."
    if len(winners) < 2:
        return "Depth and width have not both finished at both lengths yet: no verdict."
    steps = {1: short, factor: long_}
    if winners[1] == winners[factor]:
        ahead = [f"{steps[k]} steps" for k in (1, factor) if clear[k]]
        within = [f"{steps[k]} steps" for k in (1, factor) if not clear[k]]
        lead = ("beyond the noise at both lengths" if not within else "within the noise at both lengths" if not ahead
                else f"beyond the noise at {ahead[0]}, within it at {within[0]}")
        return (f"The winner between depth and width does not change with the training length: {winners[1]} leads "
                f"on validation at {short} and at {long_} steps, on test {lead}. {found}")
    means = f"{winners[1]} at {short} steps, {winners[factor]} at {long_} steps"
    if not all(clear.values()):
        return (f"On mean validation top-1 the winner changes ({means}), but not both test differences are larger "
                f"than the noise: a change of winner is not shown. {found}")
    return (f"The winner between depth and width changes with the training length ({means}; both differences "
            f"larger than the noise). {found}")


def _bello_section(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    rows, bello = results["runs"], results["bello"]
    budget, factor = bello["budget"], bello["factor"]
    md = [f"## Training length (Bello et al. 2021): {budget:g}x the baseline's MACs, {bello['steps'][0]} and "
          f"{bello['steps'][1]} steps\n",
          f"The longer runs train {factor}x as many steps with the warm-up and the decay interval stretched by the "
          f"same factor (the learning rate follows the same curve): {bello['recipe']}.\n"]
    out_rows = []
    for name in bello["methods"]:
        cells = [name]
        for length in (1, factor):
            where = {"method": name, "budget": budget, "match": "macs", "length": length}
            test = tables.summary(rows, **where)
            cells += [tables.pct_of(tables.summary(rows, "train_acc_end", **where), test.n),
                      tables.pct(tables.summary(rows, "val_top1", **where)), tables.pct(test)]
        out_rows.append(tuple(cells))
    short, long_ = bello["steps"]
    headers = ["method"] + [f"{h} ({n} steps)" for n in (short, long_) for h in ("train acc", "val top-1", "test")]
    md += [tables.markdown_table(headers, out_rows), ""]
    winners, clear = {}, {}
    for length, steps in ((1, short), (factor, long_)):
        where = {"budget": budget, "match": "macs", "length": length}
        if all(tables.by_seed(rows, "val_top1", method=m, **where) for m in ("depth", "width")):
            winner, note = tables.best_on_validation(rows, ("depth", "width"), **where)
            loser = "width" if winner == "depth" else "depth"
            diff = tables.compare(rows, {"method": winner, **where}, {"method": loser, **where})
            winners[length] = winner
            clear[length] = diff.n >= tables.MIN_SEEDS and diff.excludes_zero() and diff.mean > 0
            md.append(f"- {steps} steps: {winner} wins on validation{note}; "
                      + tables.verdict(diff, f"{winner}-only", f"{loser}-only (test, paired)"))
        for s in _verdicts(rows, bello["methods"], where, stated=frozenset({"depth", "width"})):
            md.append(f"- {steps} steps: {s}")
    md.append(f"- {_length_verdict(winners, clear, short, long_, factor)}")
    md.append("")
    lines = [format_table(["method", f"test ({short} steps)", f"test ({long_} steps)"],
                          [(r[0], r[3], r[6]) for r in out_rows], title=f"length x1 / x{factor} at {budget:g}x MACs",
                          right=(f"test ({short} steps)", f"test ({long_} steps)"))]
    return md, lines


# -- plots -----------------------------------------------------------------------------------------------------

def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows = results["runs"]
    base, base_row = tables.summary(rows, method="baseline"), tables.first(rows, method="baseline")
    paths = []
    for match, x_of, xlabel, title in (
            ("macs", lambda c: c["macs"] / 1e6, "MMACs per image", "at matched MACs"),
            ("latency", lambda c: c["latency_s"] * 1e3, "latency (ms, batch 1, one thread)", "at matched latency")):
        curves: dict[str, list] = {}
        for name in _names(results):
            points = []
            if base_row is not None:
                points.append((base_row["macs"] / 1e6 if match == "macs" else
                               results["latency"]["baseline_s"] * 1e3, base, False))
            for c in results["candidates"]:
                if c["method"] == name and c["match"] == match and c["spec"] is not None:
                    where = {"method": name, "budget": c["budget"], "match": match, "length": 1}
                    points.append((x_of(c), tables.summary(rows, **where), bool(c.get("upsampled"))))
            curves[name] = points
        paths.append(tables.plot_curves(out / f"strategies_{match}.png", curves, xlabel=xlabel,
                                        title=f"Scaling strategies {title} (Fashion-MNIST, "
                                              f"{tables.seeds_of(curves)}, 95% CI; hollow: upsampled input)"))
    bello = results["bello"]
    curves = {name: [(steps, tables.summary(rows, method=name, budget=bello["budget"], match="macs", length=length),
                      False) for steps, length in zip(bello["steps"], (1, bello["factor"]))]
              for name in bello["methods"]}
    paths.append(tables.plot_curves(out / "strategies_length.png", curves, xlabel="training steps",
                                    title=f"Top-1 vs training length at {bello['budget']:g}x the baseline's MACs "
                                          f"({tables.seeds_of(curves)}, 95% CI)"))
    return paths


__all__ = ["BELLO_METHODS", "BUDGETS", "LONGER", "NAME", "QUICK_BUDGETS", "bello_budget", "compared", "longer_recipe",
           "make_runs", "plan", "plots", "report"]
