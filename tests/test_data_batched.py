"""The in-memory batched data path: each sample's crop and flip drawn exactly as the per-sample path draws them
(torchvision's RandomResizedCrop and RandomHorizontalFlip on the same seed), and batches, training and
evaluation, bit-identical to the per-sample path's for the same (seed, epoch, index)."""

import pytest
import torch
import torchvision.transforms.v2 as v2
from PIL import Image

from effnet.data import (
    ImageFolderSource,
    TransformedSource,
    eval_transform,
    train_transform,
)
from effnet.data import batched as B
from effnet.data.batches import data_path, eval_batches, train_batches
from effnet.data.loader import SubsetSource, mix_seed
from effnet.preprocessing import ModelConfig
from tests import _train_util as U


@pytest.fixture(scope="module")
def fmnist():
    return U.fashion_mnist_or_skip("train")


def _config(resolution=18, interpolation="bilinear", crop_fraction=1.0):
    return ModelConfig(resolution, crop_fraction, interpolation, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _torchvision_params(seed, height, width, scale, hflip):
    crop = v2.RandomResizedCrop(8, scale=scale)
    torch.default_generator.manual_seed(seed)
    p = crop.make_params([torch.zeros(1, height, width, dtype=torch.uint8)])
    flip = bool(torch.rand(1) < 0.5) if hflip else False
    return B.CropFlip(p["top"], p["left"], p["height"], p["width"], flip)


@pytest.mark.parametrize("scale", [(1.0, 1.0), (0.08, 1.0), (0.9, 1.0)])
@pytest.mark.parametrize("height, width", [(28, 28), (17, 40), (64, 48)])
def test_crop_and_flip_draws_are_torchvisions(scale, height, width):
    seeds = [mix_seed(11, epoch, i) for epoch in range(2) for i in range(400)]
    with torch.random.fork_rng(devices=[]):
        expected = [_torchvision_params(s, height, width, scale, True) for s in seeds]
    fast = B.draw_crop_flips(seeds, height, width, scale, True)
    assert fast == expected
    assert [B.draw_crop_flip(s, height, width, scale, True) for s in seeds[:50]] == expected[:50]
    assert {c.flip for c in fast} == {True, False}
    boxes = {(c.top, c.left, c.height, c.width) for c in fast}
    assert len(boxes) > 100 if scale[0] < 0.5 else len(boxes) >= 1  # (1, 1): the whole image or its central crop


def test_draws_fall_back_to_torch_where_the_streams_differ(monkeypatch):
    seeds = [mix_seed(5, i) for i in range(100)]
    expected = B.draw_crop_flips(seeds, 28, 28, (0.08, 1.0), True)
    monkeypatch.setattr(B, "_stream_matches", lambda: False)
    slow_calls = []
    original = B.draw_crop_flip
    monkeypatch.setattr(B, "draw_crop_flip", lambda *a, **k: slow_calls.append(1) or original(*a, **k))
    assert B.draw_crop_flips(seeds, 28, 28, (0.08, 1.0), True) == expected
    assert len(slow_calls) == len(seeds)


@pytest.mark.parametrize("resolution, scale, hflip, interpolation", [
    (18, (1.0, 1.0), True, "bilinear"),  # the experiments' recipe
    (18, (0.08, 1.0), True, "bilinear"),
    (32, (0.3, 1.0), False, "bicubic"),
])
def test_batched_training_batch_equals_the_per_sample_batch(fmnist, resolution, scale, hflip, interpolation):
    config = _config(resolution, interpolation)
    per_sample = TransformedSource(fmnist, train_transform(config, augment="none", crop_scale=scale, hflip=hflip,
                                                           grayscale=True))
    index = list(range(300, 364))
    seeds = [mix_seed(3, 1, i) for i in index]
    expected = torch.stack([per_sample[(i, s)][0] for i, s in zip(index, seeds)])
    data = B.batched_source(fmnist)
    got = B.BatchTrainTransform(config, crop_scale=scale, hflip=hflip, grayscale=True)(data.images[index], seeds)
    assert got.shape == (64, 3, resolution, resolution) and got.dtype == torch.float32
    assert torch.equal(got, expected)


@pytest.mark.parametrize("crop_fraction", [1.0, 0.875])
def test_batched_evaluation_equals_the_per_sample_evaluation(fmnist, crop_fraction):
    config = _config(24)
    per_sample = TransformedSource(fmnist, eval_transform(config, grayscale=True, crop_fraction=crop_fraction))
    index = list(range(40))
    expected = torch.stack([per_sample[i][0] for i in index])
    got = B.batch_eval_transform(B.batched_source(fmnist).images[index], config, grayscale=True,
                                 crop_fraction=crop_fraction)
    assert torch.equal(got, expected)


def _batches(loader, count):
    out = []
    for images, labels, skipped in loader:
        assert skipped == []
        out.append((images, labels))
        if len(out) == count:
            break
    return out


def test_train_batches_of_both_paths_are_equal_also_from_mid_epoch(fmnist):
    source = SubsetSource(fmnist, list(range(0, 6000, 7)))
    kw = dict(batch_size=32, seed=4, augment="none", crop_scale=(0.25, 1.0), hflip=True)
    fast, fast_sampler = train_batches(source, _config(16), batched=True, **kw)
    slow, slow_sampler = train_batches(source, _config(16), batched=False, **kw)
    assert isinstance(fast, B.BatchedTrainLoader) and not isinstance(slow, B.BatchedTrainLoader)
    for epoch, start in ((0, 0), (2, 3 * 32)):  # a resumed epoch starts at its step's first sample
        fast_sampler.set_position(epoch, start)
        slow_sampler.set_position(epoch, start)
        a, b = _batches(fast, 3), _batches(slow, 3)
        assert len(a) == 3 and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert len(fast) == len(slow)
    fast_sampler.set_position(1, 0)
    assert not torch.equal(_batches(fast, 1)[0][0], a[0][0])  # another epoch, another order and augmentation


def test_eval_batches_of_both_paths_hold_the_same_images_in_larger_batches(fmnist):
    source = SubsetSource(fmnist, list(range(2500)))
    fast = list(eval_batches(source, _config(16), batch_size=128, batched=True))
    slow = list(eval_batches(source, _config(16), batch_size=128, batched=False))
    assert [len(b[1]) for b in fast] == [1000, 1000, 500]
    assert torch.equal(torch.cat([b[0] for b in fast]), torch.cat([b[0] for b in slow]))
    assert torch.equal(torch.cat([b[1] for b in fast]), torch.tensor(source.targets))
    shard = list(eval_batches(source, _config(16), batch_size=128, rank=1, world_size=2))
    assert torch.equal(torch.cat([b[1] for b in shard]), torch.tensor(source.targets[1::2]))


def test_the_batched_path_is_chosen_where_data_and_policy_allow(fmnist):
    assert data_path(fmnist, augment="none") == "batched"
    assert data_path(SubsetSource(fmnist, [1, 2, 3]), augment="none") == "batched"
    assert data_path(fmnist, augment=None) == "batched"  # evaluation
    assert data_path(fmnist, augment="autoaugment") == "per-sample"
    assert data_path(fmnist, augment="randaugment") == "per-sample"
    assert data_path(fmnist, augment="none", batched=False) == "per-sample"


def test_a_small_folder_of_one_image_size_is_batched_with_the_per_sample_paths_batches(tmp_path):
    root = U.make_folder(tmp_path, classes=3, per_class=6, val_per_class=2, size=36)
    source = ImageFolderSource(root / "train")
    assert data_path(source, augment="none") == "batched"
    config = _config(24)
    kw = dict(batch_size=6, seed=2, augment="none", crop_scale=(0.2, 1.0), hflip=True)
    fast, fast_sampler = train_batches(SubsetSource(source, list(range(18))), config, batched=True, **kw)
    slow, slow_sampler = train_batches(SubsetSource(source, list(range(18))), config, batched=False, **kw)
    assert isinstance(fast, B.BatchedTrainLoader)
    for sampler in (fast_sampler, slow_sampler):
        sampler.set_position(1, 6)
    a, b = _batches(fast, 2), _batches(slow, 2)
    assert len(a) == 2 and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert a[0][0].shape == (6, 3, 24, 24)
    val = ImageFolderSource(root / "val", source.classes)
    fast = list(eval_batches(val, _config(24, crop_fraction=0.875), batch_size=4, batched=True))
    slow = list(eval_batches(val, _config(24, crop_fraction=0.875), batch_size=4, batched=False))
    assert len(fast) == 1 and torch.equal(fast[0][0], torch.cat([b[0] for b in slow]))


@pytest.mark.parametrize("fault", ["mixed sizes", "unreadable", "too large"])
def test_a_folder_that_cannot_be_held_keeps_the_per_sample_path(tmp_path, monkeypatch, fault):
    root = U.make_folder(tmp_path, classes=2, per_class=3, val_per_class=1, size=20)
    if fault == "mixed sizes":
        Image.new("RGB", (20, 24)).save(root / "train" / "class0" / "odd.png")
    elif fault == "unreadable":
        (root / "train" / "class1" / "broken.png").write_bytes(b"not an image")
    else:
        monkeypatch.setattr(B, "FOLDER_BYTES", 3 * 20 * 20 * 6 - 1)
    source = ImageFolderSource(root / "train")
    assert data_path(source, augment="none") == "per-sample"
    assert B.batched_source(source) is None


def test_a_run_trains_the_same_weights_on_either_path(fmnist, tmp_path):
    from effnet.train import TrainConfig, train
    from effnet.train import checkpoint as ckpt

    spec = U.write_spec(tmp_path / "tiny.json", num_classes=10)
    runs = {}
    for name, batched in (("batched", True), ("per-sample", False)):
        config = TrainConfig(**U.base_config("fashion-mnist", spec, tmp_path / name, resolution=16, train_subset=64,
                                             val_subset=32, test_subset=32, augment="none", crop_scale=(0.3, 1.0),
                                             steps=8, seed=9, drop_path=0.2, batched_data=batched))
        runs[name] = train(config)
        assert f"data path            {'in-memory' if batched else 'per sample'}" in (
            tmp_path / name / "recipe.txt").read_text()
    a, b = ckpt.load_checkpoint(tmp_path / "batched"), ckpt.load_checkpoint(tmp_path / "per-sample")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert runs["batched"].history[-1]["val_top1"] == runs["per-sample"].history[-1]["val_top1"]
    assert runs["batched"].test_top1 == runs["per-sample"].test_top1
