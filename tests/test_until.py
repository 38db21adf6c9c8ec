"""`--until TIME`: workers start no run after a deadline, nor one that the finished runs say would end after it (their
typical run, or the next run's cost at their time per unit of cost); runs under way finish, and the same command
continues later."""

import argparse
import datetime as dt
import json
import subprocess
import sys
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from effnet.cli._args import deadline
from effnet.search.grid import coefficient_grid
from effnet.search.leases import next_wall, too_late, typical_wall, until_argv
from effnet.search.study import PARAM, open_study, run_worker

GRID = coefficient_grid(0.2, 0.2)


def _fake(c):
    return c.beta, {"macs": 1, "params": 1, "resolution": 16}


def _finished(study, label: str, seconds: float) -> None:
    """A completed trial of `label` that ran `seconds`, as a worker elsewhere would have left it."""
    end = dt.datetime.now()
    trial = create_trial(state=TrialState.COMPLETE, value=1.0, params={PARAM: label},
                         distributions={PARAM: CategoricalDistribution([c.label for c in GRID])})
    trial.datetime_start, trial.datetime_complete = end - dt.timedelta(seconds=seconds), end
    study.add_trial(trial)


def test_deadline_forms():
    now = dt.datetime(2026, 12, 3, 16, 0).timestamp()
    assert deadline("18:40", now) == dt.datetime(2026, 12, 3, 18, 40).timestamp()
    assert deadline("15:00", now) == dt.datetime(2026, 12, 4, 15, 0).timestamp()  # the next such time: tomorrow
    assert deadline("+90m", now) == now + 5400 and deadline("+2h30m", now) == now + 9000
    assert deadline("+45s", now) == now + 45
    assert deadline("2026-12-03T17:05", now) == dt.datetime(2026, 12, 3, 17, 5).timestamp()
    assert deadline("@12.5", now) == 12.5  # what a parent hands its workers: taken as it is, even when passed
    assert deadline(until_argv(1234.25)[1], now) == 1234.25
    for bad in ("soon", "+", "+5q", "25:00", "18:4"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HH:MM"):
            deadline(bad, now)
    with pytest.raises(argparse.ArgumentTypeError, match="has passed"):
        deadline("2026-12-03T15:00", now)


def test_the_typical_run_is_the_median_of_the_completed_ones_that_took_time(tmp_path):
    study = optuna.create_study()
    assert typical_wall(study) == 0.0 and not too_late(study, time.time() + 5)
    for label, seconds in zip([c.label for c in GRID], (100, 300, 0.01, 200)):  # 0.01 s: a reused record
        _finished(study, label, seconds)
    assert typical_wall(study) == pytest.approx(200, abs=0.5)
    now = time.time()
    assert too_late(study, now + 150, now) and not too_late(study, now + 250, now)
    assert not too_late(study, None, now)


def test_with_costs_the_next_queued_run_is_timed_by_its_cost():
    study = optuna.create_study()
    labels = [c.label for c in GRID]
    cost = dict(zip(labels, (1.0, 2.0, 4.0, 8.0)))

    def cost_of(t):
        return cost.get(t.params.get(PARAM) or t.system_attrs.get("fixed_params", {}).get(PARAM))

    _finished(study, labels[0], 100)  # 100 s per unit of cost
    _finished(study, labels[1], 240)  # 120 s per unit
    _finished(study, labels[3], 0.01)  # reused: no time, not a rate
    assert next_wall(study, cost_of) == pytest.approx(170, abs=1)  # nothing queued: the typical run
    study.enqueue_trial({PARAM: labels[2]})  # 4 units: 4 x the median 110 s per unit
    assert next_wall(study, cost_of) == pytest.approx(440, abs=2)
    now = time.time()
    assert too_late(study, now + 300, now, cost_of) and not too_late(study, now + 300, now)  # the typical run fits
    assert not too_late(study, now + 500, now, cost_of)
    assert next_wall(study, lambda t: None) == typical_wall(study)  # costs not known: the typical run


def test_a_worker_starts_no_point_that_would_end_after_the_deadline(tmp_path):
    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    _finished(study, GRID[0].label, 100)  # the study's typical point: 100 s
    lines = []
    summary = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lines.append,
                         until=time.time() + 50)
    assert summary.stopped_at_deadline and summary.trained == []
    assert any(line.startswith("--until ") and "no new run starts (the next one would take about 1m40s)" in line
               for line in lines)
    later = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None,
                       until=time.time() + 3600)  # the same study, continued with room: the rest, each once
    assert not later.stopped_at_deadline and len(later.trained) == len(GRID) - 1 and later.status.done


def _effnet(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "effnet", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_an_experiment_past_its_deadline_trains_nothing_and_says_how_to_continue(tmp_path):
    out = tmp_path / "out"
    done = _effnet("experiments", "width-at-depth-res", "--quick", "--jobs", "2", "--threads", "1", "--until", "@1",
                   "--out", str(out), "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("--until 1970-01-01") >= 3, done.stdout  # each worker, then the parent
    assert "runs finished, report written for those; the same command continues" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["finished_runs"] == 0 and results["runs"] == [] and "more_seeds" in results
    assert "--until" not in results["command"] and "--jobs 2" in results["command"]  # when to stop is no recipe
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_nas_experiment_stops_after_a_search_cut_by_its_deadline(tmp_path):
    out = tmp_path / "out"
    done = _effnet("experiments", "nas", "--quick", "--threads", "1", "--until", "@1", "--out", str(out), "--runs",
                   str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the architecture search has 0 of 2 trials; the same command continues it" in done.stdout, done.stdout
    assert not (out / "results.json").exists() and not (out / "found.json").exists()


def test_a_bad_until_is_one_usage_line(tmp_path):
    done = _effnet("experiments", "transfer", "--until", "tomorrow", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "--until: expected HH:MM" in done.stderr and "got 'tomorrow'" in done.stderr
    done = _effnet("search", "coefficients", "--base", "efficientnet_b0", "--until", "2000-01-01T00:00", cwd=tmp_path)
    assert done.returncode == 2 and "has passed" in done.stderr, done.stderr


def test_search_workers_past_the_deadline_claim_nothing(tmp_path):
    done = _effnet("search", "coefficients", "--base", "efficientnet_b0", "--dataset", "fashion-mnist", "--steps",
                   "2", "--seeds", "2", "--jobs", "2", "--until", "@1", "--storage", "x.journal", "--no-report",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("no new run starts") == 2 and "seed 1" not in done.stdout, done.stdout
    study = optuna.load_study(study_name="coefficients-efficientnet_b0-fashion-mnist",
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(str(tmp_path / "x.journal"))))
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.COMPLETE))
