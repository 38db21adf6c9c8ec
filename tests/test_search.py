"""The α/β/γ grid search: the grid, the shared study (claims, duplicates, stale trials), and a real 2-process search
on a tiny budget in which one worker is killed mid-trial and restarted."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from effnet.cli import main
from effnet.scaling import scale_compound
from effnet.search import study as study_module
from effnet.search.coefficients import open_coefficient_study, trial_spec
from effnet.search.grid import Coefficients, GridError, coefficient_grid
from effnet.search.study import PARAM, SearchError, open_study, run_worker
from effnet.spec import save_spec
from tests.conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]


# -- the grid ------------------------------------------------------------------------------------------------------

def test_grid_points_meet_the_constraint():
    grid = coefficient_grid()
    assert len(grid) == 111 and len(set(grid)) == len(grid)
    for c in grid:
        assert min(c.alpha, c.beta, c.gamma) >= 1.0 and abs(c.product - 2.0) <= 0.1 + 1e-12
        for v in (c.alpha, c.beta, c.gamma):
            assert abs(v * 20 - round(v * 20)) < 1e-9  # on the 0.05 grid, exactly
    assert Coefficients(1.2, 1.1, 1.15) in grid  # the paper's B0 result
    assert Coefficients(2.0, 1.0, 1.0) in grid and Coefficients(1.0, 1.0, 1.4) in grid


def test_grid_step_and_tolerance():
    assert len(coefficient_grid(0.2, 0.2)) == 8
    assert all(abs(c.product - 2) <= 0.02 + 1e-12 for c in coefficient_grid(0.05, 0.02))
    with pytest.raises(GridError, match="no \\(alpha"):
        coefficient_grid(0.3, 0.01)
    with pytest.raises(GridError, match="grid step"):
        coefficient_grid(0.0)


def test_labels_round_trip():
    c = Coefficients(1.2, 1.1, 1.15)
    assert Coefficients.from_label(c.label) == c
    with pytest.raises(GridError):
        Coefficients.from_label("alpha=1.2")


def test_trial_model_is_eq3_at_phi_1():
    base = tiny_spec()
    c = Coefficients(1.2, 1.1, 1.15)
    spec = trial_spec(base, c, 1.0, num_classes=10)
    ref = scale_compound(base, 1.0, 1.2, 1.1, 1.15)
    assert spec.stages == ref.stages and spec.resolution == ref.resolution == 37 and spec.num_classes == 10


# -- the shared study, with a stand-in for training (no torch work) ------------------------------------------------

GRID = coefficient_grid(0.2, 0.2)


def _fake(c: Coefficients):
    return 100 * c.beta - c.alpha, {"macs": int(1e6 * c.product), "params": 1000, "resolution": 16}


def _complete_per_point(study):
    counts = {c.label: 0 for c in GRID}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        counts[t.params[PARAM]] += 1
    return counts


def test_every_point_once_and_races_pruned(tmp_path):
    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    # a duplicate claim, as a race between two workers would make: the lower-numbered trial must win
    study.enqueue_trial({PARAM: GRID[3].label})
    study.enqueue_trial({PARAM: GRID[3].label})
    summary = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None)
    assert set(_complete_per_point(study).values()) == {1}
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[1] in pruned
    assert all(t.user_attrs["fail_reason"] == "duplicate" for t in pruned)  # pruned before any training
    assert summary.duplicates == [t.number for t in pruned] and len(summary.trained) == len(GRID)
    # a second run over a finished grid trains nothing
    again = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None)
    assert again.trained == [] and again.status.done


def test_a_lower_trial_still_choosing_its_point_wins_the_race(tmp_path):
    """Trial 0 is created (running, no point yet: its worker was descheduled before reading its grid id); trial 1
    chooses a point and checks for an owner; trial 0 then takes the same point. Trial 1 must wait for trial 0 to
    choose instead of training the point a second time."""
    import threading

    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    storage, labels = study._storage, [c.label for c in GRID]
    slow = storage.create_new_trial(study._study_id)  # RUNNING, no point
    storage.set_trial_user_attr(slow, "host", socket.gethostname())
    storage.set_trial_user_attr(slow, "pid", os.getpid())
    storage.set_trial_user_attr(slow, "heartbeat", time.time())
    distribution = optuna.distributions.CategoricalDistribution(labels)

    def slow_worker():
        while True:  # wait for the other trial to have chosen, then choose the same point
            others = [t for t in storage.get_all_trials(study._study_id) if t._trial_id != slow and PARAM in t.params]
            if others:
                break
            time.sleep(0.01)
        time.sleep(0.3)
        label = others[0].params[PARAM]
        storage.set_trial_param(slow, PARAM, distribution.to_internal_repr(label), distribution)
        storage.set_trial_state_values(slow, TrialState.COMPLETE, [1.0])

    thread = threading.Thread(target=slow_worker)
    thread.start()
    summary = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=30, poll_s=0.05, log=lambda m: None)
    thread.join()
    assert set(_complete_per_point(study).values()) == {1}
    assert summary.duplicates == [1] and study.trials[1].user_attrs["duplicate_of"] == 0


def test_a_lower_trial_that_died_choosing_blocks_no_one(tmp_path):
    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    storage = study._storage
    dead = storage.create_new_trial(study._study_id)  # created, and its worker died before choosing a point
    storage.set_trial_user_attr(dead, "host", socket.gethostname())
    storage.set_trial_user_attr(dead, "pid", _dead_pid())
    summary = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=600, poll_s=0.05, log=lambda m: None)
    assert set(_complete_per_point(study).values()) == {1} and summary.recovered == [0]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_workers_trial_is_requeued(tmp_path):
    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    trial = study.ask()  # claims grid point of trial 0, as a worker does ...
    label = trial.suggest_categorical(PARAM, [c.label for c in GRID])
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", _dead_pid())  # ... whose process then dies
    trial.set_user_attr("heartbeat", time.time())
    summary = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=60, poll_s=0.1, log=lambda m: None)
    assert summary.recovered == [trial.number]
    dead = study.trials[trial.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "stale"
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params[PARAM] == label
    assert set(_complete_per_point(study).values()) == {1}


def test_a_silent_remote_worker_is_requeued_after_the_grace_period(tmp_path):
    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    trial = study.ask()
    trial.suggest_categorical(PARAM, [c.label for c in GRID])
    trial.set_user_attr("host", "another-machine")
    trial.set_user_attr("pid", 1)
    trial.set_user_attr("heartbeat", time.time() - 120)
    summary = run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=60, poll_s=0.1, log=lambda m: None)
    assert summary.recovered == [trial.number] and set(_complete_per_point(study).values()) == {1}


def test_a_diverged_point_is_a_result_not_retried(tmp_path):
    from effnet.errors import EffnetError

    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})

    def sometimes(c):
        if c == GRID[0]:
            raise EffnetError("loss is nan")
        return _fake(c)

    summary = run_worker(study, GRID, sometimes, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None,
                         error_types=(EffnetError,))
    assert len(summary.errors) == 1 and summary.status.done and summary.status.errors == 1
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs["error"] for t in failed] == ["loss is nan"]


def test_joining_with_other_settings_is_refused(tmp_path):
    path = str(tmp_path / "s.journal")
    open_study(path, "s", GRID, {"epochs": 1})
    with pytest.raises(SearchError, match="epochs: study has 1, got 2"):
        open_study(path, "s", GRID, {"epochs": 2})


def test_sqlite_storage_works(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/s.db", "s", GRID, {"k": 1})
    run_worker(study, GRID, _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None)
    assert set(_complete_per_point(study).values()) == {1}


def test_bad_storage_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SearchError, match="does not exist"):
        open_study(str(tmp_path / "nope" / "s.journal"), "s", GRID, {})


@pytest.mark.parametrize("content, name, match", [
    (b"my notes\n", "notes.txt", "is not an Optuna journal"),
    (b"no newline at all", "notes.txt", "is not an Optuna journal"),
    (b'{"model": "b0", "lr": 0.1}', "config.json", "is not an Optuna journal"),  # json.dump writes no newline
    (b"", "model.pt", "empty file not named"),
    (b'{"op_code":0,"study_name":"s"}\nGARBAGE\n{"op_code":1}\n', "s.journal", "line 2 is not a journal record"),
])
def test_a_file_that_is_not_a_journal_is_refused_untouched(tmp_path, content, name, match):
    path = tmp_path / name
    path.write_bytes(content)
    for create in (True, False):
        with pytest.raises(SearchError, match=match):
            open_study(str(path), "s", GRID, {}, create=create)
    assert path.read_bytes() == content


def test_a_journal_being_written_and_an_empty_journal_are_accepted(tmp_path):
    path = tmp_path / "s.journal"
    path.write_bytes(b"")
    open_study(str(path), "s", GRID, {"k": 1})
    with path.open("ab") as f:
        f.write(b'{"op_code":5,"worker')  # another process is half-way through appending a record
    study_module.make_storage(str(path))


@pytest.mark.parametrize("storage, match", [
    ("sqlite:x.db", "without '//'"), ("sqlite:/x.db", "without '//'"), ("postgresql:db", "without '//'"),
    ("/proc/effnet-test.journal", "cannot create the journal file"),
])
def test_malformed_or_unwritable_storage_is_one_clear_error(tmp_path, monkeypatch, storage, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SearchError, match=match):
        study_module.make_storage(storage)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_as_storage_is_refused(tmp_path):
    with pytest.raises(SearchError, match="is a folder"):
        study_module.make_storage(str(tmp_path))


def test_a_report_refuses_a_sqlite_file_that_is_not_an_optuna_database(tmp_path):
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
    con.close()
    before = db.read_bytes()
    with pytest.raises(SearchError, match="not an Optuna database"):
        open_study(f"sqlite:///{db}", "s", GRID, {}, create=False)
    assert db.read_bytes() == before


def test_a_study_name_with_a_colon_is_a_journal_path_not_a_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    open_study("b0:fashion.journal", "s", GRID, {})
    assert (tmp_path / "b0:fashion.journal").is_file()


def test_a_report_writes_nothing(tmp_path):
    """Reading a study (create=False) never creates a journal, a database or a study."""
    journal, db = tmp_path / "new.journal", tmp_path / "new.db"
    with pytest.raises(SearchError, match="no such journal file"):
        open_study(str(journal), "s", GRID, {}, create=False)
    with pytest.raises(SearchError, match="no such SQLite file"):
        open_study(f"sqlite:///{db}", "s", GRID, {}, create=False)
    assert not journal.exists() and not db.exists()
    open_study(str(journal), "other", GRID, {})
    before = journal.read_bytes()
    with pytest.raises(SearchError, match="no study 's' \\(it holds 'other'\\)"):
        open_study(str(journal), "s", GRID, {}, create=False)
    open_study(str(journal), "other", GRID, {}, create=False)
    assert journal.read_bytes() == before


# -- the real thing: 2 processes, real Fashion-MNIST, the project's trainer, one worker killed ---------------------

def _search_argv(spec_path: Path, storage: Path) -> list[str]:
    return ["search", "coefficients", "--base", str(spec_path), "--dataset", "fashion-mnist", "--step", "0.2",
            "--tolerance", "0.2", "--steps", "6", "--batch-size", "16", "--train-subset", "96", "--val-subset", "32",
            "--storage", str(storage), "--study", "t", "--threads", "1", "--heartbeat", "0.5", "--grace", "20",
            "--poll", "0.5"]


def _worker(argv: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-m", "effnet", *argv, "--no-report"], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_workers_one_killed_every_point_trained_once(tmp_path):
    spec_path, storage = tmp_path / "tiny.json", tmp_path / "study.journal"
    save_spec(tiny_spec(resolution=16, name="tiny16"), spec_path)
    argv = _search_argv(spec_path, storage)
    a, b = _worker(argv, tmp_path / "a.log"), _worker(argv, tmp_path / "b.log")
    victim = None
    try:
        deadline = time.time() + 240
        while victim is None and time.time() < deadline and a.poll() is None:
            time.sleep(0.2)
            if not storage.exists():
                continue
            try:
                study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
                    optuna.storages.journal.JournalFileBackend(str(storage))))
            except KeyError:  # the journal exists but the study is not written to it yet
                continue
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("pid") == a.pid]
            if running:
                victim_pid = a.pid
                a.kill()  # SIGKILL in the middle of a trial: no cleanup runs
                a.wait()
                victim = running[0].number
        assert victim is not None, (tmp_path / "a.log").read_text()[-2000:]
        a = _worker(argv, tmp_path / "a2.log")  # restart it
        assert a.wait(timeout=300) == 0, (tmp_path / "a2.log").read_text()[-3000:]
        assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()

    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))
    assert set(_complete_per_point(study).values()) == {1}  # all 8 points, each exactly once
    killed = study.trials[victim]
    assert killed.state in (TrialState.FAIL, TrialState.COMPLETE)
    if killed.state == TrialState.FAIL:  # (COMPLETE only if the kill landed after the result was stored)
        assert killed.user_attrs["fail_reason"] == "stale"
        retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim]
        assert [t.state for t in retries] == [TrialState.COMPLETE]
    pids = {t.user_attrs["pid"] for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert b.pid in pids and killed.user_attrs["pid"] == victim_pid  # the work was shared: a took the victim, b
    # trained points (whether the restarted a also finished one depends on how fast it starts on a loaded machine)
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.user_attrs["steps"] == 6 and t.user_attrs["macs"] > 0 and 0 <= t.value <= 100

    # the finished grid: table, best, plot, command
    out_json = tmp_path / "report.json"
    code = subprocess.run([sys.executable, "-m", "effnet", *argv, "--report-only", "--format", "json"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), stdout=out_json.open("w")).returncode
    assert code == 0
    report = json.loads(out_json.read_text())
    assert len(report["rows"]) == 8 and report["command"].startswith(f"effnet scale {spec_path} --phi 1 --alpha ")


def _finished_study(tmp_path):
    """A study of the tiny grid finished with the stand-in trainer; returns its search command line and spec."""
    spec_path, storage = tmp_path / "tiny.json", tmp_path / "study.journal"
    save_spec(tiny_spec(resolution=16, name="tiny16"), spec_path)
    argv = _search_argv(spec_path, storage)
    from effnet.cli import build_parser
    from effnet.cli.search import _config

    config = _config(build_parser().parse_args(argv))
    study = open_coefficient_study(str(storage), "t", config)
    run_worker(study, config.grid(), _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None)
    return argv, spec_path


def test_cli_report_prints_table_best_plot_and_command(tmp_path, capsys, monkeypatch):
    """The report of a finished study (trained here with the stand-in), through the real CLI."""
    argv, spec_path = _finished_study(tmp_path)
    plot = tmp_path / "grid.png"
    assert main([*argv, "--report-only", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "8 of 8 grid points trained" in out and "best: alpha=1, beta=1.4, gamma=1" in out
    assert f"effnet scale {spec_path} --phi 1 --alpha 1 --beta 1.4 --gamma 1" in out
    assert plot.stat().st_size > 10_000


def test_cli_json_report_draws_the_plot_it_is_given(tmp_path, capsys):
    """--format json with --plot: the JSON names the plot, and the plot is drawn (it was silently left out)."""
    argv, _ = _finished_study(tmp_path)
    plot = tmp_path / "grid.png"
    assert main([*argv, "--report-only", "--format", "json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plot"] == str(plot) and len(report["rows"]) == 8
    assert plot.stat().st_size > 10_000


def test_a_study_scored_on_test_images_is_not_reported(tmp_path, capsys):
    """A study whose trials carry no validation mark (made before trials were scored on held-out training images)
    is refused with one line, by the report and by the workers, rather than read as a validation search."""
    spec_path, storage = tmp_path / "tiny.json", tmp_path / "study.journal"
    save_spec(tiny_spec(resolution=16, name="tiny16"), spec_path)
    argv = _search_argv(spec_path, storage)
    from effnet.cli import build_parser
    from effnet.cli.search import _config

    config = _config(build_parser().parse_args(argv))
    study = open_study(str(storage), "t", config.grid(), config.identity())  # as an earlier effnet made it
    run_worker(study, config.grid(), _fake, heartbeat_s=0.2, grace_s=5, poll_s=0.1, log=lambda m: None)
    assert main([*argv, "--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scored on test images" in err[0] and "--storage" in err[0]
    with pytest.raises(SearchError, match="scored on test images"):
        open_coefficient_study(str(storage), "t", config)


def test_cli_list_grid_and_bad_options(capsys):
    assert main(["search", "coefficients", "--base", "efficientnet_b0", "--list-grid"]) == 0
    assert "111 grid points (step 0.05" in capsys.readouterr().out
    assert main(["search", "coefficients", "--base", "efficientnet_b0", "--list-grid", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["points"]) == 111 and listed["step"] == 0.05
    assert all(abs(p["product"] - p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2) < 1e-6 for p in listed["points"])
    assert main(["search", "coefficients", "--base", "efficientnet_b0", "--set", "model=x", "--list-grid"]) == 2
    assert "--set 'model=x'" in capsys.readouterr().err
    assert main(["search", "coefficients", "--base", "efficientnet_b0", "--step", "0.3", "--tolerance", "0.01",
                 "--list-grid"]) == 2


def test_a_lost_table_creation_race_on_a_new_database_is_retried(monkeypatch):
    """Two processes opening a new PostgreSQL database at once: the loser's CREATE TABLE fails with a unique
    violation; opening again finds the tables the winner made."""
    import optuna

    from effnet.search import study as study_module

    calls = []

    def fake_storage(url, engine_kwargs=None):
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError('(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint '
                               '"pg_type_typname_nsp_index"')
        return "storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", fake_storage)
    monkeypatch.setattr(study_module.time, "sleep", lambda s: None)
    assert study_module.make_storage("postgresql://u@h/db") == "storage" and len(calls) == 2


def test_a_database_that_cannot_be_opened_is_not_retried(monkeypatch):
    import optuna

    from effnet.search import study as study_module

    calls = []

    def fake_storage(url, engine_kwargs=None):
        calls.append(url)
        raise RuntimeError("password authentication failed")

    monkeypatch.setattr(optuna.storages, "RDBStorage", fake_storage)
    with pytest.raises(study_module.SearchError, match="cannot open the database .password authentication failed"):
        study_module.make_storage("postgresql://u@h/db")
    assert len(calls) == 1


def test_a_database_that_refuses_the_connection_is_named_in_one_line():
    pytest.importorskip("psycopg")
    from effnet.search import study as study_module

    with pytest.raises(study_module.SearchError) as raised:
        study_module.make_storage("postgresql://nobody@127.0.0.1:1/effnet")  # port 1: nothing listens there
    message = str(raised.value)
    assert "\n" not in message and "cannot open the database (connection failed" in message, message
    assert message.endswith("or a journal file path"), message


def test_a_point_taken_back_from_a_dead_worker_goes_first(tmp_path):
    """A queued study (as `effnet experiments` makes one): the points of two dead workers are claimed again before
    the points not started yet, which keep their order; every point still completes exactly once."""
    study = open_study(str(tmp_path / "s.journal"), "s", GRID, {"k": 1})
    for c in GRID:
        study.enqueue_trial({PARAM: c.label})
    dead = []
    for _ in range(2):
        trial = study.ask()  # pops the oldest waiting trial, as a worker does ...
        dead.append(trial.suggest_categorical(PARAM, [c.label for c in GRID]))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", _dead_pid())  # ... whose process then dies
    order = []

    def record(c):
        order.append(c.label)
        return _fake(c)

    summary = run_worker(study, GRID, record, heartbeat_s=0.2, grace_s=60, poll_s=0.1, log=lambda m: None)
    assert len(summary.recovered) == 2 and sorted(order[:2]) == sorted(dead)
    assert order[2:] == [c.label for c in GRID if c.label not in dead]  # the rest in plan order
    assert set(_complete_per_point(study).values()) == {1} and summary.duplicates == []
