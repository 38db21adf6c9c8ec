"""Crash safety: kill -9 at a random step, resume, and the final weights equal an uninterrupted run's; a
checkpoint file is never left truncated."""

import os
import random
import re

import pytest
import torch

from effnet.train import checkpoint as ckpt
from tests import _train_util as U

STEPS = 24  # 48 images / batch 8 = 6 steps per epoch: 4 epochs, so the kill may land in any epoch
KILL_SEED = int(os.environ.get("EFFNET_KILL_SEED", "7"))  # the step of the kill: seeded, so a failure reproduces


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return U.make_folder(tmp_path_factory.mktemp("data"), classes=3, per_class=16, val_per_class=3)


def _config(folder, tmp_path, out, data="folder"):
    if data == "fashion-mnist":  # the in-memory batched path: 48 images, 6 steps an epoch as the folder's
        spec = U.write_spec(tmp_path / "tiny.json", num_classes=10)
        return U.base_config("fashion-mnist", spec, out, steps=STEPS, checkpoint_every=2, keep_last=2, seed=7,
                             workers=1, resolution=16, train_subset=48, val_subset=16, test_subset=16,
                             augment="none", crop_scale=[0.3, 1.0], drop_path=0.2)
    spec = U.write_spec(tmp_path / "tiny.json", num_classes=3)
    # one DataLoader worker: the run folder's lock must die with the killed process, not live on in its worker
    return U.base_config(folder, spec, out, steps=STEPS, checkpoint_every=2, keep_last=2, seed=7, workers=1)


def _final(out):
    state = ckpt.load_checkpoint(out)
    assert state["step"] == STEPS
    return state


@pytest.mark.slow
@pytest.mark.parametrize("data", ["folder", "fashion-mnist"])
def test_kill_9_at_a_random_step_then_resume_equals_uninterrupted_run(folder, tmp_path, data):
    if data == "fashion-mnist":
        U.fashion_mnist_or_skip()
    full = _config(folder, tmp_path, tmp_path / "full", data)
    done = U.run(full)
    assert done.returncode == 0, done.stderr[-3000:]
    path = "in-memory" if data == "fashion-mnist" else "per sample"
    assert re.search(f"data path +{path}", (tmp_path / "full" / "recipe.txt").read_text())

    out = tmp_path / "killed"
    cfg = _config(folder, tmp_path, out, data)
    kill_after = random.Random(KILL_SEED).randint(3, STEPS - 4)
    killed_at = U.kill_9_after_checkpoint(cfg, out, kill_after)
    assert killed_at < STEPS

    resumed = U.run({**cfg, "resume": True})
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = _final(tmp_path / "full"), _final(out)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"model {key} differs (killed near step {killed_at})"
    for key in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][key], b["ema"]["model"][key]), f"EMA {key} differs"
    assert a["history"] == [{**h, "epoch_s": a["history"][i]["epoch_s"], "img_per_s": a["history"][i]["img_per_s"]}
                            for i, h in enumerate(b["history"])]
    # the metric files of the resumed run hold each step exactly once
    lines = (out / "steps.jsonl").read_text().splitlines()
    assert len(lines) == STEPS
    assert len((out / "metrics.jsonl").read_text().splitlines()) == STEPS // 6
    assert not [p for p in ckpt.checkpoint_dir(out).iterdir() if p.name.startswith(".tmp-")]


def test_atomic_save_leaves_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "step-0000001.pt"
    ckpt.atomic_save({"x": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.atomic_save({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["x"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_stale_temporary_from_a_killed_write_is_removed_and_never_loaded(tmp_path):
    folder = ckpt.checkpoint_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / ".tmp-step-0000009.pt.abc").write_bytes(b"truncated")
    ckpt.atomic_save({"model": {}, "spec": {}, "step": 4}, folder / "step-0000004.pt")
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004.pt"
    assert ckpt.remove_stale_temporaries(folder) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000004.pt"]


def test_keep_last_k_and_best(tmp_path):
    for step in range(1, 6):
        ckpt.save_step_checkpoint(tmp_path, {"step": step}, step, keep_last=2)
    ckpt.save_best(tmp_path, {"step": 3})
    names = sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir())
    assert names == ["best.pt", "step-0000004.pt", "step-0000005.pt"]


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    from effnet.errors import EffnetError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(EffnetError, match="unreadable checkpoint"):
        ckpt.load_checkpoint(bad)
