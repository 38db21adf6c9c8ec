"""effnet's depthwise convolution operator (`effnet.ops.depthwise_conv2d`) against ATen's convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from effnet import ops
from effnet.layers import DepthwiseConv2d, DepthwiseConv2dSame, PointwiseConv2d, make_conv, set_training_path
from effnet.ops import depthwise, native

pytestmark = pytest.mark.skipif(not ops.kernel_available(), reason="no C compiler: effnet's kernel cannot be built")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _grads(fn, x, w, g):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    y = fn(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    return y, gx, gw


CASES = [  # channels, size (h, w), kernel, stride, padding, batch
    (8, (9, 9), 3, 1, (1, 1), 4),
    (24, (11, 7), 3, 2, (1, 1), 3),  # odd, non-square map, stride 2
    (40, (5, 5), 5, 1, (2, 2), 2),  # a 16 + 16 + 8 channel split
    (19, (6, 9), 5, 2, (2, 2), 2),  # channels not a multiple of 8: the one-at-a-time tail
    (32, (3, 3), 7, 1, (3, 3), 5),  # kernel larger than the map
    (16, (8, 8), 7, 2, (3, 3), 1),  # batch 1
    (16, (2, 2), 3, 1, (1, 1), 6),  # tiny map: "auto" takes effnet's kernel
    (48, (8, 8), 3, 2, (0, 0), 2),  # no padding (SAME padding is applied before the conv)
]


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}-{c[1][0]}x{c[1][1]}-k{c[2]}-s{c[3]}" for c in CASES])
@pytest.mark.parametrize("path", ["effnet", "auto"])
def test_forward_and_both_gradients_equal_aten(case, channels_last, path):
    c, (h, w_), k, s, p, n = case
    x = torch.randn(n, c, h, w_)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k)
    g = torch.randn_like(F.conv2d(x, w, None, s, p, 1, c))
    y_ref, gx_ref, gw_ref = _grads(lambda a, b: F.conv2d(a, b, None, s, p, 1, c), x, w, g)
    y, gx, gw = _grads(lambda a, b: ops.depthwise_conv2d(a, b, [s, s], list(p), path), x, w, g)
    assert torch.equal(y, y_ref)  # the forward pass is ATen's
    assert _rel(gx, gx_ref) <= 1e-5
    assert _rel(gw, gw_ref) <= 1e-5
    assert y.is_contiguous(memory_format=torch.channels_last) == y_ref.is_contiguous(memory_format=torch.channels_last)


def test_eager_calls_and_the_registered_operator_give_the_same_bits():
    x = torch.randn(8, 24, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 1, 5, 5)
    g = torch.randn(8, 24, 9, 9).contiguous(memory_format=torch.channels_last)
    eager = _grads(lambda a, b: ops.depthwise_conv2d(a, b, [1, 1], [2, 2], "auto"), x, w, g)
    op = _grads(lambda a, b: torch.ops.effnet.depthwise_conv2d.default(a, b, [1, 1], [2, 2], "auto"), x, w, g)
    assert all(torch.equal(a, b) for a, b in zip(eager, op))


def test_own_kernel_is_closer_to_float64_than_float32_tolerance():
    x = torch.randn(64, 40, 9, 9, dtype=torch.float64)
    g = torch.randn(64, 40, 9, 9, dtype=torch.float64)
    exact = depthwise._aten_weight_grad(x, g, (40, 1, 5, 5), [1, 1], [2, 2])
    own = ops.weight_grad(x.float(), g.float(), [5, 5], [1, 1], [2, 2], "effnet")
    assert _rel(own.double(), exact) < 2e-6


def test_gradcheck_in_float64():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.depthwise_conv2d(a, b, [2, 2], [1, 1]), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: ops.depthwise_conv2d(a, b, [1, 1], [1, 1]), (x, w))


def test_opcheck_of_the_registered_operator():
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(16, 1, 5, 5, requires_grad=True)
    torch.library.opcheck(torch.ops.effnet.depthwise_conv2d.default, (x, w, [1, 1], [2, 2], "effnet"))


def test_result_does_not_depend_on_the_thread_count():
    x = torch.randn(8, 72, 7, 7).contiguous(memory_format=torch.channels_last)
    g = torch.randn(8, 72, 7, 7).contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.weight_grad(x, g, [5, 5], [1, 1], [2, 2], "effnet")
        torch.set_num_threads(2)
        two = ops.weight_grad(x, g, [5, 5], [1, 1], [2, 2], "effnet")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_the_measured_rule():
    assert ops.own_weight_grad_wins(5, 28, 28)  # 5x5 kernels at any size
    assert ops.own_weight_grad_wins(3, 2, 2) and ops.own_weight_grad_wins(3, 1, 1)  # tiny maps
    assert not ops.own_weight_grad_wins(3, 9, 9)  # oneDNN's own 3x3 kernel is fast on larger maps


def test_falls_back_to_aten_without_the_kernel(monkeypatch):
    monkeypatch.setattr(depthwise, "kernel_available", lambda: False)
    x = torch.randn(4, 16, 3, 3)
    g = torch.randn(4, 16, 3, 3)
    got = ops.weight_grad(x, g, [5, 5], [1, 1], [2, 2], "effnet")
    assert torch.equal(got, depthwise._aten_weight_grad(x, g, (16, 1, 5, 5), [1, 1], [2, 2]))


def test_a_missing_compiler_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(native, "_compiler", lambda: None)
    native.load.cache_clear()
    native.entry.cache_clear()
    try:
        assert native.load(depthwise.KERNEL) is None
        assert "no C compiler" in native.build_problem(depthwise.KERNEL)
    finally:
        native.load.cache_clear()
        native.entry.cache_clear()
        native._problems.clear()


def test_a_failing_build_leaves_no_library_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(native.MARCH_ENV, "no-such-cpu")
    native.load.cache_clear()
    native.entry.cache_clear()
    try:
        assert native.load(depthwise.KERNEL) is None
        assert "failed" in native.build_problem(depthwise.KERNEL)
        assert not list((tmp_path / "effnet" / "kernels").iterdir())
    finally:
        native.load.cache_clear()
        native.entry.cache_clear()
        native._problems.clear()


def test_the_kernels_run_on_torchs_openmp_runtime():
    """Built with -fopenmp, every kernel library takes the libgomp torch loaded (one runtime, one pool of threads),
    also with scikit-learn's own copy of libgomp in the process."""
    pytest.importorskip("sklearn.cluster")  # loads scikit-learn's libgomp
    native.load.cache_clear()
    native.entry.cache_clear()
    try:
        for name in ("batchnorm_silu", "squeeze_excite", depthwise.KERNEL):
            lib = native.load(name)
            assert lib is not None, native.build_problem(name)
            assert hasattr(lib, "GOMP_parallel") and native._same_openmp_as_torch(lib)
        assert not native._serial
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            assert native._threads(100, 10**9) == 2
        finally:
            torch.set_num_threads(before)
    finally:
        native.load.cache_clear()
        native.entry.cache_clear()


