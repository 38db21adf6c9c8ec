"""The EfficientNetV2 family against its oracles (torchvision's efficientnet_v2_s/m/l, timm's tf_efficientnetv2_xl
and _b0-_b3, built here on the meta device), the V2 paper's Table 7 and, for B0-B3, the reference release's table."""

import pytest
import timm
import torch
import torchvision

import effnet
from effnet.families import efficientnet as v1
from effnet.families.efficientnet_v2 import (
    PAPER_TABLE7,
    PUBLISHED,
    REFERENCE_B0_B3,
    VARIANTS_V2,
    efficientnet_v2,
    train_resolution,
)
from effnet.profile import build_meta, count_macs, count_params

EXPECTED_PARAMS = {
    "efficientnetv2_s": 21_458_488, "efficientnetv2_m": 54_139_356, "efficientnetv2_l": 118_515_272,
    "efficientnetv2_xl": 208_119_808, "efficientnetv2_b0": 7_139_704, "efficientnetv2_b1": 8_141_052,
    "efficientnetv2_b2": 10_096_086, "efficientnetv2_b3": 14_358_406,
}


def _oracle(name: str):
    """torchvision builds S, M and L; timm's tf_efficientnetv2_* (TF's layout) builds XL and B0-B3."""
    with torch.device("meta"):
        if name in ("efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l"):
            return getattr(torchvision.models, name.replace("efficientnetv2", "efficientnet_v2"))()
        return timm.create_model("tf_" + name)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_count_equals_the_oracle_exactly(name):
    ours = count_params(build_meta(effnet.get_spec(name)))
    assert ours == count_params(_oracle(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", ["efficientnetv2_s", "efficientnetv2_b0", "efficientnetv2_b3"])
def test_macs_match_the_oracle(name):
    spec = effnet.get_spec(name)
    assert count_macs(spec) == pytest.approx(count_macs(_oracle(name).eval(), spec.resolution), rel=0.005)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_macs_are_near_the_published_tables(name):
    """Table 7 rounds parameters to the million and counts at the eval size (S: 22M and 8.8B, where the reference
    release's table and effnet count 21.5M and 8.4B; L: 53B, 56.3B there); B0-B3's table to 0.1M and 0.01-0.1B."""
    spec = effnet.get_spec(name)
    paper = PUBLISHED[name]
    near = 0.07 if name in PAPER_TABLE7 else 0.01
    assert count_params(build_meta(spec)) / 1e6 == pytest.approx(paper.params_m, rel=min(near, 0.03))
    assert count_macs(spec) / 1e9 == pytest.approx(paper.flops_b, rel=near)


def test_published_figures_are_table7s_and_the_reference_releases():
    """The figures `effnet models` shows, as published: Table 7 for S/M/L/XL (XL only after ImageNet-21k
    pre-training), the reference release's table for B0-B3 (ImageNet-1k only)."""
    rows = {name: (f.params_m, f.flops_b, f.top1, f.top1_21k, f.source) for name, f in PUBLISHED.items()}
    assert rows == {
        "efficientnetv2_s": (22, 8.8, 83.9, 84.9, "V2 Table 7"),
        "efficientnetv2_m": (54, 24, 85.1, 86.2, "V2 Table 7"),
        "efficientnetv2_l": (120, 53, 85.7, 86.8, "V2 Table 7"),
        "efficientnetv2_xl": (208, 94, None, 87.3, "V2 Table 7"),
        "efficientnetv2_b0": (7.1, 0.72, 78.7, None, "V2 ref. README"),
        "efficientnetv2_b1": (8.1, 1.2, 79.8, None, "V2 ref. README"),
        "efficientnetv2_b2": (10.1, 1.7, 80.5, None, "V2 ref. README"),
        "efficientnetv2_b3": (14.4, 3.0, 82.1, None, "V2 ref. README"),
    }
    assert set(PUBLISHED) == set(VARIANTS_V2) and not set(PAPER_TABLE7) & set(REFERENCE_B0_B3)


def test_s_structure_is_the_reference_table():
    spec = efficientnet_v2("efficientnetv2_s")
    rows = [(s.kind, s.expand_ratio, s.kernel, s.stride, s.out_channels, s.repeats, s.se_ratio) for s in spec.stages]
    assert rows == [("fused_mbconv", 1, 3, 1, 24, 2, 0), ("fused_mbconv", 4, 3, 2, 48, 4, 0),
                    ("fused_mbconv", 4, 3, 2, 64, 4, 0), ("mbconv", 4, 3, 2, 128, 6, 0.25),
                    ("mbconv", 6, 3, 1, 160, 9, 0.25), ("mbconv", 6, 3, 2, 256, 15, 0.25)]
    assert (spec.stem.channels, spec.head.channels) == (24, 1280)


def test_b0_to_b3_take_v1s_width_and_depth_and_v2s_rounding():
    for i in range(4):
        name = f"efficientnetv2_b{i}"
        assert VARIANTS_V2[name].v1_multipliers == f"efficientnet_b{i}"
    base = efficientnet_v2("efficientnetv2_b0")
    b3 = efficientnet_v2("efficientnetv2_b3")
    m = v1.VARIANTS["efficientnet_b3"]
    assert (m.width, m.depth) == (1.2, 1.4)
    assert [s.repeats for s in b3.stages] == [2, 3, 3, 5, 7, 12]  # ceil(1.4 x (1, 2, 2, 3, 5, 8))
    # 16 x 1.2 = 19.2 rounds to 16 (V2's reference; V1's 90% floor would give 24), 32 x 1.2 to 40, 1280 x 1.2 to 1536
    assert [s.out_channels for s in b3.stages] == [16, 40, 56, 112, 136, 232]
    assert (b3.stem.channels, b3.head.channels) == (40, 1536)
    assert [s.out_channels for s in base.stages] == [16, 32, 48, 96, 112, 192]


@pytest.mark.parametrize("name, train, res, dropout, padding", [
    ("efficientnetv2_s", 300, 384, 0.2, "symmetric"), ("efficientnetv2_m", 384, 480, 0.3, "symmetric"),
    ("efficientnetv2_l", 384, 480, 0.4, "symmetric"), ("efficientnetv2_xl", 384, 512, 0.4, "same"),
    ("efficientnetv2_b0", 192, 224, 0.2, "same"), ("efficientnetv2_b1", 192, 240, 0.2, "same"),
    ("efficientnetv2_b2", 208, 260, 0.3, "same"), ("efficientnetv2_b3", 240, 300, 0.3, "same"),
])
def test_resolutions_dropout_bn_and_padding(name, train, res, dropout, padding):
    spec = effnet.get_spec(name)
    assert (train_resolution(name), spec.resolution, spec.dropout, spec.padding) == (train, res, dropout, padding)
    assert (spec.bn_eps, spec.bn_momentum, spec.drop_path_rate) == (1e-3, 0.1, 0.2)
    assert effnet.registry.family_of(name) == "efficientnet-v2"


def test_registry_preprocessing_follows_the_weights_conventions():
    assert effnet.get_config("efficientnetv2_xl").mean == (0.5, 0.5, 0.5)
    assert effnet.get_config("efficientnetv2_s").mean == pytest.approx((0.485, 0.456, 0.406))
    assert effnet.get_config("efficientnetv2_b0").std == pytest.approx((0.229, 0.224, 0.225))


def test_b0_forward_and_state_dict_names():
    model = effnet.create_model("efficientnetv2_b0", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 71)).shape == (1, 7)
    keys = set(model.state_dict())
    for key in ("stages.0.0.conv.conv.weight", "stages.1.0.conv_exp.conv.weight", "stages.1.0.conv_exp.bn.running_var",
                "stages.1.0.project.conv.weight", "stages.3.0.expand.conv.weight", "stages.3.0.se.reduce.weight"):
        assert key in keys
    assert type(model.stem.conv).__name__ == "Conv2dSame"  # TF-trained weights: "same" padding
