"""EfficientNetV2 converters: torchvision, timm and Keras V2 models with random weights, converted, give the same
outputs in effnet (the V1 conversions are in test_convert.py).

Random weights alone make a deep network whose output hardly depends on its input (BN statistics that do not fit
the activations drown the signal), so a mis-mapped early layer could pass unnoticed.  Every source model here has
its BN statistics calibrated on a random batch first, and each comparison checks that the outputs of two inputs
differ by far more than the tolerance."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
from torch import nn

import effnet
from effnet.cli import main
from effnet.registry import get_spec
from effnet.weights import convert_file, file_preprocessing, load_file
from tests.test_convert import _convert_and_load, _randomize

TORCHVISION_V2 = ["efficientnetv2_s"] + [pytest.param(n, marks=pytest.mark.slow)
                                         for n in ("efficientnetv2_m", "efficientnetv2_l")]
TIMM_TF_V2 = ["efficientnetv2_b0"] + [pytest.param(n, marks=pytest.mark.slow) for n in (
    "efficientnetv2_b1", "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s", "efficientnetv2_xl")]


RTOL, ATOL = 1e-5, 1e-5


def _calibrated(model: nn.Module, seed: int = 0, size: int = 64) -> nn.Module:
    """Random BN affine parameters (`_randomize`), and running statistics measured on a random batch, so the output
    depends on the input (a swapped or mis-mapped tensor then changes it)."""
    _randomize(model, seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(0.5)  # residual branches at half scale: the deep models' activations stay in range
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: one batch sets the statistics
        model.train()
        model(torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def _assert_close_and_input_dependent(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    assert (expected[0] - expected[1]).abs().max() > 1000 * ATOL  # two inputs, clearly different outputs


def _check(source: nn.Module, model: nn.Module, size: tuple[int, int] = (64, 64)) -> None:
    """Equal outputs in float64, where rounding cannot hide a wrong mapping behind the tolerance (in float32 the
    two differ by a few 1e-5 relative after 20-odd blocks whose squeeze-excite runs as other operators)."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        _assert_close_and_input_dependent(model.double()(x), source.double()(x))


def _fused_part(model: nn.Module, x: torch.Tensor, stages: int = 3) -> torch.Tensor:
    """effnet's stem and first `stages` stages (three: the Fused-MBConv ones)."""
    for stage in (model.stem, *model.stages[:stages]):
        x = stage(x)
    return x


@pytest.mark.parametrize("name", TORCHVISION_V2)
def test_torchvision_efficientnet_v2_matches(tmp_path, name):
    import torchvision

    source = _calibrated(getattr(torchvision.models, name.replace("efficientnetv2", "efficientnet_v2"))())
    model = _convert_and_load(tmp_path, source, "torchvision", name)
    assert model.spec.padding == "symmetric" and model.spec.bn_eps == source.features[0][1].eps == 1e-3
    # The fused stages use the same operators in the same order as torchvision: bitwise equal.  (The MBConv
    # stages' squeeze-excite runs as matrix products here, as 1x1 convs there: equal to rounding.)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(_fused_part(model, x), source.features[:4](x))
    _check(source, model)
    width = model.spec.stages[0].out_channels
    assert model.state_dict()["stages.1.0.conv_exp.conv.weight"].shape == (4 * width, width, 3, 3)  # kxk expansion
    pre = file_preprocessing(tmp_path / "converted.safetensors")
    assert pre["mean"] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("name", TIMM_TF_V2)
