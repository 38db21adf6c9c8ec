"""More seeds where a comparison is within the noise (`effnet.experiments.more_seeds`): decided on validation only,
once the planned seeds have finished, the same in every process, and run end to end by `effnet experiments`."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from effnet.experiments import more_seeds, suite
from effnet.experiments.runner import Run
from tests.conftest import tiny_spec
from tests.test_experiments import _effnet

SEEDS = 3


def _plan() -> list[Run]:
    spec = tiny_spec()
    return [Run.make(dataclasses.replace(spec, name=f"m{i}"), seed, {"steps": 5}, method=m, budget=2.0)
            for seed in range(SEEDS) for i, m in enumerate(("a", "b", "c"))]


def _rows(runs: list[Run], val: dict[str, list[float]], test: dict[str, list[float]] | None = None) -> list[dict]:
    """Records of `runs`: validation and test top-1 per method, by seed."""
    test = test or val
    return [{"key": r.key, "seed": r.seed, **r.label_dict(), "val_top1": val[r.label_dict()["method"]][r.seed],
             "test_top1": test[r.label_dict()["method"]][r.seed]} for r in runs]


def _pairs(results: dict) -> list[tuple[dict, dict]]:
    return [({"method": "b"}, {"method": "a"}), ({"method": "c"}, {"method": "a"})]


def test_a_close_pair_gets_seeds_up_to_the_target_and_a_clear_one_none():
    runs = _plan()
    # b − a on validation: +0.1, −0.3, +0.2 (within the noise); c − a: +5.0, +5.2, +4.9 (clearly better)
    rows = _rows(runs, {"a": [80.0, 81.0, 79.0], "b": [80.1, 80.7, 79.2], "c": [85.0, 86.2, 83.9]})
    decision = more_seeds.decide(_pairs, runs, rows, {}, SEEDS, target=5)
    added = sorted((r.label_dict()["method"], r.seed) for r in decision.runs)
    assert added == [("a", 3), ("a", 4), ("b", 3), ("b", 4)]
    assert [c["within_noise"] for c in decision.checked] == [True, False]
    template = next(r for r in runs if r.label_dict()["method"] == "b" and r.seed == 0)
    extra = next(r for r in decision.runs if r.label_dict()["method"] == "b" and r.seed == 3)
    assert extra.spec == template.spec and extra.train == template.train and extra.key != template.key
    meta = decision.to_meta()
    assert meta["added_runs"] == 4 and "1 of the 2 comparisons" in more_seeds.summary(meta)


def test_the_test_split_plays_no_part():
    runs = _plan()
    val = {"a": [80.0, 81.0, 79.0], "b": [80.1, 80.7, 79.2], "c": [85.0, 86.2, 83.9]}
    test = {"a": [80.0, 81.0, 79.0], "b": [90.0, 91.0, 89.0], "c": [80.0, 81.0, 79.0]}  # the opposite verdicts
    decision = more_seeds.decide(_pairs, runs, _rows(runs, val, test), {}, SEEDS, target=5)
    assert sorted({r.label_dict()["method"] for r in decision.runs}) == ["a", "b"]


def test_no_decision_while_a_planned_run_is_missing_or_the_target_is_met():
    runs = _plan()
    rows = _rows(runs, {"a": [80.0, 81.0, 79.0], "b": [80.1, 80.7, 79.2], "c": [85.0, 86.2, 83.9]})
    waiting = more_seeds.decide(_pairs, runs, rows[:-1], {}, SEEDS, target=5)
    assert waiting.runs == () and waiting.waiting == 1
    assert "1 planned runs still missing" in more_seeds.summary(waiting.to_meta())
    assert more_seeds.decide(_pairs, runs, rows, {}, SEEDS, target=SEEDS).runs == ()
    assert more_seeds.summary(more_seeds.decide(_pairs, runs, rows, {}, SEEDS, target=SEEDS).to_meta()) is None
    one = [r for r in runs if r.seed == 0]
    assert more_seeds.decide(_pairs, one, rows, {}, 1, target=5).runs == ()  # one seed: no interval, no decision


def test_the_added_runs_do_not_move_the_decision():
    """Every process plans the same runs: the decision reads only the planned seeds, whatever else finished."""
    runs = _plan()
    val = {"a": [80.0, 81.0, 79.0, 70.0, 70.0], "b": [80.1, 80.7, 79.2, 90.0, 90.0], "c": [85.0, 86.2, 83.9, 1, 1]}
    first = more_seeds.decide(_pairs, runs, _rows(runs, val), {}, SEEDS, target=5)
    later = more_seeds.decide(_pairs, runs, _rows(runs + list(first.runs), val), {}, SEEDS, target=5)
    assert [r.key for r in later.runs] == [r.key for r in first.runs]


def test_a_comparison_with_a_side_out_of_reach_counts_as_neither():
    """A candidate no model reaches has no runs: its comparison is not "beyond the noise", and JSON stays strict."""
    runs = _plan()
    rows = [r for r in _rows(runs, {"a": [80.0, 81.0, 79.0], "b": [0, 0, 0], "c": [85.0, 86.2, 83.9]})
            if r["method"] != "b"]

    def pairs(results):
        return [({"method": "b"}, {"method": "a"}), ({"method": "c"}, {"method": "a"})]

    decision = more_seeds.decide(pairs, [r for r in runs if r.label_dict()["method"] != "b"], rows, {}, SEEDS,
                                 target=5)
    assert decision.runs == () and [c["within_noise"] for c in decision.checked] == [None, False]
    meta = json.loads(json.dumps(decision.to_meta(), allow_nan=False))
    assert meta["comparisons"][0]["val_difference"] == {"mean": None, "half_width": None, "n": 0, "std": None}
    assert more_seeds.summary(meta) == ("More seeds: none needed; the one comparison of this report with paired runs "
                                        "differs by more than the noise on validation (1 more compares nothing: a "
                                        "side without paired runs).")


@pytest.mark.slow
def test_experiment_trains_the_added_seeds_and_reports_them(tmp_path):
    """`--seeds 2 --seeds-within-noise 3`: after the 2 planned seeds, the points of every comparison found within
    the noise on validation are trained with a third seed, and the report says so; a rerun trains nothing."""
    out, runs_dir = tmp_path / "width-at-depth-res", tmp_path / "runs"
    argv = ["experiments", "width-at-depth-res", "--quick", "--seeds", "2", "--seeds-within-noise", "3", "--out",
            str(out), "--runs", str(runs_dir), "--threads", "1"]
    done = _effnet(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    more = results["more_seeds"]
    assert more["target"] == 3 and more["planned_seeds"] == 2 and more["waiting_for"] == 0
    close = [c for c in more["comparisons"] if c["within_noise"]]
    assert len(more["comparisons"]) == 3 and close, "two seeds of a 12-step training should leave a close pair"
    for c in more["comparisons"]:  # the verdict is the one its own validation interval gives
        diff = c["val_difference"]
        assert c["within_noise"] == (diff["mean"] - diff["half_width"] <= 0 <= diff["mean"] + diff["half_width"])
    seeds_of = {}
    for row in results["runs"]:
        seeds_of.setdefault((row["setting"], row["width"]), set()).add(row["seed"])
    widened = {(p["setting"], p["width"]) for c in close for p in (c["a"], c["b"])}
    for point, seeds in seeds_of.items():
        assert seeds == ({0, 1, 2} if point in widened else {0, 1}), point
    assert more["added_runs"] == len(widened) == results["planned_runs"] - 8
    assert re.search(r"More seeds: \d of the 3 comparisons .* \(\d runs added", done.stdout), done.stdout[-2000:]
    report = (out / "report.md").read_text()
    assert more_seeds.summary(more) in report
    (tmp_path / "again").mkdir()
    assert report == suite.write_report(suite.module("width-at-depth-res"), results, tmp_path / "again")[0]
    again = _effnet(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "to train" in again.stdout and not re.search(r"; [1-9]\d* to train", again.stdout), again.stdout


def test_width_settings_are_compared_at_about_the_same_macs():
    """Each (d, r) setting's model nearest in MACs (log scale) to the (1, 1) setting's widest is paired with it."""
    from effnet.experiments import width_at_depth_res

    def point(setting, w, macs):
        return {"setting": setting, "w": w, "macs": macs}

    results = {"points": [point("d=1, r=1", 1.0, 10), point("d=1, r=1", 2.8, 70),
                          point("d=2, r=1", 1.0, 21), point("d=2, r=1", 2.0, 76), point("d=2, r=1", 2.8, 147),
                          point("d=1, r=1.3", 1.0, 11), point("d=1, r=1.3", 2.8, 50)]}
    pairs = width_at_depth_res.comparisons(results)
    assert pairs[:3] == [({"setting": s, "width": 2.8}, {"setting": s, "width": 1.0})
                         for s in ("d=1, r=1", "d=2, r=1", "d=1, r=1.3")]
    assert pairs[3:] == [({"setting": "d=2, r=1", "width": 2.0}, {"setting": "d=1, r=1", "width": 2.8}),
                         ({"setting": "d=1, r=1.3", "width": 2.8}, {"setting": "d=1, r=1", "width": 2.8})]
