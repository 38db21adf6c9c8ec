"""`effnet.scaling.fuse_stages`: a spec's first k stages made of Fused-MBConv (EfficientNetV2, Table 3)."""

from __future__ import annotations

import pytest
import torch

from effnet.network import ConvNet
from effnet.profile import build_meta, count_params, profile
from effnet.registry import get_spec
from effnet.scaling import fuse_stages
from effnet.spec import SpecError, StageSpec
from tests.conftest import tiny_spec

KEPT = ("repeats", "kernel", "stride", "out_channels", "expand_ratio", "activation")


def _se_params(mid: int, in_ch: int, ratio: float) -> int:
    reduced = max(1, int(in_ch * ratio))
    return mid * reduced + reduced + reduced * mid + mid if ratio > 0 else 0


def _block_params(kind: str, in_ch: int, stage: StageSpec) -> int:
    """Parameters of one block written out from the papers' block diagrams (convs without bias, BN 2 per channel)."""
    k, out, mid = stage.kernel, stage.out_channels, in_ch * stage.expand_ratio
    if kind == "mbconv":
        expand = in_ch * mid + 2 * mid if mid != in_ch else 0
        return expand + k * k * mid + 2 * mid + _se_params(mid, in_ch, stage.se_ratio) + mid * out + 2 * out
    if mid == in_ch:  # fused, no expansion: one kxk conv
        return k * k * in_ch * out + 2 * out
    return k * k * in_ch * mid + 2 * mid + mid * out + 2 * out


def _expected_difference(spec, count: int) -> int:
    diff, in_ch = 0, spec.stem.channels
    for stage in spec.stages[:count]:
        for _ in range(stage.repeats):
            diff += _block_params("fused", in_ch, stage) - _block_params("mbconv", in_ch, stage)
            in_ch = stage.out_channels
    return diff


@pytest.mark.parametrize("count", [1, 2, 3])
def test_fused_stages_keep_their_shape_and_lose_se(count):
    spec = tiny_spec()
    fused = fuse_stages(spec, count)
    assert fused.name == f"tiny_fused{count}"
    for i, (a, b) in enumerate(zip(spec.stages, fused.stages)):
        assert [getattr(a, f) for f in KEPT] == [getattr(b, f) for f in KEPT]
        if i < count:
            assert (b.kind, b.se_ratio) == ("fused_mbconv", 0.0)
        else:
            assert b == a
    assert (fused.stem, fused.head, fused.resolution) == (spec.stem, spec.head, spec.resolution)


def test_no_fused_stage_is_the_same_spec():
    spec = tiny_spec()
    assert fuse_stages(spec, 0) == spec


@pytest.mark.parametrize("count", [1, 2, 3])
def test_params_change_by_the_blocks_replaced(count):
    spec = tiny_spec()
    before, after = count_params(ConvNet(spec)), count_params(ConvNet(fuse_stages(spec, count)))
    assert after - before == _expected_difference(spec, count) != 0


def test_fused_model_runs_with_the_same_feature_shapes():
    spec = tiny_spec()
    base, fused = ConvNet(spec).eval(), ConvNet(fuse_stages(spec, 3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert fused(x).shape == base(x).shape == (2, 10)
        assert _stage_shapes(fused, x) == _stage_shapes(base, x)
    fused.train()
    loss = fused(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in fused.stages[0].parameters())


def _stage_shapes(model, x):
    shapes, h = [], model.stem(x)
    for stage in model.stages:
        h = stage(h)
        shapes.append(tuple(h.shape))
    return shapes


@pytest.mark.parametrize("count", [-1, 4, 1.5, True, "2"])
def test_bad_count_is_one_line(count):
    with pytest.raises(SpecError) as info:
        fuse_stages(tiny_spec(), count)
    assert "fused stages: got" in str(info.value) and "\n" not in str(info.value)


def test_a_stage_that_is_not_mbconv_is_refused():
    with pytest.raises(SpecError, match=r"stage\(s\) 1 \(bottleneck\)"):
        fuse_stages(get_spec("resnet50"), 1)


@pytest.mark.slow
@pytest.mark.parametrize("count, paper_params, within", [(0, 19.3, 0.01), (5, 43.4, 0.01), (7, 132.0, 0.01),
                                                         (3, 20.0, 0.05)])
def test_b4_variants_count_near_v2_table3(count, paper_params, within):
    """With SE dropped in the fused stages the counts land on the paper's (stages 1-3: 20.9M against 20.0M)."""
    spec = fuse_stages(get_spec("efficientnet_b4"), count)
    params = count_params(build_meta(spec)) / 1e6
    assert abs(params - paper_params) / paper_params < within, params
    assert profile(spec).macs > 0
