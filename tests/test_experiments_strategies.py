"""`effnet experiments strategies`: every candidate lies within 5% of its budget or is reported unreachable, the
models it shares with compound-vs-single have that experiment's run keys, and the quick experiment runs end to end
(outputs parse, nothing chosen on the test split, the report generated from results.json, a rerun trains nothing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from effnet.experiments import design, strategies, suite
from effnet.experiments.runner import RECORD
from effnet.experiments.strategies_plan import LatencySettings, latency_candidates, macs_candidates
from effnet.spec import NetSpec

REPO = Path(__file__).resolve().parents[1]
COMPOUND_VS_SINGLE = REPO / "docs" / "experiments" / "compound-vs-single" / "results.json"
SHARED = ("baseline", "depth", "width", "resolution", "compound (paper)")


@pytest.fixture(scope="module")
def macs_found() -> list[dict]:
    """The full experiment's matched-MACs candidates (2x, 3x, 8x), solved once for the module."""
    return macs_candidates(design.baseline(), strategies.BUDGETS, log=lambda m: None)


def _within(ratio: float, budget: float) -> bool:
    return abs(ratio / budget - 1) <= design.BUDGET_TOLERANCE


def _check_within_or_unreachable(entries: list[dict], ratio_field: str) -> None:
    for c in entries:
        what = f"{c['method']} at {c['budget']}x ({c['match']})"
        if c["spec"] is not None:
            assert c["within"] and _within(c[ratio_field], c["budget"]), what
        else:
            assert not c["within"], what
            nearest = [c[k] for k in ("nearest_below", "nearest_above") if c[k] is not None]
            assert nearest, f"{what}: unreachable without the nearest reachable cost"
            assert not any(_within(n, c["budget"]) for n in nearest), what


@pytest.mark.slow
def test_each_macs_candidate_is_within_its_budget_or_reported_unreachable(macs_found):
    from effnet.profile import count_macs

    assert {(c["method"], c["budget"]) for c in macs_found} == \
        {(s.name, b) for s in strategies.STRATEGIES for b in strategies.BUDGETS}
    _check_within_or_unreachable(macs_found, "ratio")
    base_macs = count_macs(design.baseline())
    for c in macs_found:
        if c["spec"] is not None and c["solver"] == "solve_scale":  # Dollar's strategies: measured, not nominal
            assert count_macs(NetSpec.from_dict(c["spec"])) == c["macs"] == round(c["ratio"] * base_macs)


def test_shared_models_have_the_compound_vs_single_run_keys(macs_found):
    """Depth, width, resolution, the paper's compound and the baseline are compound-vs-single's runs: same keys."""
    reference = json.loads(COMPOUND_VS_SINGLE.read_text())
    runs = strategies.make_runs(design.baseline(), macs_found, reference["seeds"], design.recipe(False),
                                strategies.bello_budget(strategies.BUDGETS))
    planned = {}
    for r in runs:
        labels = r.label_dict()
        if labels["length"] == 1:
            planned[(labels["method"], labels["budget"], r.seed)] = r.key
    # the planned seeds; seeds added where a comparison of compound-vs-single was within the noise are its own
    shared = [row for row in reference["runs"] if row["method"] in SHARED and row["seed"] < reference["seeds"]]
    assert len(shared) == 39  # 3 seeds x (baseline + 4 methods x 3 budgets)
    for row in shared:
        assert planned[(row["method"], row["budget"], row["seed"])] == row["key"], (row["method"], row["budget"])


