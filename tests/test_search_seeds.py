"""The grid search with several seeds (`effnet search coefficients --seeds N`): a study per seed, the first keeping
the search's name; once the planned seeds are done, the points within the noise of the best get seeds up to
`--seeds-within-noise`; the report gives each point's mean, interval and paired difference with the best."""

import json

import pytest

from effnet.cli import build_parser, main
from effnet.cli.search import _config
from effnet.search import coefficient_seeds, coefficients
from effnet.search.grid import Coefficients
from effnet.spec import save_spec
from tests.conftest import tiny_spec
from tests.test_search import _search_argv

BEST = Coefficients(1.0, 1.4, 1.0)
CLOSE = Coefficients(1.0, 1.2, 1.2)
OFFSETS = {0: 1.0, 1: -1.0, 2: 0.5, 3: -0.4, 4: 0.2}  # CLOSE's score moves with the seed, BEST's does not


def _score(c: Coefficients, seed: int) -> float:
    if c == BEST:
        return 90.0
    if c == CLOSE:
        return 89.8 + OFFSETS[seed]
    return 70.0 - 5 * c.alpha + 0.1 * seed  # clearly worse, by the same amount at every seed


@pytest.fixture
def fake_training(monkeypatch):
    """Each trial scored by `_score` at its study's seed, without training (the seed is the budget's)."""
    def make_evaluator(config):
        seed = int(config.train.get("seed", 0))
        return lambda c: (_score(c, seed), {"macs": int(1e6 * c.product), "params": 1000, "resolution": 16})

    monkeypatch.setattr(coefficients, "make_evaluator", make_evaluator)


def _argv(tmp_path, *extra: str) -> list[str]:
    spec_path = tmp_path / "tiny.json"
    save_spec(tiny_spec(resolution=16, name="tiny16"), spec_path)
    return [*_search_argv(spec_path, tmp_path / "study.journal"), *extra]


def _run(argv, log=lambda m: None):
    config = _config(build_parser().parse_args(argv))
    coefficient_seeds.run_worker_process(config, argv[argv.index("--storage") + 1], "t", heartbeat_s=0.2, grace_s=5,
                                         poll_s=0.1, log=log)
    return config


def _points(storage, name):
    import optuna

    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))
    return sorted(Coefficients.from_label(t.params["point"]) for t in study.get_trials() if t.state.name == "COMPLETE")


def test_planned_seeds_then_more_for_the_points_within_the_noise(tmp_path, fake_training):
    argv = _argv(tmp_path, "--seeds", "3")
    lines = []
    config = _run(argv, lines.append)
    assert "seed 3 (added: within the noise of the best): study 't-seed3', 2 points" in lines
    progress = [m for m in lines if m.startswith("[")]
    assert progress[0] == "[1/8 points, 0 running, ETA 0s]" and progress[-1] == "[2/2 points, 0 running]"
    assert len(progress) == 3 * 8 + 2 * 2  # one line per trained point
    storage = tmp_path / "study.journal"
    assert [s.name for s in coefficient_seeds.all_studies(config, "t", str(storage))] == \
        ["t", "t-seed1", "t-seed2", "t-seed3", "t-seed4"]
    for name in ("t", "t-seed1", "t-seed2"):
        assert _points(storage, name) == sorted(config.grid())
    for name in ("t-seed3", "t-seed4"):  # only the best and the point within its noise
        assert _points(storage, name) == sorted([BEST, CLOSE])


def test_the_report_gives_mean_interval_and_paired_difference(tmp_path, fake_training, capsys):
    argv = _argv(tmp_path, "--seeds", "3")
    _run(argv)
    assert main([*argv, "--report-only", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["studies"] == ["t", "t-seed1", "t-seed2", "t-seed3", "t-seed4"] and report["seeds"] == 3
    best, close = report["rows"][0], report["rows"][1]
    assert (best["alpha"], best["beta"], best["gamma"]) == (1.0, 1.4, 1.0) and best["seeds"] == 5
    assert best["top1"] == 90.0 and best["vs_best"] is None
    assert close["seeds"] == 5 and close["top1"] == pytest.approx(89.8 + sum(OFFSETS.values()) / 5)
    assert close["vs_best"]["n"] == 5 and close["vs_best"]["mean"] == pytest.approx(close["top1"] - 90.0)
    assert close["vs_best"]["mean"] - close["vs_best"]["half_width"] < 0 < \
        close["vs_best"]["mean"] + close["vs_best"]["half_width"]
    rest = report["rows"][2:]
    assert all(r["seeds"] == 3 and r["vs_best"]["mean"] + r["vs_best"]["half_width"] < 0 for r in rest)
    assert main([*argv, "--report-only", "--plot", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "within the noise of the best (paired 95% interval including zero): alpha=1 beta=1.2 gamma=1.2" in out
    assert "vs best (paired, 95% CI)" in out and "best: alpha=1, beta=1.4, gamma=1 (mean top-1 90.00%" in out


def test_one_seed_searched_before_is_the_first_seed_of_three(tmp_path, fake_training):
    """A one-seed search is not trained again when the same command asks for three seeds."""
    one = _argv(tmp_path)
    _run(one)
    storage = tmp_path / "study.journal"
    first = {t.number for t in _trials(storage, "t")}
    _run(_argv(tmp_path, "--seeds", "3", "--seeds-within-noise", "3"))
    assert {t.number for t in _trials(storage, "t")} == first  # nothing added to the first seed's study
    assert _points(storage, "t-seed2") == sorted(coefficient_seeds.planned(
        _config(build_parser().parse_args(one)), "t")[0].grid)


def _trials(storage, name):
    import optuna

    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage)))).get_trials()


def test_no_added_seed_until_the_planned_ones_are_done(tmp_path):
    argv = _argv(tmp_path, "--seeds", "2")
    config = _config(build_parser().parse_args(argv))
    assert coefficient_seeds.added(config, "t", str(tmp_path / "study.journal")) == []  # nothing trained yet
    assert [s.seed for s in coefficient_seeds.planned(config, "t")] == [0, 1]
    shifted = _config(build_parser().parse_args([*argv, "--seed", "7"]))
    assert [(s.seed, s.name) for s in coefficient_seeds.planned(shifted, "t")] == [(7, "t"), (8, "t-seed8")]
