"""effnet's BN+SiLU backward operator (`effnet.ops.batch_norm_silu_backward`) against ATen's kernels."""

from __future__ import annotations

import pytest
import torch

from effnet import ops
from effnet.ops import batchnorm_silu, native
from effnet.optimize import fuse_bn_silu_for_training
from tests.conftest import tiny_spec

pytestmark = pytest.mark.skipif(batchnorm_silu._kernel() is None,
                                reason="no C compiler: effnet's kernel cannot be built")


def _inputs(shape, channels_last=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g) * 2 + 0.5
    grad = torch.randn(shape, generator=g)
    if channels_last:
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    w, b = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    _, mean, invstd = torch.ops.aten.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)
    return grad, x, w, b, mean, invstd


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("shape", [(8, 48, 9, 9), (4, 19, 5, 7), (2, 40, 1, 1), (1, 3, 6, 6), (16, 24, 18, 18)])
def test_gradients_equal_atens(shape):
    args = _inputs(shape)
    got = ops.batch_norm_silu_backward(*args, 1e-5)
    ref = ops.aten_batch_norm_silu_backward(*args, 1e-5)
    for ours, theirs in zip(got, ref):
        assert _rel(ours, theirs) <= 1e-5
    assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_closer_to_float64_than_float32_tolerance():
    args = _inputs((32, 40, 9, 9))
    exact = ops.aten_batch_norm_silu_backward(*(t.double() for t in args), 1e-5)
    got = ops.batch_norm_silu_backward(*args, 1e-5)
    for ours, e in zip(got, exact):
        assert _rel(ours.double(), e) <= 5e-6


def test_nchw_and_float64_take_atens_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(native, "over_channels", lambda *a: calls.append(a))
    for args in (_inputs((2, 8, 4, 4), channels_last=False), tuple(t.double() for t in _inputs((2, 8, 4, 4)))):
        got = ops.batch_norm_silu_backward(*args, 1e-5)
        assert all(torch.equal(a, b) for a, b in zip(got, ops.aten_batch_norm_silu_backward(*args, 1e-5)))
    assert calls == []


def test_result_does_not_depend_on_the_thread_count():
    args = _inputs((8, 72, 7, 7))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.batch_norm_silu_backward(*args, 1e-5)
        torch.set_num_threads(2)
        two = ops.batch_norm_silu_backward(*args, 1e-5)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_opcheck_of_the_registered_operator():
    torch.library.opcheck(ops.batch_norm_silu_backward, (*_inputs((2, 16, 3, 3)), 1e-5))


@pytest.mark.parametrize("path", ["auto", "aten"])
def test_a_fused_model_trains_with_the_kernel_only_on_its_own_path(monkeypatch, path):
    from effnet import ConvNet
    from effnet.layers import set_training_path

    calls = []
    real = batchnorm_silu.batch_norm_silu_backward
    monkeypatch.setattr(ops, "batch_norm_silu_backward", lambda *a: calls.append(1) or real(*a))
    model = ConvNet(tiny_spec()).to(memory_format=torch.channels_last)
    fuse_bn_silu_for_training(model)
    set_training_path(model, path)
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
    assert bool(calls) == (path == "auto")
