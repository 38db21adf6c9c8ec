"""Bad input and faults: unreadable images skipped and counted (or a stop with --strict), NaN loss stops with the
last good checkpoint intact, and empty / one-class / missing data or a bad resolution fail before any work."""

import json
import math
import re

import pytest
import torch

from effnet.data import DataError, FashionMNISTSource, ImageFolderSource
from effnet.errors import EffnetError
from effnet.train import ConfigError, TrainConfig, Trainer, TrainingDiverged, train
from effnet.train import checkpoint as ckpt
from tests import _train_util as U


@pytest.fixture()
def folder(tmp_path):
    return U.make_folder(tmp_path / "data", classes=3, per_class=16, val_per_class=2)


def _cfg(folder, tmp_path, **kw):
    spec = U.write_spec(tmp_path / "tiny.json", num_classes=3)
    return TrainConfig(**U.base_config(folder, spec, tmp_path / "run", **kw))


def test_fashion_mnist_reader():
    try:
        src = FashionMNISTSource("test")
    except DataError:
        pytest.skip("dataset-fashion-mnist is not installed")
    assert len(src) == 10_000 and len(src.classes) == 10
    image, label = src.load(0)
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10
    assert sorted(set(src.targets)) == list(range(10))


def test_missing_fashion_mnist_names_the_apt_package(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMNISTSource("train")


def test_unreadable_images_are_skipped_and_counted(folder, tmp_path):
    bad = folder / "train" / "class1" / "005.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "val" / "class0" / "001.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) in training"):  # even with progress off
        result = train(_cfg(folder, tmp_path, epochs=2, progress=False))
    assert [h["skipped_train"] for h in result.history] == [1, 1]
    assert [h["skipped_val"] for h in result.history] == [1, 1]
    assert result.skipped_images == 2
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_strict_stops_naming_the_unreadable_file(folder, tmp_path):
    bad = folder / "train" / "class2" / "003.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"class2/003\.png: unreadable image"):
        train(_cfg(folder, tmp_path, epochs=1, strict=True))


def test_image_folder_and_predict_read_files_with_one_loader(tmp_path):
    """One suffix list picks the files, one loader reads them, one error type names a bad one."""
    from PIL import Image

    from effnet.data import UnreadableImage, load_image
    from effnet.predict import ImageError

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("L", (5, 4), 128).save(tmp_path / cls / "ok.PNG")
    (tmp_path / "a" / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "b" / "notes.txt").write_text("not listed")
    source = ImageFolderSource(tmp_path)
    assert sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in source.paths) == [
        "a/bad.jpg", "a/ok.PNG", "b/ok.PNG"]
    image, label = source.load(source.paths.index(str(tmp_path / "b" / "ok.PNG")))
    assert (image.mode, image.size, label) == ("RGB", (5, 4), 1)
    with pytest.raises(UnreadableImage) as from_source:
        source.load(source.paths.index(str(tmp_path / "a" / "bad.jpg")))
    with pytest.raises(ImageError) as from_predict:
        load_image(tmp_path / "a" / "bad.jpg")
    assert str(from_source.value) == str(from_predict.value) == f"{tmp_path / 'a' / 'bad.jpg'}: not an image file " \
        "(format not recognised)"
    assert isinstance(from_source.value, EffnetError) and from_source.value.reason.startswith("not an image file")


