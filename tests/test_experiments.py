"""The trained experiments end to end (`effnet experiments NAME --quick`): outputs exist and parse, report.md is
generated from results.json alone, nothing is chosen on the test split, a rerun trains nothing; the runner's
identity, statistics and resume."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet import stats
from effnet.experiments import design, nas, suite
from effnet.experiments.runner import RECORD, Progress, Run, starting, train_run, training_cost
from effnet.spec import NetSpec
from tests.conftest import tiny_spec

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("compound-vs-single", "single-dims", "width-at-depth-res", "transfer", "nas")


def _effnet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict[str, Path]:
    """Every experiment run once with --quick into one temporary tree (run folders shared, as by default)."""
    root = tmp_path_factory.mktemp("experiments")
    outs = {}
    for name in EXPERIMENTS:
        out = root / name
        done = _effnet("experiments", name, "--quick", "--out", str(out), "--runs", str(root / "runs"), "--threads",
                       "1", cwd=root)  # one thread: the other xdist worker has the other core
        assert done.returncode == 0, done.stderr[-3000:]
        outs[name] = out
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_outputs_exist_and_parse(quick, name):
    out = quick[name]
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == name and results["quick"] is True
    distinct = {r["key"]: r for r in results["runs"]}  # a run serving two comparisons has a row in each
    assert results["finished_runs"] == results["planned_runs"] == len(distinct) > 0
    assert results["training_wall_s"] == pytest.approx(sum(r["wall_s"] for r in distinct.values()), abs=0.1)
    for run in results["runs"]:
        for field in ("spec", "macs", "params", "seed", "training", "val_top1", "test_top1", "wall_s"):
            assert run[field] is not None, field
        assert 0 <= run["test_top1"] <= 100 and 0 <= run["val_top1"] <= 100
    assert (out / "report.md").read_text().startswith(f"# {name} (quick)")
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_nothing_is_chosen_on_the_test_split(quick, name):
    """Validation is a holdout of the training images; the test split is only evaluated after training."""
    for run in json.loads((quick[name] / "results.json").read_text())["runs"]:
        assert run["val_split"].startswith("fashion-mnist/train [55000:]"), run["val_split"]
        assert run["test_split"].startswith("fashion-mnist/test")  # --quick tests a fixed subset of it
        assert run["test_images"] == design.QUICK_TEST_IMAGES
        assert run["selected_step"] in [h["step"] for h in run["history"]]
        best = max(h["ema_top1"] for h in run["history"])  # the chosen step is the best *validation* epoch
        assert run["val_top1"] == best


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_report_is_generated_from_results(quick, name, tmp_path):
    """report.md is exactly what results.json renders to, and its table means are the records' means."""
    out = quick[name]
    results = json.loads((out / "results.json").read_text())
    markdown, _ = suite.write_report(suite.module(name), results, tmp_path)
    assert markdown == (out / "report.md").read_text()
    numbers = {f"{r['test_top1']:.2f}" for r in results["runs"]}  # one seed: the mean is the run's value
    shown = set(re.findall(r"\| (\d+\.\d\d)(?= \|)", markdown))  # adjacent cells share their "|"
    assert shown & numbers, "no test top-1 of results.json appears in the report's tables"
    tampered = json.loads(json.dumps(results))
    tampered["runs"][0]["test_top1"] = 12.34
    changed, _ = suite.write_report(suite.module(name), tampered, tmp_path)
    assert "12.34" in changed and changed != markdown


