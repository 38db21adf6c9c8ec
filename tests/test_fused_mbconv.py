"""Fused-MBConv as a block kind: what it builds and computes, and that a spec made of it validates, round-trips
through JSON, scales, profiles, exports to ONNX with parity, builds `features_only` and is a choice of the NAS
space.  (Whole V2 models against their oracles: test_family_v2.py and test_convert_v2.py.)"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import effnet
from effnet.blocks import BlockContext, FusedMBConv
from effnet.cli import main
from effnet.network import ConvNet
from effnet.profile import count_macs, count_params, profile, profile_stages
from effnet.scaling import scale
from effnet.search.space import describe_point, space_from_dict
from effnet.spec import HeadSpec, NetSpec, SpecError, StageSpec, StemSpec


def fused_spec(**overrides) -> NetSpec:
    """A small V2-shaped net: fused stages first (ratio 1 with a skip, ratio 4 strided with SE), then an MBConv."""
    base = dict(
        name="tiny_v2",
        stem=StemSpec(channels=8),
        stages=(
            StageSpec("fused_mbconv", 2, 3, 1, 8, expand_ratio=1),
            StageSpec("fused_mbconv", 2, 3, 2, 16, expand_ratio=4, se_ratio=0.25),
            StageSpec("mbconv", 1, 3, 2, 24, expand_ratio=4, se_ratio=0.25),
        ),
        head=HeadSpec(channels=64),
        resolution=32,
        num_classes=10,
        drop_path_rate=0.2,
        bn_eps=1e-3,
    )
    base.update(overrides)
    return NetSpec(**base)


def _ctx(in_channels: int, stride: int) -> BlockContext:
    return BlockContext(in_channels, stride, 0.1, 1e-3, 0.1, "symmetric")


def _randomized_eval(module: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return module.eval()


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


# -- the block --------------------------------------------------------------------------------------------------------


def test_expanding_block_is_kxk_expand_with_stride_then_1x1_projection():
    block = FusedMBConv(StageSpec("fused_mbconv", 1, 5, 2, 24, expand_ratio=4, se_ratio=0.25), _ctx(16, 2))
    assert (block.conv_exp.conv.kernel_size, block.conv_exp.conv.stride) == ((5, 5), (2, 2))
    conv = block.conv_exp.conv
    assert (conv.in_channels, conv.out_channels, conv.groups) == (16, 64, 1)
    assert block.project.conv.kernel_size == (1, 1) and block.project.conv.out_channels == 24
    assert isinstance(block.project.act, nn.Identity) and not isinstance(block.conv_exp.act, nn.Identity)
    assert block.se.reduce.out_channels == 4  # 0.25 x the block's 16 input channels, not its 64 expanded ones
    assert not block.has_skip and not hasattr(block, "conv")


def test_block_without_expansion_is_one_kxk_conv_norm_act_with_a_skip():
    block = FusedMBConv(StageSpec("fused_mbconv", 1, 3, 1, 24, expand_ratio=1), _ctx(24, 1))
    assert [name for name, _ in block.named_children()] == ["se", "conv", "drop_path"]
    assert block.conv.conv.kernel_size == (3, 3) and not isinstance(block.conv.act, nn.Identity)
    assert block.has_skip and block.drop_path.rate == pytest.approx(0.1)
    assert count_params(block) == 24 * 24 * 9 + 2 * 24


def test_forward_is_the_reference_computation():
    """conv_exp → BN → SiLU → SE (on the expanded features, sized from the input) → 1x1 → BN, plus the input."""
    block = _randomized_eval(FusedMBConv(StageSpec("fused_mbconv", 1, 3, 1, 8, expand_ratio=4, se_ratio=0.25),
                                         _ctx(8, 1)))
    x = torch.randn(2, 8, 9, 9)
    e = block.conv_exp
    h = F.silu(_bn(F.conv2d(x, e.conv.weight, padding=1), e.bn))
    s = F.silu(F.conv2d(h.mean((2, 3), keepdim=True), block.se.reduce.weight, block.se.reduce.bias))
    h = h * torch.sigmoid(F.conv2d(s, block.se.expand.weight, block.se.expand.bias))
    expected = x + _bn(F.conv2d(h, block.project.conv.weight), block.project.bn)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_unexpanded_block_applies_se_to_its_input_before_the_conv():
    """The V2 reference (and Keras): without an expansion, SE acts on the block input, then the kxk conv."""
    block = _randomized_eval(FusedMBConv(StageSpec("fused_mbconv", 1, 3, 2, 16, expand_ratio=1, se_ratio=0.5),
                                         _ctx(8, 2)))
    x = torch.randn(2, 8, 8, 8)
    s = F.silu(F.conv2d(x.mean((2, 3), keepdim=True), block.se.reduce.weight, block.se.reduce.bias))
    gated = x * torch.sigmoid(F.conv2d(s, block.se.expand.weight, block.se.expand.bias))
    expected = F.silu(_bn(F.conv2d(gated, block.conv.conv.weight, stride=2, padding=1), block.conv.bn))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_stochastic_depth_drops_the_residual_branch_in_training_only():
    block = FusedMBConv(StageSpec("fused_mbconv", 1, 3, 1, 8, expand_ratio=4), replace(_ctx(8, 1), drop_path_rate=0.5))
    x = torch.randn(64, 8, 4, 4)
    torch.manual_seed(0)
    out = block.train()(x)
    kept = [not torch.equal(out[i], x[i]) for i in range(64)]
    assert 10 < sum(kept) < 54  # about half the samples keep their branch, the others are the input itself


# -- spec, JSON, profile, scaling ---------------------------------------------------------------------------------


def test_spec_json_round_trip_keeps_fused_stages():
    spec = fused_spec()
    again = NetSpec.from_json(spec.to_json())
    assert again == spec and [s.kind for s in again.stages] == ["fused_mbconv", "fused_mbconv", "mbconv"]


def test_se_is_refused_on_blocks_without_it_and_names_both_kinds_that_have_it():
    with pytest.raises(SpecError, match="only 'mbconv' and 'fused_mbconv' blocks have SE"):
        StageSpec("separable", 1, 3, 1, 8, se_ratio=0.25).validate("stages[0]")


def test_profile_counts_the_fused_convolutions():
    spec = fused_spec(stages=(StageSpec("fused_mbconv", 1, 3, 2, 16, expand_ratio=4),), head=HeadSpec(channels=0),
                      num_classes=0)
    # stem 3->8 (3x3/2, 16x16 out), then conv_exp 8->32 (3x3/2, 8x8 out) and project 32->16 (1x1, 8x8)
    expected = 16 * 16 * 8 * 3 * 9 + 8 * 8 * 32 * 8 * 9 + 8 * 8 * 16 * 32
    assert count_macs(spec) == expected
    p = profile(spec)
    assert p.params == count_params(ConvNet(spec)) and p.activations == 16 * 16 * 8 + 8 * 8 * (32 + 16)
    rows = profile_stages(fused_spec())
    assert [r.operator for r in rows[1:4]] == ["fused_mbconv1", "fused_mbconv4+se0.25", "mbconv4+se0.25"]


def test_info_cli_shows_a_fused_spec_file(tmp_path, capsys):
    path = tmp_path / "v2.json"
    path.write_text(fused_spec().to_json())
    assert main(["info", str(path), "--format", "json"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert stages[2]["operator"] == "fused_mbconv4+se0.25" and stages[2]["out_channels"] == 16


def test_scaling_keeps_block_kinds_and_scales_fused_widths_and_depths():
    spec = fused_spec()
    scaled = scale(spec, depth=2.0, width=1.5, resolution=2.0)
    assert [s.kind for s in scaled.stages] == [s.kind for s in spec.stages]
    assert [s.repeats for s in scaled.stages] == [4, 4, 2]
    assert [s.out_channels for s in scaled.stages] == [16, 24, 40] and scaled.resolution == 64
    model = ConvNet(scaled).eval()
    assert model.stages[1][0].conv_exp.conv.out_channels == 16 * 4  # expansion of the scaled input width
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_v2_rounding_has_no_90_percent_floor():
    """V2's reference rounds 16 x 1.2 = 19.2 to 16; V1's (round_limit 0.9) adds a divisor: 24."""
    v2 = effnet.get_spec("efficientnetv2_b0")
    v1_rules = replace(v2, scaling=replace(v2.scaling, round_limit=0.9))
    assert scale(v2, width=1.2).stages[0].out_channels == 16
    assert scale(v1_rules, width=1.2).stages[0].out_channels == 24
    assert "round_limit" in v2.to_dict()["scaling"] and "round_limit" not in effnet.get_spec(
        "efficientnet_b0").to_dict()["scaling"]  # V1 specs' JSON (and run records keyed on it) is unchanged


# -- export, features ----------------------------------------------------------------------------------------------


def test_onnx_export_of_a_fused_spec_matches_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    from effnet.export import export

    model = ConvNet(fused_spec())
    report = export(model, tmp_path / "v2.onnx", "onnx", resolution=40, check_batch=2)
    assert report.ok and report.relative_error < 1e-4 and report.max_abs_error < 1e-3


def test_features_only_returns_the_fused_stages_maps():
    spec = fused_spec()
    extractor = effnet.create_model(spec, features_only=True).eval()
    assert extractor.channels == [8, 16, 24] and extractor.strides == [2, 4, 8]
    with torch.no_grad():
        maps = extractor(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4)]


def test_features_only_of_a_v2_model_taps_the_fused_stages():
    extractor = effnet.create_model("efficientnetv2_b0", features_only=True, out_indices=(0, 1)).eval()
    assert [info.module for info in extractor.feature_info] == ["stages.0", "stages.1"]
    with torch.no_grad():
        maps = extractor(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(1, 16, 32, 32), (1, 32, 16, 16)]


# -- the NAS space ---------------------------------------------------------------------------------------------------


def test_nas_space_offers_fused_mbconv_as_a_stage_choice():
    space = space_from_dict({
        "name": "v2_tiny", "stem": {"channels": 8}, "head": {"channels": 64},
        "choices": {"block": ["mbconv6", "fused_mbconv1", "fused_mbconv4"], "kernel": [3], "se_ratio": [0.0, 0.25],
                    "repeats_offset": [0], "width": [1.0]},
        "stages": [{"stride": 1, "out_channels": 8, "repeats": 1}, {"stride": 2, "out_channels": 16, "repeats": 2}],
    })
    assert space.size == 36  # per stage: 3 blocks x 2 SE ratios (all three kinds have SE); 6 x 6
    point = {"s1_block": "fused_mbconv1", "s1_kernel": 3, "s1_se_ratio": 0.0, "s1_repeats": 1, "s1_width": 1.0,
             "s2_block": "fused_mbconv4", "s2_kernel": 3, "s2_se_ratio": 0.25, "s2_repeats": 2, "s2_width": 1.0}
    spec = space.spec(point, resolution=32, num_classes=10)
    assert [(s.kind, s.expand_ratio, s.se_ratio) for s in spec.stages] == [("fused_mbconv", 1.0, 0.0),
                                                                          ("fused_mbconv", 4.0, 0.25)]
    assert describe_point(space, point) == "fmb1k3x1 fmb4k3sex2"
    assert space.extreme(largest=True)["s1_block"] == "fused_mbconv4"
    assert ConvNet(spec).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
