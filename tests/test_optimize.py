"""Every PyTorch fast path computes what eager fp32 computes (fp32 paths ≤ 1e-4 relative; bf16 stated below)."""

import pytest
import torch
from torch import nn

import effnet
from effnet.network import ConvNet
from effnet.optimize import (
    OptimizeError,
    compile_for_inference,
    fold_all_batchnorms,
    fold_batchnorm,
    optimize_for_inference,
    to_bf16,
)
from tests.conftest import tiny_spec

FP32_RTOL = 1e-4
BF16_RTOL = 5e-2


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding is really exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture
def model():
    return _randomize_bn(ConvNet(tiny_spec()))


@pytest.fixture
def x():
    return torch.randn(3, 3, 32, 32)


def test_fold_batchnorm_matches_conv_then_bn():
    conv, bn = nn.Conv2d(4, 6, 3, padding=1), _randomize_bn(nn.BatchNorm2d(6))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert _rel(fold_batchnorm(conv, bn)(x), bn(conv(x))) <= FP32_RTOL


def test_fold_batchnorm_without_running_stats_is_an_error():
    with pytest.raises(OptimizeError, match="running statistics"):
        fold_batchnorm(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))


def test_fold_all_folds_every_conv_norm_pair(model):
    copy = _randomize_bn(ConvNet(tiny_spec()))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert fold_all_batchnorms(copy) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())


@pytest.mark.parametrize("fold_bn,channels_last", [(True, True), (True, False), (False, True)])
def test_optimize_for_inference_matches_eager(model, x, fold_bn, channels_last):
    fast = optimize_for_inference(model, fold_bn=fold_bn, channels_last=channels_last)
    with torch.no_grad():
        assert _rel(fast(x), model(x)) <= FP32_RTOL


def test_optimize_for_inference_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_public_api_name():
    assert effnet.optimize_for_inference is optimize_for_inference


def test_same_padding_model_folds(x):
    model = _randomize_bn(ConvNet(tiny_spec(padding="same")))
    with torch.no_grad():
        assert _rel(optimize_for_inference(model)(x), model(x)) <= FP32_RTOL


def test_bf16_is_close_to_fp32(model, x):
    with torch.no_grad():
        assert _rel(to_bf16(model)(x), model(x)) <= BF16_RTOL


@pytest.mark.slow
def test_compile_with_freezing_matches_eager(model, x):
    fast = compile_for_inference(model)
    with torch.no_grad():
        assert _rel(fast(x), model(x)) <= FP32_RTOL


def test_compile_rejects_other_dtypes(model):
    with pytest.raises(OptimizeError, match="dtype"):
        compile_for_inference(model, dtype=torch.float16)