@pytest.mark.slow
def test_rerun_trains_nothing(quick):
    out = quick["compound-vs-single"]
    root = out.parent
    records = sorted((root / "runs").glob(f"*/{RECORD}"))
    before = {p: p.stat().st_mtime_ns for p in records}
    done = _effnet("experiments", "compound-vs-single", "--quick", "--out", str(out), "--runs", str(root / "runs"),
                   cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "solving" not in done.stdout  # the candidates were read back, not solved again
    assert {p: p.stat().st_mtime_ns for p in records} == before
    assert not re.search(r", \d+s$", done.stdout, re.M) or "cached" in done.stdout


@pytest.mark.slow
def test_runs_shared_between_experiments(quick):
    """The baseline is planned by compound-vs-single and by single-dims: one run folder, one record."""
    a = json.loads((quick["compound-vs-single"] / "results.json").read_text())
    b = json.loads((quick["single-dims"] / "results.json").read_text())
    key_a = next(r["key"] for r in a["runs"] if r["method"] == "baseline")
    key_b = next(r["key"] for r in b["runs"] if r["method"] == "baseline")
    assert key_a == key_b


@pytest.mark.slow
def test_a_fresh_checkout_retrains_nothing(quick, tmp_path):
    """Run folders are not committed; the committed results.json and journal are enough to rebuild the report."""
    import shutil

    out = tmp_path / "compound-vs-single"
    shutil.copytree(quick["compound-vs-single"], out)
    done = _effnet("experiments", "compound-vs-single", "--quick", "--out", str(out), "--runs",
                   str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list((tmp_path / "runs").glob(f"*/{RECORD}"))  # nothing trained here
    assert re.search(r"(\d+) of \1 runs finished before .*; 0 to train", done.stdout), done.stdout
    before = json.loads((quick["compound-vs-single"] / "results.json").read_text())["runs"]
    after = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["key"], r["test_top1"], r["method"]) for r in after] == \
        [(r["key"], r["test_top1"], r["method"]) for r in before]