def test_another_openmp_runtime_keeps_the_kernels_on_one_thread(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(native, "_same_openmp_as_torch", lambda lib: False)
    native.load.cache_clear()
    native.entry.cache_clear()
    try:
        assert native.load(depthwise.KERNEL) is not None
        assert native._serial == {depthwise.KERNEL} and native._threads(100, 10**9) == 1
    finally:
        native.load.cache_clear()
        native.entry.cache_clear()
        native._serial.clear()


def test_a_compiler_without_openmp_builds_the_same_kernels_serial(monkeypatch, tmp_path):
    cc = tmp_path / "cc-without-openmp"
    real = native._compiler()
    cc.write_text(f"#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -fopenmp ] && exit 1; done\nexec {real} \"$@\"\n")
    cc.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(cc))
    x, g = torch.randn(4, 32, 6, 6), torch.randn(4, 32, 6, 6)
    expected = ops.weight_grad(x, g, [5, 5], [1, 1], [2, 2], "effnet")
    native.load.cache_clear()
    native.entry.cache_clear()
    try:
        assert native.load(depthwise.KERNEL) is not None, native.build_problem(depthwise.KERNEL)
        built = next((tmp_path / "effnet" / "kernels").iterdir())
        assert b"GOMP_parallel" not in built.read_bytes()
        assert torch.equal(ops.weight_grad(x, g, [5, 5], [1, 1], [2, 2], "effnet"), expected)
    finally:
        native.load.cache_clear()
        native.entry.cache_clear()