def test_timm_tf_efficientnetv2_matches_at_odd_sizes(tmp_path, name):
    import timm

    source = _calibrated(timm.create_model("tf_" + name))
    model = _convert_and_load(tmp_path, source, "timm-tf", name, f"tf_{name}.pth")
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    # Odd sizes: TF SAME pads asymmetrically at every stride-2 conv.  The fused stages are bitwise equal.
    x = torch.randn(2, 3, 67, 81, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(_fused_part(model, x), source.blocks[:3](source.bn1(source.conv_stem(x))))
    if name != "efficientnetv2_xl":
        _check(source, model, (67, 81))
        return
    # XL's 104 blocks of random weights grow activations past 1e5 by the last stages, where the two libraries'
    # different operator orders (SE as matrix products here) no longer agree to 1e-5; its first five stages (57 of
    # the 104 blocks, MBConv and SE included) are compared in float64 instead.
    x = x.double()
    with torch.no_grad():
        ours = _fused_part(model.double(), x, 5)
        source.double()
        theirs = source.blocks[:5](source.bn1(source.conv_stem(x)))
    _assert_close_and_input_dependent(ours.flatten(1), theirs.flatten(1))


def test_timm_efficientnetv2_names_and_fused_blocks_map_onto_readable_names(tmp_path):
    """timm's EdgeResidual (conv_exp, bn1, conv_pwl, bn2) and ConvBnAct (conv, bn1) land on conv_exp/project/conv."""
    import timm

    source = _calibrated(timm.create_model("tf_efficientnetv2_b0"))
    model = _convert_and_load(tmp_path, source, "timm-tf", "efficientnetv2_b0", "tf_efficientnetv2_b0.pth")
    theirs, ours = source.state_dict(), model.state_dict()
    for timm_key, key in (("blocks.0.0.conv.weight", "stages.0.0.conv.conv.weight"),
                          ("blocks.1.0.conv_exp.weight", "stages.1.0.conv_exp.conv.weight"),
                          ("blocks.1.0.bn1.running_var", "stages.1.0.conv_exp.bn.running_var"),
                          ("blocks.2.1.conv_pwl.weight", "stages.2.1.project.conv.weight"),
                          ("blocks.2.1.bn2.bias", "stages.2.1.project.bn.bias"),
                          ("blocks.3.0.se.conv_reduce.weight", "stages.3.0.se.reduce.weight")):
        assert torch.equal(ours[key], theirs[timm_key]), (timm_key, key)


@pytest.mark.parametrize("timm_name, effnet_name", [
    ("tf_efficientnetv2_s.in1k", "efficientnetv2_s"),
    ("tf_efficientnetv2_b0.in1k", "efficientnetv2_b0"),
])
def test_timm_tf_v2_conversions_record_timms_pretrained_normalisation(tmp_path, timm_name, effnet_name):
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    src = tmp_path / f"{timm_name}.pth"
    torch.save(timm.create_model(timm_name.split(".")[0]).state_dict(), src)
    out = tmp_path / "out.safetensors"
    convert_file(src, "timm-tf", get_spec(effnet_name), out)
    pre = file_preprocessing(out)
    assert pre["mean"] == pytest.approx(cfg.mean) and pre["std"] == pytest.approx(cfg.std)


def test_convert_cli_v2_writes_a_loadable_file_and_refuses_the_wrong_variant(tmp_path, capsys):
    import timm

    source = _calibrated(timm.create_model("tf_efficientnetv2_b0"))
    src = tmp_path / "tf_efficientnetv2_b0.pth"
    torch.save(source.state_dict(), src)
    out = tmp_path / "b0.safetensors"
    assert main(["convert", str(src), "--from", "timm-tf", "--model", "efficientnetv2_b0", "-o", str(out)]) == 0
    assert "efficientnetv2_b0, padding=same, bn_eps=0.001" in capsys.readouterr().out
    _check(source, effnet.create_model("efficientnetv2_b0", pretrained=str(out)).eval(), (65, 65))
    wrong = tmp_path / "b1.safetensors"
    assert main(["convert", str(src), "--from", "timm-tf", "--model", "efficientnetv2_b1", "-o", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "do not fit efficientnetv2_b1" in err and not wrong.exists()


# -- Keras ----------------------------------------------------------------------------------------------------------


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on {keras.backend.backend()}, the test needs the torch backend")
    return keras


def _keras_model(keras, builder: str, tmp_path, size: int = 64):
    """keras.applications.EfficientNetV2* with random weights, BN statistics calibrated on a random batch (as
    `_calibrated` does), saved as .weights.h5."""
    model = getattr(keras.applications, builder)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    g = torch.Generator().manual_seed(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights([(0.5 + 0.1 * torch.randn(gamma, generator=g)).numpy(),
                               (0.1 * torch.randn(beta, generator=g)).numpy(), torch.zeros(mean).numpy(),
                               torch.ones(var).numpy()])
            layer.momentum = 0.0  # the moving statistics become the batch's
    model((torch.rand(8, size, size, 3, generator=g) * 255).numpy(), training=True)
    path = tmp_path / f"{builder}.weights.h5"
    model.save_weights(str(path))
    return model, path


@pytest.mark.parametrize("builder, name, whole", [
    ("EfficientNetV2B0", "efficientnetv2_b0", True),
    pytest.param("EfficientNetV2S", "efficientnetv2_s", False, marks=pytest.mark.slow),
])
def test_keras_efficientnet_v2_weights_h5_matches(tmp_path, builder, name, whole):
    keras = _keras()
    keras_model, path = _keras_model(keras, builder, tmp_path)
    out = tmp_path / "converted.safetensors"
    convert_file(path, "keras", get_spec(name), out)
    assert load_file(out)[1]["source"] == "keras"
    model = effnet.create_model(name, pretrained=str(out)).eval()
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    pre = file_preprocessing(out)
    mean, std = torch.tensor(pre["mean"])[:, None, None], torch.tensor(pre["std"])[:, None, None]
    pixels = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1)) * 255
    # The Keras model rescales and normalises inside (B0: 1/255 then ImageNet mean/std; S: x/128 - 1); effnet takes
    # the normalised NCHW tensor, made with the preprocessing the converter recorded.
    x = ((pixels / 255).permute(0, 3, 1, 2) - mean) / std
    # Keras on the torch backend computes in float32 only (floatx float64 leaves its convolutions in float32), and
    # rounding differences grow through the blocks: the fused stages and the first MBConv stage agree to 1e-5 of
    # their scale, B0's logits to 1e-4 of theirs (S's later stages grow activations too far for float32 to agree).
    # The stem agrees to about 1e-6; a wrong mapping or padding differs at the first layer by O(1).
    last = f"block4{chr(ord('a') + model.spec.stages[3].repeats - 1)}_add"
    front_keras = keras.Model(keras_model.input, keras_model.get_layer(last).output)
    with torch.no_grad():
        expected_front = torch.as_tensor(front_keras(pixels.numpy(), training=False).detach().cpu())
        torch.testing.assert_close(_fused_part(model, x, 4).permute(0, 2, 3, 1), expected_front, rtol=RTOL,
                                   atol=ATOL * float(expected_front.abs().max()))
        assert (expected_front[0] - expected_front[1]).abs().max() > 0.01 * expected_front.abs().max()
        if whole:
            expected = torch.as_tensor(keras_model(pixels.numpy(), training=False).detach().cpu())
            got = model(x)
    if whole:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
        assert (expected[0] - expected[1]).abs().max() > 0.01 * expected.abs().max()


def test_set_padding_remakes_every_kxk_conv_of_a_v2_model_depthwise_ones_included():
    """TF weights (timm-tf, Keras) loaded into S, whose spec pads symmetrically, switch the model to SAME padding:
    the fused kxk convs and the MBConv depthwise convs alike, so it equals a model built with padding="same"."""
    from effnet.layers import Conv2dSame
    from effnet.weights import set_padding

    spec = replace(effnet.get_spec("efficientnetv2_b0"), padding="symmetric")
    model = effnet.create_model(spec).eval()
    reference = effnet.create_model(replace(spec, padding="same")).eval()
    reference.load_state_dict(model.state_dict())
    set_padding(model, "same")
    kxk = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(kxk) == 1 + 5 + 16 and all(isinstance(m, Conv2dSame) for m in kxk)  # stem, fused, depthwise
    assert [type(m) for m in kxk] == [type(m) for m in reference.modules()
                                      if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    x = torch.randn(1, 3, 67, 81)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
