"""`--compile`: when a run compiles, the one-line fallback to eager when compiling fails, the compile time in the
run record, and a compiled run resuming bit-identically, in the mode it started in."""

import json
import shutil

import pytest
import torch

from effnet.train import ConfigError, TrainConfig, train
from effnet.train import checkpoint as ckpt
from effnet.train import compiled as C
from tests import _train_util as U


@pytest.fixture(scope="module")
def fmnist():
    return U.fashion_mnist_or_skip()


def _config(tmp_path, out, **kw):
    spec = U.write_spec(tmp_path / "tiny.json", num_classes=10)
    settings = dict(resolution=16, train_subset=48, val_subset=24, test=False, augment="none",
                    crop_scale=(0.5, 1.0), steps=6, checkpoint_every=3, keep_last=3, seed=5, drop_path=0.2)
    settings.update(kw)
    return TrainConfig(**U.base_config("fashion-mnist", spec, out, **settings))


def test_the_compile_mode_of_a_run():
    c = TrainConfig()
    assert C.compile_mode(c, 10**6, None) is (C.COMPILE_MIN_STEPS is not None)
    assert C.compile_mode(TrainConfig(compile=True), 1, None) is True
    assert C.compile_mode(TrainConfig(compile=False), 10**6, None) is False
    # a resume follows the checkpoint's mode (a checkpoint from before compiling existed was eager)
    assert C.compile_mode(c, 1, {"compiled": True}) is True
    assert C.compile_mode(c, 10**6, {}) is False
    with pytest.raises(ConfigError, match=r"compile: got False, but step-9\.pt was trained compiled"):
        C.compile_mode(TrainConfig(compile=False), 1, {"compiled": True, "path": "step-9.pt"})


def test_the_default_compiles_runs_of_the_measured_length(monkeypatch):
    monkeypatch.setattr(C, "COMPILE_MIN_STEPS", 100)
    assert [C.compile_mode(TrainConfig(), steps, None) for steps in (99, 100)] == [False, True]


def test_a_failing_compile_warns_once_and_trains_eagerly_to_the_same_weights(fmnist, tmp_path, monkeypatch):
    train(_config(tmp_path, tmp_path / "eager", compile=False))

    def broken(module):
        def call(*args):
            raise RuntimeError("backend exploded\nsecond line of the compiler's report")
        return call

    monkeypatch.setattr(C.torch, "compile", broken)
    with pytest.warns(UserWarning) as caught:
        failed = train(_config(tmp_path, tmp_path / "failed", compile=True))
    messages = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert messages == ["torch.compile failed (RuntimeError: backend exploded); training in eager mode"]
    assert failed.compile_s is None
    a, b = ckpt.load_checkpoint(tmp_path / "eager"), ckpt.load_checkpoint(tmp_path / "failed")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["compiled"] is False  # it trained eagerly: a resume continues eagerly


@pytest.mark.slow
def test_a_compiled_run_records_its_compile_time_and_resumes_bit_identically(fmnist, tmp_path):
    full = train(_config(tmp_path, tmp_path / "full", compile=True))
    assert full.compile_s is not None and full.compile_s > 0
    record = json.loads((tmp_path / "full" / "run.json").read_text())
    assert record["compile_s"] == pytest.approx(full.compile_s, abs=0.01)
    assert "compile              torch.compile" in (tmp_path / "full" / "recipe.txt").read_text()
    done = ckpt.load_checkpoint(tmp_path / "full")
    assert done["compiled"] is True and done["step"] == 6

    # continue from step 3 in a copy of the folder, without saying how it was trained: the checkpoint says
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    for step, path in ckpt.step_checkpoints(part):
        if step > 3:
            path.unlink()
    record = json.loads((part / "run.json").read_text())
    (part / "run.json").write_text(json.dumps({**record, "state": "interrupted", "steps_done": 3}))
    resumed = train(_config(tmp_path, part, resume=True))
    assert resumed.compile_s is not None
    again = ckpt.load_checkpoint(part)
    for key in done["model"]:
        assert torch.equal(done["model"][key], again["model"][key]), key
    for key in done["ema"]["model"]:
        assert torch.equal(done["ema"]["model"][key], again["ema"]["model"][key]), key
    with pytest.raises(ConfigError, match="compile: got False"):
        train(_config(tmp_path, part, resume=str(ckpt.step_checkpoints(part)[0][1]), compile=False))