def test_layers_route_only_cpu_training_through_the_operator(monkeypatch):
    conv = make_conv(24, 24, 5, stride=2, groups=24)
    assert isinstance(conv, DepthwiseConv2d) and isinstance(conv, torch.nn.Conv2d)
    assert isinstance(make_conv(24, 24, 5, stride=2, groups=24, padding="same"), DepthwiseConv2dSame)
    assert type(make_conv(24, 48, 3)) is torch.nn.Conv2d
    assert list(conv.state_dict()) == ["weight"]
    calls = []
    real = ops.depthwise_conv2d
    monkeypatch.setattr(ops, "depthwise_conv2d", lambda *a: calls.append(a) or real(*a))
    x = torch.randn(2, 24, 9, 9)
    conv(x)
    assert len(calls) == 1  # training, autograd on, CPU, float32
    with torch.no_grad():
        conv(x)
    conv.double()(x.double())
    conv.float().eval()(x)
    assert len(calls) == 1  # no grad, float64, eval mode: the stock convolution
    conv.train()
    assert set_training_path(torch.nn.Sequential(conv), "aten") == 1
    conv(x)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="training path: got 'fast'"):
        set_training_path(conv, "fast")


def test_same_padding_with_stride_2_equals_stock():
    torch.manual_seed(1)
    ours = make_conv(16, 16, 5, stride=2, groups=16, padding="same")
    stock = make_conv(16, 16, 5, stride=2, groups=16, padding="same")
    stock.load_state_dict(ours.state_dict())
    set_training_path(stock, "aten")
    set_training_path(ours, "effnet")
    x = torch.randn(3, 16, 10, 10)
    for conv in (ours, stock):
        conv.zero_grad()
        conv(x).square().sum().backward()
    assert _rel(ours.weight.grad, stock.weight.grad) <= 1e-5


@pytest.mark.slow
def test_torch_compile_sees_the_operator_and_matches_eager():
    conv = make_conv(16, 16, 5, groups=16)
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    eager = torch.autograd.grad(conv(x).sum(), conv.weight)[0]
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(x).sum(), conv.weight)[0]
    assert torch.equal(eager, got)


def test_torch_export_sees_one_operator():
    conv = make_conv(16, 16, 5, groups=16).train()
    program = torch.export.export(conv, (torch.randn(2, 16, 6, 6),))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets == ["effnet.depthwise_conv2d.default"]


def test_onnx_export_writes_a_grouped_conv(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    conv = make_conv(16, 16, 5, groups=16).eval()
    path = tmp_path / "dw.onnx"
    torch.onnx.export(conv, (torch.randn(1, 16, 8, 8),), str(path), dynamo=False)
    nodes = onnx.load(str(path)).graph.node
    assert [n.op_type for n in nodes] == ["Conv"]
    assert {a.name: a.i for a in nodes[0].attribute}["group"] == 16


@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_trains_as_a_matrix_product_with_stock_results(bias):
    conv = make_conv(24, 40, 1, bias=bias)
    assert isinstance(conv, PointwiseConv2d) and list(conv.state_dict()) == (["weight", "bias"] if bias else ["weight"])
    stock = torch.nn.Conv2d(24, 40, 1, bias=bias)
    stock.load_state_dict(conv.state_dict())
    x = torch.randn(3, 24, 5, 7).contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, 40, 5, 7)
    outs = []
    for module in (conv, stock):
        xi = x.detach().requires_grad_()
        y = module(xi)
        outs.append((y, *torch.autograd.grad(y, (xi, *module.parameters()), g)))
    assert outs[0][0].is_contiguous(memory_format=torch.channels_last)
    for ours, ref in zip(outs[0], outs[1]):
        assert _rel(ours, ref) <= 1e-5
    calls = []
    real = F.linear
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(F, "linear", lambda *a: calls.append(1) or real(*a))
        conv(x)
        conv(x.contiguous())  # NCHW: the stock convolution
        set_training_path(conv, "aten")
        conv(x)
    assert calls == [1]
