import pytest
import torch

import effnet
from effnet.profile import count_macs, profile, profile_stages

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