def test_train_and_eval_transforms_normalise_alike():
    """One normalisation: a flat grey image comes out as (v/255 - mean) / std from both pipelines."""
    from effnet.data import eval_transform, train_transform
    from effnet.preprocessing import ModelConfig

    config = ModelConfig(8, 1.0, "bilinear", (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    image = torch.full((1, 12, 10), 51, dtype=torch.uint8)
    expected = torch.tensor([(0.2 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, 0.2])
    for transform in (eval_transform(config, grayscale=True),
                      train_transform(config, augment="none", grayscale=True)):
        out = transform(image)
        assert out.shape == (3, 8, 8)
        torch.testing.assert_close(out.mean((1, 2)), expected)


def test_nan_loss_stops_with_last_good_checkpoint_intact(folder, tmp_path):
    trainer = Trainer(_cfg(folder, tmp_path, steps=12, checkpoint_every=2, keep_last=5))
    criterion = trainer.criterion
    trainer.criterion = lambda logits, y: criterion(logits, y) * (math.nan if trainer.step >= 5 else 1.0)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 5 .*step-0000004\.pt"):
        trainer.fit()
    trainer.close()
    saved = ckpt.step_checkpoints(tmp_path / "run")
    assert [s for s, _ in saved] == [2, 4]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["state"], record["steps_done"]) == ("diverged", 4)
    state = ckpt.load_checkpoint(saved[-1][1])
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_diverged_run_can_end_with_the_weights_validation_chose_before_it(folder, tmp_path):
    """With diverged_as_result the run ends at the divergence as a result: the weights chosen on validation before
    it, tested once, and where it diverged; without chosen weights (before the first validation) it still raises."""
    trainer = Trainer(_cfg(folder, tmp_path, steps=40, holdout=12, diverged_as_result=True))
    per_epoch = trainer.plan.steps_per_epoch
    criterion = trainer.criterion
    trainer.criterion = lambda logits, y: criterion(logits, y) * (math.nan if trainer.step > per_epoch else 1.0)
    with pytest.warns(UserWarning, match=f"the run ends there, with the weights validation chose at step {per_epoch}"):
        result = trainer.fit()
    trainer.close()
    assert result.diverged.startswith(f"the training loss is nan at step {per_epoch + 1} (epoch 2")
    assert result.steps == per_epoch + 1 and result.selected_step == per_epoch and len(result.history) == 1
    assert result.best_top1 == result.history[0]["ema_top1"] and result.test_images == 6
    assert result.test_top1 is not None and math.isfinite(result.test_top1)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["state"] == "diverged"
    tested = json.loads((tmp_path / "run" / "test.json").read_text())
    assert (tested["top1"], tested["selected_step"]) == (result.test_top1, per_epoch)

    early = Trainer(_cfg(folder, tmp_path, steps=40, holdout=12, diverged_as_result=True, out_dir=str(tmp_path / "b")))
    criterion = early.criterion
    early.criterion = lambda logits, y: criterion(logits, y) * (math.nan if early.step >= 1 else 1.0)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 1 "):
        early.fit()
    early.close()


@pytest.mark.parametrize("setup, message", [
    ("missing", "data folder not found"),
    ("no_train", "no train/ sub-folder"),
    ("empty", "no images found"),
    ("one_class", r"images of 1 class\(es\)"),
])
def test_bad_dataset_fails_before_any_work(tmp_path, setup, message):
    data = tmp_path / "data"
    if setup == "no_train":
        (data / "val" / "a").mkdir(parents=True)
    elif setup == "empty":
        for c in ("a", "b"):
            (data / "train" / c).mkdir(parents=True)
    elif setup == "one_class":
        U.make_folder(data, classes=1, per_class=4)
    with pytest.raises(EffnetError, match=message):
        Trainer(_cfg(data, tmp_path, epochs=1))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [
    ({"train_subset": 49}, "train_subset: got 49, expected at most the 48 training images"),
    ({"val_subset": 7}, "val_subset: got 7, expected at most the 6 validation images"),
    ({"test_subset": 4}, "test_subset: got 4, expected it only with a holdout"),
    ({"holdout": 6, "test_subset": 7}, "test_subset: got 7, expected at most the 6 test images"),
])
def test_subsets_larger_than_the_data_or_a_test_without_holdout_are_refused(folder, tmp_path, settings, message):
    """Settings the data would silently ignore: a subset larger than its split, a test split that does not exist."""
    with pytest.raises(EffnetError, match=message):
        Trainer(_cfg(folder, tmp_path, epochs=1, **settings))
    assert not (tmp_path / "run").exists()


def test_no_test_split_asked_for_on_a_folder_is_no_error(folder, tmp_path):
    """The grid searches train with test=False on any data: a folder (validated on its val/) has no test split to
    skip, and that is not an error (only a test subset there is)."""
    trainer = Trainer(_cfg(folder, tmp_path, steps=1, test=False))
    trainer.close()


@pytest.mark.parametrize("resolution", [0, 7, 5000])
def test_bad_resolution_fails_before_any_work(folder, tmp_path, resolution):
    with pytest.raises(ConfigError, match="resolution: got"):
        Trainer(_cfg(folder, tmp_path, resolution=resolution))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value, expected", [
    ("crop_scale", 5, "(min, max) area fractions"), ("crop_scale", [0.5], "(min, max) area fractions"),
    ("crop_scale", ["a", "b"], "(min, max) area fractions"), ("seed", "abc", "an integer"),
    ("hflip", "maybe", "true or false"), ("strict", 1, "true or false"),
])
def test_a_setting_of_the_wrong_type_is_one_config_error(field, value, expected):
    from effnet.train import check_config

    with pytest.raises(ConfigError, match=rf"^{field}: got .*, expected {re.escape(expected)}"):
        check_config(TrainConfig(**{field: value}))


def test_val_class_not_in_train_is_an_error(folder, tmp_path):
    (folder / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra"):
        Trainer(_cfg(folder, tmp_path))


def test_image_folder_classes_are_sorted_folder_names(folder):
    src = ImageFolderSource(folder / "train")
    assert src.classes == ("class0", "class1", "class2") and len(src) == 48


def test_seeded_samples_are_reproducible_and_do_not_seed_cuda(monkeypatch):
    """Each sample's augmentation is a function of its seed alone, and seeding it touches only the CPU generator
    (torch.manual_seed also schedules a CUDA seeding, with a stack trace, on every call: a fifth of the loading time
    of a small image)."""
    import torch.cuda.random

    from effnet.data import TransformedSource, train_transform
    from effnet.registry import get_config

    cuda_seedings = []
    monkeypatch.setattr(torch.cuda.random, "_lazy_call", lambda *a, **k: cuda_seedings.append(a))
    source = FashionMNISTSource("train")
    transform = train_transform(get_config("efficientnet_b0", 32), augment="randaugment", grayscale=True)
    data = TransformedSource(source, transform)
    first = [data[(i, 100 + i)][0] for i in range(20)]
    assert cuda_seedings == []
    torch.manual_seed(12345)  # the global state must not matter
    again = [data[(i, 100 + i)][0] for i in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(first[0], data[(0, s)][0]) for s in (1, 2, 3))  # the seed does change it
