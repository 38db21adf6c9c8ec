"""effnet's BN+SiLU operators (`effnet.ops.batch_norm_silu` and `batch_norm_silu_backward`) against ATen's kernels."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_an_nchw_gradient_of_a_channels_last_input_takes_the_kernel(monkeypatch):
    grad, *rest = _inputs((4, 24, 3, 3))  # as a global average pool's backward hands it over
    ref = ops.aten_batch_norm_silu_backward(grad, *rest, 1e-5)
    calls = []
    real = native.over_chunks
    monkeypatch.setattr(native, "over_chunks", lambda *a: calls.append(1) or real(*a))
    got = ops.batch_norm_silu_backward(grad.contiguous(), *rest, 1e-5)
    assert calls and all(_rel(a, b) <= 1e-5 for a, b in zip(got, ref))


def test_closer_to_float64_than_float32_tolerance():
    args = _inputs((32, 40, 9, 9))
    exact = ops.aten_batch_norm_silu_backward(*(t.double() for t in args), 1e-5)
    got = ops.batch_norm_silu_backward(*args, 1e-5)
    for ours, e in zip(got, exact):
        assert _rel(ours.double(), e) <= 5e-6


def test_nchw_and_float64_take_atens_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(native, "over_chunks", lambda *a: calls.append(a))
    for args in (_inputs((2, 8, 4, 4), channels_last=False), tuple(t.double() for t in _inputs((2, 8, 4, 4)))):
        got = ops.batch_norm_silu_backward(*args, 1e-5)
        assert all(torch.equal(a, b) for a, b in zip(got, ops.aten_batch_norm_silu_backward(*args, 1e-5)))
    assert calls == []


def test_result_does_not_depend_on_the_thread_count(monkeypatch):
    monkeypatch.setattr(native, "GRAIN", 1)  # split even this small tensor between the threads
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


def test_the_chunk_of_rows_is_the_kernels():
    source = (Path(batchnorm_silu.__file__).parent / "batchnorm_silu.c").read_text()
    assert re.search(r"#define CHUNK (\d+)", source).group(1) == str(batchnorm_silu.CHUNK)


def test_opcheck_of_the_registered_operator():
    torch.library.opcheck(torch.ops.effnet.batch_norm_silu_backward.default, (*_inputs((2, 16, 3, 3)), 1e-5))


# --- the forward operator -------------------------------------------------------------------------------------


def _forward_inputs(shape, offset=0.5, channels_last=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g) * 2 + offset
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g), torch.randn(c, generator=g), \
        torch.rand(c, generator=g) + 0.5


@pytest.mark.parametrize("shape", [(8, 48, 9, 9), (4, 19, 5, 7), (2, 40, 1, 1), (1, 3, 6, 6), (16, 24, 18, 18),
                                   (3, 8, 2, 3)])
def test_forward_equals_atens_and_updates_the_running_statistics_alike(shape):
    x, w, b, rm, rv = _forward_inputs(shape)
    rm2, rv2 = rm.clone(), rv.clone()
    got = ops.batch_norm_silu(x, w, b, rm, rv, 0.1, 1e-5)
    ref = ops.aten_batch_norm_silu(x, w, b, rm2, rv2, 0.1, 1e-5)
    for ours, theirs in zip((*got, rm, rv), (*ref, rm2, rv2)):
        assert _rel(ours, theirs) <= 1e-5
    assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_forward_statistics_do_not_cancel_when_the_mean_dwarfs_the_spread():
    x, w, b, rm, rv = _forward_inputs((32, 40, 9, 9), offset=300.0)
    x[0, :, 0, 0] += 100.0  # an outlier first row: a poor shift for the one-pass variance
    exact = ops.aten_batch_norm_silu(x.double(), w.double(), b.double(), rm.double(), rv.double(), 0.1, 1e-5)
    got = ops.batch_norm_silu(x, w, b, rm, rv, 0.1, 1e-5)
    for ours, e in zip(got, exact):
        assert _rel(ours.double(), e) <= 1e-5


def test_forward_does_not_depend_on_the_thread_count(monkeypatch):
    monkeypatch.setattr(native, "GRAIN", 1)
    x, w, b, rm, rv = _forward_inputs((8, 72, 7, 7))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.batch_norm_silu(x, w, b, rm.clone(), rv.clone(), 0.1, 1e-5)
        torch.set_num_threads(2)
        two = ops.batch_norm_silu(x, w, b, rm.clone(), rv.clone(), 0.1, 1e-5)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_forward_of_nchw_float64_and_single_values_takes_atens_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(native, "over_chunks", lambda *a: calls.append(a))
    without_running_stats = ops.batch_norm_silu(*_forward_inputs((2, 8, 4, 4))[:3], None, None, 0.1, 1e-5)
    assert without_running_stats[0].shape == (2, 8, 4, 4)
    for x, *params in (_forward_inputs((2, 8, 4, 4), channels_last=False),
                       tuple(t.double() for t in _forward_inputs((2, 8, 4, 4))), _forward_inputs((1, 8, 1, 1))):
        got = ops.batch_norm_silu(x, *params[:2], params[2].clone(), params[3].clone(), 0.1, 1e-5)
        ref = ops.aten_batch_norm_silu(x, *params[:2], params[2].clone(), params[3].clone(), 0.1, 1e-5)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert calls == []


def test_eager_calls_and_the_registered_operators_give_the_same_bits():
    x, w, b, rm, rv = _forward_inputs((8, 24, 9, 9))
    eager = ops.batch_norm_silu(x, w, b, rm.clone(), rv.clone(), 0.1, 1e-5)
    op = torch.ops.effnet.batch_norm_silu.default(x, w, b, rm.clone(), rv.clone(), 0.1, 1e-5)
    assert all(torch.equal(a, b) for a, b in zip(eager, op))
    args = _inputs((8, 24, 9, 9))
    eager = ops.batch_norm_silu_backward(*args, 1e-5)
    op = torch.ops.effnet.batch_norm_silu_backward.default(*args, 1e-5)
    assert all(torch.equal(a, b) for a, b in zip(eager, op))


def test_opcheck_of_the_forward_operator():
    x, w, b, rm, rv = _forward_inputs((2, 16, 3, 3))
    torch.library.opcheck(torch.ops.effnet.batch_norm_silu.default, (x, w, b, rm, rv, 0.1, 1e-5))


def test_a_fused_model_trains_alike_on_both_paths():
    from effnet import ConvNet
    from effnet.layers import set_training_path

    torch.manual_seed(0)
    models = [ConvNet(tiny_spec()).to(memory_format=torch.channels_last) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for model, path in zip(models, ("auto", "aten")):
        fuse_bn_silu_for_training(model)
        set_training_path(model, path)
        torch.manual_seed(1)  # the same dropout and drop-path masks
        model(x).square().mean().backward()
    (ours, theirs) = (dict(m.named_parameters()) for m in models)
    for name, p in ours.items():  # (a BN followed by another has a bias gradient of zero up to rounding)
        assert (p.grad - theirs[name].grad).abs().max() <= 1e-4 * theirs[name].grad.abs().max() + 1e-7, name
    for (name, a), b in zip(models[0].named_buffers(), models[1].buffers()):  # the running statistics
        if a.is_floating_point():  # (a running mean after a BN'd input is zero up to rounding)
            assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6, name


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