@pytest.mark.slow
def test_report_only_keeps_the_training_command_and_names_the_baseline(quick, tmp_path):
    """--report-only rewrites report.md from the records; the command it states stays the one that trained them."""
    import shutil

    out = tmp_path / "single-dims"
    shutil.copytree(quick["single-dims"], out)
    before = json.loads((out / "results.json").read_text())
    done = _effnet("experiments", "single-dims", "--quick", "--report-only", "--out", str(out), "--runs",
                   str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads((out / "results.json").read_text())
    assert after["command"] == before["command"] and "--report-only" not in after["command"]
    base = next(r for r in after["runs"] if r["method"] == "baseline")
    report = (out / "report.md").read_text()
    assert f"| {base['blocks']} (baseline) |" in report and f"| {base['resolution']} (baseline) |" in report


def test_the_nas_space_holds_the_b0_like_baseline():
    """The searched and the hand-made baseline compete in one space: the B0-like baseline is one of its points."""
    from effnet.search.space import load_space

    space, base = load_space(nas.space_path()), design.baseline()
    blocks = {(1, 0.25): "mbconv1", (6, 0.25): "mbconv6"}
    point = {}
    for i, stage in enumerate(base.stages, 1):
        point |= {f"s{i}_block": blocks[(stage.expand_ratio, stage.se_ratio)], f"s{i}_kernel": stage.kernel,
                  f"s{i}_se_ratio": stage.se_ratio, f"s{i}_repeats": stage.repeats, f"s{i}_width": 1.0}
    spec = space.spec(point, resolution=base.resolution, num_classes=base.num_classes, name=base.name)
    assert spec.to_dict() == base.to_dict()


def test_the_matched_baseline_has_the_searched_specs_macs():
    """The hand-made baseline of similar cost: the B0-like one compound-scaled (phi < 0 below T) to the searched
    spec's MACs within the budget tolerance; a searched spec already at T is matched by the baseline itself."""
    from effnet.profile import count_macs
    from effnet.scaling import scale

    base = design.baseline()
    small = scale(base, 1.0, 0.6, 0.75, name="small")
    matched, phi = nas.matched_spec(base, small)
    assert phi < 0 and abs(count_macs(matched) / count_macs(small) - 1) <= design.BUDGET_TOLERANCE
    assert nas.matched_spec(base, base) == (base, 0.0)


@pytest.mark.slow
def test_nas_scales_the_searched_spec_and_the_baseline_alike(quick):
    """nas trains the search's best-reward spec and the B0-like baseline at the same phis, paired by seed."""
    out = quick["nas"]
    results = json.loads((out / "results.json").read_text())
    search = json.loads((out / "search.json").read_text())
    found = NetSpec.from_json((out / "found.json").read_text())
    assert found.name.endswith(f"_t{search['best']['trial']}") and results["found"] == found.to_dict()
    assert search["counts"].get("COMPLETE", 0) + search["counts"].get("complete", 0) >= 1
    phis = sorted({p["phi"] for p in results["points"]})
    assert phis == list(nas.QUICK_PHIS)
    for phi in phis:
        arches = {r["arch"] for r in results["runs"] if r["phi"] == phi}
        assert arches == {"B0-like", "B0-like, matched", "searched"}
    matched = NetSpec.from_dict(results["matched"])
    assert matched.to_dict() == nas.matched_spec(design.baseline(), found)[0].to_dict()
    searched0 = next(r for r in results["runs"] if r["arch"] == "searched" and r["phi"] == 0)
    assert searched0["spec"] == found.to_dict()
    report = (out / "report.md").read_text()
    assert "--space SPACE" in report and str(nas.space_path().parent) not in report  # no machine path
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_known_records_come_from_neighbouring_results(tmp_path):
    """A run another experiment finished is found by key, without that experiment's labels."""
    from effnet.experiments.runner import known_records

    (tmp_path / "other").mkdir()
    row = {"key": "abc", "val_top1": 70.0, "test_top1": 69.0, "method": "width", "budget": 2.0}
    (tmp_path / "other" / "results.json").write_text(json.dumps({"runs": [row]}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    found = known_records(None, tmp_path / "this")
    assert found == {"abc": {"key": "abc", "val_top1": 70.0, "test_top1": 69.0}}


def test_a_recorded_row_wins_over_a_run_trained_again(tmp_path):
    """A run trained again later (e.g. for its checkpoint, on another CPU) does not change what was reported."""
    from effnet.experiments.runner import Options, collect

    run = Run.make(tiny_spec(), 0, {"steps": 5}, method="width", budget=2.0)
    out, runs_dir = tmp_path / "this", tmp_path / "runs"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps({"runs": [{"key": run.key, "test_top1": 80.0}]}))
    (runs_dir / run.key).mkdir(parents=True)
    (runs_dir / run.key / RECORD).write_text(json.dumps({"key": run.key, "test_top1": 70.0, "train_acc_end": 1.0}))
    rows = collect("x", [run], Options(out=out, runs_dir=runs_dir), str(tmp_path / "none.journal"))
    assert [(r["test_top1"], r["method"]) for r in rows] == [(80.0, "width")]
    (tmp_path / "other" / "results.json").unlink()  # not recorded anywhere: the run folder's record is used
    rows = collect("x", [run], Options(out=out, runs_dir=runs_dir), str(tmp_path / "none.journal"))
    assert [r["test_top1"] for r in rows] == [70.0]


def test_run_identity_ignores_labels():
    spec = tiny_spec()
    a = Run.make(spec, 0, {"steps": 5}, method="depth", budget=2.0)
    b = Run.make(spec, 0, {"steps": 5}, method="width", budget=3.0)
    assert a.key == b.key
    assert Run.make(spec, 1, {"steps": 5}).key != a.key
    assert Run.make(spec, 0, {"steps": 6}).key != a.key


def test_a_runs_training_cost_is_its_activations_times_the_images_it_trains():
    from effnet.profile import count_activations

    spec = tiny_spec()
    short = training_cost(Run.make(spec, 0, {"steps": 5, "batch_size": 16}))
    assert short == count_activations(spec) * 5 * 16
    assert training_cost(Run.make(spec, 0, {"steps": 20, "batch_size": 16})) == 4 * short
    assert training_cost(Run.make(spec, 0, {"steps": 5, "batch_size": 16, "resolution": 64})) > 3 * short
    assert training_cost(Run.make(spec, 0, {"epochs": 1.0})) is None  # epochs: images not known here


def test_the_eta_weighs_the_runs_left_by_their_cost():
    costs = {"a": 1.0, "b": 4.0, "c": 1.0}
    progress = Progress(total=3, to_train=frozenset(costs), cost=costs.get)
    assert progress.line(jobs=1) == "[0/3 runs]"  # nothing trained yet: no ETA
    progress.finished, progress.done, progress.trained = {"a"}, 1, {"a": 100.0}
    assert progress.line(jobs=1) == "[1/3 runs, ETA 8m20s]"  # 5 units at 100 s each
    assert progress.line(jobs=2) == "[1/3 runs, ETA 4m10s]"
    progress.cost = lambda label: None  # costs not known: runs left x the mean wall time
    assert progress.line(jobs=1) == "[1/3 runs, ETA 3m20s]"


def test_interval_and_paired_difference():
    i = stats.interval([1.0, 2.0, 3.0])
    assert i.mean == 2.0 and math.isclose(i.std, 1.0)
    assert math.isclose(i.half_width, 4.303 / math.sqrt(3), rel_tol=1e-9)
    assert not i.excludes_zero() or i.low > 0
    d = stats.paired_difference({0: 80.0, 1: 82.0, 2: 81.0}, {0: 79.0, 1: 81.1, 2: 79.9, 3: 50.0})
    assert d.n == 3 and math.isclose(d.mean, (1.0 + 0.9 + 1.1) / 3)
    assert d.excludes_zero()  # a consistent +1 pp is significant when paired, however noisy the means
    assert math.isnan(stats.interval([5.0]).half_width)
    assert stats.t_critical(2) == 4.303


_KILLABLE = r"""
import json, sys, time
from pathlib import Path
from effnet.experiments import runner
from effnet.spec import NetSpec
from effnet.train import loop
original = loop.Trainer._step
def slow(self, *a):
    time.sleep(float(sys.argv[3]))
    return original(self, *a)
loop.Trainer._step = slow
runner.CHECKPOINT_EVERY = 4
run = runner.Run.make(NetSpec.from_json(Path(sys.argv[1]).read_text()), 0, json.loads(sys.argv[2]))
runner.train_run(run, Path(sys.argv[4]), threads=1)
"""


def test_a_verdict_needs_three_paired_seeds_and_reads_true_when_rounded():
    from effnet.experiments.tables import verdict
    from effnet.stats import Interval

    assert verdict(Interval(-3.63, 2.35, 3, 1.0), "a", "b") == \
        "a is worse than b by 3.63 pp (95% CI -5.98 to -1.28, 3 paired seeds): larger than the noise."
    assert verdict(Interval(1.0, 2.0, 5, 1.0), "a", "b") == \
        "a vs b: +1.00 pp (95% CI -1.00 to +3.00, 5 paired seeds): within the noise, no difference shown."
    assert verdict(Interval(0.5, 0.1, 2, 0.01), "a", "b") == \
        "a vs b: +0.50 pp (95% CI +0.40 to +0.60, 2 paired seeds): fewer than 3 seeds, not a result yet."
    assert "(95% CI +0.004 to +1.00" in verdict(Interval(0.502, 0.498, 3, 0.2), "a", "b")
    assert verdict(Interval(2.0, math.nan, 1, math.nan), "a", "b").endswith("on one seed (no interval; not a result).")
    assert "no paired seeds" in verdict(Interval(math.nan, math.nan, 0, math.nan), "a", "b")


def test_a_measure_only_some_seeds_recorded_says_how_many():
    from effnet.experiments.tables import pct_of
    from effnet.stats import Interval

    assert pct_of(Interval(84.62, 7.12, 2, 1.0), 5) == "84.62 ± 7.12 (2 of 5 seeds)"
    assert pct_of(Interval(84.62, 0.5, 5, 1.0), 5) == "84.62 ± 0.50"
    assert pct_of(Interval(math.nan, math.nan, 0, math.nan), 5) == "-"


def test_a_plot_title_gives_the_span_of_seeds_its_points_have():
    from effnet.experiments.tables import seeds_of
    from effnet.stats import Interval

    three, five, none = (Interval(80.0, 1.0, n, 1.0) for n in (3, 5, 0))
    assert seeds_of({"a": [(1.0, three, False)], "b": [(2.0, five, False), (3.0, none, False)]}) == "3-5 seeds"
    assert seeds_of({"a": [(1.0, three, False)]}) == "3 seeds"
    assert seeds_of({"a": [(1.0, Interval(80.0, math.nan, 1, math.nan), False)]}) == "1 seed"


def test_the_best_method_is_chosen_on_the_seeds_every_method_has():
    from effnet.experiments.tables import best_on_validation

    rows = [{"method": "a", "seed": s, "val_top1": v} for s, v in enumerate((80.0, 90.0, 90.0))]
    rows += [{"method": "b", "seed": 0, "val_top1": 85.0}]  # ahead on seed 0, the only one it has so far
    assert best_on_validation(rows, ["a", "b"]) == ("b", " (compared on the seed every method has: 0)")
    rows += [{"method": "b", "seed": s, "val_top1": 70.0} for s in (1, 2)]
    assert best_on_validation(rows, ["a", "b", "c"]) == ("a", "")  # c has no runs: not a candidate
    assert best_on_validation(rows, ["c"]) == (None, "")


def test_saturation_is_claimed_only_beyond_the_noise():
    from effnet.experiments.single_dims import _saturation

    def runs(method, values):
        return [{"method": method, "seed": s, "test_top1": v} for s, v in enumerate(values)]

    base, first, second = {"method": "baseline"}, {"method": "w", "budget": 2.0}, {"method": "w", "budget": 4.0}
    steps = [(first, base, 2.0, "1.00x to 2.00x"), (second, first, 2.0, "2.00x to 4.00x")]
    rows = runs("baseline", (80.0, 81.0, 82.0)) + [dict(r, budget=2.0) for r in runs("w", (84.0, 85.0, 86.0))]
    shrinking = rows + [dict(r, budget=4.0) for r in runs("w", (85.0, 86.1, 86.9))]
    assert _saturation("w", shrinking, steps) == (
        "w: +4.00 pp per doubling of MACs from 1.00x to 2.00x, +1.00 pp per doubling from 2.00x to 4.00x: the gains "
        "shrink (-3.00 pp per doubling, 95% CI -3.25 to -2.75, 3 paired seeds), by more than the noise.")
    noisy = rows + [dict(r, budget=4.0) for r in runs("w", (80.0, 90.0, 86.0))]
    assert "within the noise, so neither saturation nor growth is shown" in _saturation("w", noisy, steps)
    assert "not enough finished steps" in _saturation("w", rows, steps)


def test_a_run_says_whether_it_starts_fresh_or_resumes(tmp_path):
    folder = tmp_path / "run"
    assert starting(folder) == f"training in {folder}"
    (folder / "checkpoints").mkdir(parents=True)
    for step in (400, 600):
        (folder / "checkpoints" / f"step-{step:07d}.pt").write_bytes(b"")
    assert starting(folder) == f"resuming from step 600 in {folder}"


def test_the_progress_line_counts_the_runs_finished_before(tmp_path, monkeypatch):
    """A worker that joins a half-done plan counts the runs other workers finished, from its first line."""
    from effnet.experiments import runner
    from effnet.search.study import PARAM

    runs = [Run.make(tiny_spec(), seed, {"steps": 1}) for seed in (0, 1, 2)]
    options = runner.Options(jobs=1, out=tmp_path / "out", runs_dir=tmp_path / "runs", poll_s=0.01)
    storage = str(tmp_path / "runs.journal")
    study = runner.open_experiment_study("demo", runs, options, storage)
    trial = study.ask()  # the first run was finished by another worker
    trial.suggest_categorical(PARAM, [run.label for run in runs])
    study.tell(trial, 90.0)

    def trained(run, runs_dir, *, threads=None, device="auto"):
        return {"key": run.key, "val_top1": 91.0, "test_top1": 90.0, "macs": 1e6, "wall_s": 60.0}

    monkeypatch.setattr(runner, "train_run", trained)
    lines: list[str] = []
    runner.run_worker("demo", runs, options, storage, log=lines.append)
    started = [line for line in lines if "training in" in line]
    assert [line.split("]")[0] + "]" for line in started] == ["[1/3 runs]", "[2/3 runs, ETA 1m00s]"], lines


def test_the_eta_counts_only_the_runs_left_to_train(tmp_path, monkeypatch):
    """Runs recorded before (here: the last two) are reused in no time, so the ETA leaves them out."""
    from effnet.experiments import runner

    runs = [Run.make(tiny_spec(), seed, {"steps": 1}) for seed in (0, 1, 2, 3)]
    options = runner.Options(jobs=1, out=tmp_path / "out", runs_dir=tmp_path / "runs", poll_s=0.01)
    for run in runs[2:]:
        (options.runs_dir / run.key).mkdir(parents=True)
        (options.runs_dir / run.key / runner.RECORD).write_text("{}")

    def trained(run, runs_dir, *, threads=None, device="auto"):
        return {"key": run.key, "val_top1": 91.0, "test_top1": 90.0, "macs": 1e6, "wall_s": 60.0}

    monkeypatch.setattr(runner, "train_run", trained)
    lines: list[str] = []
    runner.run_worker("demo", runs, options, str(tmp_path / "runs.journal"), log=lines.append)
    started = [line.split("]")[0] + "]" for line in lines if "training in" in line]
    assert started == ["[0/4 runs]", "[1/4 runs, ETA 1m00s]"], lines
    assert lines[-1].startswith("[4/4 runs]"), lines


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_record(tmp_path):
    """A run killed mid-way (SIGKILL after a checkpoint) continues from it and ends exactly as an unbroken one."""
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(tiny_spec(num_classes=10).to_json())
    settings = {"steps": 12, "batch_size": 16, "train_subset": 320, "val_subset": 64, "optimizer": "sgd",
                "lr": 0.05, "augment": "none", "warmup_epochs": 0.1, "resolution": 16, "test": False}
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(spec_path), json.dumps(settings), "0.4",
                             str(killed)], env=env, cwd=REPO)
    deadline = time.time() + 120
    while not list(killed.glob("*/checkpoints/step-*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = next(killed.iterdir())
    assert not (folder / RECORD).exists()
    subprocess.run([sys.executable, "-c", _KILLABLE, str(spec_path), json.dumps(settings), "0", str(killed)],
                   env=env, cwd=REPO, check=True, timeout=300)
    unbroken = tmp_path / "unbroken"
    subprocess.run([sys.executable, "-c", _KILLABLE, str(spec_path), json.dumps(settings), "0", str(unbroken)],
                   env=env, cwd=REPO, check=True, timeout=300)
    a = json.loads((folder / RECORD).read_text())
    b = json.loads(next(unbroken.glob(f"*/{RECORD}")).read_text())
    assert a["key"] == b["key"]
    for field in ("val_top1", "final_val_top1", "train_loss", "selected_step", "history"):
        assert a[field] == b[field], field


def test_train_run_reads_a_finished_record(tmp_path):
    run = Run.make(tiny_spec(), 0, {"steps": 1})
    folder = tmp_path / run.key
    folder.mkdir()
    (folder / RECORD).write_text(json.dumps({"key": run.key, "val_top1": 50.0}))
    assert train_run(run, tmp_path)["val_top1"] == 50.0  # read back: nothing trained (no data, no model needed)


@pytest.mark.slow
def test_unknown_experiment_and_bad_out(tmp_path):
    bad = tmp_path / "file"
    bad.write_text("x")
    done = _effnet("experiments", "single-dims", "--quick", "--out", str(bad), cwd=tmp_path)
    assert done.returncode == 2 and "--out" in done.stderr and "Traceback" not in done.stderr
    assert bad.read_text() == "x"
    done = _effnet("experiments", "no-such", cwd=tmp_path)
    assert done.returncode == 2


@pytest.mark.slow
def test_a_run_whose_loss_diverges_after_a_validation_is_recorded_with_the_weights_chosen_before(tmp_path, monkeypatch):
    """The experiments' runs end at a divergence as a result (the weights validation chose before it, tested once),
    their record says where, and the report's header names them."""
    from effnet.experiments import runner
    from effnet.train import loop

    original = loop.Trainer._step

    def nan_after_the_first_epoch(self, *args):
        if self.step > self.plan.steps_per_epoch and not getattr(self, "nan", False):
            criterion, self.nan = self.criterion, True
            self.criterion = lambda logits, y: criterion(logits, y) * math.nan
        return original(self, *args)

    monkeypatch.setattr(loop.Trainer, "_step", nan_after_the_first_epoch)
    settings = {"steps": 12, "batch_size": 8, "train_subset": 32, "val_subset": 16, "warmup_epochs": 0.0}
    with pytest.warns(UserWarning, match="the run ends there, with the weights validation chose at step 4"):
        record = runner.train_run(Run.make(tiny_spec(resolution=16), 0, settings), tmp_path)
    assert record["diverged"].startswith("the training loss is nan at step 5 (epoch 2")
    assert record["selected_step"] == 4 and record["training"]["steps"] == 5 and record["test_top1"] is not None
    line = suite._diverged_lines({"runs": [record, record]})
    assert line == [f"- Diverged: 1 run ended where the loss diverged, scored (as every run) with the weights "
                    f"validation chose, before the divergence: tiny seed 0: {record['diverged']}, weights of step 4."]
    assert suite._diverged_lines({"runs": [{**record, "diverged": None}]}) == []


def test_a_run_that_diverges_is_named_when_the_experiment_ends(tmp_path, monkeypatch, capsys):
    """A planned run that did not finish (its loss diverged) is named at the end, not passed over by "finished"."""
    import types

    from effnet.experiments import runner, suite
    from effnet.train import TrainingDiverged

    runs = [Run.make(tiny_spec(), seed, {"steps": 1}) for seed in (0, 1)]
    fake = types.SimpleNamespace(plan=lambda out, quick, seeds, log=print: (runs, {}),
                                 report=lambda results: ("body", "table"), plots=lambda results, out: [])
    monkeypatch.setattr(suite, "module", lambda name: fake)

    def trained(run, runs_dir, *, threads=None, device="auto"):
        if run.seed == 1:
            raise TrainingDiverged("loss is nan at step 1")
        return {"key": run.key, "val_top1": 91.0, "test_top1": 90.0, "macs": 1e6, "wall_s": 1.0}

    monkeypatch.setattr(runner, "train_run", trained)
    options = runner.Options(jobs=1, out=tmp_path / "out", runs_dir=tmp_path / "runs", poll_s=0.01,
                             storage=str(tmp_path / "runs.journal"), seeds=2)
    suite.run("demo", options, command="effnet experiments demo")
    out = capsys.readouterr().out
    assert f"demo: 1 planned run(s) did not finish (a diverged loss or an error, in the log above): " \
           f"{runs[1].describe()}; what needs them is not decided" in out
