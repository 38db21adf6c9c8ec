"""Progressive learning (effnet.train.progressive): the stage plan's numbers, the loop following it on both data
paths, mixup seeded per step, and kill -9 then --resume across a stage boundary equal to the uninterrupted run."""

import json

import pytest
import torch

from effnet.data import DataError, FashionMNISTSource
from effnet.train import TrainConfig, loop
from effnet.train import checkpoint as ckpt
from effnet.train.plan import plan_run
from effnet.train.progressive import V2_S, default_start_size, describe_plan, stage_at, stage_end, stage_plan
from tests import _train_util as U


def test_the_paper_s_v2_s_plan_at_its_own_sizes():
    plan = stage_plan(stages=4, total_steps=10, final_size=300, dropout=0.2, randaugment_m=9,
                      start_size=V2_S.size[0])
    assert [s.first_step for s in plan] == [0, 2, 5, 7]
    assert [s.size for s in plan] == [128, 185, 243, 300]  # 128 + 172 * i/3, rounded half up
    assert [s.dropout for s in plan] == [0.1, 0.166667, 0.233333, 0.3]
    assert [s.randaugment_m for s in plan] == [5, 8, 12, 15]
    assert [s.mixup for s in plan] == [0.0, 0.0, 0.0, 0.0]
    assert [stage_at(plan, k).index for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [stage_end(plan, s, 10) for s in plan] == [2, 5, 7, 10]
    assert describe_plan(plan, 10)[1] == "steps 2-4: 185 px, dropout 0.166667, RandAugment m=8, mixup 0"


def test_the_first_size_is_scaled_to_the_run_s_resolution():
    assert default_start_size(300) == 128
    assert default_start_size(224) == 96  # 95.57
    assert default_start_size(28) == 12  # 11.95
    assert default_start_size(18) == 8  # 7.68: at least 8
    assert default_start_size(8) == 8
    plan = stage_plan(stages=3, total_steps=9, final_size=28, dropout=0.2, randaugment_m=9,
                      mixup_ends=(0.0, 0.4), dropout_ends=(0.0, 0.5), randaugment_ends=(2, 3))
    assert [(s.size, s.dropout, s.mixup, s.randaugment_m) for s in plan] == [
        (12, 0.0, 0.0, 2), (20, 0.25, 0.2, 3), (28, 0.5, 0.4, 3)]


def test_without_progressive_one_stage_keeps_the_run_s_settings():
    (only,) = stage_plan(stages=None, total_steps=7, final_size=32, dropout=0.25, randaugment_m=11)
    assert (only.first_step, only.size, only.dropout, only.randaugment_m, only.mixup) == (0, 32, 0.25, 11, 0.0)
    one = stage_plan(stages=1, total_steps=7, final_size=32, dropout=0.25, randaugment_m=11)
    assert [(s.size, s.dropout, s.randaugment_m) for s in one] == [(32, V2_S.dropout[1], V2_S.randaugment[1])]


@pytest.fixture(scope="module")
def fmnist():
    try:
        FashionMNISTSource("test")
    except DataError:
        pytest.skip("dataset-fashion-mnist is not installed")
    return "fashion-mnist"


def _fmnist_config(tmp_path, out=None, **overrides):
    spec = U.write_spec(tmp_path / "tiny.json", num_classes=10)
    cfg = U.base_config("fashion-mnist", spec, out, steps=12, seed=7, resolution=16, train_subset=48, val_subset=16,
                        test_subset=16, augment="none", crop_scale=(0.3, 1.0), progressive=3,
                        progressive_mixup=(0.0, 0.4))
    cfg.update(overrides)
    return cfg


def test_the_recipe_and_the_plan_carry_the_stages(fmnist, tmp_path):
    plan, _ = plan_run(TrainConfig(**_fmnist_config(tmp_path)))
    assert [(s.first_step, s.size, s.dropout, s.mixup) for s in plan.stages] == [
        (0, 8, 0.1, 0.0), (4, 12, 0.2, 0.2), (8, 16, 0.3, 0.4)]
    assert plan.dropout == 0.3  # the model is built with the last stage's dropout


def test_the_loop_trains_each_step_at_its_stage_s_size_and_dropout_on_both_data_paths(fmnist, tmp_path,
                                                                                     monkeypatch):
    seen = []
    original = loop.Trainer._step

    def record(self, images, labels, skipped):
        seen.append((self.step, images.shape[-1], self.model.dropout.p, images.clone()))
        return original(self, images, labels, skipped)

    monkeypatch.setattr(loop.Trainer, "_step", record)
    runs = {}
    for batched in (True, False):
        seen.clear()
        out = tmp_path / f"run-{batched}"
        loop.train(TrainConfig(**_fmnist_config(tmp_path, out, batched_data=batched)))
        assert [(k, size, p) for k, size, p, _ in seen] == [(k, (8, 12, 16)[k // 4], (0.1, 0.2, 0.3)[k // 4])
                                                             for k in range(12)]
        runs[batched] = [s[3] for s in seen]
        assert [s["size"] for s in json.loads((out / "run.json").read_text())["progressive"]] == [8, 12, 16]
        assert "  stage 2            steps 4-7: 12 px" in (out / "recipe.txt").read_text()
    # the in-memory batched path and the per-sample path make the same batches at every stage's size
    assert all(torch.equal(a, b) for a, b in zip(runs[True], runs[False], strict=True))


def test_mixup_is_applied_and_seeded_by_the_step(fmnist, tmp_path):
    def final(name, **kw):
        out = tmp_path / name
        loop.train(TrainConfig(**_fmnist_config(tmp_path, out, steps=6, progressive=2, **kw)))
        return ckpt.load_checkpoint(out)["model"]

    a, b = final("a"), final("b")
    plain = final("plain", progressive_mixup=(0.0, 0.0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)


def test_mixup_mixes_each_image_with_the_next_one(fmnist, tmp_path):
    trainer = loop.Trainer(TrainConfig(**_fmnist_config(tmp_path, steps=12)))
    try:
        trainer.stage = trainer.plan.stages[-1]  # mixup alpha 0.4
        images, labels = torch.rand(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
        trainer.step = 5
        mixed, targets = trainer._mixup(images, labels)
        again, _ = trainer._mixup(images, labels)
        lam = targets[1, 2].item()
        assert 0 < lam < 1 and torch.equal(mixed, again)
        assert torch.allclose(mixed[1], lam * images[1] + (1 - lam) * images[0])
        assert torch.allclose(targets.sum(1), torch.ones(4))
        trainer.step = 6
        assert not torch.equal(trainer._mixup(images, labels)[0], mixed)
    finally:
        trainer.close()


STEPS = 24  # 48 images / batch 8: 6 steps an epoch; 3 stages from steps 0, 8 and 16 (inside epochs 2 and 3)


def _resume_config(tmp_path, out, data, folder=None):
    if data == "fashion-mnist":  # the in-memory batched path, crop and flip only
        return _fmnist_config(tmp_path, str(out), steps=STEPS, checkpoint_every=2, keep_last=2, workers=1,
                              drop_path=0.2, crop_scale=[0.3, 1.0])
    spec = U.write_spec(tmp_path / "tiny3.json", num_classes=3)  # the per-sample path, RandAugment per stage
    return U.base_config(folder, spec, out, steps=STEPS, checkpoint_every=2, keep_last=2, seed=7, workers=1,
                         augment="randaugment", progressive=3, progressive_mixup=[0.0, 0.4])


@pytest.mark.slow
@pytest.mark.parametrize("data", ["fashion-mnist", "folder"])
def test_kill_9_then_resume_across_a_stage_boundary_equals_the_uninterrupted_run(tmp_path, data):
    folder = None
    if data == "fashion-mnist":
        try:
            FashionMNISTSource("test")
        except DataError:
            pytest.skip("dataset-fashion-mnist is not installed")
    else:
        folder = U.make_folder(tmp_path / "data", classes=3, per_class=16, val_per_class=3)
    full = _resume_config(tmp_path, tmp_path / "full", data, folder)
    done = U.run(full)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "killed"
    cfg = _resume_config(tmp_path, out, data, folder)
    # killed inside the second stage (mixup on, dropout 0.2): the resumed run starts mid-stage and crosses the
    # boundary at step 16
    killed_at = U.kill_9_after_checkpoint(cfg, out, 10, delay=0.1)
    assert 8 < killed_at < 16, killed_at

    resumed = U.run({**cfg, "resume": True})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = ckpt.load_checkpoint(tmp_path / "full"), ckpt.load_checkpoint(out)
    assert a["step"] == b["step"] == STEPS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"model {key} differs (killed at step {killed_at})"
    for key in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][key], b["ema"]["model"][key]), f"EMA {key} differs"
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert json.loads((out / "run.json").read_text())["progressive"][1]["first_step"] == 8
