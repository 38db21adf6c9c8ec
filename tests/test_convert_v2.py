"""EfficientNetV2 converters: torchvision, timm and Keras V2 models with random weights, converted, give the same
outputs in effnet, stage by stage and at the logits (the V1 conversions are in test_convert.py).

Random weights make a poor oracle for a deep network: with BN statistics that do not fit the activations, or that
were calibrated on one random batch (the deep 2x2 maps' variances then come from a handful of values), XL's
activations grow past 1e9 in its last stages, where rounding differences are amplified past any tolerance.  Every
source model here is initialised instead with fan-in-scaled conv and dense weights (the scale kept through SiLU),
random but moderate BN statistics and affine parameters, and the residual branches' last BN scaled down so each
skip block is near identity: activations stay O(1)-O(10) through every stage of every variant, the output still
depends on the input (checked) and on every tensor (random BN tensors, so a swapped or mis-mapped one changes it)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace

import pytest
import torch
from torch import nn

import effnet
from effnet.cli import main
from effnet.registry import get_spec
from effnet.weights import convert_file, file_preprocessing, load_file
from tests.test_convert import _convert_and_load

TORCHVISION_V2 = ["efficientnetv2_s"] + [pytest.param(n, marks=pytest.mark.slow)
                                         for n in ("efficientnetv2_m", "efficientnetv2_l")]
TIMM_TF_V2 = ["efficientnetv2_b0"] + [pytest.param(n, marks=pytest.mark.slow) for n in (
    "efficientnetv2_b1", "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s", "efficientnetv2_xl")]

# The libraries differ only in operator order (squeeze-excite as matrix products here, as 1x1 convs there): in
# float64 (torchvision, timm) about 1e-15 of each tensor's scale, XL's 104 blocks included, checked to 1e-10; in
# float32 (Keras, which on the torch backend computes in float32 only, and timm's XL) 1e-7 to 2e-6, checked to 1e-5.
REL_F64, REL_F32 = 1e-10, 1e-5
CONV_GAIN = 1.35  # fan-in-scaled weights times this keep activations' scale through conv, BN and SiLU
BRANCH_SCALE = 0.2  # a residual branch's last BN: the block adds a fifth of a normalised branch to its input


def _bounded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights that keep a deep V2 network's activations bounded (see the module's docstring); fixed seed."""
    g = torch.Generator().manual_seed(seed)

    def randn(t: torch.Tensor, std: float) -> torch.Tensor:
        return std * torch.randn(t.shape, generator=g, dtype=t.dtype)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(randn(m.weight, CONV_GAIN / math.sqrt(m.weight[0].numel())))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(randn(m.weight, 1 / math.sqrt(m.in_features)))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + randn(m.weight, 0.2))
                m.bias.copy_(randn(m.bias, 0.1))
                m.running_mean.copy_(randn(m.running_mean, 0.1))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(randn(m.bias, 0.1))
        for m in model.modules():  # timm's blocks say has_skip, torchvision's use_res_connect
            if getattr(m, "has_skip", False) or getattr(m, "use_res_connect", False):
                last_bn = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)][-1]
                last_bn.weight.mul_(BRANCH_SCALE)
                last_bn.bias.mul_(BRANCH_SCALE)
    return model.eval()


def _assert_close(got: torch.Tensor, expected: torch.Tensor, rel: float, where: str) -> None:
    """Equal to `rel` of the tensor's scale (its largest magnitude), and clearly different for the two inputs."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=rel, atol=rel * scale, msg=lambda m: f"{where}: {m}")
    assert (expected[0] - expected[1]).abs().max() > 0.01 * scale, f"{where}: hardly depends on the input"


def _taps(net: nn.Module, modules: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of `modules` (in the order they run) and the logits, from one forward pass of the whole net."""
    outs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _args, out: outs.append(out)) for m in modules]
    try:
        with torch.no_grad():
            outs.append(net(x))
    finally:
        for h in handles:
            h.remove()
    return outs


def _compare_stagewise(model: nn.Module, x: torch.Tensor, source: nn.Module, source_taps: Sequence[nn.Module],
                       rel: float = REL_F64) -> None:
    """The stem's and every stage's features and the logits of the whole network against the source model's
    (`source_taps`: its stem's last module, then its stages)."""
    assert len(source_taps) == 1 + len(model.stages)
    ours, theirs = _taps(model, [model.stem, *model.stages], x), _taps(source, source_taps, x)
    assert len(ours) == len(theirs) == 2 + len(model.stages)
    for where, got, expected in zip(["stem", *(f"stage {i}" for i in range(len(model.stages))), "logits"], ours,
                                    theirs):
        _assert_close(got, expected, rel, where)


