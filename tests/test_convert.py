"""Converters: each source library's model with random weights, converted, gives the same outputs in effnet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import effnet
from effnet.cli import main
from effnet.registry import get_spec
from effnet.weights import WeightsError, convert_file, convert_state, load_file

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


def _convert_and_load(tmp_path: Path, source_model: nn.Module, source: str, name: str, **overrides) -> nn.Module:
    src = tmp_path / "source.pth"
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


def test_timm_efficientnet_b0_matches(tmp_path):
    import timm

    source = _randomize(timm.create_model("efficientnet_b0"))
    model = _convert_and_load(tmp_path, source, "timm", "efficientnet_b0")
    assert model.spec.padding == "symmetric" and model.spec.bn_eps == 1e-5
    _check(source, model)


def test_timm_tf_efficientnet_b0_with_same_padding_matches_at_odd_sizes(tmp_path):
    import timm

    source = _randomize(timm.create_model("tf_efficientnet_b0"))
    model = _convert_and_load(tmp_path, source, "timm", "efficientnet_b0", padding="same", bn_eps=1e-3)
    assert model.spec.padding == "same" and model.stem.bn.eps == 1e-3
    _check(source, model, (67, 81))


def test_timm_tf_efficientnet_lite0_matches_effnet_lite0(tmp_path):
    import timm

    source = _randomize(timm.create_model("tf_efficientnet_lite0"))
    model = _convert_and_load(tmp_path, source, "timm", "efficientnet_lite0", padding="same", bn_eps=1e-3)
    _check(source, model, (75, 64))


@pytest.mark.slow
def test_timm_efficientnet_b2_scaled_variant_matches(tmp_path):
    import timm

    source = _randomize(timm.create_model("efficientnet_b2"))
    _check(source, _convert_and_load(tmp_path, source, "timm", "efficientnet_b2"))


# -- torchvision ------------------------------------------------------------------------------------------------------


def test_torchvision_efficientnet_b0_matches(tmp_path):
    import torchvision

    source = _randomize(torchvision.models.efficientnet_b0())
    model = _convert_and_load(tmp_path, source, "torchvision", "efficientnet_b0")
    assert model.spec.bn_eps == 1e-5  # torchvision's EfficientNet V1 uses BatchNorm2d's default eps
    _check(source, model)


@pytest.mark.slow
def test_torchvision_efficientnet_b3_scaled_variant_matches(tmp_path):
    import torchvision

    source = _randomize(torchvision.models.efficientnet_b3())
    _check(source, _convert_and_load(tmp_path, source, "torchvision", "efficientnet_b3"))


# -- lukemelas --------------------------------------------------------------------------------------------------------


def test_lukemelas_efficientnet_b0_matches(tmp_path):
    from efficientnet_pytorch import EfficientNet

    source = _randomize(EfficientNet.from_name("efficientnet-b0", image_size=64))
    model = _convert_and_load(tmp_path, source, "lukemelas", "efficientnet_b0")
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    _check(source, model)


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
    assert err.startswith("effnet convert: error: torchvision weights do not fit efficientnet_b0")
    assert not out.exists()


def test_fine_tuned_checkpoint_keeps_its_class_count(tmp_path):
    import timm

    source = _randomize(timm.create_model("efficientnet_b0", num_classes=10))
    model = _convert_and_load(tmp_path, source, "timm", "efficientnet_b0")
    assert model.classifier.out_features == 10 and model.spec.num_classes == 10
    _check(source, model)