@pytest.mark.slow
def test_latency_candidates_are_within_their_budget_or_reported_unreachable(macs_found):
    """With a stand-in for the timer (monotone in blocks, width and resolution): every strategy at 2x, 3x, 8x the
    baseline's latency, and a latency candidate that is an already planned model keeps that model's name."""
    def fake_latency(spec: NetSpec) -> float:
        return 1e-4 * sum(s.repeats for s in spec.stages) + 1e-9 * spec.head.channels * spec.resolution ** 2

    planned = json.loads(json.dumps(macs_found))
    found, info = latency_candidates(design.baseline(), strategies.BUDGETS, planned, LatencySettings(),
                                     log=lambda m: None, measure=fake_latency)
    assert {(c["method"], c["budget"]) for c in found} == \
        {(s.name, b) for s in strategies.STRATEGIES for b in strategies.BUDGETS}
    _check_within_or_unreachable(found, "latency_ratio")
    assert info["batch"] == 1 and info["threads"] == 1 and info["machine"]["cpu"] and len(info["load_before"]) == 3
    assert all(c["latency_s"] is not None for c in planned if c["spec"] is not None)
    names = {}
    for c in planned + found:
        if c["spec"] is not None:
            spec = NetSpec.from_dict(c["spec"])
            names.setdefault(replace(spec, name="x"), set()).add(spec.name)
    assert all(len(n) == 1 for n in names.values()), "one model planned under two names would train twice"


def test_a_budget_only_one_strategy_reaches_is_listed_but_not_trained():
    def cand(method: str, budget: float, reached: bool, blocks: int) -> dict:
        spec = replace(design.baseline(), name=f"{method}_{budget:g}") if reached else None
        return {"method": method, "match": "latency", "budget": budget, "blocks": blocks,
                "spec": None if spec is None else spec.to_dict()}

    found = [cand("depth", 2.0, True, 30), cand("width", 2.0, True, 16), cand("fast", 2.0, False, 0),
             cand("uniform", 3.0, True, 55), cand("depth", 3.0, False, 0)]
    assert [strategies.compared(c, found) for c in found] == [True, True, False, False, False]
    runs = strategies.make_runs(design.baseline(), found, 2, design.recipe(False), 3.0)
    assert sorted({r.label_dict()["method"] for r in runs}) == ["baseline", "depth", "width"]
    assert len(runs) == 2 * 3


def test_the_longer_training_stretches_the_schedule():
    longer = strategies.longer_recipe(design.recipe(False))
    assert longer["steps"] == 4 * design.RECIPE["steps"]
    assert longer["warmup_epochs"] == 4 * design.RECIPE["warmup_epochs"]
    assert longer["decay_epochs"] == 4 * design.RECIPE["decay_epochs"]
    assert {k: v for k, v in longer.items() if k not in ("steps", "warmup_epochs", "decay_epochs")} == \
        {k: v for k, v in design.RECIPE.items() if k not in ("steps", "warmup_epochs", "decay_epochs")}
    assert strategies.bello_budget(strategies.BUDGETS) == 3.0 and strategies.bello_budget((2.0,)) == 2.0


# -- end to end (--quick) ----------------------------------------------------------------------------------------

def _effnet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("strategies")
    done = _effnet("experiments", "strategies", "--quick", "--out", str(root / "strategies"), "--runs",
                   str(root / "runs"), "--threads", "1", cwd=root)  # the other xdist worker has the other core
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "strategies"