def _fused_part(model: nn.Module, x: torch.Tensor, stages: int = 3) -> torch.Tensor:
    """effnet's stem and first `stages` stages (three: the Fused-MBConv ones)."""
    for stage in (model.stem, *model.stages[:stages]):
        x = stage(x)
    return x


def _compare_timm(model: nn.Module, source: nn.Module, size: tuple[int, int], dtype=torch.float64) -> None:
    """In float64 by default, where rounding cannot hide a wrong mapping behind the tolerance."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=dtype)
    model.to(dtype), source.to(dtype)
    rel = REL_F64 if dtype == torch.float64 else REL_F32
    _compare_stagewise(model, x, source, [source.bn1, *source.blocks], rel)


@pytest.mark.parametrize("name", TORCHVISION_V2)
def test_torchvision_efficientnet_v2_matches(tmp_path, name):
    import torchvision

    source = _bounded(getattr(torchvision.models, name.replace("efficientnetv2", "efficientnet_v2"))())
    model = _convert_and_load(tmp_path, source, "torchvision", name)
    assert model.spec.padding == "symmetric" and model.spec.bn_eps == source.features[0][1].eps == 1e-3
    # The fused stages use the same operators in the same order as torchvision: bitwise equal.  (The MBConv
    # stages' squeeze-excite runs as matrix products here, as 1x1 convs there: equal to rounding.)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(_fused_part(model, x), source.features[:4](x))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model.double(), source.double()
    assert len(source.features) == len(model.stages) + 2  # stem, stages, head conv
    _compare_stagewise(model, x, source, source.features[:-1])
    width = model.spec.stages[0].out_channels
    assert model.state_dict()["stages.1.0.conv_exp.conv.weight"].shape == (4 * width, width, 3, 3)  # kxk expansion
    pre = file_preprocessing(tmp_path / "converted.safetensors")
    assert pre["mean"] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("name", TIMM_TF_V2)
def test_timm_tf_efficientnetv2_matches_at_odd_sizes(tmp_path, name):
    """Every variant end to end, XL's 104 blocks included: each stage's features and the logits in float64."""
    import timm

    source = _bounded(timm.create_model("tf_" + name))
    model = _convert_and_load(tmp_path, source, "timm-tf", name, f"tf_{name}.pth")
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    # Odd sizes: TF SAME pads asymmetrically at every stride-2 conv.  The fused stages are bitwise equal.
    x = torch.randn(2, 3, 67, 81, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(_fused_part(model, x), source.blocks[:3](source.bn1(source.conv_stem(x))))
    # XL in float64 takes minutes on two cores (float64 convs have no fast CPU path); in float32 its logits agree to
    # about 2e-7 of their scale, checked to 1e-5.
    _compare_timm(model, source, (67, 81), torch.float32 if name == "efficientnetv2_xl" else torch.float64)


def test_timm_efficientnetv2_names_and_fused_blocks_map_onto_readable_names(tmp_path):
    """timm's EdgeResidual (conv_exp, bn1, conv_pwl, bn2) and ConvBnAct (conv, bn1) land on conv_exp/project/conv."""
    import timm

    source = _bounded(timm.create_model("tf_efficientnetv2_b0"))
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

    source = _bounded(timm.create_model("tf_efficientnetv2_b0"))
    src = tmp_path / "tf_efficientnetv2_b0.pth"
    torch.save(source.state_dict(), src)
    out = tmp_path / "b0.safetensors"
    assert main(["convert", str(src), "--from", "timm-tf", "--model", "efficientnetv2_b0", "-o", str(out)]) == 0
    assert "efficientnetv2_b0, padding=same, bn_eps=0.001" in capsys.readouterr().out
    _compare_timm(effnet.create_model("efficientnetv2_b0", pretrained=str(out)).eval(), source, (65, 65))
    wrong = tmp_path / "b1.safetensors"
    assert main(["convert", str(src), "--from", "timm-tf", "--model", "efficientnetv2_b1", "-o", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "do not fit efficientnetv2_b1" in err and not wrong.exists()


# -- Keras ----------------------------------------------------------------------------------------------------------
# keras.applications has EfficientNetV2B0-B3, S, M and L (no XL); B0 runs by default, the larger ones are slow
# (M and L take tens of seconds on two cores, most of it building and saving the Keras model).


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on {keras.backend.backend()}, the test needs the torch backend")
    return keras


def _keras_model(keras, builder: str, size: int = 64):
    """keras.applications.EfficientNetV2* with `_bounded`'s weights written in Keras' layouts: fan-in-scaled
    kernels (HWIO; depthwise HW C 1), random moderate BN tensors, residual branches' project BN scaled down."""
    model = getattr(keras.applications, builder)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    g = torch.Generator().manual_seed(0)

    def randn(shape, std: float):
        return (std * torch.randn(tuple(shape), generator=g, dtype=torch.float64)).float().numpy()

    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in weights)
            skip = layer.name.endswith("_project_bn") and layer.name.removesuffix("project_bn") + "add" in names
            branch = BRANCH_SCALE if skip else 1.0
            layer.set_weights([branch * (1 + randn(gamma, 0.2)), branch * randn(beta, 0.1), randn(mean, 0.1),
                               (0.5 + torch.rand(tuple(var), generator=g)).numpy()])
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = weights[0]
            fan_in = kernel.shape[0] * kernel.shape[1]
            layer.set_weights([randn(kernel.shape, CONV_GAIN / math.sqrt(fan_in))]
                              + [randn(w.shape, 0.1) for w in weights[1:]])
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = weights[0]
            fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
            layer.set_weights([randn(kernel.shape, CONV_GAIN / math.sqrt(fan_in))]
                              + [randn(w.shape, 0.1) for w in weights[1:]])
        elif isinstance(layer, keras.layers.Dense):
            kernel, bias = weights
            layer.set_weights([randn(kernel.shape, 1 / math.sqrt(kernel.shape[0])), randn(bias.shape, 0.1)])
    return model


def _compare_keras(keras, keras_model, out, name: str, size: int = 64) -> None:
    """The converted file against the Keras model: stem, every stage and the logits, to 1e-5 of each one's scale.
    The Keras model rescales and normalises inside (B0-B3: 1/255 then its Normalization layer; S/M/L: x/128 - 1);
    effnet takes the normalised NCHW tensor, made with the preprocessing the converter recorded."""
    model = effnet.create_model(name, pretrained=str(out)).eval()
    assert model.spec.padding == "same" and model.spec.bn_eps == 1e-3
    pre = file_preprocessing(out)
    mean, std = torch.tensor(pre["mean"])[:, None, None], torch.tensor(pre["std"])[:, None, None]
    pixels = torch.rand(2, size, size, 3, generator=torch.Generator().manual_seed(1)) * 255
    x = ((pixels / 255).permute(0, 3, 1, 2) - mean) / std
    # A stage ends at the last layer of its last block (blockNx_add, or a block without skip's last layer).
    ends = ["stem_activation"] + [[layer.name for layer in keras_model.layers if layer.name.startswith(f"block{i}")][-1]
                                  for i in range(1, len(model.spec.stages) + 1)]
    assert not any(layer.name.startswith(f"block{len(model.spec.stages) + 1}") for layer in keras_model.layers)
    features = keras.Model(keras_model.input, [keras_model.get_layer(n).output for n in ends] + [keras_model.output])
    with torch.no_grad():
        expected = [torch.as_tensor(t.detach().cpu()) for t in features(pixels.numpy(), training=False)]
        ours = [model.stem(x)]
        for stage in model.stages:
            ours.append(stage(ours[-1]))
        got = [t.permute(0, 2, 3, 1) for t in ours] + [model(x)]
    for where, g, e in zip(["stem"] + [f"stage {i}" for i in range(len(model.stages))] + ["logits"], got, expected):
        _assert_close(g, e, REL_F32, where)


@pytest.mark.parametrize("builder, name", [
    ("EfficientNetV2B0", "efficientnetv2_b0"),
    pytest.param("EfficientNetV2S", "efficientnetv2_s", marks=pytest.mark.slow),
    pytest.param("EfficientNetV2M", "efficientnetv2_m", marks=pytest.mark.slow),
    pytest.param("EfficientNetV2L", "efficientnetv2_l", marks=pytest.mark.slow),
])
def test_keras_efficientnet_v2_weights_h5_matches(tmp_path, builder, name):
    keras = _keras()
    keras_model = _keras_model(keras, builder)
    path = tmp_path / f"{builder}.weights.h5"
    keras_model.save_weights(str(path))
    out = tmp_path / "converted.safetensors"
    convert_file(path, "keras", get_spec(name), out)
    assert load_file(out)[1]["source"] == "keras"
    _compare_keras(keras, keras_model, out, name)


def test_keras_efficientnet_v2_legacy_h5_matches(tmp_path):
    """The legacy per-layer-name HDF5 layout (`model.save("x.h5")`: a model_weights group, layer_names in order)."""
    keras = _keras()
    keras_model = _keras_model(keras, "EfficientNetV2B0")
    path = tmp_path / "EfficientNetV2B0.h5"
    keras_model.save(str(path))
    out = tmp_path / "converted.safetensors"
    convert_file(path, "keras", get_spec("efficientnetv2_b0"), out)
    _compare_keras(keras, keras_model, out, "efficientnetv2_b0")


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
