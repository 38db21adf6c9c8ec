"""The EfficientNet family against the reference implementations (timm, torchvision: oracles with random
weights, built here) and the paper's Table 2."""

import pytest
import timm
import torch
import torchvision
from timm.models.efficientnet import _gen_efficientnet

import effnet
from effnet.families.efficientnet import EFFICIENTNET_B0, PAPER_TABLE2
from effnet.profile import build_meta, count_macs, count_params
from effnet.scaling import compound, scale

EXPECTED_PARAMS = {
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960, "efficientnet_b8": 87_413_142,
    "efficientnet_l2": 480_309_308, "efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
}
B0_TO_B7 = [f"efficientnet_b{i}" for i in range(8)]


def _meta(build):
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_count_is_exact(name):
    assert count_params(build_meta(effnet.get_spec(name))) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", B0_TO_B7)
def test_parameter_count_equals_timm_and_torchvision(name):
    ours = count_params(build_meta(effnet.get_spec(name)))
    assert ours == count_params(_meta(lambda: timm.create_model(name)))
    assert ours == count_params(_meta(lambda: getattr(torchvision.models, name)()))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                  "efficientnet_lite3", "efficientnet_lite4"])
def test_lite_parameter_count_equals_timm(name):
    assert count_params(build_meta(effnet.get_spec(name))) == count_params(_meta(lambda: timm.create_model(name)))


@pytest.mark.parametrize("name", B0_TO_B7)
def test_macs_match_timm_and_paper_table2(name):
    spec = effnet.get_spec(name)
    ours = count_macs(spec)
    theirs = count_macs(_meta(lambda: timm.create_model(name)).eval(), spec.resolution)
    assert ours == pytest.approx(theirs, rel=0.005)
    assert ours / 1e9 == pytest.approx(PAPER_TABLE2[name][1], rel=0.05)


@pytest.mark.parametrize(("phi", "timm_ratio"), [(1, 2.57), (2, 4.69), (3, 8.43)])
def test_compound_scaled_b0_matches_timm_at_same_multipliers(phi, timm_ratio):
    m = compound(phi)
    spec = scale(EFFICIENTNET_B0, m.depth, m.width, m.resolution)
    assert spec.resolution == round(224 * m.resolution)
    ours = count_macs(spec)
    oracle = _meta(lambda: _gen_efficientnet("efficientnet_b0", channel_multiplier=m.width,
                                             depth_multiplier=m.depth)).eval()
    assert ours == pytest.approx(count_macs(oracle, spec.resolution), rel=0.005)
    assert ours / count_macs(EFFICIENTNET_B0) == pytest.approx(timm_ratio, abs=0.01)


def _forward_shape(name):
    spec = effnet.get_spec(name)
    model = effnet.create_model(name).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, spec.resolution, spec.resolution))
    return tuple(out.shape)


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
                                  "efficientnet_lite0"])
def test_forward_output_shape_at_native_resolution(name):
    assert _forward_shape(name) == (1, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7"])
def test_forward_output_shape_at_native_resolution_large(name):
    assert _forward_shape(name) == (1, 1000)


def test_b0_structure_is_table1():
    rows = [(s.expand_ratio, s.kernel, s.stride, s.out_channels, s.repeats) for s in EFFICIENTNET_B0.stages]
    assert rows == [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                    (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    assert EFFICIENTNET_B0.stem.channels == 32 and EFFICIENTNET_B0.head.channels == 1280
    assert all(s.se_ratio == 0.25 and s.activation == "silu" for s in EFFICIENTNET_B0.stages)
    assert (EFFICIENTNET_B0.bn_eps, EFFICIENTNET_B0.bn_momentum) == (1e-3, 0.01)


def test_stochastic_depth_rises_linearly_over_blocks():
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.2)
    rates = [b.drop_path.rate for stage in model.stages for b in stage if hasattr(b.drop_path, "rate")]
    blocks = [b for stage in model.stages for b in stage]
    expected = [0.2 * i / 16 for i, b in enumerate(blocks) if b.has_skip]
    assert rates == pytest.approx(expected)


def test_model_options_are_applied():
    model = effnet.create_model("efficientnet_b0", num_classes=10, in_chans=1, drop_rate=0.5, padding="same")
    assert model.classifier.out_features == 10
    assert model.stem.conv.in_channels == 1
    assert model.dropout.p == 0.5
    assert type(model.stem.conv).__name__ == "Conv2dSame"
    out = model.eval()(torch.randn(2, 1, 65, 65))
    assert out.shape == (2, 10)


def test_state_dict_names_are_readable():
    keys = set(effnet.create_model("efficientnet_b0").state_dict())
    for key in ("stem.conv.weight", "stages.3.1.expand.conv.weight", "stages.3.1.se.reduce.weight",
                "stages.3.1.depthwise.bn.running_var", "stages.3.1.project.conv.weight", "head.conv.weight",
                "classifier.weight"):
        assert key in keys
