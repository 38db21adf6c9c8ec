"""`effnet predict` and `effnet.predict.classify` on real photos, corrupt files and non-images."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

import effnet
from effnet.cli import main
from effnet.predict import ImageError, classify, load_image
from effnet.weights import imagenet_classes


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    import skimage.data
    import sklearn.datasets

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(sklearn.datasets.load_sample_image("china.jpg")).save(d / "china.jpg")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.png")
    Image.fromarray(skimage.data.camera()).save(d / "camera_grey.png")  # single channel: converted to RGB
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (d / "notes.txt").write_text("not an image\n")
    return d


@pytest.fixture(scope="module")
def lite0():
    return effnet.create_model("efficientnet_lite0", pretrained=True)


def test_classify_batches_a_directory_and_reports_bad_files(photo_dir, lite0):
    result = classify(lite0, effnet.get_config("efficientnet_lite0"), [photo_dir], labels=imagenet_classes(),
                      top=3, batch_size=2)
    by_name = {p.image.rsplit("/", 1)[-1]: p for p in result.predictions}
    assert sorted(by_name) == ["camera_grey.png", "china.jpg", "coffee.png"]
    assert by_name["china.jpg"].top[0].label == "palace"
    assert by_name["coffee.png"].top[0].label == "espresso"
    assert len(by_name["coffee.png"].top) == 3
    assert sorted(s.image.rsplit("/", 1)[-1] for s in result.skipped) == ["broken.jpg", "notes.txt"]


def test_load_image_names_the_file(photo_dir):
    with pytest.raises(ImageError, match="notes.txt: not an image file"):
        load_image(photo_dir / "notes.txt")


def test_predict_cli_table_names_skipped_files_and_succeeds(photo_dir, capsys):
    code = main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir), "--top", "2"])
    out, err = capsys.readouterr()
    assert code == 0
    assert re.search(r"1\s+\d+\.\d%\s+espresso", out) and re.search(r"1\s+\d+\.\d%\s+palace", out)
    assert "skipped" in err and "broken.jpg" in err and "notes.txt: not an image file" in err


def test_predict_cli_strict_fails_on_an_unreadable_input(photo_dir, capsys):
    code = main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir), "--strict"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and len(err) == 1
    assert "broken.jpg" in err[0] and "(and 1 more); --strict stops at unreadable inputs" in err[0]


def test_predict_cli_top_is_at_most_the_classes(photo_dir, capsys):
    image = str(photo_dir / "coffee.png")
    assert main(["predict", "efficientnet_lite0", "--pretrained", image, "--top", "1001"]) == 2
    assert "--top: got 1001, expected at most the model's 1000 classes" in capsys.readouterr().err
    assert main(["predict", "efficientnet_lite0", "--pretrained", image, "--top", "1000", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"][0]["top"]) == 1000


def test_predict_cli_json(photo_dir, capsys):
    code = main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir / "coffee.png"), "--top", "1",
                 "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["predictions"][0]["top"][0]["label"] == "espresso" and data["skipped"] == []


def test_predict_cli_takes_images_after_an_option(photo_dir, capsys):
    """Images may follow options, as anywhere else on a command line; an unknown option is still refused."""
    code = main(["predict", "efficientnet_lite0", str(photo_dir / "coffee.png"), "--pretrained", "--top", "1",
                 str(photo_dir / "china.jpg"), "--format", "json", str(photo_dir / "camera_grey.png")])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [p["image"].rsplit("/", 1)[-1] for p in data["predictions"]] == ["coffee.png", "china.jpg",
                                                                             "camera_grey.png"]
    assert data["predictions"][0]["top"][0]["label"] == "espresso"
    assert main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir / "coffee.png"), "--zoom",
                 str(photo_dir / "china.jpg")]) == 2
    assert "unrecognized arguments: --zoom" in capsys.readouterr().err


def test_predict_cli_fails_when_no_input_is_an_image(photo_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    code = main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir / "notes.txt"),
                 str(tmp_path / "notes.txt")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: none of the 2 input(s) could be read as an image" in err


def test_predict_cli_refuses_a_path_that_does_not_exist(photo_dir, tmp_path, capsys):
    code = main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir / "coffee.png"),
                 str(tmp_path / "missing.png")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "missing.png: no such file or directory; check the path" in lines[0]


def test_classify_refuses_a_missing_path_before_reading_any_image(photo_dir, tmp_path):
    model = effnet.create_model("efficientnet_lite0").eval()
    with pytest.raises(ImageError, match="missing.png: no such file or directory"):
        classify(model, effnet.get_config("efficientnet_lite0"), [photo_dir, tmp_path / "missing.png"])


def test_classify_reports_the_files_done_after_each_batch(photo_dir):
    model = effnet.create_model("efficientnet_lite0").eval()
    calls = []
    result = classify(model, effnet.get_config("efficientnet_lite0"), [photo_dir], batch_size=2,
                      progress=lambda done, total: calls.append((done, total)))
    files = len(result.predictions) + len(result.skipped)
    assert calls[-1] == (files, files) and [d for d, _ in calls] == sorted({d for d, _ in calls})
    assert len(calls) >= files // 2  # one call per full batch of 2, and the end


def test_predict_cli_needs_weights(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "efficientnet_lite0", "x.jpg"])


def test_demo_section_classifies_the_shipped_photos(capsys):
    from effnet.cli.predict import demo_section

    demo_section()
    rows = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "espresso" in rows["skimage coffee"].split("%")[0]
    assert "palace" in rows["sklearn china.jpg"].split("%")[0]


def test_predict_cli_names_an_empty_directory(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("x")
    code = main(["predict", "efficientnet_lite0", "--pretrained", str(empty)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"error: {empty}: directory holds no files" in err and "none of the 0" not in err


def test_empty_directory_among_other_inputs_is_reported_by_name(photo_dir, tmp_path, lite0):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = classify(lite0, effnet.get_config("efficientnet_lite0"), [empty, photo_dir / "coffee.png"], top=1)
    assert [p.image.rsplit("/", 1)[-1] for p in result.predictions] == ["coffee.png"]
    assert [(s.image, s.reason.split(" (")[0]) for s in result.skipped] == [(str(empty), "directory holds no files")]


def _lite0_file_with_imagenet_preprocessing(tmp_path):
    """The bundled Lite0 weights saved as if converted from a timm non-TF checkpoint (ImageNet mean/std)."""
    import json

    from effnet.weights import save_file

    path = tmp_path / "lite0_imagenet.safetensors"
    model = effnet.create_model("efficientnet_lite0", pretrained=True)
    pre = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"}
    save_file(model, path, {"source": "timm", "preprocessing": json.dumps(pre)})
    return path


def test_model_config_takes_the_weights_files_normalisation(tmp_path):
    from effnet.predict import model_config

    path = _lite0_file_with_imagenet_preprocessing(tmp_path)
    registry = effnet.get_config("efficientnet_lite0")
    config = model_config("efficientnet_lite0", path)
    assert registry.mean[0] == pytest.approx(127 / 255)  # the model name alone says Inception
    assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)
    assert config.interpolation == "bilinear" and config.resolution == registry.resolution
    assert model_config("efficientnet_lite0") == registry


def test_predict_cli_normalises_with_the_weights_files_preprocessing(tmp_path, photo_dir, monkeypatch, capsys):
    import effnet.cli.predict as cli_predict

    seen = []
    real = cli_predict.classify

    def spy(model, config, *args, **kwargs):
        seen.append(config)
        return real(model, config, *args, **kwargs)

    monkeypatch.setattr(cli_predict, "classify", spy)
    path = _lite0_file_with_imagenet_preprocessing(tmp_path)
    assert main(["predict", "efficientnet_lite0", "--weights", str(path), str(photo_dir / "coffee.png")]) == 0
    assert main(["predict", "efficientnet_lite0", "--pretrained", str(photo_dir / "coffee.png")]) == 0
    assert seen[0].mean == (0.485, 0.456, 0.406) and seen[0].std == (0.229, 0.224, 0.225)
    assert seen[1].mean == pytest.approx((127 / 255,) * 3)  # bundled weights: the registry's Inception values


def test_int8_predict_calibrates_with_the_weights_files_preprocessing(tmp_path, photo_dir, monkeypatch):
    """The quantization ranges are fitted to inputs normalised as the predictions are: a weights file's recorded
    mean/std, not the registry's default for the model name."""
    import torch

    import effnet.cli.predict as cli_predict
    from effnet.data.calibration import calibration_images
    from effnet.predict import model_config

    seen = {}

    def runtime_module(model, backend, precision, *, calibration=None, resolution=None):
        seen.update(backend=backend, precision=precision, calibration=calibration, resolution=resolution)
        return model

    monkeypatch.setattr(cli_predict, "runtime_module", runtime_module)
    path = _lite0_file_with_imagenet_preprocessing(tmp_path)
    assert main(["predict", "efficientnet_lite0", "--weights", str(path), str(photo_dir / "coffee.png"),
                 "--runtime", "openvino", "--precision", "int8", "--top", "1"]) == 0
    config = model_config("efficientnet_lite0", path)
    assert (seen["backend"], seen["precision"], seen["resolution"]) == ("openvino", "int8", config.resolution)
    assert torch.equal(seen["calibration"], calibration_images(config))
    assert not torch.allclose(seen["calibration"], calibration_images("efficientnet_lite0"))


def test_calibration_config_carries_its_own_resolution():
    from effnet.data.calibration import calibration_images
    from effnet.errors import EffnetError

    with pytest.raises(EffnetError, match="a ModelConfig carries its own"):
        calibration_images(effnet.get_config("efficientnet_lite0"), 4, resolution=128)


def test_weights_with_nan_are_refused_by_predict_and_cam(tmp_path, photo_dir, lite0, capsys):
    """A diverged model's weights would print nan% scores (and bare NaN in JSON): refused with one line instead."""
    from safetensors.torch import save_file

    state = {k: v.clone().contiguous() for k, v in lite0.state_dict().items()}
    state["classifier.bias"][3] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    image = str(photo_dir / "coffee.png")
    for argv in (["predict", "efficientnet_lite0", "--weights", str(path), image, "--format", "json"],
                 ["cam", "efficientnet_lite0", "--weights", str(path), image, "--format", "json"]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and "non-finite values" in err[0] and "classifier.bias (1 of 1000)" in err[0]
