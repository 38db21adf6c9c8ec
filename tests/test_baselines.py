"""The Table 3 baselines: parameter counts of the standard models, and outputs equal to torchvision / timm."""

import pytest
import torch
import torchvision

from effnet.families.mobilenet import MOBILENET_V1, MOBILENET_V2
from effnet.families.resnet import RESNET50, RESNET101, RESNET152
from effnet.profile import build_meta, count_params
from effnet.registry import create_model, family_of, get_spec
from effnet.scaling import scale
from effnet.weights.torchvision_baselines import (
    TorchvisionMappingError,
    load_torchvision,
    mobilenet_v2_key,
    resnet_key,
)


@pytest.mark.parametrize(
    ("name", "params"),
    [("mobilenet_v1", 4_231_976), ("mobilenet_v2", 3_504_872), ("resnet50", 25_557_032),
     ("resnet101", 44_549_160), ("resnet152", 60_192_808)],
)
def test_parameter_counts_equal_the_standard_models(name, params):
    assert count_params(build_meta(get_spec(name))) == params


def test_registered_with_their_families():
    assert (family_of("mobilenet_v1"), family_of("mobilenet_v2"), family_of("resnet50")) == (
        "mobilenet", "mobilenet", "resnet")
    assert get_spec("resnet50") is RESNET50 and get_spec("mobilenet_v2") is MOBILENET_V2
    assert (family_of("resnet101"), family_of("resnet152")) == ("resnet", "resnet")
    assert get_spec("resnet101") is RESNET101 and get_spec("resnet152") is RESNET152


def test_deeper_resnets_differ_from_resnet50_only_in_block_counts():
    assert [s.repeats for s in RESNET101.stages] == [3, 4, 23, 3]
    assert [s.repeats for s in RESNET152.stages] == [3, 8, 36, 3]
    for deep in (RESNET101, RESNET152):
        assert [s.repeats for s in deep.stages] != [s.repeats for s in RESNET50.stages]
        same = lambda spec: [(s.kind, s.stride, s.out_channels, s.expand_ratio) for s in spec.stages]
        assert same(deep) == same(RESNET50) and (deep.stem, deep.head) == (RESNET50.stem, RESNET50.head)


def _randomise_norms(model: torch.nn.Module) -> None:
    """BN at init is the identity; random statistics make the equality test see every BN tensor."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize(
    ("name", "make_torchvision"),
    [("mobilenet_v2", torchvision.models.mobilenet_v2), ("resnet50", torchvision.models.resnet50),
     ("resnet101", torchvision.models.resnet101), ("resnet152", torchvision.models.resnet152)],
)
def test_output_equals_torchvision_after_weight_mapping(name, make_torchvision):
    theirs = make_torchvision().eval()
    _randomise_norms(theirs)
    ours = load_torchvision(create_model(name), theirs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_mobilenet_v1_output_equals_timm():
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("mobilenetv1_100").eval()
    _randomise_norms(theirs)
    rename = {"conv_stem": "stem.conv", "bn1": "stem.bn", "classifier": "classifier"}
    parts = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "pointwise.conv", "bn2": "pointwise.bn"}
    state = {}
    for key, value in theirs.state_dict().items():
        head, rest = key.split(".", 1)
        if head == "blocks":
            i, j, part, tail = rest.split(".", 3)
            state[f"stages.{i}.{j}.{parts[part]}.{tail}"] = value
        else:
            state[f"{rename[head]}.{rest}"] = value
    ours = create_model("mobilenet_v1").eval()
    ours.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_mapping_names_every_tensor_readably():
    assert mobilenet_v2_key("features.1.conv.0.0.weight") == "stages.0.0.depthwise.conv.weight"
    assert mobilenet_v2_key("features.1.conv.1.weight") == "stages.0.0.project.conv.weight"
    assert mobilenet_v2_key("features.2.conv.0.1.running_var") == "stages.1.0.expand.bn.running_var"
    assert mobilenet_v2_key("features.17.conv.3.bias") == "stages.6.0.project.bn.bias"
    assert mobilenet_v2_key("features.18.0.weight") == "head.conv.weight"
    assert resnet_key("layer3.5.downsample.1.weight") == "stages.2.5.shortcut.bn.weight"
    assert resnet_key("layer1.0.conv2.weight") == "stages.0.0.spatial.conv.weight"
    with pytest.raises(TorchvisionMappingError, match="features.19"):
        mobilenet_v2_key("features.19.0.weight")
    with pytest.raises(TorchvisionMappingError, match="layer5"):
        resnet_key("layer5.0.conv1.weight")


def test_wrong_layout_is_a_clear_error():
    with pytest.raises(TorchvisionMappingError, match="do not fit mobilenet_v2"):
        load_torchvision(create_model("mobilenet_v2"), torchvision.models.mobilenet_v2(width_mult=1.4))


def test_width_scales_bottleneck_inner_widths():
    wide = scale(RESNET50, width=2.0)
    model = create_model(wide)
    block = model.stages[0][0]
    assert (block.reduce.conv.out_channels, block.spatial.conv.out_channels, block.expand.conv.out_channels) == (
        128, 128, 512)
    assert model.stem.conv.out_channels == 128


def test_depth_keeps_downsampling_points():
    deep = scale(MOBILENET_V1, depth=4.0)
    assert [s.repeats for s in deep.stages] == [4, 8, 8, 24, 8]
    assert deep.total_stride == MOBILENET_V1.total_stride == 32
    assert scale(MOBILENET_V2, depth=4.0).num_blocks == 4 * MOBILENET_V2.num_blocks


def test_width_scaled_spec_takes_torchvision_width_multiplier_weights():
    theirs = torchvision.models.mobilenet_v2(width_mult=1.4).eval()
    ours = load_torchvision(create_model(scale(MOBILENET_V2, width=1.4)), theirs).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
