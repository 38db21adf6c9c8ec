"""Converters: each source library's model with random weights, converted, gives the same outputs in effnet."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import effnet
from effnet.cli import main
from effnet.registry import get_spec
from effnet.weights import WeightsError, convert_file, convert_state, file_preprocessing, load_file

RTOL, ATOL = 1e-4, 1e-5


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a swapped or mis-mapped BN tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _convert_and_load(tmp_path: Path, source_model: nn.Module, source: str, name: str, filename: str = "source.pth",
                      **overrides) -> nn.Module:
    src = tmp_path / filename
    torch.save(source_model.state_dict(), src)
    out = tmp_path / "converted.safetensors"
    convert_file(src, source, get_spec(name), out, **overrides)
    return effnet.create_model(name, pretrained=str(out)).eval()


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def _check(source_model: nn.Module, model: nn.Module, size: tuple[int, int] = (64, 64)) -> None:
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_same(model(x), source_model(x))


# -- timm -------------------------------------------------------------------------------------------------------------


B_VARIANTS = [f"efficientnet_b{i}" for i in range(4)] + [
    pytest.param(f"efficientnet_b{i}", marks=pytest.mark.slow) for i in range(4, 8)]


@pytest.mark.parametrize("name", B_VARIANTS)
def test_timm_efficientnet_b_variants_match(tmp_path, name):
    import timm

    source = _randomize(timm.create_model(name))
    model = _convert_and_load(tmp_path, source, "timm", name)
    assert model.spec.padding == "symmetric" and model.spec.bn_eps == 1e-5
    _check(source, model)


def test_timm_tf_efficientnet_b0_matches_at_odd_sizes(tmp_path):
    import timm

    source = _randomize(timm.create_model("tf_efficientnet_b0"))
    model = _convert_and_load(tmp_path, source, "timm-tf", "efficientnet_b0", "tf_efficientnet_b0.pth")
    assert model.spec.padding == "same" and model.stem.bn.eps == 1e-3
    _check(source, model, (67, 81))


def test_timm_tf_efficientnet_lite0_matches_effnet_lite0(tmp_path):
    import timm

    source = _randomize(timm.create_model("tf_efficientnet_lite0"))
    model = _convert_and_load(tmp_path, source, "timm-tf", "efficientnet_lite0", "tf_efficientnet_lite0.pth")
    _check(source, model, (75, 64))


def test_timm_source_refuses_a_tf_checkpoint_and_points_to_timm_tf(tmp_path):
    import timm

    src = tmp_path / "tf_efficientnet_b0.pth"
    torch.save(timm.create_model("tf_efficientnet_b0").state_dict(), src)
    out = tmp_path / "x.safetensors"
    with pytest.raises(WeightsError, match="use --from timm-tf"):
        convert_file(src, "timm", get_spec("efficientnet_b0"), out)
    with pytest.raises(WeightsError, match="use --from timm-tf"):  # one flag alone is not enough
        convert_file(src, "timm", get_spec("efficientnet_b0"), out, padding="same")
    assert not out.exists()
    # Both flags given: the user has said what the weights need.
    spec = convert_file(src, "timm", get_spec("efficientnet_b0"), out, padding="same", bn_eps=1e-3)
    assert spec.padding == "same" and spec.bn_eps == 1e-3


def test_convert_cli_from_timm_on_a_tf_file_is_one_line(tmp_path, capsys):
    import timm

    src = tmp_path / "tf_efficientnet_b0.pth"
    torch.save(timm.create_model("tf_efficientnet_b0").state_dict(), src)
    code = main(["convert", str(src), "--from", "timm", "--model", "efficientnet_b0", "-o",
                 str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--from timm-tf" in err


def test_timm_tf_warns_on_a_file_named_like_timms_own_weights(tmp_path, capsys):
    import timm

    src = tmp_path / "efficientnet_b0_ra-3dd342df.pth"
    torch.save(timm.create_model("efficientnet_b0").state_dict(), src)
    out = tmp_path / "x.safetensors"
    code = main(["convert", str(src), "--from", "timm-tf", "--model", "efficientnet_b0", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and out.is_file()  # the names fit: it converts, and says what to check
    assert "effnet convert: warning:" in err and "--from timm" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("source, timm_name, effnet_name", [
    ("timm", "efficientnet_b0", "efficientnet_b0"),
    ("timm", "efficientnet_lite0", "efficientnet_lite0"),
    ("timm-tf", "tf_efficientnet_b0", "efficientnet_b0"),
    ("timm-tf", "tf_efficientnet_lite0", "efficientnet_lite0"),
    ("timm-tf", "tf_efficientnet_b0.ap_in1k", "efficientnet_b0"),
])
def test_timm_conversions_record_timms_pretrained_normalisation(tmp_path, source, timm_name, effnet_name):
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    src = tmp_path / f"{timm_name}.pth"
    torch.save(timm.create_model(timm_name.split(".")[0]).state_dict(), src)
    out = tmp_path / "out.safetensors"
    convert_file(src, source, get_spec(effnet_name), out)
    pre = file_preprocessing(out)
    assert pre["mean"] == pytest.approx(cfg.mean) and pre["std"] == pytest.approx(cfg.std)
    assert pre["interpolation"] == cfg.interpolation


def test_converted_timm_lite0_predicts_with_imagenet_normalisation(tmp_path, capsys):
    """timm's non-TF efficientnet_lite0 was trained on ImageNet mean/std, not the Lite name's Inception values."""
    import timm

    from effnet.predict import model_config
    from effnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    src = tmp_path / "efficientnet_lite0.pth"
    torch.save(timm.create_model("efficientnet_lite0").state_dict(), src)
    out = tmp_path / "lite0.safetensors"
    assert main(["convert", str(src), "--from", "timm", "--model", "efficientnet_lite0", "-o", str(out)]) == 0
    assert "mean=0.485/0.456/0.406" in capsys.readouterr().out
    config = model_config("efficientnet_lite0", out)
    assert config.mean == pytest.approx(IMAGENET_MEAN) and config.std == pytest.approx(IMAGENET_STD)
    assert effnet.get_config("efficientnet_lite0").mean != config.mean


def test_convert_cli_preprocessing_overrides(tmp_path):
    import torchvision

    src = tmp_path / "tv.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), src)
    out = tmp_path / "tv.safetensors"
    assert main(["convert", str(src), "--from", "torchvision", "--model", "efficientnet_b0", "-o", str(out),
                 "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25", "--interpolation", "bilinear",
                 "--crop-fraction", "0.9"]) == 0
    assert file_preprocessing(out) == {"mean": (0.5,) * 3, "std": (0.25,) * 3, "interpolation": "bilinear",
                                       "crop_fraction": 0.9}


@pytest.mark.parametrize("args", [["--std", "0", "1", "1"], ["--std", "nan", "1", "1"], ["--crop-fraction", "1.5"],
                                  ["--bn-eps", "-1"], ["--mean", "1", "2"]])
def test_convert_cli_rejects_bad_preprocessing_values(tmp_path, args):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(tmp_path / "x.pth"), "--from", "torchvision", "--model", "efficientnet_b0", "-o",
              str(tmp_path / "x.safetensors"), *args])
    assert exit_.value.code == 2


def test_bad_preprocessing_metadata_is_a_weights_error(tmp_path):
    import json

    from effnet.weights import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, path, {"preprocessing": json.dumps({"mean": [0, 0, 0], "std": [1, 0, 1]})})
    with pytest.raises(WeightsError, match="std: got"):
        file_preprocessing(path)


# -- torchvision ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", B_VARIANTS)
def test_torchvision_efficientnet_b_variants_match(tmp_path, name):
    import torchvision

    source = _randomize(getattr(torchvision.models, name)())
    model = _convert_and_load(tmp_path, source, "torchvision", name)
    # torchvision builds B0-B4 with BatchNorm2d's default eps, B5-B7 with eps 1e-3
    assert model.spec.bn_eps == source.features[0][1].eps == (1e-3 if name[-1] in "567" else 1e-5)
    _check(source, model)
    pre = file_preprocessing(tmp_path / "converted.safetensors")
    assert pre["mean"] == pytest.approx((0.485, 0.456, 0.406)) and pre["std"] == pytest.approx((0.229, 0.224, 0.225))


# -- lukemelas --------------------------------------------------------------------------------------------------------


def test_lukemelas_efficientnet_b0_matches(tmp_path):
    from efficientnet_pytorch import EfficientNet

    source = _randomize(EfficientNet.from_name("efficientnet-b0", image_size=64))
    model = _convert_and_load(tmp_path, source, "lukemelas", "efficientnet_b0")
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    _check(source, model)
    assert file_preprocessing(tmp_path / "converted.safetensors")["mean"] == pytest.approx((0.485, 0.456, 0.406))


def test_bundled_lite_file_converted_as_lukemelas_keeps_inception_normalisation(tmp_path):
    from effnet.weights.bundled import bundled_path

    out = tmp_path / "lite0.safetensors"
    convert_file(bundled_path("efficientnet_lite0"), "lukemelas", get_spec("efficientnet_lite0"), out)
    pre = file_preprocessing(out)
    assert pre["mean"] == pytest.approx((127 / 255,) * 3) and pre["std"] == pytest.approx((128 / 255,) * 3)
    assert pre["mean"] == pytest.approx(effnet.get_config("efficientnet_lite0").mean)


@pytest.mark.slow
def test_lukemelas_efficientnet_b1_flat_blocks_split_into_scaled_stages(tmp_path):
    from efficientnet_pytorch import EfficientNet

    source = _randomize(EfficientNet.from_name("efficientnet-b1", image_size=64))
    _check(source, _convert_and_load(tmp_path, source, "lukemelas", "efficientnet_b1"))


# -- Keras ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_b0(tmp_path_factory):
    """Keras 3 on the torch backend builds EfficientNetB0 (random weights) and saves a `.weights.h5`."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on {keras.backend.backend()}, the test needs the torch backend")
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    g = torch.Generator().manual_seed(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights([
                (1 + 0.2 * torch.randn(gamma, generator=g)).numpy(), (0.1 * torch.randn(beta, generator=g)).numpy(),
                (0.1 * torch.randn(mean, generator=g)).numpy(), (0.5 + torch.rand(var, generator=g)).numpy(),
            ])
    path = tmp_path_factory.mktemp("keras") / "b0.weights.h5"
    model.save_weights(str(path))
    return model, path


def _keras_check(keras_model, model: nn.Module) -> None:
    pixels = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = torch.as_tensor(keras_model(pixels.numpy(), training=False).detach().cpu())
        # The Keras model rescales by 1/255 and normalises with its (untrained: mean 0, variance 1) statistics
        # inside; effnet takes the normalised NCHW tensor.
        got = model((pixels / 255).permute(0, 3, 1, 2))
    _assert_same(got, expected)


@pytest.mark.slow
def test_keras_efficientnet_b0_weights_h5_matches(keras_b0, tmp_path):
    keras_model, path = keras_b0
    out = tmp_path / "b0.safetensors"
    convert_file(path, "keras", get_spec("efficientnet_b0"), out)
    _, meta = load_file(out)
    assert meta["source"] == "keras" and '"mean": [0.0, 0.0, 0.0]' in meta["preprocessing"]
    assert file_preprocessing(out) == {"mean": (0.0,) * 3, "std": (1.0,) * 3}  # untrained Normalization layer
    model = effnet.create_model("efficientnet_b0", pretrained=str(out)).eval()
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    _keras_check(keras_model, model)


@pytest.mark.slow
def test_keras_legacy_h5_layout_matches(keras_b0, tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras_model, _ = keras_b0
    path = tmp_path / "b0_legacy.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, keras_model)
    out = tmp_path / "b0.safetensors"
    convert_file(path, "keras", get_spec("efficientnet_b0"), out)
    _keras_check(keras_model, effnet.create_model("efficientnet_b0", pretrained=str(out)).eval())


# -- mismatches and the CLI -----------------------------------------------------------------------------------------


def test_wrong_variant_is_refused_with_a_short_list_of_names():
    import timm

    state = timm.create_model("efficientnet_b1").state_dict()
    with pytest.raises(WeightsError) as err:
        convert_state(state, "timm", get_spec("efficientnet_b0"))
    message = str(err.value)
    assert "timm weights do not fit efficientnet_b0" in message
    assert "unexpected: stages.0.1.* (16 tensors), stages.1.2.* (" in message
    assert "Nothing was written" in message and len(message) < 1200


def test_unknown_source_is_refused():
    with pytest.raises(WeightsError, match="--from: got 'caffe'"):
        convert_state({}, "caffe", get_spec("efficientnet_b0"))


def test_convert_cli_writes_a_loadable_file(tmp_path, capsys):
    import torchvision

    source = _randomize(torchvision.models.efficientnet_b0())
    src = tmp_path / "tv.pth"
    torch.save(source.state_dict(), src)
    out = tmp_path / "tv.safetensors"
    assert main(["convert", str(src), "--from", "torchvision", "--model", "efficientnet_b0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "efficientnet_b0" in printed and str(out) in printed
    _check(source, effnet.create_model("efficientnet_b0", pretrained=str(out)).eval())


def test_convert_cli_reports_a_mismatch_as_one_line(tmp_path, capsys):
    import torchvision

    src = tmp_path / "tv.pth"
    torch.save(torchvision.models.efficientnet_b1().state_dict(), src)
    out = tmp_path / "x.safetensors"
    assert main(["convert", str(src), "--from", "torchvision", "--model", "efficientnet_b0", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"effnet convert: error: {src}: torchvision weights do not fit efficientnet_b0")
    assert not out.exists()


def test_convert_cli_holds_a_spec_file_to_its_classes(tmp_path, capsys):
    """A model name takes the checkpoint's classes; a spec file that names 10 refuses a 1000-class checkpoint, and a
    matching one is what the printed hint loads."""
    import torchvision

    src = tmp_path / "tv.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), src)
    spec_file, out = tmp_path / "b0_10.json", tmp_path / "x.safetensors"
    effnet.save_spec(replace(get_spec("efficientnet_b0"), name="b0_10", num_classes=10), spec_file)
    assert main(["convert", str(src), "--from", "torchvision", "--model", str(spec_file), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its classifier has 1000 classes, the spec file states 10" in err[0] and not out.exists()
    other_suffix = tmp_path / "b0_10.spec"  # read as a spec because the file exists: held to its classes too
    other_suffix.write_text(spec_file.read_text())
    assert main(["convert", str(src), "--from", "torchvision", "--model", str(other_suffix), "-o", str(out)]) == 2
    assert "the spec file states 10" in capsys.readouterr().err and not out.exists()
    effnet.save_spec(replace(get_spec("efficientnet_b0"), name="b0_1000"), spec_file)
    assert main(["convert", str(src), "--from", "torchvision", "--model", str(spec_file), "-o", str(out)]) == 0
    assert f"create_model('{spec_file}', pretrained='{out}')" in capsys.readouterr().out
    assert effnet.create_model(str(spec_file), pretrained=str(out)).spec.num_classes == 1000


@pytest.mark.parametrize("output", ["nonexist/o.safetensors", "file.txt/o.safetensors"])
def test_convert_cli_unwritable_output_is_one_line(tmp_path, capsys, output):
    import torchvision

    src = tmp_path / "tv.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), src)
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / output
    assert main(["convert", str(src), "--from", "torchvision", "--model", "efficientnet_b0", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{out}: the folder {out.parent} " in err


def test_write_errors_are_weights_errors(tmp_path, monkeypatch):
    import safetensors.torch

    from effnet.weights import save_file

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(WeightsError, match=r"x.safetensors: cannot write the .safetensors file \(.*No space left"):
        save_file({"x": torch.zeros(1)}, tmp_path / "x.safetensors")


def test_fine_tuned_checkpoint_keeps_its_class_count(tmp_path):
    import timm

    source = _randomize(timm.create_model("efficientnet_b0", num_classes=10))
    model = _convert_and_load(tmp_path, source, "timm", "efficientnet_b0")
    assert model.classifier.out_features == 10 and model.spec.num_classes == 10
    _check(source, model)
