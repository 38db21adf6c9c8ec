import pytest
import torch

import effnet
from effnet.profile import count_activations, count_macs, profile, profile_stages

from .conftest import tiny_spec


def test_macs_are_half_the_counted_flops_of_a_single_conv():
    spec = tiny_spec()
    rows = profile_stages(spec)
    stem = rows[0]
    # 3x3 conv, 3 -> 8 channels, stride 2 on 32x32: 16*16 outputs * 8 * 3*3*3 MACs
    assert stem.macs == 16 * 16 * 8 * 27
    assert stem.output_size == (16, 16)


def test_stage_table_sums_to_the_whole_model(tiny):
    rows = profile_stages(tiny)
    whole = profile(tiny)
    assert sum(r.macs for r in rows) == whole.macs
    assert sum(r.params for r in rows) == whole.params
    assert [r.name for r in rows] == ["stem", "stages.0", "stages.1", "stages.2", "head", "classifier"]
    assert [r.output_size for r in rows[:4]] == [(16, 16), (16, 16), (8, 8), (4, 4)]


def test_macs_on_meta_equal_macs_on_a_real_model(tiny):
    model = effnet.ConvNet(tiny)
    assert count_macs(model) == count_macs(tiny)
    assert model.training  # counting restores the mode


def test_macs_grow_with_resolution_squared(tiny):
    convs = count_macs(tiny, 64) - tiny.num_features * tiny.num_classes
    base = count_macs(tiny, 32) - tiny.num_features * tiny.num_classes
    assert convs == pytest.approx(4 * base, rel=0.02)


def test_model_without_spec_needs_resolution():
    with pytest.raises(ValueError, match="explicit resolution"):
        count_macs(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def test_eval_resize_is_resolution_plus_32_at_every_size():
    from effnet.transforms import resize_size

    assert all(resize_size(effnet.get_config("efficientnet_b0", r)) == r + 32 for r in range(8, 1200))


def test_activations_equal_a_hand_count(tiny):
    """Output elements of every conv and matrix product of the tiny net at 32 px (SE reduces to se_ratio x the
    block's input channels)."""
    stem = 8 * 16 * 16
    stage0 = 8 * 16 * 16 + (2 + 8) + 8 * 16 * 16  # depthwise, SE reduce + expand, project
    stage1 = (32 * 16 * 16 + 32 * 8 * 8 + (2 + 32) + 16 * 8 * 8) + (64 * 8 * 8 + 64 * 8 * 8 + (4 + 64) + 16 * 8 * 8)
    stage2 = 64 * 8 * 8 + 64 * 4 * 4 + (4 + 64) + 24 * 4 * 4
    head, classifier = 64 * 4 * 4, 10
    rows = {r.name: r.activations for r in profile_stages(tiny)}
    assert rows == {"stem": stem, "stages.0": stage0, "stages.1": stage1, "stages.2": stage2, "head": head,
                    "classifier": classifier}
    assert count_activations(tiny) == profile(tiny).activations == sum(rows.values()) == 33_342


def test_activations_on_a_real_model_equal_the_meta_count(tiny):
    model = effnet.ConvNet(tiny)
    assert count_activations(model) == count_activations(tiny)
    pooled = (2 + 8) + (2 + 32) + (4 + 64) + (4 + 64) + 10  # SE and classifier outputs do not grow with the image
    assert count_activations(tiny, 64) == 4 * (count_activations(tiny) - pooled) + pooled
    with pytest.raises(ValueError, match="count_activations: a model without a spec"):
        count_activations(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def test_activations_of_b0_and_resnet50_match_dollar_et_al():
    """Dollár, Singh & Girshick (CVPR 2021), Table 2: EfficientNet-B0 6.7M activations, ResNet-50 11.1M."""
    assert round(profile(effnet.get_spec("efficientnet_b0")).activations / 1e6, 1) == 6.7
    assert round(count_activations(effnet.get_spec("resnet50")) / 1e6, 1) == 11.1


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet50", "mobilenet_v2", "efficientnet_lite0"])
def test_block_by_block_count_equals_one_traced_forward(name):
    """Specs are counted part by part with each distinct block traced once; the totals equal one traced forward."""
    from effnet.network import build_meta
    from effnet.profile import _counted

    spec = effnet.get_spec(name)
    for res in (spec.resolution, 96):
        whole = _counted(build_meta(spec).eval(), torch.empty(1, spec.in_channels, res, res, device="meta"))[:2]
        assert (count_macs(spec, res), count_activations(spec, res)) == whole