@pytest.mark.slow
def test_quick_outputs_exist_and_parse(quick):
    results = json.loads((quick / "results.json").read_text())
    assert results["experiment"] == "strategies" and results["quick"] is True
    distinct = {r["key"]: r for r in results["runs"]}  # a run serving two comparisons has a row in each
    assert results["finished_runs"] == results["planned_runs"] == len(distinct) > 0
    assert results["training_wall_s"] == pytest.approx(sum(r["wall_s"] for r in distinct.values()), abs=0.1)
    for run in results["runs"]:
        for field in ("spec", "macs", "params", "seed", "training", "val_top1", "test_top1", "wall_s"):
            assert run[field] is not None, field
        assert run["val_split"].startswith("fashion-mnist/train [55000:]")
        assert run["test_images"] == design.QUICK_TEST_IMAGES
        best = max(h["ema_top1"] for h in run["history"])  # the weights chosen on validation, not on test
        assert run["val_top1"] == best
    lengths = {r["training"]["steps"] for r in results["runs"]}
    assert lengths == set(results["bello"]["steps"])
    assert {r["match"] for r in results["runs"] if "match" in r} <= {"macs", "latency"}
    saved = json.loads((quick / "candidates.json").read_text())
    assert saved["latency"]["baseline_s"] > 0 and saved["latency"]["models_timed"] >= 1
    report = (quick / "report.md").read_text()
    assert report.startswith("# strategies (quick)")
    for heading in ("## Matched MACs", "## Matched latency", "## Training length"):
        assert heading in report
    assert "Best on validation" in report and saved["latency"]["machine"]["cpu"] in report
    pngs = sorted(p.name for p in quick.glob("*.png"))
    assert pngs == ["strategies_latency.png", "strategies_length.png", "strategies_macs.png"]
    assert all((quick / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.slow
def test_quick_report_is_generated_from_results(quick, tmp_path):
    results = json.loads((quick / "results.json").read_text())
    markdown, _ = suite.write_report(suite.module("strategies"), results, tmp_path)
    assert markdown == (quick / "report.md").read_text()
    numbers = {f"{r['test_top1']:.2f}" for r in results["runs"]}
    assert numbers & set(re.findall(r"\| (\d+\.\d\d)(?= \|)", markdown))
    tampered = json.loads(json.dumps(results))
    tampered["runs"][0]["test_top1"] = 12.34
    changed, _ = suite.write_report(suite.module("strategies"), tampered, tmp_path)
    assert "12.34" in changed and changed != markdown
    tampered.pop("discussion", None)
    unwritten, _ = suite.write_report(suite.module("strategies"), tampered, tmp_path)
    assert unwritten.rstrip().endswith("and rerun with `--report-only`.")
    assert "## Discussion\n\n> **Discussion: not written yet.** It is written from the numbers of all" in unwritten


@pytest.mark.slow
def test_quick_rerun_solves_and_trains_nothing(quick):
    root = quick.parent
    records = sorted((root / "runs").glob(f"*/{RECORD}"))
    before = {p: p.stat().st_mtime_ns for p in records}
    results = json.loads((quick / "results.json").read_text())
    results["discussion"] = ["Written by hand: kept when the results are written again."]
    (quick / "results.json").write_text(json.dumps(results))
    done = _effnet("experiments", "strategies", "--quick", "--out", str(quick), "--runs", str(root / "runs"),
                   cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((quick / "results.json").read_text())["discussion"] == results["discussion"]
    assert "## Discussion\n\nWritten by hand: kept" in (quick / "report.md").read_text()
    assert "solving" not in done.stdout  # candidates and latencies read back from candidates.json
    assert re.search(r"(\d+) of \1 runs finished before .*; 0 to train", done.stdout), done.stdout
    assert {p: p.stat().st_mtime_ns for p in records} == before


def test_a_change_of_winner_with_training_length_needs_both_differences_beyond_the_noise():
    from effnet.experiments.strategies import _length_verdict

    both = _length_verdict({1: "width", 4: "depth"}, {1: True, 4: True}, 430, 1720, 4)
    assert both.startswith("The winner between depth and width changes with the training length (width at 430 "
                           "steps, depth at 1720 steps; both differences larger than the noise).")
    one = _length_verdict({1: "width", 4: "depth"}, {1: True, 4: False}, 430, 1720, 4)
    assert "the winner changes (width at 430 steps, depth at 1720 steps), but not both" in one
    assert "a change of winner is not shown" in one
    same = _length_verdict({1: "width", 4: "width"}, {1: True, 4: False}, 430, 1720, 4)
    assert same.startswith("The winner between depth and width does not change with the training length: width "
                           "leads on validation at 430 and at 1720 steps, on test beyond the noise at 430 steps, "
                           "within it at 1720 steps.")
    assert "within the noise at both lengths" in _length_verdict({1: "depth", 4: "depth"}, {1: False, 4: False},
                                                                 430, 1720, 4)
    assert "no verdict" in _length_verdict({1: "width"}, {1: True}, 430, 1720, 4)


def test_seeds_within_noise_is_refused_where_no_comparison_adds_seeds(tmp_path):
    done = _effnet("experiments", "strategies", "--seeds-within-noise", "5", "--out", str(tmp_path / "out"),
                   cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "--seeds-within-noise applies only to the experiments that add seeds" in done.stderr
    assert "compound-vs-single" in done.stderr and "strategies trains --seeds seeds" in done.stderr
    assert not (tmp_path / "out").exists()
