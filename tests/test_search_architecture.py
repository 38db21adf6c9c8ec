"""`effnet search architecture`: the space as data, the reward, the shared study (budget, leases, resume) with a
stand-in for training, and tiny real searches (Fashion-MNIST, 16 px, 2-3 steps per trial), one of them killed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import effnet
from effnet.cli import main
from effnet.network import ConvNet, build_meta
from effnet.profile import count_macs
from effnet.registry import create_model
from effnet.scaling import scale_compound
from effnet.search.architecture import (
    ArchitectureSearch,
    Budget,
    check_w,
    open_architecture_study,
    reward,
    run_worker,
)
from effnet.search.architecture_report import ArchitectureRow, pareto_front
from effnet.search.space import SpaceError, describe_point, load_space, space_from_dict
from effnet.search.study import make_storage
from effnet.spec import NetSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]

TINY_SPACE = {
    "name": "tiny",
    "stem": {"channels": 8},
    "head": {"channels": 32},
    "choices": {"block": ["separable", "mbconv1", "mbconv3"], "kernel": [3, 5], "se_ratio": [0.0, 0.25],
                "repeats_offset": [0, 1], "width": [0.5, 1.0]},
    "stages": [{"stride": 1, "out_channels": 8, "repeats": 1},
               {"stride": 2, "out_channels": 16, "repeats": 1},
               {"stride": 2, "out_channels": 24, "repeats": 1, "choices": {"kernel": [3]}}],
}


def _space_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({**TINY_SPACE, **changes}))
    return path


def _points(space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


# -- the space ---------------------------------------------------------------------------------------------------

def test_shipped_space_is_mnasnet_on_b0s_skeleton():
    space = load_space()
    assert [s.stride for s in space.stages] == [1, 2, 2, 2, 1, 2, 1]
    assert [s.out_channels for s in space.stages] == [16, 24, 40, 80, 112, 192, 320]
    assert [s.repeats for s in space.stages] == [1, 2, 2, 3, 3, 4, 1]
    first = space.stages[0].options()
    assert first == {"block": ("separable", "mbconv1", "mbconv3", "mbconv6"), "kernel": (3, 5),
                     "se_ratio": (0.0, 0.25), "repeats": (1, 2), "width": (0.75, 1.0, 1.25)}  # repeats >= 1
    assert space.stages[5].options()["repeats"] == (3, 4, 5)
    assert len(space.params()) == 35 and space.stem.channels == 32 and space.head.channels == 1280


def test_list_space_prints_the_space_and_its_macs_range(capsys):
    assert main(["search", "architecture", "--list-space", "--resolution", "32"]) == 0
    out = capsys.readouterr().out
    assert "separable, mbconv1, mbconv3, mbconv6" in out and "224,084,231,917,056 points" in out
    assert "cheapest point 0.98M, dearest 27.12M" in out
    assert main(["search", "architecture", "--list-space", "--resolution", "32", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["points"] == 224_084_231_917_056 and len(listed["stages"]) == 7
    assert listed["stages"][0]["choices"]["block"] == ["separable", "mbconv1", "mbconv3", "mbconv6"]
    assert round(listed["cheapest_macs"] / 1e6, 2) == 0.98 and round(listed["dearest_macs"] / 1e6, 2) == 27.12


def test_b0_is_a_point_of_the_shipped_space():
    from dataclasses import replace

    from effnet.registry import get_spec

    b0, point = get_spec("efficientnet_b0"), {}
    for n, stage in enumerate(b0.stages, 1):
        point.update({f"s{n}_block": f"mbconv{stage.expand_ratio:g}", f"s{n}_kernel": stage.kernel,
                      f"s{n}_se_ratio": stage.se_ratio, f"s{n}_repeats": stage.repeats, f"s{n}_width": 1.0})
    spec = load_space().spec(point, resolution=32, num_classes=10)
    assert spec.stages == b0.stages and spec.stem == b0.stem and spec.head == b0.head
    assert count_macs(spec) == count_macs(replace(b0, resolution=32, num_classes=10))


def test_sampled_points_are_specs_that_build_profile_and_scale():
    space = load_space()
    low = count_macs(space.spec(space.extreme(False), resolution=32, num_classes=10))
    high = count_macs(space.spec(space.extreme(True), resolution=32, num_classes=10))
    for i, point in enumerate(_points(space, 12)):
        spec = space.spec(point, resolution=32, num_classes=10, name=f"p{i}")
        assert NetSpec.from_json(spec.to_json()) == spec
        assert low <= count_macs(build_meta(spec)) <= high
        for stage, n in zip(spec.stages, range(1, 8)):
            assert stage.repeats == point[f"s{n}_repeats"] and stage.kernel == point[f"s{n}_kernel"]
            assert stage.se_ratio == (point[f"s{n}_se_ratio"] if stage.kind == "mbconv" else 0.0)
        assert scale_compound(spec, 1.0).resolution == 37
    spec = space.spec(_points(space, 1, seed=3)[0], resolution=32, num_classes=10)
    assert ConvNet(spec).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_block_choices_map_to_spec_kinds():
    space = space_from_dict(TINY_SPACE)
    point = space.extreme(True)
    point.update(s1_block="separable", s1_se_ratio=0.25, s2_block="mbconv1", s3_block="mbconv3", s2_width=0.5)
    stages = space.stage_specs(point)
    assert (stages[0].kind, stages[0].se_ratio) == ("separable", 0.0)  # SE exists only in MBConv blocks
    assert (stages[1].kind, stages[1].expand_ratio, stages[1].out_channels) == ("mbconv", 1.0, 8)
    assert (stages[2].kind, stages[2].expand_ratio, stages[2].kernel) == ("mbconv", 3.0, 3)  # stage's own choices
    assert describe_point(space, point).split()[0] == "sepk5x2"
    assert space.size == 40 * 40 * 20  # (separable + 2 SE choices x 2 MBConv kinds) x kernels x repeats x widths


@pytest.mark.parametrize("changes, field", [
    ({"choices": {**TINY_SPACE["choices"], "kernel": [3, 4]}}, "choices.kernel"),
    ({"choices": {**TINY_SPACE["choices"], "block": ["mbconv5"]}}, "choices.block"),
    ({"choices": {**TINY_SPACE["choices"], "width": []}}, "choices.width"),
    ({"choices": {k: v for k, v in TINY_SPACE["choices"].items() if k != "se_ratio"}}, "'se_ratio'"),
    ({"stages": [{"stride": 3, "out_channels": 8, "repeats": 1}]}, "stages[0].stride"),
    ({"stages": [{"stride": 1, "out_channels": 8, "repeats": 1, "choices": {"kernel": [2]}}]},
     "stages[0].choices.kernel"),
    ({"stem": {"channels": 8, "kernel": 2}}, "stem.kernel"),
    ({"activation": "tanh"}, "activation"),
    ({"depth": 2}, "unknown field(s) ['depth']"),
])
def test_a_bad_space_file_names_the_field(tmp_path, changes, field):
    path = _space_file(tmp_path, **changes)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert message.startswith(f"--space {path}: ") and field in message and "\n" not in message


# -- the reward ---------------------------------------------------------------------------------------------------

def test_reward_is_acc_times_macs_ratio_to_the_w():
    assert reward(80.0, 2e6, 1e6, -0.07) == pytest.approx(0.8 * 2 ** -0.07)
    assert reward(80.0, 1e6, 1e6, -0.07) == pytest.approx(0.8)
    assert reward(50.0, 5e5, 1e6, -1.0) == pytest.approx(1.0)  # w = -1: accuracy per MAC
    assert reward(50.0, 5e5, 1e6, 0.0) == pytest.approx(0.5)
    with pytest.raises(Exception, match="--w"):
        check_w(0.5)


def test_pareto_front_keeps_the_undominated():
    def row(n, top1, macs):
        return ArchitectureRow(n, {}, "", top1, macs, 0, 0.0, 0.0)

    rows = [row(0, 80, 10), row(1, 70, 5), row(2, 75, 12), row(3, 80, 10), row(4, 90, 20), row(5, 60, 5)]
    assert [r.trial for r in pareto_front(rows)] == [1, 0, 4]


# -- the shared study with a stand-in for training ---------------------------------------------------------------

def _config(**kw) -> ArchitectureSearch:
    return ArchitectureSearch(space=space_from_dict(TINY_SPACE), target_macs=1e5, resolution=16, **kw)


def _fake(config):
    def evaluate(point, name):
        macs = count_macs(config.spec(point))
        top1 = 50.0 + 10 * sum(point[f"s{i}_width"] for i in (1, 2, 3))
        return reward(top1, macs, config.target_macs, config.w), {"top1": top1, "macs": macs, "params": 1}

    return evaluate


def _run(study, config, budget, **kw):
    return run_worker(study, config, _fake(config), budget, heartbeat_s=0.2, grace_s=30, poll_s=0.05,
                      log=lambda m: None, **kw)


def test_budget_is_counted_in_the_storage_and_a_rerun_continues(tmp_path):
    config, storage = _config(), str(tmp_path / "s.journal")
    study = open_architecture_study(storage, "s", config)
    assert len(_run(study, config, Budget(trials=4)).trained) == 4
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    for t in complete:  # both objectives on every trial; the value is the reward of them
        assert t.value == pytest.approx(reward(t.user_attrs["top1"], t.user_attrs["macs"], 1e5, -0.07))
    again = open_architecture_study(storage, "s", config)
    assert _run(again, config, Budget(trials=4)).trained == []  # finished trials are not repeated
    assert len(_run(again, config, Budget(trials=6)).trained) == 2  # a larger budget continues the same study
    params = [json.dumps(t.params, sort_keys=True) for t in again.get_trials(states=(TrialState.COMPLETE,))]
    assert len(params) == len(set(params)) == 6


def test_a_trial_beyond_the_budget_is_pruned_before_training(tmp_path):
    import socket
    import threading

    config = _config()
    study = open_architecture_study(str(tmp_path / "s.journal"), "s", config)
    elsewhere = study.ask()  # trial 0, running in a live worker: it holds the budget of 1
    config.space.sample(elsewhere)
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("heartbeat", time.time())):
        elsewhere.set_user_attr(key, value)
    study.enqueue_trial(_points(config.space, 1, seed=5)[0])  # trial 1, claimable, but beyond the budget
    threading.Timer(1.0, lambda: study.tell(elsewhere, 0.5)).start()
    summary = _run(study, config, Budget(trials=1))
    late = study.trials[1]
    assert summary.trained == [] and summary.pruned == [1]
    assert late.state == TrialState.PRUNED and late.user_attrs["fail_reason"] == "surplus"


def test_a_timeout_stops_new_trials_once_trial_time_is_spent(tmp_path):
    config = _config()
    study = open_architecture_study(str(tmp_path / "s.journal"), "s", config)
    assert len(_run(study, config, Budget(timeout=1e-9)).trained) == 1
    assert _run(study, config, Budget(timeout=1e-9)).trained == []  # spent across reruns, not per process


def test_a_dead_workers_trial_is_run_again_with_its_point(tmp_path):
    config = _config()
    study = open_architecture_study(str(tmp_path / "s.journal"), "s", config)
    trial = study.ask()
    point = config.space.sample(trial)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    import socket

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", child.pid)  # a process that is gone
    trial.set_user_attr("heartbeat", time.time())
    summary = _run(study, config, Budget(trials=2))
    assert summary.recovered == [trial.number]
    dead = study.trials[trial.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "stale"
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == point


def test_a_recovered_trial_whose_requeue_was_lost_is_queued_again(tmp_path):
    config = _config()
    study = open_architecture_study(str(tmp_path / "s.journal"), "s", config)
    trial = study.ask()
    point = config.space.sample(trial)
    trial.set_user_attr("fail_reason", "stale")  # marked stale by a worker that died before queueing it again
    study.tell(trial, state=TrialState.FAIL)
    _run(study, config, Budget(trials=1))
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert [(t.state, t.params, t.user_attrs["retry_reason"]) for t in retry] == [(TrialState.COMPLETE, point, "lost")]


def test_joining_with_another_target_is_refused(tmp_path):
    storage = str(tmp_path / "s.journal")
    open_architecture_study(storage, "s", _config())
    with pytest.raises(Exception, match="target_macs: study has 100000.0, got 200000.0"):
        open_architecture_study(storage, "s", ArchitectureSearch(space=space_from_dict(TINY_SPACE),
                                                                 target_macs=2e5, resolution=16))


# -- the command, on real data ------------------------------------------------------------------------------------

def _argv(tmp_path: Path, trials: int, storage: Path, *extra: str) -> list[str]:
    return ["search", "architecture", "--space", str(_space_file(tmp_path)), "--dataset", "fashion-mnist",
            "--target-macs", "0.1M", "--trials", str(trials), "--resolution", "16", "--steps", "2",
            "--batch-size", "16", "--train-subset", "64", "--val-subset", "32", "--threads", "1",
            "--storage", str(storage), "--study", "t", "--heartbeat", "0.5", "--grace", "30", "--poll", "0.2",
            *extra]


def _load(storage: Path) -> optuna.Study:
    return optuna.load_study(study_name="t", storage=make_storage(str(storage)))


def test_a_tiny_search_saves_a_spec_that_trains_and_scales(tmp_path, capsys):
    from effnet.train import TrainConfig, train

    best, plot = tmp_path / "best.json", tmp_path / "front.png"
    assert main(_argv(tmp_path, 2, tmp_path / "s.journal", "-o", str(best), "--plot", str(plot))) == 0
    out = capsys.readouterr().out
    assert "[2/2] trial" in out and "ETA" in out and "Pareto front" in out and "best reward: trial" in out
    assert plot.stat().st_size > 0
    study = _load(tmp_path / "s.journal")
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert {"top1", "macs", "params", "reward"} <= set(t.user_attrs)
    spec = load_spec(best)
    assert (spec.resolution, spec.num_classes) == (16, 10)
    assert create_model(str(best))(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    result = train(TrainConfig(model=str(best), data="fashion-mnist", steps=1, batch_size=8, train_subset=16,
                               val_subset=8, out_dir=None, progress=False, workers=0, threads=1, test=False))
    assert result.steps == 1
    assert scale_compound(spec, 1.0).resolution == 18
    assert count_macs(effnet.scale(spec, 1.2, 1.1, 1.15)) > count_macs(spec)
    assert main(["scale", str(best), "--phi", "1"]) == 0


@pytest.mark.parametrize("extra, flag", [
    (["--dataset", "no_such_folder"], "--dataset"),
    (["--target-macs", "0"], "--target-macs"),
    (["--w", "0.2"], "--w"),
    (["--w", "abc"], "--w"),
    (["--trials", "0"], "--trials"),
    (["--resolution", "7"], "--resolution"),
    (["--space", "missing.json"], "--space"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, extra, flag):
    argv = _argv(tmp_path, 1, tmp_path / "s.journal")
    if flag in argv:  # the bad value in place of the good one (an option given twice would also warn)
        at = argv.index(flag)
        del argv[at:at + 2]
    argv += extra
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks (a number that does not parse)
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and flag in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "s.journal").exists()  # refused before any study exists


def test_a_bad_space_file_from_the_command_line(tmp_path, capsys):
    bad = _space_file(tmp_path, choices={**TINY_SPACE["choices"], "se_ratio": [0, 1.5]})
    assert main(["search", "architecture", "--space", str(bad), "--target-macs", "1M", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choices.se_ratio: got [0, 1.5]" in err


def _worker(argv: list[str], log: Path, **env) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **env)
    return subprocess.Popen([sys.executable, "-m", "effnet", *argv], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path, capsys):
    storage = tmp_path / "s.journal"
    argv = _argv(tmp_path, 5, storage, "--steps", "3", "--no-report")
    proc, killed, done_before = _worker(argv, tmp_path / "a.log"), None, {}
    try:
        deadline = time.time() + 180
        while killed is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if not storage.exists():
                continue
            try:
                trials = _load(storage).get_trials(deepcopy=False)
            except KeyError:  # the journal exists but the study is not written to it yet
                continue
            running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("pid") == proc.pid
                       and "architecture" in t.user_attrs]  # sampled, so training: no journal write under way
            complete = {t.number: t.params for t in trials if t.state == TrialState.COMPLETE}
            if running and complete:
                proc.send_signal(signal.SIGKILL)  # mid-trial: no cleanup runs
                proc.wait()
                killed, done_before = running[0], complete
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, (tmp_path / "a.log").read_text()[-2000:]
    assert main(argv) == 0  # rerun the same command
    study = _load(storage)
    complete = {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(complete) == 5 and all(complete[n] == p for n, p in done_before.items())
    dead = study.trials[killed.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "stale"
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert [t.state for t in retry] == [TrialState.COMPLETE] and retry[0].params == dead.params == killed.params
    assert "[5/5]" in capsys.readouterr().out


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(tmp_path, capfd):
    storage = tmp_path / "s.journal"
    assert main(_argv(tmp_path, 4, storage, "--jobs", "2", "--no-report")) == 0  # two child processes
    study = _load(storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    params = {json.dumps(t.params, sort_keys=True) for t in complete}
    assert len(complete) == len(params) == 4
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.PRUNED and t.user_attrs["fail_reason"] in ("surplus", "duplicate")
               for t in others)
    out = capfd.readouterr().out
    # the header once, from the parent; both workers may report 4 of 4 when their last trials end together
    assert 1 <= out.count("[4/4]") <= 2 and "[5/4]" not in out and out.count("study 't'") == 1
