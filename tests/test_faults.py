"""Fault injection on a run folder: each fault either stops with one line and exit status 2, losing and mixing
nothing already on disk, or the run continues from the newest good state and ends equal to an uninterrupted run.
(SIGKILL at a random step: tests/test_train_resume.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from effnet.cli import main
from effnet.train import TrainConfig, loop, run_folder, train
from effnet.train import checkpoint as ckpt
from tests import _train_util as U

STEPS = 12  # 30 images less 6 held out / batch 8 = 3 steps per epoch: 4 epochs; val/ is the test split
STOP_AT = 8  # an interrupted run stops after this step; it keeps step-4/6/8 checkpoints
TIMING = ("epoch_s", "img_per_s")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    folder = U.make_folder(root / "data", classes=3, per_class=10, val_per_class=2, size=20)
    return folder, U.write_spec(root / "tiny.json", num_classes=3)


def _config(data, out, **overrides) -> TrainConfig:
    folder, spec = data
    cfg = U.base_config(folder, spec, out, resolution=16, steps=STEPS, checkpoint_every=2, keep_last=3, seed=3,
                        augment="none", holdout=6)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def _argv(data, out, *extra) -> list[str]:
    folder, spec = data
    return ["train", str(folder), "--model", spec, "--resolution", "16", "--steps", str(STEPS), "--batch-size", "8",
            "--workers", "0", "--threads", "1", "--augment", "none", "--checkpoint-every", "2", "--seed", "3",
            "--holdout", "6", "--warmup-epochs", "0.5", "--log-every", "1", "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run: what every continued run must end equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(_config(data, out))
    return out


def _interrupted(data, out, monkeypatch, at: int = STOP_AT) -> None:
    """A run that dies after step `at` (an exception in mid-epoch, as a crash would)."""
    original = loop.Trainer._step

    def dying(self, *args):
        if self.step == at:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(loop.Trainer, "_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, out))
    monkeypatch.setattr(loop.Trainer, "_step", original)


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def _assert_equals_reference(out, reference) -> None:
    a, b = ckpt.load_checkpoint(reference), ckpt.load_checkpoint(out)
    assert b["step"] == STEPS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{key} differs from the uninterrupted run"
    for name in ("metrics.jsonl", "steps.jsonl"):
        assert _rows(out / name) == _rows(reference / name), name
    assert json.loads((out / "test.json").read_text()) == json.loads((reference / "test.json").read_text())


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# -- damaged checkpoints ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "zero-length"])
def test_resume_passes_a_damaged_newest_checkpoint_and_ends_equal(data, reference, tmp_path, monkeypatch, damage):
    out = tmp_path / "run"
    _interrupted(data, out, monkeypatch)
    newest = ckpt.step_checkpoints(out)[-1][1]
    assert newest.name == f"step-{STOP_AT:07d}.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2] if damage == "truncated" else b"")

    with pytest.warns(UserWarning, match=rf"{newest.name}: unreadable checkpoint.*renamed to {newest.name}.damaged"):
        train(_config(data, out, resume=True))

    assert (newest.parent / (newest.name + ".damaged")).is_file()  # kept for a look, never pruned into use
    assert json.loads((out / "run.json").read_text())["resumes"] == 1
    _assert_equals_reference(out, reference)


def test_a_checkpoint_of_another_run_is_set_aside(data, reference, tmp_path, monkeypatch):
    other = tmp_path / "other"
    train(_config(data, other, seed=4, steps=STOP_AT + 2, checkpoint_every=10))
    out = tmp_path / "run"
    _interrupted(data, out, monkeypatch)
    stranger = ckpt.checkpoint_dir(out) / f"step-{STOP_AT + 2:07d}.pt"  # newer than the run's own, step matching
    shutil.copy(ckpt.step_checkpoints(other)[-1][1], stranger)

    why = r"written by another run \(seed 4 vs this run's 3, steps 10 vs this run's 12\)"
    with pytest.warns(UserWarning, match=why):
        train(_config(data, out, resume=True))
    assert (stranger.parent / (stranger.name + ".damaged")).is_file()
    _assert_equals_reference(out, reference)


def test_no_good_checkpoint_left_is_one_line(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted(data, out, monkeypatch)
    for _, path in ckpt.step_checkpoints(out):
        path.write_bytes(b"")
    assert main(_argv(data, out, "--resume")) == 2
    *named, line = capsys.readouterr().err.strip().splitlines()
    assert named == [f"effnet train: warning: {ckpt.checkpoint_dir(out)}/step-{s:07d}.pt: unreadable checkpoint "
                     f"(empty file); renamed to step-{s:07d}.pt.damaged, trying the previous checkpoint"
                     for s in (8, 6, 4)]
    assert f"{ckpt.checkpoint_dir(out)}: no good checkpoint left (3 damaged" in line
    assert (ckpt.checkpoint_dir(out) / "best.pt").is_file()  # never a resume source, and never touched


def test_eval_skips_a_damaged_checkpoint_without_moving_it(data, tmp_path, monkeypatch, capsys):
    from effnet.train import evaluate_checkpoint

    out = tmp_path / "run"
    _interrupted(data, out, monkeypatch)
    newest = ckpt.step_checkpoints(out)[-1][1]
    newest.write_bytes(b"\0" * 100)
    with pytest.warns(UserWarning, match="skipped"):
        r = evaluate_checkpoint(str(out), data[0], workers=0)
    assert r["step"] == STOP_AT - 2
    assert newest.is_file()


# -- torn jsonl lines -------------------------------------------------------------------------------------------------


def test_a_torn_jsonl_line_is_repaired_on_resume(data, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted(data, out, monkeypatch)
    for name in ("metrics.jsonl", "steps.jsonl"):
        with open(out / name, "a") as f:
            f.write('{"step": 9, "loss": 0.12')  # a kill in mid-write: no closing brace, no newline
    train(_config(data, out, resume=True))
    _assert_equals_reference(out, reference)


# -- one run per folder, one process per folder ------------------------------------------------------------------------


def test_a_second_run_into_an_occupied_folder_is_refused_and_changes_nothing(data, reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = _snapshot(out)
    assert main(_argv(data, out)) == 2
    line = _one_error_line(capsys)
    assert f"{out}: holds a run with checkpoints up to step {STEPS}" in line
    assert "--resume" in line and "another --out" in line and "--overwrite" in line
    assert _snapshot(out) == before


def test_the_default_out_folder_is_guarded_too(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a for a in _argv(data, "unused") if a not in ("--out", "unused")]
    argv[argv.index("--steps") + 1] = "2"
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "runs/tiny: holds a run" in _one_error_line(capsys)


def test_overwrite_removes_only_effnets_files(data, reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "record.json").write_text("{}")  # the experiment runner's record: effnet's own
    (out / "notes.txt").write_text("mine")
    assert main(_argv(data, out, "--overwrite")) == 2
    assert "notes.txt" in _one_error_line(capsys)
    assert (out / "record.json").is_file() and ckpt.step_checkpoints(out)

    (out / "notes.txt").unlink()
    assert main(_argv(data, out, "--overwrite")) == 0
    assert not (out / "record.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == STEPS // 3  # one run's epochs, not two


def test_resume_true_starts_a_new_or_empty_folder_and_ignores_the_runners_record(data, reference, tmp_path):
    out = tmp_path / "new"
    train(_config(data, out, resume=True))  # nothing there yet: starts from the beginning
    _assert_equals_reference(out, reference)
    (out / "record.json").write_text("{}")
    train(_config(data, out, resume=True))  # finished: resumes at its last step, refuses nothing
    _assert_equals_reference(out, reference)


def test_resume_with_other_settings_names_them(data, reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = _snapshot(out)
    argv = _argv(data, out, "--resume")
    argv[argv.index("--seed") + 1] = "5"
    assert main(argv) == 2
    assert f"{out}: cannot resume with different settings (seed: 3 -> 5)" in _one_error_line(capsys)
    assert _snapshot(out) == before


HOLDER = r"""
import sys, time
from effnet.train import run_folder
run_folder.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_second_process_on_a_locked_folder_is_refused_and_writes_nothing(data, reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=U.env(), cwd=U.REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(out)
        for extra in (("--resume",), ("--overwrite",)):
            assert main(_argv(data, out, *extra)) == 2
            line = _one_error_line(capsys)
            assert f"{out}: in use by pid {holder.pid} on " in line, line
        assert _snapshot(out) == before
        assert run_folder.describe(out)["holder"].startswith(f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert run_folder.lock_holder(out) is None  # the lock died with its process


# -- a full disk -------------------------------------------------------------------------------------------------------

FULL_DISK = r"""
import resource, sys
from effnet.cli import main
from effnet.train import checkpoint as ckpt
original, calls = ckpt.atomic_save, [0]
def limited(obj, path):
    calls[0] += 1
    if calls[0] == 4:  # the disk fills up while step 4's checkpoint is written
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
    return original(obj, path)
ckpt.atomic_save = limited
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_earlier_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, *_argv(data, out)], env=U.env(), cwd=U.REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"effnet train: error: {ckpt.checkpoint_dir(out)}: cannot write the "
                                               "checkpoint of step 4"), err
    names = sorted(p.name for p in ckpt.checkpoint_dir(out).iterdir())
    assert names == ["best.pt", "step-0000002.pt", "step-0000003.pt"], names  # no temporary, no torn file
    for _, path in ckpt.step_checkpoints(out):
        ckpt.load_checkpoint(path)
    record = json.loads((out / "run.json").read_text())
    assert (record["state"], record["steps_done"]) == ("interrupted", 3)


# -- the run record, `effnet runs`, TensorBoard ---------------------------------------------------------------------


def test_runs_lists_state_steps_and_best(data, reference, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(reference, runs / "done")
    _interrupted(data, runs / "stopped", monkeypatch)
    killed = runs / "killed"
    shutil.copytree(reference, killed)
    record = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**record, "state": "running", "steps_done": 6}))  # as after kill -9

    assert main(["runs", str(runs), "--format", "json"]) == 0
    rows = {r["run"].rsplit("/", 1)[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert {k: (r["state"], r["steps_done"], r["total_steps"]) for k, r in rows.items()} == {
        "done": ("finished", STEPS, STEPS), "stopped": ("interrupted", STOP_AT, STEPS),
        "killed": ("interrupted", 6, STEPS)}
    assert rows["done"]["model"] == "tiny" and rows["done"]["best_val_top1"] == record["best_val_top1"]
    assert main(["runs", str(runs / "done"), str(runs / "done")]) == 0  # named twice, listed once
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3
    assert table[0].split() == ["run", "model", "data", "steps", "best", "val", "top-1", "state"]
    assert f"{STEPS} / {STEPS}" in table[2] and table[2].endswith("finished")
    assert main(["runs", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("name, text", [("run.json", '{"a": 1}'), ("run.json", "[1, 2]"), ("config.json", "[]")])
def test_runs_lists_a_folder_with_a_foreign_json_file_without_a_traceback(tmp_path, capsys, name, text):
    folder = tmp_path / "runs" / "odd"
    folder.mkdir(parents=True)
    if name != "config.json":
        (folder / "config.json").write_text("{}")  # what makes the folder a run folder
    (folder / name).write_text(text)
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[2].split()[-1] == "unknown" and "Traceback" not in err
    if name == "run.json":
        assert "not a run record" in err or "unreadable run record" in err


def test_runs_says_how_long_a_running_run_has_left(reference, tmp_path, capsys):
    """The time left is the steps to go at the current epoch's logged rate; only a run that is running has one."""
    run = tmp_path / "live"
    shutil.copytree(reference, run)
    record = json.loads((run / "run.json").read_text())
    batch = record["settings"]["batch_size"]
    (run / "run.json").write_text(json.dumps({**record, "state": "running", "steps_done": 4}))
    (run / "steps.jsonl").write_text(json.dumps({"step": 6, "img_per_s": batch / 10.0}) + "\n")
    run_folder.acquire(run)
    try:
        assert main(["runs", str(run), "--format", "json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["state"] == "running" and row["eta_s"] == pytest.approx((STEPS - 6) * 10.0)
        assert main(["runs", str(run)]) == 0
        assert capsys.readouterr().out.splitlines()[2].endswith(", about 1m00s left")
    finally:
        run_folder.release(run)
    assert main(["runs", str(run), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["state"], row["eta_s"]) == ("interrupted", None)  # nobody holds it: no time left to tell


def test_tensorboard_events_after_the_resumed_step_are_purged(data, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    original = loop.Trainer._step

    def dying(self, *args):
        if self.step == 5:  # after step 4's checkpoint: events of step 5 are written, then lost with the run
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(loop.Trainer, "_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, out, tensorboard=True))
    monkeypatch.undo()
    train(_config(data, out, tensorboard=True, resume=True))

    events = EventAccumulator(str(out), purge_orphaned_data=True)
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, STEPS + 1))
    rows = _rows(out / "steps.jsonl")
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.step for e in events.Scalars("val/top1")] == [3, 6, 9, 12]
    assert "ema/top1" in events.Tags()["scalars"]


def test_tensorboard_without_the_extra_names_it(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    assert main(_argv(data, tmp_path / "run", "--tensorboard")) == 2
    assert "effnet[tensorboard]" in _one_error_line(capsys)


def test_lock_is_released_when_a_run_fails(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted(data, out, monkeypatch, at=1)
    assert run_folder.lock_holder(out) is None
    assert json.loads((out / "run.json").read_text())["state"] == "interrupted"
    assert os.path.getsize(out / run_folder.LOCK) > 0


# -- a broken compiler cache ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_broken_inductor_cache_fails_its_candidate_only(tmp_path):
    """Truncated shared objects in torch's inductor cache (a full disk, a copy cut short): the compiled path gets
    a failed row naming the reason, eager is still measured, and the command exits 1."""
    spec = U.write_spec(tmp_path / "tiny.json", resolution=16)
    env = {**U.env(), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    argv = [sys.executable, "-m", "effnet", "bench", spec, "--batch", "1", "--paths", "eager,compile", "--vs",
            "none", "--repeats", "1", "--iters", "1", "--warmup", "1", "--quiet", "--format", "json"]
    first = subprocess.run(argv, env=env, cwd=U.REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    libraries = list((tmp_path / "inductor").rglob("*.so"))
    assert libraries
    for lib in libraries:
        os.truncate(lib, 100)

    broken = subprocess.run(argv, env=env, cwd=U.REPO, capture_output=True, text=True, timeout=600)
    assert broken.returncode == 1, broken.stderr[-2000:]
    report = json.loads(broken.stdout)
    assert [(r["name"], r["status"]) for r in report["results"]] == [("eager", "measured")]
    [failure] = report["failed"]
    assert failure["name"] == "compile" and failure["status"] == "failed"
    assert "InductorError" in failure["reason"] and "\n" not in failure["reason"]
